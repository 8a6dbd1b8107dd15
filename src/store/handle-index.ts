/**
 * The persistent index behind file handles: inode number → (birth time, parent inode, name).
 *
 * A handle carries only (fsid, ino, birth); to serve it we need a path. Walking up the parent
 * chain gives one, and it stays right when a file or any of its parents is renamed through us
 * (we update the one entry). The index is appended to a log in the state directory so that
 * handles taken before a restart still resolve after it; what the log missed (a crash, a change
 * made behind our back) is found again by the store's bounded walk of the export.
 *
 * Log record: type u8 (1 set, 2 delete) | ino u64 | birth u64 | parent u64 | nameLen u16 | name.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { componentLogger } from '../log/logger.js';
import { readU64At, writeU64At } from '../rpc/xdr.js';
import { IndexTable } from './index-table.js';

const log = componentLogger('handle-index');
const REC_SET = 1;
const REC_DEL = 2;
const HEADER = 1 + 8 + 8 + 8 + 2;
/** Longest parent chain we follow; deeper means a cycle from a corrupt log. */
const MAX_DEPTH = 4096;

/**
 * Records not yet appended, written straight into one growing buffer: a LOOKUP storm adds an
 * entry per new object, and a Buffer per record (held until the batch is written) was garbage
 * that lived long enough to be promoted to V8's old space.
 */
class RecordBuffer {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private len = 0;

  get length(): number {
    return this.len;
  }

  put(type: number, ino: number, birth: number, parent: number, name: string): void {
    const nameLen = type === REC_SET ? Buffer.byteLength(name, 'latin1') : 0;
    const need = this.len + HEADER + nameLen;
    if (need > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
      this.buf.copy(bigger, 0, 0, this.len);
      this.buf = bigger;
    }
    const b = this.buf;
    const at = this.len;
    b.fill(0, at, at + HEADER);
    b[at] = type;
    writeU64At(b, at + 1, ino);
    if (type === REC_SET) {
      writeU64At(b, at + 9, birth);
      writeU64At(b, at + 17, parent);
      b.writeUInt16BE(nameLen, at + 25);
      b.write(name, at + HEADER, 'latin1');
    }
    this.len = need;
  }

  /** A copy of the records so far (the buffer is reused while the copy is written); empties it. */
  take(): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.len));
    this.len = 0;
    // A burst may have grown the buffer a lot; do not keep that much forever.
    if (this.buf.length > 1024 * 1024) this.buf = Buffer.allocUnsafe(64 * 1024);
    return out;
  }
}

export interface IndexEntry {
  birth: number;
  parent: number;
  name: string;
}

export class HandleIndex {
  private readonly entries = new IndexTable();
  private readonly file: string | null;
  private readonly pending = new RecordBuffer();
  private flushTimer: NodeJS.Timeout | null = null;
  /** The log, open for appending from the first flush on (an open and close per 20 ms batch cost the event loop two threadpool round trips). */
  private fd: number | null = null;
  private flushing: Promise<void> = Promise.resolve();
  /** Bumped on every rename/delete: cached paths of an older generation are recomputed. */
  private generation = 0;
  private readonly pathCache = new Map<number, { gen: number; rel: string }>();
  private readonly rootIno: number;
  /** Length of the log up to its last whole record, as found when it was replayed. */
  private validBytes = 0;

  private constructor(file: string | null, rootIno: number) {
    this.file = file;
    this.rootIno = rootIno;
  }

  /** Opens (and replays) the index log in `dir`; `dir` null keeps the index in memory only. */
  static async open(dir: string | null, rootIno: number): Promise<HandleIndex> {
    if (dir === null) return new HandleIndex(null, rootIno);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, 'handles.log');
    const index = new HandleIndex(file, rootIno);
    let records = 0;
    try {
      const data = await fsp.readFile(file);
      records = index.replay(data);
      // A record torn by a crash must go before we append: replay stops at the first bad record,
      // so everything appended after the torn bytes would be lost at the next restart.
      if (index.validBytes < data.length) await fsp.truncate(file, index.validBytes);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (records > 2 * index.entries.size + 1000) await index.compact();
    log.info({ file, entries: index.entries.size, records }, 'handle index loaded');
    return index;
  }

  private replay(data: Buffer): number {
    let off = 0;
    let records = 0;
    while (off + HEADER <= data.length) {
      const type = data[off];
      const nameLen = data.readUInt16BE(off + 25);
      if ((type !== REC_SET && type !== REC_DEL) || off + HEADER + nameLen > data.length) break;
      const ino = readU64At(data, off + 1);
      if (type === REC_SET) {
        this.entries.set(ino, readU64At(data, off + 9), readU64At(data, off + 17), data.toString('latin1', off + HEADER, off + HEADER + nameLen));
      } else {
        this.entries.delete(ino);
      }
      off += HEADER + nameLen;
      records++;
    }
    if (off !== data.length) log.warn({ file: this.file, at: off, size: data.length }, 'handle index log has a torn tail; cut off');
    this.validBytes = off;
    return records;
  }

  private async compact(): Promise<void> {
    if (this.file === null) return;
    const all = new RecordBuffer();
    for (const ino of this.entries.inodes()) {
      const e = this.get(ino)!;
      all.put(REC_SET, ino, e.birth, e.parent, e.name);
    }
    const tmp = `${this.file}.tmp`;
    await fsp.writeFile(tmp, all.take(), { mode: 0o600 });
    await fsp.rename(tmp, this.file);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Changes whenever a cached path may have become wrong (a rename or delete). */
  get pathGeneration(): number {
    return this.generation;
  }

  /** A new object each call: for the paths that miss the caches. */
  get(ino: number): IndexEntry | undefined {
    const row = this.entries.find(ino);
    if (row < 0) return undefined;
    return { birth: this.entries.birthOf(row), parent: this.entries.parentOf(row), name: this.entries.nameOf(row) };
  }

  /** The inode recorded as child `name` of directory `parent`, or -1. */
  childOf(parent: number, name: string): number {
    const row = this.entries.findChild(parent, name);
    return row < 0 ? -1 : this.entries.inoOf(row);
  }

  /** The recorded parent directory of `ino`, or -1. */
  parentOf(ino: number): number {
    const row = this.entries.find(ino);
    return row < 0 ? -1 : this.entries.parentOf(row);
  }

  /** Records where `ino` lives; a no-op when nothing changed (the common LOOKUP case). */
  set(ino: number, birth: number, parent: number, name: string): void {
    if (ino === this.rootIno) return;
    const t = this.entries;
    const row = t.find(ino);
    if (row >= 0) {
      if (t.birthOf(row) === birth && t.parentOf(row) === parent && t.nameOf(row) === name) return;
      this.generation++;
    }
    // A name holds one object: an inode recorded under it before was replaced (rsync renames a
    // new file over the old one), and its handle is STALE unless a walk finds it elsewhere.
    const previous = t.findChild(parent, name);
    if (previous >= 0 && t.inoOf(previous) !== ino) this.delete(t.inoOf(previous));
    this.entries.set(ino, birth, parent, name);
    this.append(REC_SET, ino, birth, parent, name);
  }

  delete(ino: number): void {
    if (!this.entries.delete(ino)) return;
    this.generation++;
    this.append(REC_DEL, ino, 0, 0, '');
  }

  /** Path of `ino` relative to the export root as a byte string ('' for the root), or null. */
  relPath(ino: number): string | null {
    if (ino === this.rootIno) return '';
    const cached = this.pathCache.get(ino);
    if (cached !== undefined && cached.gen === this.generation) return cached.rel;
    const names: string[] = [];
    let cur = ino;
    for (let depth = 0; cur !== this.rootIno; depth++) {
      const row = this.entries.find(cur);
      if (row < 0 || depth > MAX_DEPTH) return null;
      names.push(this.entries.nameOf(row));
      cur = this.entries.parentOf(row);
    }
    const rel = names.reverse().join('/');
    // Bounded: the attribute cache keeps the paths of the hot objects with them.
    if (this.pathCache.size > 20_000) this.pathCache.clear();
    this.pathCache.set(ino, { gen: this.generation, rel });
    return rel;
  }

  private append(type: number, ino: number, birth: number, parent: number, name: string): void {
    if (this.file === null) return;
    this.pending.put(type, ino, birth, parent, name);
    // Batched: one append per 20 ms at most. A crash loses at most that window, which the
    // store's walk recovers.
    if (this.flushTimer === null) this.flushTimer = setTimeout(() => void this.flush(), 20);
  }

  flush(): Promise<void> {
    if (this.flushTimer !== null) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.file === null || this.pending.length === 0) return this.flushing;
    const data = this.pending.take();
    const file = this.file;
    this.flushing = this.flushing.then(
      () =>
        new Promise<void>((resolve) => {
          const failed = (err: unknown) => {
            log.error({ err, file }, 'cannot append to handle index');
            resolve();
          };
          let fd: number;
          try {
            fd = this.appendFd();
          } catch (err) {
            failed(err);
            return;
          }
          const writeFrom = (at: number): void =>
            fs.write(fd, data, at, data.length - at, null, (err, n) => {
              if (err) failed(err);
              else if (at + n < data.length) writeFrom(at + n);
              else resolve();
            });
          writeFrom(0);
        }),
    );
    return this.flushing;
  }

  private appendFd(): number {
    this.fd ??= fs.openSync(this.file!, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
    return this.fd;
  }

  /** Writes what is pending and closes the log. */
  async close(): Promise<void> {
    await this.flush();
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  /** Lets the in-memory table's storage go (the log on disk is untouched); see IndexTable.dropStorage. */
  dropStorage(): void {
    this.entries.dropStorage();
  }

  /** Flushes synchronously; for process exit paths. */
  flushSync(): void {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.file === null || this.pending.length === 0) return;
    const data = this.pending.take();
    const fd = this.appendFd();
    for (let at = 0; at < data.length; ) at += fs.writeSync(fd, data, at, data.length - at);
  }
}
