/**
 * The warm-up's client (see warm-up.ts), run as a child process: its own sockets and calls leave
 * no type feedback in the server's code, which is then optimised for server sockets and the calls
 * of booting nodes only, and its memory goes back to the system when it exits.
 *
 * Each simulated node boots the way a kernel NFS root does: MOUNT (NULL, MNT) on one connection,
 * then on another NULL, FSINFO, PATHCONF, GETATTR and ACCESS of the root, a LOOKUP per path
 * component it has not seen (READLINK where one is a symlink), GETATTR and READs of each file,
 * a LOOKUP of a name that is missing, and MKDIRs of directories that exist. One call in flight
 * per node, several nodes at once.
 */
import { performance } from 'node:perf_hooks';
import { MountClient, Nfs3Client, RpcClient } from '../client/index.js';
import { FType } from '../nfs/constants.js';

export interface WarmUpClientJob {
  host: string;
  nfsPort: number;
  mountPort: number;
  exportPath: string;
  /** Files (export-relative, may cross symlinks) each node reads whole. */
  files: string[];
  /** Names each node MKDIRs in the root (they exist). */
  mkdirs: string[];
  /** A directory of files `f0`..`f<sharedFiles-1>`, of which each node reads `sharedPerNode`. */
  sharedDir: string;
  sharedFiles: number;
  sharedPerNode: number;
  /** Nodes connect from 127.0.0.1 to 127.0.0.<addresses>, so the server sees many clients. */
  addresses: number;
  nodes: number;
  concurrency: number;
  /** No node starts after this long. */
  budgetMs: number;
}

export interface WarmUpClientResult {
  calls: number;
  nodes: number;
  failures: string[];
}

const NFS3_OK = 0;
const FOLLOW_MAX = 8;

class BootingNode {
  calls = 0;
  private readonly handles = new Map<string, { fh: Buffer; type: number }>();

  constructor(
    private readonly job: WarmUpClientJob,
    private readonly nfs: Nfs3Client,
    root: Buffer,
    private readonly index: number,
  ) {
    this.handles.set('', { fh: root, type: FType.DIR });
  }

  private count<T>(p: Promise<T>): Promise<T> {
    this.calls++;
    return p;
  }

  /** Walks `rel` component by component like the kernel's path walk, following symlinks. */
  async resolve(rel: string, depth = 0): Promise<{ fh: Buffer; type: number; path: string }> {
    let at = '';
    const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
    for (let i = 0; i < parts.length; i++) {
      const next = at === '' ? parts[i] : `${at}/${parts[i]}`;
      let known = this.handles.get(next);
      if (known === undefined) {
        const dir = this.handles.get(at)!;
        const res = await this.count(this.nfs.lookup(dir.fh, parts[i]));
        if (res.status !== NFS3_OK || res.fh === null || res.objAttr === null) throw new Error(`LOOKUP ${next}: status ${res.status}`);
        known = { fh: res.fh, type: res.objAttr.type };
        this.handles.set(next, known);
        if (known.type === FType.DIR) await this.count(this.nfs.access(known.fh, 0x1f));
      }
      if (known.type === FType.LNK) {
        if (depth >= FOLLOW_MAX) throw new Error(`too many symlinks at ${next}`);
        const link = await this.count(this.nfs.readlink(known.fh));
        if (link.data === null) throw new Error(`READLINK ${next}: status ${link.status}`);
        const target = link.data.startsWith('/') ? link.data.slice(1) : at === '' ? link.data : `${at}/${link.data}`;
        const rest = parts.slice(i + 1).join('/');
        return this.resolve(normalize(rest === '' ? target : `${target}/${rest}`), depth + 1);
      }
      at = next;
    }
    const last = this.handles.get(at)!;
    return { ...last, path: at };
  }

  async boot(): Promise<void> {
    const root = this.handles.get('')!.fh;
    await this.count(this.nfs.null());
    await this.count(this.nfs.fsinfo(root));
    await this.count(this.nfs.pathconf(root));
    await this.count(this.nfs.getattr(root));
    await this.count(this.nfs.access(root, 0x1f));
    const files = [...this.job.files];
    for (let k = 0; k < this.job.sharedPerNode; k++) files.push(`${this.job.sharedDir}/f${(this.index * 5 + k * 7) % this.job.sharedFiles}`);
    for (const f of files) {
      const file = await this.resolve(f);
      await this.count(this.nfs.getattr(file.fh));
      await this.count(this.nfs.access(file.fh, 0x2d));
      // The kernel reads ahead in growing chunks: a small first READ, then large ones.
      let offset = 0;
      let count = 4096;
      for (;;) {
        const r = await this.count(this.nfs.read(file.fh, offset, count));
        if (r.status !== NFS3_OK) throw new Error(`READ ${file.path}: status ${r.status}`);
        offset += r.count;
        if (r.eof || r.count === 0) break;
        count = Math.min(count * 4, 131072);
      }
      const dir = this.handles.get(file.path.includes('/') ? file.path.slice(0, file.path.lastIndexOf('/')) : '')!;
      await this.count(this.nfs.lookup(dir.fh, `${file.path.slice(file.path.lastIndexOf('/') + 1)}.missing`));
    }
    for (const d of this.job.mkdirs) await this.count(this.nfs.mkdir(root, d, { mode: 0o755 }));
  }
}

function normalize(p: string): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

/**
 * Connections are closed with RST: a FIN would leave the connection's local port in TIME_WAIT for
 * a minute, and the real server could not listen on it if it was given that port. Except every
 * GRACEFUL_EVERY-th node's MOUNT connection, which ends with a FIN as a real client's does, so
 * the server's end-of-stream path runs in the warm-up too: left unseen, the first real client to
 * close a connection deoptimised the stream code every call goes through (onStreamRead,
 * Readable.read) and the storm paid for compiling it again.
 */
const GRACEFUL_EVERY = 8;

/** From its own loopback address where the system allows it (every 127/8 address is local on Linux). */
async function connectFrom(job: WarmUpClientJob, index: number, port: number): Promise<RpcClient> {
  const opts = { host: job.host, port, timeoutMs: job.budgetMs + 5000 };
  try {
    return await RpcClient.connect({ ...opts, localAddress: `127.0.0.${1 + (index % job.addresses)}` });
  } catch {
    return RpcClient.connect(opts);
  }
}

async function bootOne(job: WarmUpClientJob, index: number): Promise<number> {
  const mountRpc = await connectFrom(job, index, job.mountPort);
  let root: Buffer;
  try {
    const mnt = new MountClient(mountRpc);
    await mnt.null();
    const res = await mnt.mnt(job.exportPath);
    if (res.fh === null) throw new Error(`MNT ${job.exportPath}: status ${res.status}`);
    root = res.fh;
  } finally {
    await mountRpc.close(index % GRACEFUL_EVERY !== 0);
  }
  const rpc = await connectFrom(job, index, job.nfsPort);
  try {
    const node = new BootingNode(job, new Nfs3Client(rpc), root, index);
    await node.boot();
    return node.calls + 2;
  } finally {
    await rpc.close(true);
  }
}

export async function runJob(job: WarmUpClientJob): Promise<WarmUpClientResult> {
  const deadline = performance.now() + job.budgetMs;
  const result: WarmUpClientResult = { calls: 0, nodes: 0, failures: [] };
  let started = 0;
  const lane = async () => {
    while (started < job.nodes && performance.now() < deadline && result.failures.length === 0) {
      const index = started++;
      try {
        const calls = await bootOne(job, index);
        result.calls += calls;
        result.nodes++;
      } catch (err) {
        result.failures.push((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, lane));
  return result;
}

if (process.send !== undefined) {
  // The server went away (killed while warming): nothing is left to warm.
  process.once('disconnect', () => process.exit(0));
  process.once('message', (job: WarmUpClientJob) => {
    runJob(job)
      .catch((err: Error): WarmUpClientResult => ({ calls: 0, nodes: 0, failures: [err.message] }))
      .then((r) => process.send!(r, () => process.disconnect()));
  });
}
