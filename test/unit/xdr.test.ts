import { describe, expect, it } from 'vitest';
import { XdrError, XdrReader, XdrWriter } from '../../src/rpc/xdr.js';

/** Big-endian u32 words as bytes, written without the code under test. */
function words(...ws: number[]): Buffer {
  const b = Buffer.alloc(ws.length * 4);
  ws.forEach((w, i) => b.writeUInt32BE(w >>> 0, i * 4));
  return b;
}

function encode(fn: (w: XdrWriter) => void, slab = 1024): Buffer {
  const w = new XdrWriter(slab);
  w.begin();
  fn(w);
  return Buffer.from(w.finish());
}

describe('XDR integers', () => {
  it('round-trips u32 over the whole range, big-endian', () => {
    for (const v of [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fffffff, 0x80000000, 0xdeadbeef, 0xffffffff]) {
      const bytes = encode((w) => w.u32(v));
      expect(bytes).toEqual(words(v));
      const r = new XdrReader(bytes);
      expect(r.u32()).toBe(v);
      expect(r.remaining()).toBe(0);
    }
    expect(encode((w) => w.u32(0x01020304))).toEqual(Buffer.from([1, 2, 3, 4]));
  });

  it('round-trips i32 including negatives', () => {
    for (const v of [0, 1, -1, 2147483647, -2147483648, -123456]) {
      const bytes = encode((w) => w.i32(v));
      expect(bytes.readInt32BE(0)).toBe(v);
      expect(new XdrReader(bytes).i32()).toBe(v);
    }
    expect(encode((w) => w.i32(-1))).toEqual(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    // The same bytes read as u32 are unsigned.
    expect(new XdrReader(words(0xffffffff)).u32()).toBe(4294967295);
  });

  it('round-trips u64 exactly up to 2^53 - 1, including values above 2^32', () => {
    const cases: [number, number, number][] = [
      [0, 0, 0],
      [1, 0, 1],
      [0xffffffff, 0, 0xffffffff],
      [2 ** 32, 1, 0],
      [2 ** 32 + 5, 1, 5],
      [0xdeadbeef * 2 ** 32 / 0x1000 + 7, 0xdeadb, 0xeef00007],
      [2 ** 40 + 2 ** 31, 0x100, 0x80000000],
      [Number.MAX_SAFE_INTEGER, 0x1fffff, 0xffffffff],
    ];
    for (const [v, hi, lo] of cases) {
      const bytes = encode((w) => w.u64(v));
      expect(bytes, `u64(${v})`).toEqual(words(hi, lo));
      expect(new XdrReader(bytes).u64()).toBe(v);
      expect(encode((w) => w.u64parts(hi, lo))).toEqual(bytes);
    }
  });

  it('saturates u64 values of 2^53 and above to MAX_SAFE_INTEGER instead of wrapping', () => {
    for (const [hi, lo] of [
      [0x200000, 0],
      [0x200000, 1],
      [0x7fffffff, 0xffffffff],
      [0x80000000, 0],
      [0xffffffff, 0xffffffff],
    ]) {
      const r = new XdrReader(words(hi, lo));
      expect(r.u64()).toBe(Number.MAX_SAFE_INTEGER);
      expect(r.pos).toBe(8);
    }
  });

  it('reads bool 0 and 1 and rejects 2', () => {
    expect(new XdrReader(words(0)).bool()).toBe(false);
    expect(new XdrReader(words(1)).bool()).toBe(true);
    expect(() => new XdrReader(words(2)).bool()).toThrow(XdrError);
    expect(() => new XdrReader(words(0xffffffff)).bool()).toThrow(XdrError);
    expect(encode((w) => (w.bool(true), w.bool(false)))).toEqual(words(1, 0));
  });
});

describe('XDR opaque data', () => {
  it('pads variable opaque to 4 bytes with zero bytes and reads it back', () => {
    for (let len = 0; len <= 9; len++) {
      const data = Buffer.alloc(len, 0xab);
      const w = new XdrWriter(256);
      w.buf.fill(0xee); // dirty slab: padding must be written, not inherited
      w.begin();
      w.opaque(data);
      w.u32(0x11223344);
      const bytes = w.finish();
      const padded = Math.ceil(len / 4) * 4;
      expect(bytes.length).toBe(4 + padded + 4);
      expect(bytes.readUInt32BE(0)).toBe(len);
      expect(bytes.subarray(4, 4 + len)).toEqual(data);
      expect([...bytes.subarray(4 + len, 4 + padded)]).toEqual(new Array(padded - len).fill(0));
      const r = new XdrReader(bytes);
      expect(r.opaque(64)).toEqual(data);
      expect(r.u32()).toBe(0x11223344);
      expect(r.remaining()).toBe(0);
    }
  });

  it('pads fixed opaque and reads it as a view of the record, not a copy', () => {
    const bytes = encode((w) => w.fixedOpaque(Buffer.from([1, 2, 3, 4, 5])));
    expect(bytes).toEqual(Buffer.from([1, 2, 3, 4, 5, 0, 0, 0]));
    const r = new XdrReader(bytes);
    const view = r.fixedOpaque(5);
    expect(r.pos).toBe(8);
    expect(view).toEqual(Buffer.from([1, 2, 3, 4, 5]));
    bytes[0] = 99;
    expect(view[0]).toBe(99);
  });

  it('keeps non-UTF-8 byte strings byte-exact through decode and re-encode', () => {
    const name = Buffer.from([0x66, 0xff, 0x80]);
    const wire = Buffer.concat([words(3), name, Buffer.alloc(1)]);
    const s = new XdrReader(wire).bytesString(255);
    expect(s.length).toBe(3);
    expect(Buffer.from(s, 'latin1')).toEqual(name);
    expect(encode((w) => w.bytesString(s))).toEqual(wire);

    // Every byte value, including an invalid UTF-8 sequence and NUL.
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const allWire = encode((w) => w.opaque(all));
    const decoded = new XdrReader(allWire).bytesString(1024);
    expect(encode((w) => w.bytesString(decoded))).toEqual(allWire);
    expect(Buffer.from(decoded, 'latin1')).toEqual(all);
  });
});

describe('XDR limits', () => {
  it('rejects an opaque or string longer than its maximum', () => {
    const wire = Buffer.concat([words(9), Buffer.alloc(12)]);
    expect(() => new XdrReader(wire).opaque(8)).toThrow(XdrError);
    expect(() => new XdrReader(wire).bytesString(8)).toThrow(XdrError);
    expect(new XdrReader(wire).opaque(9).length).toBe(9);
  });

  it('never reads past `end`, even when the underlying buffer continues', () => {
    // 64 bytes of buffer, but the record is the first 12: a length word and 8 bytes.
    const big = Buffer.alloc(64, 0x55);
    big.writeUInt32BE(9, 0); // claims 9 bytes -> 12 padded, only 8 left in the record
    expect(() => new XdrReader(big, 0, 12).opaque(1000)).toThrow(XdrError);
    expect(() => new XdrReader(big, 0, 12).bytesString(1000)).toThrow(XdrError);
    big.writeUInt32BE(8, 0);
    expect(new XdrReader(big, 0, 12).opaque(1000).length).toBe(8);

    const r = new XdrReader(big, 0, 10);
    r.u32();
    r.u32();
    expect(() => r.u32()).toThrow(XdrError);
    expect(() => new XdrReader(big, 0, 4).u64()).toThrow(XdrError);
    expect(() => new XdrReader(big, 0, 4).skip(8)).toThrow(XdrError);
    expect(() => new XdrReader(big, 0, 4).fixedOpaque(5)).toThrow(XdrError);
    // A reader that starts mid-buffer respects its own window.
    expect(() => new XdrReader(big, 60, 62).u32()).toThrow(XdrError);
  });

  it('rejects lengths near 2^32 instead of wrapping the padding arithmetic', () => {
    const big = Buffer.alloc(64, 0x55);
    for (const len of [0xfffffffd, 0xfffffffc, 0xffffffff, 0x80000000, 0x80000001, 0x7ffffffe]) {
      big.writeUInt32BE(len, 0);
      const r = new XdrReader(big, 0, 16);
      expect(() => r.opaque(Number.MAX_SAFE_INTEGER), `opaque len ${len}`).toThrow(XdrError);
      expect(() => new XdrReader(big, 0, 16).bytesString(Number.MAX_SAFE_INTEGER)).toThrow(XdrError);
      expect(() => new XdrReader(big, 4, 16).fixedOpaque(len)).toThrow(XdrError);
    }
  });
});

describe('XDR writer slab', () => {
  it('keeps earlier finished messages intact across many later messages and new slabs', () => {
    const w = new XdrWriter(64);
    const done: { msg: Buffer; seq: number }[] = [];
    for (let seq = 0; seq < 500; seq++) {
      w.begin(16);
      w.u32(seq);
      w.u32(~seq >>> 0);
      w.opaque(Buffer.alloc(seq % 7, seq & 0xff));
      done.push({ msg: w.finish(), seq });
    }
    for (const { msg, seq } of done) {
      const r = new XdrReader(msg);
      expect(r.u32()).toBe(seq);
      expect(r.u32()).toBe(~seq >>> 0);
      expect(r.opaque(16)).toEqual(Buffer.alloc(seq % 7, seq & 0xff));
      expect(r.remaining()).toBe(0);
    }
  });

  it('grows a message beyond the slab size without disturbing earlier or later messages', () => {
    const w = new XdrWriter(64);
    w.begin(8);
    w.u32(0xaaaaaaaa);
    const first = w.finish();
    w.begin(8);
    w.u32(0); // placeholder, patched after growth
    for (let i = 0; i < 100; i++) w.u32(i); // 404 bytes: several growths past 64
    const blob = Buffer.alloc(1000, 0x5a);
    w.opaque(blob);
    w.bytesString('x'.repeat(301));
    w.patchU32(0, w.length());
    const big = w.finish();
    w.begin(8);
    w.u32(0xbbbbbbbb);
    const after = w.finish();

    expect(first).toEqual(words(0xaaaaaaaa));
    expect(after).toEqual(words(0xbbbbbbbb));
    const r = new XdrReader(big);
    expect(r.u32()).toBe(big.length);
    for (let i = 0; i < 100; i++) expect(r.u32()).toBe(i);
    expect(r.opaque(2000)).toEqual(blob);
    expect(r.bytesString(400)).toBe('x'.repeat(301));
    expect(r.remaining()).toBe(0);
    expect(first).toEqual(words(0xaaaaaaaa));
  });

  it('starts a fresh slab when begin() asks for more than what is left', () => {
    const w = new XdrWriter(64);
    w.begin(8);
    w.fixedOpaque(Buffer.alloc(56, 1));
    const a = w.finish();
    w.begin(32); // only 8 bytes left in the slab
    w.fixedOpaque(Buffer.alloc(32, 2));
    const b = w.finish();
    expect(a).toEqual(Buffer.alloc(56, 1));
    expect(b).toEqual(Buffer.alloc(32, 2));
    expect(b.buffer === a.buffer && b.byteOffset < a.byteOffset + a.length && b.byteOffset + b.length > a.byteOffset).toBe(false);
  });
});
