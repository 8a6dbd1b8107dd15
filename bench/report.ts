/** The run's results as JSON, a markdown table with ratios and target checks, and an SVG chart. */

export interface RunResult {
  workload: string;
  server: string;
  nodes: number;
  ops: number;
  seconds: number;
  opsPerSec: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  mbPerSec: number | null;
  /** Server CPU time per call (µs), from /proc/<pid>/stat over the measured interval. */
  serverCpuUsPerOp: number;
  /** Server CPU over wall time, % of one core. */
  serverCpuPct: number;
  /** Client (all workers) CPU over wall time, % of one core. */
  clientCpuPct: number;
  peakRssMB: number;
  errors: number;
  nfsErrors: number;
  skipped: number;
  /** boot-storm: seconds until the last node finished. */
  makespanS: number | null;
  /** clusternfs: attribute-cache hit rate over the run, from /metrics; null if not exported. */
  cacheHitRate: number | null;
}

export interface Report {
  startedAt: string;
  machine: { cpus: string; cores: number; memGB: number; kernel: string; node: string; ganesha: string | null };
  options: Record<string, unknown>;
  results: RunResult[];
  notes: string[];
}

const fmt = (x: number | null, digits = 0): string =>
  x === null || !Number.isFinite(x) ? 'n/a' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function find(r: Report, workload: string, server: string): RunResult | undefined {
  return r.results.find((x) => x.workload === workload && x.server === server);
}

export interface Ratio {
  workload: string;
  metric: string;
  value: number;
  target: string | null;
  met: boolean | null;
}

/** clusternfs/ganesha per workload, and the issue's targets. */
export function ratios(r: Report): Ratio[] {
  const out: Ratio[] = [];
  const workloads = [...new Set(r.results.map((x) => x.workload))];
  for (const w of workloads) {
    const a = find(r, w, 'clusternfs');
    const b = find(r, w, 'ganesha');
    if (!a || !b) continue;
    const add = (metric: string, value: number, target: string | null, met: boolean | null) => out.push({ workload: w, metric, value, target, met });
    if (w === 'boot-storm' || w === 'boot-storm-systemd') {
      const v = a.makespanS! / b.makespanS!;
      add('time to boot all nodes', v, w === 'boot-storm' ? '< 1' : null, w === 'boot-storm' ? v < 1 : null);
      continue;
    }
    if (w === 'read-1m') {
      const v = a.mbPerSec! / b.mbPerSec!;
      add('MB/s', v, '≥ 0.8', v >= 0.8);
    } else {
      const v = a.opsPerSec / b.opsPerSec;
      const t = w === 'getattr-storm';
      add('ops/s', v, t ? '≥ 1.5' : null, t ? v >= 1.5 : null);
    }
    const cpu = a.serverCpuUsPerOp / b.serverCpuUsPerOp;
    const t = w === 'getattr-storm';
    add('server CPU µs/op', cpu, t ? '≤ 0.6' : null, t ? cpu <= 0.6 : null);
    const p99 = a.p99Us / b.p99Us;
    add('p99 latency', p99, t ? '≤ 1' : null, t ? p99 <= 1 : null);
  }
  for (const server of ['clusternfs', 'ganesha']) {
    const rm = find(r, 'lookup-remap', server);
    const pl = find(r, 'lookup-plain', server);
    if (rm && pl) {
      const v = rm.serverCpuUsPerOp / pl.serverCpuUsPerOp;
      out.push({ workload: `lookup-remap / lookup-plain (${server})`, metric: 'server CPU µs/op', value: v, target: server === 'clusternfs' ? '≤ 1.1' : null, met: server === 'clusternfs' ? v <= 1.1 : null });
    }
  }
  const mem = find(r, 'mem-1m', 'clusternfs');
  if (mem) out.push({ workload: 'mem-1m (clusternfs)', metric: 'peak RSS MB', value: mem.peakRssMB, target: '≤ 300', met: mem.peakRssMB <= 300 });
  const storm = find(r, 'getattr-storm', 'clusternfs');
  if (storm && storm.cacheHitRate !== null) out.push({ workload: 'getattr-storm (clusternfs)', metric: 'cache hit rate', value: storm.cacheHitRate, target: '≥ 0.99', met: storm.cacheHitRate >= 0.99 });
  return out;
}

export function markdown(r: Report, chartFile: string | null): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push(`# clusternfs benchmark, ${r.startedAt}`, '');
  lines.push(`Machine: ${m.cpus}, ${m.cores} cores, ${fmt(m.memGB)} GB RAM, Linux ${m.kernel}, Node ${m.node}${m.ganesha ? `, nfs-ganesha ${m.ganesha}` : ''}.`);
  lines.push(`Options: ${Object.entries(r.options).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`).join(', ')}.`, '');
  lines.push('Server CPU is utime+stime of the server process (all threads) over the measured interval, divided by the calls answered; client CPU is all load workers together, % of one core. Latency is measured by the client, per call.', '');
  lines.push('| workload | server | nodes | ops | ops/s | p50 µs | p99 µs | p99.9 µs | MB/s | server CPU µs/op | server CPU % | peak RSS MB | client CPU % | errors | boot s | cache hits |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of r.results) {
    lines.push(
      `| ${x.workload} | ${x.server} | ${x.nodes} | ${fmt(x.ops)} | ${fmt(x.opsPerSec)} | ${fmt(x.p50Us)} | ${fmt(x.p99Us)} | ${fmt(x.p999Us)} | ${fmt(x.mbPerSec, 1)} | ${fmt(x.serverCpuUsPerOp, 1)} | ${fmt(x.serverCpuPct)} | ${fmt(x.peakRssMB)} | ${fmt(x.clientCpuPct)} | ${x.errors + x.nfsErrors} | ${fmt(x.makespanS, 2)} | ${x.cacheHitRate === null ? 'n/a' : `${fmt(x.cacheHitRate * 100, 2)}%`} |`,
    );
  }
  const rs = ratios(r);
  if (rs.length > 0) {
    lines.push('', '## Ratios (clusternfs / ganesha unless named) and targets', '');
    lines.push('| workload | metric | ratio | target | met |', '|---|---|---:|---|---|');
    for (const x of rs) lines.push(`| ${x.workload} | ${x.metric} | ${fmt(x.value, 2)} | ${x.target ?? ''} | ${x.met === null ? '' : x.met ? 'yes' : '**no**'} |`);
  }
  if (r.notes.length > 0) lines.push('', '## Notes', '', ...r.notes.map((n) => `- ${n}`));
  if (chartFile) lines.push('', `![chart](${chartFile})`);
  lines.push('');
  return lines.join('\n');
}

const COLORS: Record<string, string> = { clusternfs: '#2b7bb9', ganesha: '#e07b39' };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

/**
 * Two panels of horizontal bars, one bar per server and workload: throughput (ops/s, or MB/s for
 * read-1m, or 1/boot time for boot-storm) and server CPU µs per call. Each panel is scaled per
 * workload to its larger bar, so workloads with very different rates stay readable.
 */
export function svgChart(r: Report): string {
  const servers = [...new Set(r.results.map((x) => x.server))];
  const workloads = [...new Set(r.results.map((x) => x.workload))];
  const rowH = 16;
  const groupH = servers.length * rowH + 12;
  const labelW = 150;
  const barW = 260;
  const panelW = labelW + barW + 90;
  const top = 56;
  const height = top + workloads.length * groupH + 40;
  const width = panelW * 2 + 20;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="10" y="18" font-size="14" font-weight="bold">clusternfs vs nfs-ganesha, ${esc(r.startedAt)} (${r.machine.cores} cores, ${esc(String(r.options.nodes))} nodes)</text>`);
  servers.forEach((s, i) => {
    out.push(`<rect x="${10 + i * 110}" y="28" width="12" height="12" fill="${COLORS[s] ?? '#888'}"/><text x="${26 + i * 110}" y="38">${esc(s)}</text>`);
  });
  const panels: Array<{ title: string; value: (x: RunResult) => number; unit: (x: RunResult) => string }> = [
    {
      title: 'throughput (longer is better)',
      value: (x) => (x.makespanS !== null ? 1 / x.makespanS : x.mbPerSec !== null && x.workload.startsWith('read') ? x.mbPerSec : x.opsPerSec),
      unit: (x) => (x.makespanS !== null ? `${fmt(x.makespanS, 2)} s` : x.mbPerSec !== null && x.workload.startsWith('read') ? `${fmt(x.mbPerSec)} MB/s` : `${fmt(x.opsPerSec)}/s`),
    },
    { title: 'server CPU per call, µs (shorter is better)', value: (x) => x.serverCpuUsPerOp, unit: (x) => `${fmt(x.serverCpuUsPerOp, 1)} µs` },
  ];
  panels.forEach((p, pi) => {
    const x0 = 10 + pi * (panelW + 10);
    out.push(`<text x="${x0}" y="${top - 6}" font-weight="bold">${esc(p.title)}</text>`);
    workloads.forEach((w, wi) => {
      const y0 = top + wi * groupH;
      const rows = servers.map((s) => find(r, w, s)).filter((x): x is RunResult => x !== undefined);
      const vmax = Math.max(...rows.map((x) => (Number.isFinite(p.value(x)) ? p.value(x) : 0)), 1e-9);
      out.push(`<text x="${x0}" y="${y0 + rowH}">${esc(w)}</text>`);
      servers.forEach((s, si) => {
        const x = find(r, w, s);
        if (!x) return;
        const v = Number.isFinite(p.value(x)) ? p.value(x) : 0;
        const len = Math.max(1, (v / vmax) * barW);
        const y = y0 + si * rowH + 2;
        out.push(`<rect x="${x0 + labelW}" y="${y}" width="${len.toFixed(1)}" height="${rowH - 4}" fill="${COLORS[s] ?? '#888'}"/>`);
        out.push(`<text x="${(x0 + labelW + len + 4).toFixed(1)}" y="${y + rowH - 6}">${esc(p.unit(x))}</text>`);
      });
    });
  });
  out.push('</svg>');
  return out.join('\n');
}
