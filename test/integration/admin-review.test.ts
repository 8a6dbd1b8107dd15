/**
 * Adversarial review of the admin commands (`resolve`, `tag`, `import-snapshots`) on hostile
 * trees: each case pins a defect found in review, through the compiled CLI.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli-run.js';
import { putFile } from '../helpers/tree.js';

let work: string;
let root: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-admin-review-'));
  root = path.join(work, 'root');
  putFile(root, 'etc/hostname', 'master\n');
  putFile(root, 'etc/hostname$$IP=10.0.0.7$$', 'node7\n');
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('clusternfs resolve', () => {
  it('answers name$$$$ as the server does: the master (rule 1), not "a raw tagged name"', () => {
    const r = runCli(['resolve', path.join(root, 'etc/hostname$$$$'), '--ip', '10.0.0.7', '--root', root, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { result: { entry: string } | null; steps: { why: string }[] };
    expect(j.result?.entry).toBe(path.join(root, 'etc/hostname'));
    expect(j.steps[1].why).toMatch(/rule 1/);
  });
});
