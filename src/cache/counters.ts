/**
 * Hit/miss/eviction counters of one cache, as a plain object: the cache bumps fields (no
 * allocation, no label look-up on the call path) and the metrics code reads them at scrape time.
 * The remap tag index exposes the same shape, so one registration serves every cache.
 */
export interface CacheCounters {
  hits: number;
  misses: number;
  /** Entries dropped by the cache's bounds (entry count or memory). */
  evictions: number;
  /** Entries dropped because the object changed (our own mutation or a watcher event). */
  invalidations: number;
  /** Entries held now. */
  readonly entries: number;
}

export function newCounters(entries: () => number): CacheCounters {
  return {
    hits: 0,
    misses: 0,
    evictions: 0,
    invalidations: 0,
    get entries() {
      return entries();
    },
  };
}
