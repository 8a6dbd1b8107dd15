/**
 * Remapping as other clients meet it: an independent client (libnfs's nfs-cat, its source
 * address chosen by a small LD_PRELOAD shim built here with gcc) gets different contents for the
 * same path from two addresses; UDP clients are told apart by source address; `cluster=/etc`
 * limits remapping by whole path components; the bundled sample export works in quick mode.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsStat } from '../../src/nfs/constants.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, parseExports, quickExport, startServer, type Session } from '../helpers/inproc-server.js';
import { REPO_ROOT } from '../helpers/server-process.js';

let work: string;
let root: string;
let server: ClusterNfsServer;
const sessions: Session[] = [];

function put(rel: string, content: string): void {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

async function session(srv: ClusterNfsServer, exportPath: string, ip: string, transport: 'tcp' | 'udp' = 'tcp'): Promise<Session> {
  const s = await mountSession(srv, exportPath, { localAddress: ip, transport });
  sessions.push(s);
  return s;
}

async function cat(s: Session, rel: string): Promise<string | number> {
  const l = await s.nfs.lookupPath(s.root, rel);
  if (l.status !== NfsStat.OK) return l.status;
  const r = await s.nfs.readAll(l.fh!);
  return r.status === NfsStat.OK ? r.data.toString() : r.status;
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-remapc-'));
  root = path.join(work, 'root');
  put('etc/hostname', 'master\n');
  put('etc/hostname$$IP=127.0.0.11$$', 'eleven\n');
  put('etc/hostname$$IP=127.0.0.12$$', 'twelve\n');
  put('etcfoo/x', 'plain x\n');
  put('etcfoo/x$$IP=127.0.0.11$$', 'not a variant here\n');
  put('etc/sub/y$$CLIENT$$', 'client y\n');
  const exports = parseExports(`${root} 127.0.0.0/8(rw,no_root_squash,insecure,cluster=/etc)\n`, 'remap-clients-test');
  server = await startServer(exports, null);
});

afterAll(async () => {
  await Promise.all(sessions.map((s) => s.close()));
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('cluster=/etc: whole path components', () => {
  it('remaps under /etc, including below it', async () => {
    const s = await session(server, root, '127.0.0.11');
    expect(await cat(s, 'etc/hostname')).toBe('eleven\n');
    expect(await cat(s, 'etc/sub/y')).toBe('client y\n');
  });

  it('does not touch /etcfoo: tagged names there are plain names, visible and addressable', async () => {
    const s = await session(server, root, '127.0.0.11');
    expect(await cat(s, 'etcfoo/x')).toBe('plain x\n');
    expect(await cat(s, 'etcfoo/x$$IP=127.0.0.11$$')).toBe('not a variant here\n');
    const dir = await s.nfs.lookupPath(s.root, 'etcfoo');
    const names = (await s.nfs.readdirAll(dir.fh!)).entries.map((e) => e.name).sort();
    expect(names).toEqual(['.', '..', 'x', 'x$$IP=127.0.0.11$$']);
  });
});

describe('UDP clients', () => {
  it('are told apart by source address', async () => {
    const a = await session(server, root, '127.0.0.11', 'udp');
    const b = await session(server, root, '127.0.0.12', 'udp');
    expect(await cat(a, 'etc/hostname')).toBe('eleven\n');
    expect(await cat(b, 'etc/hostname')).toBe('twelve\n');
  });
});

/**
 * Makes libnfs's sockets use SHIM_SRC as source address: rewrites the address of its own bind()
 * (as root it binds a privileged port on INADDR_ANY) and binds an unbound socket before connect().
 */
const SHIM_C = String.raw`
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);

static int source(struct in_addr *a) {
  const char *s = getenv("SHIM_SRC");
  return s != NULL && inet_pton(AF_INET, s, a) == 1;
}

int bind(int fd, const struct sockaddr *sa, socklen_t len) {
  struct in_addr a;
  if (!real_bind) real_bind = dlsym(RTLD_NEXT, "bind");
  if (sa != NULL && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in) && source(&a)) {
    struct sockaddr_in sin;
    memcpy(&sin, sa, sizeof sin);
    sin.sin_addr = a;
    return real_bind(fd, (const struct sockaddr *)&sin, sizeof sin);
  }
  return real_bind(fd, sa, len);
}

int connect(int fd, const struct sockaddr *sa, socklen_t len) {
  struct in_addr a;
  if (!real_connect) real_connect = dlsym(RTLD_NEXT, "connect");
  if (!real_bind) real_bind = dlsym(RTLD_NEXT, "bind");
  if (sa != NULL && sa->sa_family == AF_INET && source(&a)) {
    struct sockaddr_in cur;
    socklen_t cl = sizeof cur;
    memset(&cur, 0, sizeof cur);
    if (getsockname(fd, (struct sockaddr *)&cur, &cl) == 0 && cur.sin_family == AF_INET && cur.sin_port == 0) {
      struct sockaddr_in sin;
      memset(&sin, 0, sizeof sin);
      sin.sin_family = AF_INET;
      sin.sin_addr = a;
      real_bind(fd, (const struct sockaddr *)&sin, sizeof sin);
    }
  }
  return real_connect(fd, sa, len);
}
`;

describe('a real independent client (nfs-cat) from two source addresses', () => {
  it('gets two different contents for the same path', async () => {
    const shimDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-shim-'));
    try {
      fs.writeFileSync(path.join(shimDir, 'srcaddr.c'), SHIM_C);
      const cc = spawnSync('gcc', ['-shared', '-fPIC', '-O2', '-o', path.join(shimDir, 'srcaddr.so'), path.join(shimDir, 'srcaddr.c'), '-ldl'], { encoding: 'utf8', timeout: 60_000 });
      expect(cc.status, cc.stderr).toBe(0);
      const url = `nfs://127.0.0.1${root}/etc/hostname?nfsport=${server.ports.nfs}&mountport=${server.ports.mount}`;
      // Asynchronously: the server runs in this process and must keep answering.
      const run = (ip: string) =>
        new Promise<string>((resolve, reject) => {
          const env = { ...process.env, LD_PRELOAD: path.join(shimDir, 'srcaddr.so'), SHIM_SRC: ip };
          execFile('nfs-cat', [url], { env, timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => (err ? reject(new Error(`${ip}: ${err.message} ${stderr}`)) : resolve(stdout)));
        });
      expect(await run('127.0.0.11')).toBe('eleven\n');
      expect(await run('127.0.0.12')).toBe('twelve\n');
      expect(await run('127.0.0.13')).toBe('master\n');
    } finally {
      fs.rmSync(shimDir, { recursive: true, force: true });
    }
  });
});

describe('the bundled sample export in quick mode', () => {
  it('turns cluster on: 127.0.0.11 and .12 read their own etc/hostname, .13 the master, and writes to var/log land in variants', async () => {
    const sample = path.join(REPO_ROOT, 'sample', 'root');
    const srv = await startServer([quickExport(sample)], null);
    const created: string[] = [];
    try {
      const read = async (ip: string) => {
        const s = await mountSession(srv, sample, { localAddress: ip });
        sessions.push(s);
        return cat(s, 'etc/hostname');
      };
      for (const ip of ['127.0.0.11', '127.0.0.12']) {
        expect(await read(ip)).toBe(fs.readFileSync(path.join(sample, `etc/hostname$$IP=${ip}$$`), 'utf8'));
      }
      expect(await read('127.0.0.13')).toBe(fs.readFileSync(path.join(sample, 'etc/hostname'), 'utf8'));
      const s = await mountSession(srv, sample, { localAddress: '127.0.0.13' });
      sessions.push(s);
      const log = await s.nfs.lookupPath(s.root, 'var/log');
      const c = await s.nfs.create(log.fh!, 'remap-test-messages', { mode: 0o644 });
      expect(c.status).toBe(NfsStat.OK);
      created.push(path.join(sample, 'var/log/remap-test-messages$$IP=127.0.0.13$$'));
      expect(fs.existsSync(created[0])).toBe(true);
      expect(fs.existsSync(path.join(sample, 'var/log/remap-test-messages'))).toBe(false);
    } finally {
      for (const f of created) fs.rmSync(f, { force: true });
      await srv.stop();
    }
  });
});
