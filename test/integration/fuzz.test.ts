/**
 * The fuzz harness in the normal suite: a short seeded run of both modes (about 30 s: the
 * in-process coverage-guided decoder fuzzer, then malformed calls for every procedure of portmap,
 * MOUNT and NFS over TCP and UDP against a server process), and a replay of every saved reproducer
 * in test/fuzz-corpus. The long run is `npm run fuzz -- --seconds N` (README).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/server-process.js';

const MAIN = path.join(REPO_ROOT, 'dist', 'fuzz', 'main.js');
const CORPUS = path.join(REPO_ROOT, 'test', 'fuzz-corpus');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-fuzzrun-'));

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function fuzz(args: string[], timeoutMs: number) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  const summary = r.stdout.trim().split('\n').pop() ?? '';
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, summary };
}

it('a short seeded fuzz run finds no decoder bug and no liveness failure', () => {
  // A new seed each run widens what CI covers over time; a failure prints it and saves the cases.
  const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 0x7fffffff));
  const r = fuzz(['--seconds', '30', '--seed', String(seed), '--corpus', scratch], 120_000);
  const saved = fs.readdirSync(scratch);
  expect(r.code, `seed ${seed}; saved ${saved.join(', ')}\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-2000)}`).toBe(0);
  const s = JSON.parse(r.summary);
  console.log(`fuzz seed ${seed}: ${JSON.stringify(s)}`);
  expect(s.decoder.execs).toBeGreaterThan(200);
  expect(s.decoder.bugs).toBe(0);
  expect(s.network.cases).toBeGreaterThan(200);
  expect(s.network.livenessFailures).toBe(0);
  expect(saved).toEqual([]);
}, 150_000);

it('every saved reproducer replays without breaking the server', () => {
  const files = fs.readdirSync(CORPUS);
  expect(files.some((f) => f.endsWith('.json'))).toBe(true);
  expect(files.some((f) => f.endsWith('.bin'))).toBe(true);
  const r = fuzz(['--replay', '--corpus', CORPUS], 120_000);
  expect(r.code, `${r.stdout.slice(-4000)}\n${r.stderr.slice(-2000)}`).toBe(0);
  const s = JSON.parse(r.summary);
  expect(s.replayed.network + s.replayed.decoder).toBe(files.filter((f) => f.endsWith('.json') || f.endsWith('.bin')).length);
  expect(s.broken).toEqual([]);
}, 150_000);
