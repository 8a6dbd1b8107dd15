/**
 * The NFSv3 write path through our client: every mutating procedure with its success and error
 * cases, owners of new objects, wcc data, sticky directories, squashing, and setuid clearing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { CreateMode, FType, NfsStat, StableHow } from '../../src/nfs/constants.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, parseExports, quickExport, startServer, type Session } from '../helpers/inproc-server.js';

let work: string;
let root: string;
let server: ClusterNfsServer;
let s: Session;
let nfs: Nfs3Client;
const users: RpcClient[] = [];

async function asUser(uid: number, gid = uid): Promise<Nfs3Client> {
  const rpc = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, auth: { uid, gid, gids: [] } });
  users.push(rpc);
  return new Nfs3Client(rpc);
}

async function fh(rel: string): Promise<Buffer> {
  const r = await nfs.lookupPath(s.root, rel);
  expect(r.status, rel).toBe(NfsStat.OK);
  return r.fh!;
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-write-'));
  root = path.join(work, 'root');
  fs.mkdirSync(root);
  fs.mkdirSync(path.join(root, 'tmp'), { mode: 0o1777 });
  fs.chmodSync(path.join(root, 'tmp'), 0o1777);
  fs.mkdirSync(path.join(root, 'locked'), { mode: 0o755 });
  server = await startServer([quickExport(root)], path.join(work, 'state'));
  s = await mountSession(server, root);
  nfs = s.nfs;
});

afterAll(async () => {
  await Promise.all(users.map((u) => u.close()));
  await s?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('CREATE', () => {
  it('UNCHECKED creates with the mode asked for, owned by the caller, with the directory wcc', async () => {
    const r = await nfs.create(s.root, 'c1', { mode: 0o640 });
    expect(r.status).toBe(NfsStat.OK);
    expect(r.fh).not.toBeNull();
    expect(r.objAttr!.mode).toBe(0o640);
    expect(r.dirWcc.before).not.toBeNull();
    expect(r.dirWcc.after!.mtime).not.toEqual(r.dirWcc.before!.mtime === undefined ? null : undefined);
    const st = fs.lstatSync(path.join(root, 'c1'));
    expect([st.mode & 0o7777, st.uid, st.gid, st.ino]).toEqual([0o640, 0, 0, r.objAttr!.fileid]);
    const again = await nfs.create(s.root, 'c1', { mode: 0o600 });
    expect(again.status).toBe(NfsStat.OK);
    expect(again.objAttr!.fileid).toBe(r.objAttr!.fileid);
  });

  it('GUARDED refuses an existing name with EXIST', async () => {
    expect((await nfs.create(s.root, 'g1', { mode: 0o644 }, CreateMode.GUARDED)).status).toBe(NfsStat.OK);
    expect((await nfs.create(s.root, 'g1', { mode: 0o644 }, CreateMode.GUARDED)).status).toBe(NfsStat.EXIST);
  });

  it('EXCLUSIVE with the same verifier succeeds once and again on retransmission; another verifier is EXIST', async () => {
    const verf = Buffer.from('01234567');
    const first = await nfs.create(s.root, 'x1', {}, CreateMode.EXCLUSIVE, verf);
    expect(first.status).toBe(NfsStat.OK);
    const retry = await nfs.create(s.root, 'x1', {}, CreateMode.EXCLUSIVE, verf);
    expect(retry.status).toBe(NfsStat.OK);
    expect(retry.objAttr!.fileid).toBe(first.objAttr!.fileid);
    expect((await nfs.create(s.root, 'x1', {}, CreateMode.EXCLUSIVE, Buffer.from('76543210'))).status).toBe(NfsStat.EXIST);
  });

  it('a user creates files it owns where it may write, and nowhere else', async () => {
    const u = await asUser(1000);
    const tmp = await fh('tmp');
    const r = await u.create(tmp, 'mine', { mode: 0o600 });
    expect(r.status).toBe(NfsStat.OK);
    expect([r.objAttr!.uid, r.objAttr!.gid]).toEqual([1000, 1000]);
    expect((await u.create(await fh('locked'), 'nope', { mode: 0o600 })).status).toBe(NfsStat.ACCES);
    expect(fs.existsSync(path.join(root, 'locked', 'nope'))).toBe(false);
  });

  it('refuses names that are too long or not names', async () => {
    expect((await nfs.create(s.root, 'n'.repeat(256))).status).toBe(NfsStat.NAMETOOLONG);
    for (const bad of ['.', '..', 'a/b', '']) expect((await nfs.create(s.root, bad)).status, bad).toBe(NfsStat.ACCES);
  });
});

describe('WRITE and COMMIT', () => {
  it('UNSTABLE writes are readable at once and made durable by COMMIT with the same verifier', async () => {
    const f = (await nfs.create(s.root, 'w1', { mode: 0o644 })).fh!;
    const w1 = await nfs.write(f, 0, Buffer.from('hello '), StableHow.UNSTABLE);
    const w2 = await nfs.write(f, 6, Buffer.from('world\n'), StableHow.UNSTABLE);
    expect([w1.status, w1.count, w1.committed]).toEqual([NfsStat.OK, 6, StableHow.UNSTABLE]);
    expect(w2.wcc.before!.size).toBe(6);
    expect(w2.wcc.after!.size).toBe(12);
    const c = await nfs.commit(f);
    expect(c.status).toBe(NfsStat.OK);
    expect(c.verf!.equals(w1.verf!)).toBe(true);
    expect(fs.readFileSync(path.join(root, 'w1'), 'utf8')).toBe('hello world\n');
  });

  it('FILE_SYNC and DATA_SYNC writes report their stability; a write past the end extends the file', async () => {
    const f = (await nfs.create(s.root, 'w2', { mode: 0o644 })).fh!;
    expect((await nfs.write(f, 0, Buffer.from('abc'), StableHow.FILE_SYNC)).committed).toBe(StableHow.FILE_SYNC);
    expect((await nfs.write(f, 10, Buffer.from('z'), StableHow.DATA_SYNC)).committed).toBe(StableHow.DATA_SYNC);
    const local = fs.readFileSync(path.join(root, 'w2'));
    expect(local.length).toBe(11);
    expect(local.subarray(0, 3).toString()).toBe('abc');
  });

  it('WRITE to a directory is ISDIR; a user may not write a root file it cannot write', async () => {
    expect((await nfs.write(s.root, 0, Buffer.from('x'))).status).toBe(NfsStat.ISDIR);
    fs.writeFileSync(path.join(root, 'rootonly'), 'r');
    fs.chmodSync(path.join(root, 'rootonly'), 0o644);
    const u = await asUser(1000);
    expect((await u.write(await fh('rootonly'), 0, Buffer.from('x'))).status).toBe(NfsStat.ACCES);
  });

  it('a write by a non-root user clears setuid, as the kernel does', async () => {
    const u = await asUser(1000);
    const f = (await u.create(await fh('tmp'), 'suid', { mode: 0o4755 })).fh!;
    expect((await u.getattr(f)).attr!.mode).toBe(0o4755);
    expect((await u.write(f, 0, Buffer.from('#!'))).status).toBe(NfsStat.OK);
    expect((await u.getattr(f)).attr!.mode).toBe(0o755);
  });

  it('the owner may write a file it created read-only (tar, cp -p)', async () => {
    const u = await asUser(1000);
    const f = (await u.create(await fh('tmp'), 'ro-by-owner', { mode: 0o444 })).fh!;
    expect((await u.write(f, 0, Buffer.from('data'))).status).toBe(NfsStat.OK);
  });
});

describe('SETATTR', () => {
  it('sets mode, size, owner and times, with pre and post attributes', async () => {
    const f = (await nfs.create(s.root, 'sa', { mode: 0o644 })).fh!;
    await nfs.write(f, 0, Buffer.from('0123456789'));
    const r = await nfs.setattr(f, { mode: 0o600, size: 4, uid: 1234, gid: 4321, mtime: { sec: 1_000_000_000, nsec: 0 }, atime: 'server' });
    expect(r.status).toBe(NfsStat.OK);
    expect(r.wcc.before!.size).toBe(10);
    const a = r.wcc.after!;
    expect([a.mode, a.size, a.uid, a.gid, a.mtime.sec]).toEqual([0o600, 4, 1234, 4321, 1_000_000_000]);
    expect(Math.abs(a.atime.sec - Date.now() / 1000)).toBeLessThan(5);
  });

  it('a ctime guard that does not match is NOT_SYNC and changes nothing', async () => {
    const f = (await nfs.create(s.root, 'guarded', { mode: 0o644 })).fh!;
    const r = await nfs.setattr(f, { mode: 0o600 }, { sec: 1, nsec: 0 });
    expect(r.status).toBe(NfsStat.NOT_SYNC);
    expect((await nfs.getattr(f)).attr!.mode).toBe(0o644);
    const ctime = (await nfs.getattr(f)).attr!.ctime;
    expect((await nfs.setattr(f, { mode: 0o600 }, ctime)).status).toBe(NfsStat.OK);
  });

  it('only the owner changes the mode, only root the owner', async () => {
    const u = await asUser(1000);
    const other = await asUser(1001);
    const f = (await u.create(await fh('tmp'), 'owned', { mode: 0o644 })).fh!;
    expect((await other.setattr(f, { mode: 0o777 })).status).toBe(NfsStat.PERM);
    expect((await u.setattr(f, { uid: 1001 })).status).toBe(NfsStat.PERM);
    expect((await u.setattr(f, { mode: 0o600 })).status).toBe(NfsStat.OK);
  });
});

describe('MKDIR, SYMLINK, MKNOD', () => {
  it('MKDIR makes a directory with its mode; EXIST the second time', async () => {
    const r = await nfs.mkdir(s.root, 'd1', { mode: 0o750 });
    expect(r.status).toBe(NfsStat.OK);
    expect([r.objAttr!.type, r.objAttr!.mode]).toEqual([FType.DIR, 0o750]);
    expect((await nfs.mkdir(s.root, 'd1', { mode: 0o750 })).status).toBe(NfsStat.EXIST);
  });

  it('SYMLINK stores the target verbatim and is never followed', async () => {
    const r = await nfs.symlink(s.root, 'l1', '/etc/passwd');
    expect(r.status).toBe(NfsStat.OK);
    expect((await nfs.readlink(r.fh!)).data).toBe('/etc/passwd');
    expect(fs.readlinkSync(path.join(root, 'l1'))).toBe('/etc/passwd');
  });

  it('MKNOD makes character and block devices, FIFOs and sockets; only root makes devices', async () => {
    const chr = await nfs.mknod(s.root, 'null', FType.CHR, { mode: 0o666 }, { major: 1, minor: 3 });
    expect(chr.status).toBe(NfsStat.OK);
    expect([chr.objAttr!.type, chr.objAttr!.rdev.major, chr.objAttr!.rdev.minor, chr.objAttr!.mode]).toEqual([FType.CHR, 1, 3, 0o666]);
    expect((await nfs.mknod(s.root, 'loop0', FType.BLK, { mode: 0o660 }, { major: 7, minor: 0 })).objAttr!.type).toBe(FType.BLK);
    expect((await nfs.mknod(s.root, 'fifo', FType.FIFO, { mode: 0o600 })).objAttr!.type).toBe(FType.FIFO);
    expect((await nfs.mknod(s.root, 'sock', FType.SOCK, { mode: 0o755 })).objAttr!.type).toBe(FType.SOCK);
    expect(fs.lstatSync(path.join(root, 'fifo')).isFIFO()).toBe(true);
    const u = await asUser(1000);
    expect((await u.mknod(await fh('tmp'), 'dev', FType.CHR, { mode: 0o666 }, { major: 1, minor: 3 })).status).toBe(NfsStat.PERM);
    expect((await nfs.mknod(s.root, 'weird', FType.REG)).status).toBe(NfsStat.BADTYPE);
  });
});

describe('REMOVE, RMDIR', () => {
  it('REMOVE of a file makes its handle STALE; of a directory ISDIR; of nothing NOENT', async () => {
    const f = (await nfs.create(s.root, 'gone', { mode: 0o644 })).fh!;
    const r = await nfs.remove(s.root, 'gone');
    expect(r.status).toBe(NfsStat.OK);
    expect(r.wcc.after).not.toBeNull();
    expect((await nfs.getattr(f)).status).toBe(NfsStat.STALE);
    await nfs.mkdir(s.root, 'adir', { mode: 0o755 });
    expect((await nfs.remove(s.root, 'adir')).status).toBe(NfsStat.ISDIR);
    expect((await nfs.remove(s.root, 'never-was')).status).toBe(NfsStat.NOENT);
  });

  it('RMDIR: a non-empty directory is NOTEMPTY, a file NOTDIR, an empty directory goes', async () => {
    const d = (await nfs.mkdir(s.root, 'full', { mode: 0o755 })).fh!;
    await nfs.create(d, 'inside', { mode: 0o644 });
    expect((await nfs.rmdir(s.root, 'full')).status).toBe(NfsStat.NOTEMPTY);
    await nfs.create(s.root, 'plain', { mode: 0o644 });
    expect((await nfs.rmdir(s.root, 'plain')).status).toBe(NfsStat.NOTDIR);
    await nfs.mkdir(s.root, 'empty', { mode: 0o755 });
    expect((await nfs.rmdir(s.root, 'empty')).status).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'empty'))).toBe(false);
  });

  it('in a sticky directory a user may not remove another user\'s file; the owner may', async () => {
    const alice = await asUser(1000);
    const bob = await asUser(1001);
    const tmp = await fh('tmp');
    expect((await alice.create(tmp, 'alices', { mode: 0o666 })).status).toBe(NfsStat.OK);
    expect((await bob.remove(tmp, 'alices')).status).toBe(NfsStat.PERM);
    expect((await bob.rename(tmp, 'alices', tmp, 'bobs-now')).status).toBe(NfsStat.PERM);
    expect((await alice.remove(tmp, 'alices')).status).toBe(NfsStat.OK);
  });
});

describe('RENAME and LINK', () => {
  it('renames within and across directories and over an existing file; handles stay valid', async () => {
    const f = (await nfs.create(s.root, 'r1', { mode: 0o644 })).fh!;
    await nfs.write(f, 0, Buffer.from('payload'));
    const dir = (await nfs.mkdir(s.root, 'rdir', { mode: 0o755 })).fh!;
    const within = await nfs.rename(s.root, 'r1', s.root, 'r2');
    expect(within.status).toBe(NfsStat.OK);
    expect((await nfs.rename(s.root, 'r2', dir, 'r3')).status).toBe(NfsStat.OK);
    await nfs.create(dir, 'victim', { mode: 0o644 });
    const over = await nfs.rename(dir, 'r3', dir, 'victim');
    expect(over.status).toBe(NfsStat.OK);
    expect((await nfs.read(f, 0, 100)).data.toString()).toBe('payload');
    expect(fs.readFileSync(path.join(root, 'rdir', 'victim'), 'utf8')).toBe('payload');
    expect((await nfs.lookup(dir, 'victim')).fh!.equals(f)).toBe(true);
  });

  it('a directory renames over an empty directory, not over a non-empty one, and its subtree follows', async () => {
    const a = (await nfs.mkdir(s.root, 'movable', { mode: 0o755 })).fh!;
    const inner = (await nfs.create(a, 'file', { mode: 0o644 })).fh!;
    await nfs.mkdir(s.root, 'emptytarget', { mode: 0o755 });
    expect((await nfs.rename(s.root, 'movable', s.root, 'emptytarget')).status).toBe(NfsStat.OK);
    expect((await nfs.getattr(inner)).status).toBe(NfsStat.OK);
    const b = (await nfs.mkdir(s.root, 'nonempty', { mode: 0o755 })).fh!;
    await nfs.create(b, 'x', { mode: 0o644 });
    const r = await nfs.rename(s.root, 'emptytarget', s.root, 'nonempty');
    expect([NfsStat.NOTEMPTY, NfsStat.EXIST]).toContain(r.status);
  });

  it('LINK adds a name to a file, not to a directory', async () => {
    const f = (await nfs.create(s.root, 'orig', { mode: 0o644 })).fh!;
    const r = await nfs.link(f, s.root, 'alias');
    expect(r.status).toBe(NfsStat.OK);
    expect(r.fileAttr!.nlink).toBe(2);
    expect(fs.lstatSync(path.join(root, 'alias')).ino).toBe(fs.lstatSync(path.join(root, 'orig')).ino);
    expect((await nfs.link(await fh('locked'), s.root, 'dirlink')).status).toBe(NfsStat.ISDIR);
    expect((await nfs.link(f, s.root, 'alias')).status).toBe(NfsStat.EXIST);
  });
});

describe('export options', () => {
  it('root_squash makes root the anonymous user for new files and for permission checks', async () => {
    const dir = path.join(work, 'squashed');
    fs.mkdirSync(dir, { mode: 0o777 });
    fs.chmodSync(dir, 0o777);
    fs.writeFileSync(path.join(dir, 'rootfile'), 'x', { mode: 0o600 });
    const srv = await startServer(parseExports(`${dir} 127.0.0.1(rw,insecure,root_squash)\n`, 'sq'), null);
    const sq = await mountSession(srv, dir);
    try {
      const r = await sq.nfs.create(sq.root, 'made-by-root', { mode: 0o644 });
      expect(r.status).toBe(NfsStat.OK);
      expect([r.objAttr!.uid, r.objAttr!.gid]).toEqual([65534, 65534]);
      const rf = (await sq.nfs.lookup(sq.root, 'rootfile')).fh!;
      expect((await sq.nfs.read(rf, 0, 10)).status).toBe(NfsStat.ACCES);
    } finally {
      await sq.close();
      await srv.stop();
    }
  });
});

describe('retransmissions (duplicate-request cache)', () => {
  it('a retransmitted REMOVE gets the first reply (OK), not NOENT, and runs once', async () => {
    await nfs.create(s.root, 'retx', { mode: 0o644 });
    const { encodeDiropArgs } = await import('../../src/client/nfs3-args.js');
    const { NFS_PROGRAM, NfsProc } = await import('../../src/nfs/constants.js');
    const call = s.rpc.encodeCall(NFS_PROGRAM, 3, NfsProc.REMOVE, (w) => encodeDiropArgs(w, s.root, 'retx'));
    const first = Buffer.from(await s.rpc.callRaw(call));
    const again = Buffer.from(await s.rpc.callRaw(call));
    expect(again.equals(first)).toBe(true);
    // The accepted reply's nfsstat3 follows the 24-byte RPC reply header.
    expect(first.readUInt32BE(24)).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'retx'))).toBe(false);
    // A new call (new xid) for the same name is executed and finds nothing.
    expect((await nfs.remove(s.root, 'retx')).status).toBe(NfsStat.NOENT);
  });
});

describe('export options on every call', () => {
  it('secure refuses NFS calls from an unprivileged source port even with a valid handle; a privileged port is served', async () => {
    const dir = path.join(work, 'secure');
    fs.mkdirSync(dir);
    const srv = await startServer(parseExports(`${dir} 127.0.0.1(rw,no_root_squash)\n`, 'secure'), null);
    try {
      const priv = await mountSession(srv, dir, { privileged: true });
      expect((await priv.nfs.getattr(priv.root)).status).toBe(NfsStat.OK);
      const unpriv = await RpcClient.connect({ host: '127.0.0.1', port: srv.ports.nfs });
      const r = await new Nfs3Client(unpriv).getattr(priv.root);
      expect(r.status).toBe(NfsStat.ACCES);
      await unpriv.close();
      await priv.close();
    } finally {
      await srv.stop();
    }
  });

  it('all_squash with anonuid/anongid makes every caller that user', async () => {
    const dir = path.join(work, 'allsquash');
    fs.mkdirSync(dir, { mode: 0o777 });
    fs.chmodSync(dir, 0o777);
    const srv = await startServer(parseExports(`${dir} 127.0.0.1(rw,insecure,all_squash,anonuid=4242,anongid=4343)\n`, 'sq'), null);
    const sq = await mountSession(srv, dir, { auth: { uid: 1000, gid: 1000, gids: [] } });
    try {
      const r = await sq.nfs.create(sq.root, 'whose', { mode: 0o644 });
      expect(r.status).toBe(NfsStat.OK);
      expect([r.objAttr!.uid, r.objAttr!.gid]).toEqual([4242, 4343]);
    } finally {
      await sq.close();
      await srv.stop();
    }
  });

  it('RENAME and LINK across two exports are XDEV', async () => {
    const a = path.join(work, 'exp-a');
    const b = path.join(work, 'exp-b');
    fs.mkdirSync(a);
    fs.mkdirSync(b);
    fs.writeFileSync(path.join(a, 'f'), 'x');
    const srv = await startServer(parseExports(`${a} 127.0.0.1(rw,insecure,no_root_squash)\n${b} 127.0.0.1(rw,insecure,no_root_squash)\n`, 'two'), null);
    const sa = await mountSession(srv, a);
    const sb = await mountSession(srv, b);
    try {
      const f = (await sa.nfs.lookup(sa.root, 'f')).fh!;
      expect((await sa.nfs.rename(sa.root, 'f', sb.root, 'f')).status).toBe(NfsStat.XDEV);
      expect((await sa.nfs.link(f, sb.root, 'f')).status).toBe(NfsStat.XDEV);
      expect(fs.existsSync(path.join(a, 'f'))).toBe(true);
    } finally {
      await sa.close();
      await sb.close();
      await srv.stop();
    }
  });
});
