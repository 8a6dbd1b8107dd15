/**
 * ONC-RPC v2 messages (RFC 5531): the call header and every kind of reply header.
 */
import { XdrError, XdrReader, XdrWriter } from './xdr.js';

export const RPC_VERSION = 2;

export const enum MsgType {
  CALL = 0,
  REPLY = 1,
}

export const enum ReplyStat {
  MSG_ACCEPTED = 0,
  MSG_DENIED = 1,
}

export const enum AcceptStat {
  SUCCESS = 0,
  PROG_UNAVAIL = 1,
  PROG_MISMATCH = 2,
  PROC_UNAVAIL = 3,
  GARBAGE_ARGS = 4,
  SYSTEM_ERR = 5,
}

export const enum RejectStat {
  RPC_MISMATCH = 0,
  AUTH_ERROR = 1,
}

export const enum AuthStat {
  AUTH_OK = 0,
  AUTH_BADCRED = 1,
  AUTH_REJECTEDCRED = 2,
  AUTH_BADVERF = 3,
  AUTH_REJECTEDVERF = 4,
  AUTH_TOOWEAK = 5,
  AUTH_INVALIDRESP = 6,
  AUTH_FAILED = 7,
}

export const enum AuthFlavor {
  NONE = 0,
  SYS = 1,
}

/** RFC 5531: opaque_auth bodies are at most 400 bytes. */
export const MAX_AUTH_BYTES = 400;
/** RFC 5531 AUTH_SYS: machinename<255>, gids<16>. */
export const MAX_MACHINE_NAME = 255;
export const MAX_AUTH_SYS_GIDS = 16;

/** Identity of the caller as AUTH_SYS states it (AUTH_NONE callers get `flavor` NONE). */
export interface Credentials {
  flavor: number;
  uid: number;
  gid: number;
  gids: number[];
  machineName: string;
}

export const NO_CREDENTIALS: Credentials = Object.freeze({
  flavor: AuthFlavor.NONE,
  uid: 65534,
  gid: 65534,
  gids: [] as number[],
  machineName: '',
}) as Credentials;

/** Fields of a call header, decoded in place. The reader is left at the procedure arguments. */
export interface CallHeader {
  xid: number;
  rpcvers: number;
  prog: number;
  vers: number;
  proc: number;
  cred: Credentials;
  /** True when the credential body was malformed; the caller answers AUTH_ERROR BADCRED. */
  badCred: boolean;
}

export function decodeAuthSys(r: XdrReader, end: number): Credentials {
  r.u32(); // stamp: arbitrary per RFC 5531, unused
  const machineName = r.bytesString(MAX_MACHINE_NAME);
  const uid = r.u32();
  const gid = r.u32();
  const n = r.u32();
  if (n > MAX_AUTH_SYS_GIDS) throw new XdrError(`AUTH_SYS with ${n} gids`);
  const gids = new Array<number>(n);
  for (let i = 0; i < n; i++) gids[i] = r.u32();
  if (r.pos !== end) throw new XdrError('AUTH_SYS body length mismatch');
  return { flavor: AuthFlavor.SYS, uid, gid, gids, machineName };
}

/**
 * The last AUTH_SYS credential seen on one connection. A client sends the same identity on every
 * call, so comparing its bytes (after the stamp, which Linux bumps every second) is cheaper than
 * decoding a machine name string, a gid array and a new object per call. The memoised
 * Credentials are frozen: every call of the connection shares them.
 */
export class CredMemo {
  bytes: Buffer = Buffer.alloc(0);
  cred: Credentials = NO_CREDENTIALS;
}

/**
 * Decode msg_type..verifier. Throws XdrError if the header itself is truncated (the caller can
 * only drop such a record: without a complete header there is nobody to answer).
 * Returns null for a REPLY message (a server ignores those).
 */
export function decodeCallHeader(r: XdrReader, memo?: CredMemo): CallHeader | null {
  const xid = r.u32();
  const type = r.u32();
  if (type !== MsgType.CALL) return null;
  const rpcvers = r.u32();
  const prog = r.u32();
  const vers = r.u32();
  const proc = r.u32();
  const credFlavor = r.u32();
  const credLen = r.u32();
  if (credLen > MAX_AUTH_BYTES) throw new XdrError(`credential of ${credLen} bytes`);
  const credStart = r.pos;
  const credEnd = credStart + ((credLen + 3) & ~3);
  if (credEnd > r.end) throw new XdrError('credential past end of record');
  let cred = NO_CREDENTIALS;
  let badCred = false;
  if (credFlavor === AuthFlavor.SYS) {
    const known = memo?.bytes;
    if (known !== undefined && credLen >= 4 && known.length === credLen - 4 && r.buf.compare(known, 0, known.length, credStart + 4, credStart + credLen) === 0) {
      cred = memo!.cred;
    } else {
      const sub = new XdrReader(r.buf, credStart, credStart + credLen);
      try {
        cred = decodeAuthSys(sub, credStart + credLen);
        if (memo !== undefined) {
          Object.freeze(cred.gids);
          memo.cred = Object.freeze(cred);
          memo.bytes = Buffer.from(r.buf.subarray(credStart + 4, credStart + credLen));
        }
      } catch (e) {
        if (!(e instanceof XdrError)) throw e;
        badCred = true;
      }
    }
  } else if (credFlavor !== AuthFlavor.NONE) {
    cred = { ...NO_CREDENTIALS, flavor: credFlavor };
  }
  r.pos = credEnd;
  r.u32(); // verifier flavor: AUTH_NONE and AUTH_SYS carry no verifier we check
  const verfLen = r.u32();
  if (verfLen > MAX_AUTH_BYTES) throw new XdrError(`verifier of ${verfLen} bytes`);
  r.skip((verfLen + 3) & ~3);
  return { xid, rpcvers, prog, vers, proc, cred, badCred };
}

/** Accepted reply header up to and including accept_stat. */
export function writeAcceptedHeader(w: XdrWriter, xid: number, stat: AcceptStat): void {
  w.u32(xid);
  w.u32(MsgType.REPLY);
  w.u32(ReplyStat.MSG_ACCEPTED);
  w.u32(AuthFlavor.NONE); // verifier
  w.u32(0);
  w.u32(stat);
}

export function writeProgMismatch(w: XdrWriter, xid: number, low: number, high: number): void {
  writeAcceptedHeader(w, xid, AcceptStat.PROG_MISMATCH);
  w.u32(low);
  w.u32(high);
}

export function writeRpcMismatch(w: XdrWriter, xid: number): void {
  w.u32(xid);
  w.u32(MsgType.REPLY);
  w.u32(ReplyStat.MSG_DENIED);
  w.u32(RejectStat.RPC_MISMATCH);
  w.u32(RPC_VERSION);
  w.u32(RPC_VERSION);
}

export function writeAuthError(w: XdrWriter, xid: number, stat: AuthStat): void {
  w.u32(xid);
  w.u32(MsgType.REPLY);
  w.u32(ReplyStat.MSG_DENIED);
  w.u32(RejectStat.AUTH_ERROR);
  w.u32(stat);
}

/** Call header encoding, for our own client and for registering with a system rpcbind. */
export function writeCallHeader(
  w: XdrWriter,
  xid: number,
  prog: number,
  vers: number,
  proc: number,
  cred: Credentials | null,
): void {
  w.u32(xid);
  w.u32(MsgType.CALL);
  w.u32(RPC_VERSION);
  w.u32(prog);
  w.u32(vers);
  w.u32(proc);
  if (cred && cred.flavor === AuthFlavor.SYS) {
    w.u32(AuthFlavor.SYS);
    const lenAt = w.length();
    w.u32(0);
    const bodyStart = w.length();
    w.u32(0); // stamp
    w.bytesString(cred.machineName);
    w.u32(cred.uid);
    w.u32(cred.gid);
    w.u32(cred.gids.length);
    for (const g of cred.gids) w.u32(g);
    w.patchU32(lenAt, w.length() - bodyStart);
  } else {
    w.u32(AuthFlavor.NONE);
    w.u32(0);
  }
  w.u32(AuthFlavor.NONE);
  w.u32(0);
}
