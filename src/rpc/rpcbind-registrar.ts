/**
 * Living next to a system rpcbind.
 *
 * When port 111 is already taken by a portmapper (rpcbind, or an old portmap), the server registers
 * its programs there instead of serving 100000 itself, and removes them again on shutdown.
 *
 * How rpcbind lets us in: its local socket (/run/rpcbind.sock, AF_LOCAL) always takes SET/UNSET
 * and records a uid-0 caller as owner "superuser", who may UNSET anything. Over inet, callers get
 * the owner "unknown" and may UNSET only "unknown" entries; upstream rpcbind's is_loopback() even
 * refuses inet SET unless started with -L or -i, although Debian 12's rpcbind 1.2.6 accepted
 * PMAP v2 SET/UNSET from 127.0.0.1 over UDP in our tests (test/integration/portmap-real.test.ts).
 * An old portmap accepts them from 127.0.0.1. So we try, in order: the local socket(s), then
 * PMAP v2 over UDP and TCP to 127.0.0.1:111, and take the first channel on which every SET succeeds
 * AND a GETPORT over inet to the portmapper that owns 111 then sees our ports (a local socket of a
 * different rpcbind — another network namespace sharing /run — would otherwise swallow them).
 *
 * All of this happens a handful of times per process life, so it favours clarity over speed:
 * one connection per call, a fresh XdrWriter per call.
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import { componentLogger } from '../log/logger.js';
import { RpcDispatcher } from './dispatch.js';
import { AcceptStat, MsgType, ReplyStat, writeCallHeader } from './message.js';
import { createPortmapProgram, isWildcard, netidForProtocol, protocolForNetid, registerPortmapperSelf, type Netid, type PortmapRegistry } from './portmap.js';
import { PMAP_PORT, PMAP_V2, PmapProc, PORTMAP_PROGRAM } from './portmap-constants.js';
import { RecordDecoder, lastFragmentHeader } from './record.js';
import { TcpTransport } from './tcp.js';
import { UdpTransport } from './udp.js';
import { XdrError, XdrReader, XdrWriter } from './xdr.js';

const log = componentLogger('rpcbind');

// --- a minimal RPC client -----------------------------------------------------------------------

export type RpcChannel =
  | { kind: 'udp'; host: string; port: number }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string };

export function describeChannel(ch: RpcChannel): string {
  return ch.kind === 'unix' ? `unix:${ch.path}` : `${ch.kind}:${ch.host}:${ch.port}`;
}

export class RpcClientError extends Error {
  constructor(
    message: string,
    readonly code: 'timeout' | 'network' | 'denied' | 'not-accepted' | 'garbage',
  ) {
    super(message);
  }
}

let nextXid = (Math.random() * 0x7fffffff) >>> 0;

function encodeCall(xid: number, prog: number, vers: number, proc: number, args: (w: XdrWriter) => void, stream: boolean): Buffer {
  const w = new XdrWriter(1024);
  w.begin(256);
  if (stream) w.u32(0);
  writeCallHeader(w, xid, prog, vers, proc, null);
  args(w);
  if (stream) w.patchU32(0, lastFragmentHeader(w.length() - 4));
  return Buffer.from(w.finish());
}

/** Checks a reply header; returns the reader at the results, or null if it is not our xid. */
function decodeReply(buf: Buffer, xid: number, what: string): XdrReader | null {
  const r = new XdrReader(buf);
  try {
    if (r.u32() !== xid || r.u32() !== MsgType.REPLY) return null;
    const stat = r.u32();
    if (stat !== ReplyStat.MSG_ACCEPTED) {
      throw new RpcClientError(`${what}: call denied (reject_stat ${r.u32()})`, 'denied');
    }
    r.u32(); // verifier flavor
    r.opaque(400);
    const accept = r.u32();
    if (accept !== AcceptStat.SUCCESS) {
      const names = ['SUCCESS', 'PROG_UNAVAIL', 'PROG_MISMATCH', 'PROC_UNAVAIL', 'GARBAGE_ARGS', 'SYSTEM_ERR'];
      throw new RpcClientError(`${what}: ${names[accept] ?? `accept_stat ${accept}`}`, 'not-accepted');
    }
    return r;
  } catch (err) {
    if (err instanceof XdrError) throw new RpcClientError(`${what}: malformed reply (${err.message})`, 'garbage');
    throw err;
  }
}

/**
 * One RPC call (AUTH_NONE) and its decoded results. UDP retransmits every `retransmitMs` until
 * `timeoutMs`; a stream channel opens one connection for the call.
 */
export function rpcCall(
  ch: RpcChannel,
  prog: number,
  vers: number,
  proc: number,
  args: (w: XdrWriter) => void,
  timeoutMs = 2000,
  retransmitMs = 400,
): Promise<XdrReader> {
  const xid = (nextXid = (nextXid + 1) >>> 0);
  const what = `${describeChannel(ch)} ${prog}/${vers}/${proc}`;
  return ch.kind === 'udp'
    ? udpCall(ch.host, ch.port, encodeCall(xid, prog, vers, proc, args, false), xid, what, timeoutMs, retransmitMs)
    : streamCall(ch, encodeCall(xid, prog, vers, proc, args, true), xid, what, timeoutMs);
}

function udpCall(host: string, port: number, msg: Buffer, xid: number, what: string, timeoutMs: number, retransmitMs: number): Promise<XdrReader> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    let finished = false;
    const finish = (err: Error | null, r?: XdrReader): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      clearInterval(resend);
      sock.close();
      if (err) reject(err);
      else resolve(r!);
    };
    const deadline = setTimeout(() => finish(new RpcClientError(`${what}: no answer within ${timeoutMs} ms`, 'timeout')), timeoutMs);
    const send = (): void => sock.send(msg, port, host, (err) => err && finish(new RpcClientError(`${what}: ${err.message}`, 'network')));
    const resend = setInterval(send, retransmitMs);
    sock.on('error', (err) => finish(new RpcClientError(`${what}: ${err.message}`, 'network')));
    sock.on('message', (buf) => {
      try {
        const r = decodeReply(buf, xid, what);
        if (r !== null) finish(null, r);
      } catch (err) {
        finish(err as Error);
      }
    });
    send();
  });
}

function streamCall(ch: Exclude<RpcChannel, { kind: 'udp' }>, msg: Buffer, xid: number, what: string, timeoutMs: number): Promise<XdrReader> {
  return new Promise((resolve, reject) => {
    const sock = ch.kind === 'unix' ? net.connect({ path: ch.path }) : net.connect({ host: ch.host, port: ch.port });
    let finished = false;
    const finish = (err: Error | null, r?: XdrReader): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      sock.destroy();
      if (err) reject(err);
      else resolve(r!);
    };
    const deadline = setTimeout(() => finish(new RpcClientError(`${what}: no answer within ${timeoutMs} ms`, 'timeout')), timeoutMs);
    const decoder = new RecordDecoder(
      {
        onRecord(record: Buffer): void {
          try {
            const r = decodeReply(record, xid, what);
            if (r !== null) finish(null, r);
          } catch (err) {
            finish(err as Error);
          }
        },
        onViolation(kind): void {
          finish(new RpcClientError(`${what}: ${kind}`, 'garbage'));
        },
      },
      { maxRecordBytes: 1024 * 1024, maxFragments: 64 },
    );
    sock.on('connect', () => sock.write(msg));
    sock.on('data', (chunk: Buffer) => decoder.feed(chunk));
    sock.on('error', (err) => finish(new RpcClientError(`${what}: ${err.message}`, 'network')));
    sock.on('close', () => finish(new RpcClientError(`${what}: connection closed before the reply`, 'network')));
  });
}

// --- PMAP v2 calls --------------------------------------------------------------------------------

export interface PortRegistration {
  prog: number;
  vers: number;
  netid: Netid;
  port: number;
}

function pmapArgs(prog: number, vers: number, prot: number, port: number): (w: XdrWriter) => void {
  return (w) => {
    w.u32(prog);
    w.u32(vers);
    w.u32(prot);
    w.u32(port);
  };
}

export async function pmapNull(ch: RpcChannel, timeoutMs = 1000): Promise<void> {
  await rpcCall(ch, PORTMAP_PROGRAM, PMAP_V2, PmapProc.NULL, () => {}, timeoutMs, 250);
}

export async function pmapSet(ch: RpcChannel, e: PortRegistration, timeoutMs?: number): Promise<boolean> {
  return (await rpcCall(ch, PORTMAP_PROGRAM, PMAP_V2, PmapProc.SET, pmapArgs(e.prog, e.vers, protocolForNetid(e.netid), e.port), timeoutMs)).bool();
}

export async function pmapUnset(ch: RpcChannel, prog: number, vers: number, timeoutMs?: number): Promise<boolean> {
  return (await rpcCall(ch, PORTMAP_PROGRAM, PMAP_V2, PmapProc.UNSET, pmapArgs(prog, vers, 0, 0), timeoutMs)).bool();
}

export async function pmapGetport(ch: RpcChannel, prog: number, vers: number, netid: Netid, timeoutMs?: number): Promise<number> {
  return (await rpcCall(ch, PORTMAP_PROGRAM, PMAP_V2, PmapProc.GETPORT, pmapArgs(prog, vers, protocolForNetid(netid), 0), timeoutMs)).u32();
}

/** PMAP v2 DUMP; mappings of protocols other than TCP/UDP are left out. */
export async function pmapDump(ch: RpcChannel, timeoutMs?: number): Promise<PortRegistration[]> {
  const r = await rpcCall(ch, PORTMAP_PROGRAM, PMAP_V2, PmapProc.DUMP, () => {}, timeoutMs);
  const out: PortRegistration[] = [];
  for (let n = 0; r.bool() && n < 100_000; n++) {
    const prog = r.u32();
    const vers = r.u32();
    const netid = netidForProtocol(r.u32());
    const port = r.u32();
    if (netid !== null) out.push({ prog, vers, netid, port });
  }
  return out;
}

// --- registering with a system portmapper -------------------------------------------------------

export interface SystemPortmapperOptions {
  /** Where the system portmapper answers over inet (default 127.0.0.1:111). */
  host?: string;
  port?: number;
  /** rpcbind's local sockets to try first; only those that exist are tried. */
  socketPaths?: string[];
  /** Per-call timeout (ms). */
  timeoutMs?: number;
}

export const DEFAULT_RPCBIND_SOCKETS = ['/run/rpcbind.sock', '/var/run/rpcbind.sock'];

export interface Registration {
  /** The channel the registrations were made over, e.g. "unix:/run/rpcbind.sock". */
  readonly channel: string;
  readonly entries: readonly PortRegistration[];
  /** Removes our registrations (idempotent; never throws, logs what it could not do). */
  unregister(): Promise<void>;
}

function distinctProgVers(entries: readonly PortRegistration[]): { prog: number; vers: number }[] {
  const seen = new Map<string, { prog: number; vers: number }>();
  for (const e of entries) seen.set(`${e.prog}/${e.vers}`, { prog: e.prog, vers: e.vers });
  return [...seen.values()];
}

function candidateChannels(opts: Required<SystemPortmapperOptions>): RpcChannel[] {
  const out: RpcChannel[] = [];
  const seenReal = new Set<string>();
  for (const path of opts.socketPaths) {
    try {
      if (!fs.statSync(path).isSocket()) continue;
      const real = fs.realpathSync(path);
      if (seenReal.has(real)) continue;
      seenReal.add(real);
      out.push({ kind: 'unix', path });
    } catch {
      // absent: not this one
    }
  }
  out.push({ kind: 'udp', host: opts.host, port: opts.port });
  out.push({ kind: 'tcp', host: opts.host, port: opts.port });
  return out;
}

async function registerOver(ch: RpcChannel, entries: readonly PortRegistration[], inet: RpcChannel, timeoutMs: number): Promise<void> {
  // Stale entries first: PMAP SET refuses to replace an existing (prog, vers, prot), and a
  // warm-started rpcbind (-w) still holds the mappings of a previous run that died.
  const ours = distinctProgVers(entries);
  try {
    const stale = (await pmapDump(ch, timeoutMs)).filter((m) => ours.some((o) => o.prog === m.prog && o.vers === m.vers));
    if (stale.length > 0) {
      log.info({ channel: describeChannel(ch), stale: stale.map((m) => `${m.prog}/${m.vers}/${m.netid}:${m.port}`) }, 'replacing existing portmapper registrations');
    }
  } catch (err) {
    log.debug({ channel: describeChannel(ch), err: (err as Error).message }, 'DUMP failed; unsetting blind');
  }
  for (const { prog, vers } of ours) await pmapUnset(ch, prog, vers, timeoutMs);
  for (const e of entries) {
    if (!(await pmapSet(ch, e, timeoutMs))) {
      const held = await pmapGetport(inet, e.prog, e.vers, e.netid, timeoutMs).catch(() => 0);
      throw new Error(
        `PMAPPROC_SET ${e.prog} v${e.vers} ${e.netid} port ${e.port} refused` +
          (held !== 0 ? ` (still mapped to port ${held}: a registration this channel may not remove, e.g. one made by another owner)` : ''),
      );
    }
  }
  // The portmapper on 111 must now answer with our ports; otherwise this channel reached some
  // other portmapper (or none that matters to clients).
  for (const e of entries) {
    const port = await pmapGetport(inet, e.prog, e.vers, e.netid, timeoutMs);
    if (port !== e.port) {
      throw new Error(`registered over ${describeChannel(ch)}, but ${describeChannel(inet)} answers port ${port} for ${e.prog} v${e.vers} ${e.netid}`);
    }
  }
}

async function unsetAll(ch: RpcChannel, entries: readonly PortRegistration[], timeoutMs: number): Promise<void> {
  for (const { prog, vers } of distinctProgVers(entries)) {
    try {
      await pmapUnset(ch, prog, vers, timeoutMs);
    } catch (err) {
      log.warn({ channel: describeChannel(ch), prog, vers, err: (err as Error).message }, 'could not unregister from the system portmapper');
    }
  }
}

/**
 * Registers every entry with the system portmapper (see the file comment for the channels tried)
 * and returns a handle whose unregister() removes them. Rejects with an Error naming every channel
 * tried and why it failed when none works.
 */
export async function registerWithSystemPortmapper(entries: readonly PortRegistration[], options: SystemPortmapperOptions = {}): Promise<Registration> {
  const opts: Required<SystemPortmapperOptions> = {
    host: options.host ?? '127.0.0.1',
    port: options.port ?? PMAP_PORT,
    socketPaths: options.socketPaths ?? DEFAULT_RPCBIND_SOCKETS,
    timeoutMs: options.timeoutMs ?? 2000,
  };
  const inet: RpcChannel = { kind: 'udp', host: opts.host, port: opts.port };
  const failures: string[] = [];
  for (const ch of candidateChannels(opts)) {
    try {
      await registerOver(ch, entries, inet, opts.timeoutMs);
    } catch (err) {
      failures.push(`${describeChannel(ch)}: ${(err as Error).message}`);
      log.debug({ channel: describeChannel(ch), err: (err as Error).message }, 'registration channel failed');
      // Leave nothing half-registered behind on a channel that did accept some of it.
      if (!(err instanceof RpcClientError && err.code === 'timeout')) await unsetAll(ch, entries, opts.timeoutMs).catch(() => {});
      continue;
    }
    const channel = describeChannel(ch);
    log.info({ channel, entries: entries.map((e) => `${e.prog}/${e.vers}/${e.netid}:${e.port}`) }, 'registered with the system portmapper');
    let done = false;
    return {
      channel,
      entries: [...entries],
      async unregister(): Promise<void> {
        if (done) return;
        done = true;
        await unsetAll(ch, entries, opts.timeoutMs);
        log.info({ channel }, 'unregistered from the system portmapper');
      },
    };
  }
  throw new Error(
    `could not register ${entries.length} mapping(s) with the system portmapper on ${opts.host}:${opts.port}: ` +
      `${failures.join('; ')}. rpcbind accepts SET only over its local socket (run as root, same /run) ` +
      `or over loopback when started with -L/-i.`,
  );
}

/** Which transport, if any, a portmapper answers a NULL call on at host:port. */
export async function probePortmapper(host = '127.0.0.1', port = PMAP_PORT, timeoutMs = 1000): Promise<'udp' | 'tcp' | null> {
  const [udp, tcp] = await Promise.allSettled([
    pmapNull({ kind: 'udp', host, port }, timeoutMs),
    pmapNull({ kind: 'tcp', host, port }, timeoutMs),
  ]);
  return udp.status === 'fulfilled' ? 'udp' : tcp.status === 'fulfilled' ? 'tcp' : null;
}

// --- the startup decision -----------------------------------------------------------------------

export interface PortmapperService {
  /** 'embedded': we serve 100000 ourselves; 'system': our programs are registered with rpcbind. */
  readonly mode: 'embedded' | 'system';
  /** The port clients ask (ours when embedded, the system portmapper's otherwise). */
  readonly port: number;
  /** For 'system', the channel used for registration. */
  readonly channel: string | null;
  /** Stops our portmapper, or unregisters our programs from the system one. */
  close(): Promise<void>;
}

export interface StartPortmapperOptions {
  /** Mappings to serve (embedded) or to register (system). Fill it before calling. */
  registry: PortmapRegistry;
  /** Bind address of the whole server ('' / 0.0.0.0 for all interfaces). */
  host?: string;
  port?: number;
  /** Options for the system portmapper path (its host defaults to 127.0.0.1, port to `port`). */
  system?: SystemPortmapperOptions;
  /** Probe timeout (ms) for "is a portmapper answering on the port that is taken?". */
  probeTimeoutMs?: number;
  /** Dispatcher to register program 100000 on (e.g. one with the metrics observer); else a new one. */
  dispatcher?: RpcDispatcher;
}

function isAddrInUse(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'EADDRINUSE';
}

/**
 * Serves the portmapper on host:port (TCP and UDP); if the port is taken, checks that a
 * portmapper answers there and registers the registry's non-portmapper entries with it.
 * Throws a clear Error if the port is taken by something that does not answer, or on any
 * other bind failure (EACCES when not root, EADDRNOTAVAIL for a wrong --bind).
 */
export async function startPortmapper(opts: StartPortmapperOptions): Promise<PortmapperService> {
  const host = opts.host ?? '0.0.0.0';
  const wantPort = opts.port ?? PMAP_PORT;
  const bindHost = isWildcard(host) ? '0.0.0.0' : host;
  const dispatcher = opts.dispatcher ?? new RpcDispatcher();
  dispatcher.register(createPortmapProgram(opts.registry, { bindAddress: host }));
  const tcp = new TcpTransport(dispatcher);
  const udp = new UdpTransport(dispatcher);
  let tcpUp = false;
  try {
    const port = await tcp.listen(wantPort, bindHost);
    tcpUp = true;
    await udp.listen(port, bindHost);
    registerPortmapperSelf(opts.registry, port);
    log.info({ host: bindHost, port }, 'portmapper listening (tcp, udp)');
    return {
      mode: 'embedded',
      port,
      channel: null,
      close: async () => {
        await Promise.all([tcp.close(), udp.close()]);
      },
    };
  } catch (err) {
    if (tcpUp) await tcp.close();
    await udp.close();
    if (!isAddrInUse(err)) {
      throw new Error(`cannot serve the portmapper on ${bindHost}:${wantPort}: ${(err as Error).message}`, { cause: err });
    }
  }

  const sys = opts.system ?? {};
  // The system portmapper is local, and rpcbind always listens on loopback (even with -h).
  const sysHost = sys.host ?? '127.0.0.1';
  const sysPort = sys.port ?? wantPort;
  const answered = await probePortmapper(sysHost, sysPort, opts.probeTimeoutMs ?? 1000);
  if (answered === null) {
    throw new Error(
      `port ${wantPort} is in use but no portmapper answers a NULL call on ${sysHost}:${sysPort} (tcp or udp); ` +
        `stop whatever holds it, start rpcbind, or choose --portmap-port / --no-portmap`,
    );
  }
  log.info({ host: sysHost, port: sysPort, transport: answered }, 'a system portmapper owns the port; registering with it');
  const entries: PortRegistration[] = opts.registry
    .all()
    .filter((m) => m.prog !== PORTMAP_PROGRAM)
    .map((m) => ({ prog: m.prog, vers: m.vers, netid: m.netid, port: m.port }));
  const registration = await registerWithSystemPortmapper(entries, { ...sys, host: sysHost, port: sysPort });
  return {
    mode: 'system',
    port: sysPort,
    channel: registration.channel,
    close: () => registration.unregister(),
  };
}
