/**
 * Prometheus metrics (prom-client) and the HTTP endpoint that serves them.
 *
 * Per-call cost matters (see the cost budget in the architecture notes): label children are
 * bound once per (program, version, procedure) when a program is registered, so observing a call
 * is an array look-up and two increments, never a label-string look-up.
 */
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { componentLogger } from '../log/logger.js';
import type { CallObserver, Program, RpcCall } from '../rpc/dispatch.js';
import type { ReplyCache } from '../rpc/reply-cache.js';

const log = componentLogger('metrics');

interface BoundProc {
  requests: Counter.Internal;
  duration: Histogram.Internal<string>;
  bytes: Counter.Internal;
}

export class ServerMetrics implements CallObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<string>;
  private readonly duration: Histogram<string>;
  private readonly replyBytes: Counter<string>;
  /** program → version → procedure → bound children. */
  private readonly bound = new Map<number, Map<number, BoundProc[]>>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'clusternfs_' });
    this.requests = new Counter({
      name: 'clusternfs_rpc_requests_total',
      help: 'RPC calls answered, by program and procedure',
      labelNames: ['program', 'version', 'procedure'],
      registers: [this.registry],
    });
    this.duration = new Histogram({
      name: 'clusternfs_rpc_duration_seconds',
      help: 'Time from dispatch to reply, by program and procedure',
      labelNames: ['program', 'version', 'procedure'],
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
      registers: [this.registry],
    });
    this.replyBytes = new Counter({
      name: 'clusternfs_rpc_reply_bytes_total',
      help: 'Bytes of RPC replies sent, by program and procedure',
      labelNames: ['program', 'version', 'procedure'],
      registers: [this.registry],
    });
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

  /** Binds the label children of every procedure of `program`. */
  watch(program: Program): void {
    const byVersion = new Map<number, BoundProc[]>();
    for (const v of program.versions) {
      const procs: BoundProc[] = [];
      v.procedures.forEach((spec, i) => {
        if (spec === undefined) return;
        const labels = { program: program.name, version: String(v.version), procedure: spec.name };
        procs[i] = { requests: this.requests.labels(labels), duration: this.duration.labels(labels), bytes: this.replyBytes.labels(labels) };
      });
      byVersion.set(v.version, procs);
    }
    this.bound.set(program.program, byVersion);
  }

  onReply(call: RpcCall, replyBytes: number): void {
    const b = this.bound.get(call.prog)?.get(call.vers)?.[call.proc];
    if (b === undefined) return;
    b.requests.inc();
    b.bytes.inc(replyBytes);
    b.duration.observe((performance.now() - call.startedAt) / 1000);
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
