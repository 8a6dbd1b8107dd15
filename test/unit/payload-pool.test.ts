/**
 * The pool's own promises: a buffer is lent to one holder at a time (a second release of it, or
 * a release of a buffer it never lent, cannot put it in the pool twice), sizes round up to their
 * class, the idle bytes stay under the cap, and trim lets them go; after a burst that let go
 * of 32 MiB or more, a quiet moment brings one full garbage collection, so the memory goes back.
 */
import { describe, expect, it } from 'vitest';
import { PayloadPool } from '../../src/rpc/payload-pool.js';

const KIB = 1024;

describe('PayloadPool', () => {
  it('lends a released buffer again, for any size of the same class, and never twice at once', () => {
    const pool = new PayloadPool(8 * 1024 * KIB, 0);
    const a = pool.acquire(600 * KIB);
    expect(a.length).toBe(600 * KIB);
    expect(a.buffer.byteLength).toBe(1024 * KIB);
    expect(pool.isLent(a)).toBe(true);
    pool.release(a.subarray(0, 10)); // a view of it, as a short read returns
    expect(pool.isLent(a)).toBe(false);
    pool.release(a); // a second release is ignored
    const b = pool.acquire(513 * KIB);
    const c = pool.acquire(1000 * KIB);
    expect(b.buffer).toBe(a.buffer);
    expect(c.buffer).not.toBe(a.buffer);
    expect([pool.reused, pool.created]).toEqual([1, 2]);
  });

  it('leaves small, oversized and foreign buffers alone', () => {
    const pool = new PayloadPool(8 * 1024 * KIB, 0);
    const small = pool.acquire(100);
    const huge = pool.acquire(2048 * KIB);
    expect(small.length).toBe(100);
    expect(huge.length).toBe(2048 * KIB);
    expect(pool.isLent(small) || pool.isLent(huge)).toBe(false);
    pool.release(small);
    pool.release(huge);
    pool.release(Buffer.alloc(4096));
    expect(pool.idleBytes()).toBe(0);
  });

  it('keeps at most its idle cap and forgets the idle buffers on trim', () => {
    const pool = new PayloadPool(2 * 1024 * KIB, 0);
    const lent = [pool.acquire(1024 * KIB), pool.acquire(1024 * KIB), pool.acquire(1024 * KIB)];
    for (const b of lent) pool.release(b);
    expect(pool.idleBytes()).toBe(2 * 1024 * KIB);
    expect(pool.dropped).toBe(1);
    pool.trim();
    expect(pool.idleBytes()).toBe(0);
    expect(pool.acquire(1024 * KIB).buffer).not.toBe(lent[0].buffer);
  });

  it('asks for one full collection when a quiet tick follows a burst that let go of 32 MiB or more, not after a small one', async () => {
    // The pools' timers tick every 30 ms; wait for the tick that trims (the same tick decides on collecting).
    const trimmed = async (pool: PayloadPool) => {
      for (let i = 0; i < 500 && pool.idleBytes() > 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(pool.idleBytes()).toBe(0);
    };
    const small = new PayloadPool(64 * 1024 * KIB, 30);
    for (const b of Array.from({ length: 8 }, () => small.acquire(1024 * KIB))) small.release(b);
    await trimmed(small);
    expect(small.collections).toBe(0);
    const burst = new PayloadPool(16 * 1024 * KIB, 30);
    // 40 MiB lent at once: 16 come back to the pool (its cap), 24 are dropped; the trim lets go of the 16.
    for (const b of Array.from({ length: 40 }, () => burst.acquire(1024 * KIB))) burst.release(b);
    expect(burst.dropped).toBe(24);
    await trimmed(burst);
    expect(burst.collections).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(burst.collections).toBe(1); // once per burst, not every quiet tick
  });
});
