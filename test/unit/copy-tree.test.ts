/**
 * copyEntry on a tree that changes under it: a snapshot or master tree may belong to a running
 * node, which can swap an entry for a symlink between the walk's lstat and the copy. The copy
 * must never follow it (cluster-tags.md, "Migrating from per-node snapshot directories"; the
 * brief's rule: never follow symlinks).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyEntry, emptyCounts } from '../../src/cli/copy-tree.js';

let work: string;
let secretDir: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-copy-tree-'));
  secretDir = path.join(work, 'outside');
  fs.mkdirSync(secretDir);
  fs.writeFileSync(path.join(secretDir, 'shadow'), 'root:secret-hash\n');
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** A file as the walk's lstat saw it, then replaced at the same path by `replace`. */
function walkedThenReplaced(name: string, replace: (p: string) => void): { src: string; st: fs.Stats } {
  const src = path.join(work, name);
  fs.writeFileSync(src, 'planned\n');
  const st = fs.lstatSync(src);
  fs.rmSync(src);
  replace(src);
  return { src, st };
}

describe('copyEntry never follows a symlink swapped in after the lstat', () => {
  it('a file that became a symlink: refused, the link target is not copied', async () => {
    const { src, st } = walkedThenReplaced('f', (p) => fs.symlinkSync(path.join(secretDir, 'shadow'), p));
    const dest = path.join(work, 'f-copy');
    await expect(copyEntry(src, dest, st, emptyCounts())).rejects.toThrow();
    expect(fs.existsSync(dest) ? fs.readFileSync(dest, 'utf8') : '').not.toContain('secret');
  });

  it('a directory that became a symlink: refused, nothing below the link target is copied', async () => {
    const src = path.join(work, 'd');
    fs.mkdirSync(src);
    const st = fs.lstatSync(src);
    fs.rmdirSync(src);
    fs.symlinkSync(secretDir, src);
    const dest = path.join(work, 'd-copy');
    await expect(copyEntry(src, dest, st, emptyCounts())).rejects.toThrow();
    expect(fs.existsSync(path.join(dest, 'shadow'))).toBe(false);
  });

  it('a file replaced by another file: refused (the copy is of what was planned, or nothing)', async () => {
    const { src, st } = walkedThenReplaced('g', (p) => fs.linkSync(path.join(secretDir, 'shadow'), p));
    await expect(copyEntry(src, path.join(work, 'g-copy'), st, emptyCounts())).rejects.toThrow();
  });
});

describe('copyEntry never changes what a symlink swapped in at the destination points to', () => {
  it('a directory being filled, replaced by a symlink to a file outside: the outside file keeps its mode', async () => {
    const secret = path.join(secretDir, 'shadow');
    fs.chmodSync(secret, 0o600);
    const src = path.join(work, 'snap-dir');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'child'), 'c\n');
    fs.chmodSync(src, 0o777);
    const dest = path.join(work, 'snap-dir-copy');
    let swapped = false;
    // After the child is made and before the directory's own mode is set: what a node writing
    // into the destination's parent could do meanwhile.
    const onEntry = () => {
      if (swapped) return;
      swapped = true;
      fs.renameSync(dest, `${dest}.moved`);
      fs.symlinkSync(secret, dest);
    };
    await copyEntry(src, dest, fs.lstatSync(src), emptyCounts(), { onEntry, keepOwner: false }).catch(() => {});
    expect(swapped).toBe(true);
    expect(fs.statSync(secret).mode & 0o7777).toBe(0o600);
  });
});
