/**
 * The handle index's row table against a Map model: random sets (moves, replacements), deletes
 * and look-ups by inode and by (parent, name), across several rebuilds of its hash tables.
 */
import { expect, it } from 'vitest';
import { IndexTable } from '../../src/store/index-table.js';

it('finds every live row by inode and by (parent, name) through inserts, moves and deletes', () => {
  const t = new IndexTable();
  const model = new Map<number, { birth: number; parent: number; name: string }>();
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  for (let step = 0; step < 60_000; step++) {
    // Inode numbers beyond 2^32 occur (XFS), and names repeat across directories.
    const ino = rand(8000) + (step % 3 === 0 ? 2 ** 33 : 0);
    if (rand(5) === 0) {
      expect(t.delete(ino)).toBe(model.delete(ino));
    } else {
      const e = { birth: 1e15 + rand(1000), parent: rand(50), name: `n${rand(400)}` };
      t.set(ino, e.birth, e.parent, e.name);
      model.set(ino, e);
    }
  }
  expect(t.size).toBe(model.size);
  for (const [ino, e] of model) {
    const row = t.find(ino);
    expect(row).toBeGreaterThanOrEqual(0);
    expect([t.birthOf(row), t.parentOf(row), t.nameOf(row)]).toEqual([e.birth, e.parent, e.name]);
    // The table does not enforce one object per name (the handle index does), so ask for this one.
    const child = t.findChild(e.parent, e.name);
    expect(child).toBeGreaterThanOrEqual(0);
    expect(t.nameOf(child)).toBe(e.name);
  }
  expect(t.find(123_456_789)).toBe(-1);
  expect(t.findChild(9999, 'nope')).toBe(-1);
  expect([...t.inodes()].sort((a, b) => a - b)).toEqual([...model.keys()].sort((a, b) => a - b));
});
