/**
 * The benchmark harness end to end, small: a few nodes for about a second per workload against
 * our server in its namespace. Checks the report's structure and that calls were counted and
 * answered; never a timing.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/server-process.js';

const out = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-smoke-'));

/** This run's namespace prefix: another bench may be running beside the tests with its own. */
const NETNS_PREFIX = `bsmoke${process.pid}`;

afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

describe('bench harness', () => {
  it('runs every quick workload against clusternfs and reports counted calls', () => {
    const workloads = ['getattr-storm', 'getattr-storm-paced', 'boot-storm', 'lookup-remap', 'read-1m', 'write-small'];
    const r = spawnSync(
      process.execPath,
      [path.join(REPO_ROOT, 'dist', 'bench', 'main.js'), '--quick', '--nodes', '4', '--duration', '1', '--servers', 'clusternfs', '--workloads', workloads.join(','), '--out', out, '--no-progress'],
      { encoding: 'utf8', timeout: 120_000, env: { ...process.env, BENCH_NETNS_PREFIX: NETNS_PREFIX } },
    );
    expect(r.status, r.stderr).toBe(0);
    const runs = fs.readdirSync(out).filter((d) => fs.statSync(path.join(out, d)).isDirectory());
    expect(runs).toHaveLength(1);
    const dir = path.join(out, runs[0]);
    // Only a full default run replaces the README's figures.
    expect(fs.existsSync(path.join(out, 'latest.json'))).toBe(false);
    const report = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.results.map((x: { workload: string }) => x.workload)).toEqual(workloads);
    for (const x of report.results) {
      expect(x.server).toBe('clusternfs');
      expect(x.nodes).toBe(4);
      expect(x.ops, x.workload).toBeGreaterThan(0);
      expect(x.errors, x.workload).toBe(0);
      expect(x.nfsErrors, x.workload).toBe(0);
      expect(x.p50Us).toBeGreaterThan(0);
      expect(x.p99Us).toBeGreaterThanOrEqual(x.p50Us);
      expect(x.p999Us).toBeGreaterThanOrEqual(x.p99Us);
      expect(x.serverCpuUsPerOp).toBeGreaterThan(0);
      expect(x.peakRssMB).toBeGreaterThan(0);
      expect(x.clientCpuPct).toBeGreaterThan(0);
    }
    const byName = Object.fromEntries(report.results.map((x: { workload: string }) => [x.workload, x]));
    // A boot replays the minimal trace's read path: every node finishes all of it.
    expect(byName['boot-storm'].makespanS).toBeGreaterThan(0);
    expect(byName['boot-storm'].skipped).toBe(0);
    expect(byName['boot-storm'].ops).toBeGreaterThanOrEqual(4 * 100);
    expect(byName['read-1m'].mbPerSec).toBeGreaterThan(0);
    expect(byName['write-small'].mbPerSec).toBeGreaterThan(0);
    expect(byName['getattr-storm'].mbPerSec).toBeNull();
    // The paced storm issues about 16 calls per node per second, far fewer than flat out.
    expect(byName['getattr-storm-paced'].ops).toBeLessThan(byName['getattr-storm'].ops);
    const md = fs.readFileSync(path.join(dir, 'results.md'), 'utf8');
    expect(md).toContain('| getattr-storm | clusternfs | 4 |');
    expect(fs.readFileSync(path.join(dir, 'results.svg'), 'utf8')).toMatch(/^<svg[^>]*>[\s\S]*getattr-storm[\s\S]*<\/svg>\s*$/);
    // Nothing left behind: the namespaces this run made are gone.
    const namespaces = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    expect(namespaces).not.toContain(`${NETNS_PREFIX}-`);
  });
});
