/**
 * `clusternfs import-snapshots SNAPSHOT_DIR ROOT --nodes FILE`: migrates a Red Hat netboot style
 * tree of per-node snapshots (`snapshot/<node>/<path>`, bind-mounted over the shared root on each
 * node) into tagged variants beside the masters in ROOT (docs: cluster-tags.md, "Migrating from
 * per-node snapshot directories").
 *
 * The whole import is planned before anything is written: the plan is what --dry-run prints,
 * and an existing variant anywhere in it stops the import before the first change (unless
 * --force), so a refused import never leaves half the nodes done.
 */
import type fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { hasTag, parseTag, shortHostName, taggedName, type Tag } from '../remap/tags.js';
import { lstat, readdir } from '../store/fsops.js';
import { copyEntry, emptyCounts, entryKind, lstatOrNull, removeEntry, type CopyCounts, type EntryKind } from './copy-tree.js';
import { displayName, toByteString } from './display-name.js';
import { loadNodesFile, type NodeEntry } from './nodes-file.js';
import { formatTable, humanBytes } from './table.js';
import { UserError } from './user-error.js';

const HELP_AFTER = `
Each SNAPSHOT_DIR/<node>/<path> becomes ROOT/<path>$$IP=<node ip>$$ (with --by host:
$$HOST=<node>$$), so that node alone sees its own copy at <path> and every other node keeps
seeing the master. <node> is a name or an address listed in the nodes file.

Directories: a snapshot directory whose path is a directory in ROOT too (/etc, /var/log) is
merged: its files become per-file variants inside the master directory, so the node still sees
every other master file there and later updates of the golden image reach it. A snapshot
directory that ROOT does not have as a directory (/var/lib/dhcp on a root without it) is copied
as one tagged directory, <path>$$IP=<ip>$$/, with plain names inside: the node owns it whole.

Modes, owners, times, symlinks (copied as links, never followed), device nodes and FIFOs are
kept; sockets are skipped. An existing variant stops the import before anything is written,
unless --force replaces it.

The nodes file lists one node per line, name and address in either order, as a pxeboot
"nodes" file or /etc/hosts does; '#' starts a comment; other columns (a MAC address) are
ignored:
  node1 10.0.0.1
  10.0.0.2 node2 node2.cluster

Examples:
  clusternfs import-snapshots /tftpboot/snapshot /srv/root --nodes /tftpboot/nodes --dry-run
  clusternfs import-snapshots /tftpboot/snapshot /srv/root --nodes /tftpboot/nodes`;

export interface ImportOptions {
  nodes: string;
  by: 'ip' | 'host';
  dryRun: boolean;
  force: boolean;
}

/** One variant to make: a file, symlink or device beside its master, or a whole tagged directory. */
interface Step {
  node: NodeEntry;
  /** Byte-string paths: in the snapshot, and of the variant in ROOT. */
  src: string;
  dest: string;
  /** The variant's path relative to ROOT, for messages. */
  rel: string;
  st: fs.Stats;
  kind: EntryKind;
  /** What the step makes, counted by a dry walk (a directory's whole content). */
  counts: CopyCounts;
  /** Something is already at dest. */
  exists: boolean;
}

interface NodePlan {
  node: NodeEntry;
  tag: Tag;
  dir: string;
  steps: Step[];
  /** Snapshot entries left out, with why. */
  skipped: { path: string; why: string }[];
}


async function requireDirectory(p: string, what: string): Promise<string> {
  const abs = path.resolve(p);
  const st = await lstatOrNull(toByteString(abs)).catch(() => null);
  if (st === null) throw new UserError(`${what} ${abs} does not exist`);
  if (!st.isDirectory()) throw new UserError(`${what} ${abs} is not a directory`);
  return abs;
}

function tagFor(node: NodeEntry, by: 'ip' | 'host'): Tag {
  const tag = parseTag(by === 'ip' ? `IP=${node.ip}` : `HOST=${shortHostName(node.name)}`);
  if (tag === null) throw new UserError(`node ${node.name} (${node.source}) cannot be written as a ${by === 'ip' ? 'IP' : 'HOST'} tag`);
  return tag;
}

/** Walks one directory of a node's snapshot against the same directory of ROOT. */
async function planDir(plan: NodePlan, snapDir: string, rootDir: string, rel: string): Promise<void> {
  for (const name of (await readdir(snapDir)).sort()) {
    const src = `${snapDir}/${name}`;
    const st = await lstat(src);
    if (hasTag(name)) {
      plan.skipped.push({ path: src, why: 'already a tagged name' });
      continue;
    }
    const kind = entryKind(st);
    if (kind === null) {
      plan.skipped.push({ path: src, why: 'a socket' });
      continue;
    }
    const inRoot = await lstatOrNull(`${rootDir}/${name}`);
    const relName = rel === '' ? name : `${rel}/${name}`;
    if (kind === 'dir' && inRoot !== null && inRoot.isDirectory()) {
      await planDir(plan, src, `${rootDir}/${name}`, relName);
      continue;
    }
    const variant = taggedName(name, plan.tag);
    const dest = `${rootDir}/${variant}`;
    const counts = emptyCounts();
    await copyEntry(src, dest, st, counts, { dryRun: true });
    plan.skipped.push(...counts.skipped);
    plan.steps.push({
      node: plan.node,
      src,
      dest,
      rel: rel === '' ? variant : `${rel}/${variant}`,
      st,
      kind,
      counts,
      exists: (await lstatOrNull(dest)) !== null,
    });
  }
}

/** Matches each directory of SNAPSHOT_DIR to a node by name or address. */
async function planImport(snapshotDir: string, root: string, nodes: Map<string, NodeEntry>, by: 'ip' | 'host') {
  const byIp = new Map([...nodes.values()].map((n) => [n.ip, n]));
  const plans: NodePlan[] = [];
  const notNodes: { path: string; why: string }[] = [];
  const snap = toByteString(snapshotDir);
  const rootBytes = toByteString(root);
  for (const name of (await readdir(snap)).sort()) {
    const dir = `${snap}/${name}`;
    const st = await lstat(dir);
    const node = nodes.get(name) ?? (net.isIP(name) !== 0 ? byIp.get(name) : undefined);
    if (!st.isDirectory()) {
      notNodes.push({ path: dir, why: 'not a directory' });
      continue;
    }
    if (node === undefined) {
      notNodes.push({ path: dir, why: 'not in the nodes file' });
      continue;
    }
    const plan: NodePlan = { node, tag: tagFor(node, by), dir, steps: [], skipped: [] };
    await planDir(plan, dir, rootBytes, '');
    plans.push(plan);
  }
  const seen = new Set(plans.map((p) => p.node.name));
  const missing = [...nodes.values()].filter((n) => !seen.has(n.name));
  return { plans, notNodes, missing };
}

function sumCounts(steps: Step[]): CopyCounts {
  const total = emptyCounts();
  for (const s of steps) addCounts(total, s.counts);
  return total;
}

function addCounts(into: CopyCounts, c: CopyCounts): void {
  into.files += c.files;
  into.dirs += c.dirs;
  into.symlinks += c.symlinks;
  into.special += c.special;
  into.bytes += c.bytes;
  into.skipped.push(...c.skipped);
}

function entryCount(c: CopyCounts): number {
  return c.files + c.dirs + c.symlinks + c.special;
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function describeStep(s: Step): string {
  const what =
    s.kind === 'dir'
      ? `directory, ${plural(entryCount(s.counts) - 1, 'entry', 'entries')} inside, ${humanBytes(s.counts.bytes)}`
      : s.kind === 'file'
        ? `file, ${humanBytes(s.st.size)}`
        : s.kind;
  return `${s.exists ? 'replace' : 'create '} ${displayName(s.rel)}  (${what})`;
}

function summaryTable(rows: { plan: NodePlan; counts: CopyCounts }[]): string {
  const total = emptyCounts();
  let skippedTotal = 0;
  const body = rows.map(({ plan, counts }) => {
    addCounts(total, counts);
    const skipped = plan.skipped.length;
    skippedTotal += skipped;
    return [plan.node.name, plan.node.ip, String(counts.files), String(counts.dirs), String(counts.symlinks), String(counts.special), humanBytes(counts.bytes), String(skipped)];
  });
  body.push(['total', '', String(total.files), String(total.dirs), String(total.symlinks), String(total.special), humanBytes(total.bytes), String(skippedTotal)]);
  return formatTable(['node', 'address', 'files', 'dirs', 'symlinks', 'devices', 'bytes', 'skipped'], body, new Set([2, 3, 4, 5, 6, 7]));
}

export async function importSnapshots(snapshotArg: string, rootArg: string, opts: ImportOptions): Promise<void> {
  const snapshotDir = await requireDirectory(snapshotArg, 'snapshot directory');
  const root = await requireDirectory(rootArg, 'root');
  const inside = (a: string, b: string) => a === b || a.startsWith(b + path.sep);
  if (inside(root, snapshotDir) || inside(snapshotDir, root)) {
    throw new UserError(`the snapshot directory and the root must not contain each other (${snapshotDir}, ${root})`);
  }
  const nodes = loadNodesFile(opts.nodes);
  const { plans, notNodes, missing } = await planImport(snapshotDir, root, nodes, opts.by);
  const out = process.stdout;
  const note = (lines: string[]) => lines.forEach((l) => process.stderr.write(`clusternfs: ${l}\n`));
  note(notNodes.map((n) => `skipping ${displayName(n.path)}: ${n.why}`));
  note(missing.map((n) => `node ${n.name} (${n.source}) has no directory in ${snapshotDir}`));
  if (plans.length === 0) throw new UserError(`no directory in ${snapshotDir} is named after a node of ${opts.nodes}`);

  const steps = plans.flatMap((p) => p.steps);
  const conflicts = steps.filter((s) => s.exists);
  if (opts.dryRun) {
    out.write(`dry run: nothing is changed. Import into ${root}, one ${opts.by === 'ip' ? 'IP' : 'HOST'} tag per node:\n`);
    for (const p of plans) {
      out.write(`\n${p.node.name} (${p.node.ip}), from ${displayName(p.dir)}:\n`);
      for (const s of p.steps) out.write(`  ${describeStep(s)}\n`);
      for (const s of p.skipped) out.write(`  skip    ${displayName(s.path)}  (${s.why})\n`);
    }
    out.write(`\nwould import:\n${summaryTable(plans.map((plan) => ({ plan, counts: sumCounts(plan.steps) })))}`);
    if (conflicts.length > 0) out.write(`${conflicts.length} variant(s) exist already; the import would stop unless --force replaces them\n`);
    return;
  }
  if (conflicts.length > 0 && !opts.force) {
    const list = conflicts.slice(0, 5).map((s) => displayName(s.rel)).join(', ');
    throw new UserError(`${conflicts.length} variant(s) exist already (${list}${conflicts.length > 5 ? ', ...' : ''}); nothing was imported; use --force to replace them`);
  }

  const totalEntries = steps.reduce((n, s) => n + entryCount(s.counts), 0);
  // A bar only for a person watching: in a log file or a pipe it would be a mess of \r frames.
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format: 'importing [{bar}] {value}/{total} entries | {node}', stream: process.stderr, hideCursor: true, clearOnComplete: true },
        cliProgress.Presets.legacy,
      )
    : null;
  bar?.start(totalEntries, 0, { node: '' });
  const done: { plan: NodePlan; counts: CopyCounts }[] = [];
  try {
    for (const plan of plans) {
      const counts = emptyCounts();
      bar?.update({ node: plan.node.name });
      for (const s of plan.steps) {
        if (s.exists) await removeEntry(s.dest);
        await copyEntry(s.src, s.dest, s.st, counts, { onEntry: () => bar?.increment() });
      }
      done.push({ plan, counts });
    }
  } finally {
    bar?.stop();
  }
  out.write(`imported ${plans.length} node(s) into ${root}${conflicts.length > 0 ? ` (${conflicts.length} existing variant(s) replaced)` : ''}:\n`);
  out.write(summaryTable(done));
}

export function importSnapshotsCommand(): Command {
  return new Command('import-snapshots')
    .description('turn per-node snapshot trees (SNAPSHOT_DIR/<node>/<path>, Red Hat netboot style) into tagged variants in ROOT')
    .argument('<SNAPSHOT_DIR>', 'directory with one subdirectory per node')
    .argument('<ROOT>', 'the exported root image to add the variants to')
    .requiredOption('--nodes <FILE>', 'node list: one "NAME IP" or "IP NAME" per line (a pxeboot nodes file, /etc/hosts)')
    .addOption(new Option('--by <KIND>', 'tag variants with the node\'s address or its host name').choices(['ip', 'host']).default('ip'))
    .option('--dry-run', 'print what would be made and change nothing', false)
    .option('--force', 'replace variants that exist already', false)
    .addHelpText('after', HELP_AFTER)
    .action((snapshotDir: string, root: string, opts: ImportOptions) => importSnapshots(snapshotDir, root, opts));
}
