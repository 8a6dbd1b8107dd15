/**
 * inotify watches on the directories whose contents we cache, so that changes made behind our
 * back (an rsync of a new golden image) drop the affected cache entries as they happen.
 *
 * One fs.watch per directory; libuv multiplexes them all on one inotify descriptor per process.
 * A directory watch reports its children by name (created, deleted, renamed, written, chmod'ed)
 * and the directory itself. Watches are capped (`maxWatches`, and the kernel's
 * fs.inotify.max_user_watches): a directory that cannot be watched is reported as such, and the
 * store then trusts what it cached there only for a short TTL. See README.md for the trade-off.
 */
import fs from 'node:fs';
import { componentLogger } from '../log/logger.js';
import { toFsPath } from '../store/fsops.js';

const log = componentLogger('watcher');

/** `name` is the changed entry as a byte string; 'rename' = created, deleted or moved. */
export type DirEventHandler = (dirIno: number, kind: 'rename' | 'change', name: string) => void;

export class DirWatcher {
  private readonly watches = new Map<number, fs.FSWatcher>();
  /** Directories whose watch failed for a reason other than the cap; not retried until unwatched. */
  private readonly refused = new Set<number>();
  private readonly maxWatches: number;
  private readonly onEvent: DirEventHandler;
  private warnedFull = false;
  /** Events received (all directories): the metrics and the bench read it. */
  events = 0;
  /** Directories we could not watch (cap or kernel limit). */
  failures = 0;

  constructor(maxWatches: number, onEvent: DirEventHandler) {
    this.maxWatches = maxWatches;
    this.onEvent = onEvent;
  }

  get size(): number {
    return this.watches.size;
  }

  isWatched(dirIno: number): boolean {
    return this.watches.has(dirIno);
  }

  /**
   * Watches directory `dirIno` at `absPath` (a byte string) unless already watched. Returns
   * 'new' when a watch was just added, 'watched' when it existed, 'no' when it cannot be.
   */
  watch(dirIno: number, absPath: string): 'new' | 'watched' | 'no' {
    if (this.watches.has(dirIno)) return 'watched';
    if (this.refused.has(dirIno)) return 'no';
    if (this.watches.size >= this.maxWatches) return this.full('watch cap reached (--watch-max)');
    let w: fs.FSWatcher;
    try {
      w = fs.watch(toFsPath(absPath), { persistent: false, encoding: 'buffer' });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC') return this.full('kernel inotify watch limit reached (fs.inotify.max_user_watches)');
      this.failures++;
      this.refused.add(dirIno);
      log.debug({ dir: absPath, code }, 'cannot watch directory');
      return 'no';
    }
    w.on('change', (kind: string, name: Buffer | string | null) => {
      this.events++;
      const n = name === null ? '' : typeof name === 'string' ? name : name.toString('latin1');
      this.onEvent(dirIno, kind === 'change' ? 'change' : 'rename', n);
    });
    // The directory was removed (or the watch otherwise died): forget it; the parent's watch
    // reports the removal itself.
    w.on('error', () => this.unwatch(dirIno));
    this.watches.set(dirIno, w);
    return 'new';
  }

  private full(reason: string): 'no' {
    this.failures++;
    if (!this.warnedFull) {
      this.warnedFull = true;
      log.warn({ watches: this.watches.size, reason }, 'cannot watch more directories; entries there are revalidated by TTL');
    }
    return 'no';
  }

  unwatch(dirIno: number): void {
    this.refused.delete(dirIno);
    const w = this.watches.get(dirIno);
    if (w === undefined) return;
    this.watches.delete(dirIno);
    w.close();
  }

  close(): void {
    for (const w of this.watches.values()) w.close();
    this.watches.clear();
  }
}
