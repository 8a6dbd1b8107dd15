/**
 * The servers under test, each started by the bench in a network namespace of its own (and
 * ganesha with rpcbind also in a private mount namespace, so its /run is its own), serving the
 * same generated image. Load workers are started inside the same namespace, since a namespace's
 * loopback is reachable only from within.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createNetns, destroyNetns } from './netns.js';
import type { TargetInfo } from './protocol.js';

/** Every server's whole output also goes to this file when set (the report keeps only its end). */
const LOG_COPY = process.env.BENCH_SERVER_LOG ?? '';

/** Node flags for the load workers (e.g. --cpu-prof), to see what the client's own time goes to. */
const WORKER_NODE_FLAGS = (process.env.BENCH_WORKER_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '');
/** Names of the servers' namespaces start with this (a test sets its own, to find exactly its own). */
const NETNS_PREFIX = process.env.BENCH_NETNS_PREFIX ?? 'bench';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, '..', 'src', 'cli', 'main.js');
/**
 * The node flags the clusternfs command runs with, read from its shebang
 * (`#!/usr/bin/env -S node --max-semi-space-size=4`), so the bench measures what users run.
 */
const NODE_FLAGS = fs.readFileSync(CLI, 'utf8').split('\n', 1)[0].split(' ').slice(3);
const WORKER = path.join(here, 'worker.js');
const METRICS_PORT = 9464;

export type ServerName = 'clusternfs' | 'ganesha';

export abstract class ServerUnderTest {
  abstract readonly name: ServerName;
  abstract readonly target: TargetInfo;
  protected child: ChildProcess | null = null;
  readonly log: string[] = [];

  constructor(readonly ns: string) {}

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  /** A load worker process inside this server's namespace, talking to us over IPC. */
  spawnWorker(): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.ns, process.execPath, ...WORKER_NODE_FLAGS, WORKER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  }

  /** The server's Prometheus text, or null if it has none. */
  scrapeMetrics(): string | null {
    return null;
  }

  /** Clean stop (a profiling server writes its profile on exit), then nothing left in the namespace. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 10_000);
        c.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        c.kill('SIGTERM');
      });
    }
    this.destroy();
  }

  /** Synchronous teardown for exit and signal handlers. */
  destroy(): void {
    destroyNetns(this.ns);
  }

  /** null while the server runs; else how it ended and its last log lines. */
  exitStatus(): string | null {
    return this.child === null ? null : this.exited();
  }

  protected exited(): string | null {
    const c = this.child!;
    if (c.exitCode === null && c.signalCode === null) return null;
    return `exited with ${c.exitCode ?? c.signalCode}:\n${this.log.slice(-30).join('\n')}`;
  }

  protected collectLog(c: ChildProcess, onLine?: (l: string) => void): void {
    for (const stream of [c.stdout, c.stderr]) {
      if (!stream) continue;
      readline.createInterface({ input: stream }).on('line', (l) => {
        if (LOG_COPY) fs.appendFileSync(LOG_COPY, `${this.name}: ${l}\n`);
        if (this.log.length > 2000) this.log.splice(0, 1000);
        this.log.push(l);
        onLine?.(l);
      });
    }
  }
}

export class ClusterNfs extends ServerUnderTest {
  readonly name = 'clusternfs' as const;
  readonly target: TargetInfo;

  private constructor(ns: string, root: string) {
    super(ns);
    this.target = { host: '127.0.0.1', nfsPort: 2049, mountPort: 20048, exportPath: root };
  }

  static async start(root: string, stateDir: string, profileDir: string | null, registry: Set<ServerUnderTest>): Promise<ClusterNfs> {
    const s = new ClusterNfs(createNetns(`${NETNS_PREFIX}-cnfs`), root);
    registry.add(s);
    const prof = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
    // Node/V8 flags for clusternfs alone (e.g. --trace-gc), to study it under the same load.
    const extra = (process.env.BENCH_CLUSTERNFS_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '');
    // And serve options (e.g. --heap-growth 50), to compare settings under the same load.
    const options = (process.env.BENCH_CLUSTERNFS_ARGS ?? '').split(' ').filter((f) => f !== '');
    const args = [...NODE_FLAGS, ...extra, ...prof, CLI, 'serve', root, '--state-dir', stateDir, '--metrics-port', String(METRICS_PORT), '--log-level', 'info', ...options];
    s.child = spawn('ip', ['netns', 'exec', s.ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`clusternfs not ready in 20 s:\n${s.log.join('\n')}`)), 20_000);
      s.collectLog(s.child!, (l) => {
        if (l.includes('"ready":true')) {
          clearTimeout(timer);
          resolve();
        }
      });
      s.child!.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`clusternfs ${s.exited()}`));
      });
    });
    return s;
  }

  override scrapeMetrics(): string | null {
    const script = `fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then(r=>r.text()).then(t=>process.stdout.write(t),()=>process.exit(1))`;
    const r = spawnSync('ip', ['netns', 'exec', this.ns, process.execPath, '-e', script], { encoding: 'utf8', timeout: 15_000, maxBuffer: 16 * 1024 * 1024 });
    return r.status === 0 ? r.stdout : null;
  }
}

/** nfs-ganesha 4.x with the VFS FSAL, NFSv3 only, as docs/testing.md describes. */
export class Ganesha extends ServerUnderTest {
  readonly name = 'ganesha' as const;
  readonly target: TargetInfo = { host: '127.0.0.1', nfsPort: 2049, mountPort: 20048, exportPath: '/export' };

  static available(): boolean {
    return spawnSync('sh', ['-c', 'command -v ganesha.nfsd && command -v rpcbind'], { encoding: 'utf8' }).status === 0;
  }

  static async start(root: string, workDir: string, registry: Set<ServerUnderTest>): Promise<Ganesha> {
    const s = new Ganesha(createNetns(`${NETNS_PREFIX}-gan`));
    registry.add(s);
    fs.mkdirSync(workDir, { recursive: true });
    const conf = path.join(workDir, 'ganesha.conf');
    fs.writeFileSync(
      conf,
      `NFS_CORE_PARAM { Protocols = 3; NFS_Port = 2049; MNT_Port = 20048; mount_path_pseudo = true; Enable_NLM = false; Enable_RQUOTA = false; }
NFS_KRB5 { Active_krb5 = false; }
LOG { Default_Log_Level = WARN; }
EXPORT { Export_Id = 1; Path = ${root}; Pseudo = /export; Protocols = 3; Access_Type = RW; Squash = No_Root_Squash; FSAL { Name = VFS; } }
`,
    );
    const log = path.join(workDir, 'ganesha.log');
    // exec keeps ganesha on the pid we spawned, so /proc/<pid> is ganesha itself.
    const script = `mount -t tmpfs tmpfs /run && mkdir -p /run/rpcbind /run/ganesha && { rpcbind -w -f & sleep 0.5; exec ganesha.nfsd -F -f ${conf} -L ${log} -p /run/ganesha/ganesha.pid; }`;
    s.child = spawn('ip', ['netns', 'exec', s.ns, 'unshare', '-m', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    s.collectLog(s.child);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const dead = s.exited();
      if (dead) throw new Error(`ganesha ${dead}\n${fs.existsSync(log) ? fs.readFileSync(log, 'utf8').slice(-2000) : ''}`);
      const nfs = spawnSync('ip', ['netns', 'exec', s.ns, 'rpcinfo', '-t', '127.0.0.1', 'nfs', '3'], { timeout: 5000 });
      const mnt = spawnSync('ip', ['netns', 'exec', s.ns, 'rpcinfo', '-t', '127.0.0.1', 'mountd', '3'], { timeout: 5000 });
      if (nfs.status === 0 && mnt.status === 0) break;
      if (Date.now() > deadline) throw new Error('ganesha not answering NULL calls after 30 s');
      await new Promise((r) => setTimeout(r, 300));
    }
    return s;
  }
}
