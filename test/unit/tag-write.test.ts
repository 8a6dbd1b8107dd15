/**
 * `clusternfs tag`'s new variant file (writeNewFile): mode and owner are the master's, set
 * through the descriptor the file was made with, so a symlink swapped in at the scratch path
 * (the directory may be a node's /tmp) or placed there beforehand is never followed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeNewFile } from '../../src/cli/tag-command.js';

let work: string;
let secret: string;
const isRoot = process.getuid?.() === 0;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-tag-write-'));
  secret = path.join(work, 'shadow');
  fs.writeFileSync(secret, 'root:secret-hash\n', { mode: 0o600 });
  fs.chmodSync(secret, 0o600);
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function master(name: string, mode: number, owner: number): fs.Stats {
  const p = path.join(work, name);
  fs.writeFileSync(p, 'master\n');
  if (isRoot) fs.chownSync(p, owner, owner + 1);
  fs.chmodSync(p, mode);
  return fs.lstatSync(p);
}

describe('writeNewFile', () => {
  it("gives the new file the master's exact mode (setuid, group-writable: no umask) and owner", async () => {
    const m = master('m1', 0o4775, 1234);
    const dest = path.join(work, 'v1');
    await writeNewFile(dest, Buffer.from('variant\n'), m);
    const st = fs.lstatSync(dest);
    expect(fs.readFileSync(dest, 'utf8')).toBe('variant\n');
    expect(st.mode & 0o7777).toBe(0o4775);
    if (isRoot) expect([st.uid, st.gid]).toEqual([1234, 1235]);
    await writeNewFile(path.join(work, 'v0'), Buffer.alloc(0), null);
    expect(fs.lstatSync(path.join(work, 'v0')).mode & 0o7777).toBe(0o644);
  });

  it('a symlink swapped in at the path after the write: the link target keeps its mode and owner', async () => {
    const m = master('m2', 0o666, 4321);
    const dest = path.join(work, 'v2');
    let swapped = false;
    await writeNewFile(dest, Buffer.from('variant\n'), m, () => {
      fs.renameSync(dest, `${dest}.moved`);
      fs.symlinkSync(secret, dest);
      swapped = true;
    });
    expect(swapped).toBe(true);
    const st = fs.statSync(secret);
    expect(st.mode & 0o7777).toBe(0o600);
    expect([st.uid, st.gid]).toEqual([process.getuid!(), process.getgid!()]);
    expect(fs.readFileSync(secret, 'utf8')).toBe('root:secret-hash\n');
    // What was made got it all, wherever it was moved.
    expect(fs.lstatSync(`${dest}.moved`).mode & 0o7777).toBe(0o666);
  });

  it('a symlink placed at the path beforehand is refused, not written through', async () => {
    const dest = path.join(work, 'v3');
    fs.symlinkSync(secret, dest);
    await expect(writeNewFile(dest, Buffer.from('x\n'), master('m3', 0o644, 1))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(fs.readFileSync(secret, 'utf8')).toBe('root:secret-hash\n');
    expect(fs.statSync(secret).mode & 0o7777).toBe(0o600);
  });
});
