/**
 * The NFSv3 program (100003 v3): the 22 procedures of RFC 1813.
 *
 * Each procedure: decode its arguments from the record, find the export from the handle, check
 * this client against the export on every call (a handle is no bearer token), resolve through
 * the store, and encode the reply in one synchronous stretch. Failures become an nfsstat3 through
 * the one errno table and carry whatever attributes the procedure's resfail arm allows.
 */
import type fs from 'node:fs';
import { componentLogger } from '../log/logger.js';
import type { Program, ProcedureSpec, RpcCall } from '../rpc/dispatch.js';
import type { XdrWriter } from '../rpc/xdr.js';
import type { ExportStore, FsNode } from '../store/export-store.js';
import { firstAfter } from '../store/cookies.js';
import { accessMask, effectiveIdentity, mayRead, maySearch, type Identity, type SquashOptions } from './access.js';
import { FsfProps, NFS_PROC_NAMES, NFS_PROGRAM, NFS_V3, NFS3_FHSIZE, NFS3_MAXNAMLEN, NFS3_MAXPATHLEN, NfsProc, NfsStat } from './constants.js';
import { isClientError, NfsError, toNfsStat } from './errors.js';
import { writeFattr, writePostOpAttr } from './fattr.js';
import { decodeHandle, FH_SIZE } from './filehandle.js';

const log = componentLogger('nfs');

/** What the NFS program needs to know about a served export. */
export interface NfsExport {
  fsid: number;
  path: string;
  store: ExportStore;
}

/** The options that apply to one client of one export. */
export interface ClientPolicy extends SquashOptions {
  ro: boolean;
  secure: boolean;
}

/** Decides, on every call, whether this client may use this export and with which options. */
export type Authorizer = (exp: NfsExport, address: string) => ClientPolicy | null | Promise<ClientPolicy | null>;

export interface NfsLimits {
  /** Largest READ/WRITE over TCP (the kernel client uses up to 1 MiB). */
  tcpTransferMax: number;
  /** Over UDP a reply must fit one datagram. */
  udpTransferMax: number;
  /** Preferred READDIR size. */
  dirPref: number;
}

export const DEFAULT_NFS_LIMITS: NfsLimits = {
  tcpTransferMax: 1024 * 1024,
  udpTransferMax: 32 * 1024,
  dirPref: 64 * 1024,
};

/** How many XDR words of "no attributes" each procedure's resfail arm has (post_op_attr = 1, wcc_data = 2). */
const FAIL_WORDS: number[] = [0, 0, 2, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 4, 3, 1, 1, 1, 1, 1, 2];

/** The call's target after handle, export and client checks. */
interface Target {
  exp: NfsExport;
  policy: ClientPolicy;
  id: Identity;
  node: FsNode;
}

// Sizes used to honour READDIR count and READDIRPLUS dircount/maxcount exactly.
const POST_OP_ATTR_BYTES = 4 + 84;
const READDIR_FIXED = 4 + POST_OP_ATTR_BYTES + 8 + 4 + 4;
const POST_OP_FH_BYTES = 4 + 4 + FH_SIZE;

function padded(n: number): number {
  return (n + 3) & ~3;
}

export class NfsProgram {
  private readonly exports = new Map<number, NfsExport>();
  private readonly authorize: Authorizer;
  private readonly limits: NfsLimits;
  /** False until the write path exists: every mutating procedure answers NFS3ERR_ROFS. */
  private readonly writeEnabled = false;

  constructor(exports: NfsExport[], authorize: Authorizer, limits: NfsLimits = DEFAULT_NFS_LIMITS) {
    for (const e of exports) this.exports.set(e.fsid, e);
    this.authorize = authorize;
    this.limits = limits;
  }

  program(): Program {
    const p = (name: string, handler: (call: RpcCall) => void | Promise<void>, mutates = false, nonIdempotent = false): ProcedureSpec => ({
      name,
      handler,
      mutates,
      nonIdempotent,
      needsCred: name !== 'NULL',
    });
    const rofs = (call: RpcCall) => this.readOnly(call);
    const procs: ProcedureSpec[] = [];
    procs[NfsProc.NULL] = p('NULL', (call) => {
      call.beginReply(0);
      call.send();
    });
    procs[NfsProc.GETATTR] = p('GETATTR', (call) => this.getattr(call));
    procs[NfsProc.SETATTR] = p('SETATTR', rofs, true, false);
    procs[NfsProc.LOOKUP] = p('LOOKUP', (call) => this.lookup(call));
    procs[NfsProc.ACCESS] = p('ACCESS', (call) => this.access(call));
    procs[NfsProc.READLINK] = p('READLINK', (call) => this.readlink(call));
    procs[NfsProc.READ] = p('READ', (call) => this.read(call));
    procs[NfsProc.WRITE] = p('WRITE', rofs, true, false);
    procs[NfsProc.CREATE] = p('CREATE', rofs, true, true);
    procs[NfsProc.MKDIR] = p('MKDIR', rofs, true, true);
    procs[NfsProc.SYMLINK] = p('SYMLINK', rofs, true, true);
    procs[NfsProc.MKNOD] = p('MKNOD', rofs, true, true);
    procs[NfsProc.REMOVE] = p('REMOVE', rofs, true, true);
    procs[NfsProc.RMDIR] = p('RMDIR', rofs, true, true);
    procs[NfsProc.RENAME] = p('RENAME', rofs, true, true);
    procs[NfsProc.LINK] = p('LINK', rofs, true, true);
    procs[NfsProc.READDIR] = p('READDIR', (call) => this.readdir(call, false));
    procs[NfsProc.READDIRPLUS] = p('READDIRPLUS', (call) => this.readdir(call, true));
    procs[NfsProc.FSSTAT] = p('FSSTAT', (call) => this.fsstat(call));
    procs[NfsProc.FSINFO] = p('FSINFO', (call) => this.fsinfo(call));
    procs[NfsProc.PATHCONF] = p('PATHCONF', (call) => this.pathconf(call));
    procs[NfsProc.COMMIT] = p('COMMIT', rofs, true, false);
    return { program: NFS_PROGRAM, name: 'nfs', versions: [{ version: NFS_V3, procedures: procs }] };
  }

  // ---- common steps -------------------------------------------------------------------------

  /** Handle → export → client check → validated object. Throws NfsError. */
  private async target(call: RpcCall, fh: Buffer): Promise<Target> {
    const fields = decodeHandle(fh);
    if (fields === null) throw new NfsError(NfsStat.BADHANDLE, 'not one of our handles');
    const exp = this.exports.get(fields.fsid);
    if (exp === undefined) throw new NfsError(NfsStat.STALE, `no export with fsid ${fields.fsid}`);
    const policy = await this.authorize(exp, call.sink.address);
    if (policy === null) throw new NfsError(NfsStat.ACCES, `client not in the export list of ${exp.path}`);
    if (policy.secure && call.sink.port >= 1024) throw new NfsError(NfsStat.ACCES, `unprivileged source port ${call.sink.port} on a secure export`);
    const node = await exp.store.resolve(fields);
    return { exp, policy, id: effectiveIdentity(call.cred, policy), node };
  }

  /** Answers a failure: status plus the procedure's resfail arm (attributes when known). */
  private fail(call: RpcCall, err: unknown, attrs: fs.Stats | null = null, fsid = 0): void {
    const status = toNfsStat(err);
    const ctx = { client: call.sink.address, xid: call.xid, proc: NFS_PROC_NAMES[call.proc] ?? call.proc, status };
    if (isClientError(status)) log.debug({ ...ctx, reason: (err as Error).message }, 'NFS error reply');
    else log.error({ ...ctx, err }, 'NFS server error');
    const w = call.beginReply(128);
    w.u32(status);
    const words = FAIL_WORDS[call.proc];
    if (attrs !== null && words === 1) {
      writePostOpAttr(w, attrs, fsid);
    } else {
      for (let i = 0; i < words; i++) w.u32(0);
    }
    call.send();
  }

  /** Begins an NFS3_OK reply whose resok arm starts with the object's post_op_attr. */
  private okWithAttrs(call: RpcCall, t: Target, expected: number): XdrWriter {
    const w = call.beginReply(expected);
    w.u32(NfsStat.OK);
    writePostOpAttr(w, t.node.stats, t.exp.fsid);
    return w;
  }

  private readName(call: RpcCall): string {
    return call.args.bytesString(NFS3_MAXPATHLEN);
  }

  private readFh(call: RpcCall): Buffer {
    return call.args.opaque(NFS3_FHSIZE);
  }

  private readOnly(call: RpcCall): void {
    // Decoding the first handle keeps garbage answered as GARBAGE_ARGS, like every other procedure.
    this.readFh(call);
    this.fail(call, new NfsError(NfsStat.ROFS, 'write path not enabled'));
  }

  // ---- procedures ---------------------------------------------------------------------------

  private async getattr(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    try {
      const t = await this.target(call, fh);
      const w = call.beginReply(96);
      w.u32(NfsStat.OK);
      writeFattr(w, t.node.stats, t.exp.fsid);
      call.send();
    } catch (err) {
      this.fail(call, err);
    }
  }

  private async lookup(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const name = this.readName(call);
    let dirStats: fs.Stats | null = null;
    let fsid = 0;
    try {
      const t = await this.target(call, fh);
      dirStats = t.node.stats;
      fsid = t.exp.fsid;
      if (!t.node.stats.isDirectory()) throw new NfsError(NfsStat.NOTDIR);
      checkLookupName(name);
      if (!maySearch(t.node.stats, t.id)) throw new NfsError(NfsStat.ACCES, 'no search permission');
      const child = await t.exp.store.lookup(t.node, name);
      const w = call.beginReply(256);
      w.u32(NfsStat.OK);
      w.opaque(t.exp.store.handleOf(child));
      writePostOpAttr(w, child.stats, fsid);
      writePostOpAttr(w, dirStats, fsid);
      call.send();
    } catch (err) {
      this.fail(call, err, dirStats, fsid);
    }
  }

  private async access(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const asked = call.args.u32();
    try {
      const t = await this.target(call, fh);
      const writable = this.writeEnabled && !t.policy.ro;
      const w = this.okWithAttrs(call, t, 128);
      w.u32(accessMask(t.node.stats, t.id, asked, writable));
      call.send();
    } catch (err) {
      this.fail(call, err);
    }
  }

  private async readlink(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    let attrs: fs.Stats | null = null;
    let fsid = 0;
    try {
      const t = await this.target(call, fh);
      attrs = t.node.stats;
      fsid = t.exp.fsid;
      if (!t.node.stats.isSymbolicLink()) throw new NfsError(NfsStat.INVAL, 'not a symlink');
      const target = await t.exp.store.readlink(t.node);
      const w = call.beginReply(128 + target.length);
      w.u32(NfsStat.OK);
      writePostOpAttr(w, attrs, fsid);
      w.opaque(target);
      call.send();
    } catch (err) {
      this.fail(call, err, attrs, fsid);
    }
  }

  private async read(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const offset = call.args.u64();
    const asked = call.args.u32();
    let attrs: fs.Stats | null = null;
    let fsid = 0;
    try {
      const t = await this.target(call, fh);
      attrs = t.node.stats;
      fsid = t.exp.fsid;
      if (t.node.stats.isDirectory()) throw new NfsError(NfsStat.ISDIR);
      if (!t.node.stats.isFile()) throw new NfsError(NfsStat.INVAL, 'not a regular file');
      if (!mayRead(t.node.stats, t.id)) throw new NfsError(NfsStat.ACCES, 'no read permission');
      const max = call.sink.tcp ? this.limits.tcpTransferMax : this.limits.udpTransferMax;
      const { data, eof } = await t.exp.store.read(t.node, offset, Math.min(asked, max));
      const w = call.beginReply(128);
      w.u32(NfsStat.OK);
      writePostOpAttr(w, attrs, fsid);
      w.u32(data.length);
      w.bool(eof);
      w.u32(data.length);
      call.send(data);
    } catch (err) {
      this.fail(call, err, attrs, fsid);
    }
  }

  private async readdir(call: RpcCall, plus: boolean): Promise<void> {
    const fh = this.readFh(call);
    const cookieHi = call.args.u32();
    const cookieLo = call.args.u32();
    call.args.fixedOpaque(8); // cookieverf: ignored, our cookies stay valid when the directory changes
    const dircount = plus ? call.args.u32() : 0;
    const maxcount = call.args.u32();
    let attrs: fs.Stats | null = null;
    let fsid = 0;
    try {
      const t = await this.target(call, fh);
      attrs = t.node.stats;
      fsid = t.exp.fsid;
      if (!t.node.stats.isDirectory()) throw new NfsError(NfsStat.NOTDIR);
      if (!mayRead(t.node.stats, t.id)) throw new NfsError(NfsStat.ACCES, 'no read permission on directory');
      const listing = await t.exp.store.listing(t.node);
      const entries = listing.entries;
      const start = firstAfter(entries, cookieHi, cookieLo);
      // Choose how many entries fit, counting each at its largest (attributes and handle present).
      let size = READDIR_FIXED;
      let dirSize = 0;
      let end = start;
      const limit = Math.min(maxcount, this.limits.tcpTransferMax);
      while (end < entries.length) {
        const nameBytes = 4 + padded(entries[end].name.length);
        const dirPart = 4 + 8 + nameBytes + 8;
        const full = plus ? dirPart + POST_OP_ATTR_BYTES + POST_OP_FH_BYTES : dirPart;
        // dircount may be smaller than one entry (some clients send small values): it limits
        // only what follows the first entry, while maxcount is honoured exactly.
        if (size + full > limit || (plus && end > start && dirSize + dirPart > dircount)) break;
        size += full;
        dirSize += dirPart;
        end++;
      }
      if (end === start && start < entries.length) throw new NfsError(NfsStat.TOOSMALL, 'count too small for one entry');
      let children: (FsNode | null)[] | null = null;
      if (plus) {
        const slice = entries.slice(start, end);
        const maySee = maySearch(t.node.stats, t.id);
        children = await Promise.all(
          slice.map((e) => (!maySee ? null : e.name === '.' ? t.node : t.exp.store.child(t.node, e.name))),
        );
      }
      const w = call.beginReply(size + 64);
      w.u32(NfsStat.OK);
      writePostOpAttr(w, attrs, fsid);
      w.u32(0);
      w.u32(0);
      for (let i = start; i < end; i++) {
        const e = entries[i];
        w.u32(1);
        w.u64(e.ino);
        w.bytesString(e.name);
        w.u32(e.cookieHi);
        w.u32(e.cookieLo);
        if (children !== null) {
          const child = children[i - start];
          writePostOpAttr(w, child ? child.stats : null, fsid);
          if (child) {
            w.u32(1);
            w.opaque(t.exp.store.handleOf(child));
          } else {
            w.u32(0);
          }
        }
      }
      w.u32(0);
      w.bool(end === entries.length);
      call.send();
    } catch (err) {
      this.fail(call, err, attrs, fsid);
    }
  }

  private async fsstat(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    try {
      const t = await this.target(call, fh);
      const s = await t.exp.store.statfs();
      const w = this.okWithAttrs(call, t, 128);
      w.u64(s.blocks * s.bsize);
      w.u64(s.bfree * s.bsize);
      w.u64(s.bavail * s.bsize);
      w.u64(s.files);
      w.u64(s.ffree);
      w.u64(s.ffree);
      w.u32(0); // invarsec: the numbers may change at any time
      call.send();
    } catch (err) {
      this.fail(call, err);
    }
  }

  private async fsinfo(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    try {
      const t = await this.target(call, fh);
      const max = call.sink.tcp ? this.limits.tcpTransferMax : this.limits.udpTransferMax;
      const w = this.okWithAttrs(call, t, 128);
      w.u32(max); // rtmax
      w.u32(max); // rtpref
      w.u32(4096); // rtmult
      w.u32(max); // wtmax
      w.u32(max); // wtpref
      w.u32(4096); // wtmult
      w.u32(Math.min(this.limits.dirPref, max)); // dtpref
      w.u64parts(0x7fffffff, 0xffffffff); // maxfilesize
      w.u32(0); // time_delta: we report times to the microsecond
      w.u32(1000);
      w.u32(FsfProps.LINK | FsfProps.SYMLINK | FsfProps.HOMOGENEOUS | FsfProps.CANSETTIME);
      call.send();
    } catch (err) {
      this.fail(call, err);
    }
  }

  private async pathconf(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    try {
      const t = await this.target(call, fh);
      const w = this.okWithAttrs(call, t, 96);
      w.u32(65000); // linkmax (ext4)
      w.u32(NFS3_MAXNAMLEN);
      w.bool(true); // no_trunc: long names are refused, not truncated
      w.bool(true); // chown_restricted
      w.bool(false); // case_insensitive
      w.bool(true); // case_preserving
      call.send();
    } catch (err) {
      this.fail(call, err);
    }
  }
}

/** Names a LOOKUP may ask for: no separators, no NUL, not empty, not longer than NAME_MAX. */
function checkLookupName(name: string): void {
  if (name.length === 0) throw new NfsError(NfsStat.NOENT, 'empty name');
  if (name.length > NFS3_MAXNAMLEN) throw new NfsError(NfsStat.NAMETOOLONG);
  if (name.includes('/') || name.includes('\0')) throw new NfsError(NfsStat.ACCES, 'name with / or NUL');
}
