/**
 * Summary of a V8 .cpuprofile (node --cpu-prof): self time by function and by source file, the
 * first thing to read when a workload misses its CPU target.
 *
 *   node dist/bench/profile.js FILE.cpuprofile [top]
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

export function summarizeProfile(file: string, top = 30): string {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const total = prof.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0);
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const n of prof.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0) continue;
    const f = n.callFrame;
    const where = f.url ? `${f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
    byFn.set(key, (byFn.get(key) ?? 0) + hits);
    const fileKey = f.url ? f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/') : f.functionName;
    byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + hits);
  }
  const pct = (h: number) => `${((100 * h) / total).toFixed(1).padStart(5)}%`;
  const lines = [`${path.basename(file)}: ${total} samples over ${((prof.endTime - prof.startTime) / 1e6).toFixed(1)} s`, '', 'self time by function:'];
  for (const [k, h] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`${pct(h)}  ${k}`);
  lines.push('', 'self time by file:');
  for (const [k, h] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 20)) lines.push(`${pct(h)}  ${k}`);
  return lines.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node dist/bench/profile.js FILE.cpuprofile [top]');
    process.exit(2);
  }
  console.log(summarizeProfile(file, Number(process.argv[3] ?? 30)));
}
