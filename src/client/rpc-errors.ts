/**
 * What can go wrong with one call, as distinct classes so a test can tell "the server refused"
 * (RpcError, with the exact reply kind) from "the server never answered" (RpcTimeoutError) and
 * "the connection went away" (RpcConnectionError).
 */

export type RpcReplyKind =
  | 'PROG_UNAVAIL'
  | 'PROG_MISMATCH'
  | 'PROC_UNAVAIL'
  | 'GARBAGE_ARGS'
  | 'SYSTEM_ERR'
  | 'RPC_MISMATCH'
  | 'AUTH_ERROR'
  /** A reply we cannot make sense of: not a REPLY, an unknown reply/accept/reject stat. */
  | 'MALFORMED_REPLY';

export class RpcError extends Error {
  readonly kind: RpcReplyKind;
  readonly xid: number;
  /** accept_stat for accepted replies, otherwise null. */
  readonly acceptStat: number | null;
  /** reject_stat for denied replies, otherwise null. */
  readonly rejectStat: number | null;
  /** auth_stat for AUTH_ERROR, otherwise null. */
  readonly authStat: number | null;
  /** Supported range for PROG_MISMATCH and RPC_MISMATCH, otherwise null. */
  readonly low: number | null;
  readonly high: number | null;

  constructor(
    kind: RpcReplyKind,
    xid: number,
    fields: { acceptStat?: number; rejectStat?: number; authStat?: number; low?: number; high?: number } = {},
  ) {
    const range = fields.low !== undefined ? ` (${fields.low}..${fields.high})` : '';
    const auth = fields.authStat !== undefined ? ` (auth_stat ${fields.authStat})` : '';
    super(`RPC ${kind}${range}${auth} for xid ${xid}`);
    this.name = 'RpcError';
    this.kind = kind;
    this.xid = xid;
    this.acceptStat = fields.acceptStat ?? null;
    this.rejectStat = fields.rejectStat ?? null;
    this.authStat = fields.authStat ?? null;
    this.low = fields.low ?? null;
    this.high = fields.high ?? null;
  }
}

export class RpcTimeoutError extends Error {
  readonly xid: number;
  /** How many times the call went out (more than 1 only over UDP). */
  readonly transmissions: number;

  constructor(xid: number, transmissions: number, ms: number) {
    super(`RPC call xid ${xid} timed out after ${ms} ms (${transmissions} transmission${transmissions === 1 ? '' : 's'})`);
    this.name = 'RpcTimeoutError';
    this.xid = xid;
    this.transmissions = transmissions;
  }
}

export class RpcConnectionError extends Error {
  /** The system error code (ECONNREFUSED, ECONNRESET, ...) when there is one. */
  readonly code: string | null;

  constructor(message: string, code: string | null = null) {
    super(message);
    this.name = 'RpcConnectionError';
    this.code = code;
  }
}
