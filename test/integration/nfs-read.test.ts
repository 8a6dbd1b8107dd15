/**
 * The NFSv3 read path through our own client against the real server on loopback: every
 * read-side procedure, every file type a root image holds, READDIR cookies over a directory of
 * 10,000 entries, handles that never leave the export, and the refusals of the RPC layer.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcClient } from '../../src/client/rpc-client.js';
import { RpcError } from '../../src/client/rpc-errors.js';
import type { Nfs3Client } from '../../src/client/nfs3-client.js';
import { FType, NFS_PROGRAM, NFSACL_PROGRAM, NfsStat, NfsProc } from '../../src/nfs/constants.js';
import { encodeHandle } from '../../src/nfs/filehandle.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, parseExports, quickExport, startServer, type Session } from '../helpers/inproc-server.js';

let work: string;
let root: string;
let server: ClusterNfsServer;
let s: Session;
let nfs: Nfs3Client;
const BIG_SIZE = 3 * 1024 * 1024 + 123;
const BIGDIR_ENTRIES = 10_000;
const ODD_NAME = Buffer.from([0x66, 0xff, 0x80, 0x2e, 0x62]); // "f\xff\x80.b": not UTF-8

async function lookup(dir: Buffer, name: string | Buffer) {
  return nfs.lookup(dir, name);
}

async function fh(rel: string): Promise<Buffer> {
  const r = await nfs.lookupPath(s.root, rel);
  expect(r.status, rel).toBe(NfsStat.OK);
  return r.fh!;
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-read-'));
  root = path.join(work, 'root');
  fs.mkdirSync(path.join(root, 'sub', 'nested'), { recursive: true });
  fs.writeFileSync(path.join(root, 'small.txt'), 'hello\n');
  fs.writeFileSync(path.join(root, 'empty'), '');
  fs.writeFileSync(path.join(root, 'big.bin'), randomBytes(BIG_SIZE));
  fs.writeFileSync(path.join(root, 'sub', 'nested', 'deep.txt'), 'deep\n');
  fs.writeFileSync(path.join(root, 'secret'), 'only root\n', { mode: 0o600 });
  fs.symlinkSync('small.txt', path.join(root, 'link'));
  fs.symlinkSync('/etc', path.join(root, 'escape'));
  expect(spawnSync('mknod', [path.join(root, 'null'), 'c', '1', '3']).status).toBe(0);
  expect(spawnSync('mknod', [path.join(root, 'loop0'), 'b', '7', '0']).status).toBe(0);
  expect(spawnSync('mkfifo', [path.join(root, 'fifo')]).status).toBe(0);
  const sock = spawnSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(path.join(root, 'sock'))})`]);
  expect(sock.status).toBe(0);
  fs.writeFileSync(Buffer.concat([Buffer.from(root + '/'), ODD_NAME]), 'odd name\n');
  fs.mkdirSync(path.join(root, 'bigdir'));
  for (let i = 0; i < BIGDIR_ENTRIES; i++) fs.writeFileSync(path.join(root, 'bigdir', `entry-${i}`), '');
  fs.mkdirSync(path.join(root, 'changing'));
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(root, 'changing', `c-${i}`), '');
  server = await startServer([quickExport(root)], path.join(work, 'state'));
  s = await mountSession(server, root);
  nfs = s.nfs;
});

afterAll(async () => {
  await s?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('GETATTR', () => {
  it('gives the root directory with its inode number as fileid', async () => {
    const r = await nfs.getattr(s.root);
    expect(r.status).toBe(NfsStat.OK);
    const st = fs.lstatSync(root);
    expect(r.attr!.type).toBe(FType.DIR);
    expect(r.attr!.fileid).toBe(st.ino);
    expect(r.attr!.mode).toBe(st.mode & 0o7777);
  });

  it.each([
    ['small.txt', FType.REG],
    ['sub', FType.DIR],
    ['link', FType.LNK],
    ['null', FType.CHR],
    ['loop0', FType.BLK],
    ['fifo', FType.FIFO],
    ['sock', FType.SOCK],
    ['secret', FType.REG],
  ])('%s has type %i and the attributes lstat reports', async (name, type) => {
    const st = fs.lstatSync(path.join(root, name));
    const r = await nfs.getattr(await fh(name));
    expect(r.status).toBe(NfsStat.OK);
    const a = r.attr!;
    expect(a.type).toBe(type);
    expect(a.mode).toBe(st.mode & 0o7777);
    expect([a.nlink, a.uid, a.gid, a.size, a.fileid]).toEqual([st.nlink, st.uid, st.gid, st.size, st.ino]);
    expect(a.used).toBe(st.blocks * 512);
    expect(a.mtime.sec).toBe(Math.floor(st.mtimeMs / 1000));
    expect(Math.abs(a.mtime.nsec - (st.mtimeMs % 1000) * 1e6)).toBeLessThan(2000);
  });

  it('carries device numbers of character and block devices', async () => {
    expect((await nfs.getattr(await fh('null'))).attr!.rdev).toEqual({ major: 1, minor: 3 });
    expect((await nfs.getattr(await fh('loop0'))).attr!.rdev).toEqual({ major: 7, minor: 0 });
  });
});

describe('LOOKUP', () => {
  it('. is the directory itself and .. of the root is the root: nothing above the export', async () => {
    const rootId = (await nfs.getattr(s.root)).attr!.fileid;
    const dot = await lookup(s.root, '.');
    const dotdot = await lookup(s.root, '..');
    expect(dot.objAttr!.fileid).toBe(rootId);
    expect(dotdot.status).toBe(NfsStat.OK);
    expect(dotdot.objAttr!.fileid).toBe(rootId);
    const upTwice = await lookup(dotdot.fh!, '..');
    expect(upTwice.objAttr!.fileid).toBe(rootId);
  });

  it('.. of a subdirectory is its parent', async () => {
    const nested = await fh('sub/nested');
    const up = await lookup(nested, '..');
    expect(up.objAttr!.fileid).toBe(fs.lstatSync(path.join(root, 'sub')).ino);
  });

  it('a missing name is NOENT and still carries the directory attributes', async () => {
    const r = await lookup(s.root, 'no-such-file');
    expect(r.status).toBe(NfsStat.NOENT);
    expect(r.dirAttr!.fileid).toBe(fs.lstatSync(root).ino);
  });

  it('refuses bad names: in a file NOTDIR, too long NAMETOOLONG, with a slash ACCES', async () => {
    expect((await lookup(await fh('small.txt'), 'x')).status).toBe(NfsStat.NOTDIR);
    expect((await lookup(s.root, 'a'.repeat(256))).status).toBe(NfsStat.NAMETOOLONG);
    expect((await lookup(s.root, 'sub/nested')).status).toBe(NfsStat.ACCES);
  });

  it('never follows a symlink: a link to a directory is not a directory', async () => {
    const esc = await lookup(s.root, 'escape');
    expect(esc.objAttr!.type).toBe(FType.LNK);
    expect((await lookup(esc.fh!, 'passwd')).status).toBe(NfsStat.NOTDIR);
  });

  it('finds a name that is not UTF-8 by its exact bytes', async () => {
    const r = await lookup(s.root, ODD_NAME);
    expect(r.status).toBe(NfsStat.OK);
    const read = await nfs.read(r.fh!, 0, 100);
    expect(read.data.toString()).toBe('odd name\n');
  });
});

describe('READLINK and READ', () => {
  it('READLINK returns the target as stored; on a file it is INVAL', async () => {
    const r = await nfs.readlink(await fh('link'));
    expect(r.status).toBe(NfsStat.OK);
    expect(r.data).toBe('small.txt');
    expect((await nfs.readlink(await fh('small.txt'))).status).toBe(NfsStat.INVAL);
  });

  it('reads a small file whole with eof, and an empty file as 0 bytes with eof', async () => {
    const r = await nfs.read(await fh('small.txt'), 0, 4096);
    expect([r.status, r.count, r.eof, r.data.toString()]).toEqual([NfsStat.OK, 6, true, 'hello\n']);
    const e = await nfs.read(await fh('empty'), 0, 4096);
    expect([e.status, e.count, e.eof]).toEqual([NfsStat.OK, 0, true]);
  });

  it('reads a large file in 1 MiB pieces: eof only on the last, short read at the end', async () => {
    const big = await fh('big.bin');
    const local = fs.readFileSync(path.join(root, 'big.bin'));
    const parts: Buffer[] = [];
    for (let off = 0; off < BIG_SIZE; off += 1024 * 1024) {
      const r = await nfs.read(big, off, 1024 * 1024);
      expect(r.status).toBe(NfsStat.OK);
      expect(r.eof).toBe(off + 1024 * 1024 >= BIG_SIZE);
      expect(r.count).toBe(Math.min(1024 * 1024, BIG_SIZE - off));
      parts.push(r.data);
    }
    expect(Buffer.concat(parts).equals(local)).toBe(true);
    const past = await nfs.read(big, BIG_SIZE + 10, 100);
    expect([past.status, past.count, past.eof]).toEqual([NfsStat.OK, 0, true]);
  });

  it('READ of a directory is ISDIR, of a device INVAL', async () => {
    expect((await nfs.read(await fh('sub'), 0, 10)).status).toBe(NfsStat.ISDIR);
    expect((await nfs.read(await fh('null'), 0, 10)).status).toBe(NfsStat.INVAL);
  });

  it('over UDP a READ is capped to what fits a datagram, as FSINFO says', async () => {
    const udp = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, transport: 'udp' });
    try {
      const { Nfs3Client } = await import('../../src/client/nfs3-client.js');
      const unfs = new Nfs3Client(udp);
      const info = await unfs.fsinfo(s.root);
      expect(info.rtmax).toBe(32 * 1024);
      const r = await unfs.read(await fh('big.bin'), 0, 1024 * 1024);
      expect(r.status).toBe(NfsStat.OK);
      expect(r.count).toBe(32 * 1024);
      expect(r.eof).toBe(false);
    } finally {
      await udp.close();
    }
  });
});

describe('ACCESS', () => {
  it('root on a writable export may read, look up and modify the root directory', async () => {
    const all = 0x3f;
    const d = await nfs.access(s.root, all);
    expect(d.status).toBe(NfsStat.OK);
    expect(d.access & 0x01).toBe(0x01);
    expect(d.access & 0x02).toBe(0x02);
    expect(d.access & (0x04 | 0x08 | 0x10)).toBe(0x04 | 0x08 | 0x10);
    const f = await nfs.access(await fh('small.txt'), all);
    expect(f.access & 0x20).toBe(0); // 0644: nobody may execute
  });

  it('an unprivileged user may not read a 0600 root file', async () => {
    const user = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, auth: { uid: 1000, gid: 1000, gids: [] } });
    try {
      const { Nfs3Client } = await import('../../src/client/nfs3-client.js');
      const unfs = new Nfs3Client(user);
      const secret = await fh('secret');
      expect((await unfs.access(secret, 0x01)).access).toBe(0);
      expect((await unfs.read(secret, 0, 10)).status).toBe(NfsStat.ACCES);
      expect((await unfs.access(await fh('small.txt'), 0x01)).access).toBe(0x01);
    } finally {
      await user.close();
    }
  });
});

describe('READDIR and READDIRPLUS', () => {
  it('list 10,000 entries across many small replies, each name once, cookies that are not fileids', async () => {
    const big = await fh('bigdir');
    const seen = new Map<string, bigint>();
    let cookie = 0n;
    let calls = 0;
    let eof = false;
    while (!eof && calls < 5000) {
      const r = await nfs.readdir(big, cookie, null, 1024);
      calls++;
      expect(r.status).toBe(NfsStat.OK);
      // count is the maximum size of READDIR3resok, all XDR included.
      const size = 4 + 88 + 8 + 8 + r.entries.reduce((n, e) => n + 24 + ((e.name.length + 3) & ~3), 0);
      expect(size).toBeLessThanOrEqual(1024);
      for (const e of r.entries) {
        expect(seen.has(e.name), e.name).toBe(false);
        seen.set(e.name, e.cookie);
        expect(e.cookie).not.toBe(BigInt(e.fileid));
      }
      eof = r.eof;
      if (r.entries.length > 0) cookie = r.entries[r.entries.length - 1].cookie;
    }
    expect(eof).toBe(true);
    expect(calls).toBeGreaterThan(100);
    expect(seen.size).toBe(BIGDIR_ENTRIES + 2);
    for (let i = 0; i < BIGDIR_ENTRIES; i++) expect(seen.has(`entry-${i}`)).toBe(true);
  });

  it('READDIRPLUS honours dircount and maxcount and gives attributes and handles', async () => {
    const big = await fh('bigdir');
    let cookie = 0n;
    let total = 0;
    let eof = false;
    for (let calls = 0; !eof && calls < 2000; calls++) {
      const r = await nfs.readdirplus(big, cookie, null, 512, 4096);
      expect(r.status).toBe(NfsStat.OK);
      const dirBytes = r.entries.reduce((n, e) => n + 24 + ((e.name.length + 3) & ~3), 0);
      const fullBytes = r.entries.reduce((n, e) => n + 24 + ((e.name.length + 3) & ~3) + (e.attr ? 88 : 4) + (e.fh ? 8 + e.fh.length : 4), 0);
      expect(dirBytes).toBeLessThanOrEqual(512);
      expect(4 + 88 + 8 + 8 + fullBytes).toBeLessThanOrEqual(4096);
      for (const e of r.entries) {
        expect(e.attr, e.name).not.toBeNull();
        expect(e.attr!.fileid).toBe(e.fileid);
        expect(e.fh).not.toBeNull();
      }
      total += r.entries.length;
      eof = r.eof;
      if (r.entries.length > 0) cookie = r.entries[r.entries.length - 1].cookie;
    }
    expect(total).toBe(BIGDIR_ENTRIES + 2);
    const e = (await nfs.readdirplus(big, 0n, null, 8192, 32768)).entries.find((x) => x.name.startsWith('entry-'))!;
    expect((await nfs.getattr(e.fh!)).attr!.fileid).toBe(fs.lstatSync(path.join(root, 'bigdir', e.name)).ino);
  });

  it('a directory that changes between calls is never BAD_COOKIE, and entries present throughout appear once', async () => {
    const dir = await fh('changing');
    const first = await nfs.readdir(dir, 0n, null, 2048);
    expect(first.status).toBe(NfsStat.OK);
    expect(first.eof).toBe(false);
    const seen = new Set(first.entries.map((e) => e.name));
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(root, 'changing', `new-${i}`), '');
    const notYet = [...Array(300).keys()].map((i) => `c-${i}`).filter((n) => !seen.has(n));
    for (const n of notYet.slice(0, 20)) fs.unlinkSync(path.join(root, 'changing', n));
    let cookie = first.entries[first.entries.length - 1].cookie;
    let eof = false;
    for (let calls = 0; !eof && calls < 500; calls++) {
      const r = await nfs.readdir(dir, cookie, first.cookieverf, 2048);
      expect(r.status).toBe(NfsStat.OK);
      for (const e of r.entries) {
        expect(seen.has(e.name), e.name).toBe(false);
        seen.add(e.name);
      }
      eof = r.eof;
      if (r.entries.length > 0) cookie = r.entries[r.entries.length - 1].cookie;
    }
    expect(eof).toBe(true);
    for (const n of notYet.slice(20)) expect(seen.has(n), n).toBe(true);
    for (const n of [...Array(300).keys()].map((i) => `c-${i}`).filter((n) => !notYet.slice(0, 20).includes(n))) expect(seen.has(n)).toBe(true);
  });

  it('lists a non-UTF-8 name with its exact bytes', async () => {
    const all = await nfs.readdirAll(s.root);
    expect(all.entries.map((e) => e.name)).toContain(ODD_NAME.toString('latin1'));
  });

  it('a count too small for one entry is TOOSMALL; READDIR of a file is NOTDIR', async () => {
    expect((await nfs.readdir(s.root, 0n, null, 100)).status).toBe(NfsStat.TOOSMALL);
    expect((await nfs.readdir(await fh('small.txt'), 0n, null, 4096)).status).toBe(NfsStat.NOTDIR);
  });
});

describe('FSSTAT, FSINFO, PATHCONF', () => {
  it('FSSTAT reports the file system of the export', async () => {
    const r = await nfs.fsstat(s.root);
    const sf = fs.statfsSync(root);
    expect(r.status).toBe(NfsStat.OK);
    expect(r.tbytes).toBe(sf.blocks * sf.bsize);
    expect(r.tfiles).toBe(sf.files);
  });

  it('FSINFO offers 1 MiB transfers over TCP, links, symlinks and settable times', async () => {
    const r = await nfs.fsinfo(s.root);
    expect([r.status, r.rtmax, r.wtmax]).toEqual([NfsStat.OK, 1024 * 1024, 1024 * 1024]);
    expect(r.properties & 0x1b).toBe(0x1b);
    expect(r.maxFileSize).toBeGreaterThan(2 ** 40);
  });

  it('PATHCONF: 255-byte names, no truncation, case preserving', async () => {
    const r = await nfs.pathconf(s.root);
    expect([r.status, r.nameMax, r.noTrunc, r.casePreserving, r.caseInsensitive]).toEqual([NfsStat.OK, 255, true, true, false]);
  });
});

describe('handles', () => {
  it('garbage is BADHANDLE, a handle of another export STALE, an oversized handle GARBAGE_ARGS', async () => {
    expect((await nfs.getattr(randomBytes(32))).status).toBe(NfsStat.BADHANDLE);
    expect((await nfs.getattr(Buffer.alloc(8))).status).toBe(NfsStat.BADHANDLE);
    const foreign = encodeHandle({ fsid: 0x12345678, ino: fs.lstatSync(root).ino, birth: 0 });
    expect((await nfs.getattr(foreign)).status).toBe(NfsStat.STALE);
    await expect(s.rpc.call(NFS_PROGRAM, 3, NfsProc.GETATTR, (w) => w.opaque(Buffer.alloc(65)))).rejects.toMatchObject({ kind: 'GARBAGE_ARGS' });
  });

  it('a removed file is STALE, and so is its old handle when a new file takes the name', async () => {
    fs.writeFileSync(path.join(root, 'doomed'), 'x');
    const old = await fh('doomed');
    fs.unlinkSync(path.join(root, 'doomed'));
    expect((await nfs.getattr(old)).status).toBe(NfsStat.STALE);
    fs.writeFileSync(path.join(root, 'doomed'), 'new');
    expect((await nfs.getattr(old)).status).toBe(NfsStat.STALE);
    expect((await nfs.getattr(await fh('doomed'))).status).toBe(NfsStat.OK);
  });

  it('a handle still works after the file and its parent directory are renamed behind the server', async () => {
    fs.mkdirSync(path.join(root, 'before', 'inner'), { recursive: true });
    fs.writeFileSync(path.join(root, 'before', 'inner', 'f'), 'moved\n');
    const f = await fh('before/inner/f');
    fs.renameSync(path.join(root, 'before'), path.join(root, 'after'));
    const r = await nfs.read(f, 0, 100);
    expect(r.status).toBe(NfsStat.OK);
    expect(r.data.toString()).toBe('moved\n');
    fs.renameSync(path.join(root, 'after', 'inner', 'f'), path.join(root, 'after', 'inner', 'g'));
    fs.renameSync(path.join(root, 'after', 'inner'), path.join(root, 'after', 'inner2'));
    expect((await nfs.read(f, 0, 100)).data.toString()).toBe('moved\n');
  });
});

describe('what a read-only export refuses', () => {
  it('every mutating procedure answers ROFS and nothing changes', async () => {
    const srv = await startServer(parseExports(`${root} 127.0.0.1(ro,insecure,no_root_squash)\n`, 'ro-exports'), null);
    const ro = await mountSession(srv, root);
    try {
      const n = ro.nfs;
      const f = (await n.lookupPath(ro.root, 'small.txt')).fh!;
      expect((await n.setattr(f, { mode: 0o600 })).status).toBe(NfsStat.ROFS);
      expect((await n.write(f, 0, Buffer.from('x'))).status).toBe(NfsStat.ROFS);
      expect((await n.create(ro.root, 'new')).status).toBe(NfsStat.ROFS);
      expect((await n.mkdir(ro.root, 'newdir')).status).toBe(NfsStat.ROFS);
      expect((await n.symlink(ro.root, 'sl', 'x')).status).toBe(NfsStat.ROFS);
      expect((await n.mknod(ro.root, 'fifo2', FType.FIFO)).status).toBe(NfsStat.ROFS);
      expect((await n.remove(ro.root, 'small.txt')).status).toBe(NfsStat.ROFS);
      expect((await n.rmdir(ro.root, 'sub')).status).toBe(NfsStat.ROFS);
      expect((await n.rename(ro.root, 'small.txt', ro.root, 'x')).status).toBe(NfsStat.ROFS);
      expect((await n.link(f, ro.root, 'hard')).status).toBe(NfsStat.ROFS);
      expect((await n.commit(f)).status).toBe(NfsStat.ROFS);
      expect((await n.access(ro.root, 0x3f)).access & (0x04 | 0x08 | 0x10)).toBe(0);
      expect(fs.readFileSync(path.join(root, 'small.txt'), 'utf8')).toBe('hello\n');
      expect(fs.readdirSync(root)).not.toContain('new');
    } finally {
      await ro.close();
      await srv.stop();
    }
  });
});

describe('RPC refusals', () => {
  it('NFS v2 and v4 get PROG_MISMATCH 3..3, NFS_ACL PROG_UNAVAIL, an unknown procedure PROC_UNAVAIL', async () => {
    for (const vers of [2, 4]) {
      const err = await s.rpc.call(NFS_PROGRAM, vers, 0, null).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RpcError);
      expect(err).toMatchObject({ kind: 'PROG_MISMATCH', low: 3, high: 3 });
    }
    await expect(s.rpc.call(NFSACL_PROGRAM, 3, 0, null)).rejects.toMatchObject({ kind: 'PROG_UNAVAIL' });
    await expect(s.rpc.call(NFS_PROGRAM, 3, 22, null)).rejects.toMatchObject({ kind: 'PROC_UNAVAIL' });
    // The server is still serving after all of that.
    expect((await nfs.getattr(s.root)).status).toBe(NfsStat.OK);
  });
});

describe('clients outside the export list', () => {
  it('are refused at MNT and, holding a valid handle, on every NFS call', async () => {
    const dir = path.join(work, 'restricted');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'f'), 'x');
    const entries = parseExports(`${dir} 127.0.0.1(ro,insecure)\n`, 'test-exports');
    const srv = await startServer(entries, null);
    try {
      const allowed = await mountSession(srv, dir);
      const err = await mountSession(srv, dir, { localAddress: '127.0.0.2' }).catch((e: unknown) => e);
      expect(err).toMatchObject({ mountStatus: 13 });
      const outsider = await RpcClient.connect({ host: '127.0.0.1', port: srv.ports.nfs, localAddress: '127.0.0.2' });
      const { Nfs3Client } = await import('../../src/client/nfs3-client.js');
      const r = await new Nfs3Client(outsider).getattr(allowed.root);
      expect(r.status).toBe(NfsStat.ACCES);
      expect((await allowed.nfs.getattr(allowed.root)).status).toBe(NfsStat.OK);
      await outsider.close();
      await allowed.close();
    } finally {
      await srv.stop();
    }
  });
});
