/**
 * JIT warm-up before the ports open.
 *
 * V8 runs a function interpreted until it has been called often enough, then optimises it on
 * background threads whose CPU is the server's. A fresh server therefore paid for its compiler
 * during the first boot storm it served: in the bench, ~0.3 s of compile time plus slow
 * interpreted calls, 85-125 µs of CPU per call, where the same storm served a second time costs
 * 24-34 µs (and 40-68 µs after this warm-up). The first storm after a restart is the one that
 * matters (a power cut restarts the server and the nodes together), so before its ports open the
 * server boots 96 simulated nodes from itself (about 15,000 calls, 1.5-3 s).
 *
 * Nothing of the admin's is touched: the nodes boot from a small generated root in a temporary
 * directory, exported to loopback by a private server instance (same classes, so the
 * same code is optimised; its own stores, caches and metrics) on ephemeral ports, and the client
 * is a child process (warm-up-client.ts). The process-wide file-system call counters are put back
 * afterwards, so /metrics counts clients only. If anything fails (no loopback, no writable temp
 * directory) the server logs a warning and serves unwarmed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { componentLogger, rootLogger, setLogLevel } from '../log/logger.js';
import { quickExport, type ExportEntry } from '../mount/exports.js';
import { fsCallCounts, fsWriteCounts } from '../store/fsops.js';
import { DEFAULT_CACHE_OPTIONS, type CacheOptions } from '../cache/options.js';
import type { WarmUpClientJob, WarmUpClientResult } from './warm-up-client.js';

const log = componentLogger('warm-up');

/** What warm-up needs of a server: started on the generated tree, then stopped. */
export interface WarmUpServer {
  readonly ports: { nfs: number; mount: number };
  stop(): Promise<void>;
  /** After stop(): lets cached data go, keeping the objects (see `retained`). */
  dropStorage(): void;
}

export type StartWarmUpServer = (cfg: {
  exportEntry: ExportEntry;
  cache: Partial<CacheOptions>;
  /** Its handle index lives here: an index kept on disk, as the real one is (see warmUp()). */
  stateDir: string;
}) => Promise<WarmUpServer>;

export interface WarmUpOptions {
  /** Simulated nodes to boot (about 90 calls each). */
  nodes?: number;
  /** No node starts after this long; the warm-up usually needs 1-2 s. */
  budgetMs?: number;
  /** The real exports' cache options: the private store's caches get the same kinds of arrays. */
  cache?: Partial<CacheOptions>;
  /**
   * A served export's fsid, for the private one: V8 keeps a small integer and a large one in
   * different kinds of fields, and objects of one kind make code optimised for the other's deopt.
   */
  fsid?: number;
}

export interface WarmUpResult {
  calls: number;
  nodes: number;
  ms: number;
  /** Why it did not run or stopped early; '' when every node booted. */
  problem: string;
}

/** The generated root: what a minimal Debian boot reads, at about its sizes, with one tagged file. */
const TREE_FILES: [string, number][] = [
  ['etc/hostname', 0],
  ['etc/hostname$$IP=127.0.0.1$$', 0],
  ['etc/fstab', 700],
  ['etc/passwd', 1800],
  ['etc/ld.so.cache', 40_000],
  ['etc/nsswitch.conf', 500],
  ['usr/lib/os-release', 300],
  ['usr/lib/x86_64-linux-gnu/libc.so.6', 300_000],
  ['usr/lib/x86_64-linux-gnu/libselinux.so.1', 170_000],
  ['usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 150_000],
  ['usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 210_000],
  ['usr/bin/dash', 125_000],
  ['usr/lib/systemd/systemd', 90_000],
];
const TREE_LINKS: [string, string][] = [
  ['bin', 'usr/bin'],
  ['lib', 'usr/lib'],
  ['lib64', 'usr/lib/x86_64-linux-gnu'],
  ['etc/os-release', '../usr/lib/os-release'],
  ['usr/bin/sh', 'dash'],
  ['usr/lib/x86_64-linux-gnu/libpcre2-8.so.0', 'libpcre2-8.so.0.11.2'],
  ['usr/sbin/init', '../lib/systemd/systemd'],
];
const TREE_DIRS = ['usr/sbin', 'var/log', 'run', 'tmp', 'proc', 'sys', 'dev'];
/** What each node reads, by the paths a boot uses (through bin, lib and lib64). */
const BOOT_FILES = [
  'etc/hostname',
  'lib64/ld-linux-x86-64.so.2',
  'etc/ld.so.cache',
  'lib/x86_64-linux-gnu/libc.so.6',
  'bin/sh',
  'etc/fstab',
  'usr/sbin/init',
  'lib/x86_64-linux-gnu/libselinux.so.1',
  'lib/x86_64-linux-gnu/libpcre2-8.so.0',
  'etc/passwd',
  'etc/nsswitch.conf',
  'etc/os-release',
];

/** Per-node extra files: each node reads a few others have not, so lookups and READs also miss the caches. */
const SHARED_FILES = 128;
const SHARED_PER_NODE = 6;
/** Warm-up nodes come from 127.0.0.1 to 127.0.0.<ADDRESSES>; the first few have their own hostname. */
const ADDRESSES = 16;
const TAGGED_ADDRESSES = 4;

function makeTree(root: string): void {
  for (const d of TREE_DIRS) fs.mkdirSync(path.join(root, d), { recursive: true });
  const shared = path.join(root, 'usr/share/warm-up');
  fs.mkdirSync(shared, { recursive: true });
  for (let i = 0; i < SHARED_FILES; i++) fs.writeFileSync(path.join(shared, `f${i}`), Buffer.alloc(256 + 61 * i, 0x2e));
  for (const [rel, size] of TREE_FILES) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    const body = size === 0 ? `${rel.includes('$$') ? 'warm-up-node' : 'warm-up'}\n` : Buffer.alloc(size, 0x2e);
    fs.writeFileSync(path.join(root, rel), body, { mode: 0o755 });
  }
  for (const [rel, target] of TREE_LINKS) fs.symlinkSync(target, path.join(root, rel));
  for (let a = 2; a <= TAGGED_ADDRESSES; a++) fs.writeFileSync(path.join(root, `etc/hostname$$IP=127.0.0.${a}$$`), `warm-up-node-${a}\n`);
}

/**
 * The stopped warm-up servers, kept for the life of the process. V8 keeps a hidden class (map)
 * only while some object has it, and optimised code that was specialised for a map that dies is
 * thrown away. Once the warm-up's stores, caches, parsed tags and client views were garbage, the
 * first real calls built new maps for the same objects and deoptimised the very code the warm-up
 * had compiled (seen with --trace-generalization: "uninitialized field" in the remapper's and the
 * tag parser's objects, then target() and targetCached() deoptimised). What its caches held (a
 * 64K-slot attribute chunk, index rows, file contents: 10 MB of heap) is let go; what stays is
 * ~5 MB of heap, lru-cache's preallocated arrays (mem-1m's peak RSS: 283 MB without, 290 with).
 */
const retained: WarmUpServer[] = [];

export async function warmUp(start: StartWarmUpServer, opts: WarmUpOptions = {}): Promise<WarmUpResult> {
  const t0 = performance.now();
  const budgetMs = opts.budgetMs ?? 4000;
  const savedCalls = { ...fsCallCounts };
  const savedWrites = { ...fsWriteCounts };
  // The private server's own lines (ports, "serving") would read as if the real one had started.
  const level = rootLogger.level;
  const quiet = rootLogger.levelVal < rootLogger.levels.values.warn;
  let tmp: string | null = null;
  let server: WarmUpServer | null = null;
  let result: WarmUpClientResult = { calls: 0, nodes: 0, failures: [] };
  let problem = '';
  // Ctrl-C or SIGTERM while warming still ends the process (the CLI's handlers are not installed
  // yet), but without leaving the generated tree behind.
  const onSignal = (signal: NodeJS.Signals) => {
    if (tmp !== null) fs.rmSync(tmp, { recursive: true, force: true });
    process.kill(process.pid, signal);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  try {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clusternfs-warm-up-'));
    const root = path.join(tmp, 'root');
    fs.mkdirSync(root);
    makeTree(root);
    if (quiet) setLogLevel('warn');
    const exportEntry = quickExport(root, false, opts.fsid);
    // Objects of the same classes with the same kinds of fields as the real server's: a field that
    // held only null in the warm-up (an in-memory handle index has no log file) and then holds a
    // file in the real server makes V8 throw away all the code optimised against it.
    server = await start({ exportEntry, cache: sameArrayKinds(opts.cache ?? {}), stateDir: path.join(tmp, 'state') });
    const job: WarmUpClientJob = {
      host: '127.0.0.1',
      nfsPort: server.ports.nfs,
      mountPort: server.ports.mount,
      exportPath: exportEntry.path,
      files: BOOT_FILES,
      // They exist: EXIST, through the same store and remap paths as a booting node's MKDIRs.
      mkdirs: ['run', 'tmp'],
      sharedDir: 'usr/share/warm-up',
      sharedFiles: SHARED_FILES,
      sharedPerNode: SHARED_PER_NODE,
      addresses: ADDRESSES,
      nodes: opts.nodes ?? 96,
      // Many nodes at once, as in a storm: calls then wait on fills other nodes started, a path
      // 8 at once rarely took (boot-storm, 12 alternated runs: 2 µs less CPU per call).
      concurrency: 32,
      budgetMs,
    };
    // Files change under a real server too (an rsync of a new image): touching some while the
    // nodes read makes the caches drop and refill them, the paths a real storm also takes.
    let touched = 0;
    const toucher = setInterval(() => {
      const rel = touched % 2 === 0 ? `usr/share/warm-up/f${(touched * 11) % SHARED_FILES}` : BOOT_FILES[touched % BOOT_FILES.length];
      touched++;
      const when = new Date();
      try {
        fs.utimesSync(path.join(root, rel), when, when);
      } catch {
        // A symlink path (utimes would follow it): its target is touched under its own name.
      }
    }, 20);
    try {
      result = await runClient(job, budgetMs + 10_000);
    } finally {
      clearInterval(toucher);
    }
    if (result.failures.length > 0) problem = result.failures[0];
    else if (result.nodes < job.nodes) problem = `budget of ${budgetMs} ms spent after ${result.nodes} of ${job.nodes} nodes`;
  } catch (err) {
    problem = (err as Error).message;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await server?.stop().catch(() => undefined);
    if (server !== null) {
      server.dropStorage();
      retained.push(server);
    }
    if (quiet) setLogLevel(level);
    if (tmp !== null) fs.rmSync(tmp, { recursive: true, force: true });
    Object.assign(fsCallCounts, savedCalls);
    Object.assign(fsWriteCounts, savedWrites);
  }
  const ms = Math.round(performance.now() - t0);
  if (result.calls === 0) log.warn({ problem, ms }, 'JIT warm-up failed; the first clients meet unoptimised code');
  else log.info({ nodes: result.nodes, calls: result.calls, ms, ...(problem === '' ? {} : { problem }) }, 'JIT warm-up done');
  return { calls: result.calls, nodes: result.nodes, ms, problem };
}

function runClient(job: WarmUpClientJob, timeoutMs: number): Promise<WarmUpClientResult> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(new URL('./warm-up-client.js', import.meta.url)), [], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    let answer: WarmUpClientResult | null = null;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`warm-up client still running after ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('message', (r: WarmUpClientResult) => (answer = r));
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (answer !== null) resolve(answer);
      else reject(new Error(`warm-up client exited with ${code ?? signal} before answering`));
    });
    child.send(job);
  });
}

/**
 * lru-cache picks Uint8/16/32Array for its links by the entry bound; the private store's caches
 * must use the kinds the real ones do, or the optimised code would meet new kinds and be thrown
 * away. Bounds above 2^16 only need to stay above it (and small enough to allocate at once).
 */
function sameArrayKinds(cache: Partial<CacheOptions>): Partial<CacheOptions> {
  const c = { ...DEFAULT_CACHE_OPTIONS, ...cache };
  const kindOf = (n: number) => (n <= 65536 ? n : 65537);
  return { ...c, attrEntries: kindOf(c.attrEntries), listingEntries: kindOf(c.listingEntries) };
}
