/**
 * `clusternfs tags [DIR]`: every tagged entry (variants and markers) below DIR in one table, so
 * an admin sees at a glance which paths differ per node and for whom. Walks with lstat and never
 * follows a symlink (a link to / must not make it list the whole machine); names that are not
 * UTF-8 are shown escaped (display-name.ts).
 */
import type fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { loadExportsFile } from '../mount/exports.js';
import { buildTagIndex } from '../remap/resolve.js';
import { formatTag, isMarker, parseEntryName } from '../remap/tags.js';
import { lstat, readdir } from '../store/fsops.js';
import { entryKind } from './copy-tree.js';
import { displayName, isPlainName, toByteString } from './display-name.js';
import { formatTable, humanBytes } from './table.js';
import { servesWords } from './tag-words.js';
import { UserError } from './user-error.js';

const HELP_AFTER = `
DIR defaults to the current directory; with --config, every export of that exports file is
listed instead. PATH is the base path the tagged entry stands for (a marker's PATH ends in '/':
it applies to every name in that directory), relative to DIR. SERVES says which clients get
it. A base path whose only entries are variants has no master: clients without a variant of
their own see nothing there.

Examples:
  clusternfs tags /srv/root
  clusternfs tags --config /etc/clusternfs/exports --json`;

interface TagsOptions {
  config?: string;
  json: boolean;
}

/** One tagged entry; paths are byte strings relative to the listed directory. */
interface TaggedEntry {
  top: string;
  /** The raw entry name's path, and the base path it stands for. */
  raw: string;
  base: string;
  tag: string;
  serves: string;
  type: string;
  marker: boolean;
  /** The base has a plain entry (a master) beside its variants. */
  master: boolean;
  size: number;
  mtimeMs: number;
}

interface WalkState {
  entries: TaggedEntry[];
  /** Directories that could not be read, with why: reported, not fatal. */
  unreadable: string[];
}

async function walk(top: string, dir: string, rel: string, state: WalkState): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    state.unreadable.push(`${displayName(dir)} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    return;
  }
  const index = buildTagIndex(names);
  for (const name of names.sort()) {
    const full = `${dir}/${name}`;
    let st: fs.Stats;
    try {
      st = await lstat(full);
    } catch {
      continue; // removed while we walked
    }
    const parsed = index.tagged && name.includes('$$') ? parseEntryName(name) : null;
    if (parsed !== null) {
      const marker = isMarker(parsed);
      const join = (n: string) => (rel === '' ? n : `${rel}/${n}`);
      state.entries.push({
        top,
        raw: join(name),
        base: marker ? `${rel}/` : join(parsed.base),
        tag: `$$${formatTag(parsed.tag)}$$`,
        serves: servesWords(parsed.tag),
        type: marker ? 'marker' : (entryKind(st) ?? 'socket'),
        marker,
        master: marker || index.groups.get(parsed.base)?.master === true,
        size: st.size,
        mtimeMs: st.mtimeMs,
      });
    }
    if (st.isDirectory()) await walk(top, full, rel === '' ? name : `${rel}/${name}`, state);
  }
}

function mtimeText(ms: number): string {
  return new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
}

export async function listTags(dirArg: string | undefined, opts: TagsOptions): Promise<void> {
  if (dirArg !== undefined && opts.config !== undefined) throw new UserError('give either DIR or --config, not both');
  const tops =
    opts.config !== undefined ? (await loadExportsFile(opts.config)).map((e) => e.realPath) : [path.resolve(dirArg ?? '.')];
  const state: WalkState = { entries: [], unreadable: [] };
  for (const top of tops) {
    let st: fs.Stats;
    try {
      st = await lstat(toByteString(top));
    } catch {
      throw new UserError(`directory ${top} does not exist`);
    }
    if (!st.isDirectory()) throw new UserError(`${top} is not a directory`);
    await walk(top, toByteString(top), '', state);
  }
  for (const u of state.unreadable) process.stderr.write(`clusternfs: cannot read ${u}\n`);
  // By base path, so a directory variant's row stands beside its master's, not after its subtree.
  const key = (e: TaggedEntry) => `${e.base}\0${e.tag}`;
  state.entries.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  const out = process.stdout;
  if (opts.json) {
    const rows = state.entries.map((e) => ({
      root: e.top,
      path: displayName(e.base),
      entry: displayName(e.raw),
      // Exact bytes for names that are not plain UTF-8, so scripts can find the file.
      ...(isPlainName(e.raw) ? {} : { entryHex: Buffer.from(e.raw, 'latin1').toString('hex') }),
      tag: e.tag,
      serves: e.serves,
      type: e.type,
      master: e.master,
      size: e.size,
      mtime: new Date(e.mtimeMs).toISOString(),
    }));
    out.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  for (const top of tops) {
    const mine = state.entries.filter((e) => e.top === top);
    if (tops.length > 1) out.write(`\n${top}:\n`);
    if (mine.length === 0) {
      out.write(`no tagged entries under ${top}\n`);
      continue;
    }
    const rows = mine.map((e) => [
      displayName(e.base) + (e.master ? '' : ' (no master)'),
      e.tag,
      e.serves,
      e.type,
      e.type === 'file' ? humanBytes(e.size) : '',
      mtimeText(e.mtimeMs),
    ]);
    out.write(formatTable(['PATH', 'TAG', 'SERVES', 'TYPE', 'SIZE', 'MTIME (UTC)'], rows, new Set([4])));
  }
}

export function tagsCommand(): Command {
  return new Command('tags')
    .description('list every tagged entry (per-client variant or directory marker) under DIR: path, tag, which clients it serves, size, mtime')
    .argument('[DIR]', 'directory to walk (default: the current directory)')
    .option('-c, --config <FILE>', 'list every export of this exports file instead')
    .option('--json', 'print a JSON array instead of a table', false)
    .addHelpText('after', HELP_AFTER)
    .action((dir: string | undefined, opts: TagsOptions) => listTags(dir, opts));
}
