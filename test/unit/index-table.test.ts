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

it('keeps names byte for byte through arena rewrites, and names beyond latin1 as they are', () => {
  const t = new IndexTable();
  const long = (i: number) => `${String(i).padStart(6, '0')}${'\xff\x00é'.repeat(80)}`;
  // 60,000 replaced rows of 246-byte names leave ~14 MiB of dead names: the arena is rewritten.
  for (let i = 0; i < 60_000; i++) t.set(1 + (i % 100), i, 7, long(i));
  t.set(500, 1, 7, 'price€');
  for (let k = 0; k < 100; k++) {
    const i = 60_000 - 100 + k;
    const row = t.find(1 + (i % 100));
    expect(t.nameOf(row)).toBe(long(i));
    expect(t.findChild(7, long(i))).toBe(row);
    expect(t.findChild(7, long(i - 100))).toBe(-1);
  }
  expect(t.nameOf(t.find(500))).toBe('price€');
  expect(t.findChild(7, 'price€')).toBe(t.find(500));
  expect(t.size).toBe(101);
});
