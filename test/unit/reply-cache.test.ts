import { describe, expect, it } from 'vitest';
import { RpcDispatcher, type ProcedureSpec, type Program, type ReplySink, type RpcCall } from '../../src/rpc/dispatch.js';
import { ReplyCache, type ReplyCacheOptions } from '../../src/rpc/reply-cache.js';

/** Big-endian u32 words as bytes, built without the code under test. */
function words(...ws: number[]): Buffer {
  const b = Buffer.alloc(ws.length * 4);
  ws.forEach((w, i) => b.writeUInt32BE(w >>> 0, i * 4));
  return b;
}

/** One per TCP connection or UDP datagram, as the transports make them. */
class FakeSink implements ReplySink {
  inFlight = 0;
  sent: Buffer[] = [];
  heads: Buffer[] = [];
  doneCount = 0;
  constructor(
    readonly tcp: boolean,
    readonly address = '10.0.0.7',
    readonly port = 801,
  ) {}
  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    this.heads.push(head);
    // Copy now: the head is a view of the shared reply slab.
    this.sent.push(Buffer.concat([head, ...(payload ? [payload] : []), ...(pad ? [pad] : [])]));
  }
  done(): void {
    this.doneCount++;
  }
}

const PROG = 0x20000077;
const AUTH_NONE = 0;

function call(xid: number, proc: number, args: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([words(xid, 0, 2, PROG, 1, proc), words(AUTH_NONE, 0), words(AUTH_NONE, 0), args]);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A test program; `runs` counts handler executions per procedure. */
function makeProgram() {
  const runs = { create: 0, read: 0, fail: 0, big: 0, drop: 0 };
  let serial = 0;
  const spec = (name: string, nonIdempotent: boolean, handler: (c: RpcCall) => void | Promise<void>): ProcedureSpec => ({
    name,
    handler,
    mutates: nonIdempotent,
    nonIdempotent,
    needsCred: false,
  });
  const program: Program = {
    program: PROG,
    name: 'drc-test',
    versions: [
      {
        version: 1,
        procedures: [
          // 0 CREATE: non-idempotent; replies after an await with its argument and a per-execution
          // serial, so a second execution would give different bytes.
          spec('CREATE', true, async (c) => {
            runs.create++;
            const v = c.args.u32();
            await sleep(5);
            const w = c.beginReply(8);
            w.u32(v);
            w.u32(++serial);
            c.send();
          }),
          // 1 READ: idempotent, same shape.
          spec('READ', false, async (c) => {
            runs.read++;
            const v = c.args.u32();
            await sleep(1);
            const w = c.beginReply(8);
            w.u32(v);
            w.u32(++serial);
            c.send();
          }),
          // 2 FAIL: non-idempotent, rejects after an await -> SYSTEM_ERR.
          spec('FAIL', true, async () => {
            runs.fail++;
            await sleep(1);
            throw new Error('disk on fire');
          }),
          // 3 BIG: non-idempotent; replies with `n` bytes of payload (plus padding) after the header.
          spec('BIG', true, (c) => {
            runs.big++;
            const n = c.args.u32();
            const w = c.beginReply(8);
            w.u32(n);
            c.send(Buffer.alloc(n, serial++ & 0xff));
          }),
          // 4 DROP: non-idempotent, ends without a reply.
          spec('DROP', true, (c) => {
            runs.drop++;
            c.drop();
          }),
        ],
      },
    ],
  };
  return { program, runs };
}

function setup(options: Partial<ReplyCacheOptions> = {}) {
  const { program, runs } = makeProgram();
  const d = new RpcDispatcher();
  d.register(program);
  const cache = new ReplyCache(options);
  d.replyCache = cache;
  return { d, cache, runs };
}

/** Runs `record` from `sink` and waits long enough for the async handlers to finish. */
async function roundTrip(d: RpcDispatcher, record: Buffer, sink: FakeSink): Promise<Buffer | undefined> {
  const before = sink.sent.length;
  d.dispatch(record, sink);
  await sleep(20);
  return sink.sent[before];
}

for (const tcp of [false, true]) {
  describe(`duplicate-request cache over ${tcp ? 'TCP' : 'UDP'}`, () => {
    it('(a) a retransmission after completion gets the byte-identical reply; the handler ran once', async () => {
      const { d, cache, runs } = setup();
      const sink = new FakeSink(tcp);
      const first = await roundTrip(d, call(1, 0, words(42)), sink);
      expect(first).toBeDefined();
      // A later call advances the serial and reuses the reply slab past the first reply.
      await roundTrip(d, call(2, 0, words(43)), sink);
      // UDP: a retransmission arrives in a new datagram, so a new sink with the same address/port.
      const again = await roundTrip(d, call(1, 0, words(42)), tcp ? sink : new FakeSink(tcp));
      expect(again).toEqual(first);
      expect(runs.create).toBe(2);
      expect(cache.hits).toBe(1);
      expect(cache.insertions).toBe(2);
      expect(cache.entries).toBe(2);
      expect(sink.inFlight).toBe(0);
    });

    it('(a) a failed handler\'s SYSTEM_ERR is the answer and is replayed too', async () => {
      const { d, runs } = setup();
      const sink = new FakeSink(tcp);
      const first = await roundTrip(d, call(9, 2, words(1)), sink);
      expect(first!.readUInt32BE(first!.length - 4)).toBe(5); // SYSTEM_ERR
      const again = await roundTrip(d, call(9, 2, words(1)), sink);
      expect(again).toEqual(first);
      expect(runs.fail).toBe(1);
    });

    it('(b) a retransmission while the first is still running is dropped; the handler ran once', async () => {
      const { d, cache, runs } = setup();
      const sink = new FakeSink(tcp);
      d.dispatch(call(3, 0, words(7)), sink);
      d.dispatch(call(3, 0, words(7)), tcp ? sink : new FakeSink(tcp));
      d.dispatch(call(3, 0, words(7)), tcp ? sink : new FakeSink(tcp));
      expect(runs.create).toBe(1);
      expect(cache.inProgressDrops).toBe(2);
      await sleep(20);
      expect(sink.sent).toHaveLength(1);
      expect(sink.sent[0].readUInt32BE(sink.sent[0].length - 8)).toBe(7);
      expect(sink.inFlight).toBe(0);
      expect(runs.create).toBe(1);
      expect(cache.inProgressEntries).toBe(0);
    });

    it('(c) the same xid with different arguments is executed anew', async () => {
      const { d, cache, runs } = setup();
      const sink = new FakeSink(tcp);
      const a = await roundTrip(d, call(4, 0, words(100)), sink);
      const b = await roundTrip(d, call(4, 0, words(101)), sink);
      expect(runs.create).toBe(2);
      expect(cache.hits).toBe(0);
      expect(b).not.toEqual(a);
      expect(b!.readUInt32BE(b!.length - 8)).toBe(101);
      // Same xid, same argument bytes, another procedure: also a different call.
      await roundTrip(d, call(4, 3, words(100)), sink);
      expect(runs.big).toBe(1);
      expect(cache.hits).toBe(0);
    });

    it('(d) the same xid and arguments from another client address is executed anew', async () => {
      const { d, cache, runs } = setup();
      const one = new FakeSink(tcp, '10.0.0.7');
      const two = new FakeSink(tcp, '10.0.0.8');
      const a = await roundTrip(d, call(5, 0, words(1)), one);
      const b = await roundTrip(d, call(5, 0, words(1)), two);
      expect(runs.create).toBe(2);
      expect(cache.hits).toBe(0);
      expect(b).not.toEqual(a);
    });

    it('(e) idempotent procedures are never cached', async () => {
      const { d, cache, runs } = setup();
      const sink = new FakeSink(tcp);
      const a = await roundTrip(d, call(6, 1, words(1)), sink);
      d.dispatch(call(6, 1, words(1)), sink); // retransmission while running: runs as well
      const b = await roundTrip(d, call(6, 1, words(1)), sink);
      expect(runs.read).toBe(3);
      expect(sink.sent).toHaveLength(3);
      expect(b).not.toEqual(a);
      expect(cache.insertions).toBe(0);
      expect(cache.entries).toBe(0);
      expect(cache.hits + cache.inProgressDrops).toBe(0);
    });

    it('a call that ends without a reply is forgotten, so its retransmission runs', async () => {
      const { d, cache, runs } = setup();
      const sink = new FakeSink(tcp);
      await roundTrip(d, call(8, 4), sink);
      await roundTrip(d, call(8, 4), sink);
      expect(runs.drop).toBe(2);
      expect(sink.sent).toHaveLength(0);
      expect(cache.entries + cache.inProgressEntries).toBe(0);
      expect(sink.inFlight).toBe(0);
    });
  });
}

describe('duplicate-request cache keys', () => {
  it('(g) TCP: a retransmission on a new connection (new source port, same address) hits the cache', async () => {
    const { d, cache, runs } = setup();
    const first = await roundTrip(d, call(10, 0, words(5)), new FakeSink(true, '10.0.0.7', 801));
    const again = await roundTrip(d, call(10, 0, words(5)), new FakeSink(true, '10.0.0.7', 944));
    expect(again).toEqual(first);
    expect(runs.create).toBe(1);
    expect(cache.hits).toBe(1);
    // ...and while still running on the old connection, the new connection's copy is dropped.
    const old = new FakeSink(true, '10.0.0.7', 801);
    const reconnected = new FakeSink(true, '10.0.0.7', 945);
    d.dispatch(call(11, 0, words(5)), old);
    d.dispatch(call(11, 0, words(5)), reconnected);
    await sleep(20);
    expect(runs.create).toBe(2);
    expect(old.sent).toHaveLength(1);
    expect(reconnected.sent).toHaveLength(0);
  });

  it('UDP: another source port is another client (its own xid space)', async () => {
    const { d, cache, runs } = setup();
    await roundTrip(d, call(12, 0, words(5)), new FakeSink(false, '10.0.0.7', 801));
    await roundTrip(d, call(12, 0, words(5)), new FakeSink(false, '10.0.0.7', 802));
    expect(runs.create).toBe(2);
    expect(cache.hits).toBe(0);
  });

  it('a reply cached over UDP is not sent over TCP (the record mark differs)', async () => {
    const { d, runs } = setup();
    const udp = await roundTrip(d, call(13, 0, words(5)), new FakeSink(false, '10.0.0.7', 801));
    const tcp = await roundTrip(d, call(13, 0, words(5)), new FakeSink(true, '10.0.0.7', 801));
    expect(runs.create).toBe(2);
    expect(tcp!.readUInt32BE(0)).toBe((0x80000000 | (tcp!.length - 4)) >>> 0);
    expect(udp!.readUInt32BE(0)).toBe(13);
  });
});

describe('(f) duplicate-request cache bounds', () => {
  /** BIG calls are synchronous: no waiting needed. */
  function big(d: RpcDispatcher, sink: FakeSink, xid: number, n: number): Buffer {
    d.dispatch(call(xid, 3, words(n)), sink);
    return sink.sent[sink.sent.length - 1];
  }

  it('the entry limit evicts the oldest reply first', () => {
    const { d, cache, runs } = setup({ maxEntries: 3 });
    const sink = new FakeSink(false);
    const replies = [1, 2, 3, 4].map((xid) => big(d, sink, xid, 4));
    expect(cache.entries).toBe(3);
    expect(cache.evictions).toBe(1);
    // 2..4 are still cached (replayed without running)...
    for (const xid of [2, 3, 4]) expect(big(d, sink, xid, 4)).toEqual(replies[xid - 1]);
    expect(runs.big).toBe(4);
    // ...1 was evicted: it runs again, with a different payload byte.
    expect(big(d, sink, 1, 4)).not.toEqual(replies[0]);
    expect(runs.big).toBe(5);
    expect(cache.entries).toBe(3);
  });

  it('the byte limit evicts the oldest replies first and counts bytes', () => {
    const { d, cache, runs } = setup({ maxBytes: 3000 });
    const sink = new FakeSink(true);
    big(d, sink, 1, 1000);
    big(d, sink, 2, 1000);
    expect(cache.entries).toBe(2);
    const twoEntries = cache.bytes;
    expect(twoEntries).toBeGreaterThan(2000);
    expect(twoEntries).toBeLessThanOrEqual(3000);
    big(d, sink, 3, 1000);
    expect(cache.entries).toBe(2);
    expect(cache.evictions).toBe(1);
    expect(cache.bytes).toBeLessThanOrEqual(3000);
    // A reply of 2500 bytes pushes out both others.
    big(d, sink, 4, 2500);
    expect(cache.entries).toBe(1);
    expect(cache.evictions).toBe(3);
    big(d, sink, 4, 2500);
    expect(runs.big).toBe(4);
    big(d, sink, 3, 1000);
    expect(runs.big).toBe(5);
    // A reply larger than the whole cache is not stored at all, and evicts nothing.
    const before = cache.entries;
    big(d, sink, 5, 4000);
    expect(cache.tooLarge).toBe(1);
    expect(cache.entries).toBe(before);
    big(d, sink, 5, 4000);
    expect(runs.big).toBe(7);
    expect(cache.inProgressEntries).toBe(0);
  });

  it('replies expire after ttlMs', () => {
    let now = 1000;
    const { d, cache, runs } = setup({ ttlMs: 120_000, now: () => now });
    const sink = new FakeSink(false);
    const first = big(d, sink, 1, 4);
    now += 60_000;
    big(d, sink, 2, 4);
    now += 59_999;
    expect(big(d, sink, 1, 4)).toEqual(first);
    expect(runs.big).toBe(2);
    now += 1;
    expect(big(d, sink, 1, 4)).not.toEqual(first); // expired: runs again
    expect(runs.big).toBe(3);
    expect(cache.expirations).toBe(1);
    // Inserting prunes expired entries from the head too.
    now += 60_000;
    big(d, sink, 3, 4);
    expect(cache.expirations).toBe(2); // xid 2
    expect(cache.entries).toBe(2); // xid 1 (re-run) and 3
  });

  it('the cached reply is a compact copy, not a view that keeps the shared reply slab alive', () => {
    const { d, cache } = setup();
    const sink = new FakeSink(false);
    const first = big(d, sink, 1, 4);
    expect(sink.heads[0].buffer.byteLength).toBeGreaterThan(64 * 1024); // the slab
    for (let i = 0; i < 2000; i++) big(d, sink, 100 + i, 200); // moves on to further slabs
    expect(cache.hits).toBe(0);
    expect(big(d, sink, 1, 4)).toEqual(first);
    expect(cache.hits).toBe(1);
    const replayed = sink.heads[sink.heads.length - 1];
    expect(replayed.buffer.byteLength).toBe(first.length);
  });

  it('past maxEntries calls in progress, further calls run uncached', async () => {
    const { d, cache, runs } = setup({ maxEntries: 2 });
    const sink = new FakeSink(true);
    for (const xid of [1, 2, 3]) d.dispatch(call(xid, 0, words(xid)), sink);
    expect(cache.inProgressEntries).toBe(2);
    expect(cache.untracked).toBe(1);
    d.dispatch(call(3, 0, words(3)), sink); // untracked: nothing to detect the retransmission by
    expect(runs.create).toBe(4);
    await sleep(20);
    expect(sink.sent).toHaveLength(4);
    expect(sink.inFlight).toBe(0);
  });
});
