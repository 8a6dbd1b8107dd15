/**
 * Typed NFSv3 client: one method per procedure of RFC 1813, each resolving with the fully decoded
 * result. NFS errors are results (check `status`); only RPC-level failures reject.
 *
 * Each method encodes straight into the RpcClient's writer and hands it a static decoder, so a
 * call costs one promise and the result objects, nothing else.
 */
import { CreateMode, NFS_PROGRAM, NFS_V3, NfsProc, NfsStat, StableHow, type FType } from '../nfs/constants.js';
import type { RpcClient } from './rpc-client.js';
import * as A from './nfs3-args.js';
import * as D from './nfs3-results.js';
import type {
  AccessRes,
  CommitRes,
  DirEntry,
  DirEntryPlus,
  DiropRes,
  Fattr3,
  FsinfoRes,
  FsstatRes,
  GetattrRes,
  LinkRes,
  LookupRes,
  Name,
  NfsTime,
  PathconfRes,
  ReaddirplusRes,
  ReaddirRes,
  ReadlinkRes,
  ReadRes,
  RenameRes,
  Sattr3,
  SpecData,
  WccRes,
  WriteRes,
} from './nfs3-types.js';

export type * from './nfs3-types.js';

const NO_ATTRS: Sattr3 = Object.freeze({});

export interface ReadAllRes {
  status: number;
  data: Buffer;
  fileAttr: Fattr3 | null;
}

export interface ReaddirAllRes<E> {
  status: number;
  dirAttr: Fattr3 | null;
  entries: E[];
}

export interface WalkLimits {
  /** Most READ/READDIR round trips one helper makes before giving up. Default 100 000. */
  maxRounds?: number;
}

export class Nfs3Client {
  readonly rpc: RpcClient;

  constructor(rpc: RpcClient) {
    this.rpc = rpc;
  }

  null(): Promise<void> {
    this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.NULL);
    return this.rpc.send(D.decodeNullRes);
  }

  getattr(fh: Uint8Array): Promise<GetattrRes> {
    A.encodeFhArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.GETATTR), fh);
    return this.rpc.send(D.decodeGetattrRes);
  }

  setattr(fh: Uint8Array, attrs: Sattr3, guardCtime: NfsTime | null = null): Promise<WccRes> {
    A.encodeSetattrArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.SETATTR), fh, attrs, guardCtime);
    return this.rpc.send(D.decodeWccRes);
  }

  lookup(dir: Uint8Array, name: Name): Promise<LookupRes> {
    A.encodeDiropArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.LOOKUP), dir, name);
    return this.rpc.send(D.decodeLookupRes);
  }

  access(fh: Uint8Array, access: number): Promise<AccessRes> {
    A.encodeAccessArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.ACCESS), fh, access);
    return this.rpc.send(D.decodeAccessRes);
  }

  readlink(fh: Uint8Array): Promise<ReadlinkRes> {
    A.encodeFhArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.READLINK), fh);
    return this.rpc.send(D.decodeReadlinkRes);
  }

  read(fh: Uint8Array, offset: number | bigint, count: number): Promise<ReadRes> {
    A.encodeReadArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.READ), fh, offset, count);
    return this.rpc.send(D.decodeReadRes);
  }

  /** Default FILE_SYNC, so a test's data is durable without a COMMIT. */
  write(fh: Uint8Array, offset: number | bigint, data: Uint8Array, stable: StableHow = StableHow.FILE_SYNC, count = data.length): Promise<WriteRes> {
    const w = this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.WRITE, data.length + fh.length + 64);
    A.encodeWriteArgs(w, fh, offset, data, stable, count);
    return this.rpc.send(D.decodeWriteRes);
  }

  /** EXCLUSIVE needs `verf` (8 bytes) and ignores attrs. */
  create(dir: Uint8Array, name: Name, attrs: Sattr3 = NO_ATTRS, how: CreateMode = CreateMode.UNCHECKED, verf: Uint8Array | null = null): Promise<DiropRes> {
    A.encodeCreateArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.CREATE), dir, name, how, attrs, verf);
    return this.rpc.send(D.decodeDiropRes);
  }

  mkdir(dir: Uint8Array, name: Name, attrs: Sattr3 = NO_ATTRS): Promise<DiropRes> {
    A.encodeMkdirArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.MKDIR), dir, name, attrs);
    return this.rpc.send(D.decodeDiropRes);
  }

  symlink(dir: Uint8Array, name: Name, target: Name, attrs: Sattr3 = NO_ATTRS): Promise<DiropRes> {
    A.encodeSymlinkArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.SYMLINK), dir, name, target, attrs);
    return this.rpc.send(D.decodeDiropRes);
  }

  /** rdev is used for CHR and BLK only. */
  mknod(dir: Uint8Array, name: Name, type: FType, attrs: Sattr3 = NO_ATTRS, rdev: SpecData | null = null): Promise<DiropRes> {
    A.encodeMknodArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.MKNOD), dir, name, type, attrs, rdev);
    return this.rpc.send(D.decodeDiropRes);
  }

  remove(dir: Uint8Array, name: Name): Promise<WccRes> {
    A.encodeDiropArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.REMOVE), dir, name);
    return this.rpc.send(D.decodeWccRes);
  }

  rmdir(dir: Uint8Array, name: Name): Promise<WccRes> {
    A.encodeDiropArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.RMDIR), dir, name);
    return this.rpc.send(D.decodeWccRes);
  }

  rename(fromDir: Uint8Array, fromName: Name, toDir: Uint8Array, toName: Name): Promise<RenameRes> {
    A.encodeRenameArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.RENAME), fromDir, fromName, toDir, toName);
    return this.rpc.send(D.decodeRenameRes);
  }

  link(fh: Uint8Array, dir: Uint8Array, name: Name): Promise<LinkRes> {
    A.encodeLinkArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.LINK), fh, dir, name);
    return this.rpc.send(D.decodeLinkRes);
  }

  readdir(dir: Uint8Array, cookie = 0n, cookieverf: Uint8Array | null = null, count = 8192): Promise<ReaddirRes> {
    A.encodeReaddirArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.READDIR), dir, cookie, cookieverf, count);
    return this.rpc.send(D.decodeReaddirRes);
  }

  readdirplus(dir: Uint8Array, cookie = 0n, cookieverf: Uint8Array | null = null, dircount = 8192, maxcount = 32768): Promise<ReaddirplusRes> {
    A.encodeReaddirplusArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.READDIRPLUS), dir, cookie, cookieverf, dircount, maxcount);
    return this.rpc.send(D.decodeReaddirplusRes);
  }

  fsstat(fh: Uint8Array): Promise<FsstatRes> {
    A.encodeFhArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.FSSTAT), fh);
    return this.rpc.send(D.decodeFsstatRes);
  }

  fsinfo(fh: Uint8Array): Promise<FsinfoRes> {
    A.encodeFhArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.FSINFO), fh);
    return this.rpc.send(D.decodeFsinfoRes);
  }

  pathconf(fh: Uint8Array): Promise<PathconfRes> {
    A.encodeFhArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.PATHCONF), fh);
    return this.rpc.send(D.decodePathconfRes);
  }

  commit(fh: Uint8Array, offset: number | bigint = 0, count = 0): Promise<CommitRes> {
    A.encodeCommitArgs(this.rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.COMMIT), fh, offset, count);
    return this.rpc.send(D.decodeCommitRes);
  }

  /**
   * LOOKUP one component at a time ('' and '.' components are skipped; '..' is sent as is).
   * Returns the first failing LOOKUP, or for an empty path a GETATTR of the root dressed as one.
   */
  async lookupPath(root: Uint8Array, path: string): Promise<LookupRes> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.length === 0) {
      const g = await this.getattr(root);
      return { status: g.status, fh: g.status === NfsStat.OK ? Buffer.from(root) : null, objAttr: g.attr, dirAttr: null };
    }
    let dir: Uint8Array = root;
    let res: LookupRes | null = null;
    for (const name of parts) {
      res = await this.lookup(dir, name);
      if (res.status !== NfsStat.OK) return res;
      dir = res.fh!;
    }
    return res!;
  }

  /** READ until eof; stops at the first error (returning what was read before it). */
  async readAll(fh: Uint8Array, chunk = 65536, limits: WalkLimits = {}): Promise<ReadAllRes> {
    const parts: Buffer[] = [];
    let offset = 0;
    let fileAttr: Fattr3 | null = null;
    const maxRounds = limits.maxRounds ?? 100_000;
    for (let round = 0; round < maxRounds; round++) {
      const res = await this.read(fh, offset, chunk);
      fileAttr = res.fileAttr ?? fileAttr;
      if (res.status !== NfsStat.OK) return { status: res.status, data: Buffer.concat(parts), fileAttr };
      // Copy: the data is a view of the reply record, and the caller keeps the result.
      parts.push(Buffer.from(res.data));
      offset += res.data.length;
      if (res.eof) return { status: NfsStat.OK, data: Buffer.concat(parts), fileAttr };
      if (res.data.length === 0) throw new Error(`READ at ${offset} returned no data and no eof`);
    }
    throw new Error(`readAll: no eof after ${maxRounds} READs`);
  }

  /** READDIR following cookies until eof. */
  readdirAll(dir: Uint8Array, count = 8192, limits: WalkLimits = {}): Promise<ReaddirAllRes<DirEntry>> {
    return this.walk(limits, (cookie, verf) => this.readdir(dir, cookie, verf, count));
  }

  /** READDIRPLUS following cookies until eof. */
  readdirplusAll(dir: Uint8Array, dircount = 8192, maxcount = 32768, limits: WalkLimits = {}): Promise<ReaddirAllRes<DirEntryPlus>> {
    return this.walk(limits, (cookie, verf) => this.readdirplus(dir, cookie, verf, dircount, maxcount));
  }

  private async walk<E extends DirEntry>(
    limits: WalkLimits,
    page: (cookie: bigint, verf: Buffer | null) => Promise<{ status: number; dirAttr: Fattr3 | null; cookieverf: Buffer | null; entries: E[]; eof: boolean }>,
  ): Promise<ReaddirAllRes<E>> {
    const entries: E[] = [];
    let cookie = 0n;
    let verf: Buffer | null = null;
    let dirAttr: Fattr3 | null = null;
    const maxRounds = limits.maxRounds ?? 100_000;
    for (let round = 0; round < maxRounds; round++) {
      const res = await page(cookie, verf);
      dirAttr = res.dirAttr ?? dirAttr;
      if (res.status !== NfsStat.OK) return { status: res.status, dirAttr, entries };
      for (const e of res.entries) entries.push(e);
      if (res.eof) return { status: NfsStat.OK, dirAttr, entries };
      if (res.entries.length === 0) throw new Error('READDIR page with no entries and no eof');
      cookie = res.entries[res.entries.length - 1].cookie;
      verf = res.cookieverf;
    }
    throw new Error(`readdir: no eof after ${maxRounds} pages`);
  }
}
