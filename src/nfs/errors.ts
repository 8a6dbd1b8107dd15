/**
 * The one errno → nfsstat3 table. Every file-system failure reaches the client through here.
 */
import { NfsStat } from './constants.js';

/** A failure with an NFS status; thrown by the store and answered by the procedure. */
export class NfsError extends Error {
  readonly status: NfsStat;
  constructor(status: NfsStat, message?: string) {
    super(message ?? `nfsstat3 ${status}`);
    this.status = status;
  }
}

const ERRNO_TO_NFS: Record<string, NfsStat> = {
  EPERM: NfsStat.PERM,
  ENOENT: NfsStat.NOENT,
  EIO: NfsStat.IO,
  ENXIO: NfsStat.NXIO,
  EACCES: NfsStat.ACCES,
  EEXIST: NfsStat.EXIST,
  EXDEV: NfsStat.XDEV,
  ENODEV: NfsStat.NODEV,
  ENOTDIR: NfsStat.NOTDIR,
  EISDIR: NfsStat.ISDIR,
  EINVAL: NfsStat.INVAL,
  EFBIG: NfsStat.FBIG,
  ENOSPC: NfsStat.NOSPC,
  EROFS: NfsStat.ROFS,
  EMLINK: NfsStat.MLINK,
  ENAMETOOLONG: NfsStat.NAMETOOLONG,
  ENOTEMPTY: NfsStat.NOTEMPTY,
  EDQUOT: NfsStat.DQUOT,
  ESTALE: NfsStat.STALE,
  // O_NOFOLLOW on a symlink: the object is not of a type the operation takes.
  ELOOP: NfsStat.INVAL,
  EOPNOTSUPP: NfsStat.NOTSUPP,
  ENOTSUP: NfsStat.NOTSUPP,
  ENOSYS: NfsStat.NOTSUPP,
  // Out of descriptors or threads: the client should retry later rather than fail.
  EMFILE: NfsStat.JUKEBOX,
  ENFILE: NfsStat.JUKEBOX,
  EAGAIN: NfsStat.JUKEBOX,
  ENOMEM: NfsStat.JUKEBOX,
  EBUSY: NfsStat.JUKEBOX,
  ETXTBSY: NfsStat.JUKEBOX,
  EOVERFLOW: NfsStat.FBIG,
  ESPIPE: NfsStat.INVAL,
};

/** Maps any thrown value to an nfsstat3; unknown failures are SERVERFAULT. */
export function toNfsStat(err: unknown): NfsStat {
  if (err instanceof NfsError) return err.status;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code !== undefined) {
    const mapped = ERRNO_TO_NFS[code];
    if (mapped !== undefined) return mapped;
  }
  return NfsStat.SERVERFAULT;
}

/** True for failures that are expected answers, not server problems worth an error log. */
export function isClientError(status: NfsStat): boolean {
  return status !== NfsStat.SERVERFAULT && status !== NfsStat.IO;
}
