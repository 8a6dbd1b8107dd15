/**
 * RPC over UDP: one call per datagram, one reply datagram back to the sender.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { componentLogger } from '../log/logger.js';
import type { ReplySink, RpcDispatcher } from './dispatch.js';
import { payloadPool } from './payload-pool.js';
import { normalizeAddress } from './tcp.js';

const log = componentLogger('udp');

/** Largest UDP payload over IPv4; a reply that does not fit is dropped with a log line. */
const MAX_DATAGRAM = 65507;

class UdpSender implements ReplySink {
  readonly tcp = false;
  readonly address: string;
  readonly port: number;
  inFlight = 0;
  private readonly socket: dgram.Socket;
  private readonly rawAddress: string;

  constructor(socket: dgram.Socket, rawAddress: string, port: number) {
    this.socket = socket;
    this.rawAddress = rawAddress;
    this.address = normalizeAddress(rawAddress);
    this.port = port;
  }

  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    const size = head.length + (payload ? payload.length : 0) + (pad ? pad.length : 0);
    if (size > MAX_DATAGRAM) {
      log.warn({ client: this.address, bytes: size }, 'reply too large for a UDP datagram, dropped (client should use a smaller rsize)');
      if (payload !== null) payloadPool.release(payload);
      return;
    }
    const parts = payload === null ? head : pad === null ? [head, payload] : [head, payload, pad];
    // The callback runs once the datagram has left (or failed): only then is a pooled payload free.
    this.socket.send(parts, this.port, this.rawAddress, (err) => {
      if (payload !== null) payloadPool.release(payload);
      if (err) log.debug({ client: this.address, err: err.message }, 'UDP send failed');
    });
  }

  done(): void {}
}

export class UdpTransport {
  private socket: dgram.Socket | null = null;
  private readonly dispatcher: RpcDispatcher;

  constructor(dispatcher: RpcDispatcher) {
    this.dispatcher = dispatcher;
  }

  listen(port: number, host: string): Promise<number> {
    const socket = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', reuseAddr: false });
    this.socket = socket;
    return new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind({ port, address: host, exclusive: true }, () => {
        socket.off('error', reject);
        socket.on('error', (err) => log.error({ err }, 'UDP socket error'));
        socket.on('message', (msg, rinfo) => this.dispatcher.dispatch(msg, new UdpSender(socket, rinfo.address, rinfo.port)));
        resolve(socket.address().port);
      });
    });
  }

  close(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return Promise.resolve();
    return new Promise((resolve) => socket.close(() => resolve()));
  }
}
