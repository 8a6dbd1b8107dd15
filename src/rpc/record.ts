/**
 * TCP record marking (RFC 5531 section 11): a record is one or more fragments, each behind a
 * 4-byte header whose top bit marks the last fragment and whose low 31 bits give its length.
 *
 * The common case — a whole single-fragment record inside one received chunk — is handed on as a
 * view of that chunk, with no copy. Records that span chunks or fragments are gathered and joined
 * once. Limits are checked on the header, before anything is buffered, so a header that claims
 * 2 GiB costs nothing.
 *
 * A reader that receives into one reused buffer (net's `onread`) says so: the decoder then copies
 * what must outlive the chunk into a buffer of its own, and each record it hands on is valid only
 * until onRecord returns.
 */
import { DEFAULT_LIMITS } from './limits.js';

export interface RecordLimits {
  /** Largest record accepted, in bytes (all fragments together). */
  maxRecordBytes: number;
  /** Most fragments one record may have; bounds floods of zero-length or tiny fragments. */
  maxFragments: number;
}

export const DEFAULT_RECORD_LIMITS: RecordLimits = DEFAULT_LIMITS;

export type RecordViolation = 'record-too-large' | 'too-many-fragments';

export interface RecordSink {
  /** Returning false stops the decoder after this record; the rest waits for resume(). */
  onRecord(record: Buffer): boolean | void;
  onViolation(kind: RecordViolation, detail: number): void;
}

export class RecordDecoder {
  private readonly limits: RecordLimits;
  private readonly sink: RecordSink;
  private readonly header = Buffer.alloc(4);
  private headerFill = 0;
  private fragRemaining = 0;
  private fragLast = false;
  private parts: Buffer[] = [];
  /** Chunks are reused: a record spanning chunks is copied here (grown as needed, then kept). */
  private gather: Buffer | null;
  private recordLen = 0;
  private fragments = 0;
  private broken = false;
  /** Bytes received after the record at which the sink said stop. */
  private held: Buffer | null = null;
  /** Records handed on so far (tells a stalled record from a stream of finished ones). */
  recordsDone = 0;

  constructor(sink: RecordSink, limits: RecordLimits = DEFAULT_RECORD_LIMITS, chunksReused = false) {
    this.sink = sink;
    this.limits = limits;
    this.gather = chunksReused ? Buffer.alloc(0) : null;
  }

  /** True while a record has started but not ended (for the stalled-client idle timeout). */
  hasPartial(): boolean {
    return this.headerFill > 0 || this.fragRemaining > 0 || this.fragments > 0;
  }

  /** Bytes held for an unfinished record. */
  bufferedBytes(): number {
    return this.recordLen;
  }

  /** True while the sink has stopped the decoder and bytes wait for resume(). */
  isHolding(): boolean {
    return this.held !== null;
  }

  /** Continues with the bytes held since the sink said stop. */
  resume(): void {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    this.feed(held);
  }

  feed(chunk: Buffer): void {
    if (this.held !== null) {
      // Only reachable if data arrives while the sink has us stopped (it should pause its socket).
      this.held = Buffer.concat([this.held, chunk]);
      return;
    }
    let off = 0;
    const n = chunk.length;
    while (off < n && !this.broken) {
      if (this.fragRemaining === 0) {
        let hdr: number;
        if (this.headerFill === 0 && n - off >= 4) {
          hdr = chunk.readUInt32BE(off);
          off += 4;
        } else {
          const take = Math.min(4 - this.headerFill, n - off);
          chunk.copy(this.header, this.headerFill, off, off + take);
          this.headerFill += take;
          off += take;
          if (this.headerFill < 4) return;
          this.headerFill = 0;
          hdr = this.header.readUInt32BE(0);
        }
        const last = hdr >= 0x80000000;
        const len = hdr & 0x7fffffff;
        if (this.recordLen + len > this.limits.maxRecordBytes) {
          this.broken = true;
          this.sink.onViolation('record-too-large', this.recordLen + len);
          return;
        }
        if (++this.fragments > this.limits.maxFragments) {
          this.broken = true;
          this.sink.onViolation('too-many-fragments', this.fragments);
          return;
        }
        if (len === 0) {
          if (last && !this.emit()) return this.hold(chunk, off);
          continue;
        }
        if (last && this.recordLen === 0 && n - off >= len) {
          // Fast path: the whole record is in this chunk.
          const record = chunk.subarray(off, off + len);
          off += len;
          this.fragments = 0;
          this.recordsDone++;
          if (this.sink.onRecord(record) === false) return this.hold(chunk, off);
          continue;
        }
        this.fragRemaining = len;
        this.fragLast = last;
      }
      const take = Math.min(this.fragRemaining, n - off);
      if (this.gather === null) this.parts.push(chunk.subarray(off, off + take));
      else this.gatherCopy(chunk, off, take);
      this.recordLen += take;
      this.fragRemaining -= take;
      off += take;
      if (this.fragRemaining === 0 && this.fragLast && !this.emit()) return this.hold(chunk, off);
    }
  }

  private hold(chunk: Buffer, off: number): void {
    if (off < chunk.length) this.held = this.gather === null ? chunk.subarray(off) : Buffer.from(chunk.subarray(off));
  }

  private gatherCopy(chunk: Buffer, off: number, take: number): void {
    let g = this.gather!;
    const need = this.recordLen + take;
    if (need > g.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, g.length * 2, 64 * 1024));
      g.copy(grown, 0, 0, this.recordLen);
      this.gather = g = grown;
    }
    chunk.copy(g, this.recordLen, off, off + take);
  }

  /** Hands on the gathered record; false when the sink said stop. */
  private emit(): boolean {
    const parts = this.parts;
    let record: Buffer;
    if (this.gather !== null) record = this.gather.subarray(0, this.recordLen);
    else record = parts.length === 1 ? parts[0] : Buffer.concat(parts, this.recordLen);
    if (parts.length !== 0) this.parts = [];
    this.recordLen = 0;
    this.fragments = 0;
    this.fragLast = false;
    this.recordsDone++;
    return this.sink.onRecord(record) !== false;
  }
}

/** The record mark for a single-fragment record of `len` bytes. */
export function lastFragmentHeader(len: number): number {
  return (0x80000000 | len) >>> 0;
}
