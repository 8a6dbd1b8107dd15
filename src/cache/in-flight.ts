/**
 * Calls in flight, shared by the callers that ask for the same thing meanwhile: a boot storm is
 * 64 nodes asking for one object within the same millisecond, and one lstat, readlink or file
 * load must answer them all.
 *
 * A call is shared only with callers that ask for the same version of the thing (`tag`: an
 * epoch, a birth time, a version string): one that started before a change must not answer a
 * caller that came after it. A call forgets itself when it settles, unless a newer one for the
 * same key has replaced it meanwhile.
 */
export class InFlight<K, T> {
  private readonly running = new Map<K, { tag: number | string; done: Promise<T> }>();

  /** The call in flight for `key` if it was started for `tag`. */
  joined(key: K, tag: number | string): Promise<T> | undefined {
    const r = this.running.get(key);
    return r !== undefined && r.tag === tag ? r.done : undefined;
  }

  /**
   * Shares `done` under `key` until it settles. `kept(value)` runs on success, only if this call
   * was not forgotten or replaced meanwhile (so a result from before a change is not kept).
   */
  start(key: K, tag: number | string, done: Promise<T>, kept?: (value: T) => void): Promise<T> {
    const entry = { tag, done };
    this.running.set(key, entry);
    const settle = (value: T | undefined, ok: boolean) => {
      if (this.running.get(key) !== entry) return;
      this.running.delete(key);
      if (ok && kept !== undefined) kept(value as T);
    };
    done.then(
      (v) => settle(v, true),
      () => settle(undefined, false),
    );
    return done;
  }

  /** `key` changed: its call in flight answers its own callers but no later one, and keeps nothing. */
  forget(key: K): void {
    this.running.delete(key);
  }

  clear(): void {
    this.running.clear();
  }
}
