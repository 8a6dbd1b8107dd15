/**
 * A valid call for every procedure of portmap (v2, v3, v4), MOUNT (v1, v3) and NFSv3, encoded with
 * the client library's own argument encoders: the fuzzer's starting points before mutation.
 */
import { encodeMntArgs } from '../src/client/mount-client.js';
import {
  encodeAccessArgs,
  encodeCommitArgs,
  encodeCreateArgs,
  encodeDiropArgs,
  encodeFhArgs,
  encodeLinkArgs,
  encodeMkdirArgs,
  encodeMknodArgs,
  encodeReadArgs,
  encodeReaddirArgs,
  encodeReaddirplusArgs,
  encodeRenameArgs,
  encodeSetattrArgs,
  encodeSymlinkArgs,
  encodeWriteArgs,
} from '../src/client/nfs3-args.js';
import { encodeMapping, encodeRpcb } from '../src/client/portmap-client.js';
import { MOUNT_PROGRAM } from '../src/mount/constants.js';
import { NFS_PROGRAM } from '../src/nfs/constants.js';
import { AuthFlavor, writeCallHeader, type Credentials } from '../src/rpc/message.js';
import { PORTMAP_PROGRAM } from '../src/rpc/portmap-constants.js';
import { XdrWriter } from '../src/rpc/xdr.js';
import type { Rng } from './rng.js';

export type Service = 'portmap' | 'mount' | 'nfs';

export interface BaseCall {
  service: Service;
  prog: number;
  vers: number;
  proc: number;
  /** The call message (xid onwards, no record mark). */
  message: Buffer;
  /** Where the procedure arguments start in `message`. */
  argsAt: number;
}

/** Handles and names the calls refer to: real ones from the server under test. */
export interface CallContext {
  exportPath: string;
  root: Buffer;
  file: Buffer;
  dir: Buffer;
}

type Encode = (w: XdrWriter, c: CallContext, rng: Rng) => void;

const ATTRS = { mode: 0o644 };
const name = (rng: Rng) => `f${rng.below(8)}`;

const NFS3: Encode[] = [
  () => {}, // NULL
  (w, c) => encodeFhArgs(w, c.file),
  (w, c) => encodeSetattrArgs(w, c.file, { mode: 0o640, size: 10 }),
  (w, c, r) => encodeDiropArgs(w, c.dir, name(r)),
  (w, c) => encodeAccessArgs(w, c.file, 0x3f),
  (w, c) => encodeFhArgs(w, c.file), // READLINK
  (w, c, r) => encodeReadArgs(w, c.file, r.below(8192), 4096),
  (w, c, r) => encodeWriteArgs(w, c.file, r.below(8192), r.bytes(64 + r.below(512)), r.below(3)),
  (w, c, r) => encodeCreateArgs(w, c.dir, name(r), r.below(3), ATTRS, Buffer.alloc(8, 7)),
  (w, c, r) => encodeMkdirArgs(w, c.dir, `d${r.below(4)}`, { mode: 0o755 }),
  (w, c, r) => encodeSymlinkArgs(w, c.dir, `s${r.below(4)}`, '../target', ATTRS),
  (w, c, r) => encodeMknodArgs(w, c.dir, `n${r.below(4)}`, 6, ATTRS), // FIFO
  (w, c, r) => encodeDiropArgs(w, c.dir, name(r)), // REMOVE
  (w, c, r) => encodeDiropArgs(w, c.dir, `d${r.below(4)}`), // RMDIR
  (w, c, r) => encodeRenameArgs(w, c.dir, name(r), c.dir, name(r)),
  (w, c, r) => encodeLinkArgs(w, c.file, c.dir, `l${r.below(4)}`),
  (w, c) => encodeReaddirArgs(w, c.dir, 0n, null, 4096),
  (w, c) => encodeReaddirplusArgs(w, c.dir, 0n, null, 4096, 16384),
  (w, c) => encodeFhArgs(w, c.root), // FSSTAT
  (w, c) => encodeFhArgs(w, c.root), // FSINFO
  (w, c) => encodeFhArgs(w, c.root), // PATHCONF
  (w, c) => encodeCommitArgs(w, c.file, 0, 0),
];

const MOUNT: Encode[] = [
  () => {}, // NULL
  (w, c) => encodeMntArgs(w, c.exportPath),
  () => {}, // DUMP
  (w, c) => encodeMntArgs(w, c.exportPath), // UMNT
  () => {}, // UMNTALL
  () => {}, // EXPORT
];

const mapping = (r: Rng) => ({ prog: r.pick([NFS_PROGRAM, MOUNT_PROGRAM, 400000 + r.below(10)]), vers: r.below(5), prot: r.pick([6, 17, 0]), port: r.below(65536) });
const rpcb = (r: Rng) => ({ prog: r.pick([NFS_PROGRAM, MOUNT_PROGRAM, 400000]), vers: 3, netid: r.pick(['tcp', 'udp', 'tcp6', 'x']), addr: '127.0.0.1.8.1', owner: 'fuzz' });

const PMAP2: Encode[] = [
  () => {},
  (w, _c, r) => encodeMapping(w, mapping(r)), // SET
  (w, _c, r) => encodeMapping(w, mapping(r)), // UNSET
  (w, _c, r) => encodeMapping(w, mapping(r)), // GETPORT
  () => {}, // DUMP
  (w, _c, r) => {
    // CALLIT: prog, vers, proc, args
    w.u32(NFS_PROGRAM);
    w.u32(3);
    w.u32(0);
    w.opaque(r.bytes(r.below(16)));
  },
];

/** rpcbind v3/v4 procedures 0..12 (the server answers PROC_UNAVAIL to some: still worth sending). */
const RPCB: Encode[] = [
  () => {},
  (w, _c, r) => encodeRpcb(w, rpcb(r)), // SET
  (w, _c, r) => encodeRpcb(w, rpcb(r)), // UNSET
  (w, _c, r) => encodeRpcb(w, rpcb(r)), // GETADDR
  () => {}, // DUMP
  (w, _c, r) => PMAP2[5](w, _c, r), // CALLIT
  () => {}, // GETTIME
  (w) => w.bytesString('127.0.0.1.8.1'), // UADDR2TADDR
  (w) => w.opaque(Buffer.from([0, 2, 8, 1, 127, 0, 0, 1])), // TADDR2UADDR
  (w, _c, r) => encodeRpcb(w, rpcb(r)), // GETVERSADDR
  (w, _c, r) => PMAP2[5](w, _c, r), // INDIRECT
  (w, _c, r) => encodeRpcb(w, rpcb(r)), // GETADDRLIST
  () => {}, // GETSTAT
];

interface ProgramCalls {
  service: Service;
  prog: number;
  vers: number;
  procs: Encode[];
}

export const PROGRAMS: readonly ProgramCalls[] = [
  { service: 'portmap', prog: PORTMAP_PROGRAM, vers: 2, procs: PMAP2 },
  { service: 'portmap', prog: PORTMAP_PROGRAM, vers: 3, procs: RPCB.slice(0, 9) },
  { service: 'portmap', prog: PORTMAP_PROGRAM, vers: 4, procs: RPCB },
  { service: 'mount', prog: MOUNT_PROGRAM, vers: 1, procs: MOUNT },
  { service: 'mount', prog: MOUNT_PROGRAM, vers: 3, procs: MOUNT },
  { service: 'nfs', prog: NFS_PROGRAM, vers: 3, procs: NFS3 },
];

/** Every (program, version, procedure) the fuzzer covers, for the report. */
export function procedureCount(): number {
  return PROGRAMS.reduce((n, p) => n + p.procs.length, 0);
}

const writer = new XdrWriter(64 * 1024);
const ROOT: Credentials = { flavor: AuthFlavor.SYS, uid: 0, gid: 0, gids: [0], machineName: 'fuzz' };

/** A valid call of a random procedure (or of the one at `index` in PROGRAMS × procs order). */
export function validCall(rng: Rng, ctx: CallContext, xid: number): BaseCall {
  const p = rng.pick(PROGRAMS);
  const proc = rng.below(p.procs.length);
  return encodeCall(p, proc, rng, ctx, xid);
}

export function encodeCall(p: ProgramCalls, proc: number, rng: Rng, ctx: CallContext, xid: number): BaseCall {
  const w = writer;
  w.begin(4096);
  writeCallHeader(w, xid, p.prog, p.vers, proc, rng.chance(0.2) ? null : ROOT);
  const argsAt = w.length();
  p.procs[proc](w, ctx, rng);
  return { service: p.service, prog: p.prog, vers: p.vers, proc, message: Buffer.from(w.finish()), argsAt };
}

/** One valid call of every procedure of every program version. */
export function everyCall(rng: Rng, ctx: CallContext): BaseCall[] {
  const out: BaseCall[] = [];
  let xid = 1;
  for (const p of PROGRAMS) for (let proc = 0; proc < p.procs.length; proc++) out.push(encodeCall(p, proc, rng, ctx, xid++));
  return out;
}
