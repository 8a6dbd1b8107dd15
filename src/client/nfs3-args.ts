/**
 * Argument encoders of the 22 NFSv3 procedures (RFC 1813 section 3.3), one per procedure, kept
 * apart from the client so tests can compare their bytes with the RFC layout.
 */
import { CreateMode, FType, type StableHow } from '../nfs/constants.js';
import type { XdrWriter } from '../rpc/xdr.js';
import type { Name, NfsTime, Sattr3, SpecData } from './nfs3-types.js';
import { writeCookie, writeDirop, writeName, writeSattr3, writeTime, writeU64 } from './nfs3-xdr.js';

const ZERO_VERF = Buffer.alloc(8);

/** GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF: just the handle. */
export function encodeFhArgs(w: XdrWriter, fh: Uint8Array): void {
  w.opaque(fh);
}

/** guardCtime: apply only if the object's ctime still equals it (sattrguard3). */
export function encodeSetattrArgs(w: XdrWriter, fh: Uint8Array, attrs: Sattr3, guardCtime: NfsTime | null = null): void {
  w.opaque(fh);
  writeSattr3(w, attrs);
  if (guardCtime === null) w.u32(0);
  else {
    w.u32(1);
    writeTime(w, guardCtime);
  }
}

/** LOOKUP, REMOVE, RMDIR: diropargs3. */
export function encodeDiropArgs(w: XdrWriter, dir: Uint8Array, name: Name): void {
  writeDirop(w, dir, name);
}

export function encodeAccessArgs(w: XdrWriter, fh: Uint8Array, access: number): void {
  w.opaque(fh);
  w.u32(access);
}

export function encodeReadArgs(w: XdrWriter, fh: Uint8Array, offset: number | bigint, count: number): void {
  w.opaque(fh);
  writeU64(w, offset);
  w.u32(count);
}

/** `count` differs from data.length only when a test wants to send an inconsistent WRITE. */
export function encodeWriteArgs(
  w: XdrWriter,
  fh: Uint8Array,
  offset: number | bigint,
  data: Uint8Array,
  stable: StableHow,
  count = data.length,
): void {
  w.opaque(fh);
  writeU64(w, offset);
  w.u32(count);
  w.u32(stable);
  w.opaque(data);
}

/** UNCHECKED and GUARDED send attrs; EXCLUSIVE sends only the 8-byte verifier. */
export function encodeCreateArgs(
  w: XdrWriter,
  dir: Uint8Array,
  name: Name,
  how: CreateMode,
  attrs: Sattr3,
  verf: Uint8Array | null = null,
): void {
  writeDirop(w, dir, name);
  w.u32(how);
  if (how === CreateMode.EXCLUSIVE) {
    if (verf === null || verf.length !== 8) throw new RangeError('CREATE EXCLUSIVE needs an 8-byte verifier');
    w.fixedOpaque(verf);
  } else writeSattr3(w, attrs);
}

export function encodeMkdirArgs(w: XdrWriter, dir: Uint8Array, name: Name, attrs: Sattr3): void {
  writeDirop(w, dir, name);
  writeSattr3(w, attrs);
}

export function encodeSymlinkArgs(w: XdrWriter, dir: Uint8Array, name: Name, target: Name, attrs: Sattr3): void {
  writeDirop(w, dir, name);
  writeSattr3(w, attrs);
  writeName(w, target);
}

/**
 * Devices carry attributes and major/minor, sockets and FIFOs only attributes, and every other
 * type nothing at all (the server must answer NFS3ERR_BADTYPE, which tests check).
 */
export function encodeMknodArgs(w: XdrWriter, dir: Uint8Array, name: Name, type: FType, attrs: Sattr3, rdev: SpecData | null = null): void {
  writeDirop(w, dir, name);
  w.u32(type);
  if (type === FType.CHR || type === FType.BLK) {
    writeSattr3(w, attrs);
    w.u32(rdev?.major ?? 0);
    w.u32(rdev?.minor ?? 0);
  } else if (type === FType.SOCK || type === FType.FIFO) {
    writeSattr3(w, attrs);
  }
}

export function encodeRenameArgs(w: XdrWriter, fromDir: Uint8Array, fromName: Name, toDir: Uint8Array, toName: Name): void {
  writeDirop(w, fromDir, fromName);
  writeDirop(w, toDir, toName);
}

export function encodeLinkArgs(w: XdrWriter, fh: Uint8Array, dir: Uint8Array, name: Name): void {
  w.opaque(fh);
  writeDirop(w, dir, name);
}

export function encodeReaddirArgs(w: XdrWriter, dir: Uint8Array, cookie: bigint, cookieverf: Uint8Array | null, count: number): void {
  w.opaque(dir);
  writeCookie(w, cookie);
  writeVerf(w, cookieverf);
  w.u32(count);
}

export function encodeReaddirplusArgs(
  w: XdrWriter,
  dir: Uint8Array,
  cookie: bigint,
  cookieverf: Uint8Array | null,
  dircount: number,
  maxcount: number,
): void {
  w.opaque(dir);
  writeCookie(w, cookie);
  writeVerf(w, cookieverf);
  w.u32(dircount);
  w.u32(maxcount);
}

function writeVerf(w: XdrWriter, verf: Uint8Array | null): void {
  if (verf !== null && verf.length !== 8) throw new RangeError('cookieverf must be 8 bytes');
  w.fixedOpaque(verf ?? ZERO_VERF);
}

export function encodeCommitArgs(w: XdrWriter, fh: Uint8Array, offset: number | bigint, count: number): void {
  w.opaque(fh);
  writeU64(w, offset);
  w.u32(count);
}
