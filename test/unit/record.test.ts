import { describe, expect, it } from 'vitest';
import { lastFragmentHeader, RecordDecoder, type RecordLimits, type RecordSink, type RecordViolation } from '../../src/rpc/record.js';

class Collect implements RecordSink {
  records: Buffer[] = [];
  violations: [RecordViolation, number][] = [];
  onRecord(record: Buffer): void {
    // Copy: a record may be a view of a chunk the test reuses.
    this.records.push(Buffer.from(record));
  }
  onViolation(kind: RecordViolation, detail: number): void {
    this.violations.push([kind, detail]);
  }
}

function header(len: number, last: boolean): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(((last ? 0x80000000 : 0) | len) >>> 0, 0);
  return b;
}

/** A record sent as fragments of the given sizes (the last one flagged last). */
function framed(payload: Buffer, fragmentSizes: number[] = [payload.length]): Buffer {
  const out: Buffer[] = [];
  let off = 0;
  fragmentSizes.forEach((size, i) => {
    out.push(header(size, i === fragmentSizes.length - 1), payload.subarray(off, off + size));
    off += size;
  });
  expect(off).toBe(payload.length);
  return Buffer.concat(out);
}

function payload(len: number, seed: number): Buffer {
  return Buffer.from(Array.from({ length: len }, (_, i) => (i * 31 + seed) & 0xff));
}

const LIMITS: RecordLimits = { maxRecordBytes: 1000, maxFragments: 8 };

describe('RecordDecoder', () => {
  it('hands on one record in one chunk as a view of that chunk', () => {
    const sink = new Collect();
    let view: Buffer | null = null;
    const onRecord = (r: Buffer): void => {
      view = r;
    };
    const d = new RecordDecoder({ onRecord, onViolation: (k, n) => sink.onViolation(k, n) }, LIMITS);
    const p = payload(40, 1);
    const chunk = framed(p);
    d.feed(chunk);
    expect(view).toEqual(p);
    expect(view!.buffer).toBe(chunk.buffer);
    expect(view!.byteOffset).toBe(chunk.byteOffset + 4);
    expect(sink.violations).toEqual([]);
    expect(d.hasPartial()).toBe(false);
  });

  it('matches lastFragmentHeader', () => {
    expect(lastFragmentHeader(0)).toBe(0x80000000);
    expect(lastFragmentHeader(28)).toBe(0x8000001c);
    expect(lastFragmentHeader(0x7fffffff)).toBe(0xffffffff);
  });

  it('reassembles records split at every byte boundary, including inside headers', () => {
    const p1 = payload(13, 2);
    const p2 = payload(24, 3);
    const p3 = payload(9, 4);
    const stream = Buffer.concat([framed(p1), framed(p2, [8, 0, 16]), framed(p3, [1, 8])]);
    for (let i = 0; i <= stream.length; i++) {
      const sink = new Collect();
      const d = new RecordDecoder(sink, LIMITS);
      d.feed(stream.subarray(0, i));
      d.feed(stream.subarray(i));
      expect(sink.records, `split at ${i}`).toEqual([p1, p2, p3]);
      expect(sink.violations).toEqual([]);
      expect(d.hasPartial()).toBe(false);
      expect(d.bufferedBytes()).toBe(0);
    }
    // And at every pair of boundaries (three chunks).
    for (let i = 0; i <= stream.length; i++) {
      for (let j = i; j <= stream.length; j++) {
        const sink = new Collect();
        const d = new RecordDecoder(sink, LIMITS);
        d.feed(stream.subarray(0, i));
        d.feed(stream.subarray(i, j));
        d.feed(stream.subarray(j));
        expect(sink.records, `split at ${i}, ${j}`).toEqual([p1, p2, p3]);
      }
    }
    // One byte at a time.
    const sink = new Collect();
    const d = new RecordDecoder(sink, LIMITS);
    for (let i = 0; i < stream.length; i++) {
      d.feed(stream.subarray(i, i + 1));
      if (i < stream.length - 1) expect(d.hasPartial() || sink.records.length > 0).toBe(true);
    }
    expect(sink.records).toEqual([p1, p2, p3]);
  });

  it('reports a partial record while a header or fragment is incomplete', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink, LIMITS);
    const chunk = framed(payload(20, 5));
    expect(d.hasPartial()).toBe(false);
    d.feed(chunk.subarray(0, 2));
    expect(d.hasPartial()).toBe(true);
    d.feed(chunk.subarray(2, 10));
    expect(d.hasPartial()).toBe(true);
    expect(d.bufferedBytes()).toBe(6);
    d.feed(chunk.subarray(10));
    expect(d.hasPartial()).toBe(false);
    expect(sink.records.length).toBe(1);
  });

  it('splits several records coalesced in one chunk, in order', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink, LIMITS);
    const ps = [payload(4, 1), payload(100, 2), payload(7, 3), payload(0, 4), payload(64, 5)];
    d.feed(Buffer.concat(ps.map((p) => framed(p))));
    expect(sink.records).toEqual(ps);
    expect(sink.violations).toEqual([]);
  });

  it('joins multi-fragment records, also when the fragments arrive in one chunk', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink, LIMITS);
    const p = payload(30, 9);
    d.feed(Buffer.concat([framed(p, [10, 10, 10]), framed(payload(3, 1))]));
    expect(sink.records).toEqual([p, payload(3, 1)]);
  });

  it('accepts zero-length fragments anywhere in a record', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink, LIMITS);
    const p = payload(12, 7);
    // Leading empty fragments, an empty fragment between data, and an empty last fragment.
    d.feed(Buffer.concat([header(0, false), header(0, false), framed(p)]));
    d.feed(Buffer.concat([header(5, false), p.subarray(0, 5), header(0, false), header(7, false), p.subarray(5), header(0, true)]));
    // A record that is only an empty last fragment is an empty record, and the stream stays in step.
    d.feed(Buffer.concat([header(0, true), framed(p)]));
    expect(sink.records).toEqual([p, p, Buffer.alloc(0), p]);
    expect(sink.violations).toEqual([]);
    expect(d.hasPartial()).toBe(false);
  });

  it('refuses a header claiming ~2 GiB before buffering anything', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink); // default limits
    d.feed(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]));
    expect(sink.violations).toEqual([['record-too-large', 0x7fffffff]]);
    expect(d.bufferedBytes()).toBe(0);
    // After a violation the stream is out of step: nothing more is decoded.
    d.feed(framed(payload(8, 1)));
    expect(sink.records).toEqual([]);
    expect(sink.violations.length).toBe(1);
  });

  it('refuses a header split across chunks that claims 2 GiB - 1 without the last-fragment bit', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink);
    d.feed(Buffer.from([0x7f, 0xff]));
    expect(sink.violations).toEqual([]);
    d.feed(Buffer.from([0xff, 0xff]));
    expect(sink.violations).toEqual([['record-too-large', 0x7fffffff]]);
    expect(d.bufferedBytes()).toBe(0);
  });

  it('counts all fragments of a record against the size limit', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink, LIMITS);
    d.feed(framed(payload(1000, 1), [600, 400])); // exactly at the limit: accepted
    expect(sink.records.length).toBe(1);
    d.feed(Buffer.concat([header(600, false), payload(600, 2), header(401, true)]));
    expect(sink.violations).toEqual([['record-too-large', 1001]]);
    expect(sink.records.length).toBe(1);
  });

  it('refuses too many fragments in one record, but resets the count per record', () => {
    const sink = new Collect();
    const d = new RecordDecoder(sink, LIMITS); // maxFragments 8
    const p = payload(8, 3);
    d.feed(framed(p, [1, 1, 1, 1, 1, 1, 1, 1]));
    d.feed(framed(p, [1, 1, 1, 1, 1, 1, 1, 1]));
    expect(sink.records).toEqual([p, p]);
    expect(sink.violations).toEqual([]);
    const flood = Buffer.concat(Array.from({ length: 20 }, () => header(0, false)));
    d.feed(flood);
    expect(sink.violations).toEqual([['too-many-fragments', 9]]);
    expect(sink.records.length).toBe(2);
  });

  it('with reused chunks (onread), copies what spans chunks before the buffer is overwritten', () => {
    const p1 = payload(13, 2);
    const p2 = payload(24, 3);
    const p3 = payload(9, 4);
    const stream = Buffer.concat([framed(p1), framed(p2, [8, 0, 16]), framed(p3, [1, 8])]);
    // Each piece goes through one scratch buffer that is scribbled over once fed, as net's onread does.
    const scratch = Buffer.alloc(stream.length);
    const feedReused = (d: RecordDecoder, piece: Buffer): void => {
      piece.copy(scratch);
      d.feed(scratch.subarray(0, piece.length));
      scratch.fill(0xee);
    };
    for (let i = 0; i <= stream.length; i++) {
      for (let j = i; j <= stream.length; j += 3) {
        const sink = new Collect();
        const d = new RecordDecoder(sink, LIMITS, true);
        feedReused(d, stream.subarray(0, i));
        feedReused(d, stream.subarray(i, j));
        feedReused(d, stream.subarray(j));
        expect(sink.records, `split at ${i}, ${j}`).toEqual([p1, p2, p3]);
        expect(d.hasPartial()).toBe(false);
      }
    }
    // Bytes held while the sink has said stop are copied too.
    const got: Buffer[] = [];
    let allow = 1;
    const d = new RecordDecoder({ onRecord: (r) => (got.push(Buffer.from(r)), --allow > 0), onViolation: () => {} }, LIMITS, true);
    feedReused(d, stream);
    expect(got).toEqual([p1]);
    allow = 10;
    d.resume();
    expect(got).toEqual([p1, p2, p3]);
  });

  it('stops after a record when the sink says so, and resume() continues with the held bytes in order', () => {
    const got: Buffer[] = [];
    let allow = 2;
    const d = new RecordDecoder({ onRecord: (r) => (got.push(Buffer.from(r)), --allow > 0), onViolation: () => {} }, LIMITS);
    const ps = [0, 1, 2, 3, 4].map((i) => payload(10 + i, i));
    // One chunk: two whole records, a multi-fragment one, a zero-length one, and a last one split across chunks.
    const all = Buffer.concat([framed(ps[0]), framed(ps[1]), framed(ps[2], [5, 7]), header(0, true), framed(ps[3])]);
    d.feed(all.subarray(0, all.length - 3));
    expect(got).toEqual([ps[0], ps[1]]);
    expect(d.isHolding()).toBe(true);
    allow = 1;
    d.resume();
    expect(got).toEqual([ps[0], ps[1], ps[2]]);
    allow = 100;
    d.resume();
    expect(got.length).toBe(4); // the empty record; the last one still lacks its final 3 bytes
    expect(d.isHolding()).toBe(false);
    d.feed(all.subarray(all.length - 3));
    expect(got).toEqual([ps[0], ps[1], ps[2], Buffer.alloc(0), ps[3]]);
    expect(d.recordsDone).toBe(5);
  });
});
