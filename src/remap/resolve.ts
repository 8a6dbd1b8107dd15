/**
 * Resolution of one name for one client (docs: docs/cluster-tags.md, "Resolution").
 * Pure: no file system, no XDR. The NFS program reaches it through src/remap/remapper.ts.
 *
 * API
 * - `buildTagIndex(names)`: the per-directory index, built once from a directory's entry names
 *   (every name parsed once): base name → its master (if present), its variants grouped for the
 *   10-step order, its name-level CREATE/ALWAYS/COW markers; plus the directory markers.
 *   `index.tagged` is false for a directory without any tag: callers then skip remapping.
 * - `resolveName(index, name, client)`: what `name` means for `client` = {ip, host, uid, gid}:
 *     `read`   the existing entry to use (LOOKUP, READ, REMOVE's object), or null (NOENT);
 *     `create` the name to make when `read` is null (CREATE, MKDIR, ..., RENAME's target);
 *     `cow`    for a COW rule: the client's variant that changes go to (else null);
 *     `rule`   which rule decided (`Rule`), for `clusternfs resolve` and the metrics.
 *   The caller rejects raw tagged names itself (see `hasTag`); `resolveName` only gives rule 1
 *   (`name$$$$`) a meaning.
 * - `visibleBases(index, client)`: the base names this client sees in a listing, each with the
 *   entry it resolves to (READDIR/READDIRPLUS).
 * - `updateTagIndex(index, name, present)`: the index after one entry was added or removed by our
 *   own change, without reading the directory again.
 * - `RULES`: every rule in a fixed order (metric label values, `resolve` output).
 *
 * Longest prefix wins, numerically, for subnet and host-prefix tags: groups keep them sorted by
 * prefix length, longest first, when the index is built, so resolution is a scan that stops at
 * the first match, and exact IP/HOST/UID/GID variants are one Map look-up each.
 */
import { formatAddress, ipInSubnet, masterOf, parseAddress, parseEntryName, shortHostName, variantName, type Address, type Tag, type VariantBy } from './tags.js';

/** Which rule of the resolution order decided (cluster-tags.md steps 1–10, plus create/none). */
export type Rule =
  /** 1: `name$$$$` names the master. */
  | 'master-explicit'
  /** 2: `name$$IP=<client ip>$$` or `name$$CLIENT=<client ip>$$`. */
  | 'ip'
  /** 3: `name$$HOST=<client host>$$`. */
  | 'host'
  /** 4: a subnet variant containing the client, longest prefix first. */
  | 'subnet'
  /** 5: a host-prefix variant matching the client's host, longest prefix first. */
  | 'host-prefix'
  /** 6: `name$$UID=uid$$`, then `name$$GID=gid$$`. */
  | 'uid'
  | 'gid'
  /** 7: `name$$CLIENT$$`. */
  | 'client'
  /** 8: ALWAYS: the client's variant, existing or not. */
  | 'always'
  /** 9: COW: the master for reading, the client's variant for changes. */
  | 'cow'
  /** 10: the plain name. */
  | 'master'
  /** Nothing exists; a CREATE marker decides the variant a create makes. */
  | 'create'
  /** Nothing exists and no marker: NOENT, or a create makes the master. */
  | 'none';

export const RULES: readonly Rule[] = ['master-explicit', 'ip', 'host', 'subnet', 'host-prefix', 'uid', 'gid', 'client', 'always', 'cow', 'master', 'create', 'none'];

/** Index of each rule in RULES (for counters kept in an array). */
export const RULE_INDEX: Readonly<Record<Rule, number>> = Object.fromEntries(RULES.map((r, i) => [r, i])) as Record<Rule, number>;

/** Who is asking: the call's source address (normalized), short host name, AUTH_SYS uid/gid. */
export interface ClientView {
  /** Normalized as tags.normalizeIp does. */
  ip: string;
  /** Parsed `ip`; computed once per address by the identity cache. */
  addr: Address | null;
  /** Short host name in lower case, or null when unknown (HOST tags then do not match). */
  host: string | null;
  uid: number;
  gid: number;
}

/** A client view from its parts (tests, the `resolve` command). */
export function clientView(ip: string, host: string | null = null, uid = 0, gid = 0): ClientView {
  const addr = parseAddress(ip);
  return { ip: addr === null ? ip : formatAddress(addr), addr, host: host === null ? null : shortHostName(host), uid, gid };
}

interface SubnetVariant {
  name: string;
  addr: Address;
  prefix: number;
}

interface PrefixVariant {
  name: string;
  prefix: string;
}

/** Everything one base name has in one directory. */
export interface BaseGroup {
  base: string;
  /** The plain entry `base` exists. */
  master: boolean;
  /** Exact IP/CLIENT=ip variants by normalized address. */
  byIp: Map<string, string> | null;
  byHost: Map<string, string> | null;
  /** Longest prefix first. */
  subnets: SubnetVariant[] | null;
  /** Longest prefix first. */
  hostPrefixes: PrefixVariant[] | null;
  byUid: Map<number, string> | null;
  byGid: Map<number, string> | null;
  /** `base$$CLIENT$$`. */
  client: string | null;
  /** Name-level markers `base$$CREATE=..$$` etc. */
  create: VariantBy | null;
  always: VariantBy | null;
  cow: VariantBy | null;
  /** Every raw entry name of this base (master, variants and name-level markers). */
  names: string[];
}

export interface TagIndex {
  /** Any tagged entry at all; false means resolution is the identity and can be skipped. */
  tagged: boolean;
  /**
   * Tagged names grouped by base (with the base's master, when it exists, first in `names`).
   * A plain name without variants has no group: a group costs some 365 bytes, and a directory of
   * an image is almost all plain names (a million of them took 365 MB that way).
   */
  groups: Map<string, BaseGroup>;
  /**
   * Every plain (untagged) entry name: the masters, with or without variants. Null in an index
   * built `lean` for a directory without tags: nothing is remapped there, and the server's copy
   * of every plain name of an image (a million strings) bought nothing but memory.
   */
  masters: Set<string> | null;
  /** Directory markers. */
  create: VariantBy | null;
  always: VariantBy | null;
  cow: VariantBy | null;
  /** The marker entries' names (hidden from clients). */
  markers: string[];
}

function newGroup(index: TagIndex, base: string): BaseGroup {
  const master = index.masters?.has(base) === true;
  return { base, master, byIp: null, byHost: null, subnets: null, hostPrefixes: null, byUid: null, byGid: null, client: null, create: null, always: null, cow: null, names: master ? [base] : [] };
}

function addVariant(g: BaseGroup, name: string, tag: Tag): void {
  switch (tag.kind) {
    case 'ip': {
      if (tag.exact) {
        // IP= and CLIENT= spell the same thing; the first seen wins, deterministically by sort order.
        const key = formatAddress(tag.addr);
        g.byIp ??= new Map();
        if (!g.byIp.has(key)) g.byIp.set(key, name);
      } else {
        (g.subnets ??= []).push({ name, addr: tag.addr, prefix: tag.prefix });
      }
      return;
    }
    case 'host':
      g.byHost ??= new Map();
      if (!g.byHost.has(tag.name)) g.byHost.set(tag.name, name);
      return;
    case 'hostPrefix':
      (g.hostPrefixes ??= []).push({ name, prefix: tag.prefix });
      return;
    case 'uid':
      g.byUid ??= new Map();
      if (!g.byUid.has(tag.id)) g.byUid.set(tag.id, name);
      return;
    case 'gid':
      g.byGid ??= new Map();
      if (!g.byGid.has(tag.id)) g.byGid.set(tag.id, name);
      return;
    case 'client':
      g.client ??= name;
      return;
    case 'master':
      // `name$$$$` as an entry on disk means nothing more than a raw name; keep it hidden.
      return;
    case 'create':
    case 'always':
    case 'cow':
      g[tag.kind] ??= tag.by;
      return;
  }
}

/**
 * Builds a directory's index from its entry names ('.' and '..' are ignored). `lean`: when no
 * name is tagged, keep no names at all (masters null; see TagIndex): for the server, which
 * resolves only in tagged directories and reads the directory again when a tag appears.
 */
export function buildTagIndex(names: Iterable<string>, lean = false): TagIndex {
  const all = [...names];
  if (lean && !all.some((n) => n.includes('$$') && parseEntryName(n) !== null)) {
    return { tagged: false, groups: new Map(), masters: null, create: null, always: null, cow: null, markers: [] };
  }
  const index: TagIndex = { tagged: false, groups: new Map(), masters: new Set(), create: null, always: null, cow: null, markers: [] };
  // Sorted so that duplicates (IP= and CLIENT= of one address) resolve the same way every time.
  const sorted = all.filter((n) => n !== '.' && n !== '..').sort();
  for (const name of sorted) addName(index, name, name.includes('$$') ? parseEntryName(name) : null);
  for (const g of index.groups.values()) sortPrefixes(g);
  return index;
}

/** One entry name into the index (names come in sorted order; see buildTagIndex). */
function addName(index: TagIndex, name: string, parsed: ReturnType<typeof parseEntryName>): void {
  if (parsed === null) {
    index.masters?.add(name);
    // Names come sorted, so the plain name comes before its tagged ones: a group made later by
    // a tagged name picks the master up from `masters`.
    const g = index.groups.get(name);
    if (g !== undefined && !g.master) {
      g.master = true;
      g.names.unshift(name);
    }
    return;
  }
  index.tagged = true;
  if (parsed.base === '') {
    const k = parsed.tag.kind;
    if (k === 'create' || k === 'always' || k === 'cow') index[k] ??= parsed.tag.by;
    index.markers.push(name);
    return;
  }
  let g = index.groups.get(parsed.base);
  if (g === undefined) index.groups.set(parsed.base, (g = newGroup(index, parsed.base)));
  addVariant(g, name, parsed.tag);
  g.names.push(name);
}

function sortPrefixes(g: BaseGroup): void {
  g.subnets?.sort((a, b) => b.prefix - a.prefix);
  g.hostPrefixes?.sort((a, b) => b.prefix.length - a.prefix.length);
}

/**
 * The index after our own change added (`present`) or removed entry `name`, without reading the
 * directory: a name changes only its base's group (a tagged one rebuilds that group from its
 * names, so duplicates resolve as buildTagIndex has them); a directory marker rebuilds the index
 * from the names it holds. Returns the index to keep (the same object unless a marker changed).
 * `tagged` stays true once set: resolving a directory without tags is correct, only slower.
 * Null when a lean index (no names kept) got a tagged name: read the directory again.
 */
export function updateTagIndex(index: TagIndex, name: string, present: boolean): TagIndex | null {
  if (name === '.' || name === '..') return index;
  const parsed = name.includes('$$') ? parseEntryName(name) : null;
  if (index.masters === null) return parsed === null ? index : null;
  if (parsed !== null && parsed.base !== '') {
    const old = index.groups.get(parsed.base);
    const names = (old?.names ?? []).filter((n) => n !== name && n.includes('$$'));
    if (present) names.push(name);
    index.groups.delete(parsed.base);
    for (const n of names.sort()) addName(index, n, parseEntryName(n));
    const g = index.groups.get(parsed.base);
    if (g !== undefined) sortPrefixes(g);
    return index;
  }
  if (parsed === null) {
    const g = index.groups.get(name);
    if (present) {
      addName(index, name, null);
    } else {
      index.masters.delete(name);
      if (g !== undefined && g.master) {
        g.master = false;
        g.names = g.names.filter((n) => n !== name);
        if (g.names.length === 0) index.groups.delete(name);
      }
    }
    return index;
  }
  const names = new Set([...index.markers, ...index.masters]);
  for (const g of index.groups.values()) for (const n of g.names) names.add(n);
  if (present) names.add(name);
  else names.delete(name);
  return buildTagIndex(names);
}

export interface Resolution {
  rule: Rule;
  /** The existing entry to use, or null (NOENT for a LOOKUP). */
  read: string | null;
  /** What a create-type procedure makes when `read` is null. */
  create: string;
  /** COW: the client's variant that the first change copies the master to. */
  cow: string | null;
}

/** The variant the client resolves to by steps 2–7, with its rule, or null. */
function matchVariant(g: BaseGroup, c: ClientView): { name: string; rule: Rule } | null {
  let n: string | undefined;
  if (g.byIp !== null && (n = g.byIp.get(c.ip)) !== undefined) return { name: n, rule: 'ip' };
  if (c.host !== null && g.byHost !== null && (n = g.byHost.get(c.host)) !== undefined) return { name: n, rule: 'host' };
  if (g.subnets !== null && c.addr !== null) {
    for (const s of g.subnets) if (ipInSubnet(c.addr, s.addr, s.prefix)) return { name: s.name, rule: 'subnet' };
  }
  if (g.hostPrefixes !== null && c.host !== null) {
    for (const p of g.hostPrefixes) if (c.host.startsWith(p.prefix)) return { name: p.name, rule: 'host-prefix' };
  }
  if (g.byUid !== null && (n = g.byUid.get(c.uid)) !== undefined) return { name: n, rule: 'uid' };
  if (g.byGid !== null && (n = g.byGid.get(c.gid)) !== undefined) return { name: n, rule: 'gid' };
  if (g.client !== null) return { name: g.client, rule: 'client' };
  return null;
}

/** Resolves `name` in the directory of `index` for client `c` (cluster-tags.md, steps 1–10). */
export function resolveName(index: TagIndex, name: string, c: ClientView): Resolution {
  const master = masterOf(name);
  if (master !== null) {
    return { rule: 'master-explicit', read: index.masters === null || index.masters.has(master) ? master : null, create: master, cow: null };
  }
  const g = index.groups.get(name);
  // A lean index keeps no plain names: there the name stands for itself, if it exists.
  const hasMaster = index.masters === null || index.masters.has(name);
  if (g !== undefined) {
    const v = matchVariant(g, c);
    if (v !== null) return { rule: v.rule, read: v.name, create: v.name, cow: null };
  }
  const always = g?.always ?? index.always;
  if (always !== null) {
    const target = variantName(name, always, c.ip);
    return { rule: 'always', read: null, create: target, cow: null };
  }
  const cow = g?.cow ?? index.cow;
  if (cow !== null) {
    const target = variantName(name, cow, c.ip);
    return { rule: 'cow', read: hasMaster ? name : null, create: target, cow: target };
  }
  if (hasMaster) return { rule: 'master', read: name, create: name, cow: null };
  const create = g?.create ?? index.create;
  if (create !== null) return { rule: 'create', read: null, create: variantName(name, create, c.ip), cow: null };
  return { rule: 'none', read: null, create: name, cow: null };
}

/** One entry of a client's listing: the base name shown and the raw entry it stands for. */
export interface VisibleEntry {
  base: string;
  entry: string;
  rule: Rule;
}

/**
 * What this client sees of the directory: each base name once, resolved; markers, other
 * clients' variants and bases with nothing for this client are left out. `applies(base)` says
 * whether remapping covers that base (cluster= subtrees); bases it does not cover are listed raw.
 */
export function visibleBases(index: TagIndex, c: ClientView, applies: (base: string) => boolean = () => true): VisibleEntry[] {
  const out: VisibleEntry[] = [];
  for (const g of index.groups.values()) {
    if (!applies(g.base)) {
      for (const n of g.names) out.push({ base: n, entry: n, rule: 'none' });
      continue;
    }
    const r = resolveName(index, g.base, c);
    if (r.read !== null) out.push({ base: g.base, entry: r.read, rule: r.rule });
  }
  // Plain names without variants: the directory's markers alone decide (ALWAYS hides them).
  for (const n of index.masters ?? []) {
    if (index.groups.has(n)) continue;
    if (!applies(n)) {
      out.push({ base: n, entry: n, rule: 'none' });
      continue;
    }
    const r = resolveName(index, n, c);
    if (r.read !== null) out.push({ base: n, entry: r.read, rule: r.rule });
  }
  if (index.markers.length > 0 && !applies('')) for (const n of index.markers) out.push({ base: n, entry: n, rule: 'none' });
  return out;
}
