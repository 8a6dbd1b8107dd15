/**
 * The tag grammar of per-client entries (docs: docs/cluster-tags.md, "Tags").
 *
 * An entry name is parsed once, when a directory's tag index is built, into typed values:
 *
 *   parseEntryName('hostname$$IP=10.0.0.7$$')  → { base: 'hostname', tag: { kind: 'ip', ... } }
 *   parseEntryName('$$CREATE=IP$$')            → { base: '', tag: { kind: 'create', by: 'ip' } }   (a marker)
 *   parseEntryName('hostname')                 → null                                               (plain)
 *
 * API
 * - `parseEntryName(name)`: a `TaggedName` (base + `Tag`) or null for a plain name. A name is a
 *   marker when its base is '' (`isMarker`). Names whose `$$...$$` suffix is not a known tag are
 *   plain names (served as they are).
 * - `parseTag(text)`: the `Tag` of the text between the `$$`s, or null.
 * - `hasTag(name)`: the name carries a tag (also `name$$$$`): ordinary clients may not create,
 *   rename to, or look up such raw names.
 * - `masterOf(name)`: for `name$$$$` the master's name, else null (resolution rule 1).
 * - `variantName(base, by, ip)`: the variant a CREATE/ALWAYS/COW rule makes for a client,
 *   `base$$IP=<ip>$$` or `base$$CLIENT$$`; `formatTag(tag)` spells any tag back.
 * - `normalizeIp(address)`: the form client addresses are compared and written in (IPv4 dotted,
 *   IPv4-mapped IPv6 folded to IPv4, IPv6 in canonical compressed lower case), or null.
 * - `ipInSubnet`, `parseAddress`: numeric address comparison for subnet tags.
 *
 * Names are byte strings (latin1, as the store passes them); tags are ASCII, so non-UTF-8 base
 * names survive untouched. Tag keywords are upper case as ClusterNFS writes them; host names are
 * compared in lower case.
 */
import net from 'node:net';
import { parseIPv4, parseIPv6 } from '../mount/exports.js';

/** A parsed address: IPv4 as one 32-bit word, IPv6 as four. */
export type Address = { v4: number; v6: null } | { v4: null; v6: readonly number[] };

/** Who a CREATE/ALWAYS/COW rule makes the variant for. */
export type VariantBy = 'ip' | 'client';

export type Tag =
  /** `IP=addr`, `CLIENT=addr` (prefix = full length) or `IP=addr_n` (a subnet). */
  | { kind: 'ip'; addr: Address; prefix: number; exact: boolean }
  /** `HOST=name`: the client's short host name, exactly. */
  | { kind: 'host'; name: string }
  /** `HOST=prefix*`: host names starting with prefix. */
  | { kind: 'hostPrefix'; prefix: string }
  | { kind: 'uid'; id: number }
  | { kind: 'gid'; id: number }
  /** `CLIENT`: any client. */
  | { kind: 'client' }
  /** `$$$$`: the master itself. */
  | { kind: 'master' }
  | { kind: 'create'; by: VariantBy }
  | { kind: 'always'; by: VariantBy }
  | { kind: 'cow'; by: VariantBy };

export type TagKind = Tag['kind'];

export interface TaggedName {
  /** The name without its tag; '' for a marker. */
  base: string;
  tag: Tag;
}

const DELIM = '$$';

export function parseAddress(s: string): Address | null {
  const v4 = parseIPv4(s);
  if (v4 !== null) return { v4, v6: null };
  const v6 = parseIPv6(s);
  if (v6 === null) return null;
  if (v6[0] === 0 && v6[1] === 0 && v6[2] === 0xffff) return { v4: v6[3], v6: null };
  return { v4: null, v6 };
}

function maskWord(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

/** The address with every bit after `prefix` cleared. */
function networkOf(a: Address, prefix: number): Address {
  if (a.v4 !== null) return { v4: (a.v4 & maskWord(prefix)) >>> 0, v6: null };
  return { v4: null, v6: a.v6.map((w, i) => (w & maskWord(prefix - 32 * i)) >>> 0) };
}

/** Does `a` lie in network `net`/`prefix`? Compared as numbers, never as strings. */
export function ipInSubnet(a: Address, netAddr: Address, prefix: number): boolean {
  if (a.v4 !== null) return netAddr.v4 !== null && ((a.v4 & maskWord(prefix)) >>> 0) === netAddr.v4;
  if (netAddr.v6 === null) return false;
  for (let i = 0; i < 4; i++) if (((a.v6[i] & maskWord(prefix - 32 * i)) >>> 0) !== netAddr.v6[i]) return false;
  return true;
}

/** The canonical spelling: dotted IPv4, RFC 5952 IPv6. */
export function formatAddress(a: Address): string {
  if (a.v4 !== null) return `${a.v4 >>> 24}.${(a.v4 >>> 16) & 255}.${(a.v4 >>> 8) & 255}.${a.v4 & 255}`;
  const groups: number[] = [];
  for (const w of a.v6) groups.push(w >>> 16, w & 0xffff);
  // RFC 5952: the longest run (at least two) of zero groups becomes '::'.
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(':');
  if (bestAt < 0) return hex(groups);
  return `${hex(groups.slice(0, bestAt))}::${hex(groups.slice(bestAt + bestLen))}`;
}

/** The canonical spelling of a client address (what variant names are written with), or null. */
export function normalizeIp(address: string): string | null {
  const a = parseAddress(address);
  return a === null ? null : formatAddress(a);
}

/** Lower case, no trailing dot, first label only: the short host name HOST tags name. */
export function shortHostName(name: string): string {
  let n = name.toLowerCase();
  if (n.endsWith('.')) n = n.slice(0, -1);
  const dot = n.indexOf('.');
  return dot > 0 ? n.slice(0, dot) : n;
}

function parseVariantBy(v: string): VariantBy | null {
  return v === 'IP' ? 'ip' : v === 'CLIENT' ? 'client' : null;
}

function parseIpTag(v: string): Tag | null {
  const us = v.lastIndexOf('_');
  const addrText = us < 0 ? v : v.slice(0, us);
  // Zone ids and other decorations make no sense in a file name.
  if (addrText.includes('%') || !net.isIP(addrText)) return null;
  const addr = parseAddress(addrText);
  if (addr === null) return null;
  const full = addr.v4 !== null ? 32 : 128;
  if (us < 0) return { kind: 'ip', addr, prefix: full, exact: true };
  const p = v.slice(us + 1);
  if (!/^\d{1,3}$/.test(p)) return null;
  const prefix = Number(p);
  if (prefix > full) return null;
  return { kind: 'ip', addr: networkOf(addr, prefix), prefix, exact: prefix === full };
}

function parseId(v: string): number | null {
  if (!/^\d{1,10}$/.test(v)) return null;
  const n = Number(v);
  return n <= 0xffffffff ? n : null;
}

/** The tag written between the `$$`s (`IP=10.0.0.7`, `CLIENT`, '' for the master), or null. */
export function parseTag(text: string): Tag | null {
  if (text === '') return { kind: 'master' };
  if (text === 'CLIENT') return { kind: 'client' };
  const eq = text.indexOf('=');
  if (eq <= 0) return null;
  const key = text.slice(0, eq);
  const v = text.slice(eq + 1);
  if (v === '') return null;
  switch (key) {
    case 'IP':
    case 'CLIENT':
      return parseIpTag(v);
    case 'HOST': {
      const star = v.indexOf('*');
      if (star < 0) return { kind: 'host', name: shortHostName(v) };
      if (star !== v.length - 1) return null;
      return { kind: 'hostPrefix', prefix: v.slice(0, -1).toLowerCase() };
    }
    case 'UID':
    case 'GID': {
      const id = parseId(v);
      if (id === null) return null;
      return key === 'UID' ? { kind: 'uid', id } : { kind: 'gid', id };
    }
    case 'CREATE':
    case 'ALWAYS':
    case 'COW': {
      const by = parseVariantBy(v);
      if (by === null) return null;
      return { kind: key === 'CREATE' ? 'create' : key === 'ALWAYS' ? 'always' : 'cow', by };
    }
    default:
      return null;
  }
}

/**
 * Splits `base$$TAG$$` into base and tag; null for a plain name (no known tag at its end).
 * A marker (`$$CREATE=IP$$`) has base ''. `$$$$` alone is not a name anything can mean.
 */
export function parseEntryName(name: string): TaggedName | null {
  if (name.length < 4 || !name.endsWith(DELIM)) return null;
  const inner = name.slice(0, -2);
  const open = inner.lastIndexOf(DELIM);
  if (open < 0) return null;
  const tag = parseTag(inner.slice(open + 2));
  if (tag === null) return null;
  const base = inner.slice(0, open);
  if (base === '' && (tag.kind === 'master' || name.length === 4)) return null;
  return { base, tag };
}

/** A marker applies to the whole directory: its name is only a tag. */
export function isMarker(t: TaggedName): boolean {
  return t.base === '';
}

/** Does the name carry a tag (including the `$$$$` master suffix)? */
export function hasTag(name: string): boolean {
  return name.includes(DELIM) && parseEntryName(name) !== null;
}

/** `name$$$$` → `name` (resolution rule 1); null otherwise. */
export function masterOf(name: string): string | null {
  if (name.length > 4 && name.endsWith('$$$$')) return name.slice(0, -4);
  return null;
}

/** The variant a CREATE/ALWAYS/COW rule makes for the client at `ip` (normalized). */
export function variantName(base: string, by: VariantBy, ip: string): string {
  return by === 'client' ? `${base}$$CLIENT$$` : `${base}$$IP=${ip}$$`;
}

/**
 * A scratch name (a copy made before it is moved into place) that no client resolves to, lists,
 * looks up or holds a valid handle of: the entry `x$$$$` is hidden, and rule 1 names the
 * (absent) `x`, never the entry itself. Unlike a UID or other client tag, no credential selects it.
 */
export function scratchName(nonce: string): string {
  return `.clusternfs-${nonce}$$$$`;
}

/** Spells a tag as it appears between the `$$`s. */
export function formatTag(tag: Tag): string {
  switch (tag.kind) {
    case 'ip': {
      const full = tag.addr.v4 !== null ? 32 : 128;
      return tag.prefix === full ? `IP=${formatAddress(tag.addr)}` : `IP=${formatAddress(tag.addr)}_${tag.prefix}`;
    }
    case 'host':
      return `HOST=${tag.name}`;
    case 'hostPrefix':
      return `HOST=${tag.prefix}*`;
    case 'uid':
      return `UID=${tag.id}`;
    case 'gid':
      return `GID=${tag.id}`;
    case 'client':
      return 'CLIENT';
    case 'master':
      return '';
    case 'create':
    case 'always':
    case 'cow':
      return `${tag.kind.toUpperCase()}=${tag.by === 'ip' ? 'IP' : 'CLIENT'}`;
  }
}

/** `base$$TAG$$`. */
export function taggedName(base: string, tag: Tag): string {
  return `${base}$$${formatTag(tag)}$$`;
}
