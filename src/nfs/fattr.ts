/**
 * fattr3, post_op_attr, pre_op_attr and wcc_data encoding from fs.Stats (RFC 1813 2.5-2.6).
 */
import type fs from 'node:fs';
import type { XdrWriter } from '../rpc/xdr.js';
import { FType } from './constants.js';

const S_IFMT = 0o170000;
const TWO_32 = 4294967296;

export function ftypeOf(mode: number): FType {
  switch (mode & S_IFMT) {
    case 0o040000:
      return FType.DIR;
    case 0o120000:
      return FType.LNK;
    case 0o020000:
      return FType.CHR;
    case 0o060000:
      return FType.BLK;
    case 0o010000:
      return FType.FIFO;
    case 0o140000:
      return FType.SOCK;
    default:
      return FType.REG;
  }
}

/** Splits a Linux dev_t into the major/minor pair NFS carries (glibc's gnu_dev_major/minor). */
export function splitRdev(rdev: number): { major: number; minor: number } {
  const lo = rdev >>> 0;
  const hi = Math.floor(rdev / TWO_32) >>> 0;
  return {
    major: (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0,
    minor: ((lo & 0xff) | ((lo >>> 12) & 0xfff00)) >>> 0,
  };
}

/**
 * Times: Node reports them as float milliseconds, precise to well under a microsecond at today's
 * epochs, so we send whole microseconds: the same Stats always encode to the same bytes, which is
 * what clients compare.
 */
export function encodeTime(ms: number): { sec: number; nsec: number } {
  const sec = Math.floor(ms / 1000);
  const micros = Math.round((ms - sec * 1000) * 1000);
  return micros >= 1_000_000 ? { sec: sec + 1, nsec: 0 } : { sec: sec >>> 0, nsec: micros * 1000 };
}

/** encodeTime without the object: fattr3 is on the hot path. */
function writeTime(w: XdrWriter, ms: number): void {
  const sec = Math.floor(ms / 1000);
  const micros = Math.round((ms - sec * 1000) * 1000);
  if (micros >= 1_000_000) {
    w.u32(sec + 1);
    w.u32(0);
  } else {
    w.u32(sec >>> 0);
    w.u32(micros * 1000);
  }
}

export function writeFattr(w: XdrWriter, st: fs.Stats, fsid: number): void {
  w.u32(ftypeOf(st.mode));
  w.u32(st.mode & 0o7777);
  w.u32(st.nlink);
  w.u32(st.uid);
  w.u32(st.gid);
  w.u64(st.size);
  w.u64(st.blocks * 512);
  if (st.rdev !== 0) {
    const { major, minor } = splitRdev(st.rdev);
    w.u32(major);
    w.u32(minor);
  } else {
    w.u32(0);
    w.u32(0);
  }
  w.u32(0);
  w.u32(fsid);
  w.u64(st.ino);
  writeTime(w, st.atimeMs);
  writeTime(w, st.mtimeMs);
  writeTime(w, st.ctimeMs);
}

export function writePostOpAttr(w: XdrWriter, st: fs.Stats | null, fsid: number): void {
  if (st === null) {
    w.u32(0);
    return;
  }
  w.u32(1);
  writeFattr(w, st, fsid);
}

/** wcc_attr before an operation: size, mtime, ctime. */
export function writePreOpAttr(w: XdrWriter, st: fs.Stats | null): void {
  if (st === null) {
    w.u32(0);
    return;
  }
  w.u32(1);
  w.u64(st.size);
  writeTime(w, st.mtimeMs);
  writeTime(w, st.ctimeMs);
}

export function writeWcc(w: XdrWriter, before: fs.Stats | null, after: fs.Stats | null, fsid: number): void {
  writePreOpAttr(w, before);
  writePostOpAttr(w, after, fsid);
}
