/**
 * Copies one entry or a whole tree the way an admin expects a variant to be made from a master
 * or a snapshot: content, mode (setuid bits included), owner, and times are kept, symlinks are
 * copied as symlinks and never followed, device nodes and FIFOs are recreated. Nothing is ever
 * overwritten: every create is exclusive, so an entry that appeared meanwhile fails with EEXIST
 * instead of being clobbered. Paths are latin1 byte strings (see src/store/fsops.ts), so
 * non-UTF-8 names survive.
 */
import type fs from 'node:fs';
import fsp from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import { lchown, lstat, lutimes, mkdir, readlink, readdir, symlink, toFsPath } from '../store/fsops.js';
import { makeNode } from '../store/mknod.js';
import { displayName } from './display-name.js';
import { UserError } from './user-error.js';

export type EntryKind = 'file' | 'dir' | 'symlink' | 'special';

export function entryKind(st: fs.Stats): EntryKind | null {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO()) return 'special';
  // Sockets belong to a process that is gone: there is nothing to copy.
  return null;
}

/** Counts what a copy made, for progress bars and summaries. */
export interface CopyCounts {
  files: number;
  dirs: number;
  symlinks: number;
  special: number;
  bytes: number;
  /** Entries left out (sockets), with why, as byte-string paths. */
  skipped: { path: string; why: string }[];
}

export function emptyCounts(): CopyCounts {
  return { files: 0, dirs: 0, symlinks: 0, special: 0, bytes: 0, skipped: [] };
}

export interface CopyOptions {
  /** Called after each entry is made (progress bars). */
  onEntry?: (kind: EntryKind, bytes: number) => void;
  /** Keep the source's owner (default: when running as root; others cannot give files away). */
  keepOwner?: boolean;
  /** Walk and count only, create nothing (--dry-run): the same walk, so the counts agree. */
  dryRun?: boolean;
}

const isRoot = process.getuid?.() === 0;

/** Owner, mode, then times: chown clears setuid bits, and any change after it would bump mtime. */
async function applyMetadata(dest: string, st: fs.Stats, kind: EntryKind, opts: CopyOptions): Promise<void> {
  if (opts.keepOwner ?? isRoot) await lchown(dest, st.uid, st.gid);
  // Symlink modes mean nothing on Linux (and lchmod does not exist there). chmod() follows a
  // symlink, and while a directory is filled someone writing its parent may swap it for one to
  // /etc/shadow: set the mode through a descriptor opened without following. Opening a FIFO or
  // device has effects of its own, so those are only checked right before.
  const mode = st.mode & 0o7777;
  const replaced = () => new UserError(`${displayName(dest)} was replaced by a symlink while it was being made; its mode was not set`);
  if (kind === 'file' || kind === 'dir') {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(toFsPath(dest), fsc.O_RDONLY | fsc.O_NOFOLLOW | (kind === 'dir' ? fsc.O_DIRECTORY : 0));
    } catch (err) {
      throw (err as NodeJS.ErrnoException).code === 'ELOOP' ? replaced() : err;
    }
    try {
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
  } else if (kind === 'special') {
    if ((await lstat(dest)).isSymbolicLink()) throw replaced();
    await fsp.chmod(toFsPath(dest), mode);
  }
  await lutimes(dest, st.atimeMs / 1000, st.mtimeMs / 1000);
}

function deviceNumbers(rdev: number): { major: number; minor: number } {
  return { major: (rdev >>> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >>> 12) & 0xfff00) };
}

/**
 * The tree may belong to a running node (a snapshot), which can swap an entry for a symlink to
 * /etc/shadow between our lstat and the copy: what is copied must be the entry that was walked.
 */
function sameEntry(src: string, walked: fs.Stats, now: fs.Stats): void {
  if (now.ino !== walked.ino || now.dev !== walked.dev || (now.mode & fsc.S_IFMT) !== (walked.mode & fsc.S_IFMT)) {
    throw new UserError(`${displayName(src)} was replaced while it was being copied; nothing of it was copied`);
  }
}

/** Copies the regular file walked as `st`, opened without following a symlink; never replaces dest. */
async function copyFileAsWalked(src: string, dest: string, st: fs.Stats): Promise<void> {
  let from: fsp.FileHandle;
  try {
    from = await fsp.open(toFsPath(src), fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') sameEntry(src, st, await lstat(src));
    throw err;
  }
  try {
    sameEntry(src, st, await from.stat());
    // O_EXCL: never replace (or write through a symlink at) something that appeared at dest.
    const to = await fsp.open(toFsPath(dest), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      const buf = Buffer.allocUnsafe(1024 * 1024);
      for (let n; (n = (await from.read(buf, 0, buf.length, null)).bytesRead) > 0; ) await to.write(buf, 0, n);
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

/**
 * Copies `src` (already lstat'ed as `st`) to the new path `dest`; a directory with everything
 * below it. Returns false (and records why in counts.skipped) for what cannot be copied.
 */
export async function copyEntry(src: string, dest: string, st: fs.Stats, counts: CopyCounts, opts: CopyOptions = {}): Promise<boolean> {
  const kind = entryKind(st);
  if (kind === null) {
    counts.skipped.push({ path: src, why: 'a socket' });
    return false;
  }
  const dry = opts.dryRun === true;
  switch (kind) {
    case 'file':
      if (!dry) await copyFileAsWalked(src, dest, st);
      counts.files++;
      counts.bytes += st.size;
      break;
    case 'symlink':
      if (!dry) await symlink(await readlink(src), dest);
      counts.symlinks++;
      break;
    case 'special': {
      const { major, minor } = deviceNumbers(st.rdev);
      if (!dry) await makeNode(dest, st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : 'fifo', st.mode & 0o7777, major, minor);
      counts.special++;
      break;
    }
    case 'dir':
      // readdir follows a symlink: a directory swapped for one after our lstat is refused.
      sameEntry(src, st, await lstat(src));
      // Private until filled, so nobody reads a half-copied directory with the final mode.
      if (!dry) await mkdir(dest, 0o700);
      for (const name of (await readdir(src)).sort()) {
        const childSrc = `${src}/${name}`;
        await copyEntry(childSrc, `${dest}/${name}`, await lstat(childSrc), counts, opts);
      }
      counts.dirs++;
      break;
  }
  if (!dry) await applyMetadata(dest, st, kind, opts);
  opts.onEntry?.(kind, kind === 'file' ? st.size : 0);
  return true;
}

/** lstat, or null when nothing is there (ENOENT, or a path through a non-directory). */
export async function lstatOrNull(p: string): Promise<fs.Stats | null> {
  try {
    return await lstat(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}

/** Removes an entry without following symlinks (a directory with its contents): for --force. */
export async function removeEntry(path: string): Promise<void> {
  await fsp.rm(toFsPath(path), { recursive: true, force: true });
}
