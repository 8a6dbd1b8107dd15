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
import { XdrError, type XdrReader, type XdrWriter } from '../rpc/xdr.js';
import type { ExportStore, FsNode, SetAttrs } from '../store/export-store.js';
import { firstAfter } from '../store/cookies.js';
import { accessMask, effectiveIdentity, inGroup, mayChangeEntries, mayRead, maySearch, mayWrite, mayWriteData, stickyForbids, type Identity, type SquashOptions } from './access.js';
import { CreateMode, FsfProps, FType, NFS_PROC_NAMES, NFS_PROGRAM, NFS_V3, NFS3_FHSIZE, NFS3_MAXNAMLEN, NFS3_MAXPATHLEN, NfsProc, NfsStat, StableHow } from './constants.js';
import { isClientError, NfsError, toNfsStat } from './errors.js';
import { encodeTime, writeFattr, writePostOpAttr, writeWcc } from './fattr.js';
import { decodeHandle, FH_SIZE } from './filehandle.js';
import { randomBytes } from 'node:crypto';
import { ClientIdentities } from '../remap/identity.js';
import { rawName, Remapper, type RemapPolicy } from '../remap/remapper.js';
import type { ClientView } from '../remap/resolve.js';

const log = componentLogger('nfs');

/** What the NFS program needs to know about a served export. */
export interface NfsExport {
  fsid: number;
  path: string;
  store: ExportStore;
}

/** The options that apply to one client of one export. */
export interface ClientPolicy extends SquashOptions, RemapPolicy {
  ro: boolean;
  secure: boolean;
}

/**
 * Decides, on every call, whether this client may use this export and with which options. An
 * object with a method rather than a function: every server's authorizer then runs the same
 * function, which V8 inlines once for all (a closure per server is a new call target each time).
 */
export interface Authorizer {
  authorize(exp: NfsExport, address: string): ClientPolicy | null | Promise<ClientPolicy | null>;
}

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
  /** Who is asking, for remapping; null when the export does not remap for this client. */
  client: ClientView | null;
}

/** Per-client remapping of tagged names (src/remap): the resolver and where identities come from. */
export interface ClusterSupport {
  remapper: Remapper;
  identities: ClientIdentities;
}

/**
 * READs from this size up, of files not held in memory, are sent from the file by sendfile
 * (when the transport can): below it the hand-off to the addon's thread and back costs more
 * than the copy it saves.
 */
const SENDFILE_MIN_BYTES = 128 * 1024;

// Sizes used to honour READDIR count and READDIRPLUS dircount/maxcount exactly.
const POST_OP_ATTR_BYTES = 4 + 84;
const READDIR_FIXED = 4 + POST_OP_ATTR_BYTES + 8 + 4 + 4;
const POST_OP_FH_BYTES = 4 + 4 + FH_SIZE;

function padded(n: number): number {
  return (n + 3) & ~3;
}

export class NfsProgram {
  private readonly exports = new Map<number, NfsExport>();
  private readonly policies: Authorizer;
  private readonly limits: NfsLimits;
  /**
   * The write verifier: new at every start, so clients resend UNSTABLE data that a restart may
   * have lost before it was committed.
   */
  private readonly writeVerifier = randomBytes(8);
  /** Error replies by nfsstat3 (every non-OK reply goes through fail()); read by the metrics. */
  readonly errorReplies = new Map<number, number>();

  private readonly remap: Remapper;
  private readonly identities: ClientIdentities;

  constructor(exports: NfsExport[], policies: Authorizer, limits: NfsLimits = DEFAULT_NFS_LIMITS, cluster?: ClusterSupport) {
    for (const e of exports) this.exports.set(e.fsid, e);
    this.policies = policies;
    this.limits = limits;
    this.remap = cluster?.remapper ?? new Remapper();
    this.identities = cluster?.identities ?? new ClientIdentities();
  }

  program(): Program {
    // Handlers are the methods themselves, bound: a closure per server instance would have its own
    // optimised code, and the one compiled during the JIT warm-up would be compiled again for the
    // real server's closures in its first storm.
    const p = (name: string, handler: (this: NfsProgram, call: RpcCall) => void | Promise<void>, mutates = false, nonIdempotent = false): ProcedureSpec => ({
      name,
      handler: handler.bind(this),
      mutates,
      nonIdempotent,
      needsCred: name !== 'NULL',
    });
    const procs: ProcedureSpec[] = [];
    procs[NfsProc.NULL] = p('NULL', this.nullProc);
    procs[NfsProc.GETATTR] = p('GETATTR', this.getattr);
    procs[NfsProc.SETATTR] = p('SETATTR', this.setattr, true, false);
    procs[NfsProc.LOOKUP] = p('LOOKUP', this.lookup);
    procs[NfsProc.ACCESS] = p('ACCESS', this.access);
    procs[NfsProc.READLINK] = p('READLINK', this.readlink);
    procs[NfsProc.READ] = p('READ', this.read);
    procs[NfsProc.WRITE] = p('WRITE', this.write, true, false);
    procs[NfsProc.CREATE] = p('CREATE', this.create, true, true);
    procs[NfsProc.MKDIR] = p('MKDIR', this.mkdir, true, true);
    procs[NfsProc.SYMLINK] = p('SYMLINK', this.symlink, true, true);
    procs[NfsProc.MKNOD] = p('MKNOD', this.mknod, true, true);
    procs[NfsProc.REMOVE] = p('REMOVE', this.removeFile, true, true);
    procs[NfsProc.RMDIR] = p('RMDIR', this.rmdir, true, true);
    procs[NfsProc.RENAME] = p('RENAME', this.rename, true, true);
    procs[NfsProc.LINK] = p('LINK', this.link, true, true);
    procs[NfsProc.READDIR] = p('READDIR', this.readdirNames);
    procs[NfsProc.READDIRPLUS] = p('READDIRPLUS', this.readdirPlus);
    procs[NfsProc.FSSTAT] = p('FSSTAT', this.fsstat);
    procs[NfsProc.FSINFO] = p('FSINFO', this.fsinfo);
    procs[NfsProc.PATHCONF] = p('PATHCONF', this.pathconf);
    procs[NfsProc.COMMIT] = p('COMMIT', this.commit, true, false);
    return { program: NFS_PROGRAM, name: 'nfs', versions: [{ version: NFS_V3, procedures: procs }] };
  }

  private nullProc(call: RpcCall): void {
    call.beginReply(0);
    call.send();
  }

  private removeFile(call: RpcCall): Promise<void> {
    return this.remove(call, false);
  }

  private rmdir(call: RpcCall): Promise<void> {
    return this.remove(call, true);
  }

  private readdirNames(call: RpcCall): Promise<void> {
    return this.readdir(call, false);
  }

  private readdirPlus(call: RpcCall): Promise<void> {
    return this.readdir(call, true);
  }

  // ---- common steps -------------------------------------------------------------------------

  /**
   * target() for the cache-hit path, without a promise: null when any step would have to wait
   * (an uncached object, an asynchronous client check, a remap check that needs the tag index)
   * or fail; target() then does it all again. Whatever target() checks, this must check too.
   */
  private targetCached(call: RpcCall, fh: Buffer): Target | null {
    const fields = decodeHandle(fh);
    if (fields === null) return null;
    const exp = this.exports.get(fields.fsid);
    if (exp === undefined) return null;
    const policy = this.policies.authorize(exp, call.sink.address);
    if (policy === null || policy instanceof Promise || (policy.secure && call.sink.port >= 1024)) return null;
    let node = exp.store.resolveCached(fields);
    if (node === null) return null;
    const client = this.clientView(call, policy);
    if (client !== null) {
      node = this.remap.checkHandleSync(exp.store, policy, node, client);
      if (node === null) return null;
    }
    return { exp, policy, id: effectiveIdentity(call.cred, policy), node, client };
  }

  /**
   * Handle → export → client check → validated object → this client's view of it (variant
   * handles of other clients are STALE; a COW master's handle leads to this client's copy). Throws NfsError.
   * `probed`: targetCached() just missed, so the store's cache need not be asked again.
   */
  private async target(call: RpcCall, fh: Buffer, probed = false): Promise<Target> {
    const fields = decodeHandle(fh);
    if (fields === null) throw new NfsError(NfsStat.BADHANDLE, 'not one of our handles');
    const exp = this.exports.get(fields.fsid);
    if (exp === undefined) throw new NfsError(NfsStat.STALE, `no export with fsid ${fields.fsid}`);
    const policy = await this.policies.authorize(exp, call.sink.address);
    if (policy === null) throw new NfsError(NfsStat.ACCES, `client not in the export list of ${exp.path}`);
    if (policy.secure && call.sink.port >= 1024) throw new NfsError(NfsStat.ACCES, `unprivileged source port ${call.sink.port} on a secure export`);
    let node = await (probed ? exp.store.resolveMiss(fields) : exp.store.resolve(fields));
    const client = this.clientView(call, policy);
    if (client !== null) node = await this.remap.checkHandle(exp.store, policy, node, client);
    return { exp, policy, id: effectiveIdentity(call.cred, policy), node, client };
  }

  /** Who is asking, when this export remaps names for this client (not for cluster_admin hosts). */
  private clientView(call: RpcCall, policy: ClientPolicy): ClientView | null {
    return policy.cluster === true && policy.clusterAdmin !== true ? this.identities.view(call.sink.address, call.cred.uid, call.cred.gid) : null;
  }

  /** The target a permitted change goes to: a COW master's is this client's copy (made now if new). */
  private async changing(t: Target): Promise<Target> {
    if (t.client === null) return t;
    const node = await this.remap.beforeChange(t.exp.store, t.policy, t.node, t.client);
    return node === t.node ? t : { ...t, node };
  }

  /** Answers a failure: status plus the procedure's resfail arm (attributes when known). */
  private fail(call: RpcCall, err: unknown, attrs: fs.Stats | null = null, fsid = 0): void {
    const status = toNfsStat(err);
    this.errorReplies.set(status, (this.errorReplies.get(status) ?? 0) + 1);
    const ctx = { client: call.sink.address, xid: call.xid, proc: NFS_PROC_NAMES[call.proc] ?? call.proc, status };
    if (isClientError(status)) log.debug({ ...ctx, reason: (err as Error).message }, 'NFS error reply');
    else log.error({ ...ctx, err }, 'NFS server error');
    const w = call.beginReply(128);
    w.u32(status);
    const words = FAIL_WORDS[call.proc];
    if (attrs !== null && words === 1) {
      writePostOpAttr(w, attrs, fsid);
    } else if (attrs !== null && words === 2) {
      writeWcc(w, null, attrs, fsid);
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

  /** A target that may be changed: the export is writable for this client. */
  private async writableTarget(call: RpcCall, fh: Buffer): Promise<Target> {
    const t = await this.target(call, fh);
    if (t.policy.ro) throw new NfsError(NfsStat.ROFS, 'export is read-only for this client');
    return t;
  }

  /** A directory whose entries this caller may change. */
  private async writableDir(call: RpcCall, fh: Buffer): Promise<Target> {
    const t = await this.writableTarget(call, fh);
    if (!t.node.stats.isDirectory()) throw new NfsError(NfsStat.NOTDIR);
    if (!mayChangeEntries(t.node.stats, t.id)) throw new NfsError(NfsStat.ACCES, 'no write permission on directory');
    return t;
  }

  /** An NFS3_OK reply whose resok arm is just the object's wcc_data (SETATTR, REMOVE, RMDIR). */
  private replyWcc(call: RpcCall, before: fs.Stats, after: fs.Stats, fsid: number): void {
    const w = call.beginReply(200);
    w.u32(NfsStat.OK);
    writeWcc(w, before, after, fsid);
    call.send();
  }

  /** Reply of CREATE, MKDIR, SYMLINK, MKNOD: the new handle and attributes, the directory's wcc. */
  private replyCreated(call: RpcCall, d: Target, node: FsNode, dirAfter: fs.Stats): void {
    const w = call.beginReply(300);
    w.u32(NfsStat.OK);
    w.u32(1);
    w.opaque(d.exp.store.handleOf(node));
    writePostOpAttr(w, node.stats, d.exp.fsid);
    writeWcc(w, d.node.stats, dirAfter, d.exp.fsid);
    call.send();
  }

  // ---- procedures ---------------------------------------------------------------------------

  // GETATTR and ACCESS answer a cache hit synchronously: no promise on the getattr storm's path.
  private getattr(call: RpcCall): void | Promise<void> {
    const fh = this.readFh(call);
    const t = this.targetCached(call, fh);
    if (t === null) return this.getattrMiss(call, fh);
    this.replyGetattr(call, t);
  }

  private async getattrMiss(call: RpcCall, fh: Buffer): Promise<void> {
    try {
      this.replyGetattr(call, await this.target(call, fh, true));
    } catch (err) {
      this.fail(call, err);
    }
  }

  private replyGetattr(call: RpcCall, t: Target): void {
    const w = call.beginReply(96);
    w.u32(NfsStat.OK);
    writeFattr(w, t.node.stats, t.exp.fsid);
    call.send();
  }

  // A LOOKUP of a name known to the caches is answered synchronously too (the boot set's paths);
  // with the directory cached, a name being filled (the other nodes of a storm ask for it at the
  // same moment) waits for that alone.
  private lookup(call: RpcCall): void | Promise<void> {
    const fh = this.readFh(call);
    const name = this.readName(call);
    const t = this.targetCached(call, fh);
    if (t !== null && t.node.stats.isDirectory() && isLookupName(name) && maySearch(t.node.stats, t.id)) {
      const child = this.remap.lookupSync(t.exp.store, t.policy, t.node, name, t.client);
      if (child) return this.replyLookup(call, t, child);
      return this.lookupIn(call, t, name, child === null);
    }
    return this.lookupMiss(call, fh, name);
  }

  private async lookupMiss(call: RpcCall, fh: Buffer, name: string): Promise<void> {
    let t: Target | null = null;
    try {
      t = await this.target(call, fh);
      if (!t.node.stats.isDirectory()) throw new NfsError(NfsStat.NOTDIR);
      checkLookupName(name);
      if (!maySearch(t.node.stats, t.id)) throw new NfsError(NfsStat.ACCES, 'no search permission');
    } catch (err) {
      return this.fail(call, err, t?.node.stats ?? null, t?.exp.fsid ?? 0);
    }
    return this.lookupIn(call, t, name, false);
  }

  /** The rest of a LOOKUP whose directory target() would give `t` (checked: a searchable directory). */
  private async lookupIn(call: RpcCall, t: Target, name: string, probed: boolean): Promise<void> {
    try {
      this.replyLookup(call, t, await this.remap.lookup(t.exp.store, t.policy, t.node, name, t.client, probed));
    } catch (err) {
      this.fail(call, err, t.node.stats, t.exp.fsid);
    }
  }

  private replyLookup(call: RpcCall, t: Target, child: FsNode): void {
    const fsid = t.exp.fsid;
    const w = call.beginReply(256);
    w.u32(NfsStat.OK);
    w.opaque(t.exp.store.handleOf(child));
    writePostOpAttr(w, child.stats, fsid);
    writePostOpAttr(w, t.node.stats, fsid);
    call.send();
  }

  private access(call: RpcCall): void | Promise<void> {
    const fh = this.readFh(call);
    const asked = call.args.u32();
    const t = this.targetCached(call, fh);
    if (t === null) return this.accessMiss(call, fh, asked);
    this.replyAccess(call, t, asked);
  }

  private async accessMiss(call: RpcCall, fh: Buffer, asked: number): Promise<void> {
    try {
      this.replyAccess(call, await this.target(call, fh, true), asked);
    } catch (err) {
      this.fail(call, err);
    }
  }

  private replyAccess(call: RpcCall, t: Target, asked: number): void {
    const w = this.okWithAttrs(call, t, 128);
    w.u32(accessMask(t.node.stats, t.id, asked, !t.policy.ro));
    call.send();
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

  // A READ of a file held in memory is answered synchronously, as GETATTR and ACCESS are: a
  // booting node's READs of the boot set are mostly that. With the file's attributes cached, a
  // file being loaded (the storm's other nodes want it too) waits for that alone.
  private read(call: RpcCall): void | Promise<void> {
    const fh = this.readFh(call);
    const offset = call.args.u64();
    const count = Math.min(call.args.u32(), call.sink.tcp ? this.limits.tcpTransferMax : this.limits.udpTransferMax);
    const t = this.targetCached(call, fh);
    if (t !== null && t.node.stats.isFile() && mayRead(t.node.stats, t.id)) {
      const data = t.exp.store.readCached(t.node, offset, count);
      if (data !== null) return this.replyRead(call, t.node.stats, t.exp.fsid, data, offset + data.length >= t.node.stats.size);
      return this.readFrom(call, t, offset, count);
    }
    return this.readMiss(call, fh, offset, count);
  }

  private async readMiss(call: RpcCall, fh: Buffer, offset: number, count: number): Promise<void> {
    let t: Target | null = null;
    try {
      t = await this.target(call, fh);
      if (t.node.stats.isDirectory()) throw new NfsError(NfsStat.ISDIR);
      if (!t.node.stats.isFile()) throw new NfsError(NfsStat.INVAL, 'not a regular file');
      if (!mayRead(t.node.stats, t.id)) throw new NfsError(NfsStat.ACCES, 'no read permission');
    } catch (err) {
      return this.fail(call, err, t?.node.stats ?? null, t?.exp.fsid ?? 0);
    }
    return this.readFrom(call, t, offset, count);
  }

  /** The rest of a READ whose file target() would give `t` (checked: a readable regular file). */
  private async readFrom(call: RpcCall, t: Target, offset: number, count: number): Promise<void> {
    try {
      // Large READs of files not held in memory go from the file to the socket without a copy.
      if (count >= SENDFILE_MIN_BYTES && call.sink.canSendFile?.()) {
        const attrs = t.node.stats;
        const fsid = t.exp.fsid;
        const sent = await t.exp.store.sendFromFile(t.node, offset, count, (fd, length, eof) => {
          // Asked again: the file was opened meanwhile, and another reply may have taken the socket.
          if (!call.sink.canSendFile!()) return null;
          this.beginReadReply(call, attrs, fsid, length, eof);
          return call.sendFile(fd, offset, length);
        });
        if (sent) return;
      }
      const { data, eof } = await t.exp.store.read(t.node, offset, count);
      this.replyRead(call, t.node.stats, t.exp.fsid, data, eof);
    } catch (err) {
      this.fail(call, err, t.node.stats, t.exp.fsid);
    }
  }

  private replyRead(call: RpcCall, attrs: fs.Stats, fsid: number, data: Buffer, eof: boolean): void {
    this.beginReadReply(call, attrs, fsid, data.length, eof);
    call.send(data);
  }

  /** READ3resok up to the data's length; the data and its padding follow. */
  private beginReadReply(call: RpcCall, attrs: fs.Stats, fsid: number, length: number, eof: boolean): void {
    const w = call.beginReply(128);
    w.u32(NfsStat.OK);
    writePostOpAttr(w, attrs, fsid);
    w.u32(length);
    w.bool(eof);
    w.u32(length);
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
      const entries = await this.remap.listing(t.exp.store, t.policy, t.node, t.client);
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
          slice.map((e) => (!maySee ? null : e.name === '.' ? t.node : t.exp.store.child(t.node, rawName(e)))),
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

  // ---- procedures that change the file system ----------------------------------------------

  private async setattr(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const a = readSattr(call.args);
    const guard = call.args.bool() ? { sec: call.args.u32(), nsec: call.args.u32() } : null;
    let before: fs.Stats | null = null;
    try {
      const allowed = await this.writableTarget(call, fh);
      const st = allowed.node.stats;
      before = st;
      if (guard !== null) {
        const now = encodeTime(st.ctimeMs);
        if (now.sec !== guard.sec || now.nsec !== guard.nsec) throw new NfsError(NfsStat.NOT_SYNC, 'ctime guard mismatch');
      }
      checkSetattr(a, st, allowed.id);
      const t = await this.changing(allowed);
      const after = this.remap.keepFileid(t.node, await t.exp.store.setattr(t.node, a));
      this.replyWcc(call, before, after.stats, t.exp.fsid);
    } catch (err) {
      this.fail(call, err, before);
    }
  }

  private async write(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const offset = call.args.u64();
    const count = call.args.u32();
    const stable = call.args.u32();
    const data = call.args.opaque(this.limits.tcpTransferMax);
    let before: fs.Stats | null = null;
    try {
      if (stable > StableHow.FILE_SYNC) throw new XdrError(`stable_how ${stable}`);
      const allowed = await this.writableTarget(call, fh);
      const st = allowed.node.stats;
      before = st;
      if (st.isDirectory()) throw new NfsError(NfsStat.ISDIR);
      if (!st.isFile()) throw new NfsError(NfsStat.INVAL, 'not a regular file');
      if (!mayWriteData(st, allowed.id)) throw new NfsError(NfsStat.ACCES, 'no write permission');
      const t = await this.changing(allowed);
      const bytes = data.length < count ? data : data.subarray(0, count);
      await t.exp.store.write(t.node, offset, bytes, stable as 0 | 1 | 2);
      await clearSetidAfterWrite(t);
      const after = this.remap.keepFileid(t.node, await t.exp.store.restat(t.node));
      const w = call.beginReply(200);
      w.u32(NfsStat.OK);
      writeWcc(w, before, after.stats, t.exp.fsid);
      w.u32(bytes.length);
      w.u32(stable);
      w.fixedOpaque(this.writeVerifier);
      call.send();
    } catch (err) {
      this.fail(call, err, before);
    }
  }

  private async commit(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    call.args.u64();
    call.args.u32();
    let before: fs.Stats | null = null;
    try {
      const t = await this.writableTarget(call, fh);
      before = t.node.stats;
      if (!before.isFile()) throw new NfsError(before.isDirectory() ? NfsStat.ISDIR : NfsStat.INVAL);
      await t.exp.store.commit(t.node);
      const after = this.remap.keepFileid(t.node, await t.exp.store.restat(t.node));
      const w = call.beginReply(200);
      w.u32(NfsStat.OK);
      writeWcc(w, before, after.stats, t.exp.fsid);
      w.fixedOpaque(this.writeVerifier);
      call.send();
    } catch (err) {
      this.fail(call, err, before);
    }
  }

  private async create(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const name = this.readName(call);
    const how = call.args.u32();
    if (how > CreateMode.EXCLUSIVE) throw new XdrError(`createmode ${how}`);
    const attrs = how === CreateMode.EXCLUSIVE ? null : readSattr(call.args);
    const verf = how === CreateMode.EXCLUSIVE ? Buffer.from(call.args.fixedOpaque(8)) : null;
    let dirStats: fs.Stats | null = null;
    try {
      const d = await this.writableDir(call, fh);
      dirStats = d.node.stats;
      checkNewName(name);
      const guard = how === CreateMode.UNCHECKED ? 'unchecked' : how === CreateMode.GUARDED ? 'guarded' : 'exclusive';
      const target = await this.remap.newName(d.exp.store, d.policy, d.node, name, d.client, 'create');
      const change = this.remap.willChange(d.exp.store, d.node);
      const created = await this.remap.during(change, d.exp.store.create(d.node, target, attrs?.mode ?? 0o644, guard, verf, d.id));
      let node = created.node;
      if (created.existed && !mayWriteData(node.stats, d.id) && attrs?.size !== null && attrs?.size !== undefined) {
        throw new NfsError(NfsStat.ACCES, 'no write permission to truncate');
      }
      // The mode was given at creation; what else the client set is applied now (owner, size, times).
      const rest = attrs === null ? null : { ...attrs, mode: created.existed ? attrs.mode : null };
      if (rest !== null && (rest.mode !== null || rest.uid !== null || rest.gid !== null || rest.size !== null || rest.atime !== null || rest.mtime !== null)) {
        if (created.existed) {
          checkSetattr(rest, node.stats, d.id);
          // An open that changes an existing COW master (truncation) changes this client's copy.
          node = this.remap.unmasked(await this.remap.beforeChange(d.exp.store, d.policy, node, d.client));
        }
        node = await d.exp.store.setattr(node, rest);
      }
      const dirAfter = await d.exp.store.restat(d.node);
      this.remap.changed(change, dirAfter.stats, null, target);
      this.replyCreated(call, d, node, dirAfter.stats);
    } catch (err) {
      this.fail(call, err, dirStats);
    }
  }

  private async mkdir(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const name = this.readName(call);
    const attrs = readSattr(call.args);
    let dirStats: fs.Stats | null = null;
    try {
      const d = await this.writableDir(call, fh);
      dirStats = d.node.stats;
      checkNewName(name);
      const target = await this.remap.newName(d.exp.store, d.policy, d.node, name, d.client, 'create');
      const change = this.remap.willChange(d.exp.store, d.node);
      const node = await this.remap.during(change, d.exp.store.mkdir(d.node, target, attrs.mode ?? 0o755, d.id));
      const dirAfter = await d.exp.store.restat(d.node);
      this.remap.changed(change, dirAfter.stats, null, target);
      this.replyCreated(call, d, node, dirAfter.stats);
    } catch (err) {
      this.fail(call, err, dirStats);
    }
  }

  private async symlink(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const name = this.readName(call);
    readSattr(call.args); // a symlink's mode is always 0777 on Linux
    const target = Buffer.from(call.args.opaque(NFS3_MAXPATHLEN));
    let dirStats: fs.Stats | null = null;
    try {
      const d = await this.writableDir(call, fh);
      dirStats = d.node.stats;
      checkNewName(name);
      if (target.length === 0 || target.includes(0)) throw new NfsError(NfsStat.INVAL, 'empty symlink target or NUL in it');
      const made = await this.remap.newName(d.exp.store, d.policy, d.node, name, d.client, 'create');
      const change = this.remap.willChange(d.exp.store, d.node);
      const node = await this.remap.during(change, d.exp.store.symlink(d.node, made, target, d.id));
      const dirAfter = await d.exp.store.restat(d.node);
      this.remap.changed(change, dirAfter.stats, null, made);
      this.replyCreated(call, d, node, dirAfter.stats);
    } catch (err) {
      this.fail(call, err, dirStats);
    }
  }

  private async mknod(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const name = this.readName(call);
    const type = call.args.u32();
    let attrs: SetAttrs | null = null;
    let major = 0;
    let minor = 0;
    if (type === FType.CHR || type === FType.BLK) {
      attrs = readSattr(call.args);
      major = call.args.u32();
      minor = call.args.u32();
    } else if (type === FType.SOCK || type === FType.FIFO) {
      attrs = readSattr(call.args);
    }
    let dirStats: fs.Stats | null = null;
    try {
      const d = await this.writableDir(call, fh);
      dirStats = d.node.stats;
      if (attrs === null) throw new NfsError(NfsStat.BADTYPE, `MKNOD of type ${type}`);
      checkNewName(name);
      // Device nodes need CAP_MKNOD locally: only root may make them.
      if ((type === FType.CHR || type === FType.BLK) && d.id.uid !== 0) throw new NfsError(NfsStat.PERM, 'only root makes device nodes');
      const kind = type === FType.CHR ? 'chr' : type === FType.BLK ? 'blk' : type === FType.FIFO ? 'fifo' : 'sock';
      const target = await this.remap.newName(d.exp.store, d.policy, d.node, name, d.client, 'create');
      const change = this.remap.willChange(d.exp.store, d.node);
      const node = await this.remap.during(change, d.exp.store.mknod(d.node, target, kind, attrs.mode ?? 0o644, major, minor, d.id));
      const dirAfter = await d.exp.store.restat(d.node);
      this.remap.changed(change, dirAfter.stats, null, target);
      this.replyCreated(call, d, node, dirAfter.stats);
    } catch (err) {
      this.fail(call, err, dirStats);
    }
  }

  private async remove(call: RpcCall, directory: boolean): Promise<void> {
    const fh = this.readFh(call);
    const name = this.readName(call);
    let dirStats: fs.Stats | null = null;
    try {
      const d = await this.writableDir(call, fh);
      dirStats = d.node.stats;
      if (directory && name === '.') throw new NfsError(NfsStat.INVAL, 'rmdir of .');
      if (directory && name === '..') throw new NfsError(NfsStat.NOTEMPTY, 'rmdir of ..');
      checkExistingName(name);
      const raw = await this.remap.existingName(d.exp.store, d.policy, d.node, name, d.client);
      const child = raw === null ? null : await d.exp.store.peek(d.node, raw);
      if (child === null) throw new NfsError(NfsStat.NOENT);
      if (directory && !child.stats.isDirectory()) throw new NfsError(NfsStat.NOTDIR);
      if (!directory && child.stats.isDirectory()) throw new NfsError(NfsStat.ISDIR, 'REMOVE of a directory');
      if (stickyForbids(d.node.stats, child.stats, d.id)) throw new NfsError(NfsStat.PERM, 'sticky directory');
      const change = this.remap.willChange(d.exp.store, d.node);
      await this.remap.during(change, directory ? d.exp.store.rmdir(d.node, child) : d.exp.store.remove(d.node, child));
      const dirAfter = await d.exp.store.restat(d.node);
      this.remap.changed(change, dirAfter.stats, raw, null);
      this.replyWcc(call, dirStats, dirAfter.stats, d.exp.fsid);
    } catch (err) {
      this.fail(call, err, dirStats);
    }
  }

  private async rename(call: RpcCall): Promise<void> {
    const fromFh = this.readFh(call);
    const fromName = this.readName(call);
    const toFh = this.readFh(call);
    const toName = this.readName(call);
    try {
      const from = await this.writableDir(call, fromFh);
      const to = await this.writableDir(call, toFh);
      if (from.exp !== to.exp) throw new NfsError(NfsStat.XDEV, 'rename across exports');
      checkExistingName(fromName);
      checkNewName(toName);
      const rawFrom = await this.remap.existingName(from.exp.store, from.policy, from.node, fromName, from.client);
      const source = rawFrom === null ? null : await from.exp.store.peek(from.node, rawFrom);
      if (source === null || rawFrom === null) throw new NfsError(NfsStat.NOENT);
      if (stickyForbids(from.node.stats, source.stats, from.id)) throw new NfsError(NfsStat.PERM, 'sticky source directory');
      const rawTo = await this.remap.newName(to.exp.store, to.policy, to.node, toName, to.client, 'replace');
      const replaced = await to.exp.store.peek(to.node, rawTo);
      if (replaced !== null && stickyForbids(to.node.stats, replaced.stats, to.id)) throw new NfsError(NfsStat.PERM, 'sticky target directory');
      // Moving a directory to another parent rewrites its '..': that needs write permission on it.
      if (source.stats.isDirectory() && from.node.ino !== to.node.ino && !mayWrite(source.stats, from.id)) {
        throw new NfsError(NfsStat.ACCES, 'no write permission on the directory being moved');
      }
      const sameDir = from.node.ino === to.node.ino;
      // rename() between two names of one inode does nothing: the index must not drop the source.
      const noop = replaced !== null && replaced.ino === source.ino;
      const fromChange = noop ? null : this.remap.willChange(from.exp.store, from.node);
      const toChange = sameDir || noop ? null : this.remap.willChange(to.exp.store, to.node);
      await this.remap.during(fromChange, this.remap.during(toChange, from.exp.store.rename(from.node, rawFrom, source, to.node, rawTo, replaced)));
      const fromAfter = await from.exp.store.restat(from.node);
      const toAfter = sameDir ? fromAfter : await to.exp.store.restat(to.node);
      this.remap.changed(fromChange, fromAfter.stats, rawFrom, sameDir ? rawTo : null);
      this.remap.changed(toChange, toAfter.stats, null, rawTo);
      const w = call.beginReply(400);
      w.u32(NfsStat.OK);
      writeWcc(w, from.node.stats, fromAfter.stats, from.exp.fsid);
      writeWcc(w, to.node.stats, toAfter.stats, to.exp.fsid);
      call.send();
    } catch (err) {
      this.fail(call, err);
    }
  }

  private async link(call: RpcCall): Promise<void> {
    const fh = this.readFh(call);
    const dirFh = this.readFh(call);
    const name = this.readName(call);
    try {
      let t = await this.writableTarget(call, fh);
      const d = await this.writableDir(call, dirFh);
      if (t.exp !== d.exp) throw new NfsError(NfsStat.XDEV, 'link across exports');
      if (t.node.stats.isDirectory()) throw new NfsError(NfsStat.ISDIR, 'hard link to a directory');
      checkNewName(name);
      const made = await this.remap.newName(d.exp.store, d.policy, d.node, name, d.client, 'create');
      // A second name of a COW master would be a way to write the shared master: link this
      // client's copy instead (made now, as the first change of the master).
      t = await this.changing(t);
      const change = this.remap.willChange(d.exp.store, d.node);
      const after = this.remap.keepFileid(t.node, await this.remap.during(change, d.exp.store.link(t.node, d.node, made)));
      const dirAfter = await d.exp.store.restat(d.node);
      this.remap.changed(change, dirAfter.stats, null, made);
      const w = call.beginReply(300);
      w.u32(NfsStat.OK);
      writePostOpAttr(w, after.stats, t.exp.fsid);
      writeWcc(w, d.node.stats, dirAfter.stats, d.exp.fsid);
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
function isLookupName(name: string): boolean {
  return name.length > 0 && name.length <= NFS3_MAXNAMLEN && !name.includes('/') && !name.includes('\0');
}

function checkLookupName(name: string): void {
  if (isLookupName(name)) return;
  if (name.length === 0) throw new NfsError(NfsStat.NOENT, 'empty name');
  if (name.length > NFS3_MAXNAMLEN) throw new NfsError(NfsStat.NAMETOOLONG);
  if (name.includes('/') || name.includes('\0')) throw new NfsError(NfsStat.ACCES, 'name with / or NUL');
}

/**
 * Names a create-type procedure may make, or a REMOVE/RENAME may name: never '.', '..', a
 * separator or NUL. A missing name is NOENT for an existing object, ACCES for a new one.
 */
function checkName(name: string, isNew: boolean): void {
  if (name.length > NFS3_MAXNAMLEN) throw new NfsError(NfsStat.NAMETOOLONG);
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new NfsError(name === '' && !isNew ? NfsStat.NOENT : NfsStat.ACCES, 'name not allowed');
  }
}

function checkNewName(name: string): void {
  checkName(name, true);
}

function checkExistingName(name: string): void {
  checkName(name, false);
}

function readSetTime(r: XdrReader): number | 'server' | null {
  const how = r.u32();
  if (how === 0) return null;
  if (how === 1) return 'server';
  if (how === 2) return r.u32() + r.u32() / 1e9;
  throw new XdrError(`time_how ${how}`);
}

/** sattr3 (RFC 1813 2.5.7). */
function readSattr(r: XdrReader): SetAttrs {
  const mode = r.bool() ? r.u32() & 0o7777 : null;
  const uid = r.bool() ? r.u32() : null;
  const gid = r.bool() ? r.u32() : null;
  const size = r.bool() ? r.u64() : null;
  const atime = readSetTime(r);
  const mtime = readSetTime(r);
  return { mode, uid, gid, size, atime, mtime };
}

/**
 * Who may change what, as the Linux kernel decides for a local process: only root gives files
 * away; the owner may change the group to one of its own groups, and the mode; truncation needs
 * write permission (or ownership, see mayWriteData); explicit times need ownership, the server's
 * clock also write permission. A non-root owner cannot set setgid for a group it is not in.
 */
function checkSetattr(a: SetAttrs, st: fs.Stats, id: Identity): void {
  if (id.uid === 0) return;
  const owner = st.uid === id.uid;
  // Even an unchanged uid or gid is EPERM for a non-owner: the kernel's chown_ok/chgrp_ok excuse
  // "no change" only for the owner, and knfsd passes the attributes on to notify_change as sent.
  if (a.uid !== null && !(owner && a.uid === st.uid)) throw new NfsError(NfsStat.PERM, 'only root may change the owner');
  if (a.gid !== null && !(owner && (a.gid === st.gid || inGroup(id, a.gid)))) throw new NfsError(NfsStat.PERM, 'may not change the group');
  if (a.mode !== null && !owner) throw new NfsError(NfsStat.PERM, 'only the owner may change the mode');
  if (a.mode !== null && a.mode & 0o2000 && !st.isDirectory() && !inGroup(id, a.gid ?? st.gid)) a.mode &= ~0o2000;
  if (a.size !== null) {
    if (st.isDirectory()) throw new NfsError(NfsStat.ISDIR);
    if (!st.isFile()) throw new NfsError(NfsStat.INVAL, 'size of a non-regular file');
    if (!mayWriteData(st, id)) throw new NfsError(NfsStat.ACCES, 'no write permission to truncate');
  }
  const explicit = (a.atime !== null && a.atime !== 'server') || (a.mtime !== null && a.mtime !== 'server');
  if (explicit && !owner) throw new NfsError(NfsStat.PERM, 'only the owner may set times');
  if ((a.atime === 'server' || a.mtime === 'server') && !owner && !mayWrite(st, id)) throw new NfsError(NfsStat.ACCES, 'no write permission to touch');
}

/**
 * The kernel clears setuid (and setgid on group-executable files) when a process without
 * CAP_FSETID writes; we write as root, so we do it for non-root callers ourselves.
 */
async function clearSetidAfterWrite(t: Target): Promise<void> {
  const mode = t.node.stats.mode;
  if (t.id.uid === 0 || (mode & 0o6000) === 0) return;
  let cleared = mode & 0o7777 & ~0o4000;
  if (mode & 0o010) cleared &= ~0o2000;
  if (cleared !== (mode & 0o7777)) await t.exp.store.setattr(t.node, { mode: cleared, uid: null, gid: null, size: null, atime: null, mtime: null });
}
