/**
 * Sizes and freshness bounds of one export's caches; each has a CLI flag (src/cli/main.ts).
 */
export interface CacheOptions {
  /** Most objects whose attributes are cached. */
  attrEntries: number;
  /** Memory the attribute cache may use (bytes), all its structures counted. */
  attrBytes: number;
  /** Most directory listings cached. */
  listingEntries: number;
  /** Memory the listing cache may use (bytes, estimated from names and entries). */
  listingBytes: number;
  /** Most directories watched with inotify; beyond it entries are revalidated by `ttlMs`. */
  watchMax: number;
  /** How long an entry of an unwatched directory is trusted (must stay below the 1 s promise). */
  ttlMs: number;
  /**
   * How long an entry of a watched directory is trusted: a safety net for inotify events the
   * kernel dropped (queue overflow under a huge rsync), not the way changes normally arrive.
   */
  maxAgeMs: number;
  /** Memory for whole small files served from memory to READ (0: none); see content-cache.ts. */
  contentBytes: number;
  /** Files up to this size are kept whole; larger ones are always read from the file system. */
  contentFileBytes: number;
}

export const DEFAULT_CACHE_OPTIONS: CacheOptions = {
  attrEntries: 1_000_000,
  attrBytes: 256 * 1024 * 1024,
  listingEntries: 16_384,
  listingBytes: 64 * 1024 * 1024,
  watchMax: 65_536,
  ttlMs: 500,
  maxAgeMs: 60_000,
  contentBytes: 64 * 1024 * 1024,
  contentFileBytes: 8 * 1024 * 1024,
};
