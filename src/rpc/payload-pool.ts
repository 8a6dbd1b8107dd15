/**
 * Buffers for READ data that go back to a pool once the reply carrying them has left, instead of
 * a fresh 1 MiB allocation per READ: external memory that size makes V8 collect garbage every few
 * calls (a quarter of the server's time in a 1 MiB READ profile).
 *
 * The contract: the store fills a buffer from `acquire`; the reply path hands it to the socket as
 * its own iovec; the transport calls `release` only when the kernel has it (write or send
 * callback) or the socket is closed for good. Whoever never releases (a copy-on-write copy, a
 * dropped datagram) just lets it be collected: lent buffers are tracked weakly, and a release of
 * a buffer not lent (or already released) does nothing, so a double release cannot hand one
 * buffer to two replies.
 *
 * Buffers the pool lets go are garbage V8 does not hurry to collect: they are old, and freeing
 * external memory does not prompt a collection, so after a burst of large READs the server kept
 * its peak RSS for as long as nothing else allocated (seen: 152 MB of a 187 MB peak still held
 * 30 s after the clients left, against 89 MB when a collection happened to run). When a quiet
 * second follows a burst that let go of 32 MiB or more, the pool asks for one full collection.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

/** Below 4 KiB Buffer.allocUnsafe already slices Node's own pool; nothing to gain. */
const MIN_SHIFT = 12;
/** 1 MiB: the largest READ we offer (rtmax). Larger requests are plain allocations. */
const MAX_SHIFT = 20;
const CLASSES = MAX_SHIFT - MIN_SHIFT + 1;
/** Bytes let go (trimmed, or dropped with the pool full) after which a quiet second collects. */
const COLLECT_AFTER_BYTES = 32 * 1024 * 1024;

let fullGc: (() => void) | null = null;

/** One full garbage collection (V8's gc(), made available at first use). */
function collectGarbage(): void {
  if (fullGc === null) {
    v8.setFlagsFromString('--expose-gc');
    fullGc = vm.runInNewContext('gc') as () => void;
  }
  fullGc();
}

function classOf(size: number): number {
  return size <= 1 << MIN_SHIFT ? 0 : 32 - Math.clz32(size - 1) - MIN_SHIFT;
}

export class PayloadPool {
  /** Idle buffers per power-of-two size class, 4 KiB … 1 MiB. */
  private readonly free: ArrayBuffer[][] = [];
  private readonly lent = new WeakSet<ArrayBuffer>();
  private idle = 0;
  /** Bytes kept idle at most; a release beyond it leaves the buffer to the garbage collector. */
  readonly maxIdleBytes: number;
  /** Acquires served from an idle buffer / by a new one; releases that found the pool full. */
  reused = 0;
  created = 0;
  dropped = 0;
  /** Full collections asked for after bursts. */
  collections = 0;
  /** Bytes let go since the last collection. */
  private letGo = 0;

  /** An acquire happened since the last trim tick. */
  private busy = false;
  private trimTimer: NodeJS.Timeout | null = null;

  constructor(maxIdleBytes: number, trimAfterMs: number) {
    this.maxIdleBytes = maxIdleBytes;
    for (let i = 0; i < CLASSES; i++) this.free.push([]);
    if (trimAfterMs > 0) {
      // A server that stopped reading gives its idle buffers back instead of keeping them for good.
      this.trimTimer = setInterval(() => {
        if (!this.busy) {
          this.trim();
          if (this.letGo >= COLLECT_AFTER_BYTES) {
            this.letGo = 0;
            this.collections++;
            collectGarbage();
          }
        }
        this.busy = false;
      }, trimAfterMs);
      this.trimTimer.unref();
    }
  }

  /** Forgets every idle buffer (the lent ones come back later as usual). */
  trim(): void {
    for (let i = 0; i < CLASSES; i++) this.free[i].length = 0;
    this.letGo += this.idle;
    this.idle = 0;
  }

  /** A buffer of exactly `size` bytes (a view of a pooled one); its contents are stale. */
  acquire(size: number): Buffer {
    if (size < 1 << MIN_SHIFT || size > 1 << MAX_SHIFT) return Buffer.allocUnsafe(size);
    this.busy = true;
    const cls = classOf(size);
    let ab = this.free[cls].pop();
    if (ab === undefined) {
      // Not new ArrayBuffer(): that zero-fills a MiB the read is about to overwrite.
      ab = Buffer.allocUnsafeSlow(1 << (cls + MIN_SHIFT)).buffer as ArrayBuffer;
      this.created++;
    } else {
      this.idle -= ab.byteLength;
      this.reused++;
    }
    this.lent.add(ab);
    return Buffer.from(ab, 0, size);
  }

  /** True when `buf` is a view of a buffer lent by this pool and not yet released. */
  isLent(buf: Buffer): boolean {
    return this.lent.has(buf.buffer as ArrayBuffer);
  }

  /** Gives back a buffer from acquire (or a view of it); anything else is ignored. */
  release(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    if (!this.lent.delete(ab)) return;
    if (this.idle + ab.byteLength > this.maxIdleBytes) {
      this.dropped++;
      this.letGo += ab.byteLength;
      return;
    }
    this.idle += ab.byteLength;
    this.free[classOf(ab.byteLength)].push(ab);
  }

  idleBytes(): number {
    return this.idle;
  }
}

/**
 * The process's pool. Clients that READ in lockstep lend out all their buffers at once and give
 * them all back at once, so the idle cap must hold what they keep in flight together, or every
 * round allocates again: with 64 nodes reading 1 MiB each a 32 MiB cap still made one buffer in
 * six anew, 64 MiB none after the first round. A quiet second frees them all.
 */
export const payloadPool = new PayloadPool(64 * 1024 * 1024, 1000);
