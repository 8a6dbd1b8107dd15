/**
 * Memory of the attribute cache with N cached objects (issue 6: RSS ≤ 300 MB at 1,000,000).
 *
 *   npm run build && node --expose-gc dist/bench/cache-rss.js [N]
 *
 * Fills the structures a server holds after N distinct LOOKUPs — the handle index row
 * (ino → birth, parent, name, found by inode and by name), the attribute slot, the index's path cache
 * (its 100k cap) and the hot materialized nodes (16k) — through their real classes, in a tree
 * shaped like a root image (directories of 200 names), with fs.Stats-shaped values that vary like
 * real ones (heap numbers for times and sizes). No files are created: a million real files would
 * measure tmpfs, not us. Prints RSS before and after, and bytes per entry.
 */
import { AttrCache } from '../src/cache/attr-cache.js';
import type { FsNode } from '../src/store/export-store.js';
import { HandleIndex } from '../src/store/handle-index.js';
import { DEFAULT_CACHE_OPTIONS } from '../src/cache/options.js';

const N = Number(process.argv[2] ?? 1_000_000);
const PER_DIR = 200;
const ROOT = 2;

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) for (let i = 0; i < 3; i++) g();
}

function mb(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}

async function main(): Promise<void> {
  gc();
  const before = process.memoryUsage();
  const index = await HandleIndex.open(null, ROOT);
  const cache = new AttrCache({ maxEntries: Math.max(N, DEFAULT_CACHE_OPTIONS.attrEntries), maxBytes: 1024 * 1024 * 1024 });
  const t0 = performance.now();
  const now = Date.now();
  let ino = 1000;
  let dir = ROOT;
  for (let i = 0; i < N; i++) {
    if (i % PER_DIR === 0) {
      // A new directory, itself a child of the root.
      dir = ino++;
      index.set(dir, 1_700_000_000_000_000 + dir, ROOT, `dir${dir}`);
    }
    // Flat strings, as names decoded from a request or a readdir are.
    const name = Buffer.from(`lib${i % 97}-${i.toString(36)}.so.${i % 7}`, 'latin1').toString('latin1');
    const child = ino++;
    const birth = 1_700_000_000_000_000 + child * 3;
    index.set(child, birth, dir, name);
    const mtime = 1_700_000_000_000 + (i % 100_000) + 0.123456;
    const stats = {
      dev: 2049, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096, ino: child,
      size: 1000 + (i % 50_000), blocks: 8, atimeMs: mtime + 5, mtimeMs: mtime, ctimeMs: mtime + 1, birthtimeMs: birth / 1000,
    } as unknown as FsNode['stats'];
    const node: FsNode = { ino: child, birth, rel: '', stats };
    cache.store(node, now + 60_000, 0);
  }
  // The path cache and the hot nodes fill up to their caps on a working server.
  for (let i = 0; i < Math.min(N, 100_000); i++) index.relPath(1001 + i + Math.floor(i / PER_DIR));
  for (let i = 0; i < Math.min(N, 16_384); i++) {
    const child = 1001 + i + Math.floor(i / PER_DIR);
    const slot = cache.probe(child, -1, now);
    if (slot >= 0) cache.materialize(slot, child, index.relPath(child) ?? '', 0);
  }
  const fillMs = performance.now() - t0;
  gc();
  const after = process.memoryUsage();
  const perEntry = (after.rss - before.rss) / N;
  const out = {
    entries: cache.size,
    indexEntries: index.size,
    fillMs: Math.round(fillMs),
    rssBeforeMB: Number(mb(before.rss)),
    rssAfterMB: Number(mb(after.rss)),
    heapUsedMB: Number(mb(after.heapUsed)),
    heapTotalMB: Number(mb(after.heapTotal)),
    arrayBuffersMB: Number(mb(after.arrayBuffers)),
    bytesPerEntry: Math.round(perEntry),
  };
  console.log(JSON.stringify(out));
  console.log(`${N} cached objects: RSS ${out.rssAfterMB} MB (${out.rssBeforeMB} MB at start), ${out.bytesPerEntry} bytes per object (index + attributes + names)`);
}

void main();
