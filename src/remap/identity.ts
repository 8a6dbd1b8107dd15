/**
 * Client identity for remapping (cluster-tags.md, "Vocabulary"): the call's source address, the
 * client's short host name, and the call's AUTH_SYS uid/gid.
 *
 * The address part is computed once per source address and kept (TCP connections and UDP peers
 * reuse it), so a call costs one Map look-up plus the small per-call view. Host names come from
 * the hosts/leases files named in the config; addresses not listed there ask reverse DNS in the
 * background: until an answer is cached the client simply has no host name (HOST tags do not
 * match). A call never waits for DNS, and a failed or absent name is null, never a crash.
 *
 * API
 * - `new ClientIdentities({ hostsFiles, resolver })`
 * - `view(address, uid, gid)`: the `ClientView` resolution takes.
 * - `parseHostsText(text)`: address → host name pairs from /etc/hosts, dnsmasq leases or ISC
 *   dhcpd.leases text (recognized per line; linear in the text, whatever it holds).
 *
 * A changed file is read again in the background, parsed in slices between which calls go on,
 * and a file over `maxFileBytes` is not read at all: a call never waits for a reload.
 */
import fs from 'node:fs';
import { componentLogger } from '../log/logger.js';
import { DnsHostNameResolver, type HostNameResolver } from '../mount/exports.js';
import type { ClientView } from './resolve.js';
import { formatAddress, normalizeIp, parseAddress, shortHostName, type Address } from './tags.js';

const log = componentLogger('remap');

interface AddressIdentity {
  ip: string;
  addr: Address | null;
  host: string | null;
  /** The host name comes from DNS (not a file): asked again after `dnsRefreshMs`. */
  fromDns: boolean;
  asking: boolean;
  /** When DNS last answered for this address (0: never). */
  answeredAt: number;
}

export interface ClientIdentitiesOptions {
  /** Hosts (/etc/hosts syntax) or DHCP leases (dnsmasq, ISC dhcpd) files; the first listing an address wins. */
  hostsFiles?: readonly string[];
  /** Reverse DNS for addresses the files do not list; null: no DNS at all. Default: cached c-ares look-ups. */
  resolver?: HostNameResolver | null;
  /** How often the files are checked for changes, ms (default 2000). */
  recheckMs?: number;
  /** Addresses remembered at most (default 16384): a client flood cannot grow memory. */
  maxAddresses?: number;
  /** How long a DNS answer (or its absence) is used before asking again, ms (default 5 min). */
  dnsRefreshMs?: number;
  /** A hosts/leases file larger than this is not read (default 32 MiB): a reload stays short. */
  maxFileBytes?: number;
}

/** Lines parsed between two turns of the event loop when a changed file is read again. */
const PARSE_SLICE_LINES = 4096;

/**
 * Address → host name pairs from hosts and leases lines, one line at a time (no regex over the
 * whole text: a file of blank lines must cost linear time). ISC dhcpd `lease <ip> { ... }` blocks
 * may span lines; a later block for an address replaces an earlier one, while for /etc/hosts and
 * dnsmasq lines the first one wins.
 */
class HostsParser {
  readonly pairs = new Map<string, string>();
  /** The address of the dhcpd lease block being read ('' for no address), or null outside one. */
  private lease: string | null = null;
  private leaseName: string | null = null;

  line(raw: string): void {
    const hash = raw.indexOf('#');
    let rest = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    while (rest !== '') {
      if (this.lease !== null) {
        const close = rest.indexOf('}');
        const body = close < 0 ? rest : rest.slice(0, close);
        const at = body.indexOf('client-hostname');
        if (at >= 0) {
          const open = body.indexOf('"', at);
          const end = open < 0 ? -1 : body.indexOf('"', open + 1);
          if (end > open) this.leaseName = body.slice(open + 1, end);
        }
        if (close < 0) return;
        if (this.lease !== '' && this.leaseName !== null && this.leaseName !== '') this.pairs.set(this.lease, shortHostName(this.leaseName));
        this.lease = null;
        rest = rest.slice(close + 1).trim();
        continue;
      }
      const f = rest.split(/[ \t]+/);
      if (f[0] === 'lease' && f.length >= 2 && rest.includes('{')) {
        // `lease 10.0.0.1 {` or `lease 10.0.0.1{`: the address is up to the brace.
        const open = rest.indexOf('{');
        // A block for something that is no address is read past, and gives no pair.
        this.lease = normalizeIp(rest.slice('lease'.length, open).trim()) ?? '';
        this.leaseName = null;
        rest = rest.slice(open + 1).trim();
        continue;
      }
      if (f.length >= 2 && parseAddress(f[0]) !== null) this.put(f[0], f[1]);
      // dnsmasq: expiry mac ip hostname client-id
      else if (f.length >= 4 && /^\d+$/.test(f[0]) && parseAddress(f[2]) !== null) this.put(f[2], f[3]);
      return;
    }
  }

  private put(ip: string, name: string): void {
    const n = normalizeIp(ip);
    if (n !== null && name !== '' && name !== '*' && !this.pairs.has(n)) this.pairs.set(n, shortHostName(name));
  }
}

/** Address → host name pairs from the text of a hosts or leases file (CRLF or LF lines). */
export function parseHostsText(text: string): Map<string, string> {
  const p = new HostsParser();
  for (const line of text.split('\n')) p.line(line);
  return p.pairs;
}

/** parseHostsText() in slices, yielding to the event loop between them: calls go on meanwhile. */
export async function parseHostsTextSliced(text: string): Promise<Map<string, string>> {
  const p = new HostsParser();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (i > 0 && i % PARSE_SLICE_LINES === 0) await new Promise((r) => setImmediate(r));
    p.line(lines[i]);
  }
  return p.pairs;
}

export class ClientIdentities {
  private readonly files: readonly string[];
  private readonly resolver: HostNameResolver | null;
  private readonly recheckMs: number;
  private readonly maxAddresses: number;
  private readonly dnsRefreshMs: number;
  private readonly maxFileBytes: number;
  private readonly byAddress = new Map<string, AddressIdentity>();
  private fileNames = new Map<string, string>();
  private fileStamps = '';
  private lastCheck = 0;
  private checking = false;

  constructor(opts: ClientIdentitiesOptions = {}) {
    this.files = opts.hostsFiles ?? [];
    this.resolver = opts.resolver === undefined ? new DnsHostNameResolver() : opts.resolver;
    this.recheckMs = opts.recheckMs ?? 2000;
    this.maxAddresses = opts.maxAddresses ?? 16384;
    this.dnsRefreshMs = opts.dnsRefreshMs ?? 300_000;
    this.maxFileBytes = opts.maxFileBytes ?? 32 * 1024 * 1024;
    if (this.files.length > 0) this.loadFilesSync();
  }

  /** The identity resolution takes for a call from `address` with AUTH_SYS `uid`/`gid`. */
  view(address: string, uid: number, gid: number): ClientView {
    if (this.files.length > 0) this.maybeRecheck();
    let a = this.byAddress.get(address);
    if (a === undefined) a = this.learn(address);
    else if (a.fromDns && !a.asking && Date.now() - a.answeredAt > this.dnsRefreshMs) this.askDns(address, a);
    return { ip: a.ip, addr: a.addr, host: a.host, uid, gid };
  }

  private learn(address: string): AddressIdentity {
    const addr = parseAddress(address);
    const ip = addr === null ? address : formatAddress(addr);
    const fromFile = this.fileNames.get(ip);
    const a: AddressIdentity = { ip, addr, host: fromFile ?? null, fromDns: fromFile === undefined && this.resolver !== null, asking: false, answeredAt: 0 };
    if (this.byAddress.size >= this.maxAddresses) this.byAddress.clear();
    this.byAddress.set(address, a);
    if (a.fromDns) this.askDns(address, a);
    return a;
  }

  /** Uses a cached DNS answer at once; otherwise asks in the background and never waits. */
  private askDns(address: string, a: AddressIdentity): void {
    const r = this.resolver!;
    const answered = (name: string | null | undefined) => {
      a.host = name === null || name === undefined || name === '' ? null : shortHostName(name);
      a.answeredAt = Date.now();
      a.asking = false;
    };
    let cached: string | null | undefined;
    try {
      cached = r.cached?.(address);
    } catch {
      cached = null;
    }
    if (cached !== undefined) return answered(cached);
    // Until DNS answers this client has no host name; the call goes on without waiting.
    a.asking = true;
    Promise.resolve()
      .then(() => r.reverse(address))
      .then(answered, (err: unknown) => {
        answered(null);
        log.debug({ client: address, err }, 'reverse DNS failed; HOST tags will not match this client');
      });
  }

  private maybeRecheck(): void {
    const now = Date.now();
    if (this.checking || now - this.lastCheck < this.recheckMs) return;
    this.lastCheck = now;
    this.checking = true;
    Promise.all(this.files.map((f) => fs.promises.stat(f).then(fileStamp, () => 'missing')))
      .then(async (stamps) => {
        if (stamps.join('|') !== this.fileStamps) await this.loadFiles();
      })
      .catch((err: unknown) => log.warn({ err }, 'checking hosts files failed'))
      .finally(() => (this.checking = false));
  }

  /** At start: nothing waits yet, so the files are read at once. */
  private loadFilesSync(): void {
    const names = new Map<string, string>();
    const stamps: string[] = [];
    for (const f of this.files) {
      try {
        const st = fs.statSync(f);
        stamps.push(fileStamp(st));
        if (this.fits(f, st)) addFirst(names, parseHostsText(fs.readFileSync(f, 'utf8')));
      } catch (err) {
        stamps.push(unreadable(f, err));
      }
    }
    this.install(names, stamps);
  }

  /** A changed file is read again while the server runs: asynchronously and parsed in slices. */
  private async loadFiles(): Promise<void> {
    const names = new Map<string, string>();
    const stamps: string[] = [];
    for (const f of this.files) {
      try {
        const st = await fs.promises.stat(f);
        stamps.push(fileStamp(st));
        if (this.fits(f, st)) addFirst(names, await parseHostsTextSliced(await fs.promises.readFile(f, 'utf8')));
      } catch (err) {
        stamps.push(unreadable(f, err));
      }
    }
    this.install(names, stamps);
  }

  private fits(file: string, st: fs.Stats): boolean {
    if (st.size <= this.maxFileBytes) return true;
    log.warn({ file, bytes: st.size, limit: this.maxFileBytes }, 'hosts file too large; its clients have no host name from it');
    return false;
  }

  private install(names: Map<string, string>, stamps: string[]): void {
    this.fileNames = names;
    this.fileStamps = stamps.join('|');
    // Addresses already seen learn their (new) names on their next call.
    this.byAddress.clear();
  }
}

function fileStamp(st: fs.Stats): string {
  return `${st.mtimeMs}:${st.size}`;
}

function unreadable(file: string, err: unknown): string {
  log.warn({ file, err: (err as Error).message }, 'hosts file not readable; its clients have no host name from it');
  return 'missing';
}

/** The first file listing an address wins. */
function addFirst(into: Map<string, string>, from: Map<string, string>): void {
  for (const [ip, name] of from) if (!into.has(ip)) into.set(ip, name);
}
