import { describe, expect, it } from 'vitest';
import { InFlight } from '../../src/cache/in-flight.js';

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('InFlight', () => {
  it('shares a call with callers of the same version only, and keeps its result once', async () => {
    const f = new InFlight<string, number>();
    const d = deferred<number>();
    const kept: number[] = [];
    const first = f.start('a', 1, d.promise, (v) => kept.push(v));
    expect(f.joined('a', 1)).toBe(first);
    expect(f.joined('a', 2)).toBeUndefined();
    expect(f.joined('b', 1)).toBeUndefined();
    d.resolve(7);
    expect(await first).toBe(7);
    expect(kept).toEqual([7]);
    expect(f.joined('a', 1)).toBeUndefined();
  });

  it('a forgotten or replaced call answers its callers but keeps nothing and is not joined', async () => {
    const f = new InFlight<string, number>();
    const old = deferred<number>();
    const kept: number[] = [];
    const first = f.start('a', 1, old.promise, (v) => kept.push(v));
    f.forget('a');
    expect(f.joined('a', 1)).toBeUndefined();
    const newer = deferred<number>();
    f.start('a', 1, newer.promise, (v) => kept.push(v));
    old.resolve(1);
    expect(await first).toBe(1);
    // The old call settling must not drop the newer one.
    expect(f.joined('a', 1)).toBe(newer.promise);
    newer.resolve(2);
    await newer.promise;
    await Promise.resolve();
    expect(kept).toEqual([2]);
  });

  it('a failed call is forgotten and keeps nothing', async () => {
    const f = new InFlight<number, number>();
    const d = deferred<number>();
    const kept: number[] = [];
    const p = f.start(5, 'v1', d.promise, (v) => kept.push(v));
    d.reject(new Error('ENOENT'));
    await expect(p).rejects.toThrow('ENOENT');
    await Promise.resolve();
    expect(f.joined(5, 'v1')).toBeUndefined();
    expect(kept).toEqual([]);
  });
});
