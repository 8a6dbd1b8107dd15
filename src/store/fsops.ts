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
  /** READ replies sent from the file by the native addon (src/rpc/send-range.ts): a read each. */
  sendfile: 0,
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
  return new Promise((resolve, reject) => fs.lstat(toFsPath(bytePath), (err, st) => (err ? reject(err) : resolve(st))));
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

// ---- calls that change the file system --------------------------------------------------------

export const fsWriteCounts = {
  write: 0,
  sync: 0,
  create: 0,
  remove: 0,
  rename: 0,
  setattr: 0,
};

function cb<T = void>(resolve: (v: T) => void, reject: (e: Error) => void) {
  return (err: Error | null, v?: T) => (err ? reject(err) : resolve(v as T));
}

export function write(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  fsWriteCounts.write++;
  return new Promise((resolve, reject) => fs.write(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** fsync, or fdatasync when only the data (not e.g. mtime) must be durable. */
export function sync(fd: number, dataOnly: boolean): Promise<void> {
  fsWriteCounts.sync++;
  return new Promise((resolve, reject) => (dataOnly ? fs.fdatasync(fd, cb(resolve, reject)) : fs.fsync(fd, cb(resolve, reject))));
}

/** Creates (or opens) a file without following a symlink at the last component. */
export function openCreate(bytePath: string, flags: number, mode: number): Promise<number> {
  fsWriteCounts.create++;
  return new Promise((resolve, reject) =>
    fs.open(toFsPath(bytePath), flags | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, mode, (err, fd) => (err ? reject(err) : resolve(fd))),
  );
}

export function mkdir(bytePath: string, mode: number): Promise<void> {
  fsWriteCounts.create++;
  return new Promise((resolve, reject) => fs.mkdir(toFsPath(bytePath), { mode }, (err) => (err ? reject(err) : resolve())));
}

export function symlink(target: Buffer, bytePath: string): Promise<void> {
  fsWriteCounts.create++;
  return new Promise((resolve, reject) => fs.symlink(target, toFsPath(bytePath), cb(resolve, reject)));
}

export function link(existing: string, bytePath: string): Promise<void> {
  fsWriteCounts.create++;
  return new Promise((resolve, reject) => fs.link(toFsPath(existing), toFsPath(bytePath), cb(resolve, reject)));
}

export function unlink(bytePath: string): Promise<void> {
  fsWriteCounts.remove++;
  return new Promise((resolve, reject) => fs.unlink(toFsPath(bytePath), cb(resolve, reject)));
}

export function rmdir(bytePath: string): Promise<void> {
  fsWriteCounts.remove++;
  return new Promise((resolve, reject) => fs.rmdir(toFsPath(bytePath), cb(resolve, reject)));
}

export function rename(from: string, to: string): Promise<void> {
  fsWriteCounts.rename++;
  return new Promise((resolve, reject) => fs.rename(toFsPath(from), toFsPath(to), cb(resolve, reject)));
}

/** chmod by path: only for objects lstat just showed are not symlinks (chmod follows links). */
export function chmod(bytePath: string, mode: number): Promise<void> {
  fsWriteCounts.setattr++;
  return new Promise((resolve, reject) => fs.chmod(toFsPath(bytePath), mode, cb(resolve, reject)));
}

export function lchown(bytePath: string, uid: number, gid: number): Promise<void> {
  fsWriteCounts.setattr++;
  return new Promise((resolve, reject) => fs.lchown(toFsPath(bytePath), uid, gid, cb(resolve, reject)));
}

/** Times in seconds (fractions allowed); lutimes so a symlink's own times are set, not its target's. */
export function lutimes(bytePath: string, atime: number, mtime: number): Promise<void> {
  fsWriteCounts.setattr++;
  return new Promise((resolve, reject) => fs.lutimes(toFsPath(bytePath), utimeSeconds(atime), utimeSeconds(mtime), cb(resolve, reject)));
}

/**
 * libuv truncates a time to whole microseconds, and a double of today's seconds is only ~0.24 µs
 * fine, so x.651155058 arrived as x.65115494… and was stored as x.651154: a time set over NFS came
 * back a microsecond early (beyond the 1 µs time_delta FSINFO promises), and a time SETATTR kept
 * unchanged drifted. Aim at the middle of the nearest microsecond so the truncation lands on it.
 */
function utimeSeconds(t: number): number {
  const sec = Math.floor(t);
  return sec + (Math.round((t - sec) * 1e6) + 0.5) / 1e6;
}

export function ftruncate(fd: number, length: number): Promise<void> {
  fsWriteCounts.setattr++;
  return new Promise((resolve, reject) => fs.ftruncate(fd, length, cb(resolve, reject)));
}
