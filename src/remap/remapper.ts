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
 *   SYMLINK, MKNOD, LINK's new name: 'create'; RENAME's target: 'replace'). A name containing a
 *   tag is NFS3ERR_ACCES.
 * - `existingName(...)`: the entry REMOVE, RMDIR and RENAME's source act on.
 * - `listing(...)`: READDIR/READDIRPLUS entries: each base name once, as this client resolves it,
 *   with the resolved entry's fileid and the base name's stable cookie; `rawName(e)` gives the
 *   entry a READDIRPLUS child lookup must use.
 * - `checkHandle(store, policy, node, client)`: a handle of a variant is honoured only for
 *   clients that resolve to it (else NFS3ERR_STALE); a COW master's handle follows this client to
 *   its variant once there is one. `checkHandleSync` is the same without a promise, or null.
 * - `beforeChange(...)`: for WRITE/SETATTR once allowed: the first change of a COW master copies
 *   it up (copy-on-write) and goes to the copy; `keepFileid` keeps the handle's fileid on the
 *   fresh attributes of the copy.
 * - `willChange(store, dir)`, `during(token, op)`, `changed(token, dirAfter, removed, added)`:
 *   around our own change of a directory's entries (CREATE, MKDIR, SYMLINK, MKNOD, LINK, REMOVE, RMDIR, RENAME), so the
 *   directory's tag index follows the change instead of being read again.
 * - `stats`: tag-index cache hits/misses/evictions/size, full builds and own-change updates,
 *   resolutions by rule, copy-ups, refused variant handles; plain numbers for the metrics code.
 *
 * Cost: the tag index of a directory is built from its names (one readdir, no stat per entry)
 * and kept in an lru-cache keyed by the directory's inode, validated by its mtime/ctime; a
 * directory without any tag costs one cache look-up per call. Our own changes update the index
 * in place and re-validate it against the directory's attributes after the change: a node filling
 * a 20,000-entry /tmp must not make every call there read 20,000 names. A change behind our back
 * (mtime/ctime moved with no own change recorded) still rebuilds it. The one window: a change
 * behind our back that lands while our own change runs is taken for ours; so is one the cached
 * directory attributes had not shown yet (inotify delivers it within milliseconds). Hence an index
 * is updated in place for at most MAX_UPDATED_AGE_MS after its last full build.
 */
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { componentLogger } from '../log/logger.js';
import { NfsStat } from '../nfs/constants.js';
import { NfsError } from '../nfs/errors.js';
import { birthMicros } from '../nfs/filehandle.js';
import { listingCookie, orderCookies } from '../store/cookies.js';
import type fs from 'node:fs';
import type { ExportStore, FsNode, ListingEntry } from '../store/export-store.js';
import * as fsops from '../store/fsops.js';
import { buildTagIndex, resolveName, RULES, updateTagIndex, visibleBases, type ClientView, type Resolution, type Rule, type TagIndex } from './resolve.js';
import { hasTag, masterOf, parseEntryName, scratchName } from './tags.js';

const log = componentLogger('remap');

/** The export options remapping reads (a subset of mount/exports ExportOptions). */
export interface RemapPolicy {
  cluster?: boolean;
  clusterSubtrees?: readonly (readonly string[])[] | null;
  clusterAdmin?: boolean;
}

export interface RemapStats {
  /** The per-directory tag index cache; `builds` read the directory, `updates` followed our own changes. */
  index: { hits: number; misses: number; evictions: number; size: number; builds: number; updates: number };
  /** Resolutions of a name in a directory with tags, by the rule that decided. */
  rules: Record<Rule, number>;
  /** Masters copied to a client's variant on its first change (COW). */
  copyUps: number;
  /** Variant handles refused to a client that does not resolve to that variant. */
  refusedHandles: number;
  /** Per-client READDIR views held: how many, and their entries in all (the bound). */
  views: { size: number; entries: number };
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
  /** What of a client its READDIR view depends on (VIEW_BY_* bits), computed on first READDIR. */
  viewBy: number;
  /** When the directory was last read (Date.now()). */
  builtAt: number;
  /** Own changes begun and ended against this entry (see willChange). */
  begun: number;
  ended: number;
  /** Moves on every in-place update: a listing computed across one is not kept. */
  version: number;
  /** Unique per index and version: keys its views in the shared view cache. */
  viewGen: number;
}

/** An own change in progress in a directory whose index was current when it began. */
export interface DirChange {
  entry: IndexEntry;
  ino: number;
  rel: string;
  seq: number;
}

/** Which names of a directory remapping covers. */
type Scope = 'all' | ReadonlySet<string> | null;

class StoreState {
  /** Directory path → inode, for checking handles against the most recent index without a stat. */
  readonly byRel = new Map<string, number>();
  /** Directories whose index has a COW marker: a master handle there may follow a client to its variant. */
  readonly cowDirs = new Set<string>();
  /** A handle's path → its tagged components (paths repeat; parse each once). */
  readonly taggedPaths = new Map<string, TaggedComponent[]>();
}

/** A tagged component of a handle's path: entry `name` of base `base` in directory `dirRel`. */
interface TaggedComponent {
  dirRel: string;
  base: string;
  name: string;
}

export interface RemapperOptions {
  /** Directories whose tag index is kept (default 8192). */
  maxIndexes?: number;
  /** Entries of per-client READDIR views kept in all directories (default 262,144). */
  maxViewEntries?: number;
}

/** What a client's view of a directory can differ by: only the kinds of variants it has. */
const VIEW_BY_IP = 1;
const VIEW_BY_HOST = 2;
const VIEW_BY_UID = 4;
const VIEW_BY_GID = 8;
const VIEW_BY_UNKNOWN = -1;

/**
 * Which parts of a client decide what it sees in a directory with this index. A listing shows
 * what each base name resolves to for reading; markers (CREATE/ALWAYS/COW) and `$$CLIENT$$`
 * variants read the same for every client, so only IP/subnet, HOST/host-prefix, UID and GID
 * variants split views. Keying views by just these keeps a node that changes its AUTH_SYS uid
 * on every READDIR to one view where no UID/GID variant exists.
 */
function viewByOf(index: TagIndex): number {
  let by = 0;
  for (const g of index.groups.values()) {
    if (g.byIp !== null || g.subnets !== null) by |= VIEW_BY_IP;
    if (g.byHost !== null || g.hostPrefixes !== null) by |= VIEW_BY_HOST;
    if (g.byUid !== null) by |= VIEW_BY_UID;
    if (g.byGid !== null) by |= VIEW_BY_GID;
  }
  return by;
}

/** Beyond this age an index is read again on the next change rather than updated (see Cost). */
const MAX_UPDATED_AGE_MS = 60_000;

/** Stats shown under another object's fileid (the COW master's), by the object they stand for. */
const shownFileid = new WeakMap<object, number>();

function underFileid(node: FsNode, fileid: number): FsNode {
  if (node.stats.ino === fileid) return node;
  // Everything else (size, mode, times, is*()) reads through to the real attributes.
  const stats = Object.create(node.stats, { ino: { value: fileid, enumerable: true } }) as FsNode['stats'];
  shownFileid.set(stats, fileid);
  return { ...node, stats };
}

const COPY_CHUNK = 1024 * 1024;

function parentOf(rel: string): { dir: string; name: string } {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? { dir: '', name: rel } : { dir: rel.slice(0, slash), name: rel.slice(slash + 1) };
}

function baseOf(name: string): string {
  return parseEntryName(name)?.base ?? name;
}

function isCowMarker(name: string | null): boolean {
  return name !== null && name.includes('$$') && parseEntryName(name)?.tag.kind === 'cow';
}

function viewKey(gen: number, by: number, c: ClientView): string {
  return `${gen}|${by & VIEW_BY_IP ? c.ip : ''}|${by & VIEW_BY_HOST ? (c.host ?? '') : ''}|${by & VIEW_BY_UID ? c.uid : ''}|${by & VIEW_BY_GID ? c.gid : ''}`;
}

let nextViewGen = 1;

export class Remapper {
  readonly stats: RemapStats;
  private readonly indexes: LRUCache<number, IndexEntry>;
  private readonly states = new Map<ExportStore, StoreState>();
  private readonly copying = new Map<string, Promise<FsNode>>();
  private readonly scopes = new WeakMap<object, Map<string, Scope>>();
  private readonly building = new Map<number, { store: ExportStore; mtimeMs: number; ctimeMs: number; entry: Promise<IndexEntry> }>();
  private readonly maxIndexes: number;
  /** READDIR views of every directory, bounded by their entries in all, not just their number. */
  private readonly views: LRUCache<string, ViewEntry[]>;

  constructor(opts: RemapperOptions = {}) {
    this.maxIndexes = opts.maxIndexes ?? 8192;
    const maxViewEntries = Math.max(1, opts.maxViewEntries ?? 262_144);
    // A view larger than the whole bound is served once, not kept.
    this.views = new LRUCache<string, ViewEntry[]>({ max: 65_536, maxSize: maxViewEntries, sizeCalculation: (v) => Math.max(1, v.length) });
    const views = this.views;
    const rules = Object.fromEntries(RULES.map((r) => [r, 0])) as Record<Rule, number>;
    const indexStats = { hits: 0, misses: 0, evictions: 0, size: 0, builds: 0, updates: 0 };
    const viewStats = {};
    Object.defineProperty(viewStats, 'size', { enumerable: true, get: () => views.size });
    Object.defineProperty(viewStats, 'entries', { enumerable: true, get: () => views.calculatedSize });
    this.stats = { index: indexStats, rules, copyUps: 0, refusedHandles: 0, views: viewStats as RemapStats['views'] };
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
    if (s === undefined) this.states.set(store, (s = new StoreState()));
    return s;
  }

  /** Whether remapping applies in `dirRel` for this client, and to which base names. */
  private scope(store: ExportStore, policy: RemapPolicy, dirRel: string): Scope {
    if (policy.cluster !== true || policy.clusterAdmin === true) return null;
    const subtrees = policy.clusterSubtrees;
    if (subtrees === null || subtrees === undefined) return 'all';
    // Export options are frozen and shared, so the subtree list itself keys the memo.
    let memo = this.scopes.get(subtrees);
    if (memo === undefined) this.scopes.set(subtrees, (memo = new Map()));
    let scope = memo.get(dirRel);
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
    if (memo.size > 4096) memo.clear();
    memo.set(dirRel, scope);
    return scope;
  }

  private static covers(scope: Scope, base: string): boolean {
    return scope === 'all' || (scope !== null && scope.has(base));
  }

  // ---- the tag index -------------------------------------------------------------------------

  /** The directory's tag index if one is cached and still current (nothing counted). */
  private currentIndex(store: ExportStore, dir: FsNode): IndexEntry | undefined {
    const st = dir.stats;
    const cached = this.indexes.get(dir.ino);
    return cached !== undefined && cached.store === store && cached.mtimeMs === st.mtimeMs && cached.ctimeMs === st.ctimeMs ? cached : undefined;
  }

  private async indexOf(store: ExportStore, dir: FsNode): Promise<IndexEntry> {
    const st = dir.stats;
    const cached = this.currentIndex(store, dir);
    if (cached !== undefined) {
      this.stats.index.hits++;
      return cached;
    }
    this.stats.index.misses++;
    // A boot storm asks for the same directory hundreds of times at once: read it once.
    const pending = this.building.get(dir.ino);
    if (pending !== undefined && pending.store === store && pending.mtimeMs === st.mtimeMs && pending.ctimeMs === st.ctimeMs) return pending.entry;
    const build = { store, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, entry: this.buildIndex(store, dir) };
    this.building.set(dir.ino, build);
    try {
      return await build.entry;
    } finally {
      if (this.building.get(dir.ino) === build) this.building.delete(dir.ino);
    }
  }

  private async buildIndex(store: ExportStore, dir: FsNode): Promise<IndexEntry> {
    const st = dir.stats;
    // Names only: one readdir, not the stat per entry a full listing costs (a LOOKUP storm
    // over /usr/lib must not stat thousands of files).
    const builtAt = Date.now();
    const index = buildTagIndex(await fsops.readdir(store.abs(dir.rel)), true);
    this.stats.index.builds++;
    const entry: IndexEntry = { store, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, index, viewBy: VIEW_BY_UNKNOWN, builtAt, begun: 0, ended: 0, version: 0, viewGen: nextViewGen++ };
    this.indexes.set(dir.ino, entry);
    const s = this.state(store);
    if (s.byRel.size > this.maxIndexes * 4) s.byRel.clear();
    s.byRel.set(dir.rel, dir.ino);
    this.noteCow(s, dir.rel, index);
    return entry;
  }

  private noteCow(s: StoreState, dirRel: string, index: TagIndex): void {
    if (index.cow !== null || [...index.groups.values()].some((g) => g.cow !== null)) s.cowDirs.add(dirRel);
    else s.cowDirs.delete(dirRel);
  }

  /**
   * Before our own change of `dir`'s entries: a token for changed() when we hold an index that
   * is current for `dir`'s attributes, else null (nothing to keep up to date).
   */
  willChange(store: ExportStore, dir: FsNode): DirChange | null {
    const e = this.indexes.peek(dir.ino);
    if (e === undefined || e.store !== store || e.mtimeMs !== dir.stats.mtimeMs || e.ctimeMs !== dir.stats.ctimeMs) return null;
    return { entry: e, ino: dir.ino, rel: dir.rel, seq: ++e.begun };
  }

  /**
   * `op`, our own change begun with willChange(), as it is; when it fails the index stays valid
   * for the attributes from before it (if the change happened anyway, they moved and the index is
   * read again), unless another own change overlapped it.
   */
  during<T>(change: DirChange | null, op: Promise<T>): Promise<T> {
    if (change === null) return op;
    return op.catch((err: unknown) => {
      const e = change.entry;
      e.ended++;
      if (this.indexes.peek(change.ino) === e && (change.seq !== e.begun || e.ended !== e.begun)) this.indexes.delete(change.ino);
      throw err;
    });
  }

  /**
   * After our own change succeeded: entry `removed` went, `added` came (either may be null),
   * `after` are the directory's attributes now. The index follows the change and is valid for
   * `after` only when no other own change overlapped this one (else its names could be missing
   * from the index while its mtime is already counted): overlapping changes, or a token never
   * ended (a failure after the change), drop the index, and the next call reads the directory.
   */
  changed(change: DirChange | null, after: fs.Stats, removed: string | null, added: string | null): void {
    if (change === null) return;
    const e = change.entry;
    e.ended++;
    if (this.indexes.peek(change.ino) !== e) return;
    if (change.seq !== e.begun || e.ended !== e.begun || Date.now() - e.builtAt > MAX_UPDATED_AGE_MS) {
      this.indexes.delete(change.ino);
      return;
    }
    const afterRemoval = removed === null ? e.index : updateTagIndex(e.index, removed, false);
    const next = added === null || afterRemoval === null ? afterRemoval : updateTagIndex(afterRemoval, added, true);
    if (next === null) {
      // A tag appeared in a directory whose lean index kept no names: read it again.
      this.indexes.delete(change.ino);
      return;
    }
    e.index = next;
    e.mtimeMs = after.mtimeMs;
    e.ctimeMs = after.ctimeMs;
    e.version++;
    // Views of the index as it was age out of the view cache; none is served again.
    e.viewGen = nextViewGen++;
    e.viewBy = VIEW_BY_UNKNOWN;
    this.stats.index.updates++;
    if (isCowMarker(removed) || isCowMarker(added)) this.noteCow(this.state(e.store), change.rel, e.index);
  }

  /**
   * The index of the directory at `rel`. `fresh` false: the most recent one we have, without a
   * stat (handle checks run on every call; a refusal is re-checked fresh); true: validated now.
   */
  private async indexAt(store: ExportStore, rel: string, fresh: boolean): Promise<{ entry: IndexEntry; dir: FsNode | null }> {
    const ino = fresh ? undefined : this.state(store).byRel.get(rel);
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
    // Rule 1 holds in a directory without tags too: the master, never an entry named `x$$$$`.
    if (!entry.index.tagged && masterOf(name) === null) return null;
    return { r: this.resolve(entry.index, name, client), entry };
  }

  /**
   * `probed`: lookupSync() has just asked the store's cache for the very name this resolves to
   * and missed, so the store need not ask its cache again (nor count a second miss).
   */
  async lookup(store: ExportStore, policy: RemapPolicy, dir: FsNode, name: string, client: ClientView | null, probed = false): Promise<FsNode> {
    const res = await this.resolveIn(store, policy, dir, name, client, NfsStat.NOENT);
    const read = res === null ? name : res.r.read;
    if (read === null) throw new NfsError(NfsStat.NOENT, `nothing for this client (${res!.r.rule})`);
    return probed ? store.lookupMiss(dir, read) : store.lookup(dir, read);
  }

  /**
   * lookup() without a promise, for a booting node's LOOKUPs of names already known: the node,
   * null when the store's cache was asked for the name this resolves to and did not have it
   * (then call lookup() with `probed`), undefined when it cannot be answered here (an uncached
   * tag index, a raw tagged name, a name this client must not see). Counts only what it answers.
   */
  lookupSync(store: ExportStore, policy: RemapPolicy, dir: FsNode, name: string, client: ClientView | null): FsNode | null | undefined {
    let read = name;
    let rule: Rule | null = null;
    let indexHit = false;
    if (client !== null && name !== '.' && name !== '..') {
      const scope = this.scope(store, policy, dir.rel);
      // Tagged names (raw ones refused, `x$$$$` meaning the master) are resolveIn()'s to judge.
      if (scope !== null && name.includes('$$')) return undefined;
      if (scope !== null && Remapper.covers(scope, name)) {
        const entry = this.currentIndex(store, dir);
        if (entry === undefined) return undefined;
        indexHit = true;
        if (entry.index.tagged) {
          const r = resolveName(entry.index, name, client);
          if (r.read === null) return undefined;
          read = r.read;
          rule = r.rule;
        }
      }
    }
    const node = store.lookupCached(dir, read);
    if (node === null) return null;
    if (indexHit) this.stats.index.hits++;
    if (rule !== null) this.stats.rules[rule]++;
    return node;
  }

  /**
   * The name a create-type procedure makes: 'create' names what exists for this client if
   * anything (the store then says EXIST, or CREATE UNCHECKED opens it; a change of a COW master
   * then goes through beforeChange), 'replace' (RENAME's target) replaces what this client sees,
   * or its COW variant.
   */
  async newName(store: ExportStore, policy: RemapPolicy, dir: FsNode, name: string, client: ClientView | null, mode: 'create' | 'replace'): Promise<string> {
    if (hasTag(name) && client !== null) {
      const scope = this.scope(store, policy, dir.rel);
      if (scope !== null && Remapper.covers(scope, baseOf(name))) throw new NfsError(NfsStat.ACCES, 'names with tags are not for clients');
    }
    const res = await this.resolveIn(store, policy, dir, name, client, NfsStat.ACCES);
    if (res === null) return name;
    const r = res.r;
    // RENAME over a COW name replaces this client's view of it: its own variant, not the master.
    if (mode === 'replace' && r.cow !== null && r.read !== null) return r.cow;
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
    if (entry.viewBy === VIEW_BY_UNKNOWN) entry.viewBy = viewByOf(entry.index);
    const own = viewKey(entry.viewGen, entry.viewBy, client!);
    const key = scope === 'all' ? own : `${own}|${[...scope].join('/')}`;
    let view = this.views.get(key);
    if (view !== undefined) return view;
    const version = entry.version;
    const byName = new Map<string, ListingEntry>();
    for (const e of (await store.listing(dir)).entries) byName.set(e.name, e);
    view = [];
    for (const dot of ['.', '..']) {
      const e = byName.get(dot);
      if (e !== undefined) view.push({ ...e, raw: dot });
    }
    for (const v of visibleBases(entry.index, client!, (b) => Remapper.covers(scope, b))) {
      const raw = byName.get(v.entry);
      if (raw === undefined) continue;
      if (v.base === v.entry) view.push({ ...raw, raw: raw.name });
      else {
        const c = listingCookie(v.base);
        view.push({ name: v.base, ino: raw.ino, cookieHi: c.hi, cookieLo: c.lo, raw: raw.name });
      }
    }
    orderCookies(view);
    // An own change while the listing was read: this view may miss its name; serve it once.
    if (entry.version !== version) return view;
    this.views.set(key, view);
    return view;
  }

  // ---- handles -------------------------------------------------------------------------------

  /**
   * A handle's object as this client may use it: every tagged component of its path must be the
   * entry this client resolves to (else STALE); a COW master's handle goes to the client's
   * variant once there is one, and `change` makes that variant (copy-up) before the change.
   */
  async checkHandle(store: ExportStore, policy: RemapPolicy, node: FsNode, client: ClientView | null): Promise<FsNode> {
    if (client === null || node.rel === '' || policy.cluster !== true || policy.clusterAdmin === true) return node;
    if (node.rel.includes('$$')) await this.checkTaggedPath(store, policy, node.rel, client);
    if (node.stats.isDirectory()) return node;
    const cowDirs = this.state(store).cowDirs;
    if (cowDirs.size === 0 || !cowDirs.has(parentOf(node.rel).dir)) return node;
    return this.copyOnWrite(store, policy, node, client, false);
  }

  /**
   * Where a change (WRITE, SETATTR) of `node` — already allowed by the permission checks — goes:
   * for the master of a COW name, the client's variant, copied up now if it does not exist yet.
   * The result keeps the handle's fileid (see keepFileid).
   */
  async beforeChange(store: ExportStore, policy: RemapPolicy, node: FsNode, client: ClientView | null): Promise<FsNode> {
    if (client === null || node.rel === '' || policy.cluster !== true || policy.clusterAdmin === true || node.stats.isDirectory()) return node;
    const dirRel = parentOf(node.rel).dir;
    const s = this.state(store);
    // An index we hold without COW markers answers without a stat; a directory we have not seen
    // since a restart is read, so an old handle's writes still go copy-on-write.
    const ino = s.byRel.get(dirRel);
    if (!s.cowDirs.has(dirRel) && ino !== undefined && this.indexes.peek(ino)?.store === store) return node;
    return this.copyOnWrite(store, policy, node, client, true);
  }

  private async copyOnWrite(store: ExportStore, policy: RemapPolicy, node: FsNode, client: ClientView, change: boolean): Promise<FsNode> {
    const { dir: dirRel, name } = parentOf(node.rel);
    if (!Remapper.covers(this.scope(store, policy, dirRel), name) || name.includes('$$')) return node;
    // Copy-ups change the directory: COW decisions always use its current index.
    const { entry, dir } = await this.indexAt(store, dirRel, true);
    const g = entry.index.groups.get(name);
    if ((g?.cow ?? entry.index.cow) === null) return node;
    const r = this.resolve(entry.index, name, client);
    let variant: FsNode;
    if (r.read !== null && r.read !== name) {
      // Copied up earlier: this client's requests on the master's handle go to its variant.
      variant = await store.lookup(dir ?? (await this.dirAt(store, dirRel)), r.read);
    } else if (change && r.rule === 'cow' && r.cow !== null) {
      variant = await this.copyUp(store, dir ?? (await this.dirAt(store, dirRel)), node, r.cow);
    } else {
      return node;
    }
    return underFileid(variant, node.stats.ino);
  }

  /**
   * `after` (fresh attributes of a changed object) shown under the fileid `before` was shown
   * under: a kernel client marks an inode stale when its fileid changes, so the COW variant
   * reached through the master's handle keeps the master's fileid.
   */
  keepFileid(before: FsNode, after: FsNode): FsNode {
    const id = shownFileid.get(before.stats);
    return id === undefined ? after : underFileid(after, id);
  }

  /** The node under its own fileid (undoes keepFileid), for replies that carry its own handle (CREATE). */
  unmasked(node: FsNode): FsNode {
    return shownFileid.has(node.stats) ? { ...node, stats: Object.getPrototypeOf(node.stats) as FsNode['stats'] } : node;
  }

  /**
   * checkHandle() without a promise, for the cache-hit path: the node itself when no remap rule
   * can apply to it, null when checkHandle() must decide (a tagged path, a COW directory).
   * Whatever makes checkHandle() do work must make this return null.
   */
  checkHandleSync(store: ExportStore, policy: RemapPolicy, node: FsNode, client: ClientView | null): FsNode | null {
    if (client === null || node.rel === '' || policy.cluster !== true || policy.clusterAdmin === true) return node;
    if (node.rel.includes('$$') && !this.taggedPathAllowedSync(store, policy, node.rel, client)) return null;
    if (node.stats.isDirectory()) return node;
    const cowDirs = this.state(store).cowDirs;
    return cowDirs.size > 0 && cowDirs.has(parentOf(node.rel).dir) ? null : node;
  }

  private taggedComponents(store: ExportStore, rel: string): TaggedComponent[] {
    const memo = this.state(store).taggedPaths;
    let out = memo.get(rel);
    if (out !== undefined) return out;
    out = [];
    let dirRel = '';
    for (const c of rel.split('/')) {
      const parsed = c.includes('$$') ? parseEntryName(c) : null;
      if (parsed !== null) out.push({ dirRel, base: parsed.base, name: c });
      dirRel = dirRel === '' ? c : `${dirRel}/${c}`;
    }
    if (memo.size > this.maxIndexes) memo.clear();
    memo.set(rel, out);
    return out;
  }

  /** Every tagged component is what this client resolves to, by the indexes we hold (no stat). */
  private taggedPathAllowedSync(store: ExportStore, policy: RemapPolicy, rel: string, client: ClientView): boolean {
    const byRel = this.state(store).byRel;
    for (const t of this.taggedComponents(store, rel)) {
      if (!Remapper.covers(this.scope(store, policy, t.dirRel), t.base)) continue;
      const ino = byRel.get(t.dirRel);
      const entry = ino === undefined ? undefined : this.indexes.get(ino);
      if (entry === undefined || entry.store !== store || !Remapper.selects(entry.index, t, client)) return false;
    }
    return true;
  }

  private async checkTaggedPath(store: ExportStore, policy: RemapPolicy, rel: string, client: ClientView): Promise<void> {
    for (const t of this.taggedComponents(store, rel)) {
      if (!Remapper.covers(this.scope(store, policy, t.dirRel), t.base)) continue;
      // The index we hold first; a refusal is checked again against the directory as it is now.
      if (Remapper.selects((await this.indexAt(store, t.dirRel, false)).entry.index, t, client)) continue;
      if (Remapper.selects((await this.indexAt(store, t.dirRel, true)).entry.index, t, client)) continue;
      this.stats.refusedHandles++;
      throw new NfsError(NfsStat.STALE, 'variant of another client');
    }
  }

  /** Does this client resolve the component's base name to the component (or to it as its COW copy)? */
  private static selects(index: TagIndex, t: TaggedComponent, client: ClientView): boolean {
    const r = resolveName(index, t.base, client);
    return r.read === t.name || r.cow === t.name;
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
    // Copied under a name no client resolves to, then linked into place: until the copy is whole
    // (and when it fails, or the server dies meanwhile) the client keeps reading the master, not
    // a half copy that would then be its file for good.
    const temp = scratchName(randomBytes(8).toString('hex'));
    let node: FsNode | null = null;
    try {
      if (st.isFile()) {
        node = (await store.create(dir, temp, st.mode & 0o7777, 'guarded', null, owner)).node;
        for (let off = 0; off < st.size; ) {
          const { data, eof } = await store.read(master, off, Math.min(COPY_CHUNK, st.size - off));
          if (data.length > 0) await store.write(node, off, data, 1);
          off += data.length;
          if (eof || data.length === 0) break;
        }
      } else if (st.isSymbolicLink()) {
        node = await store.symlink(dir, temp, await store.readlink(master), owner);
      } else {
        throw new NfsError(NfsStat.ACCES, 'copy-on-write works on files and symlinks');
      }
      // The copy is the master as it is now (reading it may have moved its atime): exact owner (not
      // the directory's setgid group), mode, times.
      const now = (await store.restat(master)).stats;
      node = await store.setattr(node, { mode: null, uid: now.uid, gid: now.gid, size: null, atime: null, mtime: null });
      node = await store.setattr(node, { mode: now.isSymbolicLink() ? null : now.mode & 0o7777, uid: null, gid: null, size: null, atime: now.atimeMs / 1000, mtime: now.mtimeMs / 1000 });
      // link(), unlike rename(), never replaces a variant someone made meanwhile.
      await store.link(node, dir, variant).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    } finally {
      if (node !== null) await store.remove(dir, node).catch((err: unknown) => log.warn({ dir: dir.rel, temp, err }, 'copy-on-write: the scratch copy stays behind'));
      // These changes were made without willChange(): an own change in this directory running
      // meanwhile (LINK of this very copy) must not re-validate an index that lacks them.
      if (this.indexes.peek(dir.ino)?.store === store) this.indexes.delete(dir.ino);
    }
    this.stats.copyUps++;
    log.info({ dir: dir.rel, master: master.rel, variant }, 'copy-on-write: master copied to the client variant');
    return store.lookup(dir, variant);
  }
}
