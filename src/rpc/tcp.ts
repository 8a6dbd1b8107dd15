/**
 * RPC over TCP: record marking in, replies out in any order, batched so that every reply that is
 * ready in one turn of the event loop leaves in one write. A large READ reply may instead go out
 * from its file on a thread of the sendfile addon (send-range.ts); the connection's other
 * replies, and its new calls, wait until it has.
 */
import net from 'node:net';
import os from 'node:os';
import { componentLogger } from '../log/logger.js';
import type { ReplySink, RpcDispatcher } from './dispatch.js';
import { ConnectionGuard, LimitId, standaloneGuard, type LimitHits, type ServerLimits } from './limits.js';
import { payloadPool } from './payload-pool.js';
import { RecordDecoder, type RecordSink, type RecordViolation } from './record.js';
import { sendRangeAddon } from './send-range.js';

const log = componentLogger('tcp');

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

/**
 * A coarse clock for idle bookkeeping, advanced by the transports' sweep timers, so that noting
 * activity on every received chunk costs a field store, not a clock read.
 */
let coarseNow = Date.now();

const LARGEST_REPLY = 1024 * 1024 + 512;

const { EPIPE, ECONNRESET } = os.constants.errno;
/** A file send still running after this long is waiting for a client that does not read. */
const STALLED_FILE_SEND_MS = 1000;

/** Native file sends running, server-wide; beyond one per addon thread, READs are copied instead of queued. */
let fileSends = 0;

class TcpConnection implements ReplySink, RecordSink {
  readonly tcp = true;
  readonly address: string;
  readonly port: number;
  /** The local address this client reached; the portmapper answers GETADDR with it. */
  readonly localAddress: string;
  inFlight = 0;
  readonly socket: net.Socket;
  readonly decoder: RecordDecoder;
  private readonly dispatcher: RpcDispatcher;
  private readonly limits: ServerLimits;
  private readonly hits: LimitHits;
  private isCorked = false;
  /** Reads stopped because of our limits (not the client's fault for the stalled-record timer). */
  pausedForLoad = false;
  /** This pause has been counted (and logged) as a limit hit. */
  private pauseCounted = false;
  lastActivity = coarseNow;
  /** When the record now being received began; 0 when between records. */
  partialSince = 0;
  private recordsSeen = 0;
  /**
   * Running average reply size: what each call in flight is expected to add to the unsent bytes.
   * It starts at the largest reply (a 1 MiB READ), so a new connection that pipelines a burst of
   * large READs is held to a few in flight before the first reply shows what its calls cost.
   */
  private replyEstimate = LARGEST_REPLY;
  /**
   * Pooled payloads handed to the socket, oldest first. Write callbacks run in write order, so
   * each successful one releases the oldest; after an error only 'close' (the handle is closed,
   * libuv holds no iovec any more) releases what is left.
   */
  private readonly lentPayloads: Buffer[] = [];
  private readonly onPayloadWritten: (err?: Error | null) => void;
  /** While a native file send runs: its duplicate descriptor (for abort), else -1. */
  private fileSendFd = -1;
  /** Replies made while a file send runs (head, payload, pad, ...), written in order after it. */
  private readonly heldReplies: Array<Buffer | null> = [];
  /** Bytes of the running file send and of the held replies: unsent, like Node's writableLength. */
  private fileSendBytes = 0;
  /** When the running file send began (coarse clock), to tell a client that stopped reading. */
  private fileSendSince = 0;

  constructor(socket: net.Socket, address: string, dispatcher: RpcDispatcher, limits: ServerLimits, hits: LimitHits) {
    this.socket = socket;
    this.dispatcher = dispatcher;
    this.limits = limits;
    this.hits = hits;
    this.address = address;
    this.port = socket.remotePort ?? 0;
    this.localAddress = normalizeAddress(socket.localAddress);
    this.decoder = new RecordDecoder(this, limits);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => {
      this.lastActivity = coarseNow;
      this.maybeResume();
    });
    socket.on('error', (err) => log.debug({ client: this.address, err: err.message }, 'connection error'));
    this.onPayloadWritten = (err) => {
      if (err || socket.destroyed) return;
      const written = this.lentPayloads.shift();
      if (written !== undefined) payloadPool.release(written);
    };
    socket.on('close', () => {
      const lent = this.lentPayloads;
      for (let i = 0; i < lent.length; i++) payloadPool.release(lent[i]);
      lent.length = 0;
      // A file send to a connection that is gone would otherwise wait out the stall timeout.
      if (this.fileSendFd !== -1) sendRangeAddon!.abort(this.fileSendFd);
    });
  }

  private onData(chunk: Buffer): void {
    this.lastActivity = coarseNow;
    const decoder = this.decoder;
    decoder.feed(chunk);
    if (!decoder.hasPartial()) this.partialSince = 0;
    else if (this.partialSince === 0 || decoder.recordsDone !== this.recordsSeen) this.partialSince = coarseNow;
    this.recordsSeen = decoder.recordsDone;
  }

  onRecord(record: Buffer): boolean {
    this.dispatcher.dispatch(record, this);
    if (this.fileSendFd !== -1) {
      // No new calls while a reply goes out from a file: of a client that stops reading, the
      // replies would pile up here (held behind the send) instead of in the kernel's buffers.
      this.pauseQuietly();
      return false;
    }
    // Checked after every record, so a chunk full of pipelined calls cannot overshoot the limits.
    const limits = this.limits;
    if (this.inFlight >= limits.maxCallsPerConnection) {
      this.pauseForLoad(LimitId.calls_per_connection, this.inFlight);
      return false;
    }
    const unsent = this.unsentBytes();
    if (unsent + this.inFlight * this.replyEstimate >= limits.maxUnsentBytesPerConnection) {
      // Holding back calls whose replies are still being made is pacing; only a client that
      // leaves its replies unread is worth a count and a log line.
      if (unsent * 2 >= limits.maxUnsentBytesPerConnection) this.pauseForLoad(LimitId.unsent_bytes, unsent);
      else this.pauseQuietly();
      return false;
    }
    return true;
  }

  onViolation(kind: RecordViolation, detail: number): void {
    this.hits.hit(kind === 'record-too-large' ? LimitId.record_size : LimitId.fragments, this.address, this.port, detail);
    this.socket.destroy();
  }

  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    const socket = this.socket;
    if (socket.destroyed) {
      if (payload !== null) payloadPool.release(payload);
      return;
    }
    if (this.fileSendFd !== -1) {
      // The socket is the file send's until it ends: Node writing now would interleave records.
      this.heldReplies.push(head, payload, pad);
      this.fileSendBytes += head.length + (payload !== null ? payload.length : 0) + (pad !== null ? pad.length : 0);
      return;
    }
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
    let size = head.length;
    if (payload !== null) {
      if (payloadPool.isLent(payload)) {
        this.lentPayloads.push(payload);
        socket.write(payload, this.onPayloadWritten);
      } else {
        socket.write(payload);
      }
      size += payload.length;
    }
    if (pad !== null) socket.write(pad);
    // Weight 1/8 on the newest reply: a client that switches to large READs is throttled within a few calls.
    this.replyEstimate += (size - this.replyEstimate) >> 3;
    this.maybeResume();
  }

  done(): void {
    this.maybeResume();
  }

  canSendFile(): boolean {
    const socket = this.socket;
    // Only with nothing of Node's still to write (corked replies count), so bytes stay in order.
    return (
      sendRangeAddon !== null &&
      fileSends < sendRangeAddon.threads &&
      this.fileSendFd === -1 &&
      !socket.destroyed &&
      socket.writableLength === 0 &&
      typeof socketFd(socket) === 'number'
    );
  }

  sendFile(head: Buffer, fd: number, position: number, length: number, pad: Buffer | null): Promise<void> {
    return new Promise((resolve) => {
      const finished = (errno: number, sent: number): void => {
        fileSends--;
        this.fileSendFd = -1;
        this.fileSendBytes = 0;
        this.lastActivity = coarseNow;
        if (errno !== 0) {
          // Part of a record may be on the wire: the stream cannot go on. The client reconnects and retries.
          const detail = { client: this.address, errno, sent, of: head.length + length + (pad ? pad.length : 0) };
          if (errno === EPIPE || errno === ECONNRESET) log.debug(detail, 'client went away during a READ reply from file');
          else log.info(detail, 'READ reply from file failed (stalled client, or the file shrank); closing connection');
          this.socket.destroy();
        }
        this.writeHeld();
        this.replyEstimate += (head.length + length - this.replyEstimate) >> 3;
        this.maybeResume();
        resolve();
      };
      fileSends++;
      this.fileSendSince = coarseNow;
      this.fileSendBytes = head.length + length + (pad !== null ? pad.length : 0);
      try {
        this.fileSendFd = sendRangeAddon!.start(socketFd(this.socket)!, fd, position, length, head, pad, this.limits.partialRecordTimeoutMs, finished);
        if (!this.pausedForLoad) this.pauseQuietly(); // see onRecord; finished() resumes
      } catch (err) {
        fileSends--;
        this.fileSendBytes = 0;
        log.error({ client: this.address, err }, 'READ reply from file could not start; closing connection');
        this.socket.destroy();
        resolve();
      }
    });
  }

  /** What this connection has to write and the kernel does not have yet. */
  private unsentBytes(): number {
    return this.socket.writableLength + this.fileSendBytes;
  }

  /** The replies held during a file send, now in order (or released if the connection died). */
  private writeHeld(): void {
    const held = this.heldReplies;
    if (held.length === 0) return;
    for (let i = 0; i < held.length; i += 3) this.send(held[i]!, held[i + 1], held[i + 2]);
    held.length = 0;
  }

  flush(): void {
    this.isCorked = false;
    this.socket.uncork();
  }

  private pauseForLoad(limit: number, detail: number): void {
    this.pauseQuietly();
    this.pauseCounted = true;
    this.hits.hit(limit, this.address, this.port, detail);
  }

  private pauseQuietly(): void {
    this.pausedForLoad = true;
    this.pauseCounted = false;
    this.socket.pause();
  }

  private maybeResume(): void {
    if (!this.pausedForLoad || this.socket.destroyed || this.fileSendFd !== -1) return;
    const limits = this.limits;
    if (this.inFlight >= limits.maxCallsPerConnection) return;
    const unsent = this.unsentBytes();
    if (unsent + this.inFlight * this.replyEstimate >= limits.maxUnsentBytesPerConnection) {
      // A pause that began as pacing and stays because the replies are not being read.
      if (!this.pauseCounted && unsent * 2 >= limits.maxUnsentBytesPerConnection) this.pauseForLoad(LimitId.unsent_bytes, unsent);
      return;
    }
    this.pausedForLoad = false;
    // The held records may stop us again; only read from the socket if they did not.
    this.decoder.resume();
    if (!this.pausedForLoad) this.socket.resume();
  }

  /** Called by the sweep: closes the connection if one of the timeouts ran out. */
  expired(now: number): boolean {
    if (this.fileSendFd !== -1 && !this.pauseCounted && now - this.fileSendSince >= STALLED_FILE_SEND_MS) {
      // Its calls have waited behind this send (onRecord) for a while: a client not reading its
      // replies, worth the same count and log line as one whose unsent replies fill our memory.
      this.pauseCounted = true;
      this.hits.hit(LimitId.unsent_bytes, this.address, this.port, this.fileSendBytes);
    }
    if (this.partialSince !== 0 && !this.pausedForLoad && now - this.partialSince >= this.limits.partialRecordTimeoutMs) {
      this.hits.hit(LimitId.partial_record_timeout, this.address, this.port, now - this.partialSince);
      this.socket.destroy();
      return true;
    }
    if (now - this.lastActivity >= this.limits.idleTimeoutMs) {
      this.hits.hit(LimitId.idle_timeout, this.address, this.port, now - this.lastActivity);
      this.socket.destroy();
      return true;
    }
    return false;
  }
}

/** The socket's descriptor (Node keeps it on the handle; absent for a socket not yet or no longer open). */
function socketFd(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export class TcpTransport {
  private readonly server: net.Server;
  private readonly connections_ = new Set<TcpConnection>();
  private readonly guard: ConnectionGuard;
  private sweepTimer: NodeJS.Timeout | null = null;

  /** `guard` carries the limits and is shared by the transports of one server (connection totals). */
  constructor(dispatcher: RpcDispatcher, guard: ConnectionGuard = standaloneGuard()) {
    this.guard = guard;
    const limits = guard.limits;
    this.server = net.createServer({ noDelay: true }, (socket) => {
      const address = normalizeAddress(socket.remoteAddress);
      if (!guard.admit(address, socket.remotePort ?? 0)) {
        socket.on('error', () => {});
        socket.destroy();
        return;
      }
      const conn = new TcpConnection(socket, address, dispatcher, limits, guard.hits);
      this.connections_.add(conn);
      socket.on('close', () => {
        this.connections_.delete(conn);
        guard.release(address);
      });
    });
  }

  private sweep(): void {
    const now = Date.now();
    coarseNow = now;
    for (const conn of this.connections_) conn.expired(now);
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen({ port, host, exclusive: true }, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => log.error({ err }, 'TCP server error'));
        const limits = this.guard.limits;
        // A quarter of the shorter timeout: a stalled connection lives at most 25% past its limit.
        const every = Math.max(50, Math.min(1000, Math.min(limits.partialRecordTimeoutMs, limits.idleTimeoutMs) / 4));
        this.sweepTimer = setInterval(() => this.sweep(), every);
        this.sweepTimer.unref();
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  connections(): number {
    return this.connections_.size;
  }

  close(): Promise<void> {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    for (const c of this.connections_) c.socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
