/**
 * XDR (RFC 4506) over Node Buffers.
 *
 * The reader decodes straight from the received record (no copy): opaque data comes back as a
 * subarray view of the receive buffer. Every length is checked against the end of the record
 * before it is used, so a hostile length can never make us read past a datagram or allocate.
 *
 * The writer encodes into a shared slab: a reply is a subarray view of the slab, and the next
 * reply continues after it, so a reply costs no allocation until the slab is used up. Replies are
 * encoded synchronously in one go (no await between begin and finish), which is what makes a
 * single shared writer safe.
 */

export class XdrError extends Error {}

const TWO_32 = 4294967296;

/**
 * `len` rounded up to a multiple of 4, in double arithmetic. `(len + 3) & ~3` goes through int32
 * and wraps for lengths >= 2^31 - 3 (a wire length of 0xfffffffd padded to 0, 0x80000001 to a
 * negative number), which would let need() pass and read past `end` or move `pos` backwards.
 */
function padded4(len: number): number {
  return len + ((4 - (len & 3)) & 3);
}

export class XdrReader {
  buf: Buffer;
  pos: number;
  end: number;

  constructor(buf: Buffer, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  reset(buf: Buffer, pos: number, end: number): void {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) throw new XdrError(`XDR underflow: need ${n} bytes at ${this.pos}, record ends at ${this.end}`);
  }

  u32(): number {
    this.need(4);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 4;
    return (b[p] * 0x1000000 + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3])) >>> 0;
  }

  i32(): number {
    this.need(4);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 4;
    return (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3];
  }

  bool(): boolean {
    const v = this.u32();
    if (v > 1) throw new XdrError(`XDR bool out of range: ${v}`);
    return v === 1;
  }

  /**
   * A 64-bit unsigned value as a JS number. Values above 2^53 (never a real offset or size on
   * these machines) saturate to MAX_SAFE_INTEGER rather than silently wrapping.
   */
  u64(): number {
    const hi = this.u32();
    const lo = this.u32();
    if (hi >= 0x200000) return Number.MAX_SAFE_INTEGER;
    return hi * TWO_32 + lo;
  }

  /** Variable-length opaque, bounded by the protocol maximum; a view, not a copy. */
  opaque(max: number): Buffer {
    const len = this.u32();
    if (len > max) throw new XdrError(`XDR opaque of ${len} bytes exceeds limit ${max}`);
    return this.fixedOpaque(len);
  }

  fixedOpaque(len: number): Buffer {
    const padded = padded4(len);
    this.need(padded);
    const start = this.pos;
    this.pos = start + padded;
    return this.buf.subarray(start, start + len);
  }

  /** A string decoded as latin1: one char per byte, so non-UTF-8 file names survive intact. */
  bytesString(max: number): string {
    const len = this.u32();
    if (len > max) throw new XdrError(`XDR string of ${len} bytes exceeds limit ${max}`);
    const padded = padded4(len);
    this.need(padded);
    const start = this.pos;
    this.pos = start + padded;
    return this.buf.toString('latin1', start, start + len);
  }

  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
}

/** Writes a non-negative integer up to 2^53 as 8 big-endian bytes at `off` (fixed layouts, not XDR streams). */
export function writeU64At(buf: Buffer, off: number, v: number): void {
  const hi = Math.floor(v / TWO_32);
  buf.writeUInt32BE(hi >>> 0, off);
  buf.writeUInt32BE((v - hi * TWO_32) >>> 0, off + 4);
}

export function readU64At(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off) * TWO_32 + buf.readUInt32BE(off + 4);
}

export const DEFAULT_SLAB_SIZE = 256 * 1024;

export class XdrWriter {
  buf: Buffer;
  pos = 0;
  start = 0;
  private readonly slabSize: number;

  constructor(slabSize = DEFAULT_SLAB_SIZE) {
    this.slabSize = slabSize;
    this.buf = Buffer.allocUnsafe(slabSize);
  }

  /** Start a new message. Earlier messages stay valid: they live in the slab before `pos`. */
  begin(expected = 1024): void {
    if (this.buf.length - this.pos < expected) {
      this.buf = Buffer.allocUnsafe(Math.max(this.slabSize, expected));
      this.pos = 0;
    }
    this.start = this.pos;
  }

  /** Bytes written to the current message so far. */
  length(): number {
    return this.pos - this.start;
  }

  private grow(n: number): void {
    const used = this.pos - this.start;
    const next = Buffer.allocUnsafe(Math.max(this.slabSize, (used + n) * 2));
    this.buf.copy(next, 0, this.start, this.pos);
    this.buf = next;
    this.start = 0;
    this.pos = used;
  }

  u32(v: number): void {
    if (this.pos + 4 > this.buf.length) this.grow(4);
    const b = this.buf;
    const p = this.pos;
    b[p] = v >>> 24;
    b[p + 1] = v >>> 16;
    b[p + 2] = v >>> 8;
    b[p + 3] = v;
    this.pos = p + 4;
  }

  i32(v: number): void {
    this.u32(v >>> 0);
  }

  bool(v: boolean): void {
    this.u32(v ? 1 : 0);
  }

  /** A non-negative integer up to 2^53 as XDR hyper. */
  u64(v: number): void {
    const hi = Math.floor(v / TWO_32);
    this.u32(hi);
    this.u32(v - hi * TWO_32);
  }

  u64parts(hi: number, lo: number): void {
    this.u32(hi);
    this.u32(lo);
  }

  fixedOpaque(data: Uint8Array): void {
    const len = data.length;
    const padded = (len + 3) & ~3;
    if (this.pos + padded > this.buf.length) this.grow(padded);
    this.buf.set(data, this.pos);
    for (let i = this.pos + len; i < this.pos + padded; i++) this.buf[i] = 0;
    this.pos += padded;
  }

  opaque(data: Uint8Array): void {
    this.u32(data.length);
    this.fixedOpaque(data);
  }

  /** Writes a latin1 "byte string" (see XdrReader.bytesString) as XDR string. */
  bytesString(s: string): void {
    const len = s.length;
    const padded = (len + 3) & ~3;
    this.u32(len);
    if (this.pos + padded > this.buf.length) this.grow(padded);
    this.buf.write(s, this.pos, len, 'latin1');
    for (let i = this.pos + len; i < this.pos + padded; i++) this.buf[i] = 0;
    this.pos += padded;
  }

  /** Overwrite a u32 at an absolute offset of the current message (e.g. a length written last). */
  patchU32(offsetInMessage: number, v: number): void {
    this.buf.writeUInt32BE(v >>> 0, this.start + offsetInMessage);
  }

  /** The finished message as a view of the slab; the writer moves past it. */
  finish(): Buffer {
    const out = this.buf.subarray(this.start, this.pos);
    this.start = this.pos;
    return out;
  }
}
