/**
 * The backing store of one export: turns handles into validated file-system objects, looks names
 * up, lists directories and reads data — always below the export root, never through a symlink.
 *
 * Every object is reached by a path built from names we looked up ourselves with lstat, and is
 * re-checked (inode and birth time) whenever it is reached through a handle, so a handle can only
 * name something inside this export, and a file replaced under the same name reads as STALE.
 *
 * Attributes, names and listings are cached (src/cache, see its README): a GETATTR, ACCESS or
 * LOOKUP that hits makes no file-system call, our own changes drop the entries they touch before
 * the method returns, and changes made behind our back arrive through inotify watches on the
 * directories we cache (or, where a directory cannot be watched, a short TTL).
 */
import fs from 'node:fs';
import { LRUCache } from 'lru-cache';
import { componentLogger } from '../log/logger.js';
import { NfsStat } from '../nfs/constants.js';
import { NfsError } from '../nfs/errors.js';
import { birthMicros, encodeHandle, type HandleFields } from '../nfs/filehandle.js';
import * as fsops from './fsops.js';
import { payloadPool } from '../rpc/payload-pool.js';
import { HandleIndex } from './handle-index.js';
import { OpenFileCache } from './open-files.js';
import { listingCookie, listingHas, orderCookies } from './cookies.js';
import { makeNode } from './mknod.js';
import { AttrCache } from '../cache/attr-cache.js';
import { ContentCache } from '../cache/content-cache.js';
import { InFlight } from '../cache/in-flight.js';
import { newCounters, type CacheCounters } from '../cache/counters.js';
import { DirWatcher } from '../cache/dir-watcher.js';
import { DEFAULT_CACHE_OPTIONS, type CacheOptions } from '../cache/options.js';

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

/** Who a new object belongs to (the caller's identity after squashing). */
export interface Owner {
  uid: number;
  gid: number;
}

/** SETATTR's changes; null = leave as is. Times in seconds, or 'server' for the server's clock. */
export interface SetAttrs {
  mode: number | null;
  uid: number | null;
  gid: number | null;
  size: number | null;
  atime: number | 'server' | null;
  mtime: number | 'server' | null;
}

function verifierMatches(st: fs.Stats, verf: Buffer): boolean {
  return Math.floor(st.atimeMs / 1000) === verf.readUInt32BE(0) && Math.floor(st.mtimeMs / 1000) === verf.readUInt32BE(4);
}

export interface StoreOptions {
  /** State directory for this export's handle index; null keeps it in memory. */
  stateDir: string | null;
  /** How long a completed walk of the export answers "not found" for unknown handles. */
  walkFreshMs?: number;
  /** Most entries one walk visits. */
  walkMaxEntries?: number;
  /** Cache sizes and freshness; defaults in src/cache/options.ts. */
  cache?: Partial<CacheOptions>;
}

/** Buckets of the change counters that tell a fill it raced with a change (see fill()). */
const EPOCH_BUCKETS = 4096;

function listingBytes(l: DirListing): number {
  let n = 96;
  for (const e of l.entries) n += 56 + e.name.length;
  return n;
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
  private readonly writeFiles = new OpenFileCache(128, fs.constants.O_WRONLY);
  private readonly listings: LRUCache<number, DirListing>;
  /** Attributes by inode, and the name → child entries of cached objects. */
  readonly attrs: AttrCache;
  /** Whole small files and symlink targets, kept as true as the attributes (content-cache.ts). */
  readonly content: ContentCache;
  readonly listingCounters: CacheCounters;
  readonly watcher: DirWatcher;
  private readonly cacheOpts: CacheOptions;
  /** Data bytes READ and WRITE moved (the metrics read them). */
  bytesRead = 0;
  bytesWritten = 0;
  /** Of bytesRead, those sent straight from the file by the native addon (sendfile). */
  bytesSentFromFile = 0;
  /** Bumped by every change we see, per bucket of the parent directory's inode. */
  private readonly epochs = new Uint32Array(EPOCH_BUCKETS);
  /** lstats in flight by path, shared by the callers that miss meanwhile (see fill()). */
  private readonly filling = new InFlight<string, FsNode>();
  /** READLINKs and MKDIRs in flight, shared by the callers that ask meanwhile. */
  private readonly readingLinks = new InFlight<number, Buffer>();
  private readonly makingDirs = new Map<string, Promise<void>>();
  private walking: Promise<void> | null = null;
  private lastWalkDone = 0;
  private readonly walkFreshMs: number;
  private readonly walkMaxEntries: number;

  private constructor(fsid: number, rootPath: string, opts: StoreOptions) {
    this.fsid = fsid;
    this.root = Buffer.from(rootPath, 'utf8').toString('latin1');
    this.walkFreshMs = opts.walkFreshMs ?? 5000;
    this.walkMaxEntries = opts.walkMaxEntries ?? 2_000_000;
    const c = { ...DEFAULT_CACHE_OPTIONS, ...opts.cache };
    this.cacheOpts = c;
    this.attrs = new AttrCache({ maxEntries: c.attrEntries, maxBytes: c.attrBytes });
    this.content = new ContentCache(c.contentBytes, c.contentFileBytes);
    this.listingCounters = newCounters(() => this.listings.size);
    this.listings = new LRUCache<number, DirListing>({
      max: Math.max(1, c.listingEntries),
      maxSize: Math.max(1024, c.listingBytes),
      sizeCalculation: listingBytes,
      dispose: (_l, _ino, reason) => {
        if (reason === 'evict') this.listingCounters.evictions++;
        else if (reason === 'delete') this.listingCounters.invalidations++;
      },
    });
    this.watcher = new DirWatcher(c.watchMax, (dir, kind, name) => this.onDirEvent(dir, kind, name));
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
   * `lookup` looks a component up as a client would (remapped for a cluster node).
   */
  async subdirHandle(below: readonly string[], lookup: (dir: FsNode, name: string) => Promise<FsNode> = (d, n) => this.lookup(d, n)): Promise<Buffer | null> {
    let node = await this.rootNode();
    for (const name of below) {
      if (name === '..' || name === '.' || name.includes('/')) return null;
      try {
        node = await lookup(node, Buffer.from(name, 'utf8').toString('latin1'));
      } catch {
        return null;
      }
      if (!node.stats.isDirectory()) return null;
    }
    return this.handleOf(node);
  }

  async rootNode(): Promise<FsNode> {
    const cached = this.resolveCached({ fsid: this.fsid, ino: this.rootIno, birth: this.rootBirth });
    if (cached !== null) return cached;
    const node = await this.fill('', this.rootIno, '');
    if (node.ino !== this.rootIno) throw new NfsError(NfsStat.STALE, 'export root was replaced');
    return node;
  }

  // ---- the cache ---------------------------------------------------------------------------------

  /**
   * The object of a handle if its attributes are cached and trusted: no file-system call, no
   * promise. null means "ask resolve()" (or resolveMiss(), which skips this probe).
   */
  resolveCached(fh: HandleFields): FsNode | null {
    const slot = this.attrs.probe(fh.ino, fh.birth, Date.now());
    return slot < 0 ? null : this.nodeOf(slot, fh.ino);
  }

  private nodeOf(slot: number, ino: number): FsNode | null {
    const gen = this.index.pathGeneration;
    const hot = this.attrs.hotNode(slot, gen);
    if (hot !== undefined) return hot;
    const rel = ino === this.rootIno ? '' : this.index.relPath(ino);
    if (rel === null) {
      this.drop(ino);
      return null;
    }
    return this.attrs.materialize(slot, ino, rel, gen);
  }

  /** A LOOKUP answered from the cache, or null. */
  lookupCached(dir: FsNode, name: string): FsNode | null {
    if (name === '.') return dir;
    if (name === '..') {
      if (dir.rel === '') return dir;
      const parent = this.index.get(dir.ino)?.parent;
      if (parent === undefined) return null;
      const slot = this.attrs.probe(parent, -1, Date.now());
      return slot < 0 ? null : this.nodeOf(slot, parent);
    }
    const ino = this.index.childOf(dir.ino, name);
    if (ino < 0) {
      this.attrs.counters.misses++;
      return null;
    }
    const slot = this.attrs.probe(ino, -1, Date.now());
    return slot < 0 ? null : this.nodeOf(slot, ino);
  }

  private bucket(ino: number): number {
    return ino % EPOCH_BUCKETS;
  }

  private parentOf(ino: number): number {
    return ino === this.rootIno ? ino : (this.index.get(ino)?.parent ?? this.rootIno);
  }

  /** Watches a directory whose children we are about to cache; true when it is watched. */
  private watchDir(dirIno: number, dirRel: string): boolean {
    return this.watcher.watch(dirIno, this.abs(dirRel)) !== 'no';
  }

  /**
   * lstat of `rel`, a child of directory `parent` (at `parentRel`), remembered in the
   * cache unless something in that directory changed while the lstat ran (its result may then
   * predate the change whose invalidation already happened). The parent is watched before the
   * lstat, so no change after the lstat can go unseen; a directory's own watch is added after
   * we learn it is one, so its attributes are read once more after that.
   *
   * Callers that miss at once (a boot storm asking for one file from 64 nodes) share one lstat,
   * unless the directory changed since it started; restat() never shares (it must see our change).
   */
  private fill(rel: string, parent: number, parentRel: string): Promise<FsNode> {
    const b = this.bucket(parent);
    const epoch = this.epochs[b];
    return this.filling.joined(rel, epoch) ?? this.filling.start(rel, epoch, this.fillNow(rel, parent, parentRel));
  }

  private async fillNow(rel: string, parent: number, parentRel: string): Promise<FsNode> {
    const watched = this.watchDir(parent, parentRel);
    const b = this.bucket(parent);
    const epoch = this.epochs[b];
    const abs = this.abs(rel);
    let stats = await fsops.lstat(abs);
    let trusted = watched;
    if (stats.isDirectory()) {
      const self = this.watcher.watch(stats.ino, abs);
      if (self === 'new') stats = await fsops.lstat(abs);
      else if (self === 'no') trusted = false;
    }
    const node: FsNode = { ino: stats.ino, birth: birthMicros(stats.birthtimeMs), rel, stats };
    if (this.epochs[b] === epoch) this.remember(node, trusted);
    return node;
  }

  /** `ino` changed or went: its attributes and content are read again next time. */
  private drop(ino: number): void {
    this.attrs.delete(ino);
    this.content.delete(ino);
  }

  private remember(node: FsNode, trusted: boolean): void {
    const until = Date.now() + (trusted ? this.cacheOpts.maxAgeMs : this.cacheOpts.ttlMs);
    this.attrs.store(node, until, this.index.pathGeneration);
  }

  /** Our own change to `ino`: its attributes are read again next time. */
  private invalidate(ino: number): void {
    this.epochs[this.bucket(this.parentOf(ino))]++;
    this.drop(ino);
  }

  /** Our own change to directory `dir`'s entry `name` (and so its mtime): attributes and listing go. */
  private invalidateDir(dir: number, name: string): void {
    this.epochs[this.bucket(dir)]++;
    this.epochs[this.bucket(this.parentOf(dir))]++;
    this.drop(dir);
    this.listings.delete(dir);
    const child = this.index.childOf(dir, name);
    if (child >= 0) this.drop(child);
  }

  /**
   * inotify: `name` in directory `dir` was created, deleted, moved ('rename') or written,
   * chmod'ed ('change'); or `dir` itself changed. The directory's attributes and listing go,
   * and so does the child. A watched subdirectory that was moved or deleted takes the whole
   * attribute cache with it: the paths of everything below it may have changed, and the cache
   * does not know which of its entries lie below (rare in image updates; see README.md).
   */
  private onDirEvent(dir: number, kind: 'rename' | 'change', name: string): void {
    // The directory's own fill counts changes in its parent's bucket: a fill of its attributes
    // running now may have read the mtime from before this event.
    this.epochs[this.bucket(dir)]++;
    this.epochs[this.bucket(this.parentOf(dir))]++;
    this.drop(dir);
    this.listings.delete(dir);
    const child = this.index.childOf(dir, name);
    if (child < 0) return;
    const birth = this.attrs.birthOf(child);
    if (kind === 'rename' && child !== dir && this.watcher.isWatched(child)) {
      this.watcher.unwatch(child);
      this.listings.delete(child);
      for (let i = 0; i < EPOCH_BUCKETS; i++) this.epochs[i]++;
      this.attrs.clear();
      this.content.clear();
    }
    // A descriptor of a replaced or deleted file would keep serving the old content (a write
    // in place, ours included, leaves the inode and its descriptors valid).
    if (kind === 'rename') {
      this.openFiles.invalidate(child, birth);
      this.writeFiles.invalidate(child, birth);
    }
    this.drop(child);
  }

  // ---- handles -----------------------------------------------------------------------------------

  /** Resolves a decoded handle of this export; NFS3ERR_STALE when the object is gone. */
  async resolve(fh: HandleFields): Promise<FsNode> {
    return this.resolveCached(fh) ?? this.resolveMiss(fh);
  }

  /** resolve() for a caller that has just had resolveCached() answer null. */
  async resolveMiss(fh: HandleFields): Promise<FsNode> {
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
    let parent = this.rootIno;
    if (fh.ino === this.rootIno) rel = '';
    else {
      const e = this.index.get(fh.ino);
      if (e === undefined || e.birth !== fh.birth) return null;
      rel = this.index.relPath(fh.ino);
      parent = e.parent;
    }
    if (rel === null) return null;
    const parentRel = fh.ino === this.rootIno ? '' : parentPath(rel);
    let node: FsNode;
    try {
      node = await this.fill(rel, parent, parentRel);
    } catch {
      return null;
    }
    // Another file at that path now: what we cached about it is right, but not for this handle.
    if (node.ino !== fh.ino || node.birth !== fh.birth) return null;
    return node;
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
    return this.lookupCached(dir, name) ?? this.lookupMiss(dir, name);
  }

  /** lookup() for a caller that has just had lookupCached() answer null for this name. */
  async lookupMiss(dir: FsNode, name: string): Promise<FsNode> {
    if (name === '..') {
      // Not the root's '..' (lookupCached answers that: the root is its own parent).
      const rel = parentPath(dir.rel);
      const parent = this.index.get(dir.ino)?.parent ?? this.rootIno;
      if (parent === this.rootIno) return this.fill('', this.rootIno, '');
      const e = this.index.get(parent);
      return this.fill(rel, e?.parent ?? this.rootIno, parentPath(rel));
    }
    // A name missing from a watched directory's current listing does not exist: NOENT without an
    // lstat (boot storms look up many names that are not there, e.g. libraries along a path).
    const listing = this.listings.get(dir.ino);
    if (listing !== undefined && listing.mtimeMs === dir.stats.mtimeMs && listing.ctimeMs === dir.stats.ctimeMs && this.watcher.isWatched(dir.ino) && !listingHas(listing.entries, name)) {
      this.listingCounters.hits++;
      throw new NfsError(NfsStat.NOENT, 'not in the directory listing');
    }
    const rel = this.childRel(dir, name);
    const node = await this.fill(rel, dir.ino, dir.rel);
    this.index.set(node.ino, node.birth, dir.ino, name);
    return node;
  }

  /** lstat of a child for READDIRPLUS; null when it vanished between listing and now. */
  async child(dir: FsNode, name: string): Promise<FsNode | null> {
    try {
      return await this.lookup(dir, name);
    } catch {
      return null;
    }
  }

  readlink(node: FsNode): Promise<Buffer> {
    const known = this.content.linkTarget(node.ino, node.birth);
    if (known !== undefined) return Promise.resolve(known);
    // A boot storm's nodes READLINK the same link within the same millisecond: one call for all.
    return (
      this.readingLinks.joined(node.ino, node.birth) ??
      this.readingLinks.start(node.ino, node.birth, fsops.readlink(this.abs(node.rel)), (target) => this.content.rememberLink(node.ino, node.birth, target))
    );
  }

  /**
   * READ's data from memory without a promise (EOF is where the data reaches the file's size), or
   * null: the file is not held (or not as `node` says it is), or the READ is one read() answers
   * specially (past the end, count 0).
   */
  readCached(node: FsNode, offset: number, count: number): Buffer | null {
    const size = node.stats.size;
    if (offset >= size || count === 0 || !this.content.holds(size)) return null;
    const whole = this.content.current(node);
    if (whole === null) return null;
    const want = Math.min(count, size - offset);
    this.bytesRead += want;
    return whole.subarray(offset, offset + want);
  }

  /**
   * READ's bytes for `send` to take straight from the file (sendfile), for files not held in
   * memory: `send` gets the open descriptor, the byte count and EOF, and returns the send's
   * promise (the descriptor stays open until it settles) or null when it cannot take them now.
   * False when nothing was sent: the caller reads and replies as usual.
   */
  async sendFromFile(
    node: FsNode,
    offset: number,
    count: number,
    send: (fd: number, length: number, eof: boolean) => Promise<void> | null,
  ): Promise<boolean> {
    const size = node.stats.size;
    if (offset >= size || count === 0 || this.content.holds(size)) return false;
    const want = Math.min(count, size - offset);
    return this.openFiles.withFile(this.abs(node.rel), node.ino, node.birth, async (fd) => {
      const sending = send(fd, want, offset + want >= size);
      if (sending === null) return false;
      fsops.fsCallCounts.sendfile++;
      await sending;
      this.bytesRead += want;
      this.bytesSentFromFile += want;
      return true;
    });
  }

  /** Reads up to `count` bytes; `eof` is true when the read reached the end of the file. */
  async read(node: FsNode, offset: number, count: number): Promise<{ data: Buffer; eof: boolean }> {
    const size = node.stats.size;
    if (offset >= size || count === 0) return { data: Buffer.alloc(0), eof: offset >= size };
    const want = Math.min(count, size - offset);
    if (this.content.holds(size)) {
      const cached = this.content.file(node, () => this.loadWhole(node));
      const whole = cached instanceof Promise ? await cached : cached;
      if (whole !== null) {
        // A view of the cached file: the pool does not take it back, nothing writes to it.
        this.bytesRead += want;
        return { data: whole.subarray(offset, offset + want), eof: offset + want >= size };
      }
    }
    // Lent by the pool: the transport gives it back once the reply carrying it has been written.
    const buf = payloadPool.acquire(want);
    let got: number;
    try {
      got = await this.readInto(node, buf, offset);
    } catch (err) {
      payloadPool.release(buf);
      throw err;
    }
    const data = got === want ? buf : buf.subarray(0, got);
    this.bytesRead += got;
    return { data, eof: offset + got >= size || got < want };
  }

  /** The whole file, or null when it no longer had the size `node` says (it changed meanwhile). */
  private async loadWhole(node: FsNode): Promise<Buffer | null> {
    // Not from the READ pool: this Buffer is kept, and slices of it go out in many replies.
    const buf = Buffer.allocUnsafeSlow(node.stats.size);
    return (await this.readInto(node, buf, 0)) === buf.length ? buf : null;
  }

  /** Fills `buf` from the file at `offset`; fewer bytes when the file ends sooner (it shrank). */
  private readInto(node: FsNode, buf: Buffer, offset: number): Promise<number> {
    return this.openFiles.withFile(this.abs(node.rel), node.ino, node.birth, async (fd) => {
      let got = 0;
      while (got < buf.length) {
        const n = await fsops.read(fd, buf, got, buf.length - got, offset + got);
        if (n === 0) break;
        got += n;
      }
      return got;
    });
  }

  /** The directory's entries with stable cookies, read again only when the directory changed. */
  async listing(dir: FsNode): Promise<DirListing> {
    const cached = this.listings.get(dir.ino);
    if (cached !== undefined && cached.mtimeMs === dir.stats.mtimeMs && cached.ctimeMs === dir.stats.ctimeMs) {
      this.listingCounters.hits++;
      return cached;
    }
    this.listingCounters.misses++;
    const watched = this.watchDir(dir.ino, dir.rel);
    const b = this.bucket(dir.ino);
    const epoch = this.epochs[b];
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
        const birth = birthMicros(st.birthtimeMs);
        this.index.set(st.ino, birth, dir.ino, batch[j]);
        // A subdirectory's own attributes are only kept once it is watched (its first fill()
        // watches it): its mtime changes with its entries, which only its own watch reports.
        if (this.epochs[b] === epoch && (!st.isDirectory() || this.watcher.isWatched(st.ino))) {
          this.remember({ ino: st.ino, birth, rel: this.childRel(dir, batch[j]), stats: st }, watched);
        }
      }
    }
    orderCookies(entries);
    const listing: DirListing = { mtimeMs: dir.stats.mtimeMs, ctimeMs: dir.stats.ctimeMs, entries };
    // A listing that raced with a change is served once, not kept.
    if (this.epochs[b] === epoch) this.listings.set(dir.ino, listing);
    return listing;
  }

  // ---- changes ---------------------------------------------------------------------------------

  private childRel(dir: FsNode, name: string): string {
    return dir.rel === '' ? name : `${dir.rel}/${name}`;
  }

  /** Fresh attributes of an object we just changed (for wcc post-op attributes). */
  async restat(node: FsNode): Promise<FsNode> {
    this.invalidate(node.ino);
    const e = node.ino === this.rootIno ? undefined : this.index.get(node.ino);
    const parent = e?.parent ?? this.rootIno;
    const fresh = await this.fillNow(node.rel, parent, node.ino === this.rootIno ? '' : parentPath(node.rel));
    return { ...node, stats: fresh.stats };
  }

  /** lstat of `name` in `dir` without touching the index; null when it does not exist. */
  async peek(dir: FsNode, name: string): Promise<FsNode | null> {
    const rel = this.childRel(dir, name);
    const stats = await fsops.lstat(this.abs(rel)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    return stats === null ? null : { ino: stats.ino, birth: birthMicros(stats.birthtimeMs), rel, stats };
  }

  /** Records a new object and gives it its owner (the server creates everything as root). */
  private async adopt(dir: FsNode, name: string, owner: Owner): Promise<FsNode> {
    const rel = this.childRel(dir, name);
    const abs = this.abs(rel);
    // A directory with the setgid bit hands its group down, as the kernel does for local users.
    const gid = dir.stats.mode & 0o2000 ? dir.stats.gid : owner.gid;
    const created = await fsops.lstat(abs);
    await fsops.lchown(abs, owner.uid, gid);
    let stats = await fsops.lstat(abs);
    // chown clears setuid/setgid; a local user creating a 04755 file keeps them, so restore.
    if ((created.mode & 0o6000) !== (stats.mode & 0o6000) && !stats.isSymbolicLink()) {
      await fsops.chmod(abs, created.mode & 0o7777);
      stats = await fsops.lstat(abs);
    }
    const birth = birthMicros(stats.birthtimeMs);
    this.index.set(stats.ino, birth, dir.ino, name);
    this.invalidateDir(dir.ino, name);
    return { ino: stats.ino, birth, rel, stats };
  }

  /**
   * CREATE. `exclusive` carries the client's verifier, stored in atime/mtime as knfsd does, so a
   * retransmitted exclusive create finds its own file and succeeds once and only once.
   */
  async create(dir: FsNode, name: string, mode: number, guard: 'unchecked' | 'guarded' | 'exclusive', verf: Buffer | null, owner: Owner): Promise<{ node: FsNode; existed: boolean }> {
    // UNCHECKED opens an existing regular file as it is (the caller then applies the size).
    if (guard === 'unchecked') {
      const existing = await this.peek(dir, name);
      if (existing !== null) {
        if (!existing.stats.isFile()) throw new NfsError(NfsStat.EXIST, 'exists and is not a regular file');
        return { node: await this.lookup(dir, name), existed: true };
      }
    }
    const abs = this.abs(this.childRel(dir, name));
    try {
      fsops.close(await fsops.openCreate(abs, fs.constants.O_WRONLY | fs.constants.O_EXCL, mode));
      this.invalidateDir(dir.ino, name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const existing = await this.peek(dir, name);
      const retransmitted = guard === 'exclusive' && verf !== null && existing !== null && existing.stats.isFile() && verifierMatches(existing.stats, verf);
      // Created by someone else between our look and our create: UNCHECKED takes it as it is.
      if (retransmitted || (guard === 'unchecked' && existing?.stats.isFile())) return { node: await this.lookup(dir, name), existed: true };
      throw err;
    }
    const node = await this.adopt(dir, name, owner);
    if (guard === 'exclusive' && verf !== null) {
      await fsops.lutimes(abs, verf.readUInt32BE(0), verf.readUInt32BE(4));
      this.invalidate(node.ino);
      return { node: await this.restat(node), existed: false };
    }
    return { node, existed: false };
  }

  async mkdir(dir: FsNode, name: string, mode: number, owner: Owner): Promise<FsNode> {
    // A booting client MKDIRs /proc, /sys and /dev every time, and a storm's nodes all at once:
    // what the cache knows exists needs no syscall, and one mkdir in flight answers the others
    // as if they came after it (EXIST), unless it failed for its own reasons.
    if (this.lookupCached(dir, name) !== null) throw new NfsError(NfsStat.EXIST, 'exists (cached)');
    const rel = this.childRel(dir, name);
    const running = this.makingDirs.get(rel);
    if (running !== undefined) {
      const outcome = await running.then(
        () => 'made',
        (err: NodeJS.ErrnoException) => err.code,
      );
      if (outcome === 'made' || outcome === 'EEXIST') throw new NfsError(NfsStat.EXIST, 'made by a call in flight');
    }
    const made = fsops.mkdir(this.abs(rel), mode);
    this.makingDirs.set(rel, made);
    try {
      await made;
    } finally {
      if (this.makingDirs.get(rel) === made) this.makingDirs.delete(rel);
    }
    this.invalidateDir(dir.ino, name);
    return this.adopt(dir, name, owner);
  }

  async symlink(dir: FsNode, name: string, target: Buffer, owner: Owner): Promise<FsNode> {
    await fsops.symlink(target, this.abs(this.childRel(dir, name)));
    this.invalidateDir(dir.ino, name);
    return this.adopt(dir, name, owner);
  }

  async mknod(dir: FsNode, name: string, kind: 'chr' | 'blk' | 'fifo' | 'sock', mode: number, major: number, minor: number, owner: Owner): Promise<FsNode> {
    await makeNode(this.abs(this.childRel(dir, name)), kind, mode, major, minor);
    this.invalidateDir(dir.ino, name);
    return this.adopt(dir, name, owner);
  }

  async link(node: FsNode, dir: FsNode, name: string): Promise<FsNode> {
    await fsops.link(this.abs(node.rel), this.abs(this.childRel(dir, name)));
    this.invalidateDir(dir.ino, name);
    return this.restat(node);
  }

  /** Forgets a removed object: its handle now answers STALE, its descriptors are dropped. */
  private forget(node: FsNode): void {
    this.invalidate(node.ino);
    if (node.stats.isDirectory()) {
      this.watcher.unwatch(node.ino);
      this.listings.delete(node.ino);
    }
    this.openFiles.invalidate(node.ino, node.birth);
    this.writeFiles.invalidate(node.ino, node.birth);
    // Another hard link keeps the inode alive; the index entry may then point at the removed
    // name, which resolve() repairs.
    if (node.stats.nlink <= 1 || node.stats.isDirectory()) this.index.delete(node.ino);
  }

  async remove(dir: FsNode, child: FsNode): Promise<void> {
    await fsops.unlink(this.abs(child.rel));
    this.invalidateDir(dir.ino, baseName(child.rel));
    this.forget(child);
  }

  async rmdir(dir: FsNode, child: FsNode): Promise<void> {
    await fsops.rmdir(this.abs(child.rel));
    this.invalidateDir(dir.ino, baseName(child.rel));
    this.forget(child);
  }

  async rename(from: FsNode, fromName: string, source: FsNode, to: FsNode, toName: string, replaced: FsNode | null): Promise<void> {
    await fsops.rename(this.abs(this.childRel(from, fromName)), this.abs(this.childRel(to, toName)));
    this.invalidateDir(from.ino, fromName);
    this.invalidateDir(to.ino, toName);
    // Its ctime changed, and its cached (parent, name) entry is the old one.
    this.invalidate(source.ino);
    if (replaced !== null && replaced.ino !== source.ino) this.forget(replaced);
    this.index.set(source.ino, source.birth, to.ino, toName);
  }

  /** WRITE: returns how durable the data now is (what we did, at least what was asked). */
  async write(node: FsNode, offset: number, data: Buffer, stable: 0 | 1 | 2): Promise<number> {
    let written = 0;
    await this.writeFiles.withFile(this.abs(node.rel), node.ino, node.birth, async (fd) => {
      while (written < data.length) written += await fsops.write(fd, data, written, data.length - written, offset + written);
      if (stable !== 0) await fsops.sync(fd, stable === 1);
    });
    this.invalidate(node.ino);
    this.bytesWritten += written;
    return written;
  }

  /** COMMIT: everything written to the file so far reaches stable storage (fsync covers all descriptors). */
  async commit(node: FsNode): Promise<void> {
    await this.writeFiles.withFile(this.abs(node.rel), node.ino, node.birth, (fd) => fsops.sync(fd, false));
  }

  async setattr(node: FsNode, a: SetAttrs): Promise<FsNode> {
    const abs = this.abs(node.rel);
    // Dropped before and (by restat) after: a failure half-way must not leave old attributes.
    this.invalidate(node.ino);
    if (a.uid !== null || a.gid !== null) await fsops.lchown(abs, a.uid ?? -1, a.gid ?? -1);
    // Symlinks have no mode of their own on Linux; chmod would change the target.
    if (a.mode !== null && !node.stats.isSymbolicLink()) await fsops.chmod(abs, a.mode);
    if (a.size !== null) {
      await this.writeFiles.withFile(abs, node.ino, node.birth, (fd) => fsops.ftruncate(fd, a.size!));
    }
    if (a.atime !== null || a.mtime !== null) {
      const now = Date.now() / 1000;
      const atime = a.atime === 'server' ? now : (a.atime ?? node.stats.atimeMs / 1000);
      const mtime = a.mtime === 'server' ? now : (a.mtime ?? node.stats.mtimeMs / 1000);
      await fsops.lutimes(abs, atime, mtime);
    }
    return this.restat(node);
  }

  async statfs(): Promise<fs.StatsFs> {
    return fsops.statfs(this.root);
  }

  async close(): Promise<void> {
    this.watcher.close();
    this.openFiles.closeAll();
    this.writeFiles.closeAll();
    await this.index.close();
  }

  flushSync(): void {
    this.index.flushSync();
  }

  /** After close(): lets the caches' contents and arrays go, keeping the objects (warm-up.ts, `retained`). */
  dropStorage(): void {
    this.attrs.dropStorage();
    this.content.clear();
    this.listings.clear();
    this.index.dropStorage();
  }
}

/** The directory part of a path below the root ('' for a top-level name). */
function parentPath(rel: string): string {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
}

function baseName(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}
