/**
 * The building blocks of NFSv3 messages (RFC 1813 section 2.5/2.6): attributes, weak cache
 * consistency data, optional handles, sattr3, cookies and names.
 */
import { NFS3_FHSIZE, TimeHow } from '../nfs/constants.js';
import type { XdrReader, XdrWriter } from '../rpc/xdr.js';
import type { Fattr3, Name, NfsTime, Sattr3, SetTime, WccAttr, WccData } from './nfs3-types.js';

/** Handles are kept by callers for long; a copy does not pin the whole receive buffer. */
export function readFh(r: XdrReader): Buffer {
  return Buffer.from(r.opaque(NFS3_FHSIZE));
}

export function readTime(r: XdrReader): NfsTime {
  const sec = r.u32();
  return { sec, nsec: r.u32() };
}

export function readU64Big(r: XdrReader): bigint {
  const hi = r.u32();
  const lo = r.u32();
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

export function readFattr3(r: XdrReader): Fattr3 {
  const type = r.u32();
  const mode = r.u32();
  const nlink = r.u32();
  const uid = r.u32();
  const gid = r.u32();
  const size = r.u64();
  const used = r.u64();
  const major = r.u32();
  const minor = r.u32();
  const fsid = readU64Big(r);
  const fileid = r.u64();
  const atime = readTime(r);
  const mtime = readTime(r);
  const ctime = readTime(r);
  return { type, mode, nlink, uid, gid, size, used, rdev: { major, minor }, fsid, fileid, atime, mtime, ctime };
}

export function readPostOpAttr(r: XdrReader): Fattr3 | null {
  return r.bool() ? readFattr3(r) : null;
}

export function readPreOpAttr(r: XdrReader): WccAttr | null {
  if (!r.bool()) return null;
  const size = r.u64();
  const mtime = readTime(r);
  return { size, mtime, ctime: readTime(r) };
}

export function readWcc(r: XdrReader): WccData {
  const before = readPreOpAttr(r);
  return { before, after: readPostOpAttr(r) };
}

export function readPostOpFh(r: XdrReader): Buffer | null {
  return r.bool() ? readFh(r) : null;
}

/** An 8-byte verifier (cookieverf, writeverf), copied for the same reason as handles. */
export function readVerf(r: XdrReader): Buffer {
  return Buffer.from(r.fixedOpaque(8));
}

export function writeName(w: XdrWriter, name: Name): void {
  if (typeof name === 'string') w.bytesString(name);
  else w.opaque(name);
}

export function writeDirop(w: XdrWriter, dir: Uint8Array, name: Name): void {
  w.opaque(dir);
  writeName(w, name);
}

export function writeTime(w: XdrWriter, t: NfsTime): void {
  w.u32(t.sec);
  w.u32(t.nsec);
}

export function writeCookie(w: XdrWriter, cookie: bigint): void {
  w.u32(Number((cookie >> 32n) & 0xffffffffn));
  w.u32(Number(cookie & 0xffffffffn));
}

/** 64-bit values above 2^53 (e.g. "to the end of file" offsets) need a bigint. */
export function writeU64(w: XdrWriter, v: number | bigint): void {
  if (typeof v === 'bigint') writeCookie(w, v);
  else w.u64(v);
}

function writeSetTime(w: XdrWriter, t: SetTime | undefined): void {
  if (t === undefined) w.u32(TimeHow.DONT_CHANGE);
  else if (t === 'server') w.u32(TimeHow.SET_TO_SERVER_TIME);
  else {
    w.u32(TimeHow.SET_TO_CLIENT_TIME);
    writeTime(w, t);
  }
}

export function writeSattr3(w: XdrWriter, a: Sattr3): void {
  if (a.mode === undefined) w.u32(0);
  else {
    w.u32(1);
    w.u32(a.mode);
  }
  if (a.uid === undefined) w.u32(0);
  else {
    w.u32(1);
    w.u32(a.uid);
  }
  if (a.gid === undefined) w.u32(0);
  else {
    w.u32(1);
    w.u32(a.gid);
  }
  if (a.size === undefined) w.u32(0);
  else {
    w.u32(1);
    w.u64(a.size);
  }
  writeSetTime(w, a.atime);
  writeSetTime(w, a.mtime);
}
