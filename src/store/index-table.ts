/**
 * The rows of the handle index — inode → (birth, parent, name) — in typed arrays, found by inode
 * and by (parent, name) through two open-addressing hash tables of row numbers.
 *
 * Why not a Map of objects: a served root image has millions of inodes, and a Map entry plus an
 * entry object plus a heap number for the birth time plus a name string cost ~180 bytes where a
 * row here costs ~60 with its name: names are kept as bytes in an arena of 1 MiB chunks (names
 * are latin1 "byte strings" throughout the store). The (parent, name) table is what lets a
 * watcher event ("name N changed in directory D") and a cached LOOKUP find the object without an
 * lstat.
 */

const EMPTY = -1;
const CHUNK_BITS = 16;
const CHUNK = 1 << CHUNK_BITS;
const MASK = CHUNK - 1;
/** Hash tables are rebuilt when this full (linear probing stays short below ~0.7). */
const MAX_LOAD = 0.7;
const ARENA_BITS = 20;
const ARENA_CHUNK = 1 << ARENA_BITS;
/** nameLen of a free row. */
const NO_NAME = 0xffff;
const DELETED = -2;
const TWO_32 = 4294967296;

function mixIno(ino: number): number {
  let h = Math.imul((ino >>> 0) ^ Math.floor(ino / TWO_32), 0x9e3779b1);
  h ^= h >>> 15;
  return Math.imul(h, 0x85ebca77) >>> 0;
}

function mixName(parent: number, name: string): number {
  let h = mixIno(parent) ^ 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  h ^= h >>> 13;
  return Math.imul(h, 0xc2b2ae35) >>> 0;
}

export class IndexTable {
  // Rows in chunks, so growing never copies (nor briefly doubles) a large array.
  private readonly ino: Float64Array[] = [];
  private readonly birth: Float64Array[] = [];
  private readonly parent: Float64Array[] = [];
  /** Where each row's name lies in the arena: chunk << 20 | offset, and its length. */
  private readonly nameAt: Uint32Array[] = [];
  private readonly nameLen: Uint16Array[] = [];
  private arena: Buffer[] = [];
  private arenaPos = ARENA_CHUNK;
  /** Arena bytes of deleted rows; the arena is rewritten when they outweigh the live ones. */
  private arenaGarbage = 0;
  /** Names with a character beyond latin1 (not made by the store, but never mangled). */
  private readonly wide = new Map<number, string>();
  private freeRows: number[] = [];
  private rows = 0;
  private live = 0;
  private byIno = new Int32Array(2048).fill(EMPTY);
  private byName = new Int32Array(2048).fill(EMPTY);
  /** Used cells (live and deleted) of the hash tables; they are rebuilt before half full. */
  private used = 0;

  get size(): number {
    return this.live;
  }

  /** Lets the row chunks and the name arena go, in place. For the stopped warm-up server only (warm-up.ts, `retained`). */
  dropStorage(): void {
    this.ino.length = 0;
    this.birth.length = 0;
    this.parent.length = 0;
    this.nameAt.length = 0;
    this.nameLen.length = 0;
    this.arena.length = 0;
  }

  /** Row of `ino`, or -1. */
  find(ino: number): number {
    const t = this.byIno;
    const mask = t.length - 1;
    for (let i = mixIno(ino) & mask; ; i = (i + 1) & mask) {
      const r = t[i];
      if (r === EMPTY) return -1;
      if (r >= 0 && this.ino[r >>> CHUNK_BITS][r & MASK] === ino) return r;
    }
  }

  /** Row of the child `name` of directory `parent`, or -1. */
  findChild(parent: number, name: string): number {
    const t = this.byName;
    const mask = t.length - 1;
    for (let i = mixName(parent, name) & mask; ; i = (i + 1) & mask) {
      const r = t[i];
      if (r === EMPTY) return -1;
      if (r >= 0 && this.parent[r >>> CHUNK_BITS][r & MASK] === parent && this.nameIs(r, name)) return r;
    }
  }

  inoOf(row: number): number {
    return this.ino[row >>> CHUNK_BITS][row & MASK];
  }

  birthOf(row: number): number {
    return this.birth[row >>> CHUNK_BITS][row & MASK];
  }

  parentOf(row: number): number {
    return this.parent[row >>> CHUNK_BITS][row & MASK];
  }

  /** A new string each call: for the paths that miss the caches. */
  nameOf(row: number): string {
    const len = this.nameLen[row >>> CHUNK_BITS][row & MASK];
    if (len === NO_NAME) return this.wide.get(row)!;
    const at = this.nameAt[row >>> CHUNK_BITS][row & MASK];
    const off = at & (ARENA_CHUNK - 1);
    return this.arena[at >>> ARENA_BITS].toString('latin1', off, off + len);
  }

  /** Whether row's name is `name`, without making a string. */
  nameIs(row: number, name: string): boolean {
    const len = this.nameLen[row >>> CHUNK_BITS][row & MASK];
    if (len === NO_NAME) return this.wide.get(row) === name;
    if (len !== name.length) return false;
    const at = this.nameAt[row >>> CHUNK_BITS][row & MASK];
    const chunk = this.arena[at >>> ARENA_BITS];
    const off = at & (ARENA_CHUNK - 1);
    for (let i = 0; i < len; i++) if (chunk[off + i] !== name.charCodeAt(i)) return false;
    return true;
  }

  private isLive(row: number): boolean {
    return this.nameLen[row >>> CHUNK_BITS][row & MASK] !== NO_NAME || this.wide.has(row);
  }

  private storeName(row: number, name: string): void {
    const c = row >>> CHUNK_BITS;
    const i = row & MASK;
    if (name.length >= NO_NAME || /[^\x00-\xff]/.test(name)) {
      this.nameLen[c][i] = NO_NAME;
      this.wide.set(row, name);
      return;
    }
    if (this.arenaPos + name.length > ARENA_CHUNK) {
      this.arena.push(Buffer.allocUnsafe(ARENA_CHUNK));
      this.arenaPos = 0;
    }
    const chunk = this.arena.length - 1;
    this.arena[chunk].write(name, this.arenaPos, 'latin1');
    this.nameAt[c][i] = (chunk << ARENA_BITS) | this.arenaPos;
    this.nameLen[c][i] = name.length;
    this.arenaPos += name.length;
  }

  private dropName(row: number): void {
    const c = row >>> CHUNK_BITS;
    const i = row & MASK;
    if (this.nameLen[c][i] !== NO_NAME) this.arenaGarbage += this.nameLen[c][i];
    this.nameLen[c][i] = NO_NAME;
    this.wide.delete(row);
  }

  /** Rewrites the arena with the live names only. */
  private compactArena(): void {
    const names: [number, string][] = [];
    for (let r = 0; r < this.rows; r++) {
      if (this.nameLen[r >>> CHUNK_BITS][r & MASK] !== NO_NAME) names.push([r, this.nameOf(r)]);
    }
    this.arena = [];
    this.arenaPos = ARENA_CHUNK;
    this.arenaGarbage = 0;
    for (const [r, n] of names) this.storeName(r, n);
  }

  /** Inserts or replaces the row of `ino`. */
  set(ino: number, birth: number, parent: number, name: string): void {
    const old = this.find(ino);
    if (old >= 0) this.remove(old);
    if (this.used + 1 > MAX_LOAD * this.byIno.length) this.rebuild();
    const row = this.freeRows.pop() ?? this.rows++;
    if (row >>> CHUNK_BITS >= this.ino.length) {
      this.ino.push(new Float64Array(CHUNK));
      this.birth.push(new Float64Array(CHUNK));
      this.parent.push(new Float64Array(CHUNK));
      this.nameAt.push(new Uint32Array(CHUNK));
      this.nameLen.push(new Uint16Array(CHUNK).fill(NO_NAME));
    }
    this.ino[row >>> CHUNK_BITS][row & MASK] = ino;
    this.birth[row >>> CHUNK_BITS][row & MASK] = birth;
    this.parent[row >>> CHUNK_BITS][row & MASK] = parent;
    this.storeName(row, name);
    this.place(this.byIno, mixIno(ino), row);
    this.place(this.byName, mixName(parent, name), row);
    this.used++;
    this.live++;
  }

  delete(ino: number): boolean {
    const row = this.find(ino);
    if (row < 0) return false;
    this.remove(row);
    return true;
  }

  /** Every live row's inode (for writing the index out). */
  *inodes(): IterableIterator<number> {
    for (let r = 0; r < this.rows; r++) if (this.isLive(r)) yield this.inoOf(r);
  }

  private remove(row: number): void {
    this.unplace(this.byIno, mixIno(this.inoOf(row)), row);
    this.unplace(this.byName, mixName(this.parentOf(row), this.nameOf(row)), row);
    this.dropName(row);
    this.freeRows.push(row);
    this.live--;
    if (this.arenaGarbage > 8 * ARENA_CHUNK && this.arenaGarbage > this.arenaPos + (this.arena.length - 1) * ARENA_CHUNK - this.arenaGarbage) this.compactArena();
  }

  private place(t: Int32Array, hash: number, row: number): void {
    const mask = t.length - 1;
    let i = hash & mask;
    while (t[i] >= 0) i = (i + 1) & mask;
    t[i] = row;
  }

  private unplace(t: Int32Array, hash: number, row: number): void {
    const mask = t.length - 1;
    for (let i = hash & mask; t[i] !== EMPTY; i = (i + 1) & mask) {
      if (t[i] === row) {
        t[i] = DELETED;
        return;
      }
    }
  }

  /** New hash tables at most half full, without deleted cells. */
  private rebuild(): void {
    let cap = 2048;
    while (cap < 2 * (this.live + 2)) cap *= 2;
    this.byIno = new Int32Array(cap).fill(EMPTY);
    this.byName = new Int32Array(cap).fill(EMPTY);
    for (let r = 0; r < this.rows; r++) {
      if (!this.isLive(r)) continue;
      this.place(this.byIno, mixIno(this.inoOf(r)), r);
      this.place(this.byName, mixName(this.parentOf(r), this.nameOf(r)), r);
    }
    this.used = this.live;
  }
}
