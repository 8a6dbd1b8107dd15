/**
 * --metrics-port: Prometheus text on /metrics whose counters move with the traffic sent.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NfsStat } from '../../src/nfs/constants.js';
import { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, quickExport, startServer } from '../helpers/inproc-server.js';

let work: string;
let server: ClusterNfsServer;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-metrics-'));
  fs.writeFileSync(path.join(work, 'f'), 'x');
  server = await startServer([quickExport(work)], null, {
    metricsPort: 0,
  });
});

afterAll(async () => {
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

async function scrape(): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${server.ports.metrics}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(\S+)$/.exec(line);
    expect(m, line).not.toBeNull();
    samples.set(m![1], Number(m![2]));
  }
  return samples;
}

it('counts each procedure and its latency as calls are answered', async () => {
  const key = 'clusternfs_rpc_requests_total{program="nfs",version="3",procedure="GETATTR"}';
  const before = (await scrape()).get(key) ?? 0;
  const s = await mountSession(server, work);
  for (let i = 0; i < 25; i++) expect((await s.nfs.getattr(s.root)).status).toBe(NfsStat.OK);
  await s.close();
  const after = await scrape();
  expect(after.get(key)! - before).toBe(25);
  expect(after.get('clusternfs_rpc_requests_total{program="mount",version="3",procedure="MNT"}')).toBe(1);
  expect(after.get('clusternfs_rpc_duration_seconds_count{program="nfs",version="3",procedure="GETATTR"}')).toBe(after.get(key));
  expect(after.get('clusternfs_process_resident_memory_bytes')).toBeGreaterThan(0);
});
