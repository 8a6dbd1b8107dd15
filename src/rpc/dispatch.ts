/**
 * Program dispatch: one table per program version says, for each procedure, its handler and its
 * flags. Read-only exports, the reply cache and metric labels all read the same table.
 *
 * A handler decodes its arguments synchronously from `call.args` (a view of the received record),
 * does its work (possibly awaiting the file system), then encodes its reply in one synchronous
 * stretch between `call.beginReply()` and `call.send()`, because the reply writer is shared.
 */
import { componentLogger } from '../log/logger.js';
import { RateLimitedLog } from '../log/rate-limited.js';
import {
  AcceptStat,
  AuthFlavor,
  AuthStat,
  CredMemo,
  decodeCallHeader,
  RPC_VERSION,
  writeAcceptedHeader,
  writeAuthError,
  writeProgMismatch,
  writeRpcMismatch,
  type Credentials,
} from './message.js';
import { payloadPool } from './payload-pool.js';
import { lastFragmentHeader } from './record.js';
import { CacheState, replyCacheKey, type ReplyCache } from './reply-cache.js';
import { XdrError, XdrReader, XdrWriter } from './xdr.js';

const log = componentLogger('rpc');
/** Lines a client can provoke with every packet it sends. */
const hostile = new RateLimitedLog(log);

/** Where a call came from and how to answer it: one per TCP connection, one per UDP datagram. */
export interface ReplySink {
  readonly tcp: boolean;
  readonly address: string;
  readonly port: number;
  /** The local address the client reached, when the transport knows it (TCP). */
  readonly localAddress?: string;
  /** Calls of this sink that have been dispatched and not yet answered or dropped. */
  inFlight: number;
  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void;
  /** A call ended without a reply (dropped retransmission, undecodable record). */
  done(): void;
  /** True when sendFile would start now (TCP with the native addon, nothing else being written). */
  canSendFile?(): boolean;
  /**
   * Sends `head`, `length` bytes of the open file `fd` from `position`, then `pad`, without
   * copying the bytes through the process; settles once they are in the socket or the connection
   * was closed for failing (it never rejects). Only right after canSendFile() said yes.
   */
  sendFile?(head: Buffer, fd: number, position: number, length: number, pad: Buffer | null): Promise<void>;
}

export type Handler = (call: RpcCall) => void | Promise<void>;

export interface ProcedureSpec {
  name: string;
  handler: Handler;
  /** Changes server state: refused on read-only exports (NFS3ERR_ROFS). */
  mutates: boolean;
  /** Not idempotent: a retransmission must get the first reply (duplicate-request cache). */
  nonIdempotent: boolean;
  /** Needs an identity: AUTH_SYS, or AUTH_NONE mapped to the anonymous user. */
  needsCred: boolean;
}

export interface ProgramVersion {
  version: number;
  /** Indexed by procedure number; holes are PROC_UNAVAIL. */
  procedures: (ProcedureSpec | undefined)[];
}

export interface Program {
  program: number;
  name: string;
  versions: ProgramVersion[];
}

const PADS = [null, Buffer.alloc(1), Buffer.alloc(2), Buffer.alloc(3)];

/** One shared writer for every reply of this process (see the file comment). */
const replyWriter = new XdrWriter();

/** Observes every dispatched call; the metrics module implements it. */
export interface CallObserver {
  onReply(call: RpcCall, replyBytes: number): void;
}

export class RpcCall {
  readonly xid: number;
  readonly prog: number;
  readonly vers: number;
  readonly proc: number;
  readonly cred: Credentials;
  readonly args: XdrReader;
  readonly sink: ReplySink;
  readonly spec: ProcedureSpec;
  readonly startedAt: number;
  /**
   * Set by the dispatcher when this call is tracked by the reply cache: send() stores the reply
   * under it, drop() forgets it. A field rather than a wrapped send keeps one shape for all calls.
   */
  cacheKey: string | null = null;
  private replied = false;
  private readonly dispatcher: RpcDispatcher;

  constructor(
    dispatcher: RpcDispatcher,
    sink: ReplySink,
    xid: number,
    prog: number,
    vers: number,
    proc: number,
    cred: Credentials,
    args: XdrReader,
    spec: ProcedureSpec,
  ) {
    this.dispatcher = dispatcher;
    this.sink = sink;
    this.xid = xid;
    this.prog = prog;
    this.vers = vers;
    this.proc = proc;
    this.cred = cred;
    this.args = args;
    this.spec = spec;
    this.startedAt = performance.now();
  }

  get answered(): boolean {
    return this.replied;
  }

  /** Starts a SUCCESS reply and returns the writer positioned at the procedure's results. */
  beginReply(expected = 512): XdrWriter {
    const w = replyWriter;
    w.begin(expected + 32);
    if (this.sink.tcp) w.u32(0);
    writeAcceptedHeader(w, this.xid, AcceptStat.SUCCESS);
    return w;
  }

  /**
   * Sends the reply begun with beginReply. `payload` is appended after the encoded bytes without
   * copying (READ data); the writer must already hold its XDR length, and its padding is added here.
   * A payload from the payload pool belongs to the sink from here on: it releases it once written.
   */
  send(payload: Buffer | null = null): void {
    if (this.replied) {
      // Nobody will write it: a pooled READ buffer goes straight back.
      if (payload !== null) payloadPool.release(payload);
      return;
    }
    this.replied = true;
    const w = replyWriter;
    const payloadLen = payload ? payload.length : 0;
    const pad = payloadLen & 3 ? PADS[4 - (payloadLen & 3)] : null;
    const total = w.length() + payloadLen + (pad ? pad.length : 0);
    if (this.sink.tcp) w.patchU32(0, lastFragmentHeader(total - 4));
    const head = w.finish();
    this.sink.inFlight--;
    this.sink.send(head, payload, pad);
    // Every reply is cached, SYSTEM_ERR and GARBAGE_ARGS from fail() too: it was the answer.
    if (this.cacheKey !== null) this.dispatcher.replyCache?.complete(this.cacheKey, head, payload, pad);
    this.dispatcher.observer?.onReply(this, total);
  }

  /**
   * Like send(), with the payload `length` bytes of the open file `fd` from `position`, sent by the
   * sink straight from the file (only after sink.canSendFile() said yes). The promise settles
   * when the bytes are in the socket; the descriptor must stay open until then.
   */
  sendFile(fd: number, position: number, length: number): Promise<void> {
    if (this.replied) return Promise.resolve();
    this.replied = true;
    const w = replyWriter;
    const pad = length & 3 ? PADS[4 - (length & 3)] : null;
    const total = w.length() + length + (pad ? pad.length : 0);
    w.patchU32(0, lastFragmentHeader(total - 4));
    const head = w.finish();
    this.sink.inFlight--;
    const sent = this.sink.sendFile!(head, fd, position, length, pad);
    this.dispatcher.observer?.onReply(this, total);
    return sent;
  }

  /** An accepted reply with a non-SUCCESS accept_stat and no body. */
  replyAccept(stat: AcceptStat): void {
    if (this.replied) return;
    const w = replyWriter;
    w.begin(64);
    if (this.sink.tcp) w.u32(0);
    writeAcceptedHeader(w, this.xid, stat);
    this.send(null);
  }

  /** Handler failure: undecodable arguments are GARBAGE_ARGS; anything else SYSTEM_ERR. */
  fail(err: unknown): void {
    if (this.replied) {
      log.error({ err, client: this.sink.address, xid: this.xid, proc: this.spec.name }, 'handler failed after replying');
      return;
    }
    if (err instanceof XdrError) {
      hostile.warn({ client: this.sink.address, xid: this.xid, proc: this.spec.name, reason: err.message }, 'garbage arguments');
      this.replyAccept(AcceptStat.GARBAGE_ARGS);
    } else {
      log.error({ err, client: this.sink.address, xid: this.xid, proc: this.spec.name }, 'procedure failed');
      this.replyAccept(AcceptStat.SYSTEM_ERR);
    }
  }

  /** Ends the call without any reply (e.g. a retransmission of a call still running). */
  drop(): void {
    if (this.replied) return;
    this.replied = true;
    this.sink.inFlight--;
    // No answer to remember: a retransmission should run the call (knfsd's RC_NOCACHE).
    if (this.cacheKey !== null) this.dispatcher.replyCache?.abandon(this.cacheKey);
    this.sink.done();
  }
}

interface ProgramEntry {
  program: Program;
  low: number;
  high: number;
  byVersion: Map<number, ProgramVersion>;
}

export class RpcDispatcher {
  private readonly programs = new Map<number, ProgramEntry>();
  observer: CallObserver | null = null;
  /** Duplicate-request cache for nonIdempotent procedures; none means every call runs. */
  replyCache: ReplyCache | null = null;
  private readonly credMemos = new WeakMap<ReplySink, CredMemo>();

  register(program: Program): void {
    const versions = program.versions.map((v) => v.version);
    this.programs.set(program.program, {
      program,
      low: Math.min(...versions),
      high: Math.max(...versions),
      byVersion: new Map(program.versions.map((v) => [v.version, v])),
    });
  }

  registered(): Program[] {
    return [...this.programs.values()].map((e) => e.program);
  }

  /** Handles one RPC message (a TCP record or a UDP datagram). */
  dispatch(record: Buffer, sink: ReplySink): void {
    const args = new XdrReader(record, 0, record.length);
    // A UDP sink lives for one datagram: only connections keep a credential memo.
    let memo: CredMemo | undefined;
    if (sink.tcp) {
      memo = this.credMemos.get(sink);
      if (memo === undefined) this.credMemos.set(sink, (memo = new CredMemo()));
    }
    let header;
    try {
      header = decodeCallHeader(args, memo);
    } catch (err) {
      // Without a whole call header there is no call to answer.
      hostile.warn({ client: sink.address, reason: (err as Error).message, bytes: record.length }, 'undecodable RPC header, dropped');
      return;
    }
    if (header === null) {
      hostile.warn({ client: sink.address }, 'RPC reply message sent to the server, ignored');
      return;
    }
    const { xid, prog, vers, proc, cred } = header;
    if (header.rpcvers !== RPC_VERSION) {
      hostile.warn({ client: sink.address, xid, rpcvers: header.rpcvers }, 'RPC version mismatch');
      this.sendRaw(sink, (w) => writeRpcMismatch(w, xid));
      return;
    }
    if (header.badCred) {
      hostile.warn({ client: sink.address, xid, prog }, 'malformed AUTH_SYS credential');
      this.sendRaw(sink, (w) => writeAuthError(w, xid, AuthStat.AUTH_BADCRED));
      return;
    }
    const entry = this.programs.get(prog);
    if (entry === undefined) {
      log.debug({ client: sink.address, xid, prog, vers }, 'program unavailable');
      this.sendRaw(sink, (w) => writeAcceptedHeader(w, xid, AcceptStat.PROG_UNAVAIL));
      return;
    }
    const version = entry.byVersion.get(vers);
    if (version === undefined) {
      log.debug({ client: sink.address, xid, prog, vers }, 'program version mismatch');
      this.sendRaw(sink, (w) => writeProgMismatch(w, xid, entry.low, entry.high));
      return;
    }
    const spec = version.procedures[proc];
    if (spec === undefined) {
      hostile.warn({ client: sink.address, xid, prog, vers, proc }, 'procedure unavailable');
      this.sendRaw(sink, (w) => writeAcceptedHeader(w, xid, AcceptStat.PROC_UNAVAIL));
      return;
    }
    if (spec.needsCred && cred.flavor !== AuthFlavor.SYS && cred.flavor !== AuthFlavor.NONE) {
      hostile.warn({ client: sink.address, xid, flavor: cred.flavor, proc: spec.name }, 'unsupported auth flavor');
      this.sendRaw(sink, (w) => writeAuthError(w, xid, AuthStat.AUTH_TOOWEAK));
      return;
    }
    // Non-idempotent calls go through the reply cache: a retransmission must get the first
    // reply, never a second execution. Idempotent calls pay only the boolean test.
    let cacheKey: string | null = null;
    if (spec.nonIdempotent && this.replyCache !== null) {
      const cache = this.replyCache;
      cacheKey = replyCacheKey(sink.tcp, sink.address, sink.port, xid, prog, vers, proc, record, args.pos, args.end);
      const state = cache.lookup(cacheKey);
      if (state === CacheState.DONE) {
        log.debug({ client: sink.address, xid, proc: spec.name }, 'retransmission answered from the reply cache');
        sink.send(cache.cachedReply(cacheKey)!, null, null);
        return;
      }
      if (state === CacheState.IN_PROGRESS) {
        log.debug({ client: sink.address, xid, proc: spec.name }, 'retransmission of a call still running, dropped');
        return;
      }
      if (!cache.begin(cacheKey)) cacheKey = null;
    }
    sink.inFlight++;
    const call = new RpcCall(this, sink, xid, prog, vers, proc, cred, args, spec);
    call.cacheKey = cacheKey;
    try {
      const pending = spec.handler(call);
      if (pending !== undefined) pending.then(undefined, (err: unknown) => call.fail(err));
    } catch (err) {
      call.fail(err);
    }
  }

  /** Rejections before a call object exists: rare, so a closure here costs nothing that matters. */
  private sendRaw(sink: ReplySink, encode: (w: XdrWriter) => void): void {
    const w = replyWriter;
    w.begin(64);
    if (sink.tcp) w.u32(0);
    encode(w);
    if (sink.tcp) w.patchU32(0, lastFragmentHeader(w.length() - 4));
    sink.send(w.finish(), null, null);
  }
}
