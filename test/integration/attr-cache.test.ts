/**
 * The attribute cache through our NFS client: warm GETATTR/LOOKUP/ACCESS make no file-system call
 * (counted by src/store/fsops.ts), bounds evict, and every one of our own mutating procedures is
 * visible to the very next GETATTR/LOOKUP/READ.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Access, CreateMode, FType, NfsStat, StableHow } from '../../src/nfs/constants.js';
import type { CacheOptions } from '../../src/cache/options.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { fsCallCounts, totalFsCalls } from '../../src/store/fsops.js';
import { mountSession, quickExport, type Session, startServer } from '../helpers/inproc-server.js';

let work: string;
let server: ClusterNfsServer;
let s: Session;

function start(root: string, cache: Partial<CacheOptions> = {}): Promise<ClusterNfsServer> {
  return startServer([quickExport(root)], null, { cache });
}

async function fh(rel: string): Promise<Buffer> {
  const r = await s.nfs.lookupPath(s.root, rel);
  expect(r.status, rel).toBe(NfsStat.OK);
  return r.fh!;
}

function nfsTime(st: fs.Stats): { sec: number; nsec: number } {
  const sec = Math.floor(st.ctimeMs / 1000);
  return { sec, nsec: Math.round((st.ctimeMs - sec * 1000) * 1000) * 1000 };
}

/** Runs `n` calls, `window` at a time (pipelined on the one connection). */
async function repeat(n: number, window: number, call: () => Promise<{ status: number }>): Promise<number> {
  let ok = 0;
  for (let done = 0; done < n; done += window) {
    const batch = await Promise.all(Array.from({ length: Math.min(window, n - done) }, call));
    for (const r of batch) if (r.status === NfsStat.OK) ok++;
  }
  return ok;
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-cache-'));
  fs.mkdirSync(path.join(work, 'etc'));
  fs.writeFileSync(path.join(work, 'etc', 'motd'), 'hello\n');
  server = await start(work);
  s = await mountSession(server, work);
});

afterAll(async () => {
  await s?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('warm paths make no file-system call', () => {
  it('10,000 GETATTRs of a warm file', async () => {
    const f = await fh('etc/motd');
    expect((await s.nfs.getattr(f)).status).toBe(NfsStat.OK);
    const hitsBefore = server.stores[0].attrs.counters.hits;
    const before = totalFsCalls();
    const lstatBefore = fsCallCounts.lstat;
    expect(await repeat(10_000, 100, () => s.nfs.getattr(f))).toBe(10_000);
    expect(fsCallCounts.lstat - lstatBefore).toBe(0);
    expect(totalFsCalls() - before).toBe(0);
    expect(server.stores[0].attrs.counters.hits - hitsBefore).toBeGreaterThanOrEqual(10_000);
    expect((await s.nfs.getattr(f)).attr!.size).toBe(6);
  });

  it('10,000 LOOKUPs and 10,000 ACCESS calls of warm names', async () => {
    const etc = await fh('etc');
    expect((await s.nfs.lookup(etc, 'motd')).status).toBe(NfsStat.OK);
    const before = totalFsCalls();
    expect(await repeat(10_000, 100, () => s.nfs.lookup(etc, 'motd'))).toBe(10_000);
    expect(await repeat(10_000, 100, () => s.nfs.access(etc, Access.READ | Access.LOOKUP))).toBe(10_000);
    expect(totalFsCalls() - before).toBe(0);
    const r = await s.nfs.lookup(etc, 'motd');
    expect(r.objAttr!.size).toBe(6);
    expect((await s.nfs.access(r.fh!, Access.READ)).access).toBe(Access.READ);
  });

  it('1,000 LOOKUPs of a name missing from a listed directory: NOENT without a call, until it appears', async () => {
    const etc = await fh('etc');
    await s.nfs.readdirAll(etc);
    expect((await s.nfs.lookup(etc, 'ld.so.preload')).status).toBe(NfsStat.NOENT);
    const before = totalFsCalls();
    const answers = await Promise.all(Array.from({ length: 1000 }, () => s.nfs.lookup(etc, 'ld.so.preload')));
    expect(answers.every((r) => r.status === NfsStat.NOENT)).toBe(true);
    expect(totalFsCalls() - before).toBe(0);
    // Created behind our back: the watcher drops the listing and the name resolves.
    fs.writeFileSync(path.join(work, 'etc', 'ld.so.preload'), '');
    let status: number = NfsStat.NOENT;
    for (const until = Date.now() + 20_000; status !== NfsStat.OK && Date.now() < until; ) {
      status = (await s.nfs.lookup(etc, 'ld.so.preload')).status;
      if (status !== NfsStat.OK) await new Promise((r) => setTimeout(r, 10));
    }
    expect(status).toBe(NfsStat.OK);
  });
});

describe('bounds', () => {
  it('a cache of 16 entries evicts and still answers every object correctly', async () => {
    const root = fs.mkdtempSync(path.join(work, 'small-'));
    for (let i = 0; i < 64; i++) fs.writeFileSync(path.join(root, `f${i}`), 'x'.repeat(i));
    const small = await start(root, { attrEntries: 16 });
    const t = await mountSession(small, root);
    try {
      const handles: Buffer[] = [];
      for (let i = 0; i < 64; i++) {
        const r = await t.nfs.lookup(t.root, `f${i}`);
        expect(r.status).toBe(NfsStat.OK);
        handles.push(r.fh!);
      }
      const c = small.stores[0].attrs.counters;
      expect(c.entries).toBeLessThanOrEqual(16);
      expect(c.evictions).toBeGreaterThanOrEqual(64 - 16);
      // Evicted objects come back from the file system, with the right attributes.
      const before = fsCallCounts.lstat;
      for (let i = 0; i < 64; i++) expect((await t.nfs.getattr(handles[i])).attr!.size).toBe(i);
      expect(fsCallCounts.lstat - before).toBeGreaterThan(0);
      expect(c.entries).toBeLessThanOrEqual(16);
    } finally {
      await t.close();
      await small.stop();
    }
  });
});

describe('our own changes are seen by the next call', () => {
  let dir: Buffer;
  let main: { server: ClusterNfsServer; s: Session };
  beforeAll(async () => {
    // No inotify and an hour of trust: only the store's own invalidation can make these pass.
    main = { server, s };
    server = await start(work, { watchMax: 0, ttlMs: 3_600_000 });
    s = await mountSession(server, work);
    const r = await s.nfs.mkdir(s.root, 'own', { mode: 0o755 });
    expect(r.status).toBe(NfsStat.OK);
    dir = r.fh!;
  });
  afterAll(async () => {
    await s.close();
    await server.stop();
    ({ server, s } = main);
  });

  /** Warms GETATTR of `f` and LOOKUP of `name` in `dir`, so a stale cache would answer next. */
  async function warm(f: Buffer | null, name: string): Promise<void> {
    if (f !== null) await s.nfs.getattr(f);
    await s.nfs.getattr(dir);
    await s.nfs.lookup(dir, name);
  }

  it('WRITE: size and content', async () => {
    const c = await s.nfs.create(dir, 'w', { mode: 0o644 });
    await warm(c.fh, 'w');
    await s.nfs.read(c.fh!, 0, 100);
    expect((await s.nfs.write(c.fh!, 0, Buffer.from('new data'), StableHow.UNSTABLE)).status).toBe(NfsStat.OK);
    expect((await s.nfs.getattr(c.fh!)).attr!.size).toBe(8);
    expect((await s.nfs.lookup(dir, 'w')).objAttr!.size).toBe(8);
    expect((await s.nfs.read(c.fh!, 0, 100)).data.toString()).toBe('new data');
  });

  it('SETATTR: mode, size and times', async () => {
    const c = await s.nfs.create(dir, 'sa', { mode: 0o644 });
    await warm(c.fh, 'sa');
    expect((await s.nfs.setattr(c.fh!, { mode: 0o600, size: 3, mtime: { sec: 1000, nsec: 0 } })).status).toBe(NfsStat.OK);
    const a = (await s.nfs.getattr(c.fh!)).attr!;
    expect(a.mode).toBe(0o600);
    expect(a.size).toBe(3);
    expect(a.mtime.sec).toBe(1000);
    expect((await s.nfs.lookup(dir, 'sa')).objAttr!.mode).toBe(0o600);
  });

  it('CREATE, MKDIR, SYMLINK, MKNOD: the name appears and the directory changes', async () => {
    const makers: [string, () => Promise<{ status: number; fh: Buffer | null }>][] = [
      ['nc', () => s.nfs.create(dir, 'nc', { mode: 0o644 }, CreateMode.GUARDED)],
      ['nd', () => s.nfs.mkdir(dir, 'nd', { mode: 0o755 })],
      ['nl', () => s.nfs.symlink(dir, 'nl', 'target')],
      ['nf', () => s.nfs.mknod(dir, 'nf', FType.FIFO, { mode: 0o644 })],
    ];
    for (const [name, make] of makers) {
      await warm(null, name);
      expect((await s.nfs.lookup(dir, name)).status, name).toBe(NfsStat.NOENT);
      await s.nfs.readdirAll(dir);
      expect((await make()).status, name).toBe(NfsStat.OK);
      expect((await s.nfs.lookup(dir, name)).status, name).toBe(NfsStat.OK);
      // The directory's attributes are the file system's now, not the cached ones.
      expect((await s.nfs.getattr(dir)).attr!.ctime, name).toEqual(nfsTime(fs.statSync(path.join(work, 'own'))));
      const names = (await s.nfs.readdirAll(dir)).entries.map((e) => e.name);
      expect(names, name).toContain(name);
    }
  });

  it('REMOVE and RMDIR: the name is gone, the old handle is STALE', async () => {
    const f = (await s.nfs.create(dir, 'rm', { mode: 0o644 })).fh!;
    const d = (await s.nfs.mkdir(dir, 'rmd', { mode: 0o755 })).fh!;
    await warm(f, 'rm');
    await warm(d, 'rmd');
    await s.nfs.readdirAll(dir);
    expect((await s.nfs.remove(dir, 'rm')).status).toBe(NfsStat.OK);
    expect((await s.nfs.rmdir(dir, 'rmd')).status).toBe(NfsStat.OK);
    expect((await s.nfs.lookup(dir, 'rm')).status).toBe(NfsStat.NOENT);
    expect((await s.nfs.lookup(dir, 'rmd')).status).toBe(NfsStat.NOENT);
    expect((await s.nfs.getattr(f)).status).toBe(NfsStat.STALE);
    expect((await s.nfs.getattr(d)).status).toBe(NfsStat.STALE);
    const names = (await s.nfs.readdirAll(dir)).entries.map((e) => e.name);
    expect(names).not.toContain('rm');
    expect(names).not.toContain('rmd');
  });

  it('RENAME: the old name is gone, the new one is the object, a replaced file is STALE', async () => {
    const a = (await s.nfs.create(dir, 'ra', { mode: 0o644 })).fh!;
    await s.nfs.write(a, 0, Buffer.from('from a'));
    const b = (await s.nfs.create(dir, 'rb', { mode: 0o644 })).fh!;
    await warm(a, 'ra');
    await warm(b, 'rb');
    expect((await s.nfs.rename(dir, 'ra', dir, 'rb')).status).toBe(NfsStat.OK);
    expect((await s.nfs.lookup(dir, 'ra')).status).toBe(NfsStat.NOENT);
    const rb = await s.nfs.lookup(dir, 'rb');
    expect(rb.fh!.equals(a)).toBe(true);
    expect(rb.objAttr!.size).toBe(6);
    expect((await s.nfs.getattr(b)).status).toBe(NfsStat.STALE);
    expect((await s.nfs.read(rb.fh!, 0, 100)).data.toString()).toBe('from a');
  });

  it('RENAME of a directory: objects below it keep working under the new path', async () => {
    const sub = (await s.nfs.mkdir(dir, 'rd', { mode: 0o755 })).fh!;
    const inner = (await s.nfs.create(sub, 'inner', { mode: 0o644 })).fh!;
    await s.nfs.write(inner, 0, Buffer.from('inside'));
    await s.nfs.getattr(inner);
    expect((await s.nfs.rename(dir, 'rd', s.root, 'rd-moved')).status).toBe(NfsStat.OK);
    expect((await s.nfs.read(inner, 0, 100)).data.toString()).toBe('inside');
    expect((await s.nfs.lookupPath(s.root, 'rd-moved/inner')).fh!.equals(inner)).toBe(true);
  });

  it('LINK: nlink goes up on the next GETATTR, the new name resolves', async () => {
    const f = (await s.nfs.create(dir, 'lk', { mode: 0o644 })).fh!;
    await warm(f, 'lk');
    expect((await s.nfs.getattr(f)).attr!.nlink).toBe(1);
    expect((await s.nfs.link(f, dir, 'lk2')).status).toBe(NfsStat.OK);
    expect((await s.nfs.getattr(f)).attr!.nlink).toBe(2);
    expect((await s.nfs.lookup(dir, 'lk2')).fh!.equals(f)).toBe(true);
  });

  it('COMMIT after UNSTABLE writes: GETATTR shows the written size', async () => {
    const f = (await s.nfs.create(dir, 'cm', { mode: 0o644 })).fh!;
    await warm(f, 'cm');
    await s.nfs.write(f, 0, Buffer.alloc(5000, 1), StableHow.UNSTABLE);
    expect((await s.nfs.commit(f)).status).toBe(NfsStat.OK);
    expect((await s.nfs.getattr(f)).attr!.size).toBe(5000);
  });
});
