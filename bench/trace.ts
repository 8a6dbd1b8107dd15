/**
 * Boot traces (/work/shared/data, see its README): the calls a node replays, and the tree those
 * calls expect, which the image generator builds.
 */
import fs from 'node:fs';

export interface TraceCall {
  prog: 'nfs' | 'mount';
  proc: string;
  path?: string;
  dir?: string;
  name?: string;
  offset?: number;
  count?: number;
  access?: number;
  status: string;
}

/** Procedures a read-only replay sends; everything else (writes, creations, NFSACL) is left out. */
const READ_PROCS = new Set(['NULL', 'GETATTR', 'LOOKUP', 'ACCESS', 'READLINK', 'READ', 'FSSTAT', 'FSINFO', 'PATHCONF']);

interface RawCall extends TraceCall {
  n?: number;
  eof?: boolean;
}

function parse(file: string): RawCall[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as RawCall);
}

/**
 * The calls one node replays: MOUNT NULL/MNT, then the NFS read-path calls in capture order, plus
 * the MKDIRs that the trace itself saw fail with EXIST (the initramfs's mkdir -p at the root).
 */
export function replayCalls(file: string): TraceCall[] {
  const out: TraceCall[] = [];
  for (const c of parse(file)) {
    if (c.prog === 'mount' ? c.proc !== 'MNT' && c.proc !== 'NULL' : c.prog !== 'nfs') continue;
    if (c.prog === 'nfs' && !READ_PROCS.has(c.proc) && !(c.proc === 'MKDIR' && c.status === 'NFS3ERR_EXIST')) continue;
    const { prog, proc, path, dir, name, offset, count, access, status } = c;
    out.push({ prog, proc, path, dir, name, offset, count, access, status });
  }
  return out;
}

export interface TraceTree {
  dirs: Set<string>;
  symlinks: Set<string>;
  /** path → size in bytes */
  files: Map<string, number>;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/**
 * The objects the traces find already there: directories (used as a LOOKUP directory), symlinks
 * (READLINK), and files with a size that satisfies every READ (exact where a READ saw eof). What
 * the boot creates itself, and names that were looked up and not found, are left out.
 */
export function treeOf(files: string[]): TraceTree {
  const dirs = new Set<string>(['/']);
  const symlinks = new Set<string>();
  const sizes = new Map<string, number>();
  const exact = new Set<string>();
  const created = new Set<string>();
  const seen = new Set<string>();
  for (const f of files) {
    for (const c of parse(f)) {
      if (c.prog !== 'nfs') continue;
      if ((c.proc === 'CREATE' || c.proc === 'MKDIR' || c.proc === 'SYMLINK') && c.status === 'NFS3_OK') created.add(join(c.dir!, c.name!));
      if (c.proc === 'MKDIR' && c.status === 'NFS3ERR_EXIST') dirs.add(join(c.dir!, c.name!));
      if (c.dir !== undefined) dirs.add(c.dir);
      if (c.proc === 'READDIRPLUS' || c.proc === 'READDIR') dirs.add(c.path!);
      if (c.proc === 'READLINK') symlinks.add(c.path!);
      if (c.proc === 'LOOKUP' && c.status === 'NFS3_OK') seen.add(join(c.dir!, c.name!));
      if (c.path !== undefined && c.status === 'NFS3_OK') seen.add(c.path);
      if (c.proc === 'READ' && c.status === 'NFS3_OK') {
        const end = c.offset! + (c.n ?? 0);
        if (c.eof) {
          sizes.set(c.path!, end);
          exact.add(c.path!);
        } else if (!exact.has(c.path!)) sizes.set(c.path!, Math.max(sizes.get(c.path!) ?? 0, end + 1));
      }
    }
  }
  const isCreated = (p: string) => {
    for (let q = p; q !== '/'; q = parentOf(q)) if (created.has(q)) return true;
    return false;
  };
  for (const d of [...dirs]) {
    if (isCreated(d)) dirs.delete(d);
    else for (let q = parentOf(d); q !== '/'; q = parentOf(q)) dirs.add(q);
  }
  for (const s of [...symlinks]) if (isCreated(s) || dirs.has(s)) symlinks.delete(s);
  const out = new Map<string, number>();
  for (const p of seen) {
    if (p === '/' || dirs.has(p) || symlinks.has(p) || isCreated(p)) continue;
    if (!dirs.has(parentOf(p))) continue;
    out.set(p, sizes.get(p) ?? 1024);
  }
  for (const s of symlinks) if (!dirs.has(parentOf(s))) dirs.add(parentOf(s));
  return { dirs, symlinks, files: out };
}
