/**
 * The rows of the handle index — inode → (birth, parent, name) — in typed arrays, found by inode
 * and by (parent, name) through two open-addressing hash tables of row numbers.
 *
 * Why not a Map of objects: a served root image has millions of inodes, and a Map entry plus an
 * entry object plus a heap number for the birth time cost ~130 bytes where these rows cost ~40
 * (plus the name string, which both keep). The (parent, name) table is what lets a watcher event
 * ("name N changed in directory D") and a cached LOOKUP find the object without an lstat.
 */

const EMPTY = -1;
const CHUNK_BITS = 16;
const CHUNK = 1 << CHUNK_BITS;
const MASK = CHUNK - 1;
/** Hash tables are rebuilt when this full (linear probing stays short below ~0.7). */
const MAX_LOAD = 0.7;
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
  private names: (string | undefined)[] = [];
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
      if (r >= 0 && this.names[r] === name && this.parent[r >>> CHUNK_BITS][r & MASK] === parent) return r;
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

  nameOf(row: number): string {
    return this.names[row]!;
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
    }
    this.ino[row >>> CHUNK_BITS][row & MASK] = ino;
    this.birth[row >>> CHUNK_BITS][row & MASK] = birth;
    this.parent[row >>> CHUNK_BITS][row & MASK] = parent;
    this.names[row] = name;
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
    for (let r = 0; r < this.rows; r++) if (this.names[r] !== undefined) yield this.inoOf(r);
  }

  private remove(row: number): void {
    this.unplace(this.byIno, mixIno(this.inoOf(row)), row);
    this.unplace(this.byName, mixName(this.parentOf(row), this.names[row]!), row);
    this.names[row] = undefined;
    this.freeRows.push(row);
    this.live--;
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
      if (this.names[r] === undefined) continue;
      this.place(this.byIno, mixIno(this.inoOf(r)), r);
      this.place(this.byName, mixName(this.parentOf(r), this.names[r]!), r);
    }
    this.used = this.live;
  }
}
