/**
 * An admin runs `rsync -a --delete newimage/ root/` while nodes read: clients (three source
 * addresses, reading through our client the whole time) see the new content, new files and new
 * modes, deleted files turn into NOENT (by name) and STALE (by old handle), and once they have
 * seen the new image nothing stale comes back. The spec is "visible within 1 s"; the poll allows
 * much more so a loaded machine cannot fail it, and the figure is printed.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NfsStat } from '../../src/nfs/constants.js';
import type { CacheOptions } from '../../src/cache/options.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, quickExport, startServer, type Session } from '../helpers/inproc-server.js';

let work: string;
let root: string;
let image: string;
let server: ClusterNfsServer;
const nodes: Session[] = [];

/** Files of an image: path → [content, mode]. */
type Image = Map<string, [string, number]>;

const OLD: Image = new Map([
  ['etc/motd', ['old motd\n', 0o644]],
  ['etc/hosts', ['127.0.0.1 localhost\n', 0o644]],
  ['etc/shadow', ['root:x:0\n', 0o600]],
  ['etc/old.conf', ['going away\n', 0o644]],
  ['usr/bin/tool', ['#!/bin/sh\necho v1\n', 0o755]],
  ['usr/lib/libold.so', ['ELF old\n', 0o644]],
  ['var/gone/file', ['a whole directory goes\n', 0o644]],
]);

const NEW: Image = new Map([
  ['etc/motd', ['a new message of the day\n', 0o644]],
  ['etc/hosts', ['127.0.0.1 localhost\n', 0o640]],
  ['etc/shadow', ['root:y:1\n', 0o600]],
  ['etc/new.conf', ['fresh\n', 0o644]],
  ['usr/bin/tool', ['#!/bin/sh\necho v2\n', 0o755]],
  ['usr/lib/libnew.so', ['ELF new\n', 0o644]],
]);

function startServerWith(dir: string, cache: Partial<CacheOptions>): Promise<ClusterNfsServer> {
  return startServer([quickExport(dir)], null, { cache });
}

const DELETED = ['etc/old.conf', 'usr/lib/libold.so', 'var/gone/file', 'var/gone'];

function writeImage(dir: string, img: Image, mtimeSec: number): void {
  for (const [rel, [content, mode]] of img) {
    const p = path.join(dir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
    fs.chmodSync(p, mode);
    // Different mtimes in the two images, so rsync's quick check never skips a changed file.
    fs.utimesSync(p, mtimeSec, mtimeSec);
  }
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-rsync-'));
  root = path.join(work, 'root');
  image = path.join(work, 'newimage');
  writeImage(root, OLD, 1_600_000_000);
  writeImage(image, NEW, 1_700_000_000);
  server = await startServer([quickExport(root)], null);
  for (let i = 0; i < 3; i++) nodes.push(await mountSession(server, root, { localAddress: `127.0.0.${21 + i}` }));
});

afterAll(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

interface Seen {
  status: number;
  content: string | null;
  mode: number | null;
  size: number | null;
}

/** What one node sees of `rel` by name: LOOKUP, GETATTR and READ, as a kernel client would. */
async function see(n: Session, rel: string): Promise<Seen> {
  const l = await n.nfs.lookupPath(n.root, rel);
  if (l.status !== NfsStat.OK) return { status: l.status, content: null, mode: null, size: null };
  const a = await n.nfs.getattr(l.fh!);
  if (a.status !== NfsStat.OK) return { status: a.status, content: null, mode: null, size: null };
  if (a.attr!.type === 2) return { status: NfsStat.OK, content: null, mode: a.attr!.mode, size: null };
  const r = await n.nfs.read(l.fh!, 0, 4096);
  return { status: r.status, content: r.status === NfsStat.OK ? r.data.toString() : null, mode: a.attr!.mode, size: a.attr!.size };
}

function expected(img: Image, rel: string): Seen {
  const e = img.get(rel);
  if (e === undefined) return { status: NfsStat.NOENT, content: null, mode: null, size: null };
  return { status: NfsStat.OK, content: e[0], mode: e[1], size: Buffer.byteLength(e[0]) };
}

const ALL = [...new Set([...OLD.keys(), ...NEW.keys()])];

/** True when `n` sees exactly the new image for every path (and the deleted directory is gone). */
async function seesNewImage(n: Session): Promise<boolean> {
  for (const rel of ALL) {
    const got = await see(n, rel);
    if (JSON.stringify(got) !== JSON.stringify(expected(NEW, rel))) return false;
  }
  return (await n.nfs.lookupPath(n.root, 'var/gone')).status === NfsStat.NOENT;
}

it('rsync -a --delete under reading clients: new content, files and modes, deleted files NOENT/STALE, then nothing stale', async () => {
  // Warm: every node has read the old image (its attributes, names and content are cached).
  const oldHandles = new Map<string, Buffer>();
  for (const n of nodes) {
    for (const rel of OLD.keys()) expect(await see(n, rel)).toEqual(expected(OLD, rel));
  }
  for (const rel of [...OLD.keys(), 'var/gone']) oldHandles.set(rel, (await nodes[0].nfs.lookupPath(nodes[0].root, rel)).fh!);

  // Readers keep going while rsync runs (bounded in count and time).
  let reading = true;
  const deadline = Date.now() + 60_000;
  const readers = nodes.map(async (n) => {
    let rounds = 0;
    while (reading && rounds < 100_000 && Date.now() < deadline) {
      for (const rel of ALL) await see(n, rel);
      rounds++;
    }
    return rounds;
  });
  await new Promise((r) => setTimeout(r, 50));
  execFileSync('rsync', ['-a', '--delete', `${image}/`, `${root}/`]);
  const synced = Date.now();

  // Poll until every node sees the new image.
  const seenAfter: number[] = [];
  for (const n of nodes) {
    let ok = false;
    while (!ok && Date.now() - synced < 20_000) {
      ok = await seesNewImage(n);
      if (!ok) await new Promise((r) => setTimeout(r, 20));
    }
    expect(ok).toBe(true);
    seenAfter.push(Date.now() - synced);
  }
  reading = false;
  expect(Math.min(...(await Promise.all(readers)))).toBeGreaterThan(0);
  console.log(`rsync visibility: every node saw the new image ${seenAfter.join(' / ')} ms after rsync returned (spec: 1000 ms)`);

  // Old handles of deleted files, and of files rsync replaced (a temporary file renamed over
  // them), are STALE; the directories rsync kept keep their handles.
  for (const rel of [...DELETED, 'etc/motd', 'etc/hosts', 'etc/shadow', 'usr/bin/tool']) {
    expect((await nodes[1].nfs.getattr(oldHandles.get(rel)!)).status, rel).toBe(NfsStat.STALE);
  }
  expect((await nodes[1].nfs.getattr((await nodes[1].nfs.lookupPath(nodes[1].root, 'etc')).fh!)).status).toBe(NfsStat.OK);

  // And nothing stale comes back afterwards.
  for (let round = 0; round < 20; round++) {
    for (const n of nodes) for (const rel of ALL) expect(await see(n, rel), rel).toEqual(expected(NEW, rel));
  }
});

it('a chmod and an in-place write behind our back reach a client that holds the handle', async () => {
  const n = nodes[2];
  const f = (await n.nfs.lookupPath(n.root, 'etc/new.conf')).fh!;
  expect((await n.nfs.getattr(f)).attr!.mode).toBe(0o644);
  expect((await n.nfs.read(f, 0, 100)).data.toString()).toBe('fresh\n');
  fs.chmodSync(path.join(root, 'etc/new.conf'), 0o600);
  fs.appendFileSync(path.join(root, 'etc/new.conf'), 'appended\n');
  const changed = Date.now();
  let seen = false;
  while (!seen && Date.now() - changed < 20_000) {
    const a = (await n.nfs.getattr(f)).attr!;
    seen = a.mode === 0o600 && a.size === 15;
    if (!seen) await new Promise((r) => setTimeout(r, 10));
  }
  expect(seen).toBe(true);
  console.log(`chmod + append visible after ${Date.now() - changed} ms`);
  expect((await n.nfs.read(f, 0, 100)).data.toString()).toBe('fresh\nappended\n');
  for (let i = 0; i < 50; i++) expect((await n.nfs.getattr(f)).attr!.mode).toBe(0o600);
});

it('beyond the watch limit, a change behind our back is seen by the TTL instead', async () => {
  // One watch (the root's): entries below unwatched directories live only --cache-ttl-ms.
  const tree = path.join(work, 'ttl');
  fs.mkdirSync(path.join(tree, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'sub', 'f'), 'one\n');
  fs.chmodSync(path.join(tree, 'sub', 'f'), 0o644);
  const limited = await startServerWith(tree, { watchMax: 1, ttlMs: 300 });
  const n = await mountSession(limited, tree);
  try {
    const f = (await n.nfs.lookupPath(n.root, 'sub/f')).fh!;
    expect((await n.nfs.getattr(f)).attr!.mode).toBe(0o644);
    expect(limited.stores[0].watcher.size).toBe(1);
    expect(limited.stores[0].watcher.failures).toBeGreaterThan(0);
    fs.chmodSync(path.join(tree, 'sub', 'f'), 0o600);
    const changed = Date.now();
    let mode = 0o644;
    while (mode !== 0o600 && Date.now() - changed < 20_000) {
      mode = (await n.nfs.getattr(f)).attr!.mode;
      if (mode !== 0o600) await new Promise((r) => setTimeout(r, 20));
    }
    expect(mode).toBe(0o600);
    console.log(`unwatched directory: chmod visible after ${Date.now() - changed} ms (TTL 300 ms)`);
    for (let i = 0; i < 20; i++) expect((await n.nfs.getattr(f)).attr!.mode).toBe(0o600);
  } finally {
    await n.close();
    await limited.stop();
  }
});
