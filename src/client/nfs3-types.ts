/**
 * Decoded NFSv3 results (RFC 1813), one interface per result. Every result has every field, with
 * null for what the server did not send, so objects of one kind share a shape (and tests can
 * assert error statuses and the attributes that come with them alike).
 *
 * Names travel as latin1 "byte strings": one char per byte, so non-UTF-8 names survive. 64-bit
 * sizes and offsets are numbers (exact up to 2^53); cookies and fsid are bigint (exact).
 */

export interface NfsTime {
  sec: number;
  nsec: number;
}

export interface SpecData {
  major: number;
  minor: number;
}

export interface Fattr3 {
  /** FType */
  type: number;
  /** Permission bits and setuid/setgid/sticky (no file type bits). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  used: number;
  rdev: SpecData;
  fsid: bigint;
  fileid: number;
  atime: NfsTime;
  mtime: NfsTime;
  ctime: NfsTime;
}

/** wcc_attr: the before-image of the attributes a change is checked against. */
export interface WccAttr {
  size: number;
  mtime: NfsTime;
  ctime: NfsTime;
}

export interface WccData {
  before: WccAttr | null;
  after: Fattr3 | null;
}

/** A time to set: 'server' for SET_TO_SERVER_TIME, a time for SET_TO_CLIENT_TIME; absent = DONT_CHANGE. */
export type SetTime = 'server' | NfsTime;

/** sattr3: fields left undefined are not changed. */
export interface Sattr3 {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: SetTime;
  mtime?: SetTime;
}

export interface GetattrRes {
  status: number;
  attr: Fattr3 | null;
}

export interface WccRes {
  status: number;
  wcc: WccData;
}

export interface LookupRes {
  status: number;
  fh: Buffer | null;
  objAttr: Fattr3 | null;
  dirAttr: Fattr3 | null;
}

export interface AccessRes {
  status: number;
  objAttr: Fattr3 | null;
  /** Access bits granted (0 on error). */
  access: number;
}

export interface ReadlinkRes {
  status: number;
  symlinkAttr: Fattr3 | null;
  /** Target as a latin1 byte string; null on error. */
  data: string | null;
}

export interface ReadRes {
  status: number;
  fileAttr: Fattr3 | null;
  count: number;
  eof: boolean;
  /** A view of the received record; copy it if you keep it long. Empty on error. */
  data: Buffer;
}

export interface WriteRes {
  status: number;
  wcc: WccData;
  count: number;
  /** StableHow the server actually used; -1 on error. */
  committed: number;
  /** 8-byte write verifier; null on error. */
  verf: Buffer | null;
}

/** CREATE, MKDIR, SYMLINK and MKNOD. */
export interface DiropRes {
  status: number;
  /** post_op_fh3: null when the server did not return a handle (or on error). */
  fh: Buffer | null;
  objAttr: Fattr3 | null;
  dirWcc: WccData;
}

export interface RenameRes {
  status: number;
  fromDirWcc: WccData;
  toDirWcc: WccData;
}

export interface LinkRes {
  status: number;
  fileAttr: Fattr3 | null;
  linkDirWcc: WccData;
}

export interface DirEntry {
  fileid: number;
  /** latin1 byte string */
  name: string;
  cookie: bigint;
}

export interface DirEntryPlus extends DirEntry {
  attr: Fattr3 | null;
  fh: Buffer | null;
}

export interface ReaddirRes {
  status: number;
  dirAttr: Fattr3 | null;
  /** 8 bytes; null on error. */
  cookieverf: Buffer | null;
  entries: DirEntry[];
  eof: boolean;
}

export interface ReaddirplusRes {
  status: number;
  dirAttr: Fattr3 | null;
  cookieverf: Buffer | null;
  entries: DirEntryPlus[];
  eof: boolean;
}

export interface FsstatRes {
  status: number;
  objAttr: Fattr3 | null;
  tbytes: number;
  fbytes: number;
  abytes: number;
  tfiles: number;
  ffiles: number;
  afiles: number;
  invarsec: number;
}

export interface FsinfoRes {
  status: number;
  objAttr: Fattr3 | null;
  rtmax: number;
  rtpref: number;
  rtmult: number;
  wtmax: number;
  wtpref: number;
  wtmult: number;
  dtpref: number;
  maxFileSize: number;
  timeDelta: NfsTime;
  /** FsfProps bits */
  properties: number;
}

export interface PathconfRes {
  status: number;
  objAttr: Fattr3 | null;
  linkMax: number;
  nameMax: number;
  noTrunc: boolean;
  chownRestricted: boolean;
  caseInsensitive: boolean;
  casePreserving: boolean;
}

export interface CommitRes {
  status: number;
  fileWcc: WccData;
  verf: Buffer | null;
}

/** A file name: a latin1 byte string, or raw bytes. */
export type Name = string | Uint8Array;
