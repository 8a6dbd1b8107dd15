/**
 * The embedded portmapper (program 100000): PMAP v2 (RFC 1833 section 3) and rpcbind v3/v4
 * (RFC 1833 section 2), IPv4 only (netids "tcp" and "udp").
 *
 * Who asks what:
 * - The Linux kernel (nfsroot, mount.nfs' kernel side, lockd) asks PMAP v2 GETPORT, or rpcbind v3/v4
 *   GETADDR over the protocol it wants; it takes only the port out of the returned uaddr.
 * - libtirpc (rpcinfo, showmount, mount.nfs) asks rpcbind v4 then v3 GETADDR and *connects to the
 *   whole returned uaddr*, so the host part must be an address the client can reach. libtirpc and
 *   the kernel both send, in GETADDR's r_addr, the address they used to reach us; see answerHost().
 *
 * Look-up semantics copy rpcbind's find_service(): when no mapping has the exact version, PMAP
 * GETPORT and rpcbind GETADDR answer with another version of the same program, so the client goes
 * there and learns the supported range from PROG_MISMATCH. rpcbind v4 GETVERSADDR is exact.
 *
 * SET and UNSET from the network are honoured only from loopback addresses (as rpcbind does without
 * -i); the server's own mappings (owner "superuser") cannot be removed or replaced from outside.
 * Over inet there is no trustworthy caller uid, so, like rpcbind, remote registrations get the
 * owner "unknown" whatever r_owner says.
 */
import os from 'node:os';
import { componentLogger } from '../log/logger.js';
import type { Handler, Program, ProcedureSpec, ReplySink, RpcCall } from './dispatch.js';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  PMAP_V2,
  PmapProc,
  PORTMAP_PROGRAM,
  RPCBIND_V3,
  RPCBIND_V4,
  RpcbProc,
} from './portmap-constants.js';
import type { XdrReader } from './xdr.js';

const log = componentLogger('portmap');

export type Netid = 'tcp' | 'udp';

/** Owner of the mappings the server registers itself (rpcbind's name for uid 0). */
export const SERVER_OWNER = 'superuser';
/** Owner of mappings registered over the network, where no caller uid is known (as rpcbind). */
export const REMOTE_OWNER = 'unknown';

export interface PortMapping {
  prog: number;
  vers: number;
  netid: Netid;
  port: number;
  /** Explicit IPv4 host of a v3/v4 SET; null means "wherever the client reached us". */
  host: string | null;
  owner: string;
}

/** Bounds for strings in rpcbind arguments (netid, uaddr, owner): generous, but bounded. */
const MAX_RPCB_STRING = 1024;

export function netidForProtocol(prot: number): Netid | null {
  return prot === IPPROTO_TCP ? 'tcp' : prot === IPPROTO_UDP ? 'udp' : null;
}

export function protocolForNetid(netid: Netid): number {
  return netid === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
}

function asNetid(s: string): Netid | null {
  return s === 'tcp' || s === 'udp' ? s : null;
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function ipv4ToInt(addr: string): number | null {
  const m = IPV4_RE.exec(addr);
  if (!m) return null;
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const o = Number(m[i]);
    if (o > 255) return null;
    v = v * 256 + o;
  }
  return v;
}

/** "h1.h2.h3.h4.p1.p2" (RFC 1833 section 2.2, universal address for inet). */
export function formatUaddr(host: string, port: number): string {
  return `${host}.${port >>> 8}.${port & 255}`;
}

/** Parses an IPv4 universal address; null if it is not one. */
export function parseUaddr(uaddr: string): { host: string; port: number } | null {
  const parts = uaddr.split('.');
  if (parts.length !== 6) return null;
  const nums = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  if (nums.some((n) => !(n >= 0 && n <= 255))) return null;
  return { host: nums.slice(0, 4).join('.'), port: nums[4] * 256 + nums[5] };
}

export function isLoopback(address: string): boolean {
  if (address.startsWith('::ffff:')) address = address.slice(7);
  return address.startsWith('127.') || address === '::1' || address === 'localhost';
}

/** A bind address that names no particular interface. */
export function isWildcard(address: string | null | undefined): boolean {
  return !address || address === '0.0.0.0' || address === '::' || address === '::0';
}

/**
 * The (prog, vers, netid) → port table. Insertion-ordered, which DUMP shows; a few dozen entries
 * at most, so a linear scan is cheaper than any index.
 */
export class PortmapRegistry {
  private readonly list: PortMapping[] = [];

  /** RFC 1833: refuses (false) when a mapping for (prog, vers, netid) already exists. */
  set(m: PortMapping): boolean {
    if (this.list.some((e) => e.prog === m.prog && e.vers === m.vers && e.netid === m.netid)) return false;
    this.list.push({ ...m });
    return true;
  }

  /**
   * Removes the mappings of (prog, vers) — only of `netid` when given — that `owner` may remove:
   * SERVER_OWNER (or null) may remove any, anyone else only its own. Returns how many went.
   */
  unset(prog: number, vers: number, netid: Netid | null = null, owner: string | null = null): number {
    let removed = 0;
    for (let i = this.list.length - 1; i >= 0; i--) {
      const e = this.list[i];
      if (e.prog !== prog || e.vers !== vers || (netid !== null && e.netid !== netid)) continue;
      if (owner !== null && owner !== SERVER_OWNER && e.owner !== owner) continue;
      this.list.splice(i, 1);
      removed++;
    }
    return removed;
  }

  /**
   * The server's own programs: replaces whatever was there for these (prog, vers, netid).
   * Call once per program after its transports are listening.
   */
  addProgram(prog: number, versions: readonly number[], port: number, netids: readonly Netid[] = ['tcp', 'udp']): void {
    for (const vers of versions) {
      for (const netid of netids) {
        this.unset(prog, vers, netid);
        this.list.push({ prog, vers, netid, port, host: null, owner: SERVER_OWNER });
      }
    }
  }

  /** rpcbind's find_service(): the exact version if present, else (unless `exact`) any version. */
  lookup(prog: number, vers: number, netid: Netid, exact = false): PortMapping | undefined {
    let hit: PortMapping | undefined;
    for (const e of this.list) {
      if (e.prog !== prog || e.netid !== netid) continue;
      if (e.vers === vers) return e;
      if (!exact && hit === undefined) hit = e;
    }
    return hit;
  }

  /** Every mapping of exactly (prog, vers), any netid. */
  find(prog: number, vers: number): PortMapping[] {
    return this.list.filter((e) => e.prog === prog && e.vers === vers);
  }

  all(): readonly PortMapping[] {
    return this.list;
  }
}

export interface PortmapOptions {
  /** The address the server's transports are bound to ('' or 0.0.0.0 for all). */
  bindAddress?: string;
}

// --- which host to put into a uaddr -------------------------------------------------------------

interface Ipv4Net {
  addr: string;
  addrInt: number;
  maskInt: number;
  internal: boolean;
}

let ifCache: { at: number; nets: Ipv4Net[] } | null = null;

function localIpv4Nets(): Ipv4Net[] {
  const now = Date.now();
  if (ifCache !== null && now - ifCache.at < 5000) return ifCache.nets;
  const nets: Ipv4Net[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family !== 'IPv4') continue;
      const addrInt = ipv4ToInt(a.address);
      const maskInt = ipv4ToInt(a.netmask);
      if (addrInt === null || maskInt === null) continue;
      nets.push({ addr: a.address, addrInt, maskInt, internal: a.internal });
    }
  }
  ifCache = { at: now, nets };
  return nets;
}

/**
 * The IPv4 host to advertise to this caller, best source first:
 * 1. the local address the call arrived on, when the transport tells us (`localAddress` on the sink);
 * 2. the configured bind address, unless it is a wildcard;
 * 3. the host part of GETADDR's r_addr: libtirpc and the kernel put there the address they used to
 *    reach us ("in case it can help it connect back with us", rpcinfo.c), which is exactly it;
 * 4. 127.0.0.1 for a loopback caller;
 * 5. our interface on the caller's subnet (what rpcbind's addrmerge() does);
 * 6. our first non-loopback IPv4 address, else 127.0.0.1.
 * Never 0.0.0.0: libtirpc would connect to that literally.
 */
export function answerHost(sink: ReplySink, bindAddress: string | undefined, hint: string | null): string {
  const local = sink.localAddress;
  if (local !== undefined) {
    const l = local.startsWith('::ffff:') ? local.slice(7) : local;
    if (!isWildcard(l) && ipv4ToInt(l) !== null) return l;
  }
  if (!isWildcard(bindAddress) && ipv4ToInt(bindAddress!) !== null) return bindAddress!;
  if (hint) {
    const h = parseUaddr(hint);
    if (h !== null && !isWildcard(h.host)) return h.host;
  }
  if (isLoopback(sink.address)) return '127.0.0.1';
  const nets = localIpv4Nets();
  const client = ipv4ToInt(sink.address);
  if (client !== null) {
    for (const n of nets) if (!n.internal && ((n.addrInt ^ client) & n.maskInt) >>> 0 === 0) return n.addr;
  }
  for (const n of nets) if (!n.internal) return n.addr;
  return '127.0.0.1';
}

function uaddrFor(m: PortMapping, sink: ReplySink, bindAddress: string | undefined, hint: string | null): string {
  const host = m.host !== null && !isWildcard(m.host) ? m.host : answerHost(sink, bindAddress, hint);
  return formatUaddr(host, m.port);
}

// --- argument decoding --------------------------------------------------------------------------

interface RpcbArgs {
  prog: number;
  vers: number;
  netid: string;
  addr: string;
  owner: string;
}

function readRpcb(r: XdrReader): RpcbArgs {
  const prog = r.u32();
  const vers = r.u32();
  const netid = r.bytesString(MAX_RPCB_STRING);
  const addr = r.bytesString(MAX_RPCB_STRING);
  const owner = r.bytesString(MAX_RPCB_STRING);
  return { prog, vers, netid, addr, owner };
}

function readPmap(r: XdrReader): { prog: number; vers: number; prot: number; port: number } {
  return { prog: r.u32(), vers: r.u32(), prot: r.u32(), port: r.u32() };
}

function transportNetid(sink: ReplySink): Netid {
  return sink.tcp ? 'tcp' : 'udp';
}

function replyBool(call: RpcCall, v: boolean): void {
  const w = call.beginReply(8);
  w.bool(v);
  call.send();
}

function replyString(call: RpcCall, s: string): void {
  const w = call.beginReply(s.length + 8);
  w.bytesString(s);
  call.send();
}

function proc(name: string, handler: Handler): ProcedureSpec {
  return { name, handler, mutates: false, nonIdempotent: false, needsCred: false };
}

function nullProc(call: RpcCall): void {
  call.beginReply(0);
  call.send();
}

/** SET/UNSET are honoured only from loopback callers; anything else is refused and logged. */
function allowedToChange(call: RpcCall, what: string, prog: number, vers: number): boolean {
  if (isLoopback(call.sink.address)) return true;
  log.warn({ client: call.sink.address, port: call.sink.port, proc: what, prog, vers }, 'portmap change refused: not from a loopback address');
  return false;
}

// --- the program --------------------------------------------------------------------------------

export function createPortmapProgram(registry: PortmapRegistry, options: PortmapOptions = {}): Program {
  const bindAddress = options.bindAddress;

  // ---- PMAP v2 ----
  const pmapSet = (call: RpcCall): void => {
    const a = readPmap(call.args);
    let ok = false;
    if (allowedToChange(call, 'PMAPPROC_SET', a.prog, a.vers)) {
      const netid = netidForProtocol(a.prot);
      if (netid !== null && a.port > 0 && a.port <= 65535) {
        ok = registry.set({ prog: a.prog, vers: a.vers, netid, port: a.port, host: null, owner: REMOTE_OWNER });
      }
      log.info({ client: call.sink.address, prog: a.prog, vers: a.vers, prot: a.prot, port: a.port, ok }, 'PMAPPROC_SET');
    }
    replyBool(call, ok);
  };

  const pmapUnset = (call: RpcCall): void => {
    const a = readPmap(call.args); // prot and port are ignored (RFC 1833)
    let ok = false;
    if (allowedToChange(call, 'PMAPPROC_UNSET', a.prog, a.vers)) {
      ok = registry.unset(a.prog, a.vers, null, REMOTE_OWNER) > 0;
      log.info({ client: call.sink.address, prog: a.prog, vers: a.vers, ok }, 'PMAPPROC_UNSET');
    }
    replyBool(call, ok);
  };

  const pmapGetport = (call: RpcCall): void => {
    const a = readPmap(call.args);
    const netid = netidForProtocol(a.prot);
    const m = netid === null ? undefined : registry.lookup(a.prog, a.vers, netid);
    const w = call.beginReply(8);
    w.u32(m === undefined ? 0 : m.port);
    call.send();
  };

  const pmapDump = (call: RpcCall): void => {
    const all = registry.all();
    const w = call.beginReply(all.length * 20 + 8);
    for (const m of all) {
      w.bool(true);
      w.u32(m.prog);
      w.u32(m.vers);
      w.u32(protocolForNetid(m.netid));
      w.u32(m.port);
    }
    w.bool(false);
    call.send();
  };

  // ---- rpcbind v3/v4 ----
  const rpcbSet = (call: RpcCall): void => {
    const a = readRpcb(call.args);
    let ok = false;
    if (allowedToChange(call, 'RPCBPROC_SET', a.prog, a.vers)) {
      const netid = asNetid(a.netid);
      const ua = parseUaddr(a.addr);
      if (netid !== null && ua !== null && ua.port > 0) {
        const host = isWildcard(ua.host) ? null : ua.host;
        ok = registry.set({ prog: a.prog, vers: a.vers, netid, port: ua.port, host, owner: REMOTE_OWNER });
      }
      log.info({ client: call.sink.address, prog: a.prog, vers: a.vers, netid: a.netid, uaddr: a.addr, ok }, 'RPCBPROC_SET');
    }
    replyBool(call, ok);
  };

  const rpcbUnset = (call: RpcCall): void => {
    const a = readRpcb(call.args);
    let ok = false;
    if (allowedToChange(call, 'RPCBPROC_UNSET', a.prog, a.vers)) {
      // An empty netid means every transport (RFC 1833 section 2.3.2).
      const netid = a.netid === '' ? null : asNetid(a.netid);
      if (a.netid === '' || netid !== null) ok = registry.unset(a.prog, a.vers, netid, REMOTE_OWNER) > 0;
      log.info({ client: call.sink.address, prog: a.prog, vers: a.vers, netid: a.netid, ok }, 'RPCBPROC_UNSET');
    }
    replyBool(call, ok);
  };

  const getaddr = (call: RpcCall, exact: boolean): void => {
    const a = readRpcb(call.args);
    // rpcbind itself looks up the netid of the transport the question came on; clients ask over
    // the transport they want anyway. We honour an explicit r_netid and fall back to the transport.
    const netid = a.netid === '' ? transportNetid(call.sink) : asNetid(a.netid);
    const m = netid === null ? undefined : registry.lookup(a.prog, a.vers, netid, exact);
    replyString(call, m === undefined ? '' : uaddrFor(m, call.sink, bindAddress, a.addr));
  };

  const rpcbDump = (call: RpcCall): void => {
    const all = registry.all();
    const w = call.beginReply(all.length * 64 + 8);
    for (const m of all) {
      w.bool(true);
      w.u32(m.prog);
      w.u32(m.vers);
      w.bytesString(m.netid);
      w.bytesString(uaddrFor(m, call.sink, bindAddress, null));
      w.bytesString(m.owner);
    }
    w.bool(false);
    call.send();
  };

  const rpcbGettime = (call: RpcCall): void => {
    const w = call.beginReply(8);
    w.u32(Math.floor(Date.now() / 1000));
    call.send();
  };

  const rpcbGetaddrlist = (call: RpcCall): void => {
    const a = readRpcb(call.args);
    const found = registry.find(a.prog, a.vers);
    const w = call.beginReply(found.length * 64 + 8);
    for (const m of found) {
      w.bool(true);
      w.bytesString(uaddrFor(m, call.sink, bindAddress, a.addr)); // r_maddr
      w.bytesString(m.netid); // r_nc_netid
      w.u32(m.netid === 'tcp' ? NC_TPI_COTS_ORD : NC_TPI_CLTS); // r_nc_semantics
      w.bytesString('inet'); // r_nc_protofmly
      w.bytesString(m.netid); // r_nc_proto
    }
    w.bool(false);
    call.send();
  };

  const v2: (ProcedureSpec | undefined)[] = [];
  v2[PmapProc.NULL] = proc('NULL', nullProc);
  v2[PmapProc.SET] = proc('SET', pmapSet);
  v2[PmapProc.UNSET] = proc('UNSET', pmapUnset);
  v2[PmapProc.GETPORT] = proc('GETPORT', pmapGetport);
  v2[PmapProc.DUMP] = proc('DUMP', pmapDump);
  // CALLIT (and rpcbind's CALLIT/INDIRECT) is left PROC_UNAVAIL on purpose. It asks the
  // portmapper to forward a call to another program and relay the answer: over UDP it is the
  // classic reflection/amplification vector (small spoofed request, larger reply to the victim),
  // and every program we serve lives in this very process on known ports, so forwarding would buy
  // a client nothing. Broadcast RPC (clnt_broadcast, rpcinfo -b) is the only user and no
  // diskless-boot or mount path needs it. UADDR2TADDR/TADDR2UADDR (netbufs holding a host-order
  // struct sockaddr) and GETSTAT are not asked by any client we serve, so PROC_UNAVAIL too.

  const rpcbCommon = (): (ProcedureSpec | undefined)[] => {
    const t: (ProcedureSpec | undefined)[] = [];
    t[RpcbProc.NULL] = proc('NULL', nullProc);
    t[RpcbProc.SET] = proc('SET', rpcbSet);
    t[RpcbProc.UNSET] = proc('UNSET', rpcbUnset);
    t[RpcbProc.GETADDR] = proc('GETADDR', (call) => getaddr(call, false));
    t[RpcbProc.DUMP] = proc('DUMP', rpcbDump);
    t[RpcbProc.GETTIME] = proc('GETTIME', rpcbGettime);
    return t;
  };
  const v3 = rpcbCommon();
  const v4 = rpcbCommon();
  v4[RpcbProc.GETVERSADDR] = proc('GETVERSADDR', (call) => getaddr(call, true));
  v4[RpcbProc.GETADDRLIST] = proc('GETADDRLIST', rpcbGetaddrlist);

  return {
    program: PORTMAP_PROGRAM,
    name: 'portmap',
    versions: [
      { version: PMAP_V2, procedures: v2 },
      { version: RPCBIND_V3, procedures: v3 },
      { version: RPCBIND_V4, procedures: v4 },
    ],
  };
}

/** netconfig semantics (rpcb_entry.r_nc_semantics). */
const NC_TPI_CLTS = 1;
const NC_TPI_COTS_ORD = 3;

/** Registers the portmapper itself (versions 2, 3, 4 on tcp and udp) at `port`. */
export function registerPortmapperSelf(registry: PortmapRegistry, port: number): void {
  registry.addProgram(PORTMAP_PROGRAM, [PMAP_V2, RPCBIND_V3, RPCBIND_V4], port);
}

