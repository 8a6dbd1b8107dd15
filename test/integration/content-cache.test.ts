/**
 * Small files and symlink targets served from memory (src/cache/content-cache.ts), through two
 * simulated nodes: the second node's READs and READLINKs make no file-system call, every byte
 * and eof is what the file holds, and a change — ours or behind our back — is what the next
 * READ returns. MKDIR of a name the cache knows is EXIST without a call.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsStat } from '../../src/nfs/constants.js';
import { DEFAULT_CACHE_OPTIONS } from '../../src/cache/options.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { fsCallCounts, fsWriteCounts, totalFsCalls } from '../../src/store/fsops.js';
import { mountSession, quickExport, type Session, startServer } from '../helpers/inproc-server.js';

let work: string;
let server: ClusterNfsServer;
let a: Session;
let b: Session;

function pattern(size: number, seed: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + seed) & 0xff;
  return buf;
}

async function fh(s: Session, rel: string): Promise<Buffer> {
  const r = await s.nfs.lookupPath(s.root, rel);
  expect(r.status, rel).toBe(NfsStat.OK);
  return r.fh!;
}

/** READs the whole file in `chunk`-byte calls; checks eof is set on the last one only. */
async function readChunks(s: Session, handle: Buffer, chunk: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let off = 0; ; off += chunk) {
    const r = await s.nfs.read(handle, off, chunk);
    expect(r.status).toBe(NfsStat.OK);
    parts.push(Buffer.from(r.data));
    if (r.eof) break;
    expect(r.count).toBe(chunk);
  }
  return Buffer.concat(parts);
}

async function eventually(check: () => Promise<boolean>, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('not seen in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-content-'));
  fs.mkdirSync(path.join(work, 'lib'));
  fs.writeFileSync(path.join(work, 'lib', 'small.so'), pattern(200_000, 1));
  fs.writeFileSync(path.join(work, 'lib', 'big.img'), pattern(DEFAULT_CACHE_OPTIONS.contentFileBytes + 1, 2));
  fs.symlinkSync('small.so', path.join(work, 'lib', 'link.so'));
  fs.mkdirSync(path.join(work, 'proc'));
  server = await startServer([quickExport(work)], null, {});
  a = await mountSession(server, work, { localAddress: '127.0.0.41' });
  b = await mountSession(server, work, { localAddress: '127.0.0.42' });
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('content cache', () => {
  it('a second node reads a small file from memory: same bytes, eof only at the end, no read call', async () => {
    const want = fs.readFileSync(path.join(work, 'lib', 'small.so'));
    expect((await readChunks(a, await fh(a, 'lib/small.so'), 65536)).equals(want)).toBe(true);
    const hb = await fh(b, 'lib/small.so');
    const reads = fsCallCounts.read;
    const before = totalFsCalls();
    expect((await readChunks(b, hb, 16384)).equals(want)).toBe(true);
    expect((await readChunks(b, hb, 69632)).equals(want)).toBe(true);
    expect(fsCallCounts.read).toBe(reads);
    expect(totalFsCalls()).toBe(before);
    // Past the end: nothing, with eof.
    const past = await b.nfs.read(hb, 300_000, 4096);
    expect(past.status).toBe(NfsStat.OK);
    expect(past.count).toBe(0);
    expect(past.eof).toBe(true);
  });

  it('a file larger than the cache takes whole is read from the file system each time', async () => {
    const want = fs.readFileSync(path.join(work, 'lib', 'big.img'));
    expect((await readChunks(a, await fh(a, 'lib/big.img'), 1 << 20)).equals(want)).toBe(true);
    // A read(2) into a Buffer, or for large READs over TCP a sendfile(2) straight to the socket.
    const reads = fsCallCounts.read + fsCallCounts.sendfile;
    expect((await readChunks(b, await fh(b, 'lib/big.img'), 1 << 20)).equals(want)).toBe(true);
    expect(fsCallCounts.read + fsCallCounts.sendfile).toBeGreaterThan(reads);
  });

  it('our own WRITE is what the next READ returns, on every node', async () => {
    const ha = await fh(a, 'lib/small.so');
    const hb = await fh(b, 'lib/small.so');
    await readChunks(b, hb, 65536);
    expect((await a.nfs.write(ha, 1000, Buffer.from('written by a'))).status).toBe(NfsStat.OK);
    const r = await b.nfs.read(hb, 1000, 12);
    expect(r.data.toString()).toBe('written by a');
  });

  it('a change behind our back, same size, is what READ returns once the watcher reports it', async () => {
    const hb = await fh(b, 'lib/small.so');
    await readChunks(b, hb, 65536);
    const file = path.join(work, 'lib', 'small.so');
    const fresh = pattern(200_000, 99);
    fs.writeFileSync(file, fresh);
    await eventually(async () => (await readChunks(b, hb, 65536)).equals(fresh));
    // Replaced by rename (as rsync does): the new file under the old name.
    const next = pattern(150_000, 7);
    fs.writeFileSync(`${file}.tmp`, next);
    fs.renameSync(`${file}.tmp`, file);
    await eventually(async () => (await readChunks(b, await fh(b, 'lib/small.so'), 65536)).equals(next));
  });

  it('READLINK: the second node gets the target from memory; a replaced link shows its new target', async () => {
    expect((await a.nfs.readlink(await fh(a, 'lib/link.so'))).data).toBe('small.so');
    const hb = await fh(b, 'lib/link.so');
    const calls = fsCallCounts.readlink;
    expect((await b.nfs.readlink(hb)).data).toBe('small.so');
    expect(fsCallCounts.readlink).toBe(calls);
    fs.unlinkSync(path.join(work, 'lib', 'link.so'));
    fs.symlinkSync('big.img', path.join(work, 'lib', 'link.so'));
    await eventually(async () => {
      const r = await b.nfs.lookup(await fh(b, 'lib'), 'link.so');
      return r.status === NfsStat.OK && (await b.nfs.readlink(r.fh!)).data === 'big.img';
    });
  });

  it('MKDIR of a directory the cache knows is EXIST without a file-system call', async () => {
    const root = b.root;
    expect((await b.nfs.lookup(root, 'proc')).status).toBe(NfsStat.OK);
    const before = totalFsCalls();
    expect((await b.nfs.mkdir(root, 'proc', { mode: 0o755 })).status).toBe(NfsStat.EXIST);
    expect(totalFsCalls()).toBe(before);
    // A new name is still made.
    expect((await b.nfs.mkdir(root, 'sys', { mode: 0o755 })).status).toBe(NfsStat.OK);
    expect(fs.statSync(path.join(work, 'sys')).isDirectory()).toBe(true);
  });

  it('a storm of the same READLINK or MKDIR at once makes one call', async () => {
    fs.symlinkSync('small.so', path.join(work, 'lib', 'storm.so'));
    const links = await Promise.all([a, b].map(async (s) => fh(s, 'lib/storm.so')));
    const calls = fsCallCounts.readlink;
    const targets = await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? b : a).nfs.readlink(links[i % 2])));
    expect(targets.map((t) => t.data)).toEqual(Array(16).fill('small.so'));
    expect(fsCallCounts.readlink - calls).toBe(1);
    const creates = fsWriteCounts.create;
    const made = await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? b : a).nfs.mkdir(i % 2 ? b.root : a.root, 'dev', { mode: 0o755 })));
    expect(made.filter((r) => r.status === NfsStat.OK)).toHaveLength(1);
    expect(made.filter((r) => r.status === NfsStat.EXIST)).toHaveLength(15);
    expect(fsWriteCounts.create - creates).toBe(1);
  });

  it('hundreds of pipelined READs of cached files at random offsets, from two nodes, are right byte for byte', async () => {
    const files = ['c1', 'c2', 'c3'].map((name, i) => {
      const data = pattern(70_000 + i * 40_000, 50 + i);
      fs.writeFileSync(path.join(work, 'lib', name), data);
      return { name, data };
    });
    const handles = await Promise.all(files.map(async (f) => [await fh(a, `lib/${f.name}`), await fh(b, `lib/${f.name}`)]));
    // Loaded once each, after the watcher has reported the new files (each report drops them).
    await new Promise((r) => setTimeout(r, 300));
    for (const [h] of handles) expect((await a.nfs.read(h, 0, 1)).status).toBe(NfsStat.OK);
    const readCalls = fsCallCounts.read;
    let seed = 11;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const reads = Array.from({ length: 400 }, async (_, i) => {
      const k = rnd(files.length);
      const { data } = files[k];
      const offset = rnd(data.length + 100);
      const count = 1 + rnd(70_000);
      const r = await (i % 2 ? b : a).nfs.read(handles[k][i % 2], offset, count);
      expect(r.status).toBe(NfsStat.OK);
      const want = data.subarray(Math.min(offset, data.length), Math.min(offset + count, data.length));
      expect(Buffer.from(r.data).equals(want), `${files[k].name} @${offset}+${count}`).toBe(true);
      expect(r.eof).toBe(offset + count >= data.length);
    });
    await Promise.all(reads);
    expect(fsCallCounts.read).toBe(readCalls);
  });
});
