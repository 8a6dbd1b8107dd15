/**
 * Runs the compiled `clusternfs` CLI to completion (bounded in time) and checks the admin-mistake
 * convention: one `clusternfs: ...` line on stderr, exit status 2, never a stack trace.
 */
import { spawnSync } from 'node:child_process';
import { expect } from 'vitest';
import { CLI, type RunResult } from './server-process.js';

export function runCli(args: string[], opts: { cwd?: string } = {}): RunResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function expectUserError(r: { code: number | null; stderr: string }, pattern: RegExp): void {
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/^clusternfs: /);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}
