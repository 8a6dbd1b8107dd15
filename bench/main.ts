#!/usr/bin/env node
/**
 * clusternfs benchmark: many simulated nodes against clusternfs and nfs-ganesha, side by side,
 * on the same generated image in the same run. See README "Benchmarks".
 *
 *   npm run bench                 full run (64 nodes, includes the 1M-file memory test)
 *   npm run bench -- --quick      under a minute, for a first look and for CI smoke runs
 *   npm run bench -- --help
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { Command, Option } from 'commander';
import { Histogram } from './histogram.js';
import { generateImage, generateManyFiles, type Image } from './image.js';
import { cpuSeconds, memory, RssSampler } from './proc.js';
import { summarizeProfile } from './profile.js';
import type { FromWorker, NodeInfo, ToWorker, WorkerResult, WorkloadSpec } from './protocol.js';
import { markdown, ratios, svgChart, type Report, type RunResult } from './report.js';
import { ClusterNfs, Ganesha, type ServerName, type ServerUnderTest } from './servers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(here, '..', '..');
const TRACE_DIR = process.env.CLUSTERNFS_TRACE_DIR ?? '/work/shared/data';
/** Inputs that are slow to make and never change, kept between runs (the 1M-file tree). */
const MANY_FILES_CACHE = process.env.BENCH_CACHE_DIR ?? '/var/cache/clusternfs-bench';

export const ALL_WORKLOADS = [
  'getattr-storm-paced',
  'getattr-storm',
  'boot-storm',
  'lookup-remap',
  'lookup-plain',
  'read-1m',
  'write-small',
  'boot-storm-systemd',
  'mem-1m',
] as const;
const DEFAULT_FULL = ALL_WORKLOADS.filter((w) => w !== 'boot-storm-systemd');
const DEFAULT_QUICK = ALL_WORKLOADS.filter((w) => w !== 'boot-storm-systemd' && w !== 'mem-1m');

export interface BenchOptions {
  quick: boolean;
  nodes: number;
  duration: number;
  workers: number;
  depth: number;
  servers: ServerName[];
  workloads: string[];
  out: string;
  latest: boolean;
  profile: boolean;
  keep: boolean;
  memFiles: number;
  progress: boolean;
}

/** 127.0.1.10, 127.0.1.11, ...: every 127/8 address is local once lo is up. */
function nodeAddress(i: number): string {
  return `127.0.${1 + Math.floor(i / 200)}.${10 + (i % 200)}`;
}

function spec(name: string, o: BenchOptions, img: Image): WorkloadSpec {
  const base = { name, durationMs: o.duration * 1000, maxOpsPerNode: Number.MAX_SAFE_INTEGER, depth: o.depth, ratePerNode: 0 };
  switch (name) {
    case 'getattr-storm-paced':
      return { ...base, kind: 'getattr', depth: 1, ratePerNode: 16, paths: img.workingSet };
    case 'getattr-storm':
      return { ...base, kind: 'getattr', paths: img.workingSet };
    case 'boot-storm':
      return { ...base, kind: 'boot', depth: 1, durationMs: 120_000, trace: path.join(TRACE_DIR, 'boot-trace-minimal.jsonl') };
    case 'boot-storm-systemd':
      return { ...base, kind: 'boot', depth: 1, durationMs: 300_000, trace: path.join(TRACE_DIR, 'boot-trace-systemd.jsonl') };
    case 'lookup-remap':
      return { ...base, kind: 'lookup', dir: img.remapDir, lookupName: img.remapName };
    case 'lookup-plain':
      return { ...base, kind: 'lookup', dir: img.plainDir, lookupName: img.remapName };
    case 'read-1m':
      return { ...base, kind: 'read', depth: 1, file: img.bigFile, ioBytes: 1024 * 1024 };
    case 'write-small':
      return { ...base, kind: 'write', file: img.writeDir, ioBytes: 4096 };
    case 'mem-1m':
      return { ...base, kind: 'touch-many', durationMs: 600_000 }; // dirs: filled in by runMemTest
    default:
      throw new Error(`unknown workload ${name} (known: ${ALL_WORKLOADS.join(', ')})`);
  }
}

/** Everything that must not outlive the bench, whatever way it ends. */
class Cleanup {
  readonly servers = new Set<ServerUnderTest>();
  readonly workers = new Set<ChildProcess>();
  tmp: string | null = null;
  keep = false;
  private done = false;

  install(): void {
    const onSignal = (sig: NodeJS.Signals) => {
      process.stderr.write(`\n${sig}: stopping servers and workers\n`);
      this.now();
      process.exit(130);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    process.once('exit', () => this.now());
  }

  now(): void {
    if (this.done) return;
    this.done = true;
    for (const w of this.workers) w.kill('SIGKILL');
    for (const s of this.servers) s.destroy();
    if (this.tmp && !this.keep) fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** One bar per workload and server, on stderr and only on a terminal (cli-progress checks). */
class Progress {
  private bar: cliProgress.SingleBar | null = null;
  constructor(private readonly enabled: boolean) {}

  show(label: string, elapsedS: number, totalS: number, ops: number): void {
    if (!this.enabled) return;
    if (this.bar === null) {
      this.bar = new cliProgress.SingleBar(
        { format: '[{bar}] {label} {elapsed}s {ops} ops', stream: process.stderr, hideCursor: true, clearOnComplete: true },
        cliProgress.Presets.legacy,
      );
      this.bar.start(totalS, 0, { label: label.padEnd(36), elapsed: '0.0', ops: '0' });
    }
    this.bar.update(Math.min(elapsedS, totalS), { elapsed: elapsedS.toFixed(1), ops: ops.toLocaleString('en-US') });
  }

  clear(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

function parseCacheCounters(text: string | null): Map<string, { hits: number; misses: number }> | null {
  if (text === null) return null;
  const out = new Map<string, { hits: number; misses: number }>();
  const re = /^clusternfs_cache_(hits|misses)_total\{[^}]*cache="([^"]+)"[^}]*\}\s+([0-9.e+]+)/gm;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    const e = out.get(m[2]) ?? { hits: 0, misses: 0 };
    if (m[1] === 'hits') e.hits += Number(m[3]);
    else e.misses += Number(m[3]);
    out.set(m[2], e);
  }
  return out.size > 0 ? out : null;
}

/** Hit rate of the attribute cache over the run (all caches together if none is named attr*). */
function hitRate(before: ReturnType<typeof parseCacheCounters>, after: ReturnType<typeof parseCacheCounters>): number | null {
  if (before === null || after === null) return null;
  const names = [...after.keys()];
  const chosen = names.filter((n) => n.startsWith('attr'));
  let hits = 0;
  let misses = 0;
  for (const n of chosen.length > 0 ? chosen : names) {
    const a = after.get(n)!;
    const b = before.get(n) ?? { hits: 0, misses: 0 };
    hits += a.hits - b.hits;
    misses += a.misses - b.misses;
  }
  return hits + misses > 0 ? hits / (hits + misses) : null;
}

async function runWorkload(server: ServerUnderTest, w: WorkloadSpec, o: BenchOptions, cleanup: Cleanup, progress: Progress): Promise<RunResult> {
  const nodes: NodeInfo[] = [];
  for (let i = 0; i < o.nodes; i++) nodes.push({ index: i, address: nodeAddress(i) });
  const nWorkers = Math.max(1, Math.min(o.workers, o.nodes));
  const workers: ChildProcess[] = [];
  const ready: Promise<void>[] = [];
  const done: Promise<WorkerResult>[] = [];
  const opsSoFar = new Array<number>(nWorkers).fill(0);
  for (let k = 0; k < nWorkers; k++) {
    const child = server.spawnWorker();
    cleanup.workers.add(child);
    workers.push(child);
    let onReady!: () => void;
    let onDone!: (r: WorkerResult) => void;
    let onError!: (e: Error) => void;
    ready.push(new Promise<void>((res, rej) => ((onReady = res), (onError = rej))));
    done.push(new Promise<WorkerResult>((res, rej) => ((onDone = res), child.once('error', rej))));
    child.on('message', (m: FromWorker) => {
      if (m.type === 'ready') onReady();
      else if (m.type === 'progress') opsSoFar[k] = m.ops;
      else if (m.type === 'done') onDone(m.result);
      else if (m.type === 'error') onError(new Error(`worker ${k} (${w.name} on ${server.name}): ${m.message}`));
    });
    child.once('exit', (code) => {
      cleanup.workers.delete(child);
      onError(new Error(`worker ${k} exited with ${code}`));
    });
    const mine = nodes.filter((_, i) => i % nWorkers === k);
    const msg: ToWorker = { type: 'setup', target: server.target, nodes: mine, workload: w, totalNodes: o.nodes };
    child.send(msg);
  }
  // A worker failing after setup must fail the run, not hang it.
  const failed = new Promise<never>((_, rej) => ready.forEach((p) => p.catch(rej)));
  await Promise.race([Promise.all(ready), failed]);

  const measureCache = server.name === 'clusternfs' && w.kind === 'getattr';
  const cacheBefore = measureCache ? parseCacheCounters(server.scrapeMetrics()) : null;
  const rss = new RssSampler(server.pid);
  rss.start();
  const cpu0 = cpuSeconds(server.pid);
  const wall0 = performance.now();
  for (const c of workers) c.send({ type: 'go' } satisfies ToWorker);
  const label = `${w.name} @ ${server.name}`;
  const ticker = setInterval(() => {
    progress.show(label, (performance.now() - wall0) / 1000, w.durationMs / 1000, opsSoFar.reduce((a, b) => a + b, 0));
  }, 200);
  let results: WorkerResult[];
  try {
    results = await Promise.race([Promise.all(done), failed]);
  } finally {
    clearInterval(ticker);
    progress.clear();
  }
  const cpu1 = cpuSeconds(server.pid);
  const wall = (performance.now() - wall0) / 1000;
  const peakRss = rss.stop();
  const cacheAfter = measureCache ? parseCacheCounters(server.scrapeMetrics()) : null;

  const hist = new Histogram();
  let ops = 0;
  let errors = 0;
  let nfsErrors = 0;
  let skipped = 0;
  let bytes = 0;
  let clientCpuUs = 0;
  for (const r of results) {
    hist.merge(Histogram.fromSparse(r.hist, r.maxUs));
    ops += r.ops;
    errors += r.errors;
    nfsErrors += r.nfsErrors;
    skipped += r.skipped;
    bytes += r.bytes;
    clientCpuUs += r.cpuUs;
  }
  const start = Math.min(...results.map((r) => r.startMs));
  const end = Math.max(...results.map((r) => r.endMs));
  const seconds = Math.max(1e-3, (end - start) / 1000);
  const serverCpu = cpu1 - cpu0;
  const ioKind = w.kind === 'read' || w.kind === 'write' || w.kind === 'boot';
  return {
    workload: w.name,
    server: server.name,
    nodes: o.nodes,
    ops,
    seconds,
    opsPerSec: ops / seconds,
    p50Us: hist.quantile(0.5),
    p99Us: hist.quantile(0.99),
    p999Us: hist.quantile(0.999),
    maxUs: hist.max,
    mbPerSec: ioKind ? bytes / seconds / 1e6 : null,
    serverCpuUsPerOp: ops > 0 ? (serverCpu * 1e6) / ops : NaN,
    serverCpuPct: (100 * serverCpu) / wall,
    clientCpuPct: (100 * clientCpuUs) / 1e6 / wall,
    peakRssMB: peakRss / 1e6,
    errors,
    nfsErrors,
    skipped,
    makespanS: w.kind === 'boot' ? (Math.max(...results.flatMap((r) => r.nodeEndMs)) - start) / 1000 : null,
    cacheHitRate: measureCache ? hitRate(cacheBefore, cacheAfter) : null,
  };
}

/** Where a server's memory is, from its own /metrics (V8 heap, Buffers, cache entries). */
function memoryBreakdown(text: string | null): string | null {
  if (text === null) return null;
  const value = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  const mb = (x: number) => `${(x / 1e6).toFixed(0)} MB`;
  const heap = value(/^clusternfs_nodejs_heap_size_used_bytes\s+(\S+)/m);
  const external = value(/^clusternfs_nodejs_external_memory_bytes\s+(\S+)/m);
  const entries = [...text.matchAll(/^clusternfs_cache_entries\{cache="([^"]+)"\}\s+(\S+)/gm)].map((m) => `${m[1]} ${Number(m[2]).toLocaleString('en-US')}`);
  return `V8 heap used ${mb(heap)}, external (Buffers) ${mb(external)}${entries.length ? `; cache entries: ${entries.join(', ')}` : ''}`;
}

function machine(): Report['machine'] {
  const v = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'nfs-ganesha'], { encoding: 'utf8' });
  return {
    cpus: os.cpus()[0]?.model ?? 'unknown CPU',
    cores: os.cpus().length,
    memGB: os.totalmem() / 1e9,
    kernel: os.release(),
    node: process.version,
    ganesha: v.status === 0 ? v.stdout.trim() : null,
  };
}

export async function runBench(o: BenchOptions): Promise<{ report: Report; dir: string }> {
  const cleanup = new Cleanup();
  cleanup.keep = o.keep;
  cleanup.install();
  const progress = new Progress(o.progress && process.stderr.isTTY === true);
  const startedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const runDir = path.join(o.out, startedAt.replace(/[:]/g, '-'));
  fs.mkdirSync(runDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clusternfs-bench-'));
  cleanup.tmp = tmp;
  const notes: string[] = [];
  const log = (s: string) => process.stderr.write(`${s}\n`);
  try {
    const nodes = Array.from({ length: o.nodes }, (_, i) => nodeAddress(i));
    const t0 = performance.now();
    const img = generateImage({
      root: path.join(tmp, 'root'),
      traces: [path.join(TRACE_DIR, 'boot-trace-minimal.jsonl'), path.join(TRACE_DIR, 'boot-trace-systemd.jsonl')],
      nodeAddresses: nodes,
      fillerFiles: o.quick ? 1500 : 4000,
      bigFileBytes: (o.quick ? 64 : 256) * 1024 * 1024,
    });
    log(`image: ${img.files.toLocaleString('en-US')} files, ${(img.bytes / 1e6).toFixed(0)} MB (${((performance.now() - t0) / 1000).toFixed(1)} s)`);

    const servers: ServerUnderTest[] = [];
    if (o.servers.includes('clusternfs')) {
      const profDir = o.profile ? path.join(runDir, 'profile') : null;
      servers.push(await ClusterNfs.start(img.root, path.join(tmp, 'state'), profDir, cleanup.servers));
    }
    if (o.servers.includes('ganesha')) {
      if (Ganesha.available()) servers.push(await Ganesha.start(img.root, path.join(tmp, 'ganesha'), cleanup.servers));
      else notes.push('nfs-ganesha or rpcbind is not installed: clusternfs only.');
    }
    if (o.workloads.some((w) => w.startsWith('lookup-remap'))) notes.push('ganesha cannot remap: for lookup-remap it serves the plain tree (etc/hostname is the master for every node).');
    log(`servers: ${servers.map((s) => `${s.name} (pid ${s.pid}, netns ${s.ns})`).join(', ')}`);

    const results: RunResult[] = [];
    const logResult = (r: RunResult) =>
      log(
        `${r.workload.padEnd(20)} ${r.server.padEnd(10)} ${Math.round(r.opsPerSec).toLocaleString('en-US').padStart(9)} ops/s  p99 ${Math.round(r.p99Us).toLocaleString('en-US').padStart(7)} µs  ` +
          `server ${r.serverCpuUsPerOp.toFixed(1).padStart(6)} µs/op  rss ${r.peakRssMB.toFixed(0)} MB  client ${r.clientCpuPct.toFixed(0)}%` +
          `${r.mbPerSec !== null ? `  ${r.mbPerSec.toFixed(1)} MB/s` : ''}${r.makespanS !== null ? `  all booted in ${r.makespanS.toFixed(2)} s` : ''}${r.errors + r.nfsErrors > 0 ? `  errors ${r.errors}+${r.nfsErrors}` : ''}`,
      );
    for (const name of o.workloads) {
      if (name === 'mem-1m') continue; // its own export and server, below
      const w = spec(name, o, img);
      for (const s of servers) {
        const r = await runWorkload(s, w, o, cleanup, progress);
        results.push(r);
        logResult(r);
      }
    }
    for (const s of servers) await s.stop();

    // The memory target is ours (ganesha caps its cache at 100k entries anyway): a fresh server on
    // a tree of nothing but the million files, so its RSS is the cost of their entries.
    if (o.workloads.includes('mem-1m') && o.servers.includes('clusternfs')) {
      const t1 = performance.now();
      const many = await generateManyFiles(MANY_FILES_CACHE, o.memFiles);
      log(`mem-1m: ${o.memFiles.toLocaleString('en-US')} empty files in ${many.dirs.length} directories of ${many.root} (${many.reused ? 'kept from an earlier run' : `made in ${((performance.now() - t1) / 1000).toFixed(1)} s`})`);
      const s = await ClusterNfs.start(many.root, path.join(tmp, 'mem-state'), null, cleanup.servers);
      try {
        const r = await runWorkload(s, { ...spec('mem-1m', o, img), dirs: many.dirs, filesPerDir: many.filesPerDir }, o, cleanup, progress);
        r.peakRssMB = Math.max(r.peakRssMB, memory(s.pid).hwm / 1e6);
        const where = memoryBreakdown(s.scrapeMetrics());
        notes.push(`mem-1m: a fresh clusternfs serving only the ${o.memFiles.toLocaleString('en-US')} files; each LOOKUPed once; peak RSS ${r.peakRssMB.toFixed(0)} MB${where ? `; at the end ${where}` : ''}.`);
        results.push(r);
        logResult(r);
      } catch (err) {
        // The other workloads' figures still deserve a report.
        const dead = s.exitStatus();
        notes.push(`mem-1m failed: ${(err as Error).message.split('\n')[0]}${dead ? ` (clusternfs ${dead.split('\n')[0]})` : ''}`);
        log(`mem-1m failed: ${(err as Error).message}${dead ? `\nclusternfs ${dead}` : ''}`);
      } finally {
        await s.stop();
      }
    }

    const report: Report = {
      startedAt,
      machine: machine(),
      options: { quick: o.quick, nodes: o.nodes, durationS: o.duration, workers: o.workers, depth: o.depth, servers: o.servers, workloads: o.workloads },
      results,
      notes,
    };
    if (o.profile) {
      const profDir = path.join(runDir, 'profile');
      for (const f of fs.existsSync(profDir) ? fs.readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile')) : []) {
        const summary = summarizeProfile(path.join(profDir, f), 40);
        fs.writeFileSync(path.join(profDir, `${f}.txt`), `${summary}\n`);
        log(`\nprofile of clusternfs (${path.join(profDir, f)}):\n${summary}`);
      }
    }
    writeReport(report, runDir, 'results');
    if (o.latest) writeReport(report, o.out, 'latest');
    log('');
    for (const x of ratios(report)) log(`ratio ${x.workload} ${x.metric}: ${x.value.toFixed(2)}${x.target ? ` (target ${x.target}: ${x.met ? 'met' : 'NOT met'})` : ''}`);
    log(`\nresults: ${path.join(runDir, 'results.md')}${o.latest ? `, ${path.join(o.out, 'latest.md')}` : ''}`);
    return { report, dir: runDir };
  } catch (err) {
    // A server that died explains the failure better than the worker's refused connection.
    for (const s of cleanup.servers) {
      const dead = s.exitStatus();
      if (dead !== null) log(`${s.name} ${dead}`);
    }
    throw err;
  } finally {
    cleanup.now();
  }
}

function writeReport(report: Report, dir: string, base: string): void {
  fs.writeFileSync(path.join(dir, `${base}.json`), `${JSON.stringify(report, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, `${base}.svg`), `${svgChart(report)}\n`);
  fs.writeFileSync(path.join(dir, `${base}.md`), markdown(report, `${base}.svg`));
}

function list(v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

async function main(): Promise<void> {
  const cmd = new Command()
    .name('clusternfs-bench')
    .description('simulated diskless nodes against clusternfs and nfs-ganesha, side by side')
    .option('--quick', 'short run: fewer nodes, short workloads, no 1M-file memory test (< 1 minute)', false)
    .option('--nodes <N>', 'simulated nodes (default 64; 16 with --quick)', Number)
    .option('--duration <S>', 'seconds per timed workload (default 10; 1.5 with --quick)', Number)
    .option('--workers <N>', 'load-generating processes per server', Number, 2)
    .option('--depth <N>', 'calls each node keeps outstanding in flat-out GETATTR/LOOKUP/WRITE workloads (a booting kernel client had up to 11)', Number, 4)
    .option('--servers <LIST>', 'clusternfs,ganesha', list, ['clusternfs', 'ganesha'])
    .addOption(new Option('--workloads <LIST>', `comma-separated, from: ${ALL_WORKLOADS.join(', ')}`).argParser(list))
    .option('--out <DIR>', 'results directory', path.join(REPO, 'bench', 'results'))
    .option('--no-latest', 'do not overwrite latest.{md,svg,json} (the files the README shows)')
    .option('--mem-files <N>', 'files for the mem-1m workload', Number, 1_000_000)
    .option('--profile', 'run clusternfs under node --cpu-prof and print where its time went', false)
    .option('--keep', 'keep the generated image and server state (printed path)', false)
    .option('--no-progress', 'no progress bar even on a terminal');
  cmd.parse(process.argv);
  const raw = cmd.opts();
  const quick = raw.quick as boolean;
  const o: BenchOptions = {
    quick,
    nodes: (raw.nodes as number | undefined) ?? (quick ? 16 : 64),
    duration: (raw.duration as number | undefined) ?? (quick ? 1.5 : 10),
    workers: raw.workers as number,
    depth: raw.depth as number,
    servers: raw.servers as ServerName[],
    workloads: (raw.workloads as string[] | undefined) ?? [...(quick ? DEFAULT_QUICK : DEFAULT_FULL)],
    out: path.resolve(raw.out as string),
    // Only a full run replaces the figures the README shows.
    latest: (raw.latest as boolean) && !quick && raw.workloads === undefined && raw.nodes === undefined,
    profile: raw.profile as boolean,
    keep: raw.keep as boolean,
    memFiles: raw.memFiles as number,
    progress: raw.progress as boolean,
  };
  for (const w of o.workloads) if (!(ALL_WORKLOADS as readonly string[]).includes(w)) throw new Error(`unknown workload ${w}`);
  if (process.getuid?.() !== 0) throw new Error('the bench creates network namespaces: run it as root');
  await runBench(o);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (err: Error) => {
      process.stderr.write(`bench: ${err.message}\n`);
      process.exit(1);
    },
  );
}
