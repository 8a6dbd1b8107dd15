/**
 * Duplicate-request cache (DRC) for non-idempotent procedures.
 *
 * A client that does not hear a reply retransmits the call with the same xid. For CREATE, REMOVE,
 * RENAME, WRITE, ... running the call a second time gives the wrong answer (REMOVE -> NOENT after
 * the first one removed the file) or repeats a side effect. So the first reply is remembered and
 * a retransmission gets exactly those bytes again; a retransmission that arrives while the first
 * execution is still running is dropped (the client retransmits again and then hits the DONE
 * entry), because running the call twice is exactly what the cache exists to prevent.
 *
 * The key, modelled on Linux knfsd (fs/nfsd/nfscache.c: xid, client address, proc, prog/vers,
 * transport, argument length and a checksum of the first bytes of the arguments):
 *  - transport (tcp/udp): the cached bytes of a TCP reply start with a record mark, which a UDP
 *    datagram must not carry, and the other way round.
 *  - client address.
 *  - client port for UDP only. A UDP client retransmits from the same socket, and several RPC
 *    clients on one host (different sockets, independent xid counters) are told apart by port.
 *    Over TCP a client that lost its connection retransmits the same xid on a NEW connection,
 *    which need not have the old source port (Linux tries to reuse it, other clients don't), so
 *    keying on it would run the retransmission again, the one case the cache is for.
 *  - xid, prog, vers, proc.
 *  - argument length and a checksum of the first CHECKSUM_BYTES argument bytes, so a reused xid
 *    (wrap-around, client restart, a second client behind the same NAT address over TCP) carrying
 *    a different call is executed instead of being answered with someone else's reply.
 *
 * Entries that are in progress and entries that are done live in two maps: in-progress entries
 * are never evicted (evicting one would let its retransmission run twice) and are bounded by the
 * transports' in-flight limits, plus a cap here (beyond it calls run uncached and are counted).
 * Done entries are kept in completion order (Map insertion order), so the oldest is evicted first
 * and expiry only ever looks at the head.
 *
 * Cached replies are copied into their own buffer: the head handed to ReplySink.send is a view
 * of the shared 256 KiB reply slab, and keeping the view would keep the whole slab alive, making
 * the byte bound meaningless.
 */

/** Argument bytes covered by the checksum (knfsd uses 256, RC_CSUMLEN). */
export const CHECKSUM_BYTES = 256;

export interface ReplyCacheOptions {
  /** Completed replies kept at most (also the cap on calls tracked as in progress). */
  maxEntries: number;
  /** Bytes of completed replies (plus their keys) kept at most. */
  maxBytes: number;
  /** A completed reply is forgotten this long after it was sent (ms). */
  ttlMs: number;
  /** Monotonic clock in ms; injectable for tests. */
  now: () => number;
}

export const DEFAULT_REPLY_CACHE_OPTIONS: ReplyCacheOptions = {
  maxEntries: 4096,
  maxBytes: 32 * 1024 * 1024,
  // knfsd's RC_EXPIRE. Linux NFS/TCP retransmits after timeo=60 s, so a retransmission of a call
  // answered just before the connection broke arrives well within this.
  ttlMs: 120_000,
  now: () => performance.now(),
};

/** What lookup() found. */
export const CacheState = {
  MISS: 0,
  IN_PROGRESS: 1,
  DONE: 2,
} as const;
export type CacheState = (typeof CacheState)[keyof typeof CacheState];

interface DoneEntry {
  reply: Buffer;
  expiresAt: number;
  /** Bytes charged against maxBytes. */
  cost: number;
}

/** FNV-1a over the first CHECKSUM_BYTES bytes of buf[start, end): cheap, not cryptographic. */
export function argsChecksum(buf: Buffer, start: number, end: number): number {
  const stop = Math.min(end, start + CHECKSUM_BYTES);
  let h = 0x811c9dc5;
  for (let i = start; i < stop; i++) h = Math.imul(h ^ buf[i], 0x01000193);
  return h >>> 0;
}

/** The cache key of one call; see the file comment for why each part is there. */
export function replyCacheKey(
  tcp: boolean,
  address: string,
  port: number,
  xid: number,
  prog: number,
  vers: number,
  proc: number,
  args: Buffer,
  argsStart: number,
  argsEnd: number,
): string {
  const transport = tcp ? 't' : `u${port}`;
  return `${transport}|${address}|${xid}|${prog}|${vers}|${proc}|${argsEnd - argsStart}|${argsChecksum(args, argsStart, argsEnd)}`;
}

export class ReplyCache {
  readonly options: ReplyCacheOptions;
  private readonly done = new Map<string, DoneEntry>();
  private readonly inProgress = new Set<string>();

  // Counters, plain numbers for the metrics module.
  /** Retransmissions answered from the cache. */
  hits = 0;
  /** Retransmissions dropped because the first execution was still running. */
  inProgressDrops = 0;
  /** Replies stored. */
  insertions = 0;
  /** Replies removed to respect maxEntries/maxBytes (not counting expiry). */
  evictions = 0;
  /** Replies removed because they were older than ttlMs. */
  expirations = 0;
  /** Calls run without the cache because maxEntries calls were already in progress. */
  untracked = 0;
  /** Replies not stored because a single one exceeded maxBytes. */
  tooLarge = 0;
  /** Bytes currently charged by completed replies. */
  bytes = 0;

  constructor(options: Partial<ReplyCacheOptions> = {}) {
    this.options = { ...DEFAULT_REPLY_CACHE_OPTIONS, ...options };
  }

  /** Completed replies currently held. */
  get entries(): number {
    return this.done.size;
  }

  /** Calls currently marked in progress. */
  get inProgressEntries(): number {
    return this.inProgress.size;
  }

  /**
   * Looks a call up. DONE: cachedReply(key) has the bytes to resend. IN_PROGRESS: the first
   * execution is still running; drop this one. MISS: run it, after begin(key).
   */
  lookup(key: string): CacheState {
    const entry = this.done.get(key);
    if (entry !== undefined) {
      if (entry.expiresAt > this.options.now()) {
        this.hits++;
        return CacheState.DONE;
      }
      this.remove(key, entry);
      this.expirations++;
    }
    if (this.inProgress.has(key)) {
      this.inProgressDrops++;
      return CacheState.IN_PROGRESS;
    }
    return CacheState.MISS;
  }

  /** The reply of a DONE entry (valid right after lookup() returned DONE). */
  cachedReply(key: string): Buffer | undefined {
    return this.done.get(key)?.reply;
  }

  /**
   * Marks a call as running. False if too many calls are already in progress: the call then runs
   * uncached (better than refusing it; the transports' in-flight limits normally keep us far away).
   */
  begin(key: string): boolean {
    if (this.inProgress.size >= this.options.maxEntries) {
      this.untracked++;
      return false;
    }
    this.inProgress.add(key);
    return true;
  }

  /** The call ended without a reply: forget it, so a retransmission runs it (knfsd RC_NOCACHE). */
  abandon(key: string): void {
    this.inProgress.delete(key);
  }

  /** Stores the reply exactly as sent (copied: see the file comment) and evicts what no longer fits. */
  complete(key: string, head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    if (!this.inProgress.delete(key)) return;
    const size = head.length + (payload !== null ? payload.length : 0) + (pad !== null ? pad.length : 0);
    // The key string is charged too; the rest of an entry is a small constant.
    const cost = size + key.length;
    const { maxBytes, maxEntries, now, ttlMs } = this.options;
    if (cost > maxBytes) {
      this.tooLarge++;
      return;
    }
    const t = now();
    this.expire(t);
    const reply = Buffer.allocUnsafeSlow(size);
    let off = head.copy(reply, 0);
    if (payload !== null) off += payload.copy(reply, off);
    if (pad !== null) pad.copy(reply, off);
    const old = this.done.get(key);
    if (old !== undefined) this.remove(key, old);
    while (this.done.size > 0 && (this.done.size >= maxEntries || this.bytes + cost > maxBytes)) {
      const [oldestKey, oldest] = this.done.entries().next().value as [string, DoneEntry];
      this.remove(oldestKey, oldest);
      this.evictions++;
    }
    this.done.set(key, { reply, expiresAt: t + ttlMs, cost });
    this.bytes += cost;
    this.insertions++;
  }

  /** Drops completed replies older than ttlMs (done lazily on insert and lookup; callable by a timer). */
  expire(t: number = this.options.now()): void {
    for (const [key, entry] of this.done) {
      if (entry.expiresAt > t) break;
      this.remove(key, entry);
      this.expirations++;
    }
  }

  private remove(key: string, entry: DoneEntry): void {
    this.done.delete(key);
    this.bytes -= entry.cost;
  }
}
