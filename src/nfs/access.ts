/**
 * Permissions, decided by the server for each call's identity: the server runs as root so that
 * the image keeps its owners and device nodes, so the kernel checks nothing on our behalf.
 */
import type fs from 'node:fs';
import { AuthFlavor, type Credentials } from '../rpc/message.js';
import { Access } from './constants.js';

export interface Identity {
  uid: number;
  gid: number;
  gids: readonly number[];
}

export interface SquashOptions {
  rootSquash: boolean;
  allSquash: boolean;
  anonUid: number;
  anonGid: number;
}

/** The identity a call acts as after the export's squash options (exports(5) semantics). */
export function effectiveIdentity(cred: Credentials, opts: SquashOptions): Identity {
  if (cred.flavor !== AuthFlavor.SYS || opts.allSquash) return { uid: opts.anonUid, gid: opts.anonGid, gids: [] };
  if (opts.rootSquash) {
    const uid = cred.uid === 0 ? opts.anonUid : cred.uid;
    const gid = cred.gid === 0 ? opts.anonGid : cred.gid;
    const gids = cred.gids.includes(0) ? cred.gids.map((g) => (g === 0 ? opts.anonGid : g)) : cred.gids;
    return { uid, gid, gids };
  }
  return cred;
}

const R = 4;
const W = 2;
const X = 1;

/** The rwx bits of `st` that apply to `id` (root: read and write always, execute if anyone may). */
export function permissionBits(st: fs.Stats, id: Identity): number {
  const mode = st.mode;
  if (id.uid === 0) return R | W | (st.isDirectory() || (mode & 0o111) !== 0 ? X : 0);
  if (st.uid === id.uid) return (mode >> 6) & 7;
  if (st.gid === id.gid || id.gids.includes(st.gid)) return (mode >> 3) & 7;
  return mode & 7;
}

export function mayRead(st: fs.Stats, id: Identity): boolean {
  return (permissionBits(st, id) & R) !== 0;
}

export function maySearch(st: fs.Stats, id: Identity): boolean {
  return (permissionBits(st, id) & X) !== 0;
}

/**
 * The ACCESS answer: of the bits asked for, those the operations will then allow.
 * `writable` is false on read-only exports, where nothing may be changed.
 */
export function accessMask(st: fs.Stats, id: Identity, asked: number, writable: boolean): number {
  const bits = permissionBits(st, id);
  let granted = 0;
  if (bits & R) granted |= Access.READ;
  if (st.isDirectory()) {
    if (bits & X) granted |= Access.LOOKUP | Access.EXECUTE;
    // Changing a directory's entries needs write and search permission on it.
    if (writable && (bits & (W | X)) === (W | X)) granted |= Access.MODIFY | Access.EXTEND | Access.DELETE;
  } else {
    if (bits & X) granted |= Access.EXECUTE;
    if (writable && bits & W) granted |= Access.MODIFY | Access.EXTEND;
  }
  return granted & asked;
}

export function mayWrite(st: fs.Stats, id: Identity): boolean {
  return (permissionBits(st, id) & W) !== 0;
}

/**
 * WRITE and truncation by the file's owner are allowed even without a write bit, as knfsd allows
 * them: a client that created a file 0444 (tar, cp -p) still writes its data through the handle
 * it got, which the local kernel would allow through the descriptor it opened.
 */
export function mayWriteData(st: fs.Stats, id: Identity): boolean {
  return mayWrite(st, id) || (id.uid !== 0 && st.uid === id.uid);
}

/** Adding, removing or renaming entries needs write and search permission on the directory. */
export function mayChangeEntries(dir: fs.Stats, id: Identity): boolean {
  return (permissionBits(dir, id) & (W | X)) === (W | X);
}

/** In a sticky directory (/tmp) only the entry's owner, the directory's owner or root may remove or replace it. */
export function stickyForbids(dir: fs.Stats, entry: fs.Stats, id: Identity): boolean {
  return (dir.mode & 0o1000) !== 0 && id.uid !== 0 && id.uid !== entry.uid && id.uid !== dir.uid;
}

export function inGroup(id: Identity, gid: number): boolean {
  return id.gid === gid || id.gids.includes(gid);
}
