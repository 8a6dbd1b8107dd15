import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AttrCache } from '../../src/cache/attr-cache.js';
import type { FsNode } from '../../src/store/export-store.js';

let dir: string;
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function filled(n: number): FsNode[] {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-hot-'));
  const nodes: FsNode[] = [];
  for (let i = 0; i < n; i++) {
    const rel = `f${i}`;
    fs.writeFileSync(path.join(dir, rel), 'x'.repeat(i));
    const stats = fs.lstatSync(path.join(dir, rel));
    nodes.push({ ino: stats.ino, birth: Math.round(stats.birthtimeMs * 1000), rel, stats });
  }
  return nodes;
}

describe('AttrCache hot set', () => {
  it('keeps no node of a one-pass scan, only the attributes', () => {
    const nodes = filled(200);
    const cache = new AttrCache({ maxEntries: 1000, maxBytes: 1 << 20, hotNodes: 64 });
    const until = Date.now() + 60_000;
    for (const n of nodes) cache.store(n, until, 0);
    expect(cache.size).toBe(200);
    expect(cache.hotSize).toBe(0);
    // The attributes are all there, rebuilt from the slot, not the lstat's object.
    for (const n of nodes) {
      const slot = cache.probe(n.ino, n.birth, Date.now());
      expect(slot).toBeGreaterThanOrEqual(0);
      expect(cache.hotNode(slot, 0)).toBeUndefined();
      const again = cache.materialize(slot, n.ino, n.rel, 0);
      expect(again).not.toBe(n);
      expect(again.stats.size).toBe(n.stats.size);
      expect(again.stats.mtimeMs).toBe(n.stats.mtimeMs);
      expect(again.stats.isFile()).toBe(true);
    }
    // Hit once (a LOOKUP then one GETATTR, as in a scan): still not kept.
    expect(cache.hotSize).toBe(0);
    for (const n of nodes) cache.materialize(cache.probe(n.ino, n.birth, Date.now()), n.ino, n.rel, 0);
    // Hit twice: hot, up to the ring's size.
    expect(cache.hotSize).toBe(64);
  });

  it('serves a second hit from the hot node and refreshes it on a new fill', () => {
    const [a] = filled(1);
    const cache = new AttrCache({ maxEntries: 1000, maxBytes: 1 << 20, hotNodes: 64 });
    const until = Date.now() + 60_000;
    cache.store(a, until, 0);
    const slot = cache.probe(a.ino, a.birth, Date.now());
    cache.materialize(slot, a.ino, a.rel, 0);
    const hot = cache.materialize(slot, a.ino, a.rel, 0);
    expect(cache.hotNode(cache.probe(a.ino, a.birth, Date.now()), 0)).toBe(hot);
    fs.writeFileSync(path.join(dir, a.rel), 'longer');
    const stats = fs.lstatSync(path.join(dir, a.rel));
    const fresh: FsNode = { ...a, stats };
    cache.store(fresh, until, 0);
    const now = cache.hotNode(cache.probe(a.ino, a.birth, Date.now()), 0);
    expect(now).toBe(fresh);
    expect(now!.stats.size).toBe(6);
    expect(cache.hotSize).toBe(1);
  });

  it('forgets that a slot was hit when the slot is reused for another object', () => {
    const [a, b] = filled(2);
    const cache = new AttrCache({ maxEntries: 1000, maxBytes: 1 << 20, hotNodes: 64 });
    const until = Date.now() + 60_000;
    cache.store(a, until, 0);
    const slot = cache.probe(a.ino, a.birth, Date.now());
    cache.materialize(slot, a.ino, a.rel, 0);
    cache.delete(a.ino);
    cache.store(b, until, 0);
    const reused = cache.probe(b.ino, b.birth, Date.now());
    expect(reused).toBe(slot);
    // b's first hit: not hot, although a was hit once in this slot before.
    cache.materialize(reused, b.ino, b.rel, 0);
    expect(cache.hotSize).toBe(0);
    cache.materialize(reused, b.ino, b.rel, 0);
    expect(cache.hotSize).toBe(1);
  });
});
