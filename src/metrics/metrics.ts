/**
 * Prometheus metrics (prom-client) and the HTTP endpoint that serves them (and the status page).
 *
 * Per-call cost matters (see the cost budget in the architecture notes): the totals of each
 * (program, version, procedure) are created when a program is registered, so observing a call is
 * an array look-up and a few additions, never a label-string look-up; prom-client formats them
 * only when /metrics is scraped. Everything that other modules already count (caches,
 * file-system calls, bytes, error replies, connections) is read at scrape time by `collect()`
 * callbacks: nothing on the call path.
 */
import http from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { CacheCounters } from '../cache/counters.js';
import { componentLogger } from '../log/logger.js';
import { NFS_PROGRAM, NFS_STAT_NAMES } from '../nfs/constants.js';
import type { CallObserver, Program, RpcCall } from '../rpc/dispatch.js';
import type { ReplyCache } from '../rpc/reply-cache.js';
import type { ExportStore } from '../store/export-store.js';
import { fsCallCounts, fsWriteCounts } from '../store/fsops.js';
import { ACTIVE_WINDOW_S, ClientTracker } from './clients.js';
import { renderStatusPage, type StatusSource } from './status-page.js';

const log = componentLogger('metrics');

/** Upper bounds (seconds) of the call-duration histogram. */
const DURATION_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1];

/**
 * One procedure's per-call figures as plain numbers. prom-client's bound children still hash
 * their label object on every inc/observe (a few hundred ns, and garbage, per call); counting
 * here and handing prom-client the totals at scrape time keeps the call path to a few additions.
 */
class ProcTotals {
  requests = 0;
  replyBytes = 0;
  durationSum = 0;
  /** Per bucket (not cumulative), the last slot is +Inf. */
  readonly buckets = new Float64Array(DURATION_BUCKETS.length + 1);
  constructor(
    readonly labels: Record<string, string>,
    /** An NFS procedure whose reply carries an nfsstat3 (all but NULL). */
    readonly nfsStatus: boolean,
  ) {}
}

/** The shape prom-client's Registry reads from a metric at scrape time. */
interface ScrapedMetric {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  values: Array<{ value: number; labels: Record<string, string | number>; metricName?: string }>;
}

/** A metric whose values are read from ProcTotals when scraped, registered like any prom-client metric. */
class TotalsMetric {
  readonly aggregator = 'sum' as const;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'histogram',
    private readonly all: ProcTotals[],
    private readonly read: (t: ProcTotals, name: string) => ScrapedMetric['values'],
  ) {}

  async get(): Promise<ScrapedMetric> {
    return { name: this.name, help: this.help, type: this.type, aggregator: 'sum', values: this.all.flatMap((t) => this.read(t, this.name)) };
  }

  reset(): void {
    for (const t of this.all) {
      t.requests = 0;
      t.replyBytes = 0;
      t.durationSum = 0;
      t.buckets.fill(0);
    }
  }
}

function histogramValues(t: ProcTotals, name: string): ScrapedMetric['values'] {
  const out: ScrapedMetric['values'] = [];
  let cumulative = 0;
  for (let i = 0; i <= DURATION_BUCKETS.length; i++) {
    cumulative += t.buckets[i];
    out.push({ value: cumulative, labels: { ...t.labels, le: i < DURATION_BUCKETS.length ? DURATION_BUCKETS[i] : '+Inf' }, metricName: `${name}_bucket` });
  }
  out.push({ value: t.durationSum, labels: t.labels, metricName: `${name}_sum` });
  out.push({ value: t.requests, labels: t.labels, metricName: `${name}_count` });
  return out;
}

/** Anything with cache-like counters (the remap tag index exposes `size` rather than `entries`). */
export type CacheLike = Pick<CacheCounters, 'hits' | 'misses' | 'evictions'> & { entries?: number; size?: number; invalidations?: number };

/** Counters of the remap module (src/remap/remapper.ts RemapStats), read at scrape time. */
export interface RemapEvents {
  readonly copyUps: number;
  readonly refusedHandles: number;
}

export interface MetricsOptions {
  /** Per-client request series for at most this many client addresses; 0 = none. */
  perClient?: number;
}


/**
 * The process metrics (CPU, memory, event-loop lag, GC) in one registry per process: prom-client
 * keeps the collectors it starts (a GC observer, an event-loop histogram) for good, and with them
 * every registry they were given, so a registry per server would keep each stopped server alive
 * (the JIT warm-up's private server, the servers of a test run).
 */
let processRegistry: Registry | null = null;

function processMetrics(): Registry {
  if (processRegistry === null) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, prefix: 'clusternfs_' });
  }
  return processRegistry;
}

export class ServerMetrics implements CallObserver {
  readonly registry = new Registry();
  private readonly totals: ProcTotals[] = [];
  /** program → version → procedure → totals. */
  private readonly bound = new Map<number, Map<number, ProcTotals[]>>();
  readonly clients = new ClientTracker();
  readonly startedAt = Date.now();
  /** NFS replies with an nfsstat3 (OK ones are these minus the error replies). */
  private nfsReplies = 0;
  private readonly caches = new Map<string, CacheLike[]>();
  private remapStats: (() => Record<string, number>) | null = null;
  private remapEvents: RemapEvents | null = null;
  private statusSource: StatusSource | null = null;
  private readonly perClient: number;

  constructor(opts: MetricsOptions = {}) {
    this.perClient = opts.perClient ?? 0;
    // Started with the first server, so the event-loop lag has samples by the first scrape.
    processMetrics();
    const all = this.totals;
    const metrics = [
      new TotalsMetric('clusternfs_rpc_requests_total', 'RPC calls answered, by program and procedure', 'counter', all, (t) => [{ value: t.requests, labels: t.labels }]),
      new TotalsMetric('clusternfs_rpc_duration_seconds', 'Time from dispatch to reply, by program and procedure', 'histogram', all, histogramValues),
      new TotalsMetric('clusternfs_rpc_reply_bytes_total', 'Bytes of RPC replies sent, by program and procedure', 'counter', all, (t) => [{ value: t.replyBytes, labels: t.labels }]),
    ];
    // registerMetric only needs name/get/reset; prom-client's own types want a full Metric.
    for (const m of metrics) this.registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** A counter whose values are counted elsewhere: prom-client counters cannot be set, so it is reset and re-added. */
  private mirrored(name: string, help: string, labelNames: string[], values: () => Iterable<[Record<string, string>, number]>): void {
    new Counter({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, v] of values()) this.inc(labels, v);
      },
    });
  }

  private gauged(name: string, help: string, labelNames: string[], values: () => Iterable<[Record<string, string>, number]>): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, v] of values()) this.set(labels, v);
      },
    });
  }

  /**
   * Adds a cache to `clusternfs_cache_*{cache="name"}`; several caches under one name (one per
   * export) are summed. The remap tag index registers here as `tags`.
   */
  registerCache(name: string, counters: CacheLike): void {
    let list = this.caches.get(name);
    if (list === undefined) this.caches.set(name, (list = []));
    list.push(counters);
  }

  /** Per-rule resolution counts of the remap module (`clusternfs_remap_resolutions_total{rule}`). */
  registerRemapStats(read: () => Record<string, number>): void {
    this.remapStats = read;
  }

  /** The remap module's copy-up and refused-handle counts, read at scrape time. */
  registerRemapEvents(events: RemapEvents): void {
    this.remapEvents = events;
  }

  /** What the status page shows besides the metrics themselves. */
  setStatusSource(source: StatusSource): void {
    this.statusSource = source;
  }

  /** Cache hit/miss/eviction/entry totals by cache name (the status page shows them too). */
  cacheTotals(): Map<string, { hits: number; misses: number; evictions: number; invalidations: number; entries: number }> {
    const out = new Map<string, { hits: number; misses: number; evictions: number; invalidations: number; entries: number }>();
    for (const [name, list] of this.caches) {
      const t = { hits: 0, misses: 0, evictions: 0, invalidations: 0, entries: 0 };
      for (const c of list) {
        t.hits += c.hits;
        t.misses += c.misses;
        t.evictions += c.evictions;
        t.invalidations += c.invalidations ?? 0;
        t.entries += c.entries ?? c.size ?? 0;
      }
      out.set(name, t);
    }
    return out;
  }

  /** The exports' caches, watchers, data bytes; the NFS program's error replies; file-system calls. */
  watchServer(stores: readonly ExportStore[], errorReplies: ReadonlyMap<number, number>, connections: () => number): void {
    for (const s of stores) {
      this.registerCache('attr', s.attrs.counters);
      this.registerCache('listing', s.listingCounters);
      this.registerCache('content', s.content.counters);
      this.registerCache('symlink', s.content.linkCounters);
    }
    const cacheValues = (field: 'hits' | 'misses' | 'evictions' | 'invalidations' | 'entries') =>
      function* (this: ServerMetrics): Iterable<[Record<string, string>, number]> {
        for (const [cache, t] of this.cacheTotals()) yield [{ cache }, t[field]];
      }.bind(this);
    this.mirrored('clusternfs_cache_hits_total', 'Look-ups answered from the cache, by cache', ['cache'], cacheValues('hits'));
    this.mirrored('clusternfs_cache_misses_total', 'Look-ups the cache could not answer, by cache', ['cache'], cacheValues('misses'));
    this.mirrored('clusternfs_cache_evictions_total', 'Entries dropped by the cache bounds (entries or memory), by cache', ['cache'], cacheValues('evictions'));
    this.mirrored('clusternfs_cache_invalidations_total', 'Entries dropped because the object changed (our change or a watcher event), by cache', ['cache'], cacheValues('invalidations'));
    this.gauged('clusternfs_cache_entries', 'Entries held, by cache', ['cache'], cacheValues('entries'));
    const sum = (f: (s: ExportStore) => number) => () => stores.reduce((n, s) => n + f(s), 0);
    const single = (name: string, help: string, read: () => number, kind: 'counter' | 'gauge') =>
      (kind === 'counter' ? this.mirrored : this.gauged).call(this, name, help, [], () => [[{}, read()]]);
    single('clusternfs_watch_directories', 'Directories watched with inotify for changes behind our back', sum((s) => s.watcher.size), 'gauge');
    single('clusternfs_watch_events_total', 'inotify events received', sum((s) => s.watcher.events), 'counter');
    single('clusternfs_watch_failures_total', 'Directories that could not be watched (cap or kernel limit; their entries live only for the TTL)', sum((s) => s.watcher.failures), 'counter');
    single('clusternfs_read_bytes_total', 'File data bytes sent by READ', sum((s) => s.bytesRead), 'counter');
    single('clusternfs_read_sendfile_bytes_total', 'Of those, bytes sent straight from the file (sendfile, no copy)', sum((s) => s.bytesSentFromFile), 'counter');
    single('clusternfs_write_bytes_total', 'File data bytes written by WRITE', sum((s) => s.bytesWritten), 'counter');
    single('clusternfs_connections', 'Open TCP connections (NFS and MOUNT)', connections, 'gauge');
    single('clusternfs_clients', `Distinct client addresses that made a call in the last ${ACTIVE_WINDOW_S} s`, () => this.clients.active().length, 'gauge');
    this.mirrored('clusternfs_nfs_replies_total', 'NFS replies by nfsstat3', ['status'], () => {
      let errors = 0;
      const out: [Record<string, string>, number][] = [];
      for (const [status, n] of errorReplies) {
        errors += n;
        out.push([{ status: NFS_STAT_NAMES[status] ?? String(status) }, n]);
      }
      out.push([{ status: 'NFS3_OK' }, Math.max(0, this.nfsReplies - errors)]);
      return out;
    });
    this.mirrored('clusternfs_fs_calls_total', 'File-system calls made by the store, by kind (a cache hit makes none)', ['kind'], () =>
      [...Object.entries(fsCallCounts), ...Object.entries(fsWriteCounts)].map(([kind, n]) => [{ kind }, n] as [Record<string, string>, number]),
    );
    this.mirrored('clusternfs_remap_resolutions_total', 'Per-client remap resolutions, by rule', ['rule'], () =>
      Object.entries(this.remapStats?.() ?? {}).map(([rule, n]) => [{ rule }, n] as [Record<string, string>, number]),
    );
    single('clusternfs_remap_copy_ups_total', 'COW masters copied to a client\'s variant on its first change', () => this.remapEvents?.copyUps ?? 0, 'counter');
    single('clusternfs_remap_refused_handles_total', 'Variant handles refused (STALE) to clients that do not resolve to that variant', () => this.remapEvents?.refusedHandles ?? 0, 'counter');
    if (this.perClient > 0) {
      this.mirrored('clusternfs_client_requests_total', `RPC calls by client address (the ${this.perClient} busiest; --metrics-per-client)`, ['client'], () =>
        this.clients.all().slice(0, this.perClient).map((c) => [{ client: c.address }, c.calls] as [Record<string, string>, number]),
      );
    }
  }

  /** The duplicate-request cache's counters, read at scrape time (nothing on the call path). */
  watchReplyCache(cache: ReplyCache): void {
    const registers = [this.registry];
    // prom-client counters cannot be set; a counter mirrored from elsewhere is reset and re-added.
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({ name, help, registers, collect() { this.reset(); this.inc(value()); } });
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({ name, help, registers, collect() { this.set(value()); } });
    counter('clusternfs_reply_cache_hits_total', 'Retransmissions answered with the cached first reply', () => cache.hits);
    counter('clusternfs_reply_cache_in_progress_drops_total', 'Retransmissions dropped because the first call was still running', () => cache.inProgressDrops);
    counter('clusternfs_reply_cache_evictions_total', 'Replies evicted from the duplicate-request cache by its bounds', () => cache.evictions);
    gauge('clusternfs_reply_cache_entries', 'Entries in the duplicate-request cache', () => cache.entries);
    gauge('clusternfs_reply_cache_bytes', 'Bytes held by the duplicate-request cache', () => cache.bytes);
  }

  /** Creates the totals of every procedure of `program`, so a call finds them by index. */
  watch(program: Program): void {
    const byVersion = new Map<number, ProcTotals[]>();
    for (const v of program.versions) {
      const procs: ProcTotals[] = [];
      v.procedures.forEach((spec, i) => {
        if (spec === undefined) return;
        const t = new ProcTotals({ program: program.name, version: String(v.version), procedure: spec.name }, program.program === NFS_PROGRAM && i !== 0);
        procs[i] = t;
        this.totals.push(t);
      });
      byVersion.set(v.version, procs);
    }
    this.bound.set(program.program, byVersion);
  }

  onReply(call: RpcCall, replyBytes: number): void {
    const t = this.bound.get(call.prog)?.get(call.vers)?.[call.proc];
    if (t === undefined) return;
    const seconds = (performance.now() - call.startedAt) / 1000;
    t.requests++;
    t.replyBytes += replyBytes;
    t.durationSum += seconds;
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]) i++;
    t.buckets[i]++;
    if (t.nfsStatus) this.nfsReplies++;
    this.clients.record(call.sink.address);
  }

  /** The status page's HTML (see status-page.ts). */
  statusPage(): string {
    return renderStatusPage(this, this.statusSource);
  }

  close(): void {
    this.clients.close();
  }

  /** The text /metrics serves: this server's series and the process's. */
  exposition(): Promise<string> {
    return Registry.merge([this.registry, processMetrics()]).metrics();
  }
}

/** Serves GET /metrics on host:port; returns the bound port and a closer. */
export function serveMetrics(metrics: ServerMetrics, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      metrics.exposition().then(
        (body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        },
        (err) => {
          log.error({ err }, 'metrics collection failed');
          res.writeHead(500).end();
        },
      );
    } else if (req.method === 'GET' && req.url?.split('?')[0] === '/') {
      let body: string;
      try {
        body = metrics.statusPage();
      } catch (err) {
        log.error({ err }, 'status page failed');
        res.writeHead(500).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(body);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('clusternfs: metrics are at /metrics, the status page at /\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const bound = (server.address() as { port: number }).port;
      resolve({ port: bound, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}
