/**
 * What remapping costs in big directories and how much memory a node can make it hold, counted
 * (file-system calls via src/store/fsops.ts, tag-index rebuilds and READDIR views via the
 * remapper's stats), never timed: a node filling /tmp must not make every other node's calls
 * there stat the whole directory, and changing its AUTH_SYS uid must not copy listings.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateMode, NfsStat } from '../../src/nfs/constants.js';
import { Remapper } from '../../src/remap/remapper.js';
import { clientView } from '../../src/remap/resolve.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { fsCallCounts } from '../../src/store/fsops.js';
import { fhOf, mountSession, parseExports, type Session, startServer } from '../helpers/inproc-server.js';

const BIG = 20_000;
let work: string;
let root: string;
let server: ClusterNfsServer;
let node: Session;
let other: Session;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-remap-cost-'));
  root = path.join(work, 'root');
  for (const d of ['big', 'bigtagged', 'tmp']) {
    fs.mkdirSync(path.join(root, d), { recursive: true });
    for (let i = 0; i < BIG; i++) fs.writeFileSync(path.join(root, d, `f${i}`), '');
  }
  fs.writeFileSync(path.join(root, 'bigtagged', 'f1$$IP=127.0.0.11$$'), 'mine\n');
  // /tmp of a cluster: every node's files are its own variants.
  fs.writeFileSync(path.join(root, 'tmp', '$$CREATE=IP$$'), '');
  for (const d of ['ipviews', 'uidviews']) {
    fs.mkdirSync(path.join(root, d));
    for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(root, d, `e${i}`), '');
  }
  fs.writeFileSync(path.join(root, 'ipviews', 'e1$$IP=127.0.0.11$$'), '');
  fs.writeFileSync(path.join(root, 'ipviews', 'e2$$CLIENT$$'), '');
  fs.writeFileSync(path.join(root, 'ipviews', 'e3$$COW=IP$$'), '');
  fs.writeFileSync(path.join(root, 'uidviews', 'e1$$UID=1000$$'), '');
  const exports = parseExports(`${root} 127.0.0.0/8(rw,no_root_squash,insecure,cluster)\n`, 'remap-cost');
  server = await startServer(exports, null, { hostsFiles: [] });
  node = await mountSession(server, root, { localAddress: '127.0.0.11' });
  other = await mountSession(server, root, { localAddress: '127.0.0.12' });
}, 120_000);

afterAll(async () => {
  await node?.close();
  await other?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('a create and a lookup in a 20,000-entry directory', () => {
  for (const d of ['big', 'bigtagged', 'tmp']) {
    it(`${d}: neither stat every entry nor read the directory again, and the results are right`, async () => {
      const dir = await fhOf(node, d);
      // Warm: the first lookup reads the directory's names once.
      expect((await node.nfs.lookup(dir, 'f1')).status).toBe(NfsStat.OK);
      const idx = server.remapper.stats.index;
      for (let round = 0; round < 3; round++) {
        const before = { ...fsCallCounts, builds: idx.builds, updates: idx.updates };
        expect((await node.nfs.create(dir, `new${round}`)).status).toBe(NfsStat.OK);
        expect((await node.nfs.lookup(dir, `new${round}`)).status).toBe(NfsStat.OK);
        expect((await node.nfs.lookup(dir, `f${BIG - 1}`)).status).toBe(NfsStat.OK);
        expect((await node.nfs.lookup(dir, 'nothere')).status).toBe(NfsStat.NOENT);
        expect(fsCallCounts.lstat - before.lstat).toBeLessThan(50);
        expect(fsCallCounts.readdir - before.readdir).toBe(0);
        expect(idx.builds - before.builds).toBe(0);
        expect(idx.updates - before.updates).toBe(1);
      }
      // Removed and renamed by us: the index follows, still without reading the directory.
      const before = { readdir: fsCallCounts.readdir, builds: idx.builds };
      expect((await node.nfs.remove(dir, 'new0')).status).toBe(NfsStat.OK);
      expect((await node.nfs.lookup(dir, 'new0')).status).toBe(NfsStat.NOENT);
      expect((await node.nfs.rename(dir, 'new1', dir, 'renamed1')).status).toBe(NfsStat.OK);
      expect((await node.nfs.lookup(dir, 'new1')).status).toBe(NfsStat.NOENT);
      expect((await node.nfs.lookup(dir, 'renamed1')).status).toBe(NfsStat.OK);
      expect(fsCallCounts.readdir - before.readdir).toBe(0);
      expect(idx.builds - before.builds).toBe(0);
    });
  }

  it('tmp: what a node makes there is its own variant, which the other node does not see', async () => {
    expect(fs.existsSync(path.join(root, 'tmp', 'new2$$IP=127.0.0.11$$'))).toBe(true);
    expect(fs.existsSync(path.join(root, 'tmp', 'new2'))).toBe(false);
    const dir = await fhOf(other, 'tmp');
    expect((await other.nfs.lookup(dir, 'new2')).status).toBe(NfsStat.NOENT);
    expect((await other.nfs.create(dir, 'new2')).status).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'tmp', 'new2$$IP=127.0.0.12$$'))).toBe(true);
    const mine = await node.nfs.lookup(await fhOf(node, 'tmp'), 'new2');
    const theirs = await other.nfs.lookup(dir, 'new2');
    expect(mine.fh).not.toEqual(theirs.fh);
  });

  it('a create that fails (EXIST) keeps the index; the next create updates it', async () => {
    const dir = await fhOf(node, 'bigtagged');
    expect((await node.nfs.lookup(dir, 'f3')).status).toBe(NfsStat.OK);
    const idx = server.remapper.stats.index;
    const builds = idx.builds;
    expect((await node.nfs.create(dir, 'f3', {}, CreateMode.GUARDED)).status).toBe(NfsStat.EXIST);
    expect((await node.nfs.create(dir, 'afterfail')).status).toBe(NfsStat.OK);
    expect((await node.nfs.lookup(dir, 'afterfail')).status).toBe(NfsStat.OK);
    expect(idx.builds).toBe(builds);
  });

  it('a change behind our back reads the directory again', async () => {
    const dir = await fhOf(node, 'bigtagged');
    expect((await node.nfs.lookup(dir, 'f2')).status).toBe(NfsStat.OK);
    const builds = server.remapper.stats.index.builds;
    fs.writeFileSync(path.join(root, 'bigtagged', 'f2$$IP=127.0.0.11$$'), 'mine too\n');
    // The attribute cache learns of the change through inotify, within milliseconds.
    let data = '';
    for (let i = 0; i < 200 && data !== 'mine too\n'; i++) {
      const r = await node.nfs.lookup(dir, 'f2');
      data = (await node.nfs.readAll(r.fh!)).data.toString();
      if (data !== 'mine too\n') await new Promise((r) => setTimeout(r, 25));
    }
    expect(data).toBe('mine too\n');
    expect(server.remapper.stats.index.builds).toBeGreaterThan(builds);
  });

  it('own changes that overlap keep every name (the index is read again)', async () => {
    const dir = await fhOf(node, 'bigtagged');
    const odir = await fhOf(other, 'bigtagged');
    const made = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? other : node).nfs.create(i % 2 ? odir : dir, `par${i}`)));
    for (const m of made) expect(m.status).toBe(NfsStat.OK);
    for (let i = 0; i < 20; i++) expect((await node.nfs.lookup(dir, `par${i}`)).status, `par${i}`).toBe(NfsStat.OK);
  });
});

describe('per-client READDIR views', () => {
  async function listAs(uid: number, rel: string): Promise<Map<string, number>> {
    node.rpc.setAuth({ uid, gid: uid });
    try {
      const r = await node.nfs.readdirplusAll(await fhOf(node, rel));
      expect(r.status).toBe(NfsStat.OK);
      return new Map(r.entries.map((e) => [e.name, e.fileid]));
    } finally {
      node.rpc.setAuth(null);
    }
  }

  it('a node changing its uid on every READDIR of a directory without UID/GID variants makes one view', async () => {
    const views = server.remapper.stats.views;
    const before = views.size;
    let first: Map<string, number> | null = null;
    for (let uid = 1; uid <= 60; uid++) {
      const seen = await listAs(uid, 'ipviews');
      first ??= seen;
      expect(seen).toEqual(first);
    }
    expect(first!.has('e1')).toBe(true);
    expect([...first!.keys()].some((n) => n.includes('$$'))).toBe(false);
    expect(views.size - before).toBe(1);
  });

  it('a directory with UID variants still shows each uid its own', async () => {
    const mine = await listAs(1000, 'uidviews');
    const others = await listAs(1001, 'uidviews');
    expect(mine.get('e1')).toBe(fs.lstatSync(path.join(root, 'uidviews', 'e1$$UID=1000$$')).ino);
    expect(others.get('e1')).toBe(fs.lstatSync(path.join(root, 'uidviews', 'e1')).ino);
  });

  it('views are bounded by their entries in all, not only by their number', async () => {
    const store = server.stores[0];
    const remapper = new Remapper({ maxViewEntries: 100 });
    const dir = await store.lookup(await store.rootNode(), 'uidviews');
    for (let uid = 0; uid < 50; uid++) {
      const seen = await remapper.listing(store, { cluster: true }, dir, clientView('127.0.0.11', null, uid, uid));
      expect(seen.length).toBe(32);
    }
    expect(remapper.stats.views.entries).toBeGreaterThan(0);
    expect(remapper.stats.views.entries).toBeLessThanOrEqual(100);
  });
});
