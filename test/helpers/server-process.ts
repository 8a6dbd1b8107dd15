/**
 * Runs the compiled clusternfs CLI with its default ports (111, 2049, 20048) inside a network
 * namespace of its own, so that real clients which insist on port 111 (rpcinfo, showmount,
 * nfs-ls) can be pointed at it without touching the machine's own ports. Traffic stays on the
 * namespace's loopback. The namespace is deleted by stop(), also after a failed start.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

import { createNetns, deleteNetns } from '../../bench/netns.js';

export { createNetns, deleteNetns };

/** Runs a command inside the namespace, bounded in time, capturing its output as text. */
export function nsExec(ns: string, cmd: string, args: string[], timeoutMs = 30_000): RunResult {
  const r = spawnSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Same, keeping stdout as bytes (file contents). */
export function nsExecBytes(ns: string, cmd: string, args: string[], timeoutMs = 30_000): { code: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, cmd, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/**
 * The CLI as a child process: in a namespace of its own (`netnsPrefix` given) or on the host's
 * loopback with the ports the caller chooses.
 */
export class ServerProcess {
  readonly ns: string | null;
  private readonly child: ChildProcess;
  readonly log: string[] = [];

  private constructor(ns: string | null, child: ChildProcess) {
    this.ns = ns;
    this.child = child;
  }

  /** Starts `clusternfs serve ARGS` in a fresh namespace and waits for its ready line. */
  static async start(args: string[], prefix = 'cnfs'): Promise<ServerProcess> {
    const ns = createNetns(prefix);
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return ServerProcess.ready(ns, child);
  }

  /** Starts `clusternfs serve ARGS` on the host (the caller passes loopback --bind and ports), with `env` added to ours. */
  static async startOnHost(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ServerProcess> {
    const child = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    return ServerProcess.ready(null, child);
  }

  private static async ready(ns: string | null, child: ChildProcess): Promise<ServerProcess> {
    const server = new ServerProcess(ns, child);
    try {
      await server.waitReady();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  private waitReady(timeoutMs = 15_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server not ready in ${timeoutMs} ms:\n${this.log.join('\n')}`)), timeoutMs);
      const lines = readline.createInterface({ input: this.child.stdout! });
      const errLines = readline.createInterface({ input: this.child.stderr! });
      errLines.on('line', (l) => this.log.push(l));
      lines.on('line', (l) => {
        this.log.push(l);
        if (l.includes('"ready":true')) {
          clearTimeout(timer);
          resolve();
        }
      });
      this.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code} before ready:\n${this.log.join('\n')}`));
      });
    });
  }

  /** The server's process id (with startOnHost: the node process itself, for /proc figures). */
  get pid(): number {
    return this.child.pid!;
  }

  exec(cmd: string, args: string[], timeoutMs?: number): RunResult {
    return nsExec(this.namespace(), cmd, args, timeoutMs);
  }

  execBytes(cmd: string, args: string[], timeoutMs?: number) {
    return nsExecBytes(this.namespace(), cmd, args, timeoutMs);
  }

  private namespace(): string {
    if (this.ns === null) throw new Error('server runs on the host, not in a namespace');
    return this.ns;
  }

  /** kill -9: no shutdown path runs, as in a crash or power loss of the process. */
  async kill9(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      this.child.once('exit', () => resolve());
      this.child.kill('SIGKILL');
    });
    if (this.ns !== null) deleteNetns(this.ns);
  }

  /** SIGTERM, wait (bounded) for a clean exit, then remove the namespace. Returns the exit code. */
  async stop(): Promise<number | null> {
    let code: number | null = this.child.exitCode;
    if (code === null && this.child.signalCode === null) {
      code = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => {
          this.child.kill('SIGKILL');
          resolve(null);
        }, 8000);
        this.child.once('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
        this.child.kill('SIGTERM');
      });
    }
    if (this.ns !== null) deleteNetns(this.ns);
    return code;
  }
}
