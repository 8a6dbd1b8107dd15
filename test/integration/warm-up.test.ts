/**
 * The JIT warm-up of `clusternfs serve` (src/server/warm-up.ts): before its ports open the server
 * boots simulated nodes from a private generated tree, and must leave no trace of it: nothing in
 * the admin's export, no temporary files, no calls or cache entries on /metrics. When it cannot
 * run, the server serves anyway.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MountClient, Nfs3Client, RpcClient } from '../../src/client/index.js';
import { parsePromText, type Exposition } from '../helpers/prom-text.js';
import { CLI, ServerProcess } from '../helpers/server-process.js';

let work: string;
let root: string;

/** TCP sockets in TIME_WAIT on this host's loopback addresses (`ss` from iproute2). */
function timeWaits(): number {
  const r = spawnSync('ss', ['-tanH', 'state', 'time-wait'], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => /\s127\.\d+\.\d+\.\d+:\d+\s/.test(l)).length;
}

function warmUpDirs(tmp = os.tmpdir()): string[] {
  return fs.existsSync(tmp) ? fs.readdirSync(tmp).filter((n) => n.startsWith('clusternfs-warm-up-')) : [];
}

function logLine(proc: ServerProcess, msg: string): Record<string, unknown> | undefined {
  for (const l of proc.log) {
    if (!l.startsWith('{')) continue;
    const j = JSON.parse(l) as Record<string, unknown>;
    if (j.msg === msg) return j;
  }
  return undefined;
}

function sum(x: Exposition, name: string, labels: Record<string, string> = {}): number {
  return x.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
}

async function start(extra: string[], env: Record<string, string> = {}): Promise<{ proc: ServerProcess; port: number }> {
  const port = 23000 + Math.floor(Math.random() * 20000);
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const proc = await ServerProcess.startOnHost([
      root, '--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap',
      '--metrics-port', String(port + 2), '--state-dir', path.join(work, `state-${port}`), ...extra,
    ]);
    return { proc, port };
  } finally {
    process.env = saved;
  }
}

async function readFile(port: number, name: string): Promise<string> {
  const mrpc = await RpcClient.connect({ host: '127.0.0.1', port: port + 1 });
  const rpc = await RpcClient.connect({ host: '127.0.0.1', port });
  try {
    const rootFh = (await new MountClient(mrpc).mnt(root)).fh!;
    const nfs = new Nfs3Client(rpc);
    const fh = (await nfs.lookup(rootFh, name)).fh!;
    return (await nfs.read(fh, 0, 4096)).data.toString();
  } finally {
    await rpc.close();
    await mrpc.close();
  }
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-warm-'));
  root = path.join(work, 'root');
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc', 'hostname'), 'master\n');
  fs.writeFileSync(path.join(root, 'motd'), 'hello\n');
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('JIT warm-up', () => {
  it('boots simulated nodes before the ports open and leaves no trace in the export, the temp dir or /metrics', async () => {
    const before = warmUpDirs();
    const listing = fs.readdirSync(root).sort();
    const waiting = timeWaits();
    const { proc, port } = await start([]);
    // ~190 connections came and went: closed with FIN they would hold their local ports in
    // TIME_WAIT for a minute, and a server given one of those ports could not listen on it. All
    // but one MOUNT connection in 8 (the end-of-stream path, warmed on purpose) end with RST.
    expect(timeWaits() - waiting).toBeLessThan(20);
    try {
      const done = logLine(proc, 'JIT warm-up done');
      expect(done, proc.log.join('\n')).toBeDefined();
      expect(done!.nodes).toBe(96);
      expect(done!.calls as number).toBeGreaterThan(96 * 50);
      expect(done!.problem).toBeUndefined();
      // Before the real ports are announced: no client can meet the server half warmed.
      const serving = proc.log.findIndex((l) => l.includes('"clusternfs serving"'));
      const warmed = proc.log.findIndex((l) => l.includes('"JIT warm-up done"'));
      expect(warmed).toBeGreaterThanOrEqual(0);
      expect(warmed).toBeLessThan(serving);
      // The private server's own lines stay quiet: one "serving" line, the real one.
      expect(proc.log.filter((l) => l.includes('"clusternfs serving"'))).toHaveLength(1);

      expect(warmUpDirs()).toEqual(before);
      expect(fs.readdirSync(root).sort()).toEqual(listing);

      const x = parsePromText(await (await fetch(`http://127.0.0.1:${port + 2}/metrics`)).text());
      // The warm-up made thousands of calls and file-system calls; /metrics counts clients only.
      expect(sum(x, 'clusternfs_rpc_requests_total')).toBe(0);
      expect(sum(x, 'clusternfs_fs_calls_total')).toBeLessThan(10);
      expect(sum(x, 'clusternfs_cache_hits_total')).toBe(0);
      expect(sum(x, 'clusternfs_cache_entries', { cache: 'attr' })).toBeLessThan(5);
      expect(sum(x, 'clusternfs_read_bytes_total')).toBe(0);
      expect(sum(x, 'clusternfs_clients')).toBe(0);

      expect(await readFile(port, 'motd')).toBe('hello\n');
      const after = parsePromText(await (await fetch(`http://127.0.0.1:${port + 2}/metrics`)).text());
      expect(sum(after, 'clusternfs_rpc_requests_total', { procedure: 'READ' })).toBe(1);
    } finally {
      expect(await proc.stop()).toBe(0);
    }
  });

  it('is skipped with --no-warm-up', async () => {
    const { proc, port } = await start(['--no-warm-up']);
    try {
      expect(logLine(proc, 'JIT warm-up done')).toBeUndefined();
      expect(logLine(proc, 'JIT warm-up failed; the first clients meet unoptimised code')).toBeUndefined();
      expect(await readFile(port, 'motd')).toBe('hello\n');
    } finally {
      await proc.stop();
    }
  });

  it('a SIGTERM while it runs ends the server and leaves no temporary tree', async () => {
    const before = warmUpDirs();
    const port = 23000 + Math.floor(Math.random() * 20000);
    const child = spawn(process.execPath, [CLI, 'serve', root, '--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap', '--state-dir', path.join(work, 'state-term')], { stdio: 'ignore' });
    const ended = new Promise<string | number | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && warmUpDirs().length <= before.length) await new Promise((r) => setTimeout(r, 10));
    expect(warmUpDirs().length).toBe(before.length + 1);
    child.kill('SIGTERM');
    expect(await ended).toBe('SIGTERM');
    expect(warmUpDirs()).toEqual(before);
  });

  it('logs a warning and serves anyway when it cannot run', async () => {
    // No usable temporary directory: the generated tree cannot be made.
    const { proc, port } = await start([], { TMPDIR: path.join(work, 'no-such-dir') });
    try {
      const failed = logLine(proc, 'JIT warm-up failed; the first clients meet unoptimised code');
      expect(failed, proc.log.join('\n')).toBeDefined();
      expect(String(failed!.problem)).toMatch(/no-such-dir/);
      expect(await readFile(port, 'motd')).toBe('hello\n');
    } finally {
      expect(await proc.stop()).toBe(0);
    }
  });
});
