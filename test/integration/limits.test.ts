/**
 * Each protection limit bites when it should, closes or pauses only the offending connection,
 * shows on /metrics, and leaves everyone else served. The server runs with small limits so that
 * every case is reached in a few hundred bytes and a second or two.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { NFS_PROGRAM, NfsStat } from '../../src/nfs/constants.js';
import { lastFragmentHeader } from '../../src/rpc/record.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, quickExport, type Session, startServer } from '../helpers/inproc-server.js';
import { ServerProcess } from '../helpers/server-process.js';

const LIMITS = {
  maxRecordBytes: 4096,
  maxFragments: 4,
  maxCallsPerConnection: 8,
  // Large, so that the calls limit is the one that paces the pipelined calls below.
  maxUnsentBytesPerConnection: 1024 * 1024 * 1024,
  maxConnections: 40,
  maxConnectionsPerClient: 6,
  partialRecordTimeoutMs: 800,
  // Long for the shared server: its well-behaved session sits idle between tests.
  idleTimeoutMs: 120_000,
};
/** The timeout tests get a server of their own with a short idle timeout. */
const IDLE_MS = 2500;

let work: string;
let server: ClusterNfsServer;
let s: Session;

function start(limits: typeof LIMITS): Promise<ClusterNfsServer> {
  return startServer([quickExport(work)], null, {
    metricsPort: 0,
    limits,
  });
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-limits-'));
  server = await start(LIMITS);
  // The well-behaved client comes from its own address, so per-client tests do not count it.
  s = await mountSession(server, work, { localAddress: '127.0.0.2' });
});

afterAll(async () => {
  await s?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

async function stillServing(): Promise<void> {
  expect((await s.nfs.getattr(s.root)).status).toBe(NfsStat.OK);
}

async function limitHits(limit: string, srv = server): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${srv.ports.metrics}/metrics`)).text();
  const m = text.match(new RegExp(`^clusternfs_limit_hits_total\\{limit="${limit}"\\} (\\d+)`, 'm'));
  expect(m, `metric for ${limit}`).not.toBeNull();
  return Number(m![1]);
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.ports.metrics}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\d+)`, 'm'));
  expect(m, name).not.toBeNull();
  return Number(m![1]);
}

/** Waits (bounded) until the server has closed all but the session's two connections. */
async function onlySessionLeft(): Promise<void> {
  for (let i = 0; i < 100 && (await metric('clusternfs_connections')) !== 2; i++) await new Promise((r) => setTimeout(r, 50));
  expect(await metric('clusternfs_connections')).toBe(2);
}

function nullCall(xid: number): Buffer {
  const b = Buffer.alloc(44);
  [lastFragmentHeader(40), xid, 0, 2, NFS_PROGRAM, 3, 0, 0, 0, 0, 0].forEach((v, i) => b.writeUInt32BE(v, i * 4));
  return b;
}

/** Opens a raw connection from `localAddress`; resolves once connected. */
function rawConnect(localAddress = '127.0.0.1', srv: { ports: { nfs: number } } = server): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port: srv.ports.nfs, host: '127.0.0.1', localAddress });
    sock.once('connect', () => resolve(sock));
    sock.once('error', reject);
  });
}

/** Resolves with how long the server took to close `sock` (ms), or -1 if it was still open after `withinMs`. */
function closedWithin(sock: net.Socket, withinMs: number): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(-1), withinMs);
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
    sock.resume();
  });
}

describe('record limits', () => {
  it('a record over the size limit closes the connection before its body is sent', async () => {
    const before = await limitHits('record_size');
    const sock = await rawConnect();
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(lastFragmentHeader(LIMITS.maxRecordBytes + 1));
    sock.write(hdr);
    expect(await closedWithin(sock, 5000)).toBeGreaterThanOrEqual(0);
    expect(await limitHits('record_size')).toBe(before + 1);
    await stillServing();
  });

  it('a flood of zero-length fragments closes the connection', async () => {
    const before = await limitHits('fragments');
    const sock = await rawConnect();
    sock.write(Buffer.alloc(4 * 100)); // 100 empty non-last fragments
    expect(await closedWithin(sock, 5000)).toBeGreaterThanOrEqual(0);
    expect(await limitHits('fragments')).toBe(before + 1);
    await stillServing();
  });

  it('a record split into as many fragments as allowed is served', async () => {
    const call = nullCall(0x51);
    const body = call.subarray(4);
    const frags: Buffer[] = [];
    for (let i = 0; i < LIMITS.maxFragments; i++) {
      const part = body.subarray(i * 10, i === LIMITS.maxFragments - 1 ? body.length : (i + 1) * 10);
      const h = Buffer.alloc(4);
      h.writeUInt32BE(i === LIMITS.maxFragments - 1 ? lastFragmentHeader(part.length) : part.length);
      frags.push(h, part);
    }
    const sock = await rawConnect();
    const reply = await new Promise<Buffer>((resolve) => {
      sock.once('data', resolve);
      sock.write(Buffer.concat(frags));
    });
    expect(reply.readUInt32BE(4)).toBe(0x51);
    sock.destroy();
  });
});

describe('calls in flight', () => {
  it('200 pipelined calls on one connection with a limit of 8 in flight are all answered', async () => {
    const before = await limitHits('calls_per_connection');
    const sock = await rawConnect();
    const calls = Array.from({ length: 200 }, (_, i) => nullCall(0x1000 + i));
    const seen = new Set<number>();
    await new Promise<void>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => reject(new Error(`only ${seen.size} replies`)), 20_000);
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= 4 && buf.length >= 4 + (buf.readUInt32BE(0) & 0x7fffffff)) {
          seen.add(buf.readUInt32BE(4));
          buf = buf.subarray(4 + (buf.readUInt32BE(0) & 0x7fffffff));
        }
        if (seen.size === calls.length) {
          clearTimeout(timer);
          resolve();
        }
      });
      // One write: all 200 calls arrive in one or two chunks, the case that used to overshoot.
      sock.write(Buffer.concat(calls));
    });
    sock.destroy();
    expect(seen.size).toBe(200);
    // NULL answers synchronously, so the limit only bites if something is slower; it must not
    // have lost calls either way. READ awaits the file system: pipeline those next.
    fs.writeFileSync(path.join(work, 'data'), Buffer.alloc(65536, 7));
    const fh = (await s.nfs.lookup(s.root, 'data')).fh!;
    const rpc = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, localAddress: '127.0.0.3' });
    const nfs = new Nfs3Client(rpc);
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => nfs.read(fh, (i * 256) % 65536, 256)));
    expect(results.every((r) => r.status === NfsStat.OK && r.data.equals(Buffer.alloc(256, 7)))).toBe(true);
    await rpc.close();
    expect(await limitHits('calls_per_connection')).toBeGreaterThan(before);
  });
});

describe('connections', () => {
  it('a client address gets at most its share of connections; others still connect', async () => {
    const before = await limitHits('connections_per_client');
    const socks = await Promise.all(Array.from({ length: LIMITS.maxConnectionsPerClient + 3 }, () => rawConnect('127.0.0.4')));
    const closes = await Promise.all(socks.map((x) => closedWithin(x, 1500)));
    expect(closes.filter((c) => c >= 0).length).toBe(3);
    expect(await limitHits('connections_per_client')).toBe(before + 3);
    const other = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, localAddress: '127.0.0.5' });
    await other.call(NFS_PROGRAM, 3, 0, null);
    await other.close();
    for (const x of socks) x.destroy();
    await onlySessionLeft();
    await stillServing();
  });

  it('the total connection limit refuses new connections until some close', async () => {
    const before = await limitHits('connections_total');
    const socks: net.Socket[] = [];
    // 8 addresses × 5 connections = 40, the total limit (the session holds 2 more: refused are 2).
    for (let a = 0; a < 8; a++) for (let i = 0; i < 5; i++) socks.push(await rawConnect(`127.0.1.${a + 1}`));
    const closes = await Promise.all(socks.map((x) => closedWithin(x, 1500)));
    const refused = closes.filter((c) => c >= 0).length;
    expect(refused).toBe(2);
    expect(await limitHits('connections_total')).toBe(before + refused);
    for (const x of socks) x.destroy();
    // Once they are gone a new client gets in.
    await onlySessionLeft();
    const other = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, localAddress: '127.0.0.6' });
    await other.call(NFS_PROGRAM, 3, 0, null);
    await other.close();
    await stillServing();
  });
});

describe('timeouts', () => {
  let quick: ClusterNfsServer;
  beforeAll(async () => {
    quick = await start({ ...LIMITS, idleTimeoutMs: IDLE_MS });
  });
  afterAll(async () => {
    await quick?.stop();
  });

  it('a connection stalled mid-record is closed after the partial-record timeout; an idle one lives longer', async () => {
    const beforePartial = await limitHits('partial_record_timeout', quick);
    const stalled = await rawConnect('127.0.0.7', quick);
    stalled.write(nullCall(0x77).subarray(0, 10)); // header and a few bytes, then silence
    const idle = await rawConnect('127.0.0.7', quick);
    idle.write(nullCall(0x78)); // a whole call, then silence
    const [stalledAfter, idleAfter] = await Promise.all([closedWithin(stalled, 10_000), closedWithin(idle, LIMITS.partialRecordTimeoutMs * 2)]);
    expect(stalledAfter).toBeGreaterThanOrEqual(LIMITS.partialRecordTimeoutMs - 300);
    expect(idleAfter).toBe(-1);
    expect(await limitHits('partial_record_timeout', quick)).toBe(beforePartial + 1);
    // The fully idle connection goes too, after the longer idle timeout.
    const beforeIdle = await limitHits('idle_timeout', quick);
    expect(await closedWithin(idle, 10_000)).toBeGreaterThanOrEqual(0);
    expect(await limitHits('idle_timeout', quick)).toBeGreaterThan(beforeIdle);
    const fresh = await RpcClient.connect({ host: '127.0.0.1', port: quick.ports.nfs });
    await fresh.call(NFS_PROGRAM, 3, 0, null);
    await fresh.close();
  });

  it('a slow trickle of bytes does not keep a stalled record alive', async () => {
    const sock = await rawConnect('127.0.0.8', quick);
    const call = nullCall(0x79);
    let i = 0;
    // One byte every 200 ms: each resets any idle timer, but the record never completes in time.
    const trickle = setInterval(() => {
      if (i < call.length - 1 && !sock.destroyed) sock.write(call.subarray(i, ++i));
    }, 200);
    const after = await closedWithin(sock, 10_000);
    clearInterval(trickle);
    expect(after).toBeGreaterThanOrEqual(0);
    expect(i).toBeLessThan(call.length - 1);
  });
});

describe('flags', () => {
  it('the limit flags of clusternfs serve reach the transports', async () => {
    const port = 22000 + Math.floor(Math.random() * 20000);
    const proc = await ServerProcess.startOnHost([
      work, '--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap',
      '--state-dir', path.join(work, '.state'), '--max-connections-per-client', '1', '--max-record-bytes', '100',
    ]);
    try {
      const target = { ports: { nfs: port } };
      const first = await rawConnect('127.0.2.1', target);
      const second = await rawConnect('127.0.2.1', target);
      expect(await closedWithin(second, 3000)).toBeGreaterThanOrEqual(0);
      // The first connection is served, until it sends a record over 100 bytes.
      const reply = await new Promise<Buffer>((resolve) => {
        first.once('data', resolve);
        first.write(nullCall(0x42));
      });
      expect(reply.readUInt32BE(4)).toBe(0x42);
      const hdr = Buffer.alloc(4);
      hdr.writeUInt32BE(lastFragmentHeader(101));
      first.write(hdr);
      expect(await closedWithin(first, 3000)).toBeGreaterThanOrEqual(0);
    } finally {
      await proc.stop();
    }
  });
});
