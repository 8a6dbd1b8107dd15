/**
 * Stalled and slow clients never starve the others, and the memory they cost is bounded and
 * given back. The server runs as its own process so that its RSS (from /proc) is its own.
 *
 * - 1,000 connections each stuck in the middle of a record header: a well-behaved client's NULL
 *   and GETATTR p99 stay within 5x of what they were without them, and new connections get in.
 * - 16 clients pipelining 1,000 READs each and never reading the replies: the server grows by at
 *   most 100 MB, keeps serving others, and gives the memory back once they go: once with the
 *   READs sent from the file by sendfile (each connection's calls wait behind its stuck send),
 *   once with them copied (the replies pile up to the unsent-bytes limit).
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MountClient } from '../../src/client/mount-client.js';
import { encodeReadArgs } from '../../src/client/nfs3-args.js';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { MOUNT_PROGRAM, MOUNT_V3 } from '../../src/mount/constants.js';
import { NFS_PROGRAM, NfsStat } from '../../src/nfs/constants.js';
import { writeCallHeader } from '../../src/rpc/message.js';
import { lastFragmentHeader } from '../../src/rpc/record.js';
import { XdrWriter } from '../../src/rpc/xdr.js';
import { ServerProcess } from '../helpers/server-process.js';

const STALLED = 1000;
const READERS = 16;
const READS_EACH = 1000;
const FILE_MB = 64;

let work: string;
let root: string;
let proc: ServerProcess;
let port: number;
let metricsPort: number;
let rpc: RpcClient;
let mrpc: RpcClient;
let nfs: Nfs3Client;
let rootFh: Buffer;
let bigFh: Buffer;

/** Starts the server under test (and our clients of it); `env` is added to its environment. */
async function startServer(env: NodeJS.ProcessEnv = {}): Promise<void> {
  port = 22000 + Math.floor(Math.random() * 20000);
  metricsPort = port + 2;
  proc = await ServerProcess.startOnHost(
    [
      root, '--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap',
      '--metrics-port', String(metricsPort), '--state-dir', path.join(work, 'state'),
      // The stalled connections must outlive the measurement; their timeout has its own test.
      '--partial-record-timeout', '600',
    ],
    env,
  );
  mrpc = await RpcClient.connect({ host: '127.0.0.1', port: port + 1, timeoutMs: 20_000 });
  rpc = await RpcClient.connect({ host: '127.0.0.1', port, timeoutMs: 20_000 });
  nfs = new Nfs3Client(rpc);
  rootFh = (await new MountClient(mrpc).mnt(root)).fh!;
  bigFh = (await nfs.lookup(rootFh, 'big')).fh!;
}

async function stopServer(): Promise<void> {
  await rpc?.close();
  await mrpc?.close();
  await proc?.stop();
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-slow-'));
  root = path.join(work, 'root');
  fs.mkdirSync(root);
  const fd = fs.openSync(path.join(root, 'big'), 'w');
  for (let i = 0; i < FILE_MB; i++) fs.writeSync(fd, Buffer.alloc(1024 * 1024, i + 1));
  fs.closeSync(fd);
  await startServer();
});

afterAll(async () => {
  await stopServer();
  fs.rmSync(work, { recursive: true, force: true });
});

function rssMb(): number {
  const status = fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\d+)`, 'm').exec(text);
  return m === null ? NaN : Number(m[1]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function p99(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length * 0.99)];
}

/** p99 (ms) of `n` sequential calls; the better of two runs, so one noisy moment on a shared machine does not decide. */
async function p99Of(call: () => Promise<unknown>, n = 400): Promise<number> {
  const runs: number[] = [];
  for (let run = 0; run < 2; run++) {
    const t: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await call();
      t.push(performance.now() - t0);
    }
    runs.push(p99(t));
  }
  return Math.min(...runs);
}

function connectFrom(localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress });
    sock.once('connect', () => resolve(sock));
    sock.once('error', reject);
  });
}

describe('stalled clients', () => {
  it(`${STALLED} connections stuck mid-record do not slow a well-behaved client, and new connections get in`, async () => {
    const getattr = async () => expect((await nfs.getattr(rootFh)).status).toBe(NfsStat.OK);
    const nullCall = () => nfs.null();
    await p99Of(nullCall, 200); // warm-up: JIT and caches, on both sides
    const nullBefore = await p99Of(nullCall);
    const getattrBefore = await p99Of(getattr);
    const rssBefore = rssMb();

    const stalled: net.Socket[] = [];
    let nullDuring = 0;
    let getattrDuring = 0;
    let rssDuring = 0;
    try {
      // 50 client addresses × 20 connections: under the per-client limit, as 1,000 nodes would be.
      for (let i = 0; i < STALLED; i++) {
        const sock = await connectFrom(`127.0.20.${1 + (i % 50)}`);
        sock.on('error', () => {});
        sock.write(Buffer.from([0x80, 0x00])); // half a record mark, then nothing
        stalled.push(sock);
      }
      for (let i = 0; i < 100 && (await metric('clusternfs_connections')) < STALLED + 2; i++) await sleep(100);
      expect(await metric('clusternfs_connections')).toBeGreaterThanOrEqual(STALLED + 2);

      nullDuring = await p99Of(nullCall);
      getattrDuring = await p99Of(getattr);
      rssDuring = rssMb();
      // New connections still get in and are served, NFS and MOUNT alike.
      const fresh = await RpcClient.connect({ host: '127.0.0.1', port, localAddress: '127.0.21.1', timeoutMs: 10_000 });
      await fresh.call(NFS_PROGRAM, 3, 0, null);
      await fresh.close();
      const freshMount = await RpcClient.connect({ host: '127.0.0.1', port: port + 1, localAddress: '127.0.21.1', timeoutMs: 10_000 });
      await freshMount.call(MOUNT_PROGRAM, MOUNT_V3, 0, null);
      await freshMount.close();

    } finally {
      for (const s of stalled) s.destroy();
    }
    for (let i = 0; i < 100 && (await metric('clusternfs_connections')) > 2; i++) await sleep(100);
    expect(await metric('clusternfs_connections')).toBe(2);
    // The baseline again without them: the machine is shared, and its noise right now is the
    // yardstick, so the worse of the two baselines is the one compared against.
    const nullAfter = await p99Of(nullCall);
    const getattrAfter = await p99Of(getattr);
    console.log(
      `stalled clients: NULL p99 ${nullBefore.toFixed(3)} / ${nullAfter.toFixed(3)} ms without, ${nullDuring.toFixed(3)} ms with ${STALLED} stalled connections; ` +
        `GETATTR p99 ${getattrBefore.toFixed(3)} / ${getattrAfter.toFixed(3)} ms without, ${getattrDuring.toFixed(3)} ms with; ` +
        `server RSS ${rssBefore.toFixed(1)} -> ${rssDuring.toFixed(1)} MB`,
    );
    // Sub-millisecond p99s move by more than 5x from scheduler noise alone on a shared 2-core
    // machine; 0.5 ms is the floor under which we do not compare.
    expect(nullDuring).toBeLessThanOrEqual(5 * Math.max(nullBefore, nullAfter, 0.5));
    expect(getattrDuring).toBeLessThanOrEqual(5 * Math.max(getattrBefore, getattrAfter, 0.5));
  });
});

/** 1,000 READ calls of `size` bytes as one buffer of records, xids from `base`. */
function pipelinedReads(base: number, size: number): Buffer {
  const w = new XdrWriter(256 * 1024);
  const records: Buffer[] = [];
  for (let i = 0; i < READS_EACH; i++) {
    w.begin(256);
    w.u32(0);
    writeCallHeader(w, base + i, NFS_PROGRAM, 3, 6, { flavor: 1, uid: 0, gid: 0, gids: [], machineName: 'hog' });
    encodeReadArgs(w, bigFh, (i * size) % (FILE_MB * 1024 * 1024 - size), size);
    w.patchU32(0, lastFragmentHeader(w.length() - 4));
    records.push(Buffer.from(w.finish()));
  }
  return Buffer.concat(records);
}

describe.each([
  ['1 MiB READs sent from the file', {}],
  ['1 MiB READs copied (CLUSTERNFS_NO_SENDFILE=1)', { CLUSTERNFS_NO_SENDFILE: '1' }],
])('clients that do not read their replies: %s', (_what, env) => {
  const readSize = 1024 * 1024;
  beforeAll(async () => {
    // A server of its own: its RSS is then this test's alone, and env picks the READ path.
    await stopServer();
    await startServer(env);
  });

  it(`${READERS} clients pipelining ${READS_EACH} of them grow the server by at most 100 MB, and it is given back`, async () => {
    // Warm up the READ path so its steady-state memory is in the baseline.
    for (let i = 0; i < 32; i++) expect((await nfs.read(bigFh, i * readSize, readSize)).status).toBe(NfsStat.OK);
    await sleep(1000);
    const before = rssMb();
    const pausesBefore = (await metric('clusternfs_limit_hits_total{limit="unsent_bytes"}')) + (await metric('clusternfs_limit_hits_total{limit="calls_per_connection"}'));
    const hogs: net.Socket[] = [];
    let peak = before;
    try {
      for (let c = 0; c < READERS; c++) {
        const sock = await connectFrom(`127.0.30.${c + 1}`);
        sock.on('error', () => {});
        sock.pause(); // never read: replies pile up in the kernel, then at the server
        sock.write(pipelinedReads(c * 100_000 + 1, readSize));
        hogs.push(sock);
      }
      // Watch the server for a while: it must level off, not grow with the 16 GB asked for.
      for (let i = 0; i < 40; i++) {
        await sleep(200);
        peak = Math.max(peak, rssMb());
      }
      // Everyone else is still served while the hogs sit there.
      expect((await nfs.getattr(rootFh)).status).toBe(NfsStat.OK);
      expect((await nfs.read(bigFh, 0, 4096)).status).toBe(NfsStat.OK);
      const pauses = (await metric('clusternfs_limit_hits_total{limit="unsent_bytes"}')) + (await metric('clusternfs_limit_hits_total{limit="calls_per_connection"}'));
      expect(pauses).toBeGreaterThanOrEqual(pausesBefore + READERS);
    } finally {
      for (const s of hogs) s.destroy();
    }
    // Given back: the connections' buffers are freed once they close (GC and the allocator willing).
    let after = rssMb();
    for (let i = 0; i < 60 && after > before + 30; i++) {
      await sleep(500);
      // A little traffic gives V8 the allocations that let it run the collector.
      await nfs.getattr(rootFh);
      after = rssMb();
    }
    console.log(`backpressure: server RSS ${before.toFixed(1)} MB before, ${peak.toFixed(1)} MB peak with ${READERS}×${READS_EACH} unread ${readSize >> 10} KiB READs, ${after.toFixed(1)} MB after they left`);
    expect(peak - before).toBeLessThanOrEqual(100);
    expect(after - before).toBeLessThanOrEqual(30);
    expect((await nfs.getattr(rootFh)).status).toBe(NfsStat.OK);
  });
});
