/**
 * The backing store of one export: turns handles into validated file-system objects, looks names
 * up, lists directories and reads data — always below the export root, never through a symlink.
 *
 * Every object is reached by a path built from names we looked up ourselves with lstat, and is
 * re-checked (inode and birth time) whenever it is reached through a handle, so a handle can only
 * name something inside this export, and a file replaced under the same name reads as STALE.
 */
import type fs from 'node:fs';
import { LRUCache } from 'lru-cache';
import { componentLogger } from '../log/logger.js';
import { NfsStat } from '../nfs/constants.js';
import { NfsError } from '../nfs/errors.js';
import { birthMicros, encodeHandle, type HandleFields } from '../nfs/filehandle.js';
import * as fsops from './fsops.js';
import { HandleIndex } from './handle-index.js';
import { OpenFileCache } from './open-files.js';
import { listingCookie } from './cookies.js';

const log = componentLogger('store');

export interface FsNode {
  ino: number;
  birth: number;
  /** Path below the export root as a byte string; '' is the root. */
  rel: string;
  stats: fs.Stats;
}

export interface ListingEntry {
  name: string;
  ino: number;
  cookieHi: number;
  cookieLo: number;
}

export interface DirListing {
  /** Directory mtime/ctime the listing was read at: a changed directory is read again. */
  mtimeMs: number;
  ctimeMs: number;
  /** Sorted by cookie, '.' and '..' first. */
  entries: ListingEntry[];
}

export interface StoreOptions {
  /** State directory for this export's handle index; null keeps it in memory. */
  stateDir: string | null;
  /** How long a completed walk of the export answers "not found" for unknown handles. */
  walkFreshMs?: number;
  /** Most entries one walk visits. */
  walkMaxEntries?: number;
}

export class ExportStore {
  readonly fsid: number;
  /** Export root as a byte string (absolute). */
  readonly root: string;
  private rootIno = 0;
  private rootBirth = 0;
  private rootDev = 0;
  private index!: HandleIndex;
  private readonly openFiles = new OpenFileCache();
  private readonly listings = new LRUCache<number, DirListing>({ max: 1024 });
  private walking: Promise<void> | null = null;
  private lastWalkDone = 0;
  private readonly walkFreshMs: number;
  private readonly walkMaxEntries: number;

  private constructor(fsid: number, rootPath: string, opts: StoreOptions) {
    this.fsid = fsid;
    this.root = Buffer.from(rootPath, 'utf8').toString('latin1');
    this.walkFreshMs = opts.walkFreshMs ?? 5000;
    this.walkMaxEntries = opts.walkMaxEntries ?? 2_000_000;
  }

  static async open(fsid: number, rootPath: string, opts: StoreOptions): Promise<ExportStore> {
    const store = new ExportStore(fsid, rootPath, opts);
    const st = await fsops.lstat(store.root);
    if (!st.isDirectory()) throw new Error(`export root ${rootPath} is not a directory`);
    store.rootIno = st.ino;
    store.rootBirth = birthMicros(st.birthtimeMs);
    store.rootDev = st.dev;
    store.index = await HandleIndex.open(opts.stateDir, st.ino);
    return store;
  }

  abs(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }

  handleOf(node: FsNode): Buffer {
    return encodeHandle({ fsid: this.fsid, ino: node.ino, birth: node.birth });
  }

  rootHandle(): Buffer {
    return encodeHandle({ fsid: this.fsid, ino: this.rootIno, birth: this.rootBirth });
  }

  /**
   * The handle of the directory `below` the root (MNT of a subdirectory), looked up one
   * component at a time without following symlinks; null when it is not an existing directory.
   */
  async subdirHandle(below: readonly string[]): Promise<Buffer | null> {
    let node = await this.rootNode();
    for (const name of below) {
      if (name === '..' || name === '.' || name.includes('/')) return null;
      try {
        node = await this.lookup(node, Buffer.from(name, 'utf8').toString('latin1'));
      } catch {
        return null;
      }
      if (!node.stats.isDirectory()) return null;
    }
    return this.handleOf(node);
  }

  async rootNode(): Promise<FsNode> {
    const stats = await fsops.lstat(this.root);
    return { ino: stats.ino, birth: birthMicros(stats.birthtimeMs), rel: '', stats };
  }

  /** Resolves a decoded handle of this export; NFS3ERR_STALE when the object is gone. */
  async resolve(fh: HandleFields): Promise<FsNode> {
    const node = await this.tryIndexed(fh);
    if (node !== null) return node;
    if (this.index.get(fh.ino)?.birth === fh.birth && (await this.relocate(fh.ino))) {
      const moved = await this.tryIndexed(fh);
      if (moved !== null) return moved;
    }
    const found = await this.findByWalk(fh);
    if (found === null) throw new NfsError(NfsStat.STALE, `no object with inode ${fh.ino}`);
    return found;
  }

  private async tryIndexed(fh: HandleFields): Promise<FsNode | null> {
    let rel: string | null;
    if (fh.ino === this.rootIno) rel = '';
    else {
      const e = this.index.get(fh.ino);
      if (e === undefined || e.birth !== fh.birth) return null;
      rel = this.index.relPath(fh.ino);
    }
    if (rel === null) return null;
    let stats: fs.Stats;
    try {
      stats = await fsops.lstat(this.abs(rel));
    } catch {
      return null;
    }
    if (stats.ino !== fh.ino || birthMicros(stats.birthtimeMs) !== fh.birth) return null;
    return { ino: stats.ino, birth: fh.birth, rel, stats };
  }

  /**
   * A known inode whose recorded path no longer leads to it: find the topmost ancestor that is
   * no longer where the index says and look for it, by inode and birth time, in its recorded
   * parent directory. That repairs renames in place at any depth (what rsync and admins do) at
   * the cost of one directory scan; moves across directories are left to the walk.
   */
  private async relocate(ino: number): Promise<boolean> {
    const chain: number[] = [];
    for (let cur = ino; cur !== this.rootIno; ) {
      const e = this.index.get(cur);
      if (e === undefined || chain.length > 4096) return false;
      chain.push(cur);
      cur = e.parent;
    }
    for (let i = chain.length - 1; i >= 0; i--) {
      const a = chain[i];
      const e = this.index.get(a)!;
      const rel = this.index.relPath(a);
      if (rel !== null) {
        const st = await fsops.lstat(this.abs(rel)).catch(() => null);
        if (st !== null && st.ino === a && birthMicros(st.birthtimeMs) === e.birth) continue;
      }
      const parentRel = this.index.relPath(e.parent);
      if (parentRel === null) return false;
      const names = await fsops.readdir(this.abs(parentRel)).catch(() => [] as string[]);
      let found = false;
      for (let j = 0; j < names.length && !found; j += 64) {
        const batch = names.slice(j, j + 64);
        const stats = await Promise.all(batch.map((n) => fsops.lstat(this.abs(parentRel === '' ? n : `${parentRel}/${n}`)).catch(() => null)));
        for (let k = 0; k < batch.length; k++) {
          const st = stats[k];
          if (st !== null && st.ino === a && birthMicros(st.birthtimeMs) === e.birth) {
            this.index.set(a, e.birth, e.parent, batch[k]);
            found = true;
            break;
          }
        }
      }
      if (!found) return false;
    }
    return true;
  }

  /**
   * An unknown or moved inode: walk the export once (shared by all callers that arrive while it
   * runs), indexing what it sees, then try the index again. A walk that finished recently answers
   * for it, so a burst of handles to deleted files costs one walk, not one each.
   */
  private async findByWalk(fh: HandleFields): Promise<FsNode | null> {
    if (this.walking === null && Date.now() - this.lastWalkDone > this.walkFreshMs) {
      this.walking = this.walk().finally(() => {
        this.walking = null;
        this.lastWalkDone = Date.now();
      });
    }
    if (this.walking !== null) await this.walking;
    return this.tryIndexed(fh);
  }

  private async walk(): Promise<void> {
    const started = Date.now();
    let visited = 0;
    const queue: { rel: string; ino: number }[] = [{ rel: '', ino: this.rootIno }];
    while (queue.length > 0 && visited < this.walkMaxEntries) {
      const dir = queue.pop()!;
      let names: string[];
      try {
        names = await fsops.readdir(this.abs(dir.rel));
      } catch {
        continue;
      }
      for (let i = 0; i < names.length && visited < this.walkMaxEntries; i += 32) {
        const batch = names.slice(i, i + 32);
        const stats = await Promise.all(
          batch.map((name) => fsops.lstat(this.abs(dir.rel === '' ? name : `${dir.rel}/${name}`)).catch(() => null)),
        );
        for (let j = 0; j < batch.length; j++) {
          const st = stats[j];
          if (st === null) continue;
          visited++;
          const rel = dir.rel === '' ? batch[j] : `${dir.rel}/${batch[j]}`;
          this.index.set(st.ino, birthMicros(st.birthtimeMs), dir.ino, batch[j]);
          // Other file systems mounted inside the export are not part of it.
          if (st.isDirectory() && st.dev === this.rootDev) queue.push({ rel, ino: st.ino });
        }
      }
    }
    log.info({ root: this.root, visited, ms: Date.now() - started, complete: queue.length === 0 }, 'walked export to find handles');
  }

  /** LOOKUP of one name in `dir` (already resolved and known to be a directory). */
  async lookup(dir: FsNode, name: string): Promise<FsNode> {
    if (name === '.') return dir;
    if (name === '..') {
      // The export root is its own parent: nothing above it is reachable.
      if (dir.rel === '') return dir;
      const slash = dir.rel.lastIndexOf('/');
      const rel = slash < 0 ? '' : dir.rel.slice(0, slash);
      const stats = await fsops.lstat(this.abs(rel));
      return { ino: stats.ino, birth: birthMicros(stats.birthtimeMs), rel, stats };
    }
    const rel = dir.rel === '' ? name : `${dir.rel}/${name}`;
    const stats = await fsops.lstat(this.abs(rel));
    const birth = birthMicros(stats.birthtimeMs);
    this.index.set(stats.ino, birth, dir.ino, name);
    return { ino: stats.ino, birth, rel, stats };
  }

  /** lstat of a child for READDIRPLUS; null when it vanished between listing and now. */
  async child(dir: FsNode, name: string): Promise<FsNode | null> {
    try {
      return await this.lookup(dir, name);
    } catch {
      return null;
    }
  }

  async readlink(node: FsNode): Promise<Buffer> {
    return fsops.readlink(this.abs(node.rel));
  }

  /** Reads up to `count` bytes; `eof` is true when the read reached the end of the file. */
  async read(node: FsNode, offset: number, count: number): Promise<{ data: Buffer; eof: boolean }> {
    const size = node.stats.size;
    if (offset >= size || count === 0) return { data: Buffer.alloc(0), eof: offset >= size };
    const want = Math.min(count, size - offset);
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    await this.openFiles.withFile(this.abs(node.rel), node.ino, node.birth, async (fd) => {
      // A short read before the size we saw means the file shrank; stop there.
      while (got < want) {
        const n = await fsops.read(fd, buf, got, want - got, offset + got);
        if (n === 0) break;
        got += n;
      }
    });
    const data = got === want ? buf : buf.subarray(0, got);
    return { data, eof: offset + got >= size || got < want };
  }

  /** The directory's entries with stable cookies, read again only when the directory changed. */
  async listing(dir: FsNode): Promise<DirListing> {
    const cached = this.listings.get(dir.ino);
    if (cached !== undefined && cached.mtimeMs === dir.stats.mtimeMs && cached.ctimeMs === dir.stats.ctimeMs) return cached;
    const names = await fsops.readdir(this.abs(dir.rel));
    const entries: ListingEntry[] = [];
    const parentIno = dir.rel === '' ? dir.ino : (this.index.get(dir.ino)?.parent ?? dir.ino);
    entries.push({ name: '.', ino: dir.ino, cookieHi: 0, cookieLo: 1 });
    entries.push({ name: '..', ino: parentIno, cookieHi: 0, cookieLo: 2 });
    for (let i = 0; i < names.length; i += 64) {
      const batch = names.slice(i, i + 64);
      const stats = await Promise.all(batch.map((name) => fsops.lstat(this.abs(dir.rel === '' ? name : `${dir.rel}/${name}`)).catch(() => null)));
      for (let j = 0; j < batch.length; j++) {
        const st = stats[j];
        if (st === null) continue;
        const c = listingCookie(batch[j]);
        entries.push({ name: batch[j], ino: st.ino, cookieHi: c.hi, cookieLo: c.lo });
        this.index.set(st.ino, birthMicros(st.birthtimeMs), dir.ino, batch[j]);
      }
    }
    entries.sort((a, b) => a.cookieHi - b.cookieHi || a.cookieLo - b.cookieLo);
    // Two names with the same 63-bit hash would share a cookie; nudge the later one so every
    // cookie names exactly one position.
    for (let i = 1; i < entries.length; i++) {
      const p = entries[i - 1];
      const e = entries[i];
      if (e.cookieHi === p.cookieHi && e.cookieLo <= p.cookieLo) {
        e.cookieLo = p.cookieLo + 1;
        if (e.cookieLo > 0xffffffff) {
          e.cookieLo = 0;
          e.cookieHi = p.cookieHi + 1;
        }
      }
    }
    const listing: DirListing = { mtimeMs: dir.stats.mtimeMs, ctimeMs: dir.stats.ctimeMs, entries };
    this.listings.set(dir.ino, listing);
    return listing;
  }

  async statfs(): Promise<fs.StatsFs> {
    return fsops.statfs(this.root);
  }

  async close(): Promise<void> {
    this.openFiles.closeAll();
    await this.index.flush();
  }

  flushSync(): void {
    this.index.flushSync();
  }
}
