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
 *   dhcpd.leases text (recognized per file).
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
}

/** Address → host name pairs from the text of a hosts or leases file. */
export function parseHostsText(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const put = (ip: string, name: string) => {
    const n = normalizeIp(ip);
    if (n !== null && name !== '' && name !== '*' && !out.has(n)) out.set(n, shortHostName(name));
  };
  if (/^\s*lease\s+\S+\s*\{/m.test(text)) {
    // ISC dhcpd.leases: later blocks for the same address are newer, so they replace earlier ones.
    const re = /lease\s+(\S+)\s*\{([^}]*)\}/g;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const name = /client-hostname\s+"([^"]*)"/.exec(m[2]);
      const ip = normalizeIp(m[1]);
      if (name !== null && ip !== null && name[1] !== '') out.set(ip, shortHostName(name[1]));
    }
    return out;
  }
  for (const raw of text.split('\n')) {
    const hash = raw.indexOf('#');
    const line = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (line === '') continue;
    const f = line.split(/\s+/);
    if (f.length >= 2 && parseAddress(f[0]) !== null) put(f[0], f[1]);
    // dnsmasq: expiry mac ip hostname client-id
    else if (f.length >= 4 && /^\d+$/.test(f[0]) && parseAddress(f[2]) !== null) put(f[2], f[3]);
  }
  return out;
}

export class ClientIdentities {
  private readonly files: readonly string[];
  private readonly resolver: HostNameResolver | null;
  private readonly recheckMs: number;
  private readonly maxAddresses: number;
  private readonly dnsRefreshMs: number;
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
    Promise.all(this.files.map((f) => fs.promises.stat(f).then((s) => `${s.mtimeMs}:${s.size}`, () => 'missing')))
      .then((stamps) => {
        if (stamps.join('|') !== this.fileStamps) this.loadFilesSync();
      })
      .catch((err: unknown) => log.warn({ err }, 'checking hosts files failed'))
      .finally(() => (this.checking = false));
  }

  private loadFilesSync(): void {
    const names = new Map<string, string>();
    const stamps: string[] = [];
    for (const f of this.files) {
      try {
        const st = fs.statSync(f);
        stamps.push(`${st.mtimeMs}:${st.size}`);
        for (const [ip, name] of parseHostsText(fs.readFileSync(f, 'utf8'))) if (!names.has(ip)) names.set(ip, name);
      } catch (err) {
        stamps.push('missing');
        log.warn({ file: f, err: (err as Error).message }, 'hosts file not readable; its clients have no host name from it');
      }
    }
    this.fileNames = names;
    this.fileStamps = stamps.join('|');
    // Addresses already seen learn their (new) names on their next call.
    this.byAddress.clear();
  }
}
