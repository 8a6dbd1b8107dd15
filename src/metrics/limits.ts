/**
 * Prometheus view of the protection limits: how often each one bit (open connections are
 * clusternfs_connections, from the server metrics). Read at scrape time from the plain counters
 * the transports keep; nothing on the call path.
 */
import { Counter, type Registry } from 'prom-client';
import { LIMIT_NAMES, type ConnectionGuard } from '../rpc/limits.js';

export function registerLimitMetrics(registry: Registry, guard: ConnectionGuard): void {
  const counts = guard.hits.counts;
  new Counter({
    name: 'clusternfs_limit_hits_total',
    help: 'Times a protection limit bit (connection refused or closed, reads paused), by limit',
    labelNames: ['limit'],
    registers: [registry],
    collect() {
      this.reset();
      for (let i = 0; i < LIMIT_NAMES.length; i++) this.inc({ limit: LIMIT_NAMES[i] }, counts[i]);
    },
  });
}
