/**
 * Result decoders of the 22 NFSv3 procedures (RFC 1813 section 3.3). Failures are results too:
 * each decoder reads the attributes the RFC sends with an error, and never throws on a status.
 */
import { NFS3_MAXNAMLEN, NFS3_MAXPATHLEN, NfsStat } from '../nfs/constants.js';
import type { XdrReader } from '../rpc/xdr.js';
import type {
  AccessRes,
  CommitRes,
  DirEntry,
  DirEntryPlus,
  DiropRes,
  FsinfoRes,
  FsstatRes,
  GetattrRes,
  LinkRes,
  LookupRes,
  PathconfRes,
  ReaddirplusRes,
  ReaddirRes,
  ReadlinkRes,
  ReadRes,
  RenameRes,
  WccRes,
  WriteRes,
} from './nfs3-types.js';
import {
  readFattr3,
  readFh,
  readPostOpAttr,
  readPostOpFh,
  readTime,
  readU64Big,
  readVerf,
  readWcc,
} from './nfs3-xdr.js';

const EMPTY = Buffer.alloc(0);
/** READ data can be as large as the record; the record limit already bounds it. */
const MAX_DATA = 0x7fffffff;

export function decodeNullRes(_r: XdrReader): void {}

export function decodeGetattrRes(r: XdrReader): GetattrRes {
  const status = r.u32();
  return { status, attr: status === NfsStat.OK ? readFattr3(r) : null };
}

/** SETATTR, REMOVE, RMDIR: status and one wcc_data, success or not. */
export function decodeWccRes(r: XdrReader): WccRes {
  const status = r.u32();
  return { status, wcc: readWcc(r) };
}

export function decodeLookupRes(r: XdrReader): LookupRes {
  const status = r.u32();
  if (status !== NfsStat.OK) return { status, fh: null, objAttr: null, dirAttr: readPostOpAttr(r) };
  const fh = readFh(r);
  const objAttr = readPostOpAttr(r);
  return { status, fh, objAttr, dirAttr: readPostOpAttr(r) };
}

export function decodeAccessRes(r: XdrReader): AccessRes {
  const status = r.u32();
  const objAttr = readPostOpAttr(r);
  return { status, objAttr, access: status === NfsStat.OK ? r.u32() : 0 };
}

export function decodeReadlinkRes(r: XdrReader): ReadlinkRes {
  const status = r.u32();
  const symlinkAttr = readPostOpAttr(r);
  return { status, symlinkAttr, data: status === NfsStat.OK ? r.bytesString(NFS3_MAXPATHLEN * 4) : null };
}

export function decodeReadRes(r: XdrReader): ReadRes {
  const status = r.u32();
  const fileAttr = readPostOpAttr(r);
  if (status !== NfsStat.OK) return { status, fileAttr, count: 0, eof: false, data: EMPTY };
  const count = r.u32();
  const eof = r.bool();
  return { status, fileAttr, count, eof, data: r.opaque(MAX_DATA) };
}

export function decodeWriteRes(r: XdrReader): WriteRes {
  const status = r.u32();
  const wcc = readWcc(r);
  if (status !== NfsStat.OK) return { status, wcc, count: 0, committed: -1, verf: null };
  const count = r.u32();
  const committed = r.u32();
  return { status, wcc, count, committed, verf: readVerf(r) };
}

/** CREATE, MKDIR, SYMLINK, MKNOD. */
export function decodeDiropRes(r: XdrReader): DiropRes {
  const status = r.u32();
  if (status !== NfsStat.OK) return { status, fh: null, objAttr: null, dirWcc: readWcc(r) };
  const fh = readPostOpFh(r);
  const objAttr = readPostOpAttr(r);
  return { status, fh, objAttr, dirWcc: readWcc(r) };
}

export function decodeRenameRes(r: XdrReader): RenameRes {
  const status = r.u32();
  const fromDirWcc = readWcc(r);
  return { status, fromDirWcc, toDirWcc: readWcc(r) };
}

export function decodeLinkRes(r: XdrReader): LinkRes {
  const status = r.u32();
  const fileAttr = readPostOpAttr(r);
  return { status, fileAttr, linkDirWcc: readWcc(r) };
}

/**
 * Entries come as an XDR optional-data list; the loop is bounded by the record itself (every
 * entry consumes bytes, and the reader throws at the end of the record).
 */
export function decodeReaddirRes(r: XdrReader): ReaddirRes {
  const status = r.u32();
  const dirAttr = readPostOpAttr(r);
  if (status !== NfsStat.OK) return { status, dirAttr, cookieverf: null, entries: [], eof: false };
  const cookieverf = readVerf(r);
  const entries: DirEntry[] = [];
  while (r.bool()) {
    const fileid = r.u64();
    const name = r.bytesString(NFS3_MAXNAMLEN * 4);
    entries.push({ fileid, name, cookie: readU64Big(r) });
  }
  return { status, dirAttr, cookieverf, entries, eof: r.bool() };
}

export function decodeReaddirplusRes(r: XdrReader): ReaddirplusRes {
  const status = r.u32();
  const dirAttr = readPostOpAttr(r);
  if (status !== NfsStat.OK) return { status, dirAttr, cookieverf: null, entries: [], eof: false };
  const cookieverf = readVerf(r);
  const entries: DirEntryPlus[] = [];
  while (r.bool()) {
    const fileid = r.u64();
    const name = r.bytesString(NFS3_MAXNAMLEN * 4);
    const cookie = readU64Big(r);
    const attr = readPostOpAttr(r);
    entries.push({ fileid, name, cookie, attr, fh: readPostOpFh(r) });
  }
  return { status, dirAttr, cookieverf, entries, eof: r.bool() };
}

export function decodeFsstatRes(r: XdrReader): FsstatRes {
  const status = r.u32();
  const objAttr = readPostOpAttr(r);
  if (status !== NfsStat.OK) {
    return { status, objAttr, tbytes: 0, fbytes: 0, abytes: 0, tfiles: 0, ffiles: 0, afiles: 0, invarsec: 0 };
  }
  const tbytes = r.u64();
  const fbytes = r.u64();
  const abytes = r.u64();
  const tfiles = r.u64();
  const ffiles = r.u64();
  const afiles = r.u64();
  return { status, objAttr, tbytes, fbytes, abytes, tfiles, ffiles, afiles, invarsec: r.u32() };
}

export function decodeFsinfoRes(r: XdrReader): FsinfoRes {
  const status = r.u32();
  const objAttr = readPostOpAttr(r);
  if (status !== NfsStat.OK) {
    return {
      status, objAttr, rtmax: 0, rtpref: 0, rtmult: 0, wtmax: 0, wtpref: 0, wtmult: 0, dtpref: 0,
      maxFileSize: 0, timeDelta: { sec: 0, nsec: 0 }, properties: 0,
    };
  }
  const rtmax = r.u32();
  const rtpref = r.u32();
  const rtmult = r.u32();
  const wtmax = r.u32();
  const wtpref = r.u32();
  const wtmult = r.u32();
  const dtpref = r.u32();
  const maxFileSize = r.u64();
  const timeDelta = readTime(r);
  return { status, objAttr, rtmax, rtpref, rtmult, wtmax, wtpref, wtmult, dtpref, maxFileSize, timeDelta, properties: r.u32() };
}

export function decodePathconfRes(r: XdrReader): PathconfRes {
  const status = r.u32();
  const objAttr = readPostOpAttr(r);
  if (status !== NfsStat.OK) {
    return { status, objAttr, linkMax: 0, nameMax: 0, noTrunc: false, chownRestricted: false, caseInsensitive: false, casePreserving: false };
  }
  const linkMax = r.u32();
  const nameMax = r.u32();
  const noTrunc = r.bool();
  const chownRestricted = r.bool();
  const caseInsensitive = r.bool();
  return { status, objAttr, linkMax, nameMax, noTrunc, chownRestricted, caseInsensitive, casePreserving: r.bool() };
}

export function decodeCommitRes(r: XdrReader): CommitRes {
  const status = r.u32();
  const fileWcc = readWcc(r);
  return { status, fileWcc, verf: status === NfsStat.OK ? readVerf(r) : null };
}
