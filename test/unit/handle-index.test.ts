import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HandleIndex } from '../../src/store/handle-index.js';

const ROOT = 2;
let dir: string;

afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('HandleIndex after a crash', () => {
  it('cuts a torn last record so that what is appended after the restart survives the next one', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-hidx-'));
    const a = await HandleIndex.open(dir, ROOT);
    a.set(100, 1, ROOT, 'etc');
    a.set(101, 2, 100, 'hostname');
    await a.flush();
    const log = path.join(dir, 'handles.log');
    const whole = fs.statSync(log).size;
    // A crash in the middle of an append: the start of a record for ino 102 and nothing more.
    fs.appendFileSync(log, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 102, 0, 0]));

    const b = await HandleIndex.open(dir, ROOT);
    expect(b.relPath(101)).toBe('etc/hostname');
    expect(fs.statSync(log).size).toBe(whole);
    b.set(103, 3, 100, 'fstab');
    await b.flush();

    const c = await HandleIndex.open(dir, ROOT);
    expect(c.relPath(101)).toBe('etc/hostname');
    expect(c.relPath(103)).toBe('etc/fstab');
    expect(c.get(102)).toBeUndefined();
  });
});
