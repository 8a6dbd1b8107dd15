/**
 * The MOUNT program (100005), versions 1 and 3 (RFC 1813 appendix I, RFC 1094 appendix A).
 *
 * MNT checks the client against the export's patterns (first match wins) and, under `secure`,
 * its source port (< 1024), then hands out the export's root handle from the injected
 * `rootHandle`. The mount list behind DUMP is advisory (as everywhere) and kept in memory only;
 * it is bounded, oldest entries dropped first.
 *
 * Paths travel as bytes: we decode them as UTF-8 to compare with the export table (a path that is
 * not valid UTF-8 cannot name an export) and encode export paths back as UTF-8.
 *
 * MOUNT v1 answers MNT with a fixed 32-byte handle: ours zero-padded. A handle longer than 32
 * bytes cannot be expressed; MNT v1 then answers errno EACCES (13) — v1's status is a Unix errno
 * and has no "not supported"; EACCES makes a client give up instead of retrying, and the log line
 * says why. (v1 handles serve NFSv2, which we do not speak; v1 matters for showmount and
 * old tools that use DUMP and EXPORT.)
 */
import { componentLogger } from '../log/logger.js';
import { AuthFlavor } from '../rpc/message.js';
import type { Program, ProgramVersion, ProcedureSpec, RpcCall } from '../rpc/dispatch.js';
import type { XdrWriter } from '../rpc/xdr.js';
import { FHSIZE_V2, MNTPATHLEN, MOUNT_PROGRAM, MOUNT_V1, MOUNT_V3, MountStat } from './constants.js';
import { isPrivilegedPort, type ExportEntry, type ExportOptions, type ExportTable } from './exports.js';

const log = componentLogger('mount');

/** NFSv3 handles are at most 64 bytes (RFC 1813 FHSIZE3). */
const FHSIZE3 = 64;
/** MNT v1's answer when our handle does not fit in 32 bytes (see the file comment). */
export const MNT1_HANDLE_TOO_LONG = MountStat.ACCES;
const DEFAULT_MAX_MOUNT_ENTRIES = 10_000;

export interface MountDeps {
  exports: ExportTable;
  /**
   * The file handle of an export's root directory, or of the directory `below` it (path
   * components, never '..') as `caller` would reach it by LOOKUPs (a cluster export remaps each
   * component for that node); null when that is not an existing directory.
   */
  rootHandle(entry: ExportEntry, below: readonly string[], caller: MountCaller): Promise<Buffer | null>;
}

/** Who sends the MNT: its address, AUTH_SYS uid/gid and the export's options for it. */
export interface MountCaller {
  address: string;
  uid: number;
  gid: number;
  options: ExportOptions;
}

export interface MountProgramOptions {
  /** Most (host, dir) pairs kept for DUMP. Default 10000. */
  maxMountEntries?: number;
}

export interface MountRecord {
  host: string;
  dir: string;
}

type MntResult = { status: MountStat.OK; handle: Buffer; mounted: string } | { status: Exclude<MountStat, MountStat.OK>; handle: null };

export class MountProgram implements Program {
  readonly program = MOUNT_PROGRAM;
  readonly name = 'mount';
  readonly versions: ProgramVersion[];
  private exportTable: ExportTable;
  private readonly rootHandle: MountDeps['rootHandle'];
  private readonly maxMountEntries: number;
  /** key host + '\0' + dir, insertion ordered (oldest first). */
  private readonly mountList = new Map<string, MountRecord>();
  /** EXPORT reply pieces, encoded once per table. */
  private exportList: { dir: Buffer; groups: Buffer[] }[] = [];

  constructor(deps: MountDeps, opts: MountProgramOptions = {}) {
    this.exportTable = deps.exports;
    this.rootHandle = deps.rootHandle;
    this.maxMountEntries = opts.maxMountEntries ?? DEFAULT_MAX_MOUNT_ENTRIES;
    this.buildExportList();

    const proc = (name: string, handler: (call: RpcCall) => void | Promise<void>): ProcedureSpec => ({
      name,
      handler,
      mutates: false,
      nonIdempotent: false,
      needsCred: false,
    });
    const common = {
      null: proc('NULL', (c) => this.null(c)),
      dump: proc('DUMP', (c) => this.dump(c)),
      umnt: proc('UMNT', (c) => this.umnt(c)),
      umntall: proc('UMNTALL', (c) => this.umntall(c)),
      export: proc('EXPORT', (c) => this.export(c)),
    };
    this.versions = [
      {
        version: MOUNT_V1,
        procedures: [
          common.null,
          proc('MNT', (c) => this.mnt(c, 1)),
          common.dump,
          common.umnt,
          common.umntall,
          common.export,
          proc('EXPORTALL', (c) => this.export(c)),
        ],
      },
      {
        version: MOUNT_V3,
        procedures: [common.null, proc('MNT', (c) => this.mnt(c, 3)), common.dump, common.umnt, common.umntall, common.export],
      },
    ];
  }

  /** Switches to a new export table (configuration reload). Existing mounts stay listed. */
  setExports(table: ExportTable): void {
    this.exportTable = table;
    this.buildExportList();
  }

  get exports(): ExportTable {
    return this.exportTable;
  }

  /** The current mount list, oldest first. */
  mounts(): MountRecord[] {
    return [...this.mountList.values()].map((m) => ({ ...m }));
  }

  private buildExportList(): void {
    this.exportList = this.exportTable.entries.map((e) => ({
      dir: Buffer.from(e.path, 'utf8'),
      groups: e.rules.map((r) => Buffer.from(r.pattern, 'utf8')),
    }));
  }

  private null(call: RpcCall): void {
    call.beginReply(0);
    call.send();
  }

  private async mnt(call: RpcCall, version: 1 | 3): Promise<void> {
    // Decode before any await: the arguments are a view of the received record.
    const dir = call.args.opaque(MNTPATHLEN).toString('utf8');
    const client = call.sink.address;
    const port = call.sink.port;
    const result = await this.decide(dir, client, port, call.cred.uid, call.cred.gid);
    let status: number = result.status;
    let handle = result.handle;
    if (handle !== null && version === 1 && handle.length > FHSIZE_V2) {
      log.warn({ client, port, export: dir, bytes: handle.length, result: 'ACCES' }, 'MNT v1: root handle longer than 32 bytes, refused (use MOUNT v3)');
      status = MNT1_HANDLE_TOO_LONG;
      handle = null;
    }
    if (handle !== null && result.handle !== null) this.remember(client, result.mounted);

    const w = call.beginReply(version === 1 ? 48 : 32 + (handle ? handle.length : 0));
    w.u32(status);
    if (handle !== null) {
      if (version === 1) {
        const fixed = Buffer.alloc(FHSIZE_V2);
        handle.copy(fixed);
        w.fixedOpaque(fixed);
      } else {
        w.opaque(handle);
        w.u32(1);
        w.u32(AuthFlavor.SYS);
      }
    }
    call.send();
  }

  private async decide(dir: string, client: string, port: number, uid: number, gid: number): Promise<MntResult> {
    const found = this.exportTable.findContaining(dir);
    const entry = found?.entry;
    if (found === undefined || entry === undefined) {
      log.info({ client, port, export: dir, result: 'NOENT' }, 'MNT refused: not exported');
      return { status: MountStat.NOENT, handle: null };
    }
    const opts = await this.exportTable.clientOptions(entry, client);
    if (opts === null) {
      log.warn({ client, port, export: entry.path, result: 'ACCES' }, 'MNT refused: client not allowed by the export');
      return { status: MountStat.ACCES, handle: null };
    }
    if (opts.secure && !isPrivilegedPort(port)) {
      log.warn({ client, port, export: entry.path, result: 'ACCES' }, 'MNT refused: source port is not privileged (export is secure; use insecure to allow)');
      return { status: MountStat.ACCES, handle: null };
    }
    let handle: Buffer | null;
    try {
      handle = await this.rootHandle(entry, found.below, { address: client, uid, gid, options: opts });
    } catch (err) {
      log.error({ err, client, port, export: entry.path, result: 'SERVERFAULT' }, 'MNT failed: no root handle');
      return { status: MountStat.SERVERFAULT, handle: null };
    }
    if (handle === null) {
      log.info({ client, port, export: entry.path, dir, result: 'NOENT' }, 'MNT refused: no such directory in the export');
      return { status: MountStat.NOENT, handle: null };
    }
    if (handle.length > FHSIZE3) {
      log.error({ client, export: entry.path, bytes: handle.length, result: 'SERVERFAULT' }, 'MNT failed: root handle longer than 64 bytes');
      return { status: MountStat.SERVERFAULT, handle: null };
    }
    const mounted = found.below.length === 0 ? entry.path : `${entry.path === '/' ? '' : entry.path}/${found.below.join('/')}`;
    log.info({ client, port, export: entry.path, dir: mounted, ro: opts.ro, cluster: opts.cluster, result: 'OK' }, 'MNT');
    return { status: MountStat.OK, handle, mounted };
  }

  private remember(host: string, dir: string): void {
    const key = host + '\0' + dir;
    if (this.mountList.has(key)) return;
    if (this.mountList.size >= this.maxMountEntries) {
      const oldest = this.mountList.keys().next().value;
      if (oldest !== undefined) this.mountList.delete(oldest);
      log.warn({ limit: this.maxMountEntries }, 'mount list full, oldest entry dropped');
    }
    this.mountList.set(key, { host, dir });
  }

  private dump(call: RpcCall): void {
    const w = call.beginReply(64 * (this.mountList.size + 1));
    for (const m of this.mountList.values()) {
      w.u32(1);
      w.opaque(Buffer.from(m.host, 'utf8'));
      w.opaque(Buffer.from(m.dir, 'utf8'));
    }
    w.u32(0);
    call.send();
  }

  private umnt(call: RpcCall): void {
    const dir = call.args.opaque(MNTPATHLEN).toString('utf8');
    const client = call.sink.address;
    const path = this.exportTable.find(dir)?.path ?? dir;
    const removed = this.mountList.delete(client + '\0' + path);
    log.info({ client, port: call.sink.port, export: path, result: removed ? 'removed' : 'not mounted' }, 'UMNT');
    call.beginReply(0);
    call.send();
  }

  private umntall(call: RpcCall): void {
    const client = call.sink.address;
    let removed = 0;
    for (const [key, m] of this.mountList) {
      if (m.host === client) {
        this.mountList.delete(key);
        removed++;
      }
    }
    log.info({ client, port: call.sink.port, removed }, 'UMNTALL');
    call.beginReply(0);
    call.send();
  }

  private export(call: RpcCall): void {
    let size = 8;
    for (const e of this.exportList) {
      size += 12 + e.dir.length;
      for (const g of e.groups) size += 12 + g.length;
    }
    const w: XdrWriter = call.beginReply(size);
    for (const e of this.exportList) {
      w.u32(1);
      w.opaque(e.dir);
      for (const g of e.groups) {
        w.u32(1);
        w.opaque(g);
      }
      w.u32(0);
    }
    w.u32(0);
    call.send();
  }
}
