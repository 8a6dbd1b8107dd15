/**
 * Prometheus metrics (prom-client) and the HTTP endpoint that serves them.
 *
 * Per-call cost matters (see the cost budget in the architecture notes): the totals of each
 * (program, version, procedure) are created when a program is registered, so observing a call is
 * an array look-up and a few additions, never a label-string look-up; prom-client formats them
 * only when /metrics is scraped.
 */
import http from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { componentLogger } from '../log/logger.js';
import type { CallObserver, Program, RpcCall } from '../rpc/dispatch.js';
import type { ReplyCache } from '../rpc/reply-cache.js';

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
  constructor(readonly labels: Record<string, string>) {}
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

export class ServerMetrics implements CallObserver {
  readonly registry = new Registry();
  private readonly totals: ProcTotals[] = [];
  /** program → version → procedure → totals. */
  private readonly bound = new Map<number, Map<number, ProcTotals[]>>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'clusternfs_' });
    const all = this.totals;
    const metrics = [
      new TotalsMetric('clusternfs_rpc_requests_total', 'RPC calls answered, by program and procedure', 'counter', all, (t) => [{ value: t.requests, labels: t.labels }]),
      new TotalsMetric('clusternfs_rpc_duration_seconds', 'Time from dispatch to reply, by program and procedure', 'histogram', all, histogramValues),
      new TotalsMetric('clusternfs_rpc_reply_bytes_total', 'Bytes of RPC replies sent, by program and procedure', 'counter', all, (t) => [{ value: t.replyBytes, labels: t.labels }]),
    ];
    // registerMetric only needs name/get/reset; prom-client's own types want a full Metric.
    for (const m of metrics) this.registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0]);
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
        const t = new ProcTotals({ program: program.name, version: String(v.version), procedure: spec.name });
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
  }
}

/** Serves GET /metrics on host:port; returns the bound port and a closer. */
export function serveMetrics(metrics: ServerMetrics, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      metrics.registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        },
        (err) => {
          log.error({ err }, 'metrics collection failed');
          res.writeHead(500).end();
        },
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('clusternfs: metrics are at /metrics\n');
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
