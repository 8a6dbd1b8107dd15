/**
 * /metrics scraped over HTTP and parsed strictly: cache, reply-status, byte, file-system-call,
 * connection and client series move exactly with the traffic this test sends, and the attribute
 * cache's hit rate is computable from them. The status page at / lists the live clients and
 * escapes what it shows.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NfsStat, StableHow } from '../../src/nfs/constants.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, quickExport, type Session, startServer } from '../helpers/inproc-server.js';
import { parsePromText, type Exposition } from '../helpers/prom-text.js';

let work: string;
let root: string;
let server: ClusterNfsServer;
let a: Session;
let b: Session;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-metrics-cache-'));
  // A name that must be escaped on the status page.
  root = path.join(work, 'x<b>&"y');
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, 'f'), 'x'.repeat(1000));
  server = await startServer([quickExport(root)], null, {
    metricsPort: 0,
    metricsPerClient: 8,
  });
  a = await mountSession(server, root, { localAddress: '127.0.0.31' });
  b = await mountSession(server, root, { localAddress: '127.0.0.32' });
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

async function scrape(): Promise<Exposition> {
  const res = await fetch(`http://127.0.0.1:${server.ports.metrics}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return parsePromText(await res.text());
}

function delta(before: Exposition, after: Exposition, name: string, labels: Record<string, string> = {}): number {
  return (after.get(name, labels) ?? 0) - (before.get(name, labels) ?? 0);
}

it('counters move with the traffic sent, and the hit rate is computable', async () => {
  const f = (await a.nfs.lookup(a.root, 'f')).fh!;
  await a.nfs.getattr(f);
  const before = await scrape();
  for (const t of ['clusternfs_cache_hits_total', 'clusternfs_cache_misses_total', 'clusternfs_cache_evictions_total', 'clusternfs_nfs_replies_total', 'clusternfs_fs_calls_total']) {
    expect(before.types.get(t), t).toBe('counter');
  }
  expect(before.types.get('clusternfs_cache_entries')).toBe('gauge');

  for (let i = 0; i < 200; i++) expect((await a.nfs.getattr(f)).status).toBe(NfsStat.OK);
  expect((await b.nfs.lookup(b.root, 'missing')).status).toBe(NfsStat.NOENT);
  expect((await b.nfs.getattr(Buffer.alloc(32, 7))).status).toBe(NfsStat.BADHANDLE);
  expect((await b.nfs.read(f, 0, 100)).data.length).toBe(100);
  expect((await b.nfs.write(f, 0, Buffer.alloc(50, 1), StableHow.FILE_SYNC)).count).toBe(50);
  const after = await scrape();

  // 200 GETATTR + READ + WRITE succeeded; one NOENT, one BADHANDLE.
  expect(delta(before, after, 'clusternfs_nfs_replies_total', { status: 'NFS3_OK' })).toBe(202);
  expect(delta(before, after, 'clusternfs_nfs_replies_total', { status: 'NFS3ERR_NOENT' })).toBe(1);
  expect(delta(before, after, 'clusternfs_nfs_replies_total', { status: 'NFS3ERR_BADHANDLE' })).toBe(1);
  expect(delta(before, after, 'clusternfs_read_bytes_total')).toBe(100);
  expect(delta(before, after, 'clusternfs_write_bytes_total')).toBe(50);
  const hits = delta(before, after, 'clusternfs_cache_hits_total', { cache: 'attr' });
  const misses = delta(before, after, 'clusternfs_cache_misses_total', { cache: 'attr' });
  expect(hits).toBeGreaterThanOrEqual(200);
  expect(misses).toBeGreaterThanOrEqual(1); // the missing name
  const hitRate = hits / (hits + misses);
  expect(hitRate).toBeGreaterThan(0.9);
  expect(hitRate).toBeLessThan(1);
  expect(after.get('clusternfs_cache_entries', { cache: 'attr' })).toBeGreaterThanOrEqual(1);
  expect(after.get('clusternfs_cache_hits_total', { cache: 'listing' })).toBeDefined();
  // The cached GETATTRs made no lstat; the miss and the WRITE's fresh attributes did.
  expect(delta(before, after, 'clusternfs_fs_calls_total', { kind: 'lstat' })).toBeGreaterThan(0);
  expect(delta(before, after, 'clusternfs_fs_calls_total', { kind: 'lstat' })).toBeLessThan(20);
  expect(delta(before, after, 'clusternfs_fs_calls_total', { kind: 'write' })).toBe(1);
  // Two clients with an NFS and a MOUNT connection each.
  expect(after.get('clusternfs_connections')).toBe(4);
  expect(after.get('clusternfs_clients')).toBe(2);
  expect(delta(before, after, 'clusternfs_client_requests_total', { client: '127.0.0.31' })).toBe(200);
  expect(delta(before, after, 'clusternfs_client_requests_total', { client: '127.0.0.32' })).toBe(4);
  expect(after.get('clusternfs_watch_directories')).toBeGreaterThanOrEqual(1);
  expect(after.get('clusternfs_process_resident_memory_bytes')).toBeGreaterThan(0);
});

it('the status page lists the live clients and escapes the export path', async () => {
  await a.nfs.getattr(a.root);
  await b.nfs.getattr(b.root);
  const res = await fetch(`http://127.0.0.1:${server.ports.metrics}/`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/html');
  const html = await res.text();
  expect(html).toContain('<td>127.0.0.31</td>');
  expect(html).toContain('<td>127.0.0.32</td>');
  expect(html).toContain('x&lt;b&gt;&amp;&quot;y');
  expect(html).not.toContain('x<b>');
  expect(html).toMatch(/<td>attr<\/td><td>\d+\.\d\d %<\/td>/);
  expect(html).toContain('Up ');
});

it('every metric the Grafana dashboard queries is served', async () => {
  const dashboard = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'dashboards', 'clusternfs.json'), 'utf8')) as {
    panels: { title: string; targets: { expr: string }[] }[];
  };
  const served = new Set((await scrape()).samples.map((x) => x.name));
  const queried = new Set<string>();
  for (const p of dashboard.panels) for (const t of p.targets) for (const m of t.expr.matchAll(/clusternfs_[a-z_]+/g)) queried.add(m[0]);
  expect(queried.size).toBeGreaterThan(15);
  expect([...queried].filter((m) => !served.has(m))).toEqual([]);
});
