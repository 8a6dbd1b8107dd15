/**
 * What keeping the cache coherent with inotify costs on a root image of 100,000 files.
 *
 *   npm run build && node --expose-gc dist/bench/watch-cost.js [files] [filesPerDir]
 *
 * Builds a tree (default 100,000 files, 20 per directory, directories 100 to a parent), then
 *   1. watches every directory with DirWatcher alone: watch count, time, RSS and kernel watches;
 *   2. serves the tree through an ExportStore the way a boot storm warms it (LOOKUP of every
 *      directory, listing of each, so every file's attributes are cached): time, RSS, watches;
 *   3. changes 1,000 files behind the store's back (chmod) and measures how long until every
 *      one of them is gone from the cache (the visibility the watcher gives), and the events seen.
 * Prints one JSON line and a summary. The tree is removed afterwards.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DirWatcher } from '../src/cache/dir-watcher.js';
import { ExportStore, type FsNode } from '../src/store/export-store.js';
import { birthMicros } from '../src/nfs/filehandle.js';

const FILES = Number(process.argv[2] ?? 100_000);
const PER_DIR = Number(process.argv[3] ?? 20);
const DIRS_PER_PARENT = 100;

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) for (let i = 0; i < 3; i++) g();
}

function rssMB(): number {
  gc();
  return Math.round(process.memoryUsage().rss / 1048576);
}

/** Watches held by this process, from /proc (each inotify fd lists its watches). */
function kernelWatches(): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fdinfo')) {
    try {
      n += fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n').filter((l) => l.startsWith('inotify wd:')).length;
    } catch {
      // the fd closed meanwhile
    }
  }
  return n;
}

function buildTree(root: string): string[] {
  const dirs: string[] = [];
  const nDirs = Math.ceil(FILES / PER_DIR);
  let made = 0;
  for (let d = 0; d < nDirs; d++) {
    const rel = path.join(`top${Math.floor(d / DIRS_PER_PARENT)}`, `dir${d}`);
    fs.mkdirSync(path.join(root, rel), { recursive: true });
    dirs.push(rel);
    for (let f = 0; f < PER_DIR && made < FILES; f++, made++) fs.closeSync(fs.openSync(path.join(root, rel, `file${f}`), 'w'));
  }
  return dirs;
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-watchcost-'));
  try {
    let t = performance.now();
    const dirs = buildTree(root);
    const tops = [...new Set(dirs.map((d) => d.split('/')[0]))];
    const allDirs = ['', ...tops, ...dirs];
    const buildMs = Math.round(performance.now() - t);
    const rss0 = rssMB();

    // 1. Watches alone.
    const watcher = new DirWatcher(1_000_000, () => {});
    t = performance.now();
    let ino = 1;
    for (const d of allDirs) watcher.watch(ino++, Buffer.from(path.join(root, d)).toString('latin1'));
    const watchAllMs = Math.round(performance.now() - t);
    const rssWatched = rssMB();
    const watchesAlone = { watches: watcher.size, kernelWatches: kernelWatches(), ms: watchAllMs, rssMB: rssWatched - rss0, bytesPerWatch: Math.round(((rssWatched - rss0) * 1048576) / watcher.size) };
    watcher.close();
    await new Promise((r) => setTimeout(r, 200));
    const rss1 = rssMB();

    // 2. A store warmed like a boot storm: every directory looked up and listed.
    const store = await ExportStore.open(1, root, { stateDir: null });
    t = performance.now();
    const nodes = new Map<string, FsNode>([['', await store.rootNode()]]);
    for (const d of [...tops, ...dirs]) {
      const parent = nodes.get(path.dirname(d) === '.' ? '' : path.dirname(d))!;
      nodes.set(d, await store.lookup(parent, Buffer.from(path.basename(d)).toString('latin1')));
    }
    for (const d of dirs) await store.listing(nodes.get(d)!);
    const warmMs = Math.round(performance.now() - t);
    const rssWarm = rssMB();
    const warm = { watches: store.watcher.size, kernelWatches: kernelWatches(), cachedAttrs: store.attrs.size, ms: warmMs, rssMB: rssWarm - rss1, failures: store.watcher.failures };

    // 3. 1,000 files chmod'ed behind our back: time until all are dropped from the cache.
    const changed = dirs.slice(0, 1000).map((d) => path.join(root, d, 'file0'));
    const inos = changed.map((p) => fs.lstatSync(p));
    const cachedBefore = inos.filter((st) => store.attrs.probe(st.ino, birthMicros(st.birthtimeMs), Date.now()) >= 0).length;
    const eventsBefore = store.watcher.events;
    t = performance.now();
    for (const p of changed) fs.chmodSync(p, 0o600);
    const chmodMs = performance.now() - t;
    let stillCached = cachedBefore;
    const deadline = Date.now() + 10_000;
    while (stillCached > 0 && Date.now() < deadline) {
      await new Promise((r) => setImmediate(r));
      stillCached = inos.filter((st) => store.attrs.birthOf(st.ino) >= 0).length;
    }
    const visibleMs = Math.round(performance.now() - t);
    const change = { files: changed.length, cachedBefore, stillCachedAfter: stillCached, chmodMs: Math.round(chmodMs), allDroppedAfterMs: visibleMs, events: store.watcher.events - eventsBefore };
    await store.close();

    const out = { files: FILES, directories: allDirs.length, buildMs, rssStartMB: rss0, watchesAlone, warm, change };
    console.log(JSON.stringify(out));
    console.log(
      `${FILES} files in ${allDirs.length} directories: watching all takes ${watchAllMs} ms, ${watchesAlone.kernelWatches} kernel watches, ` +
        `~${watchesAlone.bytesPerWatch} bytes RSS each; a warmed store holds ${warm.watches} watches and ${warm.cachedAttrs} attributes ` +
        `(${warm.rssMB} MB more, warmed in ${warmMs} ms); 1,000 chmods behind our back all dropped ${visibleMs} ms after the first (${change.events} events).`,
    );
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

void main();
