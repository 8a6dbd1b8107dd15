/**
 * TCP record marking (RFC 5531 section 11): a record is one or more fragments, each behind a
 * 4-byte header whose top bit marks the last fragment and whose low 31 bits give its length.
 *
 * The common case — a whole single-fragment record inside one received chunk — is handed on as a
 * view of that chunk, with no copy. Records that span chunks or fragments are gathered and joined
 * once. Limits are checked on the header, before anything is buffered, so a header that claims
 * 2 GiB costs nothing.
 */

export interface RecordLimits {
  /** Largest record accepted, in bytes (all fragments together). */
  maxRecordBytes: number;
  /** Most fragments one record may have; bounds floods of zero-length or tiny fragments. */
  maxFragments: number;
}

export const DEFAULT_RECORD_LIMITS: RecordLimits = {
  // A 1 MiB WRITE plus headers; the kernel client never sends more than wsize + a few hundred bytes.
  maxRecordBytes: 1024 * 1024 + 64 * 1024,
  maxFragments: 64,
};

export type RecordViolation = 'record-too-large' | 'too-many-fragments';

export interface RecordSink {
  onRecord(record: Buffer): void;
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
  private recordLen = 0;
  private fragments = 0;
  private broken = false;

  constructor(sink: RecordSink, limits: RecordLimits = DEFAULT_RECORD_LIMITS) {
    this.sink = sink;
    this.limits = limits;
  }

  /** True while a record has started but not ended (for the stalled-client idle timeout). */
  hasPartial(): boolean {
    return this.headerFill > 0 || this.fragRemaining > 0 || this.fragments > 0;
  }

  /** Bytes held for an unfinished record. */
  bufferedBytes(): number {
    return this.recordLen;
  }

  feed(chunk: Buffer): void {
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
          if (last) this.emit();
          continue;
        }
        if (last && this.parts.length === 0 && n - off >= len) {
          // Fast path: the whole record is in this chunk.
          const record = chunk.subarray(off, off + len);
          off += len;
          this.fragments = 0;
          this.sink.onRecord(record);
          continue;
        }
        this.fragRemaining = len;
        this.fragLast = last;
      }
      const take = Math.min(this.fragRemaining, n - off);
      this.parts.push(chunk.subarray(off, off + take));
      this.recordLen += take;
      this.fragRemaining -= take;
      off += take;
      if (this.fragRemaining === 0 && this.fragLast) this.emit();
    }
  }

  private emit(): void {
    const parts = this.parts;
    const record = parts.length === 1 ? parts[0] : Buffer.concat(parts, this.recordLen);
    this.parts = [];
    this.recordLen = 0;
    this.fragments = 0;
    this.fragLast = false;
    this.sink.onRecord(record);
  }
}

/** The record mark for a single-fragment record of `len` bytes. */
export function lastFragmentHeader(len: number): number {
  return (0x80000000 | len) >>> 0;
}
