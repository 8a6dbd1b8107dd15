/**
 * MOUNT client (RFC 1813 appendix I for v3; RFC 1094 appendix A for v1, whose MNT returns a
 * fixed 32-byte fhstatus instead of a handle and auth flavors).
 */
import { FHSIZE_V2, MNTNAMLEN, MNTPATHLEN, MOUNT_PROGRAM, MOUNT_V1, MOUNT_V3, MountProc, MountStat } from '../mount/constants.js';
import type { XdrReader, XdrWriter } from '../rpc/xdr.js';
import { NFS3_FHSIZE } from '../nfs/constants.js';
import type { RpcClient } from './rpc-client.js';
import type { Name } from './nfs3-types.js';
import { writeName } from './nfs3-xdr.js';

export interface MntRes {
  /** MountStat */
  status: number;
  fh: Buffer | null;
  /** Auth flavors the export accepts (v3 only; empty for v1 and on error). */
  authFlavors: number[];
}

export interface MountEntry {
  hostname: string;
  directory: string;
}

export interface ExportEntry {
  dir: string;
  groups: string[];
}

/** Bounds lists from a misbehaving server (the record bounds them too, but not cheaply). */
const MAX_AUTH_FLAVORS = 64;

export function encodeMntArgs(w: XdrWriter, path: Name): void {
  writeName(w, path);
}

export function decodeMntV3Res(r: XdrReader): MntRes {
  const status = r.u32();
  if (status !== MountStat.OK) return { status, fh: null, authFlavors: [] };
  const fh = Buffer.from(r.opaque(NFS3_FHSIZE));
  const n = r.u32();
  if (n > MAX_AUTH_FLAVORS) throw new RangeError(`MNT reply with ${n} auth flavors`);
  const authFlavors = new Array<number>(n);
  for (let i = 0; i < n; i++) authFlavors[i] = r.u32();
  return { status, fh, authFlavors };
}

export function decodeMntV1Res(r: XdrReader): MntRes {
  const status = r.u32();
  if (status !== MountStat.OK) return { status, fh: null, authFlavors: [] };
  return { status, fh: Buffer.from(r.fixedOpaque(FHSIZE_V2)), authFlavors: [] };
}

export function decodeMountList(r: XdrReader): MountEntry[] {
  const out: MountEntry[] = [];
  while (r.bool()) {
    const hostname = r.bytesString(MNTNAMLEN);
    out.push({ hostname, directory: r.bytesString(MNTPATHLEN) });
  }
  return out;
}

export function decodeExports(r: XdrReader): ExportEntry[] {
  const out: ExportEntry[] = [];
  while (r.bool()) {
    const dir = r.bytesString(MNTPATHLEN);
    const groups: string[] = [];
    while (r.bool()) groups.push(r.bytesString(MNTNAMLEN));
    out.push({ dir, groups });
  }
  return out;
}

function decodeVoid(_r: XdrReader): void {}

export class MountClient {
  readonly rpc: RpcClient;
  /** Version used by every procedure except mntV1. */
  readonly vers: number;

  constructor(rpc: RpcClient, vers: number = MOUNT_V3) {
    this.rpc = rpc;
    this.vers = vers;
  }

  null(): Promise<void> {
    this.rpc.begin(MOUNT_PROGRAM, this.vers, MountProc.NULL);
    return this.rpc.send(decodeVoid);
  }

  /** MNT with this client's version: v3 returns handle and flavors, v1 an fhstatus. */
  mnt(path: Name): Promise<MntRes> {
    encodeMntArgs(this.rpc.begin(MOUNT_PROGRAM, this.vers, MountProc.MNT), path);
    return this.rpc.send(this.vers === MOUNT_V1 ? decodeMntV1Res : decodeMntV3Res);
  }

  mntV1(path: Name): Promise<MntRes> {
    encodeMntArgs(this.rpc.begin(MOUNT_PROGRAM, MOUNT_V1, MountProc.MNT), path);
    return this.rpc.send(decodeMntV1Res);
  }

  dump(): Promise<MountEntry[]> {
    this.rpc.begin(MOUNT_PROGRAM, this.vers, MountProc.DUMP);
    return this.rpc.send(decodeMountList);
  }

  umnt(path: Name): Promise<void> {
    encodeMntArgs(this.rpc.begin(MOUNT_PROGRAM, this.vers, MountProc.UMNT), path);
    return this.rpc.send(decodeVoid);
  }

  umntall(): Promise<void> {
    this.rpc.begin(MOUNT_PROGRAM, this.vers, MountProc.UMNTALL);
    return this.rpc.send(decodeVoid);
  }

  export(): Promise<ExportEntry[]> {
    this.rpc.begin(MOUNT_PROGRAM, this.vers, MountProc.EXPORT);
    return this.rpc.send(decodeExports);
  }
}
