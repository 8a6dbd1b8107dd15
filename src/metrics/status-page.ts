/**
 * The human status page at `/` on the metrics port: uptime, exports, the clients talking to us
 * with their request rates, and cache hit rates — plain HTML, readable without Prometheus.
 * Everything that comes from outside (paths, addresses) is escaped.
 */
import type { ExportStore } from '../store/export-store.js';
import type { ServerMetrics } from './metrics.js';

export interface StatusSource {
  version: string;
  exports: readonly { path: string; fsid: number; store: ExportStore }[];
  connections(): number;
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${d > 0 ? `${d}d ` : ''}${h}h ${m}m ${s % 60}s`;
}

function percent(hits: number, misses: number): string {
  return hits + misses === 0 ? '–' : `${((100 * hits) / (hits + misses)).toFixed(2)} %`;
}

function table(head: string[], rows: (string | number)[][]): string {
  const th = head.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const trs = rows.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(String(c))}</td>`).join('')}</tr>`).join('\n');
  return `<table>\n<tr>${th}</tr>\n${trs}\n</table>`;
}

export function renderStatusPage(metrics: ServerMetrics, source: StatusSource | null): string {
  const now = Date.now();
  const clients = metrics.clients.active();
  const parts: string[] = [];
  parts.push(`<p>Up ${escapeHtml(duration(now - metrics.startedAt))} (since ${escapeHtml(new Date(metrics.startedAt).toISOString())})${source ? `, version ${escapeHtml(source.version)}` : ''}.
${source ? `${source.connections()} open TCP connections, ` : ''}${clients.length} active clients. Prometheus metrics: <a href="/metrics">/metrics</a>.</p>`);
  if (source !== null) {
    parts.push('<h2>Exports</h2>');
    parts.push(
      table(
        ['path', 'fsid', 'cached attributes', 'attribute hit rate', 'watched directories', 'read MiB', 'written MiB'],
        source.exports.map((e) => [
          e.path,
          e.fsid,
          e.store.attrs.counters.entries,
          percent(e.store.attrs.counters.hits, e.store.attrs.counters.misses),
          e.store.watcher.size,
          (e.store.bytesRead / 1048576).toFixed(1),
          (e.store.bytesWritten / 1048576).toFixed(1),
        ]),
      ),
    );
  }
  parts.push('<h2>Clients</h2>');
  parts.push(
    clients.length === 0
      ? '<p>No client made a call in the last minute.</p>'
      : table(['address', 'requests/s', 'requests'], clients.map((c) => [c.address, c.rate.toFixed(1), c.calls])),
  );
  parts.push('<h2>Caches</h2>');
  parts.push(
    table(
      ['cache', 'hit rate', 'hits', 'misses', 'evictions', 'invalidations', 'entries'],
      [...metrics.cacheTotals()].map(([name, t]) => [name, percent(t.hits, t.misses), t.hits, t.misses, t.evictions, t.invalidations, t.entries]),
    ),
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clusternfs status</title>
<meta http-equiv="refresh" content="10">
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}</style>
</head><body>
<h1>clusternfs</h1>
${parts.join('\n')}
</body></html>
`;
}
