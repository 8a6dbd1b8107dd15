/**
 * Our portmapper against Debian's rpcinfo, and our registrar against Debian's rpcbind, each inside
 * a private network namespace so port 111 clashes with nothing (needs root, iproute2, rpcbind).
 *
 * ASSUMPTION: the compiled server is in dist/ (`npm run build`, i.e. `tsc -p .`, before the tests).
 * The fixture test/fixtures/portmap-fixture.mjs imports dist/src/rpc/*.js: compiling per test would
 * be too slow and Node 20 cannot run TypeScript by itself.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURE = path.join(ROOT, 'test/fixtures/portmap-fixture.mjs');
const DIST_CHECK = path.join(ROOT, 'dist/src/rpc/rpcbind-registrar.js');

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function mustRun(cmd: string, args: string[], timeoutMs = 10_000): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A long-running child whose output we keep (for assertions and failure messages). */
class Proc {
  readonly child: ChildProcess;
  output = '';
  exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => {
      // 'close', not 'exit': by then every byte the child wrote to stdout/stderr has been read.
      this.child.on('close', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(this.exitCode);
      });
      this.child.on('error', (err) => {
        this.output += `spawn error: ${err.message}\n`;
        this.exitCode = null;
        resolve(null);
      });
    });
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** Resolves with the first output line matching `re`; rejects on exit or timeout. */
  async waitFor(re: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const line of this.output.split('\n')) {
        const m = line.match(re);
        if (m) return m;
      }
      if (!this.running) throw new Error(`process exited (${this.exitCode}) before ${re}: ${this.output}`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${re}: ${this.output}`);
      await sleep(50);
    }
  }

  /** Signals the process and waits (bounded) for it to exit; SIGKILL if it will not. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5000): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null;
    this.child.kill(signal);
    const t = sleep(timeoutMs).then(() => 'timeout' as const);
    if ((await Promise.race([this.exited, t])) === 'timeout') {
      this.child.kill('SIGKILL');
      await Promise.race([this.exited, sleep(2000)]);
      return null;
    }
    return this.exitCode ?? null;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function makeNamespace(): Promise<string> {
  const name = `cnfs-pm-${randomBytes(4).toString('hex')}`;
  await mustRun('ip', ['netns', 'add', name]);
  await mustRun('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
  return name;
}

interface PmapRow {
  prog: number;
  vers: number;
  proto: string;
  port: number;
}

/** Parses `rpcinfo -p` output. */
function parseRpcinfoP(out: string): PmapRow[] {
  const rows: PmapRow[] = [];
  for (const line of out.split('\n')) {
    const m = line.trim().match(/^(\d+)\s+(\d+)\s+(tcp|udp)\s+(\d+)/);
    if (m) rows.push({ prog: Number(m[1]), vers: Number(m[2]), proto: m[3], port: Number(m[4]) });
  }
  return rows;
}

const rowKey = (r: PmapRow): string => `${r.prog}/${r.vers}/${r.proto}:${r.port}`;

async function rpcinfoP(ns: string): Promise<string[]> {
  return parseRpcinfoP(await mustRun('ip', ['netns', 'exec', ns, 'rpcinfo', '-p', '127.0.0.1'])).map(rowKey);
}

const fixtureEnv = { ...process.env, CLUSTERNFS_LOG_LEVEL: 'info' };

const namespaces: string[] = [];
const procs: Proc[] = [];

afterAll(async () => {
  // Fixtures first (they unregister), then rpcbind, then the namespaces: even after a failure.
  for (const p of procs.reverse()) await p.stop('SIGTERM', 3000).catch(() => {});
  for (const ns of namespaces) await run('ip', ['netns', 'del', ns]).catch(() => {});
});

beforeAll(() => {
  if (!fs.existsSync(DIST_CHECK)) throw new Error(`${DIST_CHECK} is missing: run \`npm run build\` (tsc -p .) before the tests`);
});

describe('our portmapper on port 111, asked by Debian rpcinfo', () => {
  let ns = '';
  let fixture: Proc;

  beforeAll(async () => {
    ns = await makeNamespace();
    namespaces.push(ns);
    const cfg = {
      port: 111,
      programs: [
        { prog: 100005, versions: [3], port: 20048 },
        { prog: 100003, versions: [3], port: 2049 },
      ],
    };
    fixture = new Proc('ip', ['netns', 'exec', ns, process.execPath, FIXTURE, JSON.stringify(cfg)], fixtureEnv);
    procs.push(fixture);
    const m = await fixture.waitFor(/^READY (.*)$/);
    expect(JSON.parse(m[1])).toMatchObject({ mode: 'embedded', port: 111 });
  });

  it('rpcinfo -p lists the portmapper v2, v3, v4 and the registered programs on tcp and udp', async () => {
    const rows = await rpcinfoP(ns);
    const expected: string[] = [];
    for (const v of [2, 3, 4]) for (const p of ['tcp', 'udp']) expected.push(`100000/${v}/${p}:111`);
    for (const p of ['tcp', 'udp']) expected.push(`100005/3/${p}:20048`, `100003/3/${p}:2049`);
    expect(rows.sort()).toEqual(expected.sort());
  });

  it('rpcinfo -t and -u reach the portmapper (NULL over TCP and UDP)', async () => {
    expect(await mustRun('ip', ['netns', 'exec', ns, 'rpcinfo', '-t', '127.0.0.1', '100000', '2'])).toMatch(/program 100000 version 2 ready and waiting/);
    expect(await mustRun('ip', ['netns', 'exec', ns, 'rpcinfo', '-u', '127.0.0.1', '100000', '2'])).toMatch(/program 100000 version 2 ready and waiting/);
  });

  it('libtirpc finds us through rpcbind v4/v3 GETADDR and v4 DUMP shows usable uaddrs', async () => {
    // -T makes rpcinfo ask GETADDR and then connect to the returned uaddr itself.
    expect(await mustRun('ip', ['netns', 'exec', ns, 'rpcinfo', '-T', 'tcp', '127.0.0.1', '100000', '4'])).toMatch(/version 4 ready and waiting/);
    expect(await mustRun('ip', ['netns', 'exec', ns, 'rpcinfo', '-T', 'udp', '127.0.0.1', '100000', '3'])).toMatch(/version 3 ready and waiting/);
    const dump = await mustRun('ip', ['netns', 'exec', ns, 'rpcinfo', '127.0.0.1']);
    expect(dump).toMatch(/100003\s+3\s+tcp\s+127\.0\.0\.1\.8\.1\s+\S+\s+superuser/);
    expect(dump).toMatch(/100005\s+3\s+udp\s+127\.0\.0\.1\.78\.80\s/);
    expect(dump).not.toMatch(/0\.0\.0\.0\./);
    const list = await mustRun('ip', ['netns', 'exec', ns, 'rpcinfo', '-l', '127.0.0.1', '100005', '3']);
    expect(list).toMatch(/inet\/tcp\/cots_ord\s+127\.0\.0\.1\.78\.80/);
    expect(list).toMatch(/inet\/udp\/clts\s+127\.0\.0\.1\.78\.80/);
  });

  it('stops cleanly on SIGTERM', async () => {
    expect(await fixture.stop('SIGTERM')).toBe(0);
    const r = await run('ip', ['netns', 'exec', ns, 'rpcinfo', '-p', '127.0.0.1'], 10_000);
    expect(r.code).not.toBe(0);
  });
});

describe('a system rpcbind owns port 111: we register with it', () => {
  let ns = '';
  let rpcbind: Proc;
  const NFS_ROWS = ['100003/3/tcp:32049', '100003/3/udp:32049'];
  const cfg = { port: 111, programs: [{ prog: 100003, versions: [3], port: 32049 }] };

  beforeAll(async () => {
    ns = await makeNamespace();
    namespaces.push(ns);
    // Its own /run, so its socket and warm-start files touch nothing of the host.
    rpcbind = new Proc('ip', [
      'netns', 'exec', ns, 'unshare', '-m', '--propagation', 'private',
      'sh', '-c', 'mount -t tmpfs tmpfs /run && mkdir -p /run/rpcbind && exec rpcbind -w -f',
    ]);
    procs.push(rpcbind);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await run('ip', ['netns', 'exec', ns, 'rpcinfo', '-p', '127.0.0.1'], 3000);
      if (r.code === 0 && /portmapper/.test(r.stdout)) break;
      if (!rpcbind.running || Date.now() > deadline) throw new Error(`rpcbind did not come up: ${rpcbind.output}${r.stderr}`);
      await sleep(100);
    }
  });

  it("over rpcbind's local socket: registered while running, gone after SIGTERM", async () => {
    expect(await rpcinfoP(ns)).not.toContain(NFS_ROWS[0]);
    // Join rpcbind's mount namespace too, so /run/rpcbind.sock is that rpcbind's socket.
    const fixture = new Proc('nsenter', ['-t', String(rpcbind.child.pid), '-m', '-n', process.execPath, FIXTURE, JSON.stringify(cfg)], fixtureEnv);
    procs.push(fixture);
    const m = await fixture.waitFor(/^READY (.*)$/);
    expect(JSON.parse(m[1])).toMatchObject({ mode: 'system', port: 111, channel: 'unix:/run/rpcbind.sock' });
    const rows = await rpcinfoP(ns);
    expect(rows).toEqual(expect.arrayContaining(NFS_ROWS));
    expect(rows).toContain('100000/2/udp:111'); // rpcbind's own, untouched
    expect(await fixture.stop('SIGTERM')).toBe(0);
    expect(fixture.output).toMatch(/CLOSED/);
    const after = await rpcinfoP(ns);
    expect(after.filter((r) => r.startsWith('100003/'))).toEqual([]);
    expect(after).toContain('100000/2/udp:111');
  });

  it('over UDP to 127.0.0.1:111 when no local socket is usable, replacing a stale entry', async () => {
    // A stale registration, as a crashed earlier run would leave in a warm-started rpcbind.
    // (Over the same channel: rpcbind lets an inet caller UNSET only what inet callers SET.)
    const stale = new Proc('ip', ['netns', 'exec', ns, process.execPath, FIXTURE,
      JSON.stringify({ port: 111, programs: [{ prog: 100003, versions: [3], port: 41111 }], socketPaths: [] })], fixtureEnv);
    procs.push(stale);
    await stale.waitFor(/^READY /);
    await stale.stop('SIGKILL'); // no unregistration
    expect(await rpcinfoP(ns)).toContain('100003/3/tcp:41111');

    const fixture = new Proc('ip', ['netns', 'exec', ns, process.execPath, FIXTURE, JSON.stringify({ ...cfg, socketPaths: [] })], fixtureEnv);
    procs.push(fixture);
    const m = await fixture.waitFor(/^READY (.*)$/);
    expect(JSON.parse(m[1])).toMatchObject({ mode: 'system', channel: 'udp:127.0.0.1:111' });
    const rows = await rpcinfoP(ns);
    expect(rows.filter((r) => r.startsWith('100003/')).sort()).toEqual(NFS_ROWS);
    expect(await fixture.stop('SIGTERM')).toBe(0);
    expect((await rpcinfoP(ns)).filter((r) => r.startsWith('100003/'))).toEqual([]);
  });

  it('a port held by something that is not a portmapper gives a clear error', async () => {
    const ns2 = await makeNamespace();
    namespaces.push(ns2);
    // nc is not guaranteed; a node one-liner holds TCP and UDP 111 without answering RPC.
    const holder = new Proc('ip', ['netns', 'exec', ns2, process.execPath, '-e',
      "const n=require('net'),d=require('dgram');n.createServer(s=>s.destroy()).listen(111,'0.0.0.0');" +
      "const u=d.createSocket('udp4');u.bind(111,'0.0.0.0',()=>console.log('HELD'));"]);
    procs.push(holder);
    await holder.waitFor(/^HELD$/);
    const fixture = new Proc('ip', ['netns', 'exec', ns2, process.execPath, FIXTURE, JSON.stringify({ ...cfg, socketPaths: [] })], fixtureEnv);
    procs.push(fixture);
    const m = await fixture.waitFor(/^FAILED (.*)$/);
    expect(m[1]).toMatch(/port 111 is in use but no portmapper answers/);
    expect(await fixture.exited).toBe(2);
    await holder.stop('SIGTERM');
  });
});
