/**
 * Per-client remapping through the real server and our client: three simulated nodes
 * (127.0.0.11, .12, .13 as source addresses) mount one export and each sees its own files
 * (cluster-tags.md, "Resolution" and "What a client sees"); an admin client (127.0.0.1,
 * `cluster_admin`) sees the raw names; a fourth node has no variants and sees the masters.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateMode, FType, NfsStat } from '../../src/nfs/constants.js';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { fhOf, mountSession, parseExports, type Session, startServer } from '../helpers/inproc-server.js';
import { parsePromText } from '../helpers/prom-text.js';

let work: string;
let root: string;
let server: ClusterNfsServer;
const nodes: Session[] = [];
let admin: Session;
let other: Session;

const NODE_IPS = ['127.0.0.11', '127.0.0.12', '127.0.0.13'];

function put(rel: string, content: string, mode = 0o644): void {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content, { mode });
  fs.chmodSync(p, mode);
}

async function cat(s: Session, rel: string): Promise<string> {
  const r = await s.nfs.readAll(await fhOf(s, rel));
  expect(r.status).toBe(NfsStat.OK);
  return r.data.toString();
}

async function names(s: Session, rel: string): Promise<string[]> {
  const r = await s.nfs.readdirplusAll(await fhOf(s, rel));
  expect(r.status).toBe(NfsStat.OK);
  return r.entries.map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort();
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-remap-'));
  root = path.join(work, 'root');
  put('etc/hostname', 'master\n');
  for (const ip of NODE_IPS) put(`etc/hostname$$IP=${ip}$$`, `node ${ip}\n`);
  put('etc/hosts', '127.0.0.1 localhost\n');
  put('etc/hosts.allow$$HOST=n11$$', 'ALL: n11\n');
  put('etc/motd$$IP=127.0.0.0_8$$', 'loopback motd\n');
  put('etc/motd$$IP=127.0.0.0_24$$', 'closer motd\n');
  put('etc/only12$$IP=127.0.0.12$$', 'for 12 only\n');
  put('var/log/$$CREATE=IP$$', '');
  put('var/spool/$$COW=IP$$', '');
  put('var/spool/messages', 'master log\n', 0o640);
  fs.chownSync(path.join(root, 'var/spool/messages'), 1234, 5678);
  fs.utimesSync(path.join(root, 'var/spool/messages'), new Date('2020-01-02T03:04:05Z'), new Date('2021-02-03T04:05:06Z'));
  put('srv/data/file', 'shared srv\n');
  put('srv$$IP=127.0.0.11$$/data/file', 'srv of 11\n');
  put('scratch/keep', 'k\n');
  put('run/$$ALWAYS=IP$$', '');
  put('run/pid', 'master pid\n');
  put('tmp/$$CREATE=CLIENT$$', '');
  put('home/profile', 'everyone\n');
  put('home/profile$$UID=1000$$', 'uid 1000\n');
  put('home/profile$$GID=2000$$', 'gid 2000\n');
  fs.writeFileSync(path.join(work, 'hosts'), '127.0.0.11 n11.cluster n11\n127.0.0.12 n12\n# no name for .13\n');
  const exports = parseExports(
    `${root} 127.0.0.1(rw,no_root_squash,insecure,cluster,cluster_admin) 127.0.0.0/8(rw,no_root_squash,insecure,cluster)\n`,
    'remap-test',
  );
  server = await startServer(exports, null, { metricsPort: 0, hostsFiles: [path.join(work, 'hosts')] });
  for (const ip of NODE_IPS) nodes.push(await mountSession(server, root, { localAddress: ip }));
  admin = await mountSession(server, root, { localAddress: '127.0.0.1' });
  other = await mountSession(server, root, { localAddress: '127.0.0.14' });
});

afterAll(async () => {
  await Promise.all([...nodes, admin, other].filter(Boolean).map((s) => s.close()));
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('three nodes, one export', () => {
  it('each node reads its own etc/hostname; a node without a variant reads the master', async () => {
    for (let i = 0; i < 3; i++) expect(await cat(nodes[i], 'etc/hostname')).toBe(`node ${NODE_IPS[i]}\n`);
    expect(await cat(other, 'etc/hostname')).toBe('master\n');
    expect(await cat(nodes[0], 'etc/hostname$$$$')).toBe('master\n');
  });

  it('READDIRPLUS lists each base once with the resolved entry\'s fileid; markers and others\' variants are hidden', async () => {
    const n12 = await nodes[1].nfs.readdirplusAll(await fhOf(nodes[1], 'etc'));
    const byName = new Map(n12.entries.map((e) => [e.name, e]));
    expect([...byName.keys()].filter((n) => n !== '.' && n !== '..').sort()).toEqual(['hostname', 'hosts', 'motd', 'only12']);
    const variant = fs.lstatSync(path.join(root, 'etc/hostname$$IP=127.0.0.12$$'));
    expect(byName.get('hostname')!.fileid).toBe(variant.ino);
    expect(byName.get('hostname')!.attr!.fileid).toBe(variant.ino);
    expect(byName.get('hostname')!.attr!.size).toBe(variant.size);
    // READDIR agrees with READDIRPLUS and LOOKUP
    const plain = await nodes[1].nfs.readdirAll(await fhOf(nodes[1], 'etc'));
    expect(plain.entries.find((e) => e.name === 'hostname')!.fileid).toBe(variant.ino);
    expect((await nodes[1].nfs.lookupPath(nodes[1].root, 'etc/hostname')).objAttr!.fileid).toBe(variant.ino);
    expect(await names(nodes[0], 'etc')).toEqual(['hostname', 'hosts', 'hosts.allow', 'motd']);
    expect(await names(other, 'etc')).toEqual(['hostname', 'hosts', 'motd']);
    expect(await names(nodes[0], 'var/log')).toEqual([]);
  });

  it('a READDIR continued from a cookie resumes at the same base name (cookies are the base names\')', async () => {
    const dir = await fhOf(nodes[0], 'etc');
    const all = await nodes[0].nfs.readdirAll(dir);
    const firstPage = await nodes[0].nfs.readdir(dir, 0n, null, 200);
    expect(firstPage.eof).toBe(false);
    const last = firstPage.entries[firstPage.entries.length - 1];
    const rest = await nodes[0].nfs.readdirAll(dir);
    const idx = rest.entries.findIndex((e) => e.cookie === last.cookie);
    expect(idx).toBeGreaterThanOrEqual(0);
    const next = await nodes[0].nfs.readdir(dir, last.cookie, firstPage.cookieverf, 8192);
    expect([...firstPage.entries, ...next.entries].map((e) => e.name)).toEqual(all.entries.map((e) => e.name));
  });

  it('HOST tags use the hosts file: n11 sees hosts.allow, and hosts does not match hosts.allow$$HOST=n11$$', async () => {
    expect(await cat(nodes[0], 'etc/hosts.allow')).toBe('ALL: n11\n');
    expect(await cat(nodes[0], 'etc/hosts')).toBe('127.0.0.1 localhost\n');
    expect((await nodes[1].nfs.lookupPath(nodes[1].root, 'etc/hosts.allow')).status).toBe(NfsStat.NOENT);
  });

  it('subnet variants: the longest prefix wins', async () => {
    expect(await cat(nodes[0], 'etc/motd')).toBe('closer motd\n');
  });

  it('the admin client sees raw names and the masters', async () => {
    const raw = await names(admin, 'etc');
    expect(raw).toContain('hostname$$IP=127.0.0.11$$');
    expect(raw).toContain('hostname');
    expect(await cat(admin, 'etc/hostname')).toBe('master\n');
    expect(await cat(admin, 'etc/hostname$$IP=127.0.0.12$$')).toBe('node 127.0.0.12\n');
    expect(await names(admin, 'var/log')).toContain('$$CREATE=IP$$');
  });

  it('LOOKUP of "." is not remapped', async () => {
    const etc = await fhOf(nodes[0], 'etc');
    const dot = await nodes[0].nfs.lookup(etc, '.');
    expect(dot.status).toBe(NfsStat.OK);
    expect(dot.fh!.equals(etc)).toBe(true);
  });
});

describe('MNT of a subdirectory', () => {
  async function mountedFile(ip: string, dir: string): Promise<string> {
    const s = await mountSession(server, `${root}/${dir}`, { localAddress: ip });
    try {
      return await cat(s, 'file');
    } finally {
      await s.close();
    }
  }

  it('resolves each component as the node\'s LOOKUPs would; an admin gets the raw names', async () => {
    // 127.0.0.11 has srv$$IP=127.0.0.11$$; 127.0.0.12 has no variant and gets the master.
    expect(await mountedFile('127.0.0.11', 'srv/data')).toBe('srv of 11\n');
    expect(await mountedFile('127.0.0.12', 'srv/data')).toBe('shared srv\n');
    expect(await mountedFile('127.0.0.1', 'srv/data')).toBe('shared srv\n');
    expect(await mountedFile('127.0.0.1', 'srv$$IP=127.0.0.11$$/data')).toBe('srv of 11\n');
    // A raw tagged path is no way around remapping for a node.
    await expect(mountSession(server, `${root}/srv$$IP=127.0.0.11$$/data`, { localAddress: '127.0.0.12' })).rejects.toMatchObject({ mountStatus: 2 });
  });
});

describe('isolation: no node reaches another\'s variants', () => {
  it('raw tagged names are NOENT to look up and ACCES to create or rename to', async () => {
    const etc = await fhOf(nodes[0], 'etc');
    expect((await nodes[0].nfs.lookup(etc, 'hostname$$IP=127.0.0.12$$')).status).toBe(NfsStat.NOENT);
    expect((await nodes[0].nfs.lookup(etc, 'hostname$$IP=127.0.0.11$$')).status).toBe(NfsStat.NOENT);
    expect((await nodes[0].nfs.lookup(etc, '$$CREATE=IP$$')).status).toBe(NfsStat.NOENT);
    expect((await nodes[0].nfs.create(etc, 'planted$$IP=127.0.0.12$$', { mode: 0o644 })).status).toBe(NfsStat.ACCES);
    expect((await nodes[0].nfs.mkdir(etc, 'd$$CLIENT$$', { mode: 0o755 })).status).toBe(NfsStat.ACCES);
    expect((await nodes[0].nfs.symlink(etc, 'l$$HOST=n12$$', 'x')).status).toBe(NfsStat.ACCES);
    expect((await nodes[0].nfs.rename(etc, 'hosts', etc, 'hosts$$IP=127.0.0.12$$')).status).toBe(NfsStat.ACCES);
    expect((await nodes[0].nfs.remove(etc, 'only12$$IP=127.0.0.12$$')).status).toBe(NfsStat.NOENT);
    expect(fs.existsSync(path.join(root, 'etc/planted$$IP=127.0.0.12$$'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'etc/only12$$IP=127.0.0.12$$'))).toBe(true);
  });

  it('a variant\'s handle is STALE for another node: no read, no write, no setattr, no lookup below it', async () => {
    const h12 = await fhOf(nodes[1], 'etc/hostname');
    for (const thief of [nodes[0], nodes[2], other]) {
      expect((await thief.nfs.getattr(h12)).status).toBe(NfsStat.STALE);
      expect((await thief.nfs.read(h12, 0, 100)).status).toBe(NfsStat.STALE);
      expect((await thief.nfs.write(h12, 0, Buffer.from('pwned'))).status).toBe(NfsStat.STALE);
      expect((await thief.nfs.setattr(h12, { mode: 0o777 })).status).toBe(NfsStat.STALE);
    }
    expect(await cat(nodes[1], 'etc/hostname')).toBe('node 127.0.0.12\n');
    // A tagged directory: everything below it belongs to that node.
    const srv11 = await fhOf(nodes[0], 'srv/data');
    expect((await nodes[1].nfs.lookup(srv11, 'file')).status).toBe(NfsStat.STALE);
    expect((await nodes[1].nfs.getattr(srv11)).status).toBe(NfsStat.STALE);
    // The admin may use any handle.
    expect((await admin.nfs.getattr(h12)).status).toBe(NfsStat.OK);
  });

  it('tagged directories work per path component: srv$$IP=…$$/data/file is node 11\'s /srv', async () => {
    expect(await cat(nodes[0], 'srv/data/file')).toBe('srv of 11\n');
    expect(await cat(nodes[1], 'srv/data/file')).toBe('shared srv\n');
    expect(await names(nodes[0], '')).toContain('srv');
    expect((await names(nodes[0], '')).filter((n) => n.startsWith('srv'))).toEqual(['srv']);
  });
});

describe('writes under markers', () => {
  it('$$CREATE=IP$$: every node writes its own var/log/messages; no master appears', async () => {
    for (let i = 0; i < 3; i++) {
      const log = await fhOf(nodes[i], 'var/log');
      const c = await nodes[i].nfs.create(log, 'messages', { mode: 0o644 }, CreateMode.GUARDED);
      expect(c.status).toBe(NfsStat.OK);
      expect((await nodes[i].nfs.write(c.fh!, 0, Buffer.from(`boot of ${NODE_IPS[i]}\n`))).status).toBe(NfsStat.OK);
    }
    for (let i = 0; i < 3; i++) {
      expect(await cat(nodes[i], 'var/log/messages')).toBe(`boot of ${NODE_IPS[i]}\n`);
      expect(fs.readFileSync(path.join(root, `var/log/messages$$IP=${NODE_IPS[i]}$$`), 'utf8')).toBe(`boot of ${NODE_IPS[i]}\n`);
      expect(await names(nodes[i], 'var/log')).toEqual(['messages']);
    }
    expect(fs.existsSync(path.join(root, 'var/log/messages'))).toBe(false);
    expect((await other.nfs.lookupPath(other.root, 'var/log/messages')).status).toBe(NfsStat.NOENT);
    // A second GUARDED create by the same node finds its own file.
    expect((await nodes[0].nfs.create(await fhOf(nodes[0], 'var/log'), 'messages', { mode: 0o644 }, CreateMode.GUARDED)).status).toBe(NfsStat.EXIST);
  });

  it('RENAME and LINK inside a CREATE=IP directory stay per node (logrotate)', async () => {
    const log = await fhOf(nodes[0], 'var/log');
    expect((await nodes[0].nfs.rename(log, 'messages', log, 'messages.1')).status).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'var/log/messages.1$$IP=127.0.0.11$$'))).toBe(true);
    expect(await cat(nodes[0], 'var/log/messages.1')).toBe('boot of 127.0.0.11\n');
    expect((await nodes[0].nfs.lookup(log, 'messages')).status).toBe(NfsStat.NOENT);
    expect(await cat(nodes[1], 'var/log/messages')).toBe('boot of 127.0.0.12\n');
    expect((await nodes[1].nfs.lookup(await fhOf(nodes[1], 'var/log'), 'messages.1')).status).toBe(NfsStat.NOENT);
    const f = await fhOf(nodes[0], 'var/log/messages.1');
    expect((await nodes[0].nfs.link(f, log, 'hard')).status).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'var/log/hard$$IP=127.0.0.11$$'))).toBe(true);
    expect((await nodes[0].nfs.remove(log, 'hard')).status).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'var/log/hard$$IP=127.0.0.11$$'))).toBe(false);
  });

  it('$$COW=IP$$: reads see the master until the first write, which copies it up; the handle stays valid', async () => {
    const h = await fhOf(nodes[0], 'var/spool/messages');
    expect(await cat(nodes[0], 'var/spool/messages')).toBe('master log\n');
    const masterIno = fs.statSync(path.join(root, 'var/spool/messages')).ino;
    // A caller the master's mode does not let write changes nothing and copies nothing.
    const rpc = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, localAddress: '127.0.0.11', auth: { uid: 4321, gid: 4321, gids: [] } });
    try {
      expect((await new Nfs3Client(rpc).write(h, 0, Buffer.from('x'))).status).toBe(NfsStat.ACCES);
    } finally {
      await rpc.close();
    }
    expect(fs.existsSync(path.join(root, 'var/spool/messages$$IP=127.0.0.11$$'))).toBe(false);
    const w = await nodes[0].nfs.write(h, 11, Buffer.from('node 11 line\n'));
    expect(w.status).toBe(NfsStat.OK);
    // The reply's attributes are the copy's, under the handle's fileid (a kernel client marks an
    // inode whose fileid changes stale).
    expect(w.wcc.after!.size).toBe(24);
    expect(w.wcc.after!.fileid).toBe(masterIno);
    const variantPath = path.join(root, 'var/spool/messages$$IP=127.0.0.11$$');
    // Before anything reads the copy (reading moves atime).
    const vst = fs.statSync(variantPath);
    expect(fs.readFileSync(variantPath, 'utf8')).toBe('master log\nnode 11 line\n');
    expect(fs.readFileSync(path.join(root, 'var/spool/messages'), 'utf8')).toBe('master log\n');
    // Content, mode, owner copied; times of the master (before the write changed mtime).
    expect(vst.mode & 0o7777).toBe(0o640);
    expect([vst.uid, vst.gid]).toEqual([1234, 5678]);
    // Times are copied to the microsecond (what utimes takes).
    expect(vst.atimeMs).toBeCloseTo(fs.statSync(path.join(root, 'var/spool/messages')).atimeMs, 2);
    // The same handle now reads the variant for node 11 …
    const r = await nodes[0].nfs.readAll(h);
    expect(r.data.toString()).toBe('master log\nnode 11 line\n');
    expect(r.fileAttr!.fileid).toBe(masterIno);
    expect(r.fileAttr!.size).toBe(vst.size);
    expect((await nodes[0].nfs.getattr(h)).attr!.fileid).toBe(masterIno);
    expect((await nodes[0].nfs.getattr(h)).attr!.size).toBe(vst.size);
    // … a fresh LOOKUP gives the variant, and others still see the master.
    expect((await nodes[0].nfs.lookupPath(nodes[0].root, 'var/spool/messages')).objAttr!.fileid).toBe(vst.ino);
    expect(await cat(nodes[1], 'var/spool/messages')).toBe('master log\n');
    const h12 = await fhOf(nodes[1], 'var/spool/messages');
    expect((await nodes[1].nfs.readAll(h12)).data.toString()).toBe('master log\n');
  });

  it('COW: SETATTR and CREATE UNCHECKED (open for truncate) copy up too', async () => {
    const h12 = await fhOf(nodes[1], 'var/spool/messages');
    expect((await nodes[1].nfs.setattr(h12, { mode: 0o600 })).status).toBe(NfsStat.OK);
    const v12 = path.join(root, 'var/spool/messages$$IP=127.0.0.12$$');
    expect(fs.statSync(v12).mode & 0o7777).toBe(0o600);
    expect(fs.readFileSync(v12, 'utf8')).toBe('master log\n');
    const spool = await fhOf(nodes[2], 'var/spool');
    const c = await nodes[2].nfs.create(spool, 'messages', { size: 0 }, CreateMode.UNCHECKED);
    expect(c.status).toBe(NfsStat.OK);
    const v13 = path.join(root, 'var/spool/messages$$IP=127.0.0.13$$');
    expect(fs.statSync(v13).size).toBe(0);
    expect(fs.readFileSync(path.join(root, 'var/spool/messages'), 'utf8')).toBe('master log\n');
    expect(fs.statSync(path.join(root, 'var/spool/messages')).mode & 0o7777).toBe(0o640);
    // Removing the shared master through a COW name is refused.
    expect((await other.nfs.remove(await fhOf(other, 'var/spool'), 'messages')).status).toBe(NfsStat.ACCES);
  });

  it('after a variant is removed the next one in the order (here the master) shows again', async () => {
    const spool = await fhOf(nodes[1], 'var/spool');
    expect((await nodes[1].nfs.remove(spool, 'messages')).status).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'var/spool/messages$$IP=127.0.0.12$$'))).toBe(false);
    expect(await cat(nodes[1], 'var/spool/messages')).toBe('master log\n');
    expect(fs.readFileSync(path.join(root, 'var/spool/messages'), 'utf8')).toBe('master log\n');
  });

  it('a directory without tags: rule 1 reads the master, and a variant made through NFS is seen at once', async () => {
    // The server keeps no names for a directory without tags; the first tag must make it read
    // the directory again, though our own change leaves no mtime for it to notice later.
    expect(await cat(nodes[0], 'scratch/keep')).toBe('k\n');
    expect(await cat(nodes[0], 'scratch/keep$$$$')).toBe('k\n');
    const scratch = await fhOf(nodes[0], 'scratch');
    expect((await nodes[0].nfs.lookup(scratch, 'gone$$$$')).status).toBe(NfsStat.NOENT);
    expect(await names(nodes[0], 'scratch')).toEqual(['keep']);
    const c = await admin.nfs.create(await fhOf(admin, 'scratch'), 'keep$$IP=127.0.0.11$$', { mode: 0o644 }, CreateMode.GUARDED);
    expect(c.status).toBe(NfsStat.OK);
    expect((await admin.nfs.write(c.fh!, 0, Buffer.from('k of 11\n'))).status).toBe(NfsStat.OK);
    expect(await cat(nodes[0], 'scratch/keep')).toBe('k of 11\n');
    expect(await cat(nodes[1], 'scratch/keep')).toBe('k\n');
    expect(await cat(nodes[0], 'scratch/keep$$$$')).toBe('k\n');
    expect(await names(nodes[0], 'scratch')).toEqual(['keep']);
    expect((await admin.nfs.remove(await fhOf(admin, 'scratch'), 'keep$$IP=127.0.0.11$$')).status).toBe(NfsStat.OK);
    expect(await cat(nodes[0], 'scratch/keep')).toBe('k\n');
  });

  it('$$ALWAYS=IP$$: the node\'s variant even when only the master exists, so a create lands there', async () => {
    const run = await fhOf(nodes[0], 'run');
    expect((await nodes[0].nfs.lookup(run, 'pid')).status).toBe(NfsStat.NOENT);
    expect(await names(nodes[0], 'run')).toEqual([]);
    const c = await nodes[0].nfs.create(run, 'pid', { mode: 0o644 }, CreateMode.GUARDED);
    expect(c.status).toBe(NfsStat.OK);
    await nodes[0].nfs.write(c.fh!, 0, Buffer.from('4242\n'));
    expect(fs.readFileSync(path.join(root, 'run/pid$$IP=127.0.0.11$$'), 'utf8')).toBe('4242\n');
    expect(fs.readFileSync(path.join(root, 'run/pid'), 'utf8')).toBe('master pid\n');
    expect(await cat(nodes[0], 'run/pid')).toBe('4242\n');
    expect(await cat(nodes[0], 'run/pid$$$$')).toBe('master pid\n');
  });

  it('MKDIR, SYMLINK and MKNOD under a $$CREATE=CLIENT$$ marker make CLIENT variants', async () => {
    const tmp = await fhOf(nodes[1], 'tmp');
    expect((await nodes[1].nfs.mkdir(tmp, 'd', { mode: 0o755 })).status).toBe(NfsStat.OK);
    expect((await nodes[1].nfs.symlink(tmp, 'l', 'd')).status).toBe(NfsStat.OK);
    expect((await nodes[1].nfs.mknod(tmp, 'fifo', FType.FIFO, { mode: 0o600 })).status).toBe(NfsStat.OK);
    expect(fs.readdirSync(path.join(root, 'tmp')).sort()).toEqual(['$$CREATE=CLIENT$$', 'd$$CLIENT$$', 'fifo$$CLIENT$$', 'l$$CLIENT$$']);
    expect(fs.lstatSync(path.join(root, 'tmp/fifo$$CLIENT$$')).isFIFO()).toBe(true);
    // CLIENT variants serve any client.
    expect(await names(nodes[2], 'tmp')).toEqual(['d', 'fifo', 'l']);
    expect((await nodes[2].nfs.rmdir(tmp, 'd')).status).toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'tmp/d$$CLIENT$$'))).toBe(false);
  });

  it('UID and GID variants follow the call\'s AUTH_SYS credentials', async () => {
    const as = async (uid: number, gid: number) => {
      const rpc = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, localAddress: '127.0.0.14', auth: { uid, gid, gids: [] } });
      try {
        const nfs = new Nfs3Client(rpc);
        const l = await nfs.lookupPath(other.root, 'home/profile');
        return (await nfs.readAll(l.fh!)).data.toString();
      } finally {
        await rpc.close();
      }
    };
    expect(await as(1000, 100)).toBe('uid 1000\n');
    expect(await as(1001, 2000)).toBe('gid 2000\n');
    expect(await as(1001, 100)).toBe('everyone\n');
  });

  it('the masters are unchanged afterwards', () => {
    expect(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8')).toBe('master\n');
    expect(fs.readFileSync(path.join(root, 'var/spool/messages'), 'utf8')).toBe('master log\n');
    expect(fs.readFileSync(path.join(root, 'srv/data/file'), 'utf8')).toBe('shared srv\n');
    expect(fs.readdirSync(path.join(root, 'var/log')).sort()).toEqual(['$$CREATE=IP$$', 'messages$$IP=127.0.0.12$$', 'messages$$IP=127.0.0.13$$', 'messages.1$$IP=127.0.0.11$$']);
  });

  it('counts resolutions by rule and index cache use', () => {
    const st = server.remapper.stats;
    expect(st.rules.ip).toBeGreaterThan(0);
    expect(st.rules.create).toBeGreaterThan(0);
    expect(st.rules.cow).toBeGreaterThan(0);
    expect(st.index.hits).toBeGreaterThan(st.index.misses);
    expect(st.index.size).toBeGreaterThan(0);
    expect(st.copyUps).toBe(3);
    expect(st.refusedHandles).toBeGreaterThan(0);
  });

  it('serves copy-ups and refused variant handles on /metrics', async () => {
    const res = await fetch(`http://127.0.0.1:${server.ports.metrics}/metrics`);
    const m = parsePromText(await res.text());
    expect(m.get('clusternfs_remap_copy_ups_total', {})).toBe(server.remapper.stats.copyUps);
    expect(m.get('clusternfs_remap_refused_handles_total', {})).toBe(server.remapper.stats.refusedHandles);
    expect(server.remapper.stats.refusedHandles).toBeGreaterThan(0);
  });
});
