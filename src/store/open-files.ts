/**
 * Open descriptors for READ, kept between calls: a boot reads libraries in many small READs and
 * an open+close per READ would triple the file-system calls. Keyed by inode and birth time, so a
 * file replaced under the same name is never read through the old descriptor's handle. A
 * descriptor evicted while a READ uses it is closed when that READ is done.
 */
import fs from 'node:fs';
import { LRUCache } from 'lru-cache';
import * as fsops from './fsops.js';

interface OpenFile {
  fd: number;
  users: number;
  evicted: boolean;
}

export class OpenFileCache {
  private readonly cache: LRUCache<string, OpenFile>;
  private readonly opening = new Map<string, Promise<OpenFile>>();
  /** O_RDONLY for READ, O_WRONLY for WRITE: opening for write fails on a running executable (ETXTBSY), so reads never do. */
  private readonly flags: number;

  constructor(max = 512, flags: number = fs.constants.O_RDONLY) {
    this.flags = flags;
    this.cache = new LRUCache<string, OpenFile>({
      max,
      dispose: (file) => {
        file.evicted = true;
        if (file.users === 0) fsops.close(file.fd);
      },
    });
  }

  /**
   * Runs `use` with a descriptor of `bytePath`, which must be the inode `ino`
   * (checked with fstat after open, so a rename race cannot hand us another file).
   */
  async withFile<T>(bytePath: string, ino: number, birth: number, use: (fd: number) => Promise<T>): Promise<T> {
    const key = `${ino}:${birth}`;
    let file = this.cache.get(key);
    if (file === undefined) {
      let pending = this.opening.get(key);
      if (pending === undefined) {
        pending = this.open(bytePath, ino, key);
        this.opening.set(key, pending);
      }
      file = await pending;
    }
    file.users++;
    try {
      return await use(file.fd);
    } finally {
      file.users--;
      if (file.evicted && file.users === 0) fsops.close(file.fd);
    }
  }

  private async open(bytePath: string, ino: number, key: string): Promise<OpenFile> {
    try {
      const fd = await fsops.open(bytePath, this.flags);
      const st = await fsops.fstat(fd);
      if (st.ino !== ino) {
        fsops.close(fd);
        throw Object.assign(new Error('file replaced during open'), { code: 'ESTALE' });
      }
      const file: OpenFile = { fd, users: 0, evicted: false };
      this.cache.set(key, file);
      return file;
    } finally {
      this.opening.delete(key);
    }
  }

  /** Forgets the descriptor of a file that was removed or replaced. */
  invalidate(ino: number, birth: number): void {
    this.cache.delete(`${ino}:${birth}`);
  }

  get size(): number {
    return this.cache.size;
  }

  closeAll(): void {
    this.cache.clear();
  }
}
