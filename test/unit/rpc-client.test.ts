import dgram from 'node:dgram';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeCallHeader, type CallHeader } from '../../src/rpc/message.js';
import { RecordDecoder, lastFragmentHeader } from '../../src/rpc/record.js';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr.js';
import { RpcClient, RpcConnectionError, RpcError, RpcTimeoutError, frame } from '../../src/client/rpc-client.js';

/** A received call: its header and the first u32 argument, if any. */
interface Call {
  h: CallHeader;
  arg: number;
}

function parseCall(rec: Buffer): Call {
  const r = new XdrReader(rec);
  const h = decodeCallHeader(r)!;
  return { h, arg: r.remaining() >= 4 ? r.u32() : -1 };
}

/** Accepted SUCCESS reply whose results are the given u32 words. */
function successReply(xid: number, ...words: number[]): Buffer {
  const w = new XdrWriter(1024);
  w.begin();
  w.u32(xid);
  w.u32(1);
  w.u32(0);
  w.u32(0);
  w.u32(0);
  w.u32(0);
  for (const x of words) w.u32(x);
  return Buffer.from(w.finish());
}

function words(...ws: number[]): Buffer {
  const b = Buffer.alloc(ws.length * 4);
  ws.forEach((v, i) => b.writeUInt32BE(v >>> 0, i * 4));
  return b;
}

function record(msg: Buffer): Buffer {
  return Buffer.concat([words(lastFragmentHeader(msg.length)), msg]);
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** TCP server on an ephemeral loopback port; `onCall` gets every call record and the socket. */
async function tcpServer(onCall: (rec: Buffer, sock: net.Socket) => void): Promise<{ port: number; peers: string[] }> {
  const peers: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    peers.push(`${sock.remoteAddress}:${sock.remotePort}`);
    const dec = new RecordDecoder({ onRecord: (rec) => onCall(rec, sock), onViolation: () => sock.destroy() });
    sock.on('data', (d) => dec.feed(d));
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, peers };
}

async function udpServer(onCall: (msg: Buffer, reply: (b: Buffer) => void) => void): Promise<number> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => onCall(msg, (b) => sock.send(b, rinfo.port, rinfo.address)));
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => sock.close(() => resolve())));
  return sock.address().port;
}

async function client(port: number, extra: Partial<ConstructorParameters<typeof RpcClient>[0]> = {}): Promise<RpcClient> {
  const c = await RpcClient.connect({ host: '127.0.0.1', port, ...extra });
  cleanups.push(() => c.close());
  return c;
}

function argU32(v: number): (w: XdrWriter) => void {
  return (w) => w.u32(v);
}

describe('RpcClient over TCP', () => {
  it('pipelines calls and matches replies sent in reverse order by xid', async () => {
    const N = 20;
    const held: Array<{ call: Call; sock: net.Socket }> = [];
    const { port } = await tcpServer((rec, sock) => {
      held.push({ call: parseCall(rec), sock });
      // Nothing is answered until all N calls are in: only a pipelining client gets replies.
      if (held.length === N) {
        for (let i = held.length - 1; i >= 0; i--) {
          const { call } = held[i];
          sock.write(record(successReply(call.h.xid, call.arg * 10, call.h.proc)));
        }
      }
    });
    const c = await client(port, { timeoutMs: 5000 });
    const calls = Array.from({ length: N }, (_, i) => c.call(100003, 3, i % 22, argU32(i)));
    expect(c.outstanding()).toBe(N);
    const replies = await Promise.all(calls);
    replies.forEach((r, i) => {
      expect(r.u32()).toBe(i * 10);
      expect(r.u32()).toBe(i % 22);
      expect(r.remaining()).toBe(0);
    });
    const xids = held.map((h) => h.call.h.xid);
    expect(new Set(xids).size).toBe(N);
    expect(c.outstanding()).toBe(0);
  });

  it('sends AUTH_SYS credentials and switches identity with setAuth', async () => {
    const seen: CallHeader[] = [];
    const { port } = await tcpServer((rec, sock) => {
      const { h } = parseCall(rec);
      seen.push(h);
      sock.write(record(successReply(h.xid)));
    });
    const c = await client(port, { auth: { uid: 1000, gid: 100, gids: [100, 27], machineName: 'node7' } });
    await c.call(100003, 3, 0, null);
    c.setAuth('none');
    await c.call(100003, 3, 0, null);
    expect(seen[0].cred).toMatchObject({ flavor: 1, uid: 1000, gid: 100, gids: [100, 27], machineName: 'node7' });
    expect(seen[1].cred.flavor).toBe(0);
  });

  it('reassembles replies split into fragments and delivered a byte at a time', async () => {
    const { port } = await tcpServer((rec, sock) => {
      const { h } = parseCall(rec);
      const msg = successReply(h.xid, 0xcafe, 0xbeef, 7);
      const framed = frame(msg, [5, 11]);
      expect(framed.length).toBe(msg.length + 12);
      // One byte per write, with setImmediate in between, so the client sees many chunks.
      let i = 0;
      const step = (): void => {
        if (i >= framed.length || sock.destroyed) return;
        sock.write(framed.subarray(i, i + 1));
        i++;
        setImmediate(step);
      };
      step();
    });
    const c = await client(port);
    const r = await c.call(100005, 3, 0, null);
    expect([r.u32(), r.u32(), r.u32()]).toEqual([0xcafe, 0xbeef, 7]);
  });

  it('turns every refusal into an RpcError of the right kind', async () => {
    const { port } = await tcpServer((rec, sock) => {
      const { h, arg } = parseCall(rec);
      const x = h.xid;
      const replies: Record<number, number[]> = {
        1: [x, 1, 0, 0, 0, 1],
        2: [x, 1, 0, 0, 0, 2, 2, 3],
        3: [x, 1, 0, 0, 0, 3],
        4: [x, 1, 0, 0, 0, 4],
        5: [x, 1, 0, 0, 0, 5],
        6: [x, 1, 1, 0, 2, 2],
        7: [x, 1, 1, 1, 5],
      };
      sock.write(record(words(...replies[arg])));
    });
    const c = await client(port);
    const kinds = ['PROG_UNAVAIL', 'PROG_MISMATCH', 'PROC_UNAVAIL', 'GARBAGE_ARGS', 'SYSTEM_ERR', 'RPC_MISMATCH', 'AUTH_ERROR'];
    const errors = await Promise.all(kinds.map((_, i) => c.call(1, 1, 1, argU32(i + 1)).then(() => null, (e: unknown) => e)));
    errors.forEach((e, i) => {
      expect(e).toBeInstanceOf(RpcError);
      expect((e as RpcError).kind).toBe(kinds[i]);
    });
    expect(errors[1]).toMatchObject({ acceptStat: 2, low: 2, high: 3 });
    expect(errors[5]).toMatchObject({ rejectStat: 0, low: 2, high: 2 });
    expect(errors[6]).toMatchObject({ rejectStat: 1, authStat: 5 });
  });

  it('times out an unanswered call without disturbing the others', async () => {
    const { port } = await tcpServer((rec, sock) => {
      const { h, arg } = parseCall(rec);
      if (arg !== 0) sock.write(record(successReply(h.xid, arg)));
    });
    const c = await client(port, { timeoutMs: 2000 });
    const t0 = Date.now();
    const lost = c.call(1, 1, 1, argU32(0), 150);
    const ok = c.call(1, 1, 1, argU32(5));
    await expect(lost).rejects.toBeInstanceOf(RpcTimeoutError);
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(140);
    expect(elapsed).toBeLessThan(1500);
    expect((await ok).u32()).toBe(5);
    // The connection still works after a timeout.
    expect((await c.call(1, 1, 1, argU32(6))).u32()).toBe(6);
  });

  it('drops late replies to timed-out calls and hands them to onUnmatched', async () => {
    const { port } = await tcpServer((rec, sock) => {
      const { h } = parseCall(rec);
      setTimeout(() => !sock.destroyed && sock.write(record(successReply(h.xid, 1))), 200);
    });
    const c = await client(port);
    const stray = new Promise<Buffer>((resolve) => {
      c.onUnmatched = resolve;
    });
    await expect(c.call(1, 1, 1, null, 50)).rejects.toBeInstanceOf(RpcTimeoutError);
    const rec = await stray;
    expect(rec.readUInt32BE(4)).toBe(1);
  });

  it('rejects every pending call when the server closes the connection, and later calls too', async () => {
    let count = 0;
    const { port } = await tcpServer((_rec, sock) => {
      if (++count === 3) sock.destroy();
    });
    const c = await client(port, { timeoutMs: 5000 });
    const calls = [1, 2, 3].map((i) => c.call(1, 1, 1, argU32(i)).then(() => null, (e: unknown) => e));
    for (const e of await Promise.all(calls)) expect(e).toBeInstanceOf(RpcConnectionError);
    await c.closed();
    await expect(c.call(1, 1, 1, null)).rejects.toBeInstanceOf(RpcConnectionError);
    const cbErr = await new Promise<Error | null>((resolve) => {
      c.begin(1, 1, 1);
      c.sendCb((r) => r, (err) => resolve(err));
    });
    expect(cbErr).toBeInstanceOf(RpcConnectionError);
  });

  it('close() rejects outstanding calls', async () => {
    const { port } = await tcpServer(() => {});
    const c = await client(port);
    const p = c.call(1, 1, 1, null).then(() => null, (e: unknown) => e);
    await c.close();
    expect(await p).toBeInstanceOf(RpcConnectionError);
    expect(String(await p)).toMatch(/client closed/);
  });

  it('callRaw frames a hand-made message into chosen fragments and returns the whole reply', async () => {
    const got: Buffer[] = [];
    const { port } = await tcpServer((rec, sock) => {
      got.push(Buffer.from(rec));
      const { h } = parseCall(rec);
      sock.write(record(words(h.xid, 1, 0, 0, 0, 4)));
    });
    const c = await client(port);
    const msg = c.encodeCall(100003, 3, 1, (w) => w.opaque(Buffer.from('handle')));
    const reply = await c.callRaw(msg, { fragments: [3, 9] });
    expect(got[0].equals(msg)).toBe(true);
    expect(reply.readUInt32BE(0)).toBe(msg.readUInt32BE(0));
    expect(reply.readUInt32BE(20)).toBe(4); // GARBAGE_ARGS, returned rather than thrown
  });

  it('binds the requested source address', async () => {
    const { port, peers } = await tcpServer((rec, sock) => sock.write(record(successReply(parseCall(rec).h.xid))));
    const c = await client(port, { localAddress: '127.0.0.12' });
    await c.call(1, 1, 0, null);
    expect(peers[0]).toMatch(/^(::ffff:)?127\.0\.0\.12:/);
    expect(c.localEndpoint().address).toBe('127.0.0.12');
  });

  it('privileged: true binds a source port below 1024 (as root) or says why not', async () => {
    const { port, peers } = await tcpServer((rec, sock) => sock.write(record(successReply(parseCall(rec).h.xid))));
    const isRoot = process.getuid?.() === 0;
    const opened = RpcClient.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.13', privileged: true });
    if (!isRoot) {
      await expect(opened).rejects.toMatchObject({ code: 'EACCES' });
      return;
    }
    const c = await opened;
    cleanups.push(() => c.close());
    await c.call(1, 1, 0, null);
    const local = c.localEndpoint().port;
    expect(local).toBeGreaterThanOrEqual(512);
    expect(local).toBeLessThan(1024);
    expect(peers[0].endsWith(`:${local}`)).toBe(true);
  });

  it('fails to connect with RpcConnectionError when nothing listens', async () => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const freePort = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const err = await RpcClient.connect({ host: '127.0.0.1', port: freePort }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(RpcConnectionError);
    expect(err).toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('with a shared readBuffer, replies larger than it and replies of two clients stay intact', async () => {
    // Each reply carries `size` bytes made from `seed`, so a record scribbled over by a later
    // read, or one client's bytes in the other's record, shows up as a wrong byte.
    const fill = (seed: number, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (seed + i * 7) & 0xff));
    const { port } = await tcpServer((rec, sock) => {
      const r = new XdrReader(rec);
      const h = decodeCallHeader(r)!;
      const size = r.u32();
      const seed = r.u32();
      const w = new XdrWriter(size + 64);
      w.begin();
      for (const x of [h.xid, 1, 0, 0, 0, 0]) w.u32(x);
      w.opaque(fill(seed, size));
      sock.write(record(Buffer.from(w.finish())));
    });
    const shared = Buffer.alloc(4096);
    const a = await client(port, { timeoutMs: 5000, readBuffer: shared });
    const b = await client(port, { timeoutMs: 5000, readBuffer: shared });
    // call() hands back a reader, read here only after many more reads went into `shared`.
    const viaCall = a.call(7, 1, 1, (w) => (w.u32(50_000), w.u32(99)));
    const copyData = (r: XdrReader): Buffer => Buffer.from(r.opaque(1 << 20));
    const sent: Array<{ seed: number; size: number; p: Promise<Buffer> }> = [];
    let seed = 0;
    for (const size of [10, 100_000, 3, 4096, 70_000, 1]) {
      for (const c of [a, b]) {
        seed++;
        const w = c.begin(7, 1, 1);
        w.u32(size);
        w.u32(seed);
        sent.push({ seed, size, p: c.send(copyData) });
      }
    }
    for (const s of sent) expect(await s.p, `seed ${s.seed}`).toEqual(fill(s.seed, s.size));
    const r = await viaCall;
    expect(Buffer.from(r.opaque(1 << 20))).toEqual(fill(99, 50_000));
    expect(shared.some((x) => x !== 0)).toBe(true); // the replies did go through the shared buffer
  });
});

describe('RpcClient over UDP', () => {
  it('matches replies sent in reverse order', async () => {
    const N = 8;
    const held: Array<{ call: Call; reply: (b: Buffer) => void }> = [];
    const port = await udpServer((msg, reply) => {
      held.push({ call: parseCall(msg), reply });
      if (held.length === N) for (let i = N - 1; i >= 0; i--) held[i].reply(successReply(held[i].call.h.xid, held[i].call.arg + 100));
    });
    const c = await client(port, { transport: 'udp', retransmitMs: 2000, timeoutMs: 5000 });
    const res = await Promise.all(Array.from({ length: N }, (_, i) => c.call(1, 1, 1, argU32(i))));
    res.forEach((r, i) => expect(r.u32()).toBe(i + 100));
  });

  it('keeps at most maxInFlight calls on the wire and queues the rest in order', async () => {
    let open = 0;
    let maxOpen = 0;
    const order: number[] = [];
    const port = await udpServer((msg, reply) => {
      const { h, arg } = parseCall(msg);
      open++;
      maxOpen = Math.max(maxOpen, open);
      order.push(arg);
      setTimeout(() => {
        open--;
        reply(successReply(h.xid, arg));
      }, 15);
    });
    const c = await client(port, { transport: 'udp', maxInFlight: 3, retransmitMs: 2000, timeoutMs: 5000 });
    const res = await Promise.all(Array.from({ length: 12 }, (_, i) => c.call(1, 1, 1, argU32(i))));
    res.forEach((r, i) => expect(r.u32()).toBe(i));
    expect(maxOpen).toBe(3);
    expect(order).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(c.outstanding()).toBe(0);
  });

  it('retransmits the same datagram until a reply comes', async () => {
    const seen = new Map<number, Buffer[]>();
    const port = await udpServer((msg, reply) => {
      const { h } = parseCall(msg);
      const list = seen.get(h.xid) ?? [];
      list.push(Buffer.from(msg));
      seen.set(h.xid, list);
      if (list.length === 3) reply(successReply(h.xid, 99));
    });
    const c = await client(port, { transport: 'udp', retransmitMs: 30, retries: 5, timeoutMs: 3000 });
    const r = await c.call(1, 1, 1, argU32(1));
    expect(r.u32()).toBe(99);
    expect(seen.size).toBe(1);
    const [sends] = [...seen.values()];
    expect(sends).toHaveLength(3);
    expect(sends[1].equals(sends[0])).toBe(true);
    expect(sends[2].equals(sends[0])).toBe(true);
  });

  it('gives up after the configured retransmissions', async () => {
    let received = 0;
    const port = await udpServer(() => {
      received++;
    });
    const c = await client(port, { transport: 'udp', retransmitMs: 20, retries: 2, timeoutMs: 5000 });
    const t0 = Date.now();
    const err = await c.call(1, 1, 1, null).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(RpcTimeoutError);
    expect((err as RpcTimeoutError).transmissions).toBe(3);
    expect(received).toBe(3);
    // 20 + 40 + 80 ms of waiting, far below the 5 s deadline.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(130);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('the per-call deadline cuts retransmission short', async () => {
    const port = await udpServer(() => {});
    const c = await client(port, { transport: 'udp', retransmitMs: 1000, retries: 10 });
    const t0 = Date.now();
    await expect(c.call(1, 1, 1, null, 100)).rejects.toBeInstanceOf(RpcTimeoutError);
    expect(Date.now() - t0).toBeLessThan(900);
  });

  it('refuses a call too big for a datagram, and close() rejects outstanding calls', async () => {
    const port = await udpServer(() => {});
    const c = await client(port, { transport: 'udp' });
    await expect(c.call(1, 1, 1, (w) => w.opaque(Buffer.alloc(70000)))).rejects.toBeInstanceOf(RangeError);
    expect(c.outstanding()).toBe(0);
    const p = c.call(1, 1, 1, null).then(() => null, (e: unknown) => e);
    expect(c.outstanding()).toBe(1);
    await c.close();
    expect(await p).toBeInstanceOf(RpcConnectionError);
    await expect(c.call(1, 1, 1, null)).rejects.toBeInstanceOf(RpcConnectionError);
  });

  it('binds the requested source address', async () => {
    let from = '';
    const sock = dgram.createSocket('udp4');
    sock.on('message', (msg, rinfo) => {
      from = rinfo.address;
      sock.send(successReply(parseCall(msg).h.xid), rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => sock.close(() => resolve())));
    const c = await client(sock.address().port, { transport: 'udp', localAddress: '127.0.0.14' });
    await c.call(1, 1, 0, null);
    expect(from).toBe('127.0.0.14');
  });
});
