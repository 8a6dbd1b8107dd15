/**
 * Every file-system call the store makes goes through here, so that each one is counted (the
 * attribute cache is proven by counting zero calls) and paths are always Buffers (non-UTF-8
 * names survive). Paths inside the store are latin1 "byte strings": one char per byte.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';

export const fsCallCounts = {
  lstat: 0,
  fstat: 0,
  open: 0,
  close: 0,
  read: 0,
  readdir: 0,
  readlink: 0,
  statfs: 0,
};

export type FsCallKind = keyof typeof fsCallCounts;

export function totalFsCalls(): number {
  let n = 0;
  for (const k in fsCallCounts) n += fsCallCounts[k as FsCallKind];
  return n;
}

export function toFsPath(bytePath: string): Buffer {
  return Buffer.from(bytePath, 'latin1');
}

export function lstat(bytePath: string): Promise<fs.Stats> {
  fsCallCounts.lstat++;
  return fsp.lstat(toFsPath(bytePath));
}

export function fstat(fd: number): Promise<fs.Stats> {
  fsCallCounts.fstat++;
  return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

/** Opens without following a symlink in the last component (O_NOFOLLOW). */
export function open(bytePath: string, flags: number): Promise<number> {
  fsCallCounts.open++;
  return new Promise((resolve, reject) =>
    fs.open(toFsPath(bytePath), flags | fs.constants.O_NOFOLLOW, (err, fd) => (err ? reject(err) : resolve(fd))),
  );
}

export function close(fd: number): void {
  fsCallCounts.close++;
  fs.close(fd, () => {});
}

export function read(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  fsCallCounts.read++;
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

/** Directory entry names as byte strings. */
export async function readdir(bytePath: string): Promise<string[]> {
  fsCallCounts.readdir++;
  const names = await fsp.readdir(toFsPath(bytePath), { encoding: 'buffer' });
  return names.map((n) => n.toString('latin1'));
}

export async function readlink(bytePath: string): Promise<Buffer> {
  fsCallCounts.readlink++;
  return fsp.readlink(toFsPath(bytePath), { encoding: 'buffer' });
}

export function statfs(bytePath: string): Promise<fs.StatsFs> {
  fsCallCounts.statfs++;
  return fsp.statfs(toFsPath(bytePath));
}
