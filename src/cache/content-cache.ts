/**
 * Whole small files (up to 8 MiB: a libc is 2), in memory, for READ; and symlink targets, for READLINK.
 *
 * Why: a boot storm is every node reading the same few hundred files at once. Each READ that
 * goes to the file system costs the event loop a hand-off to libuv's threadpool and back (a
 * futex wake and an eventfd round trip, ~60 µs of the main thread on this VM, more than the
 * READ itself), and the main thread was what the 64 booting nodes waited for. With the file
 * here, the first node's READ loads it and the other 63 get a slice of the same Buffer, handed
 * to the socket without a copy.
 *
 * Coherence is the attribute cache's: an entry is used only while the node's attributes (which
 * READ has just validated through that cache) still show the inode, birth, ctime, mtime and size
 * it was loaded under, and the store drops an inode's entry wherever it drops its attributes
 * (our own writes, inotify events, the TTL of unwatched directories). A symlink's target never
 * changes in place (a new target is a new inode), so inode and birth are its key.
 */
import { LRUCache } from 'lru-cache';
import type { FsNode } from '../store/export-store.js';
import { newCounters, type CacheCounters } from './counters.js';
import { InFlight } from './in-flight.js';

/** A file's content and the version of it (birth, ctime, mtime, size) it was loaded as. */
interface Content {
  birth: number;
  ctimeMs: number;
  mtimeMs: number;
  size: number;
  data: Buffer;
}

function isVersionOf(c: Content, node: FsNode): boolean {
  const st = node.stats;
  return c.birth === node.birth && c.ctimeMs === st.ctimeMs && c.mtimeMs === st.mtimeMs && c.size === st.size;
}

/** The same version as a string, to share a load only with callers that want that version. */
function versionTag(node: FsNode): string {
  const st = node.stats;
  return `${node.birth}:${st.ctimeMs}:${st.mtimeMs}:${st.size}`;
}

export class ContentCache {
  readonly counters: CacheCounters;
  readonly linkCounters: CacheCounters;
  /** Files larger than this are read from the file system each time. */
  readonly maxFileBytes: number;
  private readonly files: LRUCache<number, Content> | null;
  private readonly loading = new InFlight<number, Buffer | null>();
  private readonly links: LRUCache<number, { birth: number; target: Buffer }>;

  constructor(maxBytes: number, maxFileBytes: number, maxLinks = 16_384) {
    this.maxFileBytes = maxFileBytes;
    this.files =
      maxBytes > 0
        ? new LRUCache<number, Content>({
            maxSize: maxBytes,
            sizeCalculation: (c) => Math.max(1, c.data.length),
            dispose: (_c, _ino, reason) => this.noteGone(this.counters, reason),
          })
        : null;
    this.links = new LRUCache({ max: maxLinks, dispose: (_l, _ino, reason) => this.noteGone(this.linkCounters, reason) });
    this.counters = newCounters(() => this.files?.size ?? 0);
    this.linkCounters = newCounters(() => this.links.size);
  }

  private noteGone(c: CacheCounters, reason: LRUCache.DisposeReason): void {
    if (reason === 'evict') c.evictions++;
    else if (reason === 'delete') c.invalidations++;
  }

  /** Whether READs of a file of this size go through the cache. */
  holds(size: number): boolean {
    return this.files !== null && size > 0 && size <= this.maxFileBytes;
  }

  /**
   * The whole file as `node`'s attributes describe it, from memory (no allocation) or by `load`
   * (shared by the callers that miss at once). `load` returns null when the file did not hold
   * that many bytes (it changed while we read it): nothing is kept and the caller reads the
   * ordinary way.
   */
  file(node: FsNode, load: () => Promise<Buffer | null>): Buffer | Promise<Buffer | null> {
    const hit = this.current(node);
    if (hit !== null) return hit;
    this.counters.misses++;
    const tag = versionTag(node);
    const st = node.stats;
    const keep = (data: Buffer | null) => {
      if (data !== null) this.files!.set(node.ino, { birth: node.birth, ctimeMs: st.ctimeMs, mtimeMs: st.mtimeMs, size: st.size, data });
    };
    return this.loading.joined(node.ino, tag) ?? this.loading.start(node.ino, tag, load(), keep);
  }

  /** The whole file if memory holds `node`'s version of it; a miss is not counted (file() will). */
  current(node: FsNode): Buffer | null {
    const hit = this.files?.get(node.ino);
    if (hit === undefined || !isVersionOf(hit, node)) return null;
    this.counters.hits++;
    return hit.data;
  }

  /** A symlink's target, if known for this inode and birth. */
  linkTarget(ino: number, birth: number): Buffer | undefined {
    const hit = this.links.get(ino);
    if (hit !== undefined && hit.birth === birth) {
      this.linkCounters.hits++;
      return hit.target;
    }
    this.linkCounters.misses++;
    return undefined;
  }

  rememberLink(ino: number, birth: number, target: Buffer): void {
    this.links.set(ino, { birth, target });
  }

  /** `ino` changed or went: its content and target are not used again. */
  delete(ino: number): void {
    this.files?.delete(ino);
    this.loading.forget(ino);
    this.links.delete(ino);
  }

  clear(): void {
    this.files?.clear();
    this.loading.clear();
    this.links.clear();
  }

  /** Bytes of file content held. */
  get bytes(): number {
    return this.files?.calculatedSize ?? 0;
  }
}
