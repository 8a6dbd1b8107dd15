/**
 * Network fuzzing: malformed records and calls for every procedure of portmap, MOUNT and NFS,
 * over TCP and UDP, against a real server process. After every batch the server must still
 * answer NULL on every program and transport; a batch after which it does not (or after which
 * the process is gone) is saved as a reproducer, and the server is restarted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { MountClient } from '../src/client/mount-client.js';
import { Nfs3Client } from '../src/client/nfs3-client.js';
import { RpcClient } from '../src/client/rpc-client.js';
import { MOUNT_PROGRAM } from '../src/mount/constants.js';
import { NFS_PROGRAM } from '../src/nfs/constants.js';
import { PORTMAP_PROGRAM } from '../src/rpc/portmap-constants.js';
import { validCall, type CallContext, type Service } from './calls.js';
import { frameForTcp, mutateMessage } from './mutate.js';
import { Rng } from './rng.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

export interface FuzzCase {
  service: Service;
  transport: 'tcp' | 'udp';
  /** The bytes sent: a framed stream (TCP) or one datagram (UDP), as hex. */
  hex: string;
}

export interface Reproducer {
  seed: number;
  batch: number;
  reason: string;
  cases: FuzzCase[];
}

interface Ports {
  nfs: number;
  mount: number;
  portmap: number;
}

/** The server under test as a child process on loopback, with a scratch export. */
export class Target {
  readonly work: string;
  readonly exportDir: string;
  ports: Ports = { nfs: 0, mount: 0, portmap: 0 };
  private child: ChildProcess | null = null;
  private log: string[] = [];

  constructor() {
    this.work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-fuzz-'));
    this.exportDir = path.join(this.work, 'export');
    fs.mkdirSync(path.join(this.exportDir, 'dir'), { recursive: true });
    fs.writeFileSync(path.join(this.exportDir, 'file'), Buffer.alloc(8192, 0x61));
    fs.writeFileSync(path.join(this.exportDir, 'dir', 'f0'), 'x');
  }

  alive(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  lastLog(): string {
    return this.log.slice(-20).join('\n');
  }

  async start(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const base = 30000 + Math.floor(Math.random() * 30000);
      this.ports = { nfs: base, mount: base + 1, portmap: base + 2 };
      try {
        await this.spawn();
        return;
      } catch (err) {
        if (attempt >= 5) throw err;
      }
    }
  }

  private spawn(): Promise<void> {
    const p = this.ports;
    const args = [CLI, 'serve', this.exportDir, '--bind', '127.0.0.1', '--nfs-port', String(p.nfs), '--mount-port', String(p.mount),
      '--portmap-port', String(p.portmap), '--state-dir', path.join(this.work, 'state'), '--log-level', 'info'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.log = [];
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server not ready:\n${this.lastLog()}`)), 20_000);
      const keep = (l: string) => {
        this.log.push(l);
        if (this.log.length > 200) this.log.splice(0, 100);
      };
      readline.createInterface({ input: child.stderr! }).on('line', keep);
      readline.createInterface({ input: child.stdout! }).on('line', (l) => {
        keep(l);
        if (l.includes('"ready":true')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code ?? signal}):\n${this.lastLog()}`));
      });
    });
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  cleanup(): void {
    fs.rmSync(this.work, { recursive: true, force: true });
  }

  portOf(service: Service): number {
    return this.ports[service];
  }

  /** Real handles for the calls to carry: the export root, a file and a directory. */
  async context(): Promise<CallContext> {
    const mrpc = await RpcClient.connect({ host: '127.0.0.1', port: this.ports.mount, timeoutMs: 10_000 });
    const rpc = await RpcClient.connect({ host: '127.0.0.1', port: this.ports.nfs, timeoutMs: 10_000 });
    try {
      const root = (await new MountClient(mrpc).mnt(this.exportDir)).fh!;
      const nfs = new Nfs3Client(rpc);
      const file = (await nfs.lookup(root, 'file')).fh!;
      const dir = (await nfs.lookup(root, 'dir')).fh!;
      return { exportPath: this.exportDir, root, file, dir };
    } finally {
      await Promise.all([rpc.close(), mrpc.close()]);
    }
  }

  /** Null if NULL is answered on every program and transport, else what failed. */
  async liveness(): Promise<string | null> {
    if (!this.alive()) return `server process exited:\n${this.lastLog()}`;
    const checks: [Service, number][] = [['portmap', PORTMAP_PROGRAM], ['mount', MOUNT_PROGRAM], ['nfs', NFS_PROGRAM]];
    for (const [service, prog] of checks) {
      for (const transport of ['tcp', 'udp'] as const) {
        const vers = prog === NFS_PROGRAM ? 3 : prog === MOUNT_PROGRAM ? 3 : 2;
        let rpc: RpcClient | null = null;
        try {
          rpc = await RpcClient.connect({ host: '127.0.0.1', port: this.portOf(service), transport, timeoutMs: 10_000, retransmitMs: 500 });
          await rpc.call(prog, vers, 0, null);
        } catch (err) {
          return `${service} NULL over ${transport} failed: ${(err as Error).message}`;
        } finally {
          await rpc?.close();
        }
      }
    }
    return null;
  }
}

let sourceCounter = 0;

/** Sends one case; TCP connections come from varying 127.0.x.y so no per-client limit is reached. */
export function sendCase(target: Target, c: FuzzCase, udp: dgram.Socket): Promise<void> {
  const bytes = Buffer.from(c.hex, 'hex');
  const port = target.portOf(c.service);
  if (c.transport === 'udp') {
    return new Promise((resolve) => udp.send(bytes, port, '127.0.0.1', () => resolve()));
  }
  const n = sourceCounter++;
  const localAddress = `127.0.${40 + ((n >> 8) & 63)}.${1 + (n & 0xff) % 250}`;
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress });
    const timer = setTimeout(() => sock.destroy(), 150);
    sock.on('error', () => {});
    sock.on('connect', () => sock.write(bytes));
    sock.on('data', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A batch of cases from the seeded generator. */
export function makeBatch(rng: Rng, ctx: CallContext, size: number, xidBase: number): FuzzCase[] {
  const out: FuzzCase[] = [];
  for (let i = 0; i < size; i++) {
    const base = validCall(rng, ctx, (xidBase + i) >>> 0);
    const message = rng.chance(0.05) ? base.message : mutateMessage(rng, base);
    const transport = rng.chance(0.5) ? 'tcp' : 'udp';
    let bytes = message;
    if (transport === 'tcp') {
      bytes = frameForTcp(rng, message);
      // Sometimes several records on one connection: a pipelined stream with one bad apple.
      if (rng.chance(0.2)) bytes = Buffer.concat([bytes, frameForTcp(rng, mutateMessage(rng, validCall(rng, ctx, (xidBase + i + 0x8000) >>> 0)))]);
    }
    out.push({ service: base.service, transport, hex: bytes.toString('hex') });
  }
  return out;
}

export interface NetworkResult {
  cases: number;
  batches: number;
  failures: number;
  reproducers: string[];
}

export async function runNetwork(opts: { seconds: number; seed: number; corpusDir: string; batchSize?: number; log?: (s: string) => void }): Promise<NetworkResult> {
  const log = opts.log ?? (() => {});
  const rng = new Rng(opts.seed);
  const target = new Target();
  const udp = dgram.createSocket('udp4');
  udp.on('message', () => {});
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  const result: NetworkResult = { cases: 0, batches: 0, failures: 0, reproducers: [] };
  const deadline = Date.now() + opts.seconds * 1000;
  try {
    await target.start();
    let ctx = await target.context();
    for (let batch = 0; Date.now() < deadline; batch++) {
      const cases = makeBatch(rng, ctx, opts.batchSize ?? 40, batch * 1000);
      await Promise.all(cases.map((c) => sendCase(target, c, udp)));
      result.cases += cases.length;
      result.batches++;
      const failure = await target.liveness();
      if (failure !== null) {
        result.failures++;
        fs.mkdirSync(opts.corpusDir, { recursive: true });
        const file = path.join(opts.corpusDir, `net-seed${opts.seed}-batch${batch}.json`);
        const rep: Reproducer = { seed: opts.seed, batch, reason: failure, cases };
        fs.writeFileSync(file, JSON.stringify(rep, null, 1));
        result.reproducers.push(file);
        log(`liveness failure after batch ${batch}: ${failure}\n  saved ${file}`);
        await target.restart();
        ctx = await target.context();
      }
    }
  } finally {
    udp.close();
    await target.stop();
    target.cleanup();
  }
  return result;
}

/** Replays saved network reproducers; returns the ones after which the server was not alive. */
export async function replayNetwork(files: string[]): Promise<string[]> {
  const broken: string[] = [];
  if (files.length === 0) return broken;
  const target = new Target();
  const udp = dgram.createSocket('udp4');
  udp.on('message', () => {});
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  try {
    await target.start();
    for (const file of files) {
      const rep = JSON.parse(fs.readFileSync(file, 'utf8')) as Reproducer;
      await Promise.all(rep.cases.map((c) => sendCase(target, c, udp)));
      const failure = await target.liveness();
      if (failure !== null) {
        broken.push(`${file}: ${failure}`);
        await target.restart();
      }
    }
  } finally {
    udp.close();
    await target.stop();
    target.cleanup();
  }
  return broken;
}
