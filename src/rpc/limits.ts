/**
 * The limits that keep the server alive against hostile, broken or merely slow clients: their
 * defaults, how often each one bit (read by the metrics at scrape time), a rate-limited log line
 * when one bites, and the connection admission that the TCP transports of one server share.
 *
 * Checking a limit is an integer compare per record or per connection; the bookkeeping here only
 * runs when a limit actually bites.
 */
import { componentLogger } from '../log/logger.js';
import { RateLimitedLog } from '../log/rate-limited.js';

const log = new RateLimitedLog(componentLogger('limits'));

export interface ServerLimits {
  /** Largest RPC record (all fragments together); refused from its header, before buffering. */
  maxRecordBytes: number;
  /** Most fragments per record: bounds floods of zero-length or tiny fragments. */
  maxFragments: number;
  /** Calls of one connection dispatched and not answered before we stop reading from it. */
  maxCallsPerConnection: number;
  /** Reply bytes of one connection not yet taken by the client before we stop reading from it. */
  maxUnsentBytesPerConnection: number;
  /** TCP connections open at once, over all services of the server. */
  maxConnections: number;
  /** TCP connections open at once from one client address. */
  maxConnectionsPerClient: number;
  /** A connection that began a record and did not finish it within this time is closed. */
  partialRecordTimeoutMs: number;
  /** A connection with no traffic either way for this long is closed (kernel clients idle for minutes). */
  idleTimeoutMs: number;
}

export const DEFAULT_LIMITS: Readonly<ServerLimits> = Object.freeze({
  // A 1 MiB WRITE plus headers; the kernel client never sends more than wsize + a few hundred bytes.
  maxRecordBytes: 1024 * 1024 + 64 * 1024,
  maxFragments: 64,
  // A Linux client booting through systemd keeps more than 64 calls in flight on its one connection.
  maxCallsPerConnection: 256,
  maxUnsentBytesPerConnection: 4 * 1024 * 1024,
  maxConnections: 4096,
  maxConnectionsPerClient: 64,
  partialRecordTimeoutMs: 30_000,
  // Longer than the Linux client's own 5-minute idle close, so we are not the side that cuts.
  idleTimeoutMs: 15 * 60_000,
});

export const LIMIT_NAMES = [
  'record_size',
  'fragments',
  'calls_per_connection',
  'unsent_bytes',
  'connections_total',
  'connections_per_client',
  'partial_record_timeout',
  'idle_timeout',
] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

const enum Limit {
  RECORD_SIZE,
  FRAGMENTS,
  CALLS,
  UNSENT,
  CONN_TOTAL,
  CONN_CLIENT,
  PARTIAL,
  IDLE,
}
export const LimitId = {
  record_size: Limit.RECORD_SIZE,
  fragments: Limit.FRAGMENTS,
  calls_per_connection: Limit.CALLS,
  unsent_bytes: Limit.UNSENT,
  connections_total: Limit.CONN_TOTAL,
  connections_per_client: Limit.CONN_CLIENT,
  partial_record_timeout: Limit.PARTIAL,
  idle_timeout: Limit.IDLE,
} as const;

const MESSAGES = [
  'record larger than the limit, closing connection',
  'record with too many fragments, closing connection',
  'too many calls in flight, pausing reads from connection',
  'client not reading its replies, pausing reads from connection (backpressure)',
  'too many connections, refusing',
  'too many connections from this client, refusing',
  'connection stalled mid-record, closing',
  'idle connection, closing',
];

/** How many times each limit bit, plus a rate-limited log line. Shared by one server's transports. */
export class LimitHits {
  readonly counts = new Float64Array(LIMIT_NAMES.length);

  hit(limit: number, client: string, port: number, detail: number): void {
    this.counts[limit]++;
    log.warn({ limit: LIMIT_NAMES[limit], client, port, detail }, MESSAGES[limit]);
  }

  count(name: LimitName): number {
    return this.counts[LimitId[name]];
  }
}

/** Admission of TCP connections against the total and per-client limits. */
export class ConnectionGuard {
  private total = 0;
  private readonly perClient = new Map<string, number>();
  readonly limits: ServerLimits;
  readonly hits: LimitHits;

  constructor(limits: ServerLimits, hits: LimitHits) {
    this.limits = limits;
    this.hits = hits;
  }

  get open(): number {
    return this.total;
  }

  /** True if the connection may stay; then release() must follow when it closes. */
  admit(address: string, port: number): boolean {
    if (this.total >= this.limits.maxConnections) {
      this.hits.hit(Limit.CONN_TOTAL, address, port, this.total);
      return false;
    }
    const mine = this.perClient.get(address) ?? 0;
    if (mine >= this.limits.maxConnectionsPerClient) {
      this.hits.hit(Limit.CONN_CLIENT, address, port, mine);
      return false;
    }
    this.total++;
    this.perClient.set(address, mine + 1);
    return true;
  }

  release(address: string): void {
    this.total--;
    const mine = (this.perClient.get(address) ?? 1) - 1;
    if (mine <= 0) this.perClient.delete(address);
    else this.perClient.set(address, mine);
  }
}

/** A guard with its own counters, for a transport started without a server (tests, portmapper). */
export function standaloneGuard(limits: Partial<ServerLimits> = {}): ConnectionGuard {
  return new ConnectionGuard({ ...DEFAULT_LIMITS, ...limits }, new LimitHits());
}
