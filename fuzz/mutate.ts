/**
 * Mutations of a valid call: bit flips, byte and word overwrites with boundary values (length
 * lies, huge counts), truncation and extension, random handles, RPC header games, and for TCP the
 * record-marking games (split fragments, empty fragments, lying or huge record marks).
 */
import type { BaseCall } from './calls.js';
import type { Rng } from './rng.js';

const INTERESTING = [0, 1, 2, 3, 4, 7, 8, 16, 63, 64, 65, 255, 256, 400, 401, 1023, 1024, 1025, 0xffff, 0x10000, 0x7ffffffe, 0x7fffffff, 0x80000000, 0x80000001, 0xfffffffc, 0xfffffffd, 0xfffffffe, 0xffffffff];

export function interesting(rng: Rng, len: number): number {
  if (rng.chance(0.2)) return rng.u32();
  if (rng.chance(0.2)) return Math.max(0, len + rng.below(9) - 4);
  return rng.pick(INTERESTING);
}

/** Applies 1..3 random mutations to the call message (most of them in the arguments). */
export function mutateMessage(rng: Rng, call: BaseCall): Buffer {
  let m = Buffer.from(call.message);
  const rounds = 1 + rng.below(3);
  for (let i = 0; i < rounds; i++) {
    const inArgs = m.length > call.argsAt && rng.chance(0.7);
    const from = inArgs ? call.argsAt : 0;
    const span = Math.max(1, m.length - from);
    switch (rng.below(9)) {
      case 0: {
        const at = from + rng.below(span);
        if (at < m.length) m[at] ^= 1 << rng.below(8);
        break;
      }
      case 1: {
        const at = from + rng.below(span);
        if (at < m.length) m[at] = rng.u32() & 0xff;
        break;
      }
      case 2:
      case 3: {
        // A word at an XDR boundary: lengths, counts, enum values, flags.
        const at = from + 4 * rng.below(Math.max(1, Math.floor(span / 4)));
        if (at + 4 <= m.length) m.writeUInt32BE(interesting(rng, m.length - at) >>> 0, at);
        break;
      }
      case 4:
        m = m.subarray(0, rng.below(m.length + 1));
        break;
      case 5:
        m = Buffer.concat([m, rng.bytes(1 + rng.below(rng.chance(0.1) ? 4096 : 64))]);
        break;
      case 6: {
        // A random handle (length up to and past the 64-byte maximum) where the first one was.
        if (m.length < call.argsAt + 4) break;
        const len = rng.chance(0.8) ? rng.below(65) : 65 + rng.below(200);
        const fh = Buffer.alloc(4 + ((len + 3) & ~3));
        fh.writeUInt32BE(len, 0);
        rng.bytes(len).copy(fh, 4);
        const oldLen = Math.min(m.readUInt32BE(call.argsAt), 64);
        const rest = m.subarray(Math.min(m.length, call.argsAt + 4 + ((oldLen + 3) & ~3)));
        m = Buffer.concat([m.subarray(0, call.argsAt), fh, rest]);
        break;
      }
      case 7: {
        // RPC header: msg type, rpcvers, prog, vers, proc, cred flavor, cred length.
        const field = rng.below(7);
        const at = 4 + field * 4;
        const values = [
          [0, 1, 2, 0xffffffff],
          [0, 1, 3, 0xffffffff],
          [0, 100003, 100005, 100000, rng.u32()],
          [0, 1, 2, 3, 4, 5, 0xffffffff],
          [0, 22, 23, 255, 0x80000000, 0xffffffff],
          [0, 1, 2, 3, 6, 390003, 0xffffffff],
          [0, 399, 400, 401, 0xfffffffd, 0xffffffff],
        ][field];
        if (at + 4 <= m.length) m.writeUInt32BE(rng.pick(values) >>> 0, at);
        break;
      }
      case 8: {
        // Splice in a copy of a piece of itself (repeated structures, duplicated lists).
        if (m.length < 8) break;
        const a = rng.below(m.length - 4);
        const piece = m.subarray(a, a + 4 + rng.below(Math.min(64, m.length - a - 4) + 1));
        const at = rng.below(m.length);
        m = Buffer.concat([m.subarray(0, at), piece, m.subarray(at)]);
        break;
      }
    }
  }
  return m;
}

function mark(len: number, last: boolean): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(((last ? 0x80000000 : 0) | (len & 0x7fffffff)) >>> 0, 0);
  return b;
}

/** Frames a message for TCP, mostly correctly, sometimes with record-marking games. */
export function frameForTcp(rng: Rng, message: Buffer): Buffer {
  const len = message.length;
  switch (rng.below(8)) {
    case 0: {
      // Several fragments at random cut points, some of them empty.
      const parts: Buffer[] = [];
      let off = 0;
      while (off < len && parts.length < 40) {
        const take = rng.chance(0.2) ? 0 : 1 + rng.below(Math.max(1, Math.min(64, len - off)));
        parts.push(mark(take, false), message.subarray(off, off + take));
        off += take;
      }
      parts.push(mark(len - off, true), message.subarray(off));
      return Buffer.concat(parts);
    }
    case 1:
      // Record mark lies about the length (a little short or long).
      return Buffer.concat([mark(Math.max(0, len + rng.below(17) - 8), true), message]);
    case 2:
      // Huge record mark.
      return Buffer.concat([mark(interesting(rng, len), rng.chance(0.5)), message]);
    case 3:
      // Last-fragment bit missing: the record never ends on this message.
      return Buffer.concat([mark(len, false), message]);
    case 4:
      // A flood of empty fragments first.
      return Buffer.concat([...Array.from({ length: 1 + rng.below(100) }, () => mark(0, false)), mark(len, true), message]);
    default:
      return Buffer.concat([mark(len, true), message]);
  }
}
