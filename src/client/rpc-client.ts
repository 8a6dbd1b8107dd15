/**
 * ONC-RPC client over TCP or UDP, built for many simulated nodes in one process: one XdrWriter
 * per client reused for every call, credentials encoded once, any number of calls outstanding on
 * one connection and matched by xid, calls issued in one tick leaving in one write, and a single
 * timer per client instead of one per call.
 *
 * Two ways to call:
 *   - `call(prog, vers, proc, encodeArgs)` resolves with a reader at the results (simple, tests);
 *   - `begin(prog, vers, proc)` returns the writer to encode the arguments into, then
 *     `send(decode)` resolves with the decoded results. No closure per call, and the decode runs
 *     as the reply arrives, so a typed client costs one promise per call. Nothing may await
 *     between begin and send: the writer is shared.
 */
import type dgram from 'node:dgram';
import type net from 'node:net';
import { RecordDecoder, lastFragmentHeader, type RecordViolation } from '../rpc/record.js';
import { XdrReader, XdrWriter } from '../rpc/xdr.js';
import { encodeAuth, type AuthOption } from './rpc-auth.js';
import { RpcConnectionError, RpcTimeoutError } from './rpc-errors.js';
import { readReplyHeader } from './rpc-reply.js';
import { openTcp, openUdp } from './rpc-socket.js';

export { RpcConnectionError, RpcError, RpcTimeoutError, type RpcReplyKind } from './rpc-errors.js';
export { parseReply } from './rpc-reply.js';
export type { AuthOption, AuthSysOptions } from './rpc-auth.js';

export interface RpcClientOptions {
  host: string;
  port: number;
  transport?: 'tcp' | 'udp';
  /** Source address, e.g. 127.0.0.12, so the server sees a distinct client. */
  localAddress?: string;
  /** Fixed source port. */
  localPort?: number;
  /** Bind a source port in 512..1023 (needs root); ignored when localPort is given. */
  privileged?: boolean;
  /** Per-call deadline (ms), over all retransmissions. Default 30 000. */
  timeoutMs?: number;
  /** Default: timeoutMs. */
  connectTimeoutMs?: number;
  /** UDP: wait before the first retransmission (ms), doubling after each. Default 1000. */
  retransmitMs?: number;
  /** UDP: retransmissions after the first send before giving up. Default 5. */
  retries?: number;
  /**
   * UDP: calls on the wire at once; later ones wait their turn. A burst of thousands of datagrams
   * overflows the socket buffers, and since their retransmissions would all fire together, they
   * would overflow them again. Default 64.
   */
  maxInFlight?: number;
  /** AUTH_SYS identity (default uid 0, gid 0) or 'none'. */
  auth?: AuthOption | null;
  /** Largest reply record accepted over TCP; default 16 MiB. */
  maxRecordBytes?: number;
  /** Size of the reusable encode slab; default 64 KiB (grows for large WRITEs). */
  slabBytes?: number;
  /**
   * TCP: receive replies into this buffer, which clients on one thread may share, instead of into
   * a new 64 KiB Buffer per read. A load generator's replies then cost no allocation and a large
   * one arrives in one read, whole, with no copy. The price: decoders given to send/sendCb must
   * copy what they keep (those of Nfs3Client copy handles and verifiers, but READ data is a
   * view); call, callRaw and onUnmatched get copies.
   */
  readBuffer?: Buffer;
}

/** Largest UDP payload over IPv4. */
const MAX_DATAGRAM = 65507;

type Decode = (r: XdrReader) => unknown;
type Callback<T> = (err: Error | null, result: T | undefined) => void;

/** Marks a call whose reply is handed back whole (callRaw). */
const RAW: Decode = (r) => r.buf;

class Pending {
  xid: number;
  decode: Decode;
  resolve: ((v: unknown) => void) | null;
  reject: ((e: Error) => void) | null;
  cb: Callback<unknown> | null;
  deadline: number;
  timeoutMs: number;
  /** UDP only: the datagram to resend, when to resend it and how long the next wait is. */
  datagram: Buffer | null;
  nextSend: number;
  wait: number;
  sends: number;

  constructor(xid: number, decode: Decode, now: number, timeoutMs: number) {
    this.xid = xid;
    this.decode = decode;
    this.resolve = null;
    this.reject = null;
    this.cb = null;
    this.timeoutMs = timeoutMs;
    this.deadline = now + timeoutMs;
    this.datagram = null;
    this.nextSend = Infinity;
    this.wait = 0;
    this.sends = 1;
  }

  settle(err: Error | null, value: unknown): void {
    if (this.cb !== null) this.cb(err, value);
    else if (err !== null) this.reject!(err);
    else this.resolve!(value);
  }
}

export class RpcClient {
  readonly host: string;
  readonly port: number;
  readonly transport: 'tcp' | 'udp';
  /** Records that match no outstanding call: late or duplicate replies, or replies to sendRaw. */
  onUnmatched: ((record: Buffer) => void) | null = null;

  private readonly opts: RpcClientOptions;
  private readonly timeoutMs: number;
  private readonly retransmitMs: number;
  private readonly retries: number;
  private readonly maxInFlight: number;
  private udpInFlight = 0;
  private udpQueue: Pending[] = [];
  private udpQueueHead = 0;
  private readonly w: XdrWriter;
  private auth: Buffer;
  private xid = (Math.random() * 0x100000000) >>> 0;
  private curXid = 0;
  private readonly pending = new Map<number, Pending>();
  private tcp: net.Socket | null = null;
  private udp: dgram.Socket | null = null;
  private decoder: RecordDecoder | null = null;
  private corked = false;
  private closedErr: Error | null = null;
  private closePromise: Promise<void> | null = null;
  private closeWaiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;

  constructor(opts: RpcClientOptions) {
    this.opts = opts;
    this.host = opts.host;
    this.port = opts.port;
    this.transport = opts.transport ?? 'tcp';
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.retransmitMs = opts.retransmitMs ?? 1000;
    this.retries = opts.retries ?? 5;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 64);
    this.w = new XdrWriter(opts.slabBytes ?? 64 * 1024);
    this.auth = encodeAuth(opts.auth);
  }

  static async connect(opts: RpcClientOptions): Promise<RpcClient> {
    const c = new RpcClient(opts);
    await c.connect();
    return c;
  }

  async connect(): Promise<void> {
    const target = {
      host: this.opts.host,
      port: this.opts.port,
      localAddress: this.opts.localAddress,
      localPort: this.opts.localPort,
      privileged: this.opts.privileged,
      connectTimeoutMs: this.opts.connectTimeoutMs ?? this.timeoutMs,
      onread: this.opts.readBuffer ? { buffer: this.opts.readBuffer, callback: this.onRead } : undefined,
    };
    if (this.transport === 'tcp') {
      const s = await openTcp(target);
      this.tcp = s;
      const limit = this.opts.maxRecordBytes ?? 16 * 1024 * 1024;
      this.decoder = new RecordDecoder(
        { onRecord: (rec) => this.onRecord(rec), onViolation: (k, d) => this.onViolation(k, d) },
        { maxRecordBytes: limit, maxFragments: 4096 },
        this.opts.readBuffer !== undefined,
      );
      if (!this.opts.readBuffer) s.on('data', (chunk: Buffer) => this.decoder!.feed(chunk));
      s.on('error', (err: NodeJS.ErrnoException) => this.fail(new RpcConnectionError(`connection error: ${err.message}`, err.code ?? null)));
      s.on('close', () => this.fail(new RpcConnectionError('connection closed')));
    } else {
      const s = await openUdp(target);
      this.udp = s;
      s.on('message', (msg: Buffer) => this.onRecord(msg));
      // ICMP errors (port unreachable) are transient for UDP: the retransmit timer decides.
      s.on('error', () => {});
      s.on('close', () => this.fail(new RpcConnectionError('socket closed')));
    }
  }

  /** Source address and port the server sees. */
  localEndpoint(): { address: string; port: number } {
    if (this.tcp) return { address: this.tcp.localAddress ?? '', port: this.tcp.localPort ?? 0 };
    if (this.udp && !this.closedErr) {
      const a = this.udp.address();
      return { address: a.address, port: a.port };
    }
    return { address: '', port: 0 };
  }

  /** Calls sent and not yet answered. */
  outstanding(): number {
    return this.pending.size;
  }

  /** New identity for the calls begun from now on. */
  setAuth(auth: AuthOption | null): void {
    this.auth = encodeAuth(auth);
  }

  /** Start a call: returns the writer positioned at the procedure arguments. */
  begin(prog: number, vers: number, proc: number, expectedBytes = 1024): XdrWriter {
    const w = this.w;
    const xid = (this.xid = (this.xid + 1) >>> 0);
    this.curXid = xid;
    w.begin(expectedBytes + this.auth.length + 32);
    if (this.transport === 'tcp') w.u32(0); // record mark, patched in send
    w.u32(xid);
    w.u32(0); // CALL
    w.u32(2); // RPC version
    w.u32(prog);
    w.u32(vers);
    w.u32(proc);
    w.fixedOpaque(this.auth);
    return w;
  }

  /** Send the call begun with begin(); resolves with decode(results). */
  send<T>(decode: (r: XdrReader) => T, timeoutMs = this.timeoutMs): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const p = this.dispatch(decode, timeoutMs, this.w.finish());
      if (p === null) return;
      p.resolve = resolve as (v: unknown) => void;
      p.reject = reject;
    });
  }

  /** send() without a promise, for load generators. */
  sendCb<T>(decode: (r: XdrReader) => T, cb: Callback<T>, timeoutMs = this.timeoutMs): void {
    const p = this.dispatch(decode, timeoutMs, this.w.finish(), cb as Callback<unknown>);
    if (p !== null) p.cb = cb as Callback<unknown>;
  }

  call(prog: number, vers: number, proc: number, encodeArgs: ((w: XdrWriter) => void) | null, timeoutMs?: number): Promise<XdrReader> {
    const w = this.begin(prog, vers, proc);
    if (encodeArgs) encodeArgs(w);
    return this.send(readerItself, timeoutMs);
  }

  /**
   * A whole call message of the caller's making (from the xid on), framed as one record (TCP) or
   * one datagram (UDP); `fragments` splits the record into fragments of those sizes (the last
   * takes the rest). Resolves with the whole reply record, whatever it says.
   */
  callRaw(message: Buffer, opts: { fragments?: number[]; timeoutMs?: number } = {}): Promise<Buffer> {
    const xid = message.readUInt32BE(0);
    let bytes = message;
    if (this.transport === 'tcp') bytes = frame(message, opts.fragments ?? []);
    return new Promise<Buffer>((resolve, reject) => {
      const p = this.dispatch(RAW, opts.timeoutMs ?? this.timeoutMs, bytes, null, xid);
      if (p === null) return;
      p.resolve = resolve as (v: unknown) => void;
      p.reject = reject;
    });
  }

  /** Bytes exactly as given: no record mark over TCP, one datagram over UDP. Replies go to onUnmatched. */
  sendRaw(bytes: Buffer): void {
    if (this.closedErr) throw this.closedErr;
    if (this.tcp) this.tcp.write(bytes);
    else this.udp!.send(bytes);
  }

  /** A call message (no record mark) built with this client's credentials, for callRaw. */
  encodeCall(prog: number, vers: number, proc: number, encodeArgs: ((w: XdrWriter) => void) | null): Buffer {
    const w = this.begin(prog, vers, proc);
    if (encodeArgs) encodeArgs(w);
    const msg = w.finish();
    return Buffer.from(this.transport === 'tcp' ? msg.subarray(4) : msg);
  }

  /** Resolves when the connection is gone, whoever closed it. */
  closed(): Promise<void> {
    if (this.closedErr) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  /**
   * `reset`: end a TCP connection with RST instead of FIN, leaving no TIME_WAIT socket on its
   * local port (for 60 s such a socket keeps a server from listening on that port).
   */
  close(reset = false): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closePromise = new Promise<void>((resolve) => {
      const tcp = this.tcp;
      const udp = this.udp;
      if (tcp && !tcp.destroyed) tcp.once('close', () => resolve());
      else if (udp && !this.closedErr) udp.once('close', () => resolve());
      else resolve();
      this.fail(new RpcConnectionError('client closed')); // closes the UDP socket
      if (reset && tcp && !tcp.destroyed) tcp.resetAndDestroy();
      else tcp?.destroy();
    });
    return this.closePromise;
  }

  private dispatch(decode: Decode, timeoutMs: number, bytes: Buffer, cb: Callback<unknown> | null = null, xid = this.curXid): Pending | null {
    if (this.closedErr || (this.tcp === null && this.udp === null)) {
      const err = this.closedErr ?? new RpcConnectionError('not connected: call connect() first');
      if (cb === null) throw err; // callers run inside a promise executor: the throw rejects it
      process.nextTick(cb, err, undefined);
      return null;
    }
    if (this.transport === 'tcp' && decode !== RAW) bytes.writeUInt32BE(lastFragmentHeader(bytes.length - 4), 0);
    const now = Date.now();
    const p = new Pending(xid, decode, now, timeoutMs);
    this.pending.set(xid, p);
    if (this.tcp) {
      if (!this.corked) {
        this.corked = true;
        this.tcp.cork();
        process.nextTick(this.uncork);
      }
      this.tcp.write(bytes);
      this.schedule(p.deadline);
    } else {
      if (bytes.length > MAX_DATAGRAM) {
        this.pending.delete(xid);
        const err = new RangeError(`call of ${bytes.length} bytes does not fit in a UDP datagram`);
        if (cb === null) throw err;
        process.nextTick(cb, err, undefined);
        return null;
      }
      p.datagram = bytes;
      if (this.udpInFlight < this.maxInFlight) this.transmit(p, now);
      else {
        p.sends = 0;
        p.deadline = Infinity; // the clock starts when the call goes out
        this.udpQueue.push(p);
      }
    }
    return p;
  }

  private transmit(p: Pending, now: number): void {
    this.udpInFlight++;
    p.sends = 1;
    p.deadline = now + p.timeoutMs;
    p.wait = this.retransmitMs;
    p.nextSend = Math.min(now + p.wait, p.deadline);
    this.udp!.send(p.datagram!);
    this.schedule(p.nextSend);
  }

  /** A call left `pending`: over UDP its slot goes to the next queued call. */
  private release(p: Pending): void {
    if (p.datagram === null || p.sends === 0) return;
    this.udpInFlight--;
    const q = this.udpQueue;
    let now = 0;
    while (this.udpInFlight < this.maxInFlight && this.udpQueueHead < q.length) {
      const next = q[this.udpQueueHead++];
      if (this.pending.get(next.xid) !== next) continue;
      if (now === 0) now = Date.now();
      this.transmit(next, now);
    }
    if (this.udpQueueHead === q.length) {
      q.length = 0;
      this.udpQueueHead = 0;
    } else if (this.udpQueueHead > 1024 && this.udpQueueHead * 2 > q.length) {
      this.udpQueue = q.slice(this.udpQueueHead);
      this.udpQueueHead = 0;
    }
  }

  private readonly onRead = (n: number, buf: Buffer): boolean => {
    // Before connect resolves nothing can arrive: the server speaks only when called.
    this.decoder?.feed(buf.subarray(0, n));
    return true;
  };

  private readonly uncork = (): void => {
    this.corked = false;
    this.tcp?.uncork();
  };

  private onRecord(rec: Buffer): void {
    if (rec.length < 4) return;
    const xid = rec.readUInt32BE(0);
    const p = this.pending.get(xid);
    if (p === undefined) {
      if (this.onUnmatched) this.onUnmatched(this.keepable(rec));
      return;
    }
    this.pending.delete(xid);
    this.release(p);
    // These hand the record itself on, to be read after this returns.
    if (p.decode === RAW || p.decode === readerItself) rec = this.keepable(rec);
    let value: unknown;
    try {
      if (p.decode === RAW) value = rec;
      else {
        const r = new XdrReader(rec, 4, rec.length);
        readReplyHeader(r, xid);
        value = p.decode(r);
      }
    } catch (err) {
      p.settle(err as Error, undefined);
      return;
    }
    p.settle(null, value);
  }

  /** The record, or a copy of it when it lies in the reused read buffer. */
  private keepable(rec: Buffer): Buffer {
    return this.opts.readBuffer === undefined ? rec : Buffer.from(rec);
  }

  private onViolation(kind: RecordViolation, detail: number): void {
    this.fail(new RpcConnectionError(`reply violates record limits: ${kind} (${detail})`));
    this.tcp?.destroy();
  }

  /** Keep one timer, due at the earliest deadline or retransmission we know of. */
  private schedule(at: number): void {
    if (at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.max(1, at - Date.now()));
    this.timer.unref();
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    this.timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const p of this.pending.values()) {
      if (p.datagram !== null && p.nextSend <= now && p.nextSend < p.deadline) {
        if (p.sends > this.retries) p.deadline = now; // out of retransmissions: the last wait is over
        else {
          p.sends++;
          p.wait *= 2;
          p.nextSend = Math.min(now + p.wait, p.deadline);
          this.udp?.send(p.datagram);
        }
      }
      if (p.deadline <= now) {
        this.pending.delete(p.xid);
        this.release(p);
        p.settle(new RpcTimeoutError(p.xid, p.sends, p.timeoutMs), undefined);
        continue;
      }
      const due = p.datagram !== null && p.nextSend < p.deadline ? p.nextSend : p.deadline;
      if (due < next) next = due;
    }
    if (next !== Infinity) this.schedule(next);
  };

  /** The connection is unusable: every outstanding and later call fails with `err`. */
  private fail(err: Error): void {
    if (this.closedErr) return;
    this.closedErr = err;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    this.udpQueue = [];
    this.udpQueueHead = 0;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.settle(err, undefined);
    if (this.udp) {
      try {
        this.udp.close();
      } catch {
        // already closed
      }
    }
    for (const w of this.closeWaiters) w();
    this.closeWaiters = [];
  }
}

function readerItself(r: XdrReader): XdrReader {
  return r;
}

/** Record marking with chosen fragment sizes, for tests of the server's record decoder. */
export function frame(message: Buffer, fragments: number[]): Buffer {
  const parts: Buffer[] = [];
  let off = 0;
  for (let i = 0; i <= fragments.length; i++) {
    const last = i === fragments.length;
    const len = last ? message.length - off : Math.min(fragments[i], message.length - off);
    const hdr = Buffer.allocUnsafe(4);
    hdr.writeUInt32BE(last ? lastFragmentHeader(len) : len, 0);
    parts.push(hdr, message.subarray(off, off + len));
    off += len;
  }
  return Buffer.concat(parts);
}
