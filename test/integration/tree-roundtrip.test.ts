/**
 * A real directory tree copied into an empty export only through our NFS client, then compared
 * with its source: `find -printf '%p %y %m %u %g %s %n %l'` of both trees, sha256 of every
 * regular file, rdev of device nodes, mtimes, the hard-link structure, and the whole tree read
 * back through READDIRPLUS, READ and READLINK.
 *
 * The source is a copy of this machine's /etc (`cp -a`), plus what /etc rarely has: relative,
 * absolute, dangling and non-UTF-8 symlinks, hard-linked pairs and a triple across directories,
 * FIFOs, character and block devices, a unix socket, setuid/setgid/sticky modes, other owners,
 * empty files, a file of several MiB and names with the bytes 0xff 0x80.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Fattr3, Nfs3Client, Sattr3 } from '../../src/client/nfs3-client.js';
import { CreateMode, FType, NfsStat, StableHow } from '../../src/nfs/constants.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, quickExport, startServer, type Session } from '../helpers/inproc-server.js';

const FIND_FMT = '%p %y %m %u %g %s %n %l\\n';
/**
 * The one exception in the comparison: a directory's size (%s) is printed as '-'. On ext4 it is
 * the space its entries took as they were added, and with hashed (htree) directories that
 * depends on the order of insertion: the same 3000 names added in three orders gave 81920,
 * 86016 and 73728 bytes. `cp -a` adds /etc's entries in /etc's order, our copy in the source's,
 * so big directories (/etc/ssl/certs) may differ without anything being wrong. The size the
 * server reports for a directory is still checked, against the export's own lstat.
 */
const FIND_DIR_FMT = FIND_FMT.replace('%s', '-');
const SLASH = Buffer.from('/');
const BIG = 6 * 1024 * 1024 + 12_345;

let work: string;
let src: string;
let dst: string;
let server: ClusterNfsServer;
let s: Session;
let nfs: Nfs3Client;

const figures = { files: 0, dirs: 0, symlinks: 0, links: 0, fifos: 0, chr: 0, blk: 0, socks: 0, bytes: 0, writes: 0, commits: 0, copyMs: 0, readBackMs: 0 };

const join = (dir: Buffer, name: Buffer): Buffer => Buffer.concat([dir, SLASH, name]);
const b = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));
const sha256 = (data: Buffer): string => crypto.createHash('sha256').update(data).digest('hex');
const nfsTime = (ns: bigint) => ({ sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) });
/** glibc's gnu_dev_major/minor: the 64-bit dev_t splits both numbers over high and low bits. */
const major = (dev: bigint) => Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
const minor = (dev: bigint) => Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
const nsOf = (t: { sec: number; nsec: number }) => BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec);
/**
 * How far a restored time may be from the source's. Times are compared to this tolerance rather
 * than by whole seconds, which is stricter and has no flake at a second's boundary: the server
 * takes a set time as a double of seconds (~240 ns resolution at today's dates, for lutimes) and
 * reports times to the microsecond (FSINFO time_delta), so 1 µs covers both roundings.
 */
const TIME_SLACK_NS = 1000n;
const near = (a: bigint, b: bigint) => a - b <= TIME_SLACK_NS && b - a <= TIME_SLACK_NS;

function nfsType(st: fs.BigIntStats): FType {
  if (st.isFile()) return FType.REG;
  if (st.isDirectory()) return FType.DIR;
  if (st.isSymbolicLink()) return FType.LNK;
  if (st.isCharacterDevice()) return FType.CHR;
  if (st.isBlockDevice()) return FType.BLK;
  if (st.isFIFO()) return FType.FIFO;
  if (st.isSocket()) return FType.SOCK;
  throw new Error('unknown file type');
}

/** Adds to the copied /etc everything the brief asks for that /etc does not reliably have. */
function buildExtras(root: string): void {
  const x = (...p: string[]) => path.join(root, 'extra', ...p);
  for (const d of ['data', 'links', 'dev', 'modes', 'owners', 'deep/a/b/c', 'other', 'sticky', 'setgid/sub']) fs.mkdirSync(x(d), { recursive: true });
  fs.writeFileSync(x('data', 'hello.txt'), 'hello, world\n');
  fs.writeFileSync(x('data', 'empty'), '');
  fs.writeFileSync(x('data', 'big.bin'), crypto.randomBytes(BIG));
  // A file whose size is an exact multiple of the write size, and one a byte over it.
  fs.writeFileSync(x('data', 'exact-64k'), crypto.randomBytes(65536));
  fs.writeFileSync(x('data', 'odd-64k'), crypto.randomBytes(65537));

  fs.symlinkSync('../data/hello.txt', x('links', 'relative'));
  fs.symlinkSync('/etc/passwd', x('links', 'absolute'));
  fs.symlinkSync('no/such/target', x('links', 'dangling'));
  fs.symlinkSync('../data', x('links', 'to-dir'));
  fs.symlinkSync(Buffer.from([0x2e, 0x2e, 0x2f, 0xff, 0x80, 0x2e, 0x74]), x('links', 'binary-target'));
  fs.symlinkSync('relative', x('links', 'owned-by-1000'));
  fs.lchownSync(x('links', 'owned-by-1000'), 1000, 1000);
  fs.symlinkSync('x'.repeat(1000), x('links', 'long-target'));

  // Hard links: a pair in one directory, a triple across three, a hard-linked symlink and FIFO.
  fs.writeFileSync(x('data', 'pair-a'), 'two names\n');
  fs.linkSync(x('data', 'pair-a'), x('data', 'pair-b'));
  fs.writeFileSync(x('data', 'triple'), crypto.randomBytes(70_000));
  fs.linkSync(x('data', 'triple'), x('other', 'triple-2'));
  fs.linkSync(x('data', 'triple'), x('deep', 'a', 'b', 'c', 'triple-3'));
  fs.linkSync(x('links', 'relative'), x('other', 'hardlinked-symlink'));

  execFileSync('mkfifo', ['-m', '0644', x('dev', 'fifo')]);
  execFileSync('mkfifo', ['-m', '0600', x('dev', 'fifo-600')]);
  fs.linkSync(x('dev', 'fifo'), x('other', 'fifo-link'));
  execFileSync('mknod', ['-m', '0666', x('dev', 'null'), 'c', '1', '3']);
  execFileSync('mknod', ['-m', '0620', x('dev', 'pts-big'), 'c', '136', '300000']);
  execFileSync('mknod', ['-m', '0660', x('dev', 'sdb1'), 'b', '8', '17']);
  execFileSync('mknod', ['-m', '0640', x('dev', 'nvme'), 'b', '259', '70000']);
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', x('dev', 'sock')]);
  fs.chownSync(x('dev', 'fifo-600'), 1234, 4321);

  const modes: [string, number][] = [['m0600', 0o600], ['m4755', 0o4755], ['m2755', 0o2755], ['m6711', 0o6711], ['m0000', 0o000], ['m0444', 0o444]];
  for (const [name, mode] of modes) {
    fs.writeFileSync(x('modes', name), `#!/bin/sh\necho ${name}\n`);
    fs.chmodSync(x('modes', name), mode);
  }
  fs.writeFileSync(x('owners', 'u1000'), 'user 1000\n');
  fs.chownSync(x('owners', 'u1000'), 1000, 1000);
  fs.writeFileSync(x('owners', 'u1234-suid'), 'odd owner, setuid\n');
  fs.chownSync(x('owners', 'u1234-suid'), 1234, 4321);
  fs.chmodSync(x('owners', 'u1234-suid'), 0o4750); // after chown, which clears setuid
  fs.mkdirSync(x('owners', 'dir-1234'));
  fs.writeFileSync(x('owners', 'dir-1234', 'inside'), '');
  fs.chownSync(x('owners', 'dir-1234'), 1234, 4321);

  fs.writeFileSync(x('sticky', 'in-sticky'), 'x');
  fs.chmodSync(x('sticky'), 0o1777);
  fs.writeFileSync(x('setgid', 'sub', 'f'), 'x');
  fs.chownSync(x('setgid'), 0, 4321);
  fs.chmodSync(x('setgid'), 0o2775);
  fs.chmodSync(x('deep', 'a', 'b'), 0o555); // a read-only directory root must still fill
  fs.chmodSync(x('owners'), 0o700);

  // Non-UTF-8 names: a file, a directory with a file in it, a symlink, a FIFO.
  const extra = b(x());
  const bad = (s: string) => Buffer.concat([b('bad-'), b([0xff, 0x80]), b(s)]);
  fs.writeFileSync(join(extra, bad('.txt')), 'not utf-8\n');
  fs.mkdirSync(join(extra, bad('-dir')));
  fs.writeFileSync(join(join(extra, bad('-dir')), b([0x80, 0xff, 0xfe])), 'deeper\n');
  fs.symlinkSync(bad('.txt'), join(extra, bad('-link')));
  // Arguments are passed as UTF-8, so the raw bytes go to python as hex.
  execFileSync('python3', ['-c', 'import os,sys; os.mkfifo(bytes.fromhex(sys.argv[1]), 0o640)', join(extra, bad('-fifo')).toString('hex')]);
  fs.writeFileSync(x('with space and ümlaut'), 'utf-8 name\n');

  // Times that are not "now": old, fractional, and far in the future (still within u32).
  fs.utimesSync(x('data', 'hello.txt'), new Date('2001-02-03T04:05:06.789Z'), new Date('1995-06-07T08:09:10.123Z'));
  fs.utimesSync(x('data', 'empty'), 1_000_000_000, 4_000_000_000);
  fs.lutimesSync(x('links', 'absolute'), 1_234_567_890, 1_234_567_890.5);
  fs.utimesSync(x('dev', 'null'), 777_777_777, 888_888_888);
}

async function ok<T extends { status: number }>(what: string, where: Buffer, p: Promise<T>): Promise<T> {
  const r = await p;
  if (r.status !== NfsStat.OK) throw new Error(`${what} ${where.toString('latin1')}: NFS status ${r.status}`);
  return r;
}

/** What SETATTR is asked to restore; a symlink has no mode of its own (always 0777 on Linux). */
function attrsOf(st: fs.BigIntStats): Sattr3 {
  const a: Sattr3 = { uid: Number(st.uid), gid: Number(st.gid), atime: nfsTime(st.atimeNs), mtime: nfsTime(st.mtimeNs) };
  if (!st.isSymbolicLink()) a.mode = Number(st.mode & 0o7777n);
  return a;
}

/**
 * SETATTR and check its post-op attributes say what was asked. This is the only check of atime:
 * reading the source to copy it, and reading both trees to compare them, moves atimes (relatime).
 */
async function restore(fh: Buffer, st: fs.BigIntStats, where: Buffer): Promise<void> {
  const r = await ok('SETATTR', where, nfs.setattr(fh, attrsOf(st)));
  const a = r.wcc.after!;
  const want = attrsOf(st);
  expect([a.uid, a.gid, a.mode], where.toString('latin1')).toEqual([want.uid, want.gid, st.isSymbolicLink() ? 0o777 : want.mode]);
  const times = `${where.toString('latin1')}: mtime ${nsOf(a.mtime)} for ${st.mtimeNs}, atime ${nsOf(a.atime)} for ${st.atimeNs}`;
  expect([near(nsOf(a.mtime), st.mtimeNs), near(nsOf(a.atime), st.atimeNs)], times).toEqual([true, true]);
}

class TreeCopier {
  /** Source inode → handle of its first copy, so further names of it become LINK calls. */
  private readonly copied = new Map<bigint, Buffer>();
  private writeVerf: Buffer | null = null;

  constructor(private readonly chunk: number) {}

  /** Copies the contents of `srcDir` into the directory `dirFh`; the caller restores the directory's own attributes. */
  async copyDir(srcDir: Buffer, dirFh: Buffer): Promise<void> {
    const names = fs.readdirSync(srcDir, { encoding: 'buffer' });
    for (const name of names) {
      const from = join(srcDir, name);
      const st = fs.lstatSync(from, { bigint: true });
      if (!st.isDirectory() && st.nlink > 1n) {
        const first = this.copied.get(st.ino);
        if (first !== undefined) {
          const r = await ok('LINK', from, nfs.link(first, dirFh, name));
          expect(r.fileAttr!.fileid, from.toString('latin1')).toBe((await nfs.getattr(first)).attr!.fileid);
          figures.links++;
          continue;
        }
      }
      let fh: Buffer;
      if (st.isDirectory()) {
        // Owner-only until its contents are in; its mode and times are restored afterwards, as
        // its contents change its mtime and its final mode may not let anyone but root in.
        fh = (await ok('MKDIR', from, nfs.mkdir(dirFh, name, { mode: 0o700 }))).fh!;
        await this.copyDir(from, fh);
        figures.dirs++;
      } else if (st.isFile()) {
        fh = (await ok('CREATE', from, nfs.create(dirFh, name, { mode: 0o600 }, CreateMode.GUARDED))).fh!;
        await this.copyData(fh, fs.readFileSync(from), from);
        figures.files++;
      } else if (st.isSymbolicLink()) {
        const target = fs.readlinkSync(from, { encoding: 'buffer' });
        fh = (await ok('SYMLINK', from, nfs.symlink(dirFh, name, target))).fh!;
        figures.symlinks++;
      } else {
        const type = nfsType(st);
        const rdev = type === FType.CHR || type === FType.BLK ? { major: major(st.rdev), minor: minor(st.rdev) } : null;
        const r = await ok('MKNOD', from, nfs.mknod(dirFh, name, type, { mode: Number(st.mode & 0o7777n) }, rdev));
        if (rdev !== null) expect(r.objAttr!.rdev, from.toString('latin1')).toEqual(rdev);
        fh = r.fh!;
        if (type === FType.CHR) figures.chr++;
        else if (type === FType.BLK) figures.blk++;
        else if (type === FType.FIFO) figures.fifos++;
        else figures.socks++;
      }
      // Owner before mode (chown clears setuid) and times last: the server applies one SETATTR
      // in that order, after the content is written.
      await restore(fh, st, from);
      if (!st.isDirectory() && st.nlink > 1n) this.copied.set(st.ino, fh);
    }
  }

  /**
   * Files alternate between UNSTABLE writes followed by COMMIT and FILE_SYNC writes; big files
   * go UNSTABLE with four WRITEs in flight, as a kernel client's writeback does.
   */
  private async copyData(fh: Buffer, data: Buffer, where: Buffer): Promise<void> {
    figures.bytes += data.length;
    if (data.length === 0) return;
    const unstable = data.length > 1024 * 1024 || figures.files % 2 === 0;
    const stable = unstable ? StableHow.UNSTABLE : StableHow.FILE_SYNC;
    const offsets: number[] = [];
    for (let off = 0; off < data.length; off += this.chunk) offsets.push(off);
    for (let i = 0; i < offsets.length; i += 4) {
      const batch = offsets.slice(i, i + 4);
      const results = await Promise.all(batch.map((off) => nfs.write(fh, off, data.subarray(off, off + this.chunk), stable)));
      figures.writes += batch.length;
      results.forEach((r, j) => {
        const len = Math.min(this.chunk, data.length - batch[j]);
        expect([r.status, r.count, r.committed], where.toString('latin1')).toEqual([NfsStat.OK, len, stable]);
        this.checkVerf(r.verf!);
      });
    }
    if (unstable) {
      const c = await ok('COMMIT', where, nfs.commit(fh));
      figures.commits++;
      this.checkVerf(c.verf!);
      expect(c.fileWcc.after!.size).toBe(data.length);
    }
  }

  /** The write verifier must not change while the server runs (a change would mean lost UNSTABLE data). */
  private checkVerf(verf: Buffer): void {
    this.writeVerf ??= Buffer.from(verf);
    expect(verf.equals(this.writeVerf)).toBe(true);
  }
}

/** `find -printf` of a tree, one line per object, sorted bytewise (names need not be UTF-8). */
function findListing(dir: string): string[] {
  const out = execFileSync('find', ['.', '(', '-type', 'd', '-printf', FIND_DIR_FMT, ')', '-o', '-printf', FIND_FMT], { cwd: dir, env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 64 * 1024 * 1024 });
  const lines: Buffer[] = [];
  let start = 0;
  for (let i = out.indexOf(10); i !== -1; start = i + 1, i = out.indexOf(10, start)) lines.push(out.subarray(start, i));
  expect(start).toBe(out.length);
  return lines.sort(Buffer.compare).map((l) => l.toString('latin1'));
}

interface Entry {
  type: FType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdev: string;
  mtimeNs: bigint;
  /** Inode of the object, to compare which names share one. */
  id: bigint;
  target: string | null;
  sha: string | null;
}

/** Every object below `root` by its latin1 relative path ('.' for the root). */
function localTree(root: string): Map<string, Entry> {
  const map = new Map<string, Entry>();
  const visit = (abs: Buffer, rel: string) => {
    const st = fs.lstatSync(abs, { bigint: true });
    const type = nfsType(st);
    map.set(rel, {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
      nlink: Number(st.nlink),
      rdev: type === FType.CHR || type === FType.BLK ? `${major(st.rdev)},${minor(st.rdev)}` : '-',
      mtimeNs: st.mtimeNs,
      id: st.ino,
      target: type === FType.LNK ? fs.readlinkSync(abs, { encoding: 'buffer' }).toString('latin1') : null,
      sha: type === FType.REG ? sha256(fs.readFileSync(abs)) : null,
    });
    if (type === FType.DIR) for (const n of fs.readdirSync(abs, { encoding: 'buffer' })) visit(join(abs, n), `${rel}/${n.toString('latin1')}`);
  };
  visit(Buffer.from(root), '.');
  return map;
}

/** The same, read through NFS only: READDIRPLUS for names and attributes, READ and READLINK for contents. */
async function nfsTree(rootFh: Buffer): Promise<Map<string, Entry>> {
  const map = new Map<string, Entry>();
  const entryOf = (a: Fattr3, target: string | null, sha: string | null): Entry => ({
    type: a.type,
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    nlink: a.nlink,
    rdev: a.type === FType.CHR || a.type === FType.BLK ? `${a.rdev.major},${a.rdev.minor}` : '-',
    mtimeNs: nsOf(a.mtime),
    id: BigInt(a.fileid),
    target,
    sha,
  });
  const visit = async (fh: Buffer, attr: Fattr3, rel: string) => {
    let target: string | null = null;
    let sha: string | null = null;
    if (attr.type === FType.LNK) target = (await ok('READLINK', Buffer.from(rel, 'latin1'), nfs.readlink(fh))).data;
    if (attr.type === FType.REG) {
      const r = await ok('READ', Buffer.from(rel, 'latin1'), nfs.readAll(fh));
      expect(r.data.length, rel).toBe(attr.size);
      sha = sha256(r.data);
    }
    map.set(rel, entryOf(attr, target, sha));
    if (attr.type !== FType.DIR) return;
    const list = await ok('READDIRPLUS', Buffer.from(rel, 'latin1'), nfs.readdirplusAll(fh));
    for (const e of list.entries) {
      if (e.name === '.' || e.name === '..') continue;
      expect(e.attr, `${rel}/${e.name}`).not.toBeNull();
      expect(e.fh, `${rel}/${e.name}`).not.toBeNull();
      await visit(e.fh!, e.attr!, `${rel}/${e.name}`);
    }
  };
  const rootAttr = (await ok('GETATTR', Buffer.from('.'), nfs.getattr(rootFh))).attr!;
  await visit(rootFh, rootAttr, '.');
  return map;
}

/** Names grouped by the object they share: the hard-link structure, independent of inode numbers. */
function linkGroups(map: Map<string, Entry>): string[][] {
  const groups = new Map<bigint, string[]>();
  for (const [rel, e] of map) {
    if (e.type === FType.DIR) continue;
    const g = groups.get(e.id);
    if (g === undefined) groups.set(e.id, [rel]);
    else g.push(rel);
  }
  return [...groups.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort((x, y) => (x[0] < y[0] ? -1 : 1));
}

/**
 * The fields both sides must agree on exactly, as one comparable line per object (mtimes: mtimesOff).
 * Directory sizes only where both sides are the same directories (see FIND_DIR_FMT).
 */
function describeTree(map: Map<string, Entry>, dirSizes = false): string[] {
  const size = (e: Entry) => (e.type === FType.DIR && !dirSizes ? '-' : e.size);
  return [...map].map(([rel, e]) => `${rel} t${e.type} m${e.mode.toString(8)} ${e.uid}:${e.gid} s${size(e)} n${e.nlink} r${e.rdev} ${e.target ?? ''} ${e.sha ?? ''}`).sort();
}

/** Objects whose mtime is not the source's (within TIME_SLACK_NS), or that one side lacks. */
function mtimesOff(copy: Map<string, Entry>, source: Map<string, Entry>): string[] {
  const off: string[] = [];
  for (const [rel, e] of source) {
    const c = copy.get(rel);
    if (c === undefined || !near(c.mtimeNs, e.mtimeNs)) off.push(`${rel} ${c === undefined ? 'missing' : `${c.mtimeNs - e.mtimeNs}ns`}`);
  }
  return off;
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-tree-'));
  src = path.join(work, 'src');
  dst = path.join(work, 'export');
  fs.mkdirSync(src);
  fs.chmodSync(src, 0o755);
  fs.mkdirSync(dst, { mode: 0o700 });
  execFileSync('cp', ['-a', '/etc', path.join(src, 'etc')]);
  buildExtras(src);
  fs.utimesSync(src, 1_500_000_000, 1_600_000_000.25);
  server = await startServer([quickExport(dst)], path.join(work, 'state'));
  s = await mountSession(server, dst);
  nfs = s.nfs;
});

afterAll(async () => {
  await s?.close();
  await server?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('a real tree copied into the export through NFS', () => {
  it('copies with MKDIR, CREATE+WRITE(+COMMIT), SYMLINK, MKNOD, LINK and SETATTR', async () => {
    const started = performance.now();
    const info = await ok('FSINFO', Buffer.from('.'), nfs.fsinfo(s.root));
    const copier = new TreeCopier(Math.min(info.wtmax, 65536));
    const srcRoot = Buffer.from(src);
    await copier.copyDir(srcRoot, s.root);
    await restore(s.root, fs.lstatSync(srcRoot, { bigint: true }), srcRoot);
    figures.copyMs = Math.round(performance.now() - started);
    expect(figures.links).toBeGreaterThanOrEqual(5); // pair, triple (2), symlink, FIFO
    expect(figures.writes).toBeGreaterThan(BIG / 65536);
    expect(Math.min(figures.fifos, figures.chr, figures.blk, figures.socks)).toBeGreaterThan(0);
  });

  it('find -printf of both trees is identical', () => {
    const a = findListing(src);
    const b2 = findListing(dst);
    expect(a.length).toBeGreaterThan(300);
    expect(a[0]).toBe('. d 755 root root - 4 ');
    // The non-UTF-8 names are in it, byte for byte (latin1 maps each byte to one char).
    expect(a.filter((l) => l.includes('bad-\xff\x80')).length).toBe(5); // file, dir, the file in it, symlink, FIFO
    expect(b2).toEqual(a);
  });

  it('every regular file has the same sha256, every object the same mtime, rdev and hard-link partners', () => {
    const a = localTree(src);
    const d = localTree(dst);
    expect(describeTree(d)).toEqual(describeTree(a));
    expect(linkGroups(d)).toEqual(linkGroups(a));
    expect(linkGroups(a).length).toBeGreaterThanOrEqual(4);
    expect(mtimesOff(d, a)).toEqual([]);
  });

  it('reads back through READDIRPLUS, READ and READLINK as the source', async () => {
    const started = performance.now();
    const viaNfs = await nfsTree(s.root);
    figures.readBackMs = Math.round(performance.now() - started);
    const a = localTree(src);
    expect(describeTree(viaNfs)).toEqual(describeTree(a));
    // What the server says is what is on its disk, directory sizes and inode numbers included.
    const d = localTree(dst);
    expect(describeTree(viaNfs, true)).toEqual(describeTree(d, true));
    expect([...viaNfs].map(([rel, e]) => `${rel} ${e.id}`).sort()).toEqual([...d].map(([rel, e]) => `${rel} ${e.id}`).sort());
    expect(linkGroups(viaNfs)).toEqual(linkGroups(a));
    expect(mtimesOff(viaNfs, a)).toEqual([]);
    console.log(
      `tree roundtrip: ${figures.files} files, ${figures.dirs} dirs, ${figures.symlinks} symlinks, ${figures.links} hard links (LINK), ` +
        `${figures.fifos} fifos, ${figures.chr} chr, ${figures.blk} blk, ${figures.socks} sockets; ${figures.bytes} bytes in ${figures.writes} WRITEs ` +
        `and ${figures.commits} COMMITs; copy ${figures.copyMs} ms, read back ${figures.readBackMs} ms`,
    );
  });
});
