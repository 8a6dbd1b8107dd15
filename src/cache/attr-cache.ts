/**
 * The attribute cache: inode → attributes.
 *
 * Why a slab and not a Map of fs.Stats: a Stats object with its heap numbers and two wrappers
 * costs ~400 bytes; a million of them (the boot image of a cluster, cached) would not fit the
 * 300 MB the server may use. Attributes live instead in typed-array chunks indexed by a slot
 * (80 bytes a slot), lru-cache maps inode → slot and bounds them by count and memory, and only
 * the hottest few thousand objects are also kept materialized as FsNode (so a hit on the getattr
 * storm's working set allocates nothing). Names → inodes come from the handle index, which knows
 * (parent, name) of every object we have seen. The README next to this file has the figures.
 */
import fs from 'node:fs';
import { LRUCache } from 'lru-cache';
import type { FsNode } from '../store/export-store.js';
import { newCounters, type CacheCounters } from './counters.js';

const CHUNK_BITS = 16;
const CHUNK = 1 << CHUNK_BITS;
const MASK = CHUNK - 1;

// Float64 fields of a slot.
const F_SIZE = 0;
const F_BLOCKS = 1;
const F_ATIME = 2;
const F_MTIME = 3;
const F_CTIME = 4;
/** Birth time in whole µs, as in the handle. */
const F_BIRTH = 5;
/** Wall-clock ms until which the entry is trusted without looking at the file system. */
const F_UNTIL = 6;
const F64_FIELDS = 7;
// Uint32 fields of a slot: device numbers fit unless a major number is ≥ 4096 (not cached then).
const U_MODE = 0;
const U_NLINK = 1;
const U_UID = 2;
const U_GID = 3;
const U_DEV = 4;
const U_RDEV = 5;
const U32_FIELDS = 6;

/** Bytes one cached object costs, all structures counted (measured by bench/cache-rss.ts). */
export const ATTR_ENTRY_BYTES = 160;

/** A materialized node and the handle-index generation its path was computed at. */
interface HotNode {
  node: FsNode;
  gen: number;
}

/**
 * fs.Stats rebuilt from a slot. It is a real fs.Stats (same prototype, so isDirectory() and
 * instanceof work) with the same numeric fields (birthtimeMs to the µs the handle keeps); the
 * Date fields are computed on demand.
 */
class CachedStats {
  constructor(
    public dev: number,
    public mode: number,
    public nlink: number,
    public uid: number,
    public gid: number,
    public rdev: number,
    public blksize: number,
    public ino: number,
    public size: number,
    public blocks: number,
    public atimeMs: number,
    public mtimeMs: number,
    public ctimeMs: number,
    public birthtimeMs: number,
  ) {}
  get atime(): Date {
    return new Date(this.atimeMs);
  }
  get mtime(): Date {
    return new Date(this.mtimeMs);
  }
  get ctime(): Date {
    return new Date(this.ctimeMs);
  }
  get birthtime(): Date {
    return new Date(this.birthtimeMs);
  }
}
Object.setPrototypeOf(CachedStats.prototype, fs.Stats.prototype);

export interface AttrCacheOptions {
  maxEntries: number;
  maxBytes: number;
  /** Objects kept materialized (FsNode) besides their slot: the hot working set. */
  hotNodes?: number;
}

export class AttrCache {
  readonly counters: CacheCounters;
  private readonly lru: LRUCache<number, number>;
  private readonly f64: Float64Array[] = [];
  private readonly u32: Uint32Array[] = [];
  /** 1 once a slot has been materialized: the next materialization makes it hot. */
  private readonly seen: Uint8Array[] = [];
  /** slot → materialized node (a Map, not an array per slot: 8 MB less at 1M), dropped FIFO by the ring. */
  private readonly hot = new Map<number, HotNode>();
  private readonly hotRing: Int32Array;
  private hotPos = 0;
  private readonly free: number[] = [];
  private nextSlot = 0;
  /** Set while delete() runs, so dispose can tell invalidations from evictions. */
  private invalidating = false;

  constructor(opts: AttrCacheOptions) {
    const max = Math.max(16, Math.min(opts.maxEntries, Math.floor(opts.maxBytes / ATTR_ENTRY_BYTES)));
    this.lru = new LRUCache<number, number>({
      max,
      dispose: (slot, _ino, reason) => this.release(slot, reason),
    });
    this.hotRing = new Int32Array(Math.max(1, Math.min(opts.hotNodes ?? 16384, max))).fill(-1);
    this.counters = newCounters(() => this.lru.size);
  }

  get max(): number {
    return this.lru.max;
  }

  get size(): number {
    return this.lru.size;
  }

  /**
   * The slot of `ino` if it is cached, trusted at `now` and of the same file (birth time);
   * -1 otherwise. Counts the hit or miss. Bumps the entry's recency.
   */
  probe(ino: number, birth: number, now: number): number {
    const slot = this.lru.get(ino);
    if (slot !== undefined) {
      const f = this.f64[slot >>> CHUNK_BITS];
      const o = (slot & MASK) * F64_FIELDS;
      if (now < f[o + F_UNTIL] && (birth < 0 || f[o + F_BIRTH] === birth)) {
        this.counters.hits++;
        return slot;
      }
    }
    this.counters.misses++;
    return -1;
  }

  /** Birth time of a cached object (-1 when not cached); does not count or bump recency. */
  birthOf(ino: number): number {
    const slot = this.lru.peek(ino);
    return slot === undefined ? -1 : this.f64[slot >>> CHUNK_BITS][(slot & MASK) * F64_FIELDS + F_BIRTH];
  }

  /** The materialized node of `slot` if its path is of index generation `gen`. */
  hotNode(slot: number, gen: number): FsNode | undefined {
    const h = this.hot.get(slot);
    return h !== undefined && h.gen === gen ? h.node : undefined;
  }

  isDirectory(slot: number): boolean {
    return (this.u32[slot >>> CHUNK_BITS][(slot & MASK) * U32_FIELDS + U_MODE] & 0o170000) === 0o040000;
  }

  /** Builds the node of `slot` at path `rel`; keeps it as a hot node if it was built before. */
  materialize(slot: number, ino: number, rel: string, gen: number): FsNode {
    const f = this.f64[slot >>> CHUNK_BITS];
    const o = (slot & MASK) * F64_FIELDS;
    const u = this.u32[slot >>> CHUNK_BITS];
    const p = (slot & MASK) * U32_FIELDS;
    const stats = new CachedStats(
      u[p + U_DEV],
      u[p + U_MODE],
      u[p + U_NLINK],
      u[p + U_UID],
      u[p + U_GID],
      u[p + U_RDEV],
      4096,
      ino,
      f[o + F_SIZE],
      f[o + F_BLOCKS],
      f[o + F_ATIME],
      f[o + F_MTIME],
      f[o + F_CTIME],
      f[o + F_BIRTH] / 1000,
    ) as unknown as fs.Stats;
    const node: FsNode = { ino, birth: f[o + F_BIRTH], rel, stats };
    // Hot from the second hit on: an object hit once (a scan, a boot's one GETATTR after its
    // LOOKUP) would otherwise keep its node in the ring for the next 16,384 hits, long enough to
    // be promoted to V8's old space and die there, which is what lets the heap grow.
    const seen = this.seen[slot >>> CHUNK_BITS];
    if (seen[slot & MASK] !== 0) this.keepHot(slot, node, gen);
    else seen[slot & MASK] = 1;
    return node;
  }

  private keepHot(slot: number, node: FsNode, gen: number): void {
    const h = this.hot.get(slot);
    if (h !== undefined) {
      h.node = node;
      h.gen = gen;
      return;
    }
    // The ring may name a slot already dropped (released, or re-added later): deleting it then
    // only costs a re-materialization.
    const old = this.hotRing[this.hotPos];
    if (old >= 0) this.hot.delete(old);
    this.hotRing[this.hotPos] = slot;
    this.hotPos = (this.hotPos + 1) % this.hotRing.length;
    this.hot.set(slot, { node, gen });
  }

  /** Stores `node` (fresh from lstat), trusted until `until`; its path is of generation `gen`. */
  store(node: FsNode, until: number, gen: number): void {
    const st = node.stats;
    if (st.dev > 0xffffffff || st.rdev > 0xffffffff) {
      this.delete(node.ino);
      return;
    }
    let slot = this.lru.get(node.ino);
    if (slot === undefined) {
      slot = this.allocate();
      this.seen[slot >>> CHUNK_BITS][slot & MASK] = 0;
      this.lru.set(node.ino, slot);
    }
    const f = this.f64[slot >>> CHUNK_BITS];
    const o = (slot & MASK) * F64_FIELDS;
    f[o + F_SIZE] = st.size;
    f[o + F_BLOCKS] = st.blocks;
    f[o + F_ATIME] = st.atimeMs;
    f[o + F_MTIME] = st.mtimeMs;
    f[o + F_CTIME] = st.ctimeMs;
    f[o + F_BIRTH] = node.birth;
    f[o + F_UNTIL] = until;
    const u = this.u32[slot >>> CHUNK_BITS];
    const p = (slot & MASK) * U32_FIELDS;
    u[p + U_MODE] = st.mode;
    u[p + U_NLINK] = st.nlink;
    u[p + U_UID] = st.uid;
    u[p + U_GID] = st.gid;
    u[p + U_DEV] = st.dev;
    u[p + U_RDEV] = st.rdev;
    // A fill does not make the node hot (see materialize): a scan that looks up a million objects
    // once (rsync, a boot, mem-1m) would otherwise keep each fresh fs.Stats with its Dates alive
    // for the next 16,384 fills, to be promoted to V8's old space and die there (~1.5 KB each).
    const h = this.hot.get(slot);
    if (h !== undefined) {
      h.node = node;
      h.gen = gen;
    }
  }

  /** Materialized nodes kept (the hot set), for tests and the status page. */
  get hotSize(): number {
    return this.hot.size;
  }

  /** Drops `ino` because it changed; true when it was cached. */
  delete(ino: number): boolean {
    this.invalidating = true;
    try {
      return this.lru.delete(ino);
    } finally {
      this.invalidating = false;
    }
  }

  /**
   * Empties the cache and lets its slot arrays go, in place (the fields keep their kinds). For the
   * stopped warm-up server only (warm-up.ts, `retained`): a slot allocated afterwards would index
   * a chunk that is gone.
   */
  dropStorage(): void {
    this.clear();
    this.f64.length = 0;
    this.u32.length = 0;
    this.seen.length = 0;
  }

  clear(): void {
    this.invalidating = true;
    try {
      this.lru.clear();
    } finally {
      this.invalidating = false;
    }
  }

  private allocate(): number {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    const slot = this.nextSlot++;
    if ((slot & MASK) === 0) {
      this.f64.push(new Float64Array(CHUNK * F64_FIELDS));
      this.u32.push(new Uint32Array(CHUNK * U32_FIELDS));
      this.seen.push(new Uint8Array(CHUNK));
    }
    return slot;
  }

  private release(slot: number, reason: LRUCache.DisposeReason): void {
    if (reason === 'evict') this.counters.evictions++;
    else if (this.invalidating) this.counters.invalidations++;
    this.hot.delete(slot);
    this.free.push(slot);
  }
}
