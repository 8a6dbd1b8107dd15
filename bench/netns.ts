/**
 * Private network namespaces for servers under test: created with a random name, and torn down
 * with every process still inside them, so a failed or interrupted run leaves nothing behind.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
}

/** A fresh namespace with its loopback up (which makes all of 127/8 local inside it). */
export function createNetns(prefix: string): string {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  run('ip', ['netns', 'add', name]);
  run('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
  return name;
}

export function deleteNetns(name: string): void {
  spawnSync('ip', ['netns', 'del', name]);
}

/** Processes living in the namespace (all of them were started by whoever created it). */
export function netnsPids(name: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' });
  if (r.status !== 0) return [];
  return r.stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** SIGKILL what is left in the namespace, then delete it. Synchronous, so it works in 'exit'. */
export function destroyNetns(name: string): void {
  for (const pid of netnsPids(name)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  deleteNetns(name);
}
