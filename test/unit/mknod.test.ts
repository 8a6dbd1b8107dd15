import { existsSync, lstatSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeNode, mknodCalls } from '../../src/store/mknod.js';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'cnfs-mknod-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Linux (glibc) dev_t split. */
function devSplit(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [Number(major), Number(minor)];
}

function inspect(p: string | Buffer) {
  const st = lstatSync(p, { bigint: true });
  const type = st.isCharacterDevice()
    ? 'chr'
    : st.isBlockDevice()
      ? 'blk'
      : st.isFIFO()
        ? 'fifo'
        : st.isSocket()
          ? 'sock'
          : st.isSymbolicLink()
            ? 'symlink'
            : 'other';
  return { type, mode: Number(st.mode) & 0o7777, dev: devSplit(st.rdev) };
}

async function codeOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
  return 'no error';
}

describe('makeNode', () => {
  it('is running as root (device nodes need it)', () => {
    expect(process.getuid?.()).toBe(0);
  });

  it.each([
    { name: 'null', kind: 'chr', mode: 0o666, major: 1, minor: 3 },
    { name: 'loop0', kind: 'blk', mode: 0o660, major: 7, minor: 0 },
    { name: 'cdev4755', kind: 'chr', mode: 0o4755, major: 1, minor: 5 },
    { name: 'bdev-big', kind: 'blk', mode: 0o600, major: 4095, minor: 0xfffff },
    { name: 'bdev-mid', kind: 'blk', mode: 0o640, major: 259, minor: 70000 },
    { name: 'fifo644', kind: 'fifo', mode: 0o644, major: 0, minor: 0 },
    { name: 'fifo-sticky', kind: 'fifo', mode: 0o1777, major: 0, minor: 0 },
    { name: 'sock600', kind: 'sock', mode: 0o600, major: 0, minor: 0 },
    { name: 'sock-setgid', kind: 'sock', mode: 0o2755, major: 0, minor: 0 },
    { name: 'none', kind: 'fifo', mode: 0o000, major: 0, minor: 0 },
    { name: 'all', kind: 'chr', mode: 0o7777, major: 10, minor: 200 },
  ] as const)('creates $name ($kind)', async ({ name, kind, mode, major, minor }) => {
    const p = path.join(dir, name);
    const before = mknodCalls;
    await makeNode(p, kind, mode, major, minor);
    expect(mknodCalls).toBe(before + 1);
    const got = inspect(p);
    expect(got.type).toBe(kind);
    expect(got.mode).toBe(mode);
    if (kind === 'chr' || kind === 'blk') expect(got.dev).toEqual([major, minor]);
    else expect(got.dev).toEqual([0, 0]);
  });

  it('ignores bits above 0o7777 in mode and device numbers for fifos', async () => {
    const p = path.join(dir, 'fifo-extra');
    await makeNode(p, 'fifo', 0o100644, 5, 6);
    expect(inspect(p)).toEqual({ type: 'fifo', mode: 0o644, dev: [0, 0] });
  });

  it('creates a node whose name is not UTF-8', async () => {
    const nameBytes = Buffer.from([0x6e, 0xff, 0x80]);
    const bytePath = Buffer.concat([Buffer.from(dir + '/', 'latin1'), nameBytes]).toString('latin1');
    await makeNode(bytePath, 'chr', 0o620, 1, 3);
    const full = Buffer.concat([Buffer.from(dir + '/'), nameBytes]);
    expect(inspect(full)).toEqual({ type: 'chr', mode: 0o620, dev: [1, 3] });
    const names = readdirSync(dir, { encoding: 'buffer' });
    expect(names.some((n) => n.equals(nameBytes))).toBe(true);
    // Not mangled into U+FFFD or UTF-8 re-encoding.
    expect(names.some((n) => n.equals(Buffer.from('n\u00ff\u0080', 'utf8')))).toBe(false);

    const sockPath = bytePath + '-s\xfe';
    await makeNode(sockPath, 'sock', 0o700);
    expect(inspect(Buffer.from(sockPath, 'latin1'))).toMatchObject({ type: 'sock', mode: 0o700 });
  });

  it('creates a socket in a directory whose path is longer than sun_path', async () => {
    let deep = dir;
    for (let i = 0; i < 4; i++) deep = path.join(deep, 'd'.repeat(40) + i);
    (await import('node:fs')).mkdirSync(deep, { recursive: true });
    expect(deep.length).toBeGreaterThan(108);
    const p = path.join(deep, 'sock');
    await makeNode(p, 'sock', 0o666);
    expect(inspect(p)).toMatchObject({ type: 'sock', mode: 0o666 });
  });

  it.each(['chr', 'blk', 'fifo', 'sock'] as const)('fails with EEXIST on an existing file (%s)', async (kind) => {
    const p = path.join(dir, `exists-${kind}`);
    writeFileSync(p, 'keep');
    expect(await codeOf(makeNode(p, kind, 0o644, 1, 3))).toBe('EEXIST');
    expect(inspect(p)).toMatchObject({ type: 'other', mode: lstatSync(p).mode & 0o7777 });
    expect(lstatSync(p).isFile()).toBe(true);
  });

  it.each(['chr', 'blk', 'fifo', 'sock'] as const)(
    'fails with EEXIST on a dangling symlink and creates nothing at its target (%s)',
    async (kind) => {
      const target = path.join(dir, `target-${kind}`);
      const link = path.join(dir, `link-${kind}`);
      symlinkSync(target, link);
      expect(await codeOf(makeNode(link, kind, 0o644, 1, 3))).toBe('EEXIST');
      expect(existsSync(target)).toBe(false);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
    },
  );

  it('fails with EEXIST on an existing node of the same kind and on a directory', async () => {
    const p = path.join(dir, 'twice');
    await makeNode(p, 'fifo', 0o600);
    expect(await codeOf(makeNode(p, 'fifo', 0o644))).toBe('EEXIST');
    expect(inspect(p).mode).toBe(0o600);
    expect(await codeOf(makeNode(dir, 'chr', 0o644, 1, 3))).toBe('EEXIST');
  });

  it.each(['chr', 'blk', 'fifo', 'sock'] as const)('fails with ENOENT when the parent is missing (%s)', async (kind) => {
    expect(await codeOf(makeNode(path.join(dir, 'no-such-dir', 'x'), kind, 0o644, 1, 3))).toBe('ENOENT');
    expect(existsSync(path.join(dir, 'no-such-dir'))).toBe(false);
  });

  it('fails with ENOTDIR when the parent is a file', async () => {
    const f = path.join(dir, 'plainfile');
    writeFileSync(f, '');
    expect(await codeOf(makeNode(path.join(f, 'x'), 'fifo', 0o644))).toBe('ENOTDIR');
  });

  it('fails with ENAMETOOLONG for a too-long name', async () => {
    expect(await codeOf(makeNode(path.join(dir, 'n'.repeat(256)), 'chr', 0o644, 1, 3))).toBe('ENAMETOOLONG');
    expect(await codeOf(makeNode(path.join(dir, 's'.repeat(200)), 'sock', 0o644))).toBe('ENAMETOOLONG');
  });

  it('fails with EINVAL for bad arguments without creating anything', async () => {
    const p = path.join(dir, 'bad');
    expect(await codeOf(makeNode(p, 'chr', 0o644, 4096, 0))).toBe('EINVAL');
    expect(await codeOf(makeNode(p, 'blk', 0o644, 0, 0x100000))).toBe('EINVAL');
    expect(await codeOf(makeNode(p, 'chr', 0o644, -1, 0))).toBe('EINVAL');
    expect(await codeOf(makeNode(p, 'dir' as never, 0o644))).toBe('EINVAL');
    expect(await codeOf(makeNode(p + '\0x', 'fifo', 0o644))).toBe('EINVAL');
    expect(await codeOf(makeNode(p + '\u0100', 'fifo', 0o644))).toBe('EINVAL');
    expect(existsSync(p)).toBe(false);
  });

  it('handles many concurrent calls, each with its own result', async () => {
    const names = Array.from({ length: 12 }, (_, i) => path.join(dir, `conc-${i}`));
    const results = await Promise.allSettled(
      names.map((p, i) => makeNode(p, i % 2 ? 'fifo' : 'chr', 0o600 + i, 1, i)),
    );
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
    names.forEach((p, i) => {
      expect(inspect(p)).toEqual({ type: i % 2 ? 'fifo' : 'chr', mode: 0o600 + i, dev: i % 2 ? [0, 0] : [1, i] });
    });
    // The same names again all fail, concurrently, with EEXIST.
    const again = await Promise.all(names.map((p) => codeOf(makeNode(p, 'fifo', 0o644))));
    expect(again).toEqual(names.map(() => 'EEXIST'));
  });
});
