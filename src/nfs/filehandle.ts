/**
 * File handles: 32 opaque bytes that name one file of one export for as long as it exists.
 *
 *   0      magic 0xCF      1  format version       2..5  export fsid
 *   6..13  inode number    14..21  birth time (µs) 22..23 reserved (0)
 *   24..31 check: a keyed hash of bytes 0..23
 *
 * Inode number plus birth time survive renames and server restarts and tell a reused inode
 * number from the original (STALE). The path is not in the handle: the store maps inode numbers
 * to names through a persistent index. The check only separates garbage (BADHANDLE) from handles
 * we made; authority comes from the export check and the store's validation on every call.
 * 32 bytes keeps the handle usable as an NFSv2-size handle for MOUNT v1.
 */

import { readU64At, writeU64At } from '../rpc/xdr.js';

export const FH_SIZE = 32;
const MAGIC = 0xcf;
const VERSION = 1;

export interface HandleFields {
  fsid: number;
  ino: number;
  /** Birth time in whole microseconds (0 on file systems without one). */
  birth: number;
}

// Two 32-bit lanes of a murmur3-style mix with fixed seeds; stable across restarts by design.
function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function check(buf: Buffer, seed: number): number {
  let h = seed;
  for (let i = 0; i < 24; i += 4) h = mix(h, buf.readInt32LE(i));
  return fmix(h ^ 24);
}

const SEED_A = 0x636e6673; // "cnfs"
const SEED_B = 0x9e3779b9;

export function encodeHandle(f: HandleFields): Buffer {
  const buf = Buffer.alloc(FH_SIZE);
  buf[0] = MAGIC;
  buf[1] = VERSION;
  buf.writeUInt32BE(f.fsid >>> 0, 2);
  writeU64At(buf, 6, f.ino);
  writeU64At(buf, 14, f.birth);
  buf.writeUInt32BE(check(buf, SEED_A), 24);
  buf.writeUInt32BE(check(buf, SEED_B), 28);
  return buf;
}

/** Decodes a handle; null when it is not one of ours (the caller answers BADHANDLE). */
export function decodeHandle(buf: Buffer): HandleFields | null {
  if (buf.length !== FH_SIZE || buf[0] !== MAGIC || buf[1] !== VERSION || buf[22] !== 0 || buf[23] !== 0) return null;
  if (buf.readUInt32BE(24) !== check(buf, SEED_A) || buf.readUInt32BE(28) !== check(buf, SEED_B)) return null;
  return { fsid: buf.readUInt32BE(2), ino: readU64At(buf, 6), birth: readU64At(buf, 14) };
}

/** Birth time in whole microseconds from a Stats object (Node reports it as float ms). */
export function birthMicros(birthtimeMs: number): number {
  return birthtimeMs > 0 ? Math.round(birthtimeMs * 1000) : 0;
}
