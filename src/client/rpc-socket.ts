/**
 * Opening the client's socket, including the privileged source port that `secure` exports ask
 * for: like bindresvport(3), try ports below 1024 until one is free for this address.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { RpcConnectionError } from './rpc-errors.js';

export interface SocketTarget {
  host: string;
  port: number;
  localAddress?: string;
  localPort?: number;
  privileged?: boolean;
  connectTimeoutMs: number;
  /** TCP: receive into this one buffer (net's onread) instead of a new Buffer per read. */
  onread?: net.OnReadOpts;
}

/** The range glibc's bindresvport uses; ports below 512 belong to well-known services. */
const RESV_LOW = 512;
const RESV_HIGH = 1023;

/** Source port candidates: the requested one, or the reserved range from a random start. */
function candidatePorts(t: SocketTarget): number[] {
  if (t.localPort !== undefined) return [t.localPort];
  if (!t.privileged) return [0];
  const n = RESV_HIGH - RESV_LOW + 1;
  const start = Math.floor(Math.random() * n);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = RESV_LOW + ((start + i) % n);
  return out;
}

/** Errors that mean "this source port is taken, try the next". */
function portTaken(code: string | undefined): boolean {
  return code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL';
}

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

function connectOnce(t: SocketTarget, localPort: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const opts: net.NetConnectOpts = { host: t.host, port: t.port, noDelay: true };
    if (t.localAddress) opts.localAddress = t.localAddress;
    if (localPort) opts.localPort = localPort;
    if (t.onread) opts.onread = t.onread;
    const socket = net.connect(opts);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new RpcConnectionError(`connect to ${t.host}:${t.port} timed out after ${t.connectTimeoutMs} ms`, 'ETIMEDOUT'));
    }, t.connectTimeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

export async function openTcp(t: SocketTarget): Promise<net.Socket> {
  const ports = candidatePorts(t);
  let last: unknown = null;
  for (const p of ports) {
    try {
      return await connectOnce(t, p);
    } catch (err) {
      last = err;
      if (!(ports.length > 1 && portTaken(errCode(err)))) break;
    }
  }
  throw toConnectionError(last, t);
}

function bindOnce(t: SocketTarget, localPort: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const type = net.isIPv6(t.host) ? 'udp6' : 'udp4';
    const socket = dgram.createSocket({ type });
    socket.once('error', (err) => {
      socket.close();
      reject(err);
    });
    socket.bind({ port: localPort, address: t.localAddress, exclusive: true }, () => {
      // Connecting filters out datagrams from anyone but the server and lets send() skip the address.
      socket.connect(t.port, t.host, () => {
        socket.removeAllListeners('error');
        try {
          // Room for a burst of replies; the kernel caps it at net.core.rmem_max.
          socket.setRecvBufferSize(4 * 1024 * 1024);
        } catch {
          // keep the default
        }
        resolve(socket);
      });
    });
  });
}

export async function openUdp(t: SocketTarget): Promise<dgram.Socket> {
  const ports = candidatePorts(t);
  let last: unknown = null;
  for (const p of ports) {
    try {
      return await bindOnce(t, p);
    } catch (err) {
      last = err;
      if (!(ports.length > 1 && portTaken(errCode(err)))) break;
    }
  }
  throw toConnectionError(last, t);
}

function toConnectionError(err: unknown, t: SocketTarget): RpcConnectionError {
  if (err instanceof RpcConnectionError) return err;
  const code = errCode(err) ?? null;
  const hint = code === 'EACCES' && t.privileged ? ' (a privileged source port needs root)' : '';
  const msg = err instanceof Error ? err.message : String(err);
  return new RpcConnectionError(`cannot open socket to ${t.host}:${t.port}: ${msg}${hint}`, code);
}
