/**
 * The export table: which directories we serve, to whom, with which options.
 *
 * The file format is exports(5) as admins know it from Linux:
 *
 *     # comment
 *     /srv/root   10.0.0.0/24(rw,no_root_squash) node*.cluster(ro) *(ro)
 *     "/srv/with space"  -async  fd00::/64(rw) \
 *                        10.1.0.0/255.255.0.0
 *
 * - One export per logical line: the path (absolute, an existing directory; double quotes or
 *   octal escapes like `\040` for odd characters), then client specs `pattern(options)`.
 *   A backslash at the end of a line continues it. `#` at the start of a word begins a comment.
 * - `-opts` after the path sets default options for the client specs after it on that line.
 * - A pattern without `(...)` gets the defaults: ro, root_squash, secure, sync.
 * - Patterns: `*`; an IPv4/IPv6 address; a network `10.0.0.0/24`, `fd00::/64`,
 *   `10.0.0.0/255.255.255.0`; a host name, exact or with `*`/`?` wildcards, matched against the
 *   client's host name from a {@link HostNameResolver} (reverse DNS by default). A pattern without
 *   a dot also matches the client's short name (first label). `@netgroup` is not supported.
 * - The first pattern that matches the client, in the order written, decides its options
 *   (exports(5) semantics); no match means the client may not use the export.
 *
 * Differences from Linux, deliberate, each with a clear error instead of a silent surprise:
 * - a path without any client is an error (Linux exports it to the world with a warning);
 * - `/path (rw)` — options with an empty client, the classic typo — is an error;
 * - the same path on two lines is an error (Linux warns and keeps one);
 * - options we do not implement (crossmnt, nohide, sec=krb5, ...) are errors, not ignored.
 *
 * Our options: `cluster` turns per-client remapping on (see docs/cluster-tags.md),
 * `cluster=/etc:/var` limits it to those subtrees of the export (whole path components),
 * `cluster_admin` lets the client see and manage raw tagged names; `no_cluster` and
 * `no_cluster_admin` undo them (useful after `-cluster` line defaults).
 */
import { createHash } from 'node:crypto';
import { promises as dnsPromises } from 'node:dns';
import { promises as fsp, realpathSync, statSync } from 'node:fs';
import net from 'node:net';
import nodePath from 'node:path';

// ---------------------------------------------------------------------------------------------
// Types

/** What one client may do on one export. Objects handed out are frozen and shared. */
export interface ExportOptions {
  ro: boolean;
  rootSquash: boolean;
  allSquash: boolean;
  anonUid: number;
  anonGid: number;
  /** Calls must come from a privileged source port (< 1024). */
  secure: boolean;
  /** Per-client remapping of tagged names. */
  cluster: boolean;
  /** Subtrees (relative to the export root, as path components) where remapping applies; null = everywhere. */
  clusterSubtrees: string[][] | null;
  /** Sees and manages raw tagged names. */
  clusterAdmin: boolean;
}

export type ClientMatcher =
  | { kind: 'any' }
  | { kind: 'ipv4'; net: number; mask: number }
  | { kind: 'ipv6'; net: readonly number[]; mask: readonly number[] }
  | {
      kind: 'host';
      /** Lower-case name without wildcards, or null when `regex` applies. */
      exact: string | null;
      regex: RegExp | null;
      /** The pattern has no dot: it also matches the client's short name. */
      matchShort: boolean;
    };

export interface ClientRule {
  /** The pattern as written (`*`, `10.0.0.0/24`, `node*.cluster`): a "group" in MOUNT EXPORT. */
  readonly pattern: string;
  readonly match: ClientMatcher;
  readonly options: ExportOptions;
  /** `sync` (default) or `async`: whether replies may precede stable storage where NFS allows a choice. */
  readonly sync: boolean;
}

export interface ExportEntry {
  /** Absolute path as written (slashes collapsed, no trailing slash): what clients mount. */
  readonly path: string;
  /** The directory it names, symlinks resolved, at load time. */
  readonly realPath: string;
  /** Stable 32-bit file system id: `fsid=` or a hash of `path`. */
  readonly fsid: number;
  /** Client rules in the order written. */
  readonly rules: readonly ClientRule[];
  /** `file:line` where the export was defined, for messages. */
  readonly source: string;
}

/** A configuration problem the admin must fix; the message names the file and line. */
export class ConfigError extends Error {
  readonly file: string | undefined;
  readonly line: number | undefined;

  constructor(message: string, file?: string, line?: number) {
    super(file === undefined ? message : line === undefined ? `${file}: ${message}` : `${file}:${line}: ${message}`);
    this.name = 'ConfigError';
    this.file = file;
    this.line = line;
  }
}

export const DEFAULT_ANON_ID = 65534;

/** exports(5) defaults: ro, root_squash, secure, sync (sync lives on the rule). */
export const DEFAULT_EXPORT_OPTIONS: ExportOptions = Object.freeze({
  ro: true,
  rootSquash: true,
  allSquash: false,
  anonUid: DEFAULT_ANON_ID,
  anonGid: DEFAULT_ANON_ID,
  secure: true,
  cluster: false,
  clusterSubtrees: null,
  clusterAdmin: false,
});

export function isPrivilegedPort(port: number): boolean {
  return port > 0 && port < 1024;
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** Parses a dotted quad strictly (no leading zeros games, each part 0..255). */
export function parseIPv4(s: string): number | null {
  if (!net.isIPv4(s)) return null;
  const p = s.split('.');
  return ((+p[0] << 24) | (+p[1] << 16) | (+p[2] << 8) | +p[3]) >>> 0;
}

/** Parses an IPv6 address (zone id ignored) into four 32-bit words. */
export function parseIPv6(input: string): number[] | null {
  let s = input;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  if (!net.isIPv6(s)) return null;
  let v4: number | null = null;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) >= 0) {
    v4 = parseIPv4(s.slice(lastColon + 1));
    if (v4 === null) return null;
    s = s.slice(0, lastColon + 1) + '0:0';
  }
  let groups: string[];
  const dbl = s.indexOf('::');
  if (dbl >= 0) {
    const head = dbl > 0 ? s.slice(0, dbl).split(':') : [];
    const tail = dbl + 2 < s.length ? s.slice(dbl + 2).split(':') : [];
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return null;
    groups = [...head, ...new Array<string>(fill).fill('0'), ...tail];
  } else {
    groups = s.split(':');
  }
  if (groups.length !== 8) return null;
  const words: number[] = [];
  for (let i = 0; i < 8; i += 2) words.push(((parseInt(groups[i], 16) << 16) | parseInt(groups[i + 1], 16)) >>> 0);
  if (v4 !== null) words[3] = v4;
  return words;
}

/** A client address, IPv4-mapped IPv6 folded to IPv4. */
type ParsedAddress = { v4: number; v6: null } | { v4: null; v6: number[] };

function isMappedV4(w: readonly number[]): boolean {
  return w[0] === 0 && w[1] === 0 && w[2] === 0xffff;
}

function parseClientAddress(address: string): ParsedAddress | null {
  const v4 = parseIPv4(address);
  if (v4 !== null) return { v4, v6: null };
  const v6 = parseIPv6(address);
  if (v6 === null) return null;
  if (isMappedV4(v6)) return { v4: v6[3], v6: null };
  return { v4: null, v6 };
}

function v4Mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function v6Mask(prefix: number): number[] {
  const m: number[] = [];
  for (let i = 0; i < 4; i++) {
    const bits = Math.max(0, Math.min(32, prefix - 32 * i));
    m.push(v4Mask(bits));
  }
  return m;
}

function matchAddress(m: ClientMatcher, a: ParsedAddress): boolean {
  if (m.kind === 'ipv4') return a.v4 !== null && ((a.v4 & m.mask) >>> 0) === m.net;
  if (m.kind === 'ipv6') {
    const w = a.v6;
    if (w === null) return false;
    return (
      ((w[0] & m.mask[0]) >>> 0) === m.net[0] &&
      ((w[1] & m.mask[1]) >>> 0) === m.net[1] &&
      ((w[2] & m.mask[2]) >>> 0) === m.net[2] &&
      ((w[3] & m.mask[3]) >>> 0) === m.net[3]
    );
  }
  return false;
}

function matchHost(m: ClientMatcher & { kind: 'host' }, name: string): boolean {
  const dot = name.indexOf('.');
  const short = m.matchShort && dot > 0 ? name.slice(0, dot) : null;
  if (m.exact !== null) return name === m.exact || short === m.exact;
  const re = m.regex!;
  return re.test(name) || (short !== null && re.test(short));
}

/** Lower case, no trailing dot: the form host names are compared in. */
export function normalizeHostName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

// ---------------------------------------------------------------------------------------------
// Host names

/** Maps a client address to its host name for host-name patterns. */
export interface HostNameResolver {
  /**
   * The client's host name (any case; compared lower-case without a trailing dot), or null when it
   * has none or the look-up failed. Should not reject; the table treats a rejection as null and
   * gives up waiting after its own timeout.
   */
  reverse(address: string): Promise<string | null>;
  /** The answer if known without waiting: a name, null (known: none), undefined (not known yet). */
  cached?(address: string): string | null | undefined;
}

export interface DnsHostNameResolverOptions {
  /** Longest wait for one look-up (reverse plus forward check), ms. Default 1000. */
  timeoutMs?: number;
  /** How long a found name is kept, ms. Default 5 min. */
  ttlMs?: number;
  /** How long "no name" (failure, timeout) is kept, ms. Default 30 s. */
  negativeTtlMs?: number;
  /** Cache entries at most; the oldest go first. Default 4096. */
  maxEntries?: number;
  /**
   * Accept a PTR name only if it resolves back to the address (as mountd does), so a client that
   * controls its reverse zone cannot claim another host's name. Default true.
   */
  verifyForward?: boolean;
  /** Injected for tests; default: a c-ares resolver (never the libuv thread pool). */
  reverseFn?: (address: string) => Promise<string[]>;
  forwardFn?: (name: string) => Promise<string[]>;
  now?: () => number;
}

interface CachedName {
  name: string | null;
  expires: number;
}

/**
 * Reverse DNS with a cache, a short timeout, coalesced concurrent look-ups and forward
 * confirmation. Uses c-ares (dns.promises.Resolver), not getaddrinfo, so a dead DNS server never
 * occupies the thread pool that file system calls need. Loopback addresses are `localhost`
 * without asking anyone.
 */
export class DnsHostNameResolver implements HostNameResolver {
  private readonly timeoutMs: number;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly verifyForward: boolean;
  private readonly reverseFn: (address: string) => Promise<string[]>;
  private readonly forwardFn: (name: string) => Promise<string[]>;
  private readonly now: () => number;
  private readonly cache = new Map<string, CachedName>();
  private readonly inflight = new Map<string, Promise<string | null>>();

  constructor(opts: DnsHostNameResolverOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.ttlMs = opts.ttlMs ?? 300_000;
    this.negativeTtlMs = opts.negativeTtlMs ?? 30_000;
    this.maxEntries = opts.maxEntries ?? 4096;
    this.verifyForward = opts.verifyForward ?? true;
    this.now = opts.now ?? Date.now;
    let resolver: InstanceType<typeof dnsPromises.Resolver> | null = null;
    const getResolver = () => (resolver ??= new dnsPromises.Resolver({ timeout: this.timeoutMs, tries: 1 }));
    this.reverseFn = opts.reverseFn ?? ((a) => getResolver().reverse(a));
    this.forwardFn =
      opts.forwardFn ??
      (async (name) => {
        const r = getResolver();
        const [a, aaaa] = await Promise.allSettled([r.resolve4(name), r.resolve6(name)]);
        return [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])];
      });
  }

  cached(address: string): string | null | undefined {
    if (isLoopback(address)) return 'localhost';
    const c = this.cache.get(address);
    if (c === undefined) return undefined;
    if (c.expires <= this.now()) {
      this.cache.delete(address);
      return undefined;
    }
    return c.name;
  }

  reverse(address: string): Promise<string | null> {
    const known = this.cached(address);
    if (known !== undefined) return Promise.resolve(known);
    const pending = this.inflight.get(address);
    if (pending !== undefined) return pending;
    const lookup = this.lookup(address).then(
      (name) => {
        this.store(address, name);
        return name;
      },
      () => {
        this.store(address, null);
        return null;
      },
    );
    const timed = new Promise<string | null>((resolve) => {
      const timer = setTimeout(() => {
        // Remember the miss for a while so the next calls do not wait again; a late answer of
        // the look-up still lands in the cache when it arrives.
        if (!this.cache.has(address)) this.store(address, null);
        resolve(null);
      }, this.timeoutMs);
      timer.unref();
      lookup.then((name) => {
        clearTimeout(timer);
        resolve(name);
      });
    });
    this.inflight.set(address, timed);
    lookup.then(() => this.inflight.delete(address));
    timed.then(() => this.inflight.delete(address));
    return timed;
  }

  private async lookup(address: string): Promise<string | null> {
    const names = await this.reverseFn(address);
    const parsed = parseClientAddress(address);
    for (const raw of names.slice(0, 4)) {
      const name = normalizeHostName(raw);
      if (name === '') continue;
      if (!this.verifyForward) return name;
      const addrs = await this.forwardFn(name).catch(() => [] as string[]);
      if (parsed !== null && addrs.some((a) => sameAddress(parseClientAddress(a), parsed))) return name;
    }
    return null;
  }

  private store(address: string, name: string | null): void {
    if (this.cache.size >= this.maxEntries && !this.cache.has(address)) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.delete(address);
    this.cache.set(address, { name, expires: this.now() + (name === null ? this.negativeTtlMs : this.ttlMs) });
  }
}

function sameAddress(a: ParsedAddress | null, b: ParsedAddress): boolean {
  if (a === null) return false;
  if (a.v4 !== null || b.v4 !== null) return a.v4 === b.v4;
  return a.v6!.every((w, i) => w === b.v6![i]);
}

function isLoopback(address: string): boolean {
  const a = parseClientAddress(address);
  if (a === null) return false;
  if (a.v4 !== null) return a.v4 >>> 24 === 127;
  return a.v6![0] === 0 && a.v6![1] === 0 && a.v6![2] === 0 && a.v6![3] === 1;
}

// ---------------------------------------------------------------------------------------------
// Parsing

interface Token {
  text: string;
  line: number;
  /** Some part was quoted or escaped: never an option list, never a comment. */
  literal: boolean;
}

interface Logical {
  tokens: Token[];
  line: number;
}

/** Splits the file into logical lines of tokens: quotes, escapes, comments, continuations. */
function tokenize(text: string, file: string): Logical[] {
  const out: Logical[] = [];
  let tokens: Token[] = [];
  let bytes: number[] | null = null;
  let literal = false;
  let tokLine = 0;
  let startLine = 1;
  let line = 1;
  let quote = false;
  let quoteLine = 0;
  const endToken = () => {
    if (bytes !== null) {
      tokens.push({ text: Buffer.from(bytes).toString('utf8'), line: tokLine, literal });
      bytes = null;
      literal = false;
    }
  };
  const endLine = () => {
    endToken();
    if (tokens.length > 0) out.push({ tokens, line: startLine });
    tokens = [];
  };
  const push = (c: string) => {
    if (bytes === null) {
      bytes = [];
      tokLine = line;
    }
    for (const b of Buffer.from(c, 'utf8')) bytes.push(b);
  };
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text[i];
    if (quote) {
      if (c === '"') {
        quote = false;
        i++;
      } else if (c === '\n') {
        throw new ConfigError('unterminated quote', file, quoteLine);
      } else {
        push(c);
        i++;
      }
      continue;
    }
    if (c === '\n') {
      endLine();
      line++;
      startLine = line;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      endToken();
      i++;
      continue;
    }
    if (c === '#' && bytes === null) {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (c === '"') {
      if (bytes === null) {
        bytes = [];
        tokLine = line;
      }
      literal = true;
      quote = true;
      quoteLine = line;
      i++;
      continue;
    }
    if (c === '\\') {
      // Continuation: a backslash followed only by blanks up to the end of the line.
      let j = i + 1;
      while (j < n && (text[j] === ' ' || text[j] === '\t' || text[j] === '\r')) j++;
      if (j >= n || text[j] === '\n') {
        endToken();
        line++;
        i = j + 1;
        continue;
      }
      const oct = /^[0-3][0-7]{2}/.exec(text.slice(i + 1, i + 4));
      if (bytes === null) {
        bytes = [];
        tokLine = line;
      }
      literal = true;
      if (oct !== null) {
        (bytes as number[]).push(parseInt(oct[0], 8));
        i += 4;
      } else {
        push(text[i + 1]);
        i += 2;
      }
      continue;
    }
    push(c);
    i++;
  }
  if (quote) throw new ConfigError('unterminated quote', file, quoteLine);
  endLine();
  return out;
}

/** Options as parsed, before splitting into the shared parts of a rule. */
interface OptionState extends ExportOptions {
  sync: boolean;
  fsid: number | null;
}

const FLAG_OPTIONS: Record<string, (s: OptionState) => void> = {
  ro: (s) => void (s.ro = true),
  rw: (s) => void (s.ro = false),
  root_squash: (s) => void (s.rootSquash = true),
  no_root_squash: (s) => void (s.rootSquash = false),
  all_squash: (s) => void (s.allSquash = true),
  no_all_squash: (s) => void (s.allSquash = false),
  secure: (s) => void (s.secure = true),
  insecure: (s) => void (s.secure = false),
  sync: (s) => void (s.sync = true),
  async: (s) => void (s.sync = false),
  // Accepted for compatibility; our handles never depend on the path, so there is nothing to check.
  subtree_check: () => {},
  no_subtree_check: () => {},
  // Write gathering: meaningless for us, accepted because exports files commonly carry it.
  wdelay: () => {},
  no_wdelay: () => {},
  cluster: (s) => {
    s.cluster = true;
    s.clusterSubtrees = null;
  },
  no_cluster: (s) => {
    s.cluster = false;
    s.clusterSubtrees = null;
  },
  cluster_admin: (s) => void (s.clusterAdmin = true),
  no_cluster_admin: (s) => void (s.clusterAdmin = false),
};

const VALUE_OPTIONS = new Set(['anonuid', 'anongid', 'fsid', 'cluster', 'sec']);

/** Linux options we knowingly do not implement: say so rather than "unknown". */
const UNSUPPORTED_OPTIONS = new Set([
  'crossmnt',
  'nohide',
  'hide',
  'mp',
  'mountpoint',
  'refer',
  'replicas',
  'pnfs',
  'no_pnfs',
  'security_label',
  'no_acl',
  'acl',
  'insecure_locks',
  'secure_locks',
  'no_auth_nlm',
  'auth_nlm',
  'root',
  'uuid',
]);

function parseU32(value: string, what: string, file: string, line: number): number {
  if (!/^\d{1,10}$/.test(value) || Number(value) > 0xffffffff) {
    throw new ConfigError(`${what}=${value}: expected a number from 0 to 4294967295`, file, line);
  }
  return Number(value);
}

function parseSubtrees(value: string, file: string, line: number): string[][] | null {
  if (value === '') throw new ConfigError('cluster= needs a list of subtrees, e.g. cluster=/etc:/var', file, line);
  const out: string[][] = [];
  for (const p of value.split(':')) {
    if (!p.startsWith('/')) {
      throw new ConfigError(`cluster=${value}: subtree '${p}' must start with '/' (it is relative to the export root)`, file, line);
    }
    const parts = p.split('/').filter((x) => x !== '');
    if (parts.some((x) => x === '.' || x === '..')) {
      throw new ConfigError(`cluster=${value}: subtree '${p}' must not contain '.' or '..'`, file, line);
    }
    if (parts.length === 0) return null; // '/': the whole export
    if (!out.some((o) => o.length === parts.length && o.every((x, i) => x === parts[i]))) out.push(parts);
  }
  for (const o of out) Object.freeze(o);
  return Object.freeze(out) as string[][];
}

function applyOptions(base: OptionState, list: string, file: string, line: number): OptionState {
  const s: OptionState = { ...base };
  for (const rawItem of list.split(',')) {
    const item = rawItem.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? null : item.slice(eq + 1);
    if (value === null) {
      const flag = FLAG_OPTIONS[key];
      if (flag !== undefined && Object.hasOwn(FLAG_OPTIONS, key)) {
        flag(s);
        continue;
      }
      if (VALUE_OPTIONS.has(key)) throw new ConfigError(`option '${key}' needs a value (${key}=...)`, file, line);
    } else {
      switch (key) {
        case 'anonuid':
          s.anonUid = parseU32(value, key, file, line);
          continue;
        case 'anongid':
          s.anonGid = parseU32(value, key, file, line);
          continue;
        case 'fsid':
          s.fsid = parseU32(value, key, file, line);
          continue;
        case 'cluster':
          s.cluster = true;
          s.clusterSubtrees = parseSubtrees(value, file, line);
          continue;
        case 'sec':
          if (value.split(':').every((f) => f === 'sys')) continue;
          throw new ConfigError(`sec=${value}: only sec=sys (AUTH_SYS) is supported`, file, line);
      }
      if (Object.hasOwn(FLAG_OPTIONS, key)) throw new ConfigError(`option '${key}' takes no value`, file, line);
    }
    if (UNSUPPORTED_OPTIONS.has(key)) throw new ConfigError(`option '${key}' is not supported by clusternfs`, file, line);
    throw new ConfigError(`unknown option '${item}'`, file, line);
  }
  return s;
}

const HOST_CHARS = /^[A-Za-z0-9_.*?-]+$/;

function globToRegExp(glob: string): RegExp {
  let src = '^';
  for (const c of glob) {
    if (c === '*') src += '.*';
    else if (c === '?') src += '.';
    else src += c.replace(/[.\\^$|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(src + '$', 'i');
}

/** Parses a client pattern (without options). Throws ConfigError. */
export function parseClientPattern(pattern: string, file = '<pattern>', line?: number): ClientMatcher {
  if (pattern === '*') return { kind: 'any' };
  if (pattern.startsWith('@')) {
    throw new ConfigError(`netgroups are not supported ('${pattern}'); list the hosts or networks instead`, file, line);
  }
  const slash = pattern.indexOf('/');
  const addrPart = slash < 0 ? pattern : pattern.slice(0, slash);
  const maskPart = slash < 0 ? null : pattern.slice(slash + 1);
  const v4 = parseIPv4(addrPart);
  if (v4 !== null) {
    let prefix = 32;
    let mask = 0xffffffff;
    if (maskPart !== null) {
      if (/^\d{1,2}$/.test(maskPart) && Number(maskPart) <= 32) {
        prefix = Number(maskPart);
        mask = v4Mask(prefix);
      } else {
        const m = parseIPv4(maskPart);
        if (m === null) throw new ConfigError(`'${pattern}': prefix length must be 0-32 or a netmask like 255.255.255.0`, file, line);
        const inv = ~m >>> 0;
        if ((inv & (inv + 1)) !== 0) throw new ConfigError(`'${pattern}': netmask ${maskPart} is not contiguous`, file, line);
        mask = m;
      }
    }
    return { kind: 'ipv4', net: (v4 & mask) >>> 0, mask };
  }
  const v6 = parseIPv6(addrPart);
  if (v6 !== null) {
    if (addrPart.includes('%')) throw new ConfigError(`'${pattern}': zone ids are not allowed in patterns`, file, line);
    let prefix = 128;
    if (maskPart !== null) {
      if (!/^\d{1,3}$/.test(maskPart) || Number(maskPart) > 128) {
        throw new ConfigError(`'${pattern}': IPv6 prefix length must be 0-128`, file, line);
      }
      prefix = Number(maskPart);
    }
    if (isMappedV4(v6) && prefix >= 96) {
      // ::ffff:10.0.0.0/104 is 10.0.0.0/8: clients arrive folded to IPv4.
      const mask = v4Mask(prefix - 96);
      return { kind: 'ipv4', net: (v6[3] & mask) >>> 0, mask };
    }
    const mask = v6Mask(prefix);
    return { kind: 'ipv6', net: v6.map((w, i) => (w & mask[i]) >>> 0), mask };
  }
  if (slash >= 0 || /^[\d.]+$/.test(pattern) || pattern.includes(':')) {
    throw new ConfigError(`'${pattern}' is not a valid address or network`, file, line);
  }
  if (!HOST_CHARS.test(pattern)) {
    throw new ConfigError(`'${pattern}' is not a valid host name pattern (letters, digits, '.', '-', '_', '*', '?')`, file, line);
  }
  const name = normalizeHostName(pattern);
  const wild = /[*?]/.test(name);
  return {
    kind: 'host',
    exact: wild ? null : name,
    regex: wild ? globToRegExp(name) : null,
    matchShort: !name.includes('.'),
  };
}

/** Absolute, slashes collapsed, no trailing slash, no `.`/`..`; null if not absolute. */
function normalizeExportPath(p: string): string | null {
  if (!p.startsWith('/')) return null;
  const parts = p.split('/').filter((x) => x !== '');
  return '/' + parts.join('/');
}

/** A stable 32-bit id from the export path (the same across restarts and machines). */
export function fsidForPath(path: string): number {
  return createHash('sha256').update(path, 'utf8').digest().readUInt32BE(0);
}

function checkDirectory(path: string, file: string, line: number | undefined): string {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not accessible (permission denied)' : `cannot be read (${code ?? String(err)})`;
    throw new ConfigError(`export path ${path} ${why}`, file, line);
  }
  if (!st.isDirectory()) throw new ConfigError(`export path ${path} is not a directory`, file, line);
  return realpathSync(path);
}

function freezeRule(pattern: string, match: ClientMatcher, s: OptionState): ClientRule {
  const options: ExportOptions = Object.freeze({
    ro: s.ro,
    rootSquash: s.rootSquash,
    allSquash: s.allSquash,
    anonUid: s.anonUid,
    anonGid: s.anonGid,
    secure: s.secure,
    cluster: s.cluster,
    clusterSubtrees: s.cluster ? s.clusterSubtrees : null,
    clusterAdmin: s.clusterAdmin,
  });
  return Object.freeze({ pattern, match: Object.freeze(match), options, sync: s.sync });
}

export interface ParseOptions {
  /** Check that each path exists and is a directory (default true). */
  checkDirectories?: boolean;
}

/** Parses an exports(5)-style text. Throws ConfigError naming `fileName` and the line. */
export function parseExports(text: string, fileName: string, opts: ParseOptions = {}): ExportEntry[] {
  const check = opts.checkDirectories ?? true;
  const entries: ExportEntry[] = [];
  const byPath = new Map<string, ExportEntry>();
  const byFsid = new Map<number, { entry: ExportEntry; explicit: boolean }>();
  for (const logical of tokenize(text, fileName)) {
    const [pathTok, ...rest] = logical.tokens;
    const line = pathTok.line;
    const path = normalizeExportPath(pathTok.text);
    if (path === null) throw new ConfigError(`export path '${pathTok.text}' must be absolute`, fileName, line);
    if (pathTok.text.split('/').some((x) => x === '.' || x === '..')) {
      throw new ConfigError(`export path '${pathTok.text}' must not contain '.' or '..'`, fileName, line);
    }
    const first = byPath.get(path);
    if (first !== undefined) throw new ConfigError(`${path} is already exported at ${first.source}; list all its clients on one line`, fileName, line);

    let defaults: OptionState = { ...DEFAULT_EXPORT_OPTIONS, sync: true, fsid: null };
    const rules: ClientRule[] = [];
    let fsid: number | null = null;
    for (const tok of rest) {
      const t = tok.text;
      if (t.startsWith('-') && !tok.literal) {
        defaults = applyOptions(defaults, t.slice(1), fileName, tok.line);
        continue;
      }
      const open = t.indexOf('(');
      let pattern = t;
      let state = defaults;
      if (open >= 0) {
        if (!t.endsWith(')') || t.indexOf(')') !== t.length - 1 || t.indexOf('(', open + 1) >= 0) {
          throw new ConfigError(`'${t}': expected client(options) with one pair of parentheses and no spaces inside`, fileName, tok.line);
        }
        pattern = t.slice(0, open);
        if (pattern === '') {
          throw new ConfigError(
            `'${t}': options without a client; write '*${t}' for everyone, or remove the space between the client and '('`,
            fileName,
            tok.line,
          );
        }
        state = applyOptions(defaults, t.slice(open + 1, -1), fileName, tok.line);
      } else if (t.includes(')')) {
        throw new ConfigError(`'${t}': unbalanced ')'`, fileName, tok.line);
      }
      const match = parseClientPattern(pattern, fileName, tok.line);
      if (state.fsid !== null) {
        if (fsid !== null && fsid !== state.fsid) {
          throw new ConfigError(`conflicting fsid=${state.fsid} and fsid=${fsid} for ${path}`, fileName, tok.line);
        }
        fsid = state.fsid;
      }
      rules.push(freezeRule(pattern, match, state));
    }
    if (rules.length === 0) {
      throw new ConfigError(`${path} has no clients; add e.g. '10.0.0.0/24(rw)' or '*(ro)'`, fileName, line);
    }
    const realPath = check ? checkDirectory(path, fileName, line) : path;
    const explicit = fsid !== null;
    const id = fsid ?? fsidForPath(path);
    const entry: ExportEntry = Object.freeze({
      path,
      realPath,
      fsid: id,
      rules: Object.freeze(rules),
      source: `${fileName}:${line}`,
    });
    const clash = byFsid.get(id);
    if (clash !== undefined) {
      const hint = explicit ? '' : `; set a distinct fsid= on one of them`;
      throw new ConfigError(`fsid ${id} of ${path} is already used by ${clash.entry.path} (${clash.entry.source})${hint}`, fileName, line);
    }
    byFsid.set(id, { entry, explicit });
    byPath.set(path, entry);
    entries.push(entry);
  }
  return entries;
}

/** Reads and parses an exports file. Throws ConfigError (also for an unreadable file). */
export async function loadExportsFile(path: string, opts: ParseOptions = {}): Promise<ExportEntry[]> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read exports file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, path);
  }
  return parseExports(text, path, opts);
}

/**
 * Quick mode: `dir` under its absolute path to loopback clients, rw,no_root_squash,insecure,cluster
 * (`ro` for the JIT warm-up's private export, built the same way so that its objects have the
 * same shapes; it borrows a served export's fsid, so that even that number has the same kind).
 */
export function quickExport(dir: string, readOnly = false, fsid = fsidForPath(nodePath.resolve(dir))): ExportEntry {
  const abs = nodePath.resolve(dir);
  const realPath = checkDirectory(abs, 'command line', undefined);
  const state: OptionState = {
    ...DEFAULT_EXPORT_OPTIONS,
    ro: readOnly,
    rootSquash: false,
    secure: false,
    cluster: true,
    sync: true,
    fsid: null,
  };
  const rules = ['127.0.0.0/8', '::1'].map((p) => freezeRule(p, parseClientPattern(p), state));
  return Object.freeze({ path: abs, realPath, fsid, rules: Object.freeze(rules), source: 'command line' });
}

// ---------------------------------------------------------------------------------------------
// The table

export interface ExportTableOptions {
  resolver?: HostNameResolver;
  /** Longest wait for a host name when a host pattern must be checked, ms (default 1500). */
  hostLookupTimeoutMs?: number;
}

const MEMO_LIMIT = 4096;

/**
 * Looks up exports by path and decides what a client may do. Decisions that need no host name
 * are memoized per export and address, so the per-call check is two Map look-ups.
 */
export class ExportTable {
  readonly entries: readonly ExportEntry[];
  private readonly byPath = new Map<string, ExportEntry>();
  private readonly byFsidMap = new Map<number, ExportEntry>();
  private readonly memo = new Map<ExportEntry, Map<string, ExportOptions | null>>();
  private readonly resolver: HostNameResolver;
  private readonly hostLookupTimeoutMs: number;

  constructor(entries: readonly ExportEntry[], opts: ExportTableOptions = {}) {
    this.entries = Object.freeze([...entries]);
    for (const e of entries) {
      this.byPath.set(e.path, e);
      this.byFsidMap.set(e.fsid, e);
      this.memo.set(e, new Map());
    }
    this.resolver = opts.resolver ?? new DnsHostNameResolver();
    this.hostLookupTimeoutMs = opts.hostLookupTimeoutMs ?? 1500;
  }

  /** The export named exactly `path` (trailing slashes and doubled slashes tolerated). */
  find(path: string): ExportEntry | undefined {
    const hit = this.byPath.get(path);
    if (hit !== undefined) return hit;
    const norm = normalizeExportPath(path);
    return norm === null ? undefined : this.byPath.get(norm);
  }

  /**
   * The export that contains `path`, with the components below its root: MNT of a subdirectory
   * of an export is allowed, as Linux's mountd allows it (libnfs tools mount a file's directory).
   * The longest export path wins. '..' never climbs out: a path containing it is not contained.
   */
  findContaining(path: string): { entry: ExportEntry; below: string[] } | undefined {
    const norm = normalizeExportPath(path);
    if (norm === null) return undefined;
    const parts = norm.split('/').filter((x) => x !== '' && x !== '.');
    if (parts.includes('..')) return undefined;
    for (let n = parts.length; n >= 0; n--) {
      const entry = this.byPath.get('/' + parts.slice(0, n).join('/'));
      if (entry !== undefined) return { entry, below: parts.slice(n) };
    }
    return undefined;
  }

  byFsid(fsid: number): ExportEntry | undefined {
    return this.byFsidMap.get(fsid);
  }

  /**
   * The options for a client at `address`, or null if no pattern admits it. Synchronous: returns
   * undefined when the answer depends on a host name the resolver does not know yet; then call
   * {@link clientOptions}.
   */
  clientOptionsSync(entry: ExportEntry, address: string): ExportOptions | null | undefined {
    const memo = this.memo.get(entry);
    const m = memo?.get(address);
    if (m !== undefined) return m;
    const parsed = parseClientAddress(address);
    let usedName = false;
    let name: string | null | undefined;
    for (const rule of entry.rules) {
      const k = rule.match.kind;
      if (k === 'any') return this.remember(memo, address, rule.options, usedName);
      if (k === 'host') {
        if (name === undefined) {
          name = this.resolver.cached?.(address);
          if (name === undefined) return undefined;
          if (name !== null) name = normalizeHostName(name);
        }
        usedName = true;
        if (name !== null && matchHost(rule.match, name)) return rule.options;
      } else if (parsed !== null && matchAddress(rule.match, parsed)) {
        return this.remember(memo, address, rule.options, usedName);
      }
    }
    return this.remember(memo, address, null, usedName);
  }

  /**
   * The NFS program's check on every call (src/nfs/program.ts Authorizer): the options of the
   * export with this fsid for this client, synchronously whenever the answer is known.
   */
  authorize(exp: { fsid: number }, address: string): ExportOptions | null | Promise<ExportOptions | null> {
    const entry = this.byFsidMap.get(exp.fsid);
    if (entry === undefined) return null;
    const quick = this.clientOptionsSync(entry, address);
    return quick !== undefined ? quick : this.clientOptions(entry, address);
  }

  /** The options for a client at `address`, or null if not allowed; first matching pattern wins. */
  async clientOptions(entry: ExportEntry, address: string): Promise<ExportOptions | null> {
    const quick = this.clientOptionsSync(entry, address);
    if (quick !== undefined) return quick;
    const parsed = parseClientAddress(address);
    let name: string | null | undefined;
    for (const rule of entry.rules) {
      if (rule.match.kind === 'any') return rule.options;
      if (rule.match.kind === 'host') {
        if (name === undefined) name = await this.hostName(address);
        if (name !== null && matchHost(rule.match, name)) return rule.options;
      } else if (parsed !== null && matchAddress(rule.match, parsed)) {
        return rule.options;
      }
    }
    return null;
  }

  /** The client's host name, normalized, or null; never waits longer than the lookup timeout. */
  async hostName(address: string): Promise<string | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), this.hostLookupTimeoutMs);
      timer.unref();
    });
    try {
      const lookup = Promise.resolve()
        .then(() => this.resolver.reverse(address))
        .catch(() => null);
      const name = await Promise.race([lookup, timeout]);
      return name === null || name === '' ? null : normalizeHostName(name);
    } finally {
      clearTimeout(timer);
    }
  }

  private remember(
    memo: Map<string, ExportOptions | null> | undefined,
    address: string,
    result: ExportOptions | null,
    usedName: boolean,
  ): ExportOptions | null {
    // A decision that looked at a host name may change when the name's cache entry expires.
    if (memo !== undefined && !usedName) {
      if (memo.size >= MEMO_LIMIT) memo.clear();
      memo.set(address, result);
    }
    return result;
  }
}
