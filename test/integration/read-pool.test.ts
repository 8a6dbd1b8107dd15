/**
 * READ data comes from pooled buffers that go back to the pool once the socket has written them.
 * The classic bug of such pools is a buffer reused while a reply still refers to it: another
 * client's data in a reply, or a closed connection handing back buffers the kernel is still
 * reading. Every reply here is checked byte for byte against the file, with many READs of
 * different files and offsets in flight on one connection and across connections, while other
 * connections pipeline 1 MiB READs and hang up in the middle of their replies, and while one
 * client leaves its replies unread long enough for the server's writes to queue up.
 *
 * READs of 128 KiB and more also go out by the native sendfile path when a connection has
 * nothing else being written (src/rpc/send-range.ts), mixed with pooled replies on the same
 * connections: the same checks hold for both, and the counters show both were taken.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeReadArgs } from '../../src/client/nfs3-args.js';
import { NFS_PROGRAM, NfsStat } from '../../src/nfs/constants.js';
import { writeCallHeader } from '../../src/rpc/message.js';
import { payloadPool } from '../../src/rpc/payload-pool.js';
import { sendRangeAddon } from '../../src/rpc/send-range.js';
import { lastFragmentHeader } from '../../src/rpc/record.js';
import { XdrWriter } from '../../src/rpc/xdr.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, quickExport, startServer, type Session } from '../helpers/inproc-server.js';

const MIB = 1024 * 1024;
/** Sizes that hit several size classes, a partial last block and a tail shorter than a READ. */
const FILES: Record<string, number> = { a: 3 * MIB + 123, b: MIB + 5, c: 200 * 1024 + 3, d: 10_000, e: 4097 };

let work: string;
let root: string;
let server: ClusterNfsServer;
let session: Session;
const content = new Map<string, Buffer>();
const handles = new Map<string, Buffer>();

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-readpool-'));
  root = path.join(work, 'root');
  fs.mkdirSync(root);
  for (const [name, size] of Object.entries(FILES)) {
    const data = randomBytes(size);
    fs.writeFileSync(path.join(root, name), data);
    content.set(name, data);
  }
  // Without the content cache: it would serve these files from memory, and the pool is the point here.
  server = await startServer([quickExport(root)], path.join(work, 'state'), { cache: { contentBytes: 0 } });
  session = await mountSession(server, root);
  for (const name of Object.keys(FILES)) {
    const r = await session.nfs.lookup(session.root, name);
    expect(r.status).toBe(NfsStat.OK);
    handles.set(name, r.fh!);
  }
});

afterAll(async () => {
  await session?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

interface ReadPlan {
  name: string;
  offset: number;
  count: number;
}

/** A deterministic spread of READs: every file, offsets on and off block boundaries, up to 1 MiB. */
function plans(seed: number, n: number): ReadPlan[] {
  const names = Object.keys(FILES);
  const counts = [MIB, 512 * 1024, 65536, 32768 + 7, 4096, 5000, 100];
  const out: ReadPlan[] = [];
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const name = names[x % names.length];
    const size = FILES[name];
    const offset = (x >>> 3) % size;
    out.push({ name, offset, count: counts[(x >>> 7) % counts.length] });
  }
  return out;
}

function expected(p: ReadPlan): Buffer {
  const data = content.get(p.name)!;
  return data.subarray(p.offset, Math.min(data.length, p.offset + p.count));
}

/** Runs the plans through one client with all of them in flight at once; checks every byte. */
async function verifiedReads(nfs: Session['nfs'], list: ReadPlan[]): Promise<number> {
  const results = await Promise.all(list.map((p) => nfs.read(handles.get(p.name)!, p.offset, p.count)));
  let bytes = 0;
  for (let i = 0; i < list.length; i++) {
    const r = results[i];
    const want = expected(list[i]);
    expect(r.status, `${list[i].name}@${list[i].offset}`).toBe(NfsStat.OK);
    expect(r.count).toBe(want.length);
    expect(r.eof).toBe(list[i].offset + want.length >= FILES[list[i].name]);
    // equals() rather than toEqual: a mismatch report of a MiB of bytes helps no one.
    expect(r.data.equals(want), `${list[i].name}@${list[i].offset}+${list[i].count}: data differs`).toBe(true);
    bytes += want.length;
  }
  return bytes;
}

/** `n` pipelined 1 MiB READ records of file `a`, as one buffer. */
function rawReads(n: number, xidBase: number, offsets: (i: number) => number): Buffer {
  const w = new XdrWriter(64 * 1024);
  const records: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    w.begin(256);
    w.u32(0);
    writeCallHeader(w, xidBase + i, NFS_PROGRAM, 3, 6, { flavor: 1, uid: 0, gid: 0, gids: [], machineName: 'pool' });
    encodeReadArgs(w, handles.get('a')!, offsets(i), MIB);
    w.patchU32(0, lastFragmentHeader(w.length() - 4));
    records.push(Buffer.from(w.finish()));
  }
  return Buffer.concat(records);
}

function connectFrom(localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port: server.ports.nfs, host: '127.0.0.1', localAddress });
    sock.once('connect', () => resolve(sock));
    sock.once('error', reject);
  });
}

/** READ replies parsed from a record stream: xid → data (a copy). */
function parseReadReplies(stream: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let pos = 0;
  while (pos + 4 <= stream.length) {
    const mark = stream.readUInt32BE(pos);
    expect(mark & 0x80000000, 'one fragment per reply').not.toBe(0);
    const len = mark & 0x7fffffff;
    const rec = stream.subarray(pos + 4, pos + 4 + len);
    pos += 4 + len;
    const xid = rec.readUInt32BE(0);
    let p = 12; // xid, REPLY, MSG_ACCEPTED
    p += 8 + rec.readUInt32BE(p + 4); // verifier
    expect(rec.readUInt32BE(p), 'accept_stat').toBe(0);
    expect(rec.readUInt32BE(p + 4), 'nfsstat3').toBe(NfsStat.OK);
    p += 8;
    p += rec.readUInt32BE(p) === 1 ? 4 + 84 : 4; // post_op_attr
    p += 4 + 4; // count, eof
    const n = rec.readUInt32BE(p);
    out.set(xid, Buffer.from(rec.subarray(p + 4, p + 4 + n)));
  }
  return out;
}

describe('READ data from pooled buffers', () => {
  it('many pipelined READs of different files and offsets, on one connection and across eight, are right byte for byte', async () => {
    const sessions = [session];
    try {
      for (let i = 0; i < 7; i++) sessions.push(await mountSession(server, root, { localAddress: `127.0.31.${10 + i}` }));
      const reusedBefore = payloadPool.reused;
      for (let round = 0; round < 3; round++) {
        const bytes = await Promise.all(sessions.map((s, i) => verifiedReads(s.nfs, plans(round * 100 + i + 1, 48))));
        expect(bytes.every((b) => b > 0)).toBe(true);
      }
      // The point of the test is buffers going round: make sure they did.
      expect(payloadPool.reused).toBeGreaterThan(reusedBefore);
      // And replies sent straight from the file among them (the addon is built by npm install).
      expect(sendRangeAddon, 'native sendfile addon loaded').not.toBeNull();
      const store = server.stores[0];
      expect(store.bytesSentFromFile).toBeGreaterThan(0);
      expect(store.bytesSentFromFile).toBeLessThan(store.bytesRead);
    } finally {
      await Promise.all(sessions.slice(1).map((s) => s.close()));
    }
  });

  it('pipelined READs over UDP, each in one datagram, are right byte for byte', async () => {
    const udp = await mountSession(server, root, { transport: 'udp', localAddress: '127.0.35.10' });
    try {
      // 32 KiB is the UDP transfer size; smaller plans go through unchanged.
      const list = plans(4242, 64).map((p) => ({ ...p, count: Math.min(p.count, 32 * 1024) }));
      const reusedBefore = payloadPool.reused;
      expect(await verifiedReads(udp.nfs, list)).toBeGreaterThan(0);
      expect(await verifiedReads(udp.nfs, list)).toBeGreaterThan(0);
      expect(payloadPool.reused).toBeGreaterThan(reusedBefore);
    } finally {
      await udp.close();
    }
  });

  it('connections that hang up in the middle of their 1 MiB replies do not corrupt the replies of others', async () => {
    const readers = [session];
    const hogs: net.Socket[] = [];
    try {
      for (let i = 0; i < 3; i++) readers.push(await mountSession(server, root, { localAddress: `127.0.32.${10 + i}` }));
      for (let wave = 0; wave < 6; wave++) {
        // Each wave: hogs pipeline 16 READs, take a little of the first reply, and hang up, while
        // the readers have their own READs in flight.
        const hogDone: Promise<void>[] = [];
        for (let h = 0; h < 4; h++) {
          const sock = await connectFrom(`127.0.33.${10 + h}`);
          hogs.push(sock);
          sock.on('error', () => {});
          hogDone.push(
            new Promise<void>((resolve) => {
              let got = 0;
              sock.on('data', (chunk: Buffer) => {
                got += chunk.length;
                // Past the first reply's header, inside its data: hang up with replies queued.
                if (got > 64 * 1024 + wave * 100_000) sock.destroy();
              });
              sock.on('close', () => resolve());
            }),
          );
          sock.write(rawReads(16, 0x5000 + wave * 100 + h * 20, (i) => ((i + h + wave) % 3) * MIB));
        }
        const bytes = await Promise.all(readers.map((s, i) => verifiedReads(s.nfs, plans(wave * 10 + i + 500, 24))));
        expect(bytes.every((b) => b > 0)).toBe(true);
        await Promise.all(hogDone);
      }
      // After all that the server still answers every connection correctly.
      expect(await verifiedReads(session.nfs, plans(999, 32))).toBeGreaterThan(0);
    } finally {
      for (const s of hogs) s.destroy();
      await Promise.all(readers.slice(1).map((s) => s.close()));
    }
  });

  it('replies left unread while other clients read keep their own data until the client takes them', async () => {
    const sock = await connectFrom('127.0.34.10');
    const chunks: Buffer[] = [];
    try {
      sock.on('error', () => {});
      sock.pause(); // our replies queue up in the kernel and in the server's socket
      const n = 24;
      const offsetOf = (i: number) => (i % 3) * MIB;
      sock.write(rawReads(n, 0x9000, offsetOf));
      // Meanwhile other READs go round the pool many times over.
      for (let round = 0; round < 4; round++) expect(await verifiedReads(session.nfs, plans(round + 700, 32))).toBeGreaterThan(0);
      let total = 0;
      const done = new Promise<void>((resolve, reject) => {
        sock.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          total += chunk.length;
          // Parse only once all n replies could be here (each is a bit over 1 MiB).
          if (total >= n * MIB && parseCount(Buffer.concat(chunks)) === n) resolve();
        });
        sock.once('close', () => reject(new Error(`connection closed after ${total} bytes`)));
      });
      sock.resume();
      await done;
      const replies = parseReadReplies(Buffer.concat(chunks));
      expect(replies.size).toBe(n);
      const a = content.get('a')!;
      for (let i = 0; i < n; i++) {
        const data = replies.get(0x9000 + i)!;
        expect(data.length).toBe(MIB);
        expect(data.equals(a.subarray(offsetOf(i), offsetOf(i) + MIB)), `reply ${i}: data differs`).toBe(true);
      }
    } finally {
      sock.destroy();
    }
  });
});

/** Whole records in a stream so far. */
function parseCount(stream: Buffer): number {
  let pos = 0;
  let n = 0;
  while (pos + 4 <= stream.length) {
    const len = stream.readUInt32BE(pos) & 0x7fffffff;
    if (pos + 4 + len > stream.length) break;
    pos += 4 + len;
    n++;
  }
  return n;
}
