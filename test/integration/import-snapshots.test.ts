/**
 * `clusternfs import-snapshots` on a generated Red Hat netboot layout of four nodes
 * (snapshot/<node>/etc/hostname, etc/adjtime, var/log/..., a symlink, directories the root image
 * has and ones it lacks), then every node's view checked twice: with `clusternfs resolve`, and
 * through the server with our client from the node's own source address (127.0.0.21..24), each
 * seeing its own content and none of the others' (cluster-tags.md, "Migrating from per-node
 * snapshot directories"). --dry-run and a refused import change nothing.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsStat } from '../../src/nfs/constants.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { expectUserError, runCli } from '../helpers/cli-run.js';
import { mountSession, quickExport, startServer, type Session } from '../helpers/inproc-server.js';
import { CLI } from '../helpers/server-process.js';

const NODES = [
  { name: 'node1', ip: '127.0.0.21' },
  { name: 'node2', ip: '127.0.0.22' },
  { name: 'node3', ip: '127.0.0.23' },
  // Some setups name the snapshot directory by address: it must be matched too.
  { name: 'node4', ip: '127.0.0.24', dir: '127.0.0.24' },
];
const OUTSIDER = '127.0.0.25';
const isRoot = process.getuid?.() === 0;
const OLD = new Date('2019-05-06T07:08:09Z');

let work: string;
let snapshot: string;
let root: string;
let nodesFile: string;

/** What each node's snapshot holds: path → content (files only). */
function nodeFiles(name: string): Record<string, string> {
  return {
    'etc/hostname': `${name}\n`,
    'etc/adjtime': `0.0 0 0.0\n${name.length}\nUTC\n`,
    'var/log/messages': `boot log of ${name}\n`,
    'var/log/sa/sa01': `sar data of ${name}\n`,
    'var/lib/dhcp/dhclient.leases': `lease for ${name}\n`,
  };
}

function write(p: string, content: string, mode = 0o644): void {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  fs.chmodSync(p, mode);
}

function makeLayout(): void {
  // The golden image: masters for some paths; no var/lib at all, no var/log/sa.
  write(path.join(root, 'etc', 'hostname'), 'golden\n');
  write(path.join(root, 'etc', 'motd'), 'welcome\n');
  write(path.join(root, 'var', 'log', 'boot.log'), 'shared boot log\n');
  for (const n of NODES) {
    const dir = path.join(snapshot, n.dir ?? n.name);
    for (const [rel, content] of Object.entries(nodeFiles(n.name))) write(path.join(dir, rel), content);
    fs.chmodSync(path.join(dir, 'etc', 'adjtime'), 0o600);
    fs.utimesSync(path.join(dir, 'etc', 'adjtime'), OLD, OLD);
    if (isRoot) fs.chownSync(path.join(dir, 'var', 'log', 'messages'), 1000, 4);
    fs.chmodSync(path.join(dir, 'var', 'log', 'sa'), 0o750);
    fs.symlinkSync('../../etc/hostname', path.join(dir, 'var', 'log', 'host.link'));
  }
  // Not a node: reported and left alone.
  write(path.join(snapshot, 'template', 'etc', 'hostname'), 'template\n');
  fs.writeFileSync(
    nodesFile,
    ['# pxeboot nodes file', 'node1 127.0.0.21', '127.0.0.22 node2 node2.cluster', 'node3=127.0.0.23   # comment', 'node4, 127.0.0.24, 52:54:00:aa:bb:cc', ''].join('\n'),
  );
}

/** Every entry of the tree with type, mode, size, content hash or link target: to prove "no change". */
function treeState(dir: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = fs.lstatSync(p);
      const what = st.isSymbolicLink()
        ? `-> ${fs.readlinkSync(p)}`
        : st.isFile()
          ? createHash('sha256').update(fs.readFileSync(p)).digest('hex')
          : 'dir';
      out.push(`${path.relative(dir, p)} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeMs} ${what}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.join('\n');
}

function importArgs(...extra: string[]): string[] {
  return ['import-snapshots', snapshot, root, '--nodes', nodesFile, ...extra];
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-import-'));
  snapshot = path.join(work, 'snapshot');
  root = path.join(work, 'root');
  nodesFile = path.join(work, 'nodes');
  makeLayout();
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('import-snapshots before the import', () => {
  it('a bad nodes file stops it with FILE:LINE and changes nothing', () => {
    const bad = path.join(work, 'nodes.bad');
    fs.writeFileSync(bad, 'node1 127.0.0.21\nnode2\n');
    const before = treeState(root);
    const r = runCli(['import-snapshots', snapshot, root, '--nodes', bad]);
    expectUserError(r, new RegExp(`${bad}:2: no IP address`));
    expect(treeState(root)).toBe(before);
  });

  it('--dry-run prints every variant it would make per node and changes nothing', () => {
    const before = treeState(root);
    const r = runCli(importArgs('--dry-run'));
    expect(r.code).toBe(0);
    expect(treeState(root)).toBe(before);
    expect(r.stderr).toMatch(/skipping .*template: not in the nodes file/);
    for (const n of NODES) {
      expect(r.stdout).toContain(`${n.name} (${n.ip})`);
      expect(r.stdout).toContain(`create  etc/hostname$$IP=${n.ip}$$  (file, ${n.name.length + 1} B)`);
      expect(r.stdout).toContain(`create  var/lib$$IP=${n.ip}$$  (directory, 2 entries inside`);
      expect(r.stdout).toContain(`create  var/log/sa$$IP=${n.ip}$$  (directory, 1 entry inside`);
      expect(r.stdout).toContain(`create  var/log/host.link$$IP=${n.ip}$$  (symlink)`);
      expect(r.stdout).toMatch(new RegExp(`^${n.name}\\s+${n.ip.replace(/\./g, '\\.')}\\s+5\\s+3\\s+1\\s+0\\s`, 'm'));
    }
    expect(r.stdout).toMatch(/^total\s+20\s+12\s+4\s+0\s/m);
  });
});

describe('import-snapshots', () => {
  beforeAll(() => {
    const r = runCli(importArgs());
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^imported 4 node\(s\) into /);
    expect(r.stdout).toMatch(/^total\s+20\s+12\s+4\s+0\s/m);
    // Not a terminal: no progress bar frames in a log.
    expect(r.stderr).not.toContain('importing [');
  });

  it('draws a progress bar on a terminal (script(1) gives it a pty)', () => {
    const root2 = path.join(work, 'root-tty');
    fs.mkdirSync(path.join(root2, 'etc'), { recursive: true });
    const cmd = [process.execPath, CLI, 'import-snapshots', snapshot, root2, '--nodes', nodesFile].map((a) => `'${a}'`).join(' ');
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    // This root has no var: each node's var becomes one tagged directory (11 entries a node).
    expect(r.stdout).toMatch(/importing \[[^\]]*\] \d+\/44 entries/);
    expect(r.stdout).toMatch(/^total\s+20\s+20\s+4\s+0\s/m);
    expect(fs.readFileSync(path.join(root2, `var$$IP=${NODES[0].ip}$$`, 'log', 'messages'), 'utf8')).toBe('boot log of node1\n');
    expect(fs.readFileSync(path.join(root2, 'etc', `hostname$$IP=${NODES[0].ip}$$`), 'utf8')).toBe('node1\n');
  });

  it('--by host writes HOST tags that the node matches by its host name', () => {
    const root3 = path.join(work, 'root-host');
    fs.mkdirSync(path.join(root3, 'etc'), { recursive: true });
    const r = runCli(['import-snapshots', snapshot, root3, '--nodes', nodesFile, '--by', 'host']);
    expect(r.code).toBe(0);
    for (const n of NODES) {
      expect(fs.readFileSync(path.join(root3, 'etc', `hostname$$HOST=${n.name}$$`), 'utf8')).toBe(`${n.name}\n`);
    }
    const j = JSON.parse(runCli(['resolve', '/etc/hostname', '--root', root3, '--ip', '10.9.9.9', '--host', 'node3', '--json']).stdout) as { result: { entry: string } };
    expect(path.basename(j.result.entry)).toBe('hostname$$HOST=node3$$');
    expectUserError(runCli(['import-snapshots', snapshot, root3, '--nodes', nodesFile, '--by', 'mac']), /argument 'mac' is invalid/);
  });

  it('makes per-file variants in directories the root has, and whole tagged directories where it has none', () => {
    for (const n of NODES) {
      const files = nodeFiles(n.name);
      expect(fs.readFileSync(path.join(root, 'etc', `hostname$$IP=${n.ip}$$`), 'utf8')).toBe(files['etc/hostname']);
      expect(fs.readFileSync(path.join(root, 'var', 'log', `messages$$IP=${n.ip}$$`), 'utf8')).toBe(files['var/log/messages']);
      expect(fs.readFileSync(path.join(root, 'var', 'log', `sa$$IP=${n.ip}$$`, 'sa01'), 'utf8')).toBe(files['var/log/sa/sa01']);
      expect(fs.readFileSync(path.join(root, 'var', `lib$$IP=${n.ip}$$`, 'dhcp', 'dhclient.leases'), 'utf8')).toBe(files['var/lib/dhcp/dhclient.leases']);
    }
    // The masters are untouched, and nothing came from the template directory.
    expect(fs.readFileSync(path.join(root, 'etc', 'hostname'), 'utf8')).toBe('golden\n');
    expect(fs.readdirSync(path.join(root, 'etc')).some((n) => n.includes('template'))).toBe(false);
    expect(fs.readdirSync(path.join(root, 'etc')).filter((n) => n.startsWith('hostname')).length).toBe(5);
  });

  it('keeps modes, owners, times and symlinks', () => {
    const n = NODES[0];
    const adj = fs.lstatSync(path.join(root, 'etc', `adjtime$$IP=${n.ip}$$`));
    expect(adj.mode & 0o7777).toBe(0o600);
    expect(adj.mtime.toISOString()).toBe(OLD.toISOString());
    if (isRoot) {
      const msg = fs.lstatSync(path.join(root, 'var', 'log', `messages$$IP=${n.ip}$$`));
      expect([msg.uid, msg.gid]).toEqual([1000, 4]);
    }
    const sa = fs.lstatSync(path.join(root, 'var', 'log', `sa$$IP=${n.ip}$$`));
    expect(sa.isDirectory()).toBe(true);
    expect(sa.mode & 0o7777).toBe(0o750);
    const link = path.join(root, 'var', 'log', `host.link$$IP=${n.ip}$$`);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(link)).toBe('../../etc/hostname');
  });

  it('refuses to overwrite existing variants without --force, changing nothing; --force replaces them', () => {
    const mine = path.join(root, 'etc', `hostname$$IP=${NODES[1].ip}$$`);
    fs.writeFileSync(mine, 'edited by hand\n');
    const before = treeState(root);
    expectUserError(runCli(importArgs()), /24 variant\(s\) exist already .*nothing was imported; use --force/);
    expect(treeState(root)).toBe(before);
    const forced = runCli(importArgs('--force'));
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/\(24 existing variant\(s\) replaced\)/);
    expect(fs.readFileSync(mine, 'utf8')).toBe('node2\n');
  });

  it('clusternfs resolve shows each node its own file at every imported path', () => {
    for (const n of NODES) {
      for (const [rel, content] of Object.entries(nodeFiles(n.name))) {
        const r = runCli(['resolve', `/${rel}`, '--root', root, '--ip', n.ip, '--json']);
        expect(r.code, `${n.ip} ${rel}`).toBe(0);
        const j = JSON.parse(r.stdout) as { result: { entry: string } };
        expect(j.result.entry).toContain(`$$IP=${n.ip}$$`);
        expect(fs.readFileSync(j.result.entry, 'utf8'), `${n.ip} ${rel}`).toBe(content);
      }
    }
    // A node that was not imported sees the masters, and nothing where only variants exist.
    const outsider = JSON.parse(runCli(['resolve', '/etc/hostname', '--root', root, '--ip', OUTSIDER, '--json']).stdout) as { result: { entry: string } };
    expect(outsider.result.entry).toBe(path.join(root, 'etc', 'hostname'));
    expect(runCli(['resolve', '/etc/adjtime', '--root', root, '--ip', OUTSIDER]).code).toBe(1);
  });

  describe('through the server, each node from its own source address', () => {
    let server: ClusterNfsServer;
    const sessions = new Map<string, Session>();

    beforeAll(async () => {
      server = await startServer([quickExport(root)], path.join(work, 'state'));
      for (const ip of [...NODES.map((n) => n.ip), OUTSIDER]) sessions.set(ip, await mountSession(server, root, { localAddress: ip }));
    });

    afterAll(async () => {
      for (const s of sessions.values()) await s.close();
      await server?.stop();
    });

    async function read(ip: string, rel: string): Promise<{ status: number; text: string | null }> {
      const s = sessions.get(ip)!;
      const l = await s.nfs.lookupPath(s.root, rel);
      if (l.status !== NfsStat.OK) return { status: l.status, text: null };
      const r = await s.nfs.readAll(l.fh!);
      return { status: r.status, text: r.data.toString() };
    }

    it('every node reads its own content at every path, never another node\'s', async () => {
      for (const n of NODES) {
        for (const [rel, content] of Object.entries(nodeFiles(n.name))) {
          expect(await read(n.ip, rel), `${n.ip} ${rel}`).toEqual({ status: NfsStat.OK, text: content });
        }
        // Shared masters stay visible beside the node's variants.
        expect((await read(n.ip, 'var/log/boot.log')).text).toBe('shared boot log\n');
        expect((await read(n.ip, 'etc/motd')).text).toBe('welcome\n');
        const s = sessions.get(n.ip)!;
        const link = await s.nfs.lookupPath(s.root, 'var/log/host.link');
        expect(link.status).toBe(NfsStat.OK);
        expect((await s.nfs.readlink(link.fh!)).data).toBe('../../etc/hostname');
        const log = await s.nfs.lookupPath(s.root, 'var/log');
        const names = (await s.nfs.readdirplusAll(log.fh!)).entries.map((e) => e.name).filter((x) => x !== '.' && x !== '..').sort();
        expect(names, n.ip).toEqual(['boot.log', 'host.link', 'messages', 'sa']);
      }
    });

    it('a node that was not imported sees the masters and none of the variants', async () => {
      expect(await read(OUTSIDER, 'etc/hostname')).toEqual({ status: NfsStat.OK, text: 'golden\n' });
      for (const rel of ['etc/adjtime', 'var/log/messages', 'var/log/sa/sa01', 'var/lib/dhcp/dhclient.leases']) {
        expect((await read(OUTSIDER, rel)).status, rel).toBe(NfsStat.NOENT);
      }
      // Nor by raw name.
      expect((await read(OUTSIDER, `etc/hostname$$IP=${NODES[0].ip}$$`)).status).toBe(NfsStat.NOENT);
    });
  });
});
