/**
 * `clusternfs resolve PATH --ip A [--host H] [--uid U] [--gid G]`: what one client sees at PATH
 * and why, component by component, with the entries that were passed over — the first thing to
 * run when a node sees the wrong file. It reads the directories as they are now and applies the
 * remap engine's own rules (src/remap/resolve.ts) to them; nothing here decides a rule itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { ExportTable, loadExportsFile, type ExportEntry, type HostNameResolver } from '../mount/exports.js';
import { buildTagIndex, clientView, resolveName, type ClientView, type Resolution, type TagIndex } from '../remap/resolve.js';
import { parseHostsText } from '../remap/identity.js';
import { hasTag, masterOf, normalizeIp, parseEntryName } from '../remap/tags.js';
import { lstat, readdir, readlink } from '../store/fsops.js';
import { entryKind, lstatOrNull } from './copy-tree.js';
import { displayName, toByteString } from './display-name.js';
import { HOST_NAME } from './nodes-file.js';
import { SAMPLE_EXPORT } from '../package-paths.js';
import { humanBytes } from './table.js';
import { RULE_WORDS, servesWords } from './tag-words.js';
import { UserError } from './user-error.js';

const HELP_AFTER = `
PATH is a path on this machine inside the export (/srv/root/etc/hostname), or the path as the
node sees it (/etc/hostname), which is then taken relative to the export root.

Where the export root is: --root DIR (remapping on everywhere, as 'clusternfs serve DIR'), or
--config FILE (the export containing PATH, with this client's options from that file: the
'cluster' option, 'cluster=/etc:/var' subtrees, 'cluster_admin'), or, for a path inside the
bundled sample export, that export.

Each component of PATH is shown with the entry the client gets, the rule of
cluster-tags.md that chose it, and the candidates that were passed over and why. HOST tags
match only when the host name is known: --host, or --hosts-file as given to 'serve' (the
server falls back to reverse DNS, which this command does not ask).
Exit status: 0 when the client sees something at PATH, 1 when it does not, 2 for a mistake.

Examples:
  clusternfs resolve /srv/root/etc/hostname --ip 10.0.0.7 --root /srv/root
  clusternfs resolve /etc/hostname --ip 10.0.0.7 --host node7 --config /etc/clusternfs/exports`;

interface ResolveOptions {
  ip: string;
  host?: string;
  hostsFile: string[];
  uid: string;
  gid: string;
  root?: string;
  config?: string;
  json: boolean;
}

/** The remap options that apply to this client on the export PATH is in. */
interface Scope {
  /** The export root on this machine. */
  root: string;
  how: string;
  /** null: the client may not use the export at all. */
  cluster: { on: boolean; subtrees: readonly (readonly string[])[] | null; admin: boolean } | null;
  /** PATH's components below the root (byte strings). */
  components: string[];
}

interface Candidate {
  entry: string;
  serves: string;
  why: string;
}

interface Step {
  path: string;
  /** The entry the client gets, or null. */
  chosen: string | null;
  why: string;
  candidates: Candidate[];
  /** The directory's markers, in words. */
  markers: string[];
}

function within(p: string, root: string): string[] | null {
  if (p === root) return [];
  if (!p.startsWith(root.endsWith('/') ? root : `${root}/`)) return null;
  return p.slice(root.length).split('/').filter((c) => c !== '');
}

/** PATH's components below `root`: a local path inside it, else the path as the client sees it. */
function componentsOf(pathArg: string, roots: string[]): string[] | null {
  const abs = path.resolve(pathArg);
  for (const r of roots) {
    const c = within(abs, r);
    if (c !== null) return c;
  }
  return null;
}

function clientPath(pathArg: string): string[] {
  return pathArg.split('/').filter((c) => c !== '' && c !== '.');
}

/** A resolver that knows the one host name given on the command line (no DNS from a CLI). */
function fixedHost(host: string | null): HostNameResolver {
  return { reverse: async () => host, cached: () => host };
}

/** The client's host name as the server learns it from --hosts-file (hosts or DHCP leases). */
function hostFromFiles(ip: string, files: string[]): string | null {
  for (const f of files) {
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch (err) {
      throw new UserError(`cannot read hosts file ${f}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const name = parseHostsText(text).get(ip);
    if (name !== undefined) return name;
  }
  return null;
}

async function findScope(pathArg: string, opts: ResolveOptions, ip: string, host: string | null): Promise<Scope> {
  if (opts.root !== undefined && opts.config !== undefined) throw new UserError('give either --root or --config, not both');
  if (opts.config !== undefined) {
    const entries = await loadExportsFile(opts.config);
    let entry: ExportEntry | undefined;
    let components: string[] | null = null;
    // The deepest export containing PATH wins, as for a mount of a nested export.
    for (const e of [...entries].sort((a, b) => b.realPath.length - a.realPath.length)) {
      components = componentsOf(pathArg, [e.path, e.realPath]);
      if (components !== null) {
        entry = e;
        break;
      }
    }
    if (entry === undefined) {
      if (entries.length !== 1) {
        throw new UserError(`${pathArg} is not inside any export of ${opts.config} (${entries.map((e) => e.path).join(', ')}); give a path inside one`);
      }
      entry = entries[0];
      components = clientPath(pathArg);
    }
    const table = new ExportTable(entries, { resolver: fixedHost(host) });
    const o = await table.clientOptions(entry, ip);
    return {
      root: entry.realPath,
      how: `export ${entry.path} (${entry.source})`,
      cluster: o === null ? null : { on: o.cluster, subtrees: o.clusterSubtrees, admin: o.clusterAdmin },
      components: components!,
    };
  }
  const quick = (root: string, how: string) => {
    const abs = path.resolve(root);
    return { root: abs, how, cluster: { on: true, subtrees: null, admin: false }, components: componentsOf(pathArg, [abs]) ?? clientPath(pathArg) };
  };
  if (opts.root !== undefined) return quick(opts.root, `root ${path.resolve(opts.root)}`);
  if (componentsOf(pathArg, [SAMPLE_EXPORT]) !== null) return quick(SAMPLE_EXPORT, `the bundled sample export ${SAMPLE_EXPORT}`);
  throw new UserError('which export is PATH in? give --root DIR (the exported directory) or --config FILE (the exports file)');
}

/**
 * Whether remapping covers `name` in the directory at `dirComps` (base names): inside a
 * `cluster=` subtree, or the component leading to one. Mirrors the engine's scope rule in
 * src/remap/remapper.ts (whole components, compared by base name).
 */
function covers(subtrees: readonly (readonly string[])[] | null, dirComps: string[], name: string): boolean {
  if (subtrees === null) return true;
  return subtrees.some((t) => {
    for (let i = 0; i < Math.min(t.length, dirComps.length); i++) if (t[i] !== dirComps[i]) return false;
    return dirComps.length >= t.length || t[dirComps.length] === name;
  });
}

/** "rule 2 (IP)": the head of the rule's description. */
function ruleName(r: Resolution): string {
  return RULE_WORDS[r.rule].split(':')[0];
}

/** Why an entry of the base's group was not chosen, asking the resolver about it alone. */
function passedOver(entry: string, base: string, view: ClientView, chosen: Resolution): Candidate {
  const parsed = parseEntryName(entry);
  if (parsed === null) {
    return { entry, serves: 'everyone', why: `the master; ${ruleName(chosen)} comes first` };
  }
  const serves = servesWords(parsed.tag);
  const alone = resolveName(buildTagIndex([entry]), base, view);
  if (alone.read === entry) return { entry, serves, why: `matches this client too by ${ruleName(alone)}, but ${ruleName(chosen)} comes first` };
  const k = parsed.tag.kind;
  if (k === 'create' || k === 'always' || k === 'cow') return { entry, serves, why: 'a marker for this name: applies when nothing else does' };
  return { entry, serves, why: `not this client (it serves ${serves})` };
}

function markerWords(index: TagIndex): string[] {
  return index.markers.map((m) => {
    const p = parseEntryName(m);
    return `${displayName(m)}: ${p === null ? '?' : servesWords(p.tag)}`;
  });
}


export async function resolveCommand(pathArg: string, opts: ResolveOptions): Promise<void> {
  const ip = normalizeIp(opts.ip);
  if (ip === null) throw new UserError(`--ip ${opts.ip}: not an IPv4 or IPv6 address`);
  if (opts.host !== undefined && !HOST_NAME.test(opts.host)) throw new UserError(`--host ${opts.host}: not a host name`);
  const id = (flag: string, v: string) => {
    if (!/^\d{1,10}$/.test(v) || Number(v) > 0xffffffff) throw new UserError(`--${flag} ${v}: not a numeric id`);
    return Number(v);
  };
  const host = opts.host ?? hostFromFiles(ip, opts.hostsFile);
  const view = clientView(ip, host, id('uid', opts.uid), id('gid', opts.gid));
  const scope = await findScope(pathArg, opts, ip, host);
  // The command line is text; directory entries are byte strings (non-UTF-8 names survive).
  scope.components = scope.components.map(toByteString);
  if (scope.cluster?.subtrees) scope.cluster.subtrees = scope.cluster.subtrees.map((t) => t.map(toByteString));
  if (scope.components.includes('..')) throw new UserError(`${pathArg}: give a path without '..'`);
  const rootSt = await lstatOrNull(toByteString(scope.root));
  if (rootSt === null || !rootSt.isDirectory()) throw new UserError(`export root ${scope.root} is not a directory`);

  const steps: Step[] = [];
  let result: { entry: string; type: string; size: number; target?: string } | null = null;
  let verdict = '';
  let dir = toByteString(scope.root);
  const dirComps: string[] = [];
  const remapping = scope.cluster === null ? 'not allowed' : !scope.cluster.on ? 'off' : scope.cluster.admin ? 'cluster_admin' : 'on';
  const subtrees = scope.cluster?.subtrees;
  const remappingText =
    remapping === 'on' ? (subtrees ? `on in ${subtrees.map((t) => `/${t.map(displayName).join('/')}`).join(', ')}` : 'on everywhere') : remapping === 'cluster_admin' ? 'off for this client (cluster_admin: raw names)' : remapping;
  if (scope.cluster === null) verdict = `client ${ip} may not use this export (no client pattern of the exports file matches it)`;
  else if (scope.components.length === 0) result = { entry: '', type: 'dir', size: rootSt.size };
  for (let i = 0; scope.cluster !== null && i < scope.components.length; i++) {
    const name = scope.components[i];
    const shown = scope.components.slice(0, i + 1).join('/');
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      verdict = `cannot read ${displayName(dir)}: ${(err as NodeJS.ErrnoException).code}`;
      break;
    }
    const step: Step = { path: shown, chosen: null, why: '', candidates: [], markers: [] };
    steps.push(step);
    // A raw tagged name is judged by its base, as the engine does: `etc$$IP=..$$` is inside /etc.
    const base = parseEntryName(name)?.base ?? masterOf(name) ?? name;
    const remapped = scope.cluster.on && !scope.cluster.admin && covers(scope.cluster.subtrees, dirComps, base);
    if (!remapped) {
      step.chosen = names.includes(name) ? name : null;
      step.why =
        remapping === 'off'
          ? "not remapped: the export has no 'cluster' option for this client"
          : remapping === 'cluster_admin'
            ? 'not remapped: cluster_admin clients see raw names'
            : "not remapped: outside the export's cluster= subtrees";
    } else if (hasTag(name) && masterOf(name) === null) {
      step.why = 'a raw tagged name: ordinary clients can neither see nor look it up (NFS3ERR_NOENT)';
    } else {
      const index = buildTagIndex(names);
      const r = resolveName(index, name, view);
      step.chosen = r.read;
      const group = index.groups.get(name);
      step.why = r.rule === 'master' && (group === undefined || group.names.length === 1) ? 'no variants: the same entry for every client' : RULE_WORDS[r.rule];
      if (r.rule === 'cow') step.why += `; this client's changes go to ${displayName(r.cow ?? r.create)}`;
      if (r.read === null && r.create !== name) step.why += `; a create by this client makes ${displayName(r.create)}`;
      for (const n of group?.names ?? []) if (n !== r.read) step.candidates.push(passedOver(n, name, view, r));
      step.markers = markerWords(index);
    }
    if (step.chosen === null) {
      verdict = `client ${ip} sees nothing at ${displayName(shown)} (NFS3ERR_NOENT)`;
      break;
    }
    const full = `${dir}/${step.chosen}`;
    const st = await lstat(full);
    const last = i === scope.components.length - 1;
    if (last || !st.isDirectory()) {
      const type = entryKind(st) ?? 'socket';
      result = { entry: full, type, size: st.size, ...(st.isSymbolicLink() ? { target: (await readlink(full)).toString('latin1') } : {}) };
      if (!last && st.isSymbolicLink()) verdict = `${displayName(shown)} is a symlink: the client follows it itself; resolve its target next`;
      else if (!last) {
        verdict = `${displayName(shown)} is not a directory for this client (NFS3ERR_NOTDIR)`;
        result = null;
      }
      break;
    }
    dir = full;
    dirComps.push(name);
  }

  if (result === null) process.exitCode = 1;
  if (opts.json) {
    const d = (s: string | null) => (s === null ? null : displayName(s));
    process.stdout.write(
      `${JSON.stringify(
        {
          client: { ip, host: view.host, uid: view.uid, gid: view.gid },
          export: { root: scope.root, how: scope.how, remapping },
          steps: steps.map((s) => ({ path: d(s.path), chosen: d(s.chosen), why: s.why, passedOver: s.candidates.map((c) => ({ ...c, entry: d(c.entry) })), markers: s.markers })),
          result: result === null ? null : { ...result, entry: d(result.entry), target: result.target === undefined ? undefined : d(result.target) },
          note: verdict === '' ? undefined : verdict,
        },
        null,
        2,
      )}\n`,
    );
    return;
  }
  const out: string[] = [];
  out.push(`client ${ip}, host ${view.host ?? '(unknown: HOST tags cannot match; give --host or --hosts-file)'}, uid ${view.uid}, gid ${view.gid}`);
  out.push(`${scope.how}; remapping ${remappingText}`);
  out.push(`/  the export root: never remapped`);
  for (const s of steps) {
    out.push(`${displayName(s.path)}  ->  ${s.chosen === null ? '(nothing)' : displayName(s.chosen)}`);
    out.push(`    ${s.why}`);
    for (const c of s.candidates) out.push(`    passed over ${displayName(c.entry)}: ${c.why}`);
    for (const m of s.markers) out.push(`    directory marker ${m}`);
  }
  if (result !== null) {
    const what = result.type === 'file' ? `file, ${humanBytes(result.size)}` : result.target !== undefined ? `symlink to ${displayName(result.target)}` : result.type;
    out.push(`=> ${ip} gets ${result.entry === '' ? scope.root : displayName(result.entry)} (${what})`);
  }
  if (verdict !== '') out.push(`=> ${verdict}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

export function resolveCommandDefinition(): Command {
  return new Command('resolve')
    .description('show what one client sees at PATH and why: the entry chosen per path component, the rule that chose it, and the candidates passed over')
    .argument('<PATH>', 'a path inside the export on this machine, or as the node sees it')
    .requiredOption('--ip <A>', "the client's address")
    .option('--host <H>', "the client's host name (HOST tags match only when it is known)")
    .option('--hosts-file <FILE>', "look the host name up in a hosts or DHCP leases file, as 'serve --hosts-file' does; repeatable", (f: string, all: string[]) => [...all, f], [] as string[])
    .option('--uid <U>', 'the AUTH_SYS uid of the call (UID tags)', '0')
    .option('--gid <G>', 'the AUTH_SYS gid of the call (GID tags)', '0')
    .option('--root <DIR>', 'the exported directory (remapping on everywhere)')
    .option('-c, --config <FILE>', 'the exports file: its export containing PATH and this client\'s options there')
    .option('--json', 'print JSON instead of text', false)
    .addHelpText('after', HELP_AFTER)
    .action((p: string, opts: ResolveOptions) => resolveCommand(p, opts));
}
