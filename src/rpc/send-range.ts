/**
 * The native addon (native/sendrange.c, built by `npm install`) that sends a READ reply's bytes
 * from the file to the socket with sendfile(2) on threads of its own. Where it was not built the
 * server works as before, copying the data through a Buffer; one log line says so.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { componentLogger } from '../log/logger.js';
import { packageRoot } from '../package-paths.js';

export interface SendRangeAddon {
  /** Its threads: sends at once (a send holds one while its client reads). */
  readonly threads: number;
  /**
   * Writes `head`, then `length` bytes of `fileFd` from `position`, then `tail`, to a duplicate
   * of `socketFd`; returns the duplicate's number (for abort). `done` gets 0 or an errno, and the
   * bytes that reached the socket. A client that takes nothing for `stallMs` fails it (ETIMEDOUT).
   */
  start(
    socketFd: number,
    fileFd: number,
    position: number,
    length: number,
    head: Buffer,
    tail: Buffer | null,
    stallMs: number,
    done: (errno: number, sent: number) => void,
  ): number;
  /** Makes the send on this duplicate fail at once (its connection is being closed). */
  abort(duplicateFd: number): void;
}

/** Where node-gyp leaves it. */
const ADDON = path.join(packageRoot, 'build', 'Release', 'sendrange.node');

function load(): SendRangeAddon | null {
  // For comparing the two paths (bench) and as a way out should the addon misbehave somewhere.
  if (process.env.CLUSTERNFS_NO_SENDFILE === '1') return null;
  try {
    return createRequire(import.meta.url)(ADDON) as SendRangeAddon;
  } catch (err) {
    componentLogger('tcp').info({ addon: ADDON, err: (err as Error).message }, 'native sendfile unavailable: READs of large files are copied');
    return null;
  }
}

export const sendRangeAddon: SendRangeAddon | null = load();
