/**
 * Independent clients from Debian's packages against the real server process: rpcinfo and
 * showmount (rpcbind, nfs-common) and libnfs's nfs-ls, nfs-cat and nfs-cp. The server runs with
 * its default ports in a private network namespace and exports a copy of this machine's /etc,
 * which must read back byte-identical and list with the same names, sizes and modes.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess } from '../helpers/server-process.js';

let work: string;
let tree: string;
let server: ServerProcess;

interface LocalEntry {
  rel: string;
  st: fs.Stats;
}

function walk(root: string): LocalEntry[] {
  const out: LocalEntry[] = [];
  const visit = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel))) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const st = fs.lstatSync(path.join(root, r));
      out.push({ rel: r, st });
      if (st.isDirectory()) visit(r);
    }
  };
  visit('');
  return out;
}

/** The mode column as nfs-ls prints it: a type letter (none for FIFOs and sockets) and rwx bits. */
function nfsLsMode(st: fs.Stats): string {
  const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : st.isFile() ? '-' : '';
  let bits = '';
  for (let shift = 6; shift >= 0; shift -= 3) {
    const b = (st.mode >> shift) & 7;
    bits += (b & 4 ? 'r' : '-') + (b & 2 ? 'w' : '-') + (b & 1 ? 'x' : '-');
  }
  return type + bits;
}

const BIG_BYTES = 12 * 1024 * 1024 + 4093;
const METRICS_PORT = 9464;

/** clusternfs_read_sendfile_bytes_total from the server's /metrics. */
function sendfileBytes(): number {
  const script = `fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`;
  const r = server.exec(process.execPath, ['-e', script]);
  expect(r.code, r.stderr).toBe(0);
  const m = /^clusternfs_read_sendfile_bytes_total (\d+)$/m.exec(r.stdout);
  expect(m, 'metric present').not.toBeNull();
  return Number(m![1]);
}

function url(rel: string): string {
  return `nfs://127.0.0.1${tree}/${rel}`;
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-real-'));
  tree = path.join(work, 'etc-copy');
  const cp = spawnSync('cp', ['-a', '/etc', tree]);
  expect(cp.status).toBe(0);
  // Larger than the content cache takes (8 MiB): its READs go out from the file by sendfile.
  fs.writeFileSync(path.join(tree, 'big.bin'), randomBytes(BIG_BYTES));
  server = await ServerProcess.start([tree, '--state-dir', path.join(work, 'state'), '--metrics-port', String(METRICS_PORT)], 'cnfs-real');
});

afterAll(async () => {
  const code = await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
  expect(code).toBe(0);
});

describe('portmapper seen by rpcinfo', () => {
  it('rpcinfo -p lists portmapper v2-4, MOUNT v3 and NFS v3 on tcp and udp', () => {
    const r = server.exec('rpcinfo', ['-p', '127.0.0.1']);
    expect(r.code).toBe(0);
    const rows = new Set(
      r.stdout
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/))
        .filter((f) => f.length >= 4)
        .map((f) => `${f[0]} ${f[1]} ${f[2]} ${f[3]}`),
    );
    for (const proto of ['tcp', 'udp']) {
      for (const v of [2, 3, 4]) expect(rows).toContain(`100000 ${v} ${proto} 111`);
      expect(rows).toContain(`100005 3 ${proto} 20048`);
      expect(rows).toContain(`100003 3 ${proto} 2049`);
    }
  });

  it.each([
    ['-t', '100003', '3'],
    ['-u', '100003', '3'],
    ['-t', '100005', '3'],
    ['-u', '100005', '3'],
    ['-t', '100005', '1'],
    ['-u', '100000', '2'],
    ['-t', '100000', '4'],
  ])('rpcinfo %s 127.0.0.1 %s %s answers a NULL call', (flag, prog, vers) => {
    const r = server.exec('rpcinfo', [flag, '127.0.0.1', prog, vers]);
    expect(r.stdout).toContain(`program ${prog} version ${vers} ready and waiting`);
    expect(r.code).toBe(0);
  });

  it('an NFS v2 call is refused with the supported version range 3..3', () => {
    const r = server.exec('rpcinfo', ['-t', '127.0.0.1', '100003', '2']);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/low version = 3, high version = 3/);
  });
});

describe('MOUNT seen by showmount', () => {
  it('showmount -e lists the export and its client patterns', () => {
    const r = server.exec('showmount', ['-e', '127.0.0.1']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Export list for 127.0.0.1:`);
    const line = r.stdout.split('\n').find((l) => l.startsWith(tree + ' '));
    expect(line, r.stdout).toBeDefined();
    expect(line).toContain('127.0.0.0/8');
  });
});

describe('libnfs clients read the tree exactly', () => {
  it('nfs-ls -R shows the same names, types, modes, owners and sizes as the local tree', () => {
    const r = server.exec('nfs-ls', ['-R', url('')], 60_000);
    expect(r.code, r.stderr).toBe(0);
    const listed = new Map<string, string[]>();
    for (const line of r.stdout.split('\n')) {
      const m = /^(\S*)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s(.+)$/.exec(line);
      if (m) listed.set(m[6], [m[1], m[3], m[4], m[5]]);
    }
    const local = walk(tree);
    expect(local.length).toBeGreaterThan(50);
    expect([...listed.keys()].sort()).toEqual(local.map((e) => e.rel).sort());
    for (const { rel, st } of local) {
      const size = st.isFile() || st.isDirectory() || st.isSymbolicLink() ? String(st.size) : '0';
      expect(listed.get(rel), rel).toEqual([nfsLsMode(st), String(st.uid), String(st.gid), size]);
    }
  });

  it('nfs-cat reads every regular file byte-identical', () => {
    const files = walk(tree).filter((e) => e.st.isFile());
    expect(files.length).toBeGreaterThan(50);
    let compared = 0;
    for (const { rel } of files) {
      const r = server.execBytes('nfs-cat', [url(rel)]);
      expect(r.code, `${rel}: ${r.stderr}`).toBe(0);
      expect(r.stdout.equals(fs.readFileSync(path.join(tree, rel))), rel).toBe(true);
      compared++;
    }
    expect(compared).toBe(files.length);
  }, 180_000);

  it('nfs-cat reads a file too big for the content cache, sent from the file by sendfile, byte-identical', () => {
    const sentBefore = sendfileBytes();
    const r = server.execBytes('nfs-cat', [url('big.bin')], 60_000);
    expect(r.code, r.stderr.toString()).toBe(0);
    expect(r.stdout.equals(fs.readFileSync(path.join(tree, 'big.bin')))).toBe(true);
    // libnfs reads in large chunks; with nothing else on its connection they all take that path.
    expect(sendfileBytes() - sentBefore).toBeGreaterThan(BIG_BYTES / 2);
  });

  it('nfs-cp downloads files byte-identical, the largest ones included', () => {
    const files = walk(tree)
      .filter((e) => e.st.isFile())
      .sort((a, b) => b.st.size - a.st.size)
      .slice(0, 5);
    const out = path.join(work, 'downloads');
    fs.mkdirSync(out);
    for (const [i, { rel }] of files.entries()) {
      const dst = path.join(out, String(i));
      const r = server.exec('nfs-cp', [url(rel), dst]);
      expect(r.code, `${rel}: ${r.stderr}`).toBe(0);
      expect(fs.readFileSync(dst).equals(fs.readFileSync(path.join(tree, rel))), rel).toBe(true);
    }
  });

  it('nfs-cp uploads a file that then reads back identical, locally and through nfs-cat', () => {
    const src = path.join(work, 'upload.bin');
    fs.writeFileSync(src, Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) & 0xff)));
    const r = server.exec('nfs-cp', [src, url('uploaded.bin')]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(tree, 'uploaded.bin')).equals(fs.readFileSync(src))).toBe(true);
    const back = server.execBytes('nfs-cat', [url('uploaded.bin')]);
    expect(back.stdout.equals(fs.readFileSync(src))).toBe(true);
  });

  it('a file outside the export cannot be reached by a path with ..', () => {
    const r = server.execBytes('nfs-cat', [url('../../../etc/hostname')]);
    const outside = fs.readFileSync('/etc/hostname');
    expect(r.code === 0 && r.stdout.equals(outside)).toBe(false);
  });
});
