/**
 * The remap step of the data path (handle → remap → store): what the NFS program calls between
 * resolving a handle and using the store, for exports with the `cluster` option. It applies the
 * rules of resolve.ts to real directories and knows nothing about XDR.
 *
 * API (every method takes the store, the client's export options and the client's view; it acts
 * as the plain store would when remapping does not apply: `cluster` off, a `cluster_admin`
 * client, or a name outside the `cluster=` subtrees):
 * - `lookup(store, policy, dir, name, client)`: LOOKUP. Raw tagged names and markers are NOENT;
 *   `.` and `..` are never remapped.
 * - `newName(..., mode)`: the name a create-type procedure makes or replaces (CREATE, MKDIR,
 *   SYMLINK, MKNOD, LINK's new name: 'create'; CREATE UNCHECKED: 'open', which copies a COW
 *   master up first; RENAME's target: 'replace'). A name containing a tag is NFS3ERR_ACCES.
 * - `existingName(...)`: the entry REMOVE, RMDIR and RENAME's source act on.
 * - `listing(...)`: READDIR/READDIRPLUS entries: each base name once, as this client resolves it,
 *   with the resolved entry's fileid and the base name's stable cookie; `rawName(e)` gives the
 *   entry a READDIRPLUS child lookup must use.
 * - `checkHandle(store, policy, node, client, change)`: a handle of a variant is honoured only for
 *   clients that resolve to it (else NFS3ERR_STALE); a COW master's handle follows this client to
 *   its variant, and with `change` set the first change copies the master up (copy-on-write).
 * - `stats`: tag-index cache hits/misses/evictions/size, resolutions by rule, copy-ups, refused
 *   variant handles; plain numbers for the metrics code to read.
 *
 * Cost: the tag index of a directory is built once from `ExportStore.listing(dir)` (itself cached
 * per directory) and kept in an lru-cache keyed by the directory's inode, validated by its
 * mtime/ctime; a directory without any tag costs one cache look-up per call.
 */
import { LRUCache } from 'lru-cache';
import { componentLogger } from '../log/logger.js';
import { NfsStat } from '../nfs/constants.js';
import { NfsError } from '../nfs/errors.js';
import { birthMicros } from '../nfs/filehandle.js';
import { listingCookie, orderCookies } from '../store/cookies.js';
import type { ExportStore, FsNode, ListingEntry } from '../store/export-store.js';
import * as fsops from '../store/fsops.js';
import { buildTagIndex, resolveName, RULES, visibleBases, type ClientView, type Resolution, type Rule, type TagIndex } from './resolve.js';
import { hasTag, masterOf, parseEntryName } from './tags.js';

const log = componentLogger('remap');

/** The export options remapping reads (a subset of mount/exports ExportOptions). */
export interface RemapPolicy {
  cluster?: boolean;
  clusterSubtrees?: readonly (readonly string[])[] | null;
  clusterAdmin?: boolean;
}

export interface RemapStats {
  /** The per-directory tag index cache. */
  index: { hits: number; misses: number; evictions: number; size: number };
  /** Resolutions of a name in a directory with tags, by the rule that decided. */
  rules: Record<Rule, number>;
  /** Masters copied to a client's variant on its first change (COW). */
  copyUps: number;
  /** Variant handles refused to a client that does not resolve to that variant. */
  refusedHandles: number;
}

/** A READDIR entry as a client sees it: `name` is the base name shown, `raw` the entry behind it. */
export interface ViewEntry extends ListingEntry {
  raw: string;
}

/** The entry a listing entry stands for (its own name when it was not remapped). */
export function rawName(e: ListingEntry): string {
  return (e as Partial<ViewEntry>).raw ?? e.name;
}

interface IndexEntry {
  store: ExportStore;
  mtimeMs: number;
  ctimeMs: number;
  index: TagIndex;
  /** The listing the index was built from, by raw name (for fileids and cookies). */
  byName: Map<string, ListingEntry>;
  dotEntries: ListingEntry[];
  /** Listings per client (key: ip|host|uid|gid), built on first READDIR. */
  views: Map<string, ViewEntry[]>;
}

/** Which names of a directory remapping covers. */
type Scope = 'all' | ReadonlySet<string> | null;

interface StoreState {
  /** Directory path → inode, for checking handles against the most recent index without a stat. */
  byRel: Map<string, number>;
  /** Directories whose index has a COW marker: a master handle there may follow a client to its variant. */
  cowDirs: Set<string>;
  scopes: Map<string, Scope>;
}

export interface RemapperOptions {
  /** Directories whose tag index is kept (default 8192). */
  maxIndexes?: number;
}

const VIEW_LIMIT = 256;
const COPY_CHUNK = 1024 * 1024;

function parentOf(rel: string): { dir: string; name: string } {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? { dir: '', name: rel } : { dir: rel.slice(0, slash), name: rel.slice(slash + 1) };
}

function baseOf(name: string): string {
  return parseEntryName(name)?.base ?? name;
}

function viewKey(c: ClientView): string {
  return `${c.ip}|${c.host ?? ''}|${c.uid}|${c.gid}`;
}

export class Remapper {
  readonly stats: RemapStats;
  private readonly indexes: LRUCache<number, IndexEntry>;
  private readonly states = new Map<ExportStore, StoreState>();
  private readonly copying = new Map<string, Promise<FsNode>>();
  private readonly maxIndexes: number;

  constructor(opts: RemapperOptions = {}) {
    this.maxIndexes = opts.maxIndexes ?? 8192;
    const rules = Object.fromEntries(RULES.map((r) => [r, 0])) as Record<Rule, number>;
    const indexStats = { hits: 0, misses: 0, evictions: 0, size: 0 };
    this.stats = { index: indexStats, rules, copyUps: 0, refusedHandles: 0 };
    this.indexes = new LRUCache<number, IndexEntry>({
      max: this.maxIndexes,
      dispose: (_v, _k, reason) => {
        if (reason === 'evict') indexStats.evictions++;
      },
    });
    const cache = this.indexes;
    Object.defineProperty(indexStats, 'size', { enumerable: true, get: () => cache.size });
  }

  // ---- scope ---------------------------------------------------------------------------------

  private state(store: ExportStore): StoreState {
    let s = this.states.get(store);
    if (s === undefined) this.states.set(store, (s = { byRel: new Map(), cowDirs: new Set(), scopes: new Map() }));
    return s;
  }

  /** Whether remapping applies in `dirRel` for this client, and to which base names. */
  private scope(store: ExportStore, policy: RemapPolicy, dirRel: string): Scope {
    if (policy.cluster !== true || policy.clusterAdmin === true) return null;
    const subtrees = policy.clusterSubtrees;
    if (subtrees === null || subtrees === undefined) return 'all';
    const s = this.state(store);
    const key = `${subtrees.map((t) => t.join('/')).join(':')}\0${dirRel}`;
    let scope = s.scopes.get(key);
    if (scope !== undefined) return scope;
    // Whole path components, compared by base name: `var$$IP=..$$/log` is inside /var.
    const comps = dirRel === '' ? [] : dirRel.split('/').map(baseOf);
    const names = new Set<string>();
    scope = null;
    for (const t of subtrees) {
      const n = Math.min(t.length, comps.length);
      let same = true;
      for (let i = 0; i < n && same; i++) same = t[i] === comps[i];
      if (!same) continue;
      if (comps.length >= t.length) {
        scope = 'all';
        break;
      }
      names.add(t[comps.length]);
    }
    if (scope === null && names.size > 0) scope = names;
    if (s.scopes.size > 4096) s.scopes.clear();
    s.scopes.set(key, scope);
    return scope;
  }

  private static covers(scope: Scope, base: string): boolean {
    return scope === 'all' || (scope !== null && scope.has(base));
  }

  // ---- the tag index -------------------------------------------------------------------------

  private async indexOf(store: ExportStore, dir: FsNode): Promise<IndexEntry> {
    const st = dir.stats;
    const cached = this.indexes.get(dir.ino);
    if (cached !== undefined && cached.store === store && cached.mtimeMs === st.mtimeMs && cached.ctimeMs === st.ctimeMs) {
      this.stats.index.hits++;
      return cached;
    }
    this.stats.index.misses++;
    const listing = await store.listing(dir);
    const byName = new Map<string, ListingEntry>();
    const dotEntries: ListingEntry[] = [];
    for (const e of listing.entries) {
      if (e.name === '.' || e.name === '..') dotEntries.push(e);
      else byName.set(e.name, e);
    }
    const index = buildTagIndex(byName.keys());
    const entry: IndexEntry = { store, mtimeMs: listing.mtimeMs, ctimeMs: listing.ctimeMs, index, byName, dotEntries, views: new Map() };
    this.indexes.set(dir.ino, entry);
    const s = this.state(store);
    if (s.byRel.size > this.maxIndexes * 4) s.byRel.clear();
    s.byRel.set(dir.rel, dir.ino);
    if (index.cow !== null || [...index.groups.values()].some((g) => g.cow !== null)) s.cowDirs.add(dir.rel);
    else s.cowDirs.delete(dir.rel);
    return entry;
  }

  /**
   * The index of the directory at `rel`: the most recent one we have without a stat (handle
   * checks run on every call), else read now.
   */
  private async indexAt(store: ExportStore, rel: string): Promise<{ entry: IndexEntry; dir: FsNode | null }> {
    const ino = this.state(store).byRel.get(rel);
    if (ino !== undefined) {
      const cached = this.indexes.get(ino);
      if (cached !== undefined && cached.store === store) {
        this.stats.index.hits++;
        return { entry: cached, dir: null };
      }
    }
    const dir = await this.dirAt(store, rel);
    return { entry: await this.indexOf(store, dir), dir };
  }

  private async dirAt(store: ExportStore, rel: string): Promise<FsNode> {
    const stats = await fsops.lstat(store.abs(rel));
    if (!stats.isDirectory()) throw new NfsError(NfsStat.STALE, 'parent is no longer a directory');
    return { ino: stats.ino, birth: birthMicros(stats.birthtimeMs), rel, stats };
  }

  private resolve(index: TagIndex, name: string, client: ClientView): Resolution {
    const r = resolveName(index, name, client);
    this.stats.rules[r.rule]++;
    return r;
  }

  // ---- name-based procedures -----------------------------------------------------------------

  /**
   * The resolution of `name` in `dir` for this client, or null when remapping does not apply.
   * Raw tagged names in remapped places are refused with `rawStatus`.
   */
  private async resolveIn(store: ExportStore, policy: RemapPolicy, dir: FsNode, name: string, client: ClientView | null, rawStatus: NfsStat): Promise<{ r: Resolution; entry: IndexEntry } | null> {
    if (client === null || name === '.' || name === '..') return null;
    const scope = this.scope(store, policy, dir.rel);
    if (scope === null) return null;
    if (name.includes('$$')) {
      const parsed = parseEntryName(name);
      if (parsed !== null && Remapper.covers(scope, parsed.base)) {
        // `name$$$$` (rule 1) may be looked up; every other raw tagged name is invisible.
        if (masterOf(name) === null || rawStatus !== NfsStat.NOENT) throw new NfsError(rawStatus, 'raw tagged name');
      }
    }
    if (!Remapper.covers(scope, masterOf(name) ?? name)) return null;
    const entry = await this.indexOf(store, dir);
    if (!entry.index.tagged) return null;
    return { r: this.resolve(entry.index, name, client), entry };
  }

  async lookup(store: ExportStore, policy: RemapPolicy, dir: FsNode, name: string, client: ClientView | null): Promise<FsNode> {
    const res = await this.resolveIn(store, policy, dir, name, client, NfsStat.NOENT);
    if (res === null) return store.lookup(dir, name);
    if (res.r.read === null) throw new NfsError(NfsStat.NOENT, `nothing for this client (${res.r.rule})`);
    return store.lookup(dir, res.r.read);
  }

  /**
   * The name a create-type procedure makes: 'create' fails on an existing entry (the store says
   * EXIST), 'replace' (RENAME's target) replaces what this client sees, or its COW variant,
   * 'open' (CREATE UNCHECKED) copies a COW master up first so the open lands on the copy.
   */
  async newName(store: ExportStore, policy: RemapPolicy, dir: FsNode, name: string, client: ClientView | null, mode: 'create' | 'replace' | 'open'): Promise<string> {
    if (hasTag(name) && client !== null) {
      const scope = this.scope(store, policy, dir.rel);
      if (scope !== null && Remapper.covers(scope, baseOf(name))) throw new NfsError(NfsStat.ACCES, 'names with tags are not for clients');
    }
    const res = await this.resolveIn(store, policy, dir, name, client, NfsStat.ACCES);
    if (res === null) return name;
    const r = res.r;
    if (r.cow !== null && r.read !== null) {
      if (mode === 'replace') return r.cow;
      if (mode === 'open') {
        const master = await store.lookup(dir, r.read);
        if (master.stats.isFile()) {
          await this.copyUp(store, dir, master, r.cow);
          return r.cow;
        }
      }
    }
    return r.read ?? r.create;
  }

  /** The entry REMOVE, RMDIR or RENAME's source acts on, by name; null when it does not exist. */
  async existingName(store: ExportStore, policy: RemapPolicy, dir: FsNode, name: string, client: ClientView | null): Promise<string | null> {
    const res = await this.resolveIn(store, policy, dir, name, client, NfsStat.NOENT);
    if (res === null) return name;
    // The master of a COW name is shared: removing or moving it is not this client's change to
    // make; `name$$$$` reaches the master for reading only.
    if ((res.r.rule === 'cow' && res.r.read !== null) || res.r.rule === 'master-explicit') throw new NfsError(NfsStat.ACCES, 'the master is shared');
    return res.r.read;
  }

  // ---- listings ------------------------------------------------------------------------------

  /** READDIR entries for this client (the store's own listing when remapping does not apply). */
  async listing(store: ExportStore, policy: RemapPolicy, dir: FsNode, client: ClientView | null): Promise<ListingEntry[]> {
    const scope = client === null ? null : this.scope(store, policy, dir.rel);
    if (scope === null) return (await store.listing(dir)).entries;
    const entry = await this.indexOf(store, dir);
    if (!entry.index.tagged) return (await store.listing(dir)).entries;
    const key = scope === 'all' ? viewKey(client!) : `${viewKey(client!)}|${[...scope].join('/')}`;
    let view = entry.views.get(key);
    if (view !== undefined) return view;
    view = [];
    for (const e of entry.dotEntries) view.push({ ...e, raw: e.name });
    for (const v of visibleBases(entry.index, client!, (b) => Remapper.covers(scope, b))) {
      const raw = entry.byName.get(v.entry);
      if (raw === undefined) continue;
      if (v.base === v.entry) view.push({ ...raw, raw: raw.name });
      else {
        const c = listingCookie(v.base);
        view.push({ name: v.base, ino: raw.ino, cookieHi: c.hi, cookieLo: c.lo, raw: raw.name });
      }
    }
    orderCookies(view);
    if (entry.views.size >= VIEW_LIMIT) entry.views.clear();
    entry.views.set(key, view);
    return view;
  }

  // ---- handles -------------------------------------------------------------------------------

  /**
   * A handle's object as this client may use it: every tagged component of its path must be the
   * entry this client resolves to (else STALE); a COW master's handle goes to the client's
   * variant once there is one, and `change` makes that variant (copy-up) before the change.
   */
  async checkHandle(store: ExportStore, policy: RemapPolicy, node: FsNode, client: ClientView | null, change: boolean): Promise<FsNode> {
    if (client === null || node.rel === '' || policy.cluster !== true || policy.clusterAdmin === true) return node;
    if (node.rel.includes('$$')) await this.checkTaggedPath(store, policy, node.rel, client);
    if (node.stats.isDirectory()) return node;
    const { dir: dirRel, name } = parentOf(node.rel);
    if (!change && !this.state(store).cowDirs.has(dirRel)) return node;
    const scope = this.scope(store, policy, dirRel);
    if (!Remapper.covers(scope, name) || name.includes('$$')) return node;
    const { entry, dir } = await this.indexAt(store, dirRel);
    const g = entry.index.groups.get(name);
    if ((g?.cow ?? entry.index.cow) === null) return node;
    const r = this.resolve(entry.index, name, client);
    if (r.read !== null && r.read !== name) {
      // Copied up earlier: this client's requests on the master's handle go to its variant.
      return store.lookup(dir ?? (await this.dirAt(store, dirRel)), r.read);
    }
    if (change && r.rule === 'cow' && r.cow !== null) return this.copyUp(store, dir ?? (await this.dirAt(store, dirRel)), node, r.cow);
    return node;
  }

  /**
   * checkHandle() without a promise, for the cache-hit path: the node itself when no remap rule
   * can apply to it, null when checkHandle() must decide (a tagged path, a COW directory).
   * Whatever makes checkHandle() do work must make this return null.
   */
  checkHandleSync(store: ExportStore, policy: RemapPolicy, node: FsNode, client: ClientView | null): FsNode | null {
    if (client === null || node.rel === '' || policy.cluster !== true || policy.clusterAdmin === true) return node;
    if (node.rel.includes('$$')) return null;
    if (node.stats.isDirectory()) return node;
    return this.state(store).cowDirs.has(parentOf(node.rel).dir) ? null : node;
  }

  private async checkTaggedPath(store: ExportStore, policy: RemapPolicy, rel: string, client: ClientView): Promise<void> {
    const comps = rel.split('/');
    let dirRel = '';
    for (let i = 0; i < comps.length; i++) {
      const c = comps[i];
      const parsed = c.includes('$$') ? parseEntryName(c) : null;
      if (parsed !== null && Remapper.covers(this.scope(store, policy, dirRel), parsed.base)) {
        const { entry } = await this.indexAt(store, dirRel);
        const r = this.resolve(entry.index, parsed.base, client);
        if (r.read !== c && r.cow !== c) {
          this.stats.refusedHandles++;
          throw new NfsError(NfsStat.STALE, 'variant of another client');
        }
      }
      dirRel = dirRel === '' ? c : `${dirRel}/${c}`;
    }
  }

  // ---- copy-on-write -------------------------------------------------------------------------

  /**
   * Copies `master` to `variant` in `dir`: content, mode, owner, times. One copy per variant at a
   * time; concurrent changes of the same client wait for it.
   */
  private copyUp(store: ExportStore, dir: FsNode, master: FsNode, variant: string): Promise<FsNode> {
    const key = `${store.fsid}:${dir.ino}/${variant}`;
    let p = this.copying.get(key);
    if (p === undefined) {
      p = this.doCopyUp(store, dir, master, variant).finally(() => this.copying.delete(key));
      this.copying.set(key, p);
    }
    return p;
  }

  private async doCopyUp(store: ExportStore, dir: FsNode, master: FsNode, variant: string): Promise<FsNode> {
    const existing = await store.peek(dir, variant);
    if (existing !== null) return store.lookup(dir, variant);
    const st = master.stats;
    const owner = { uid: st.uid, gid: st.gid };
    let node: FsNode;
    if (st.isFile()) {
      node = (await store.create(dir, variant, st.mode & 0o7777, 'guarded', null, owner)).node;
      for (let off = 0; off < st.size; ) {
        const { data, eof } = await store.read(master, off, Math.min(COPY_CHUNK, st.size - off));
        if (data.length > 0) await store.write(node, off, data, 1);
        off += data.length;
        if (eof || data.length === 0) break;
      }
    } else if (st.isSymbolicLink()) {
      node = await store.symlink(dir, variant, await store.readlink(master), owner);
    } else {
      throw new NfsError(NfsStat.ACCES, 'copy-on-write works on files and symlinks');
    }
    // The copy is the master as it was: exact owner (not the directory's setgid group), mode, times.
    node = await store.setattr(node, { mode: null, uid: st.uid, gid: st.gid, size: null, atime: null, mtime: null });
    node = await store.setattr(node, { mode: st.isSymbolicLink() ? null : st.mode & 0o7777, uid: null, gid: null, size: null, atime: st.atimeMs / 1000, mtime: st.mtimeMs / 1000 });
    this.stats.copyUps++;
    log.info({ dir: dir.rel, master: master.rel, variant }, 'copy-on-write: master copied to the client variant');
    return node;
  }
}
