/**
 * Reply header parsing (RFC 5531), shared by RpcClient and by tests that send raw calls and want
 * to check a reply by hand.
 */
import { AcceptStat, MsgType, RejectStat, ReplyStat, MAX_AUTH_BYTES } from '../rpc/message.js';
import { XdrReader } from '../rpc/xdr.js';
import { RpcError, type RpcReplyKind } from './rpc-errors.js';

const ACCEPT_KINDS: readonly RpcReplyKind[] = ['PROG_UNAVAIL', 'PROG_MISMATCH', 'PROC_UNAVAIL', 'GARBAGE_ARGS', 'SYSTEM_ERR'];

/**
 * Reads from just after the xid to the start of the procedure results. Throws RpcError for every
 * reply that is not accepted with SUCCESS, so a caller only ever sees results it asked for.
 */
export function readReplyHeader(r: XdrReader, xid: number): void {
  if (r.u32() !== MsgType.REPLY) throw new RpcError('MALFORMED_REPLY', xid);
  const replyStat = r.u32();
  if (replyStat === ReplyStat.MSG_ACCEPTED) {
    r.u32(); // verifier flavor: AUTH_NONE/AUTH_SYS servers send nothing we could check
    const verfLen = r.u32();
    if (verfLen > MAX_AUTH_BYTES) throw new RpcError('MALFORMED_REPLY', xid);
    r.skip((verfLen + 3) & ~3);
    const stat = r.u32();
    if (stat === AcceptStat.SUCCESS) return;
    if (stat === AcceptStat.PROG_MISMATCH) {
      const low = r.u32();
      const high = r.u32();
      throw new RpcError('PROG_MISMATCH', xid, { acceptStat: stat, low, high });
    }
    if (stat < ACCEPT_KINDS.length + 1) throw new RpcError(ACCEPT_KINDS[stat - 1], xid, { acceptStat: stat });
    throw new RpcError('MALFORMED_REPLY', xid, { acceptStat: stat });
  }
  if (replyStat === ReplyStat.MSG_DENIED) {
    const rejectStat = r.u32();
    if (rejectStat === RejectStat.RPC_MISMATCH) {
      const low = r.u32();
      const high = r.u32();
      throw new RpcError('RPC_MISMATCH', xid, { rejectStat, low, high });
    }
    if (rejectStat === RejectStat.AUTH_ERROR) {
      throw new RpcError('AUTH_ERROR', xid, { rejectStat, authStat: r.u32() });
    }
    throw new RpcError('MALFORMED_REPLY', xid, { rejectStat });
  }
  throw new RpcError('MALFORMED_REPLY', xid);
}

/** A whole reply record (starting at the xid) to a reader at its results, or an RpcError. */
export function parseReply(record: Buffer): XdrReader {
  const r = new XdrReader(record);
  const xid = r.u32();
  readReplyHeader(r, xid);
  return r;
}
