/**
 * RPC over TCP: record marking in, replies out in any order, batched so that every reply that is
 * ready in one turn of the event loop leaves in one write.
 */
import net from 'node:net';
import { componentLogger } from '../log/logger.js';
import type { ReplySink, RpcDispatcher } from './dispatch.js';
import { RecordDecoder, type RecordLimits, type RecordSink, type RecordViolation } from './record.js';

const log = componentLogger('tcp');

export interface TcpLimits extends RecordLimits {
  /** Calls dispatched and not yet answered before we stop reading from the connection. */
  maxInFlightPerConnection: number;
  /** Unsent reply bytes before we stop reading from the connection (backpressure). */
  maxUnsentBytesPerConnection: number;
  /** Close a connection that has been silent this long (ms); sooner if it stalled mid-record. */
  idleTimeoutMs: number;
  partialRecordTimeoutMs: number;
}

export const DEFAULT_TCP_LIMITS: TcpLimits = {
  maxRecordBytes: 1024 * 1024 + 64 * 1024,
  maxFragments: 64,
  maxInFlightPerConnection: 128,
  maxUnsentBytesPerConnection: 16 * 1024 * 1024,
  idleTimeoutMs: 6 * 60 * 1000,
  partialRecordTimeoutMs: 30 * 1000,
};

/** Strip the IPv4-mapped prefix so exports and tags see 10.0.0.7, not ::ffff:10.0.0.7. */
export function normalizeAddress(address: string | undefined): string {
  if (!address) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

// Connections with replies written during this turn; one setImmediate uncorks them all.
const corked: TcpConnection[] = [];
let flushScheduled = false;

function flushCorked(): void {
  flushScheduled = false;
  for (let i = 0; i < corked.length; i++) corked[i].flush();
  corked.length = 0;
}

class TcpConnection implements ReplySink, RecordSink {
  readonly tcp = true;
  readonly address: string;
  readonly port: number;
  /** The local address this client reached; the portmapper answers GETADDR with it. */
  readonly localAddress: string;
  inFlight = 0;
  private readonly socket: net.Socket;
  private readonly decoder: RecordDecoder;
  private readonly dispatcher: RpcDispatcher;
  private readonly limits: TcpLimits;
  private isCorked = false;
  private pausedForLoad = false;
  private lastActivity = Date.now();

  constructor(socket: net.Socket, dispatcher: RpcDispatcher, limits: TcpLimits) {
    this.socket = socket;
    this.dispatcher = dispatcher;
    this.limits = limits;
    this.address = normalizeAddress(socket.remoteAddress);
    this.port = socket.remotePort ?? 0;
    this.localAddress = normalizeAddress(socket.localAddress);
    this.decoder = new RecordDecoder(this, limits);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.maybeResume());
    socket.on('error', (err) => log.debug({ client: this.address, err: err.message }, 'connection error'));
    socket.setTimeout(Math.min(limits.idleTimeoutMs, limits.partialRecordTimeoutMs), () => this.onTimeout());
  }

  private onData(chunk: Buffer): void {
    this.lastActivity = Date.now();
    this.decoder.feed(chunk);
    this.maybePause();
  }

  onRecord(record: Buffer): void {
    this.dispatcher.dispatch(record, this);
  }

  onViolation(kind: RecordViolation, detail: number): void {
    log.warn({ client: this.address, port: this.port, kind, detail }, 'record limit exceeded, closing connection');
    this.socket.destroy();
  }

  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    const socket = this.socket;
    if (socket.destroyed) return;
    if (!this.isCorked) {
      this.isCorked = true;
      socket.cork();
      corked.push(this);
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flushCorked);
      }
    }
    socket.write(head);
    if (payload !== null) socket.write(payload);
    if (pad !== null) socket.write(pad);
    this.maybeResume();
  }

  done(): void {
    this.maybeResume();
  }

  flush(): void {
    this.isCorked = false;
    this.socket.uncork();
  }

  private maybePause(): void {
    if (this.pausedForLoad) return;
    if (this.inFlight >= this.limits.maxInFlightPerConnection || this.socket.writableLength >= this.limits.maxUnsentBytesPerConnection) {
      this.pausedForLoad = true;
      this.socket.pause();
      log.debug({ client: this.address, inFlight: this.inFlight, unsent: this.socket.writableLength }, 'pausing reads (backpressure)');
    }
  }

  private maybeResume(): void {
    if (!this.pausedForLoad) return;
    if (this.inFlight < this.limits.maxInFlightPerConnection && this.socket.writableLength < this.limits.maxUnsentBytesPerConnection) {
      this.pausedForLoad = false;
      this.socket.resume();
    }
  }

  private onTimeout(): void {
    const idle = Date.now() - this.lastActivity;
    if (this.decoder.hasPartial() && idle >= this.limits.partialRecordTimeoutMs) {
      log.warn({ client: this.address, port: this.port, idleMs: idle }, 'closing connection stalled mid-record');
      this.socket.destroy();
    } else if (this.inFlight === 0 && idle >= this.limits.idleTimeoutMs) {
      log.info({ client: this.address, port: this.port, idleMs: idle }, 'closing idle connection');
      this.socket.destroy();
    }
  }
}

export class TcpTransport {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(dispatcher: RpcDispatcher, limits: TcpLimits = DEFAULT_TCP_LIMITS) {
    this.server = net.createServer({ noDelay: true }, (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      new TcpConnection(socket, dispatcher, limits);
    });
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen({ port, host, exclusive: true }, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => log.error({ err }, 'TCP server error'));
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  connections(): number {
    return this.sockets.size;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
