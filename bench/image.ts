/**
 * The root image the benchmark serves, generated so every server gets exactly the same tree:
 * what the boot traces read (same paths, sizes that satisfy their READs, symlinks where they
 * READLINK), a few thousand filler files with sizes drawn like a Debian /usr, one tagged
 * etc/hostname$$IP=<node>$$ per simulated node, a plain directory to compare remapped LOOKUPs
 * with, and a large file for streaming reads; and, apart, a million empty files for the memory test.
 */
import fs from 'node:fs';
import path from 'node:path';
import { treeOf } from './trace.js';

export interface ImageOptions {
  root: string;
  traces: string[];
  nodeAddresses: string[];
  fillerFiles: number;
  bigFileBytes: number;
}

export interface Image {
  root: string;
  /** Files every node revalidates in getattr-storm (paths relative to the root, no leading /). */
  workingSet: string[];
  bigFile: string;
  writeDir: string;
  /** Directory with per-node tagged variants of `remapName`, and a plain one with the same names. */
  remapDir: string;
  plainDir: string;
  remapName: string;
  bytes: number;
  files: number;
}

/** Deterministic generator, so two runs build the same image. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Log-normal around a 4 KiB median, as most of /usr is small with a long tail of libraries. */
function fileSize(rand: () => number): number {
  const u = Math.max(1e-9, rand());
  const v = rand();
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  return Math.min(4 * 1024 * 1024, Math.max(16, Math.round(4096 * Math.exp(1.4 * z))));
}

const SYMLINK_TARGETS: Record<string, string> = {
  '/bin': 'usr/bin',
  '/sbin': 'usr/sbin',
  '/lib': 'usr/lib',
  '/lib64': 'usr/lib64',
  '/usr/bin/sh': 'dash',
  '/usr/lib64/ld-linux-x86-64.so.2': '../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
};

class Writer {
  bytes = 0;
  files = 0;
  private readonly noise: Buffer;

  constructor(readonly root: string) {
    this.noise = Buffer.alloc(4 * 1024 * 1024);
    const r = rng(7);
    for (let i = 0; i < this.noise.length; i += 4) this.noise.writeUInt32LE((r() * 4294967296) >>> 0, i);
  }

  abs(p: string): string {
    return path.join(this.root, p);
  }

  dir(p: string): void {
    fs.mkdirSync(this.abs(p), { recursive: true });
  }

  file(p: string, size: number | Buffer): void {
    const abs = this.abs(p);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    if (typeof size !== 'number') fs.writeFileSync(abs, size);
    else {
      const fd = fs.openSync(abs, 'w');
      for (let off = 0; off < size; off += this.noise.length) fs.writeSync(fd, this.noise, 0, Math.min(this.noise.length, size - off), off);
      fs.closeSync(fd);
    }
    this.bytes += typeof size === 'number' ? size : size.length;
    this.files++;
  }

  symlink(p: string, target: string): void {
    const abs = this.abs(p);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.symlinkSync(target, abs);
  }
}

export function generateImage(o: ImageOptions): Image {
  fs.rmSync(o.root, { recursive: true, force: true });
  fs.mkdirSync(o.root, { recursive: true, mode: 0o755 });
  const w = new Writer(o.root);
  const rand = rng(42);

  const tree = treeOf(o.traces);
  for (const d of tree.dirs) w.dir(d.slice(1));
  for (const s of tree.symlinks) w.symlink(s.slice(1), SYMLINK_TARGETS[s] ?? `${path.basename(s)}.real`);
  const traced: string[] = [];
  for (const [p, size] of tree.files) {
    w.file(p.slice(1), size);
    traced.push(p.slice(1));
  }

  // Filler shaped like a Debian /usr: libraries with their soname links, binaries, docs.
  const filler: string[] = [];
  for (let i = 0; i < o.fillerFiles; i++) {
    const kind = i % 4;
    let p: string;
    if (kind === 0) {
      p = `usr/lib/x86_64-linux-gnu/libfill${i}.so.1.0.${i % 7}`;
      w.file(p, fileSize(rand) * 8);
      w.symlink(`usr/lib/x86_64-linux-gnu/libfill${i}.so.1`, path.basename(p));
    } else if (kind === 1) {
      p = `usr/bin/fill-tool-${i}`;
      w.file(p, fileSize(rand) * 4);
    } else if (kind === 2) {
      p = `usr/share/doc/fill-pkg-${i % 400}/copyright-${i}`;
      w.file(p, fileSize(rand));
    } else {
      p = `usr/share/fill/data-${i % 50}/file-${i}`;
      w.file(p, fileSize(rand));
    }
    filler.push(p);
  }

  // Per-node identity: the master and one tagged variant per node, and a plain twin directory.
  const remapDir = 'etc';
  const plainDir = 'plain-etc';
  w.file(`${remapDir}/hostname`, Buffer.from('master\n'));
  w.file(`${plainDir}/hostname`, Buffer.from('master\n'));
  o.nodeAddresses.forEach((ip, i) => w.file(`${remapDir}/hostname$$IP=${ip}$$`, Buffer.from(`node-${i}\n`)));
  for (let i = 0; i < 64; i++) {
    w.file(`${remapDir}/fill-conf-${i}.conf`, fileSize(rand) >> 2);
    w.file(`${plainDir}/fill-conf-${i}.conf`, fileSize(rand) >> 2);
  }

  const bigFile = 'bench/big.bin';
  w.file(bigFile, o.bigFileBytes);
  const writeDir = 'bench/writes';
  w.dir(writeDir);

  // The working set: libraries and binaries a node keeps open, traced ones first.
  const workingSet = [...traced.filter((p) => p.startsWith('usr/')), ...filler.filter((p) => !p.startsWith('usr/share'))].slice(0, 256);
  return { root: o.root, workingSet, bigFile, writeDir, remapDir, plainDir, remapName: 'hostname', bytes: w.bytes, files: w.files };
}

/**
 * A tree of `files` empty files, 1,000 per directory, for the memory test: a separate export,
 * so the other workloads' servers never carry it. It is made once under `cacheDir` and reused
 * (the test only looks names up): creating and then deleting a million files on every run took
 * 36 s on a fresh ext4 and left it so slow (online discard of the freed inodes) that the next
 * run's creates cost 10x as much, and the other workloads shared the machine with that churn.
 */
export async function generateManyFiles(cacheDir: string, files: number): Promise<{ root: string; dirs: string[]; filesPerDir: number; reused: boolean }> {
  const root = path.join(cacheDir, `many-${files}`);
  const complete = `${root}.complete`;
  const perDir = 1000;
  const dirs: string[] = [];
  for (let d = 0; d < Math.ceil(files / perDir); d++) dirs.push(`d${String(d).padStart(4, '0')}`);
  if (fs.existsSync(complete)) return { root, dirs, filesPerDir: perDir, reused: true };
  fs.rmSync(root, { recursive: true, force: true });
  const empty = Buffer.alloc(0);
  for (const dir of dirs) {
    fs.mkdirSync(path.join(root, dir), { recursive: true });
    for (let f = 0; f < perDir; f++) fs.writeFileSync(path.join(root, dir, `f${f}`), empty);
    // A million files take a while: let Ctrl-C in between directories.
    await new Promise((r) => setImmediate(r));
  }
  fs.writeFileSync(complete, `${new Date().toISOString()}\n`);
  return { root, dirs, filesPerDir: perDir, reused: false };
}
