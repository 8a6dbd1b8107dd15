/**
 * A load-generating worker: runs inside the server's network namespace and plays a share of the
 * simulated nodes, each on its own TCP connection from its own 127.x address.
 *
 * The client must cost far less per call than the server, or the bench measures itself: calls go
 * out through RpcClient.begin/sendCb (no promise, no closure per call), replies are decoded only
 * as far as the status and byte count (a LOOKUP's handle), and each outstanding call is a reused
 * object (Slot; BootReplay for a booting node) whose bound callback records the latency and
 * issues the next call.
 */
import { MountClient, Nfs3Client, RpcClient, nfs3Args as A } from '../src/client/index.js';
import { NFS_PROGRAM, NFS_V3, NfsProc, NfsStat, StableHow } from '../src/nfs/constants.js';
import type { XdrReader } from '../src/rpc/xdr.js';
import { Histogram } from './histogram.js';
import type { FromWorker, NodeInfo, TargetInfo, ToWorker, WorkerResult, WorkloadSpec } from './protocol.js';
import { replayCalls, type TraceCall } from './trace.js';

const RPC_TIMEOUT_MS = 20_000;
const DRAIN_LIMIT_MS = 25_000;

function post(m: FromWorker): void {
  process.send!(m);
}

/** Status only: >= 0 OK, < 0 the NFS error negated. */
function decodeStatus(r: XdrReader): number {
  const s = r.u32();
  return s === NfsStat.OK ? 0 : -s;
}

/** READ: bytes returned, without touching the data. */
function decodeReadCount(r: XdrReader): number {
  const s = r.u32();
  if (s !== NfsStat.OK) return -s;
  if (r.u32() === 1) r.skip(84); // post_op_attr: fattr3 is 21 words
  return r.u32();
}

/** NULL: no results. */
function decodeNothing(): number {
  return 0;
}

/** LOOKUP: the object's handle (copied: the reader's buffer is the client's), or the error negated. */
function decodeLookupHandle(r: XdrReader): Buffer | number {
  const s = r.u32();
  if (s !== NfsStat.OK) return -s;
  return Buffer.from(r.opaque(64));
}

/** The trace's procedures a booting node replays, by name (decided once per worker, not per call). */
const REPLAYED: Record<string, NfsProc> = {
  NULL: NfsProc.NULL,
  GETATTR: NfsProc.GETATTR,
  FSINFO: NfsProc.FSINFO,
  FSSTAT: NfsProc.FSSTAT,
  PATHCONF: NfsProc.PATHCONF,
  READLINK: NfsProc.READLINK,
  ACCESS: NfsProc.ACCESS,
  LOOKUP: NfsProc.LOOKUP,
  READ: NfsProc.READ,
  MKDIR: NfsProc.MKDIR,
};

interface BootStep {
  proc: NfsProc;
  /** Path of the handle the call goes to. */
  at: string;
  /** LOOKUP: the path its handle is kept under. */
  found: string;
  name: string;
  offset: number;
  count: number;
  access: number;
  expectOk: boolean;
}

const MKDIR_ATTRS = { mode: 0o755 };

const now = () => performance.now();
const wallMs = () => performance.timeOrigin + performance.now();

class Stats {
  ops = 0;
  errors = 0;
  nfsErrors = 0;
  skipped = 0;
  bytes = 0;
  readonly hist = new Histogram();
}

class SimNode {
  rpc!: RpcClient;
  nfs!: Nfs3Client;
  root!: Buffer;
  /** Handles this node's calls go to (working set, the LOOKUP directory, the file). */
  handles: Buffer[] = [];
  cursor = 0;
  offset = 0;
  fileBytes = 0;
  nextDue = 0;
  issued = 0;
  active = 0;
  endMs = 0;
  /** touch-many: (dir handle, file number) still to look up. */
  queue: Array<[Buffer, number]> = [];

  constructor(readonly info: NodeInfo) {}
}

class Slot {
  t0 = 0;
  busy = false;
  constructor(readonly node: SimNode, readonly run: Run) {}
  readonly done = (err: Error | null, value: number | undefined): void => this.run.onReply(this, err, value);
}

/**
 * Every connection of this worker receives into this one buffer (replies are decoded before the
 * next read; the decoders here copy what they keep): no Buffer allocated per read, and a READ reply
 * of up to this size usually arrives in one read instead of being gathered from 64 KiB pieces.
 */
const READ_BUFFER = Buffer.allocUnsafe(2 * 1024 * 1024);

async function connect(target: TargetInfo, address: string, port: number): Promise<RpcClient> {
  return RpcClient.connect({ host: target.host, port, localAddress: address, timeoutMs: RPC_TIMEOUT_MS, readBuffer: READ_BUFFER });
}

async function mount(target: TargetInfo, address: string): Promise<Buffer> {
  const rpc = await connect(target, address, target.mountPort);
  try {
    const res = await new MountClient(rpc).mnt(target.exportPath);
    if (res.fh === null) throw new Error(`MNT ${target.exportPath} from ${address}: status ${res.status}`);
    return res.fh;
  } finally {
    await rpc.close();
  }
}

/** Handles of many paths, looking each directory up once. */
async function resolvePaths(nfs: Nfs3Client, root: Buffer, paths: string[]): Promise<Buffer[]> {
  const dirs = new Map<string, Buffer>([['', root]]);
  const out: Buffer[] = [];
  for (const p of paths) {
    const parts = p.split('/').filter((x) => x !== '');
    let prefix = '';
    let fh = root;
    for (const name of parts) {
      prefix = prefix === '' ? name : `${prefix}/${name}`;
      let next = dirs.get(prefix);
      if (next === undefined) {
        const res = await nfs.lookup(fh, name);
        if (res.fh === null) throw new Error(`LOOKUP ${prefix}: status ${res.status}`);
        next = res.fh;
        dirs.set(prefix, next);
      }
      fh = next;
    }
    out.push(fh);
  }
  return out;
}

class Run {
  readonly stats = new Stats();
  readonly nodes: SimNode[];
  readonly spec: WorkloadSpec;
  private readonly target: TargetInfo;
  private stopAt = Infinity;
  private stopped = false;
  private startMs = 0;
  private cpu0: NodeJS.CpuUsage = { user: 0, system: 0 };
  private pacer: NodeJS.Timeout | null = null;
  private progress: NodeJS.Timeout | null = null;
  private outstanding = 0;
  private finished: (() => void) | null = null;
  private readonly writeData: Buffer;
  /** boot: the trace's MOUNT calls, then its NFS calls this worker can replay (the rest are counted as skipped). */
  private mountCalls: TraceCall[] = [];
  bootSteps: BootStep[] = [];
  bootSkips = 0;

  constructor(msg: Extract<ToWorker, { type: 'setup' }>) {
    this.spec = msg.workload;
    this.target = msg.target;
    this.nodes = msg.nodes.map((n) => new SimNode(n));
    this.writeData = Buffer.alloc(this.spec.ioBytes ?? 4096, 0x5a);
  }

  async setup(): Promise<void> {
    const s = this.spec;
    if (s.kind === 'boot') {
      this.compileTrace(replayCalls(s.trace!));
      return; // a boot starts from nothing: MOUNT and the connection are part of it
    }
    // Connect and mount in small batches: 64 simultaneous SYNs are fine, a thundering herd of MNTs is not the test.
    for (let i = 0; i < this.nodes.length; i += 8) {
      await Promise.all(
        this.nodes.slice(i, i + 8).map(async (n) => {
          n.root = await mount(this.target, n.info.address);
          n.rpc = await connect(this.target, n.info.address, this.target.nfsPort);
          n.nfs = new Nfs3Client(n.rpc);
        }),
      );
    }
    const first = this.nodes[0];
    if (s.kind === 'getattr') {
      const handles = await resolvePaths(first.nfs, first.root, s.paths!);
      for (const n of this.nodes) {
        n.handles = handles;
        n.cursor = (n.info.index * 17) % handles.length;
      }
    } else if (s.kind === 'lookup') {
      const [dir] = await resolvePaths(first.nfs, first.root, [s.dir!]);
      for (const n of this.nodes) n.handles = [dir];
    } else if (s.kind === 'read') {
      const [fh] = await resolvePaths(first.nfs, first.root, [s.file!]);
      const attr = await first.nfs.getattr(fh);
      const size = attr.attr!.size;
      const step = s.ioBytes!;
      for (const n of this.nodes) {
        n.handles = [fh];
        n.fileBytes = size - (size % step);
        n.offset = ((n.info.index * 7 * step) % n.fileBytes) || 0;
      }
    } else if (s.kind === 'write') {
      const [dir] = await resolvePaths(first.nfs, first.root, [s.file!]);
      for (const n of this.nodes) {
        const res = await n.nfs.create(dir, `node-${n.info.index}`, { mode: 0o644, size: 0 });
        if (res.fh === null) throw new Error(`CREATE node-${n.info.index}: status ${res.status}`);
        n.handles = [res.fh];
        n.fileBytes = 1024 * 1024;
      }
    } else if (s.kind === 'touch-many') {
      const dirs = s.dirs!;
      for (let k = 0; k < this.nodes.length; k++) {
        const n = this.nodes[k];
        const mine = dirs.filter((_, i) => i % this.nodes.length === k);
        const handles = await resolvePaths(n.nfs, n.root, mine);
        for (const fh of handles) for (let f = 0; f < s.filesPerDir!; f++) n.queue.push([fh, f]);
      }
    }
  }

  go(): Promise<void> {
    const s = this.spec;
    this.startMs = wallMs();
    this.cpu0 = process.cpuUsage();
    this.stopAt = now() + s.durationMs;
    this.progress = setInterval(() => post({ type: 'progress', ops: this.stats.ops }), 500);
    const done = new Promise<void>((resolve) => (this.finished = resolve));
    if (s.kind === 'boot') {
      void Promise.all(this.nodes.map((n) => this.boot(n))).then(() => this.finish());
      return done;
    }
    const slots: Slot[] = [];
    for (const n of this.nodes) for (let d = 0; d < s.depth; d++) slots.push(new Slot(n, this));
    if (s.ratePerNode > 0) {
      const interval = 1000 / s.ratePerNode;
      const t = now();
      for (const n of this.nodes) n.nextDue = t + Math.random() * interval;
      const bySlot = slots;
      this.pacer = setInterval(() => {
        const t1 = now();
        if (t1 >= this.stopAt) return this.stop();
        for (const slot of bySlot) {
          const n = slot.node;
          if (slot.busy || n.nextDue > t1) continue;
          n.nextDue = Math.max(n.nextDue + interval, t1 - 1000);
          this.issue(slot);
        }
      }, 4);
    } else {
      for (const slot of slots) this.issue(slot);
    }
    this.maybeFinish();
    return done;
  }

  stop(): void {
    this.stopped = true;
    if (this.pacer) clearInterval(this.pacer);
    this.pacer = null;
    this.maybeFinish();
  }

  private canIssue(n: SimNode): boolean {
    if (this.stopped) return false;
    if (n.issued >= this.spec.maxOpsPerNode) return false;
    if (now() >= this.stopAt) {
      this.stop();
      return false;
    }
    return this.spec.kind !== 'touch-many' || n.queue.length > 0;
  }

  private issue(slot: Slot): void {
    const n = slot.node;
    if (!this.canIssue(n)) {
      if (n.active === 0 && n.endMs === 0) n.endMs = wallMs();
      return;
    }
    n.issued++;
    n.active++;
    this.outstanding++;
    slot.busy = true;
    slot.t0 = now();
    const rpc = n.rpc;
    switch (this.spec.kind) {
      case 'getattr': {
        const h = n.handles;
        A.encodeFhArgs(rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.GETATTR, 64), h[n.cursor]);
        n.cursor = n.cursor + 1 === h.length ? 0 : n.cursor + 1;
        rpc.sendCb(decodeStatus, slot.done);
        break;
      }
      case 'lookup':
        A.encodeDiropArgs(rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.LOOKUP, 128), n.handles[0], this.spec.lookupName!);
        rpc.sendCb(decodeStatus, slot.done);
        break;
      case 'read': {
        const size = this.spec.ioBytes!;
        A.encodeReadArgs(rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.READ, 64), n.handles[0], n.offset, size);
        n.offset = n.offset + size >= n.fileBytes ? 0 : n.offset + size;
        rpc.sendCb(decodeReadCount, slot.done);
        break;
      }
      case 'write': {
        const data = this.writeData;
        const w = rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.WRITE, data.length + 96);
        A.encodeWriteArgs(w, n.handles[0], n.offset, data, StableHow.UNSTABLE, data.length);
        n.offset = n.offset + data.length >= n.fileBytes ? 0 : n.offset + data.length;
        rpc.sendCb(decodeStatus, slot.done);
        break;
      }
      case 'touch-many': {
        const [dir, f] = n.queue.pop()!;
        A.encodeDiropArgs(rpc.begin(NFS_PROGRAM, NFS_V3, NfsProc.LOOKUP, 128), dir, `f${f}`);
        rpc.sendCb(decodeStatus, slot.done);
        break;
      }
      default:
        throw new Error(`no call loop for ${this.spec.kind}`);
    }
  }

  onReply(slot: Slot, err: Error | null, value: number | undefined): void {
    const st = this.stats;
    const n = slot.node;
    slot.busy = false;
    n.active--;
    this.outstanding--;
    st.ops++;
    st.hist.record((now() - slot.t0) * 1000);
    if (err !== null) {
      st.errors++;
      n.issued = Infinity; // a dead connection would otherwise fail in a tight loop
    } else if (value! < 0) st.nfsErrors++;
    else if (this.spec.kind === 'read') st.bytes += value!;
    else if (this.spec.kind === 'write') st.bytes += this.writeData.length;
    if (this.spec.ratePerNode === 0) this.issue(slot);
    else if (n.active === 0 && (this.stopped || n.issued >= this.spec.maxOpsPerNode)) n.endMs = wallMs();
    if (this.outstanding === 0) this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.outstanding > 0 || this.finished === null) return;
    const anyLeft = !this.stopped && this.nodes.some((n) => n.issued < this.spec.maxOpsPerNode && (this.spec.kind !== 'touch-many' || n.queue.length > 0));
    if (anyLeft && this.spec.ratePerNode > 0) return;
    if (anyLeft) return;
    this.finish();
  }

  private finish(): void {
    if (this.finished === null) return;
    const f = this.finished;
    this.finished = null;
    if (this.pacer) clearInterval(this.pacer);
    if (this.progress) clearInterval(this.progress);
    const end = wallMs();
    for (const n of this.nodes) if (n.endMs === 0) n.endMs = end;
    f();
  }

  private compileTrace(trace: TraceCall[]): void {
    const join = (d: string, name: string) => (d === '/' ? `/${name}` : `${d}/${name}`);
    let k = 0;
    while (k < trace.length && trace[k].prog === 'mount') this.mountCalls.push(trace[k++]);
    for (; k < trace.length; k++) {
      const c = trace[k];
      const proc = c.prog === 'nfs' ? REPLAYED[c.proc] : undefined;
      if (proc === undefined) {
        this.bootSkips++;
        continue;
      }
      this.bootSteps.push({
        proc,
        at: c.path ?? c.dir ?? '/',
        found: c.proc === 'LOOKUP' ? join(c.dir!, c.name!) : '',
        name: c.name ?? '',
        offset: c.offset ?? 0,
        count: c.count ?? 0,
        access: c.access ?? 0,
        expectOk: c.status.endsWith('3_OK'),
      });
    }
  }

  /** Whether a booting node may issue another call. */
  canContinue(): boolean {
    return !this.stopped && now() < this.stopAt;
  }

  /** One node's boot: MOUNT, then the trace's NFS calls one after another (BootReplay). */
  private async boot(n: SimNode): Promise<void> {
    const st = this.stats;
    let mountRpc: RpcClient | null = null;
    try {
      mountRpc = await connect(this.target, n.info.address, this.target.mountPort);
      const mnt = new MountClient(mountRpc);
      n.rpc = await connect(this.target, n.info.address, this.target.nfsPort);
      let root: Buffer | null = null;
      for (const c of this.mountCalls) {
        if (!this.canContinue()) break;
        const t0 = now();
        let status = 0;
        if (c.proc === 'MNT') {
          const r = await mnt.mnt(this.target.exportPath);
          status = r.status;
          root = r.fh;
        } else await mnt.null();
        st.ops++;
        st.hist.record((now() - t0) * 1000);
        if ((status === 0) !== c.status.endsWith('3_OK')) st.nfsErrors++;
      }
      await mountRpc.close();
      mountRpc = null;
      st.skipped += this.bootSkips;
      if (root !== null) await new Promise<void>((resolve) => new BootReplay(this, n, root!, resolve).next());
    } catch {
      st.errors++;
    } finally {
      n.endMs = wallMs();
      if (mountRpc) await mountRpc.close();
      if (n.rpc) await n.rpc.close();
    }
  }

  result(): WorkerResult {
    const cpu = process.cpuUsage(this.cpu0);
    const st = this.stats;
    const endMs = Math.max(...this.nodes.map((n) => n.endMs));
    return {
      ops: st.ops,
      errors: st.errors,
      nfsErrors: st.nfsErrors,
      skipped: st.skipped,
      bytes: st.bytes,
      hist: st.hist.toSparse(),
      maxUs: st.hist.max,
      startMs: this.startMs,
      endMs,
      cpuUs: cpu.user + cpu.system,
      nodeEndMs: this.nodes.map((n) => n.endMs),
    };
  }

  async close(): Promise<void> {
    if (this.spec.kind === 'write') {
      // Unstable data is the server's to keep only after COMMIT; not part of the measurement.
      await Promise.all(this.nodes.map((n) => n.nfs.commit(n.handles[0]).catch(() => undefined)));
    }
    await Promise.all(this.nodes.map((n) => n.rpc?.close()));
  }
}

/**
 * One booting node replaying the trace: each call goes to the handle its path got from MNT or an
 * earlier LOOKUP (a call whose handle the node does not have is skipped), one call at a time.
 */
class BootReplay {
  private k = 0;
  private t0 = 0;
  private readonly handles = new Map<string, Buffer>();
  private readonly done = (err: Error | null, value: number | Buffer | undefined): void => this.onReply(err, value);

  constructor(
    private readonly run: Run,
    private readonly node: SimNode,
    root: Buffer,
    private readonly finished: () => void,
  ) {
    this.handles.set('/', root);
  }

  next(): void {
    const steps = this.run.bootSteps;
    const rpc = this.node.rpc;
    while (this.k < steps.length && this.run.canContinue()) {
      const s = steps[this.k];
      const fh = this.handles.get(s.at);
      if (fh === undefined && s.proc !== NfsProc.NULL) {
        this.run.stats.skipped++;
        this.k++;
        continue;
      }
      this.t0 = now();
      const w = rpc.begin(NFS_PROGRAM, NFS_V3, s.proc, 128);
      switch (s.proc) {
        case NfsProc.NULL:
          rpc.sendCb(decodeNothing, this.done);
          return;
        case NfsProc.ACCESS:
          A.encodeAccessArgs(w, fh!, s.access);
          break;
        case NfsProc.LOOKUP:
          A.encodeDiropArgs(w, fh!, s.name);
          rpc.sendCb(decodeLookupHandle, this.done);
          return;
        case NfsProc.READ:
          A.encodeReadArgs(w, fh!, s.offset, s.count);
          rpc.sendCb(decodeReadCount, this.done);
          return;
        case NfsProc.MKDIR:
          A.encodeMkdirArgs(w, fh!, s.name, MKDIR_ATTRS);
          break;
        default:
          A.encodeFhArgs(w, fh!);
      }
      rpc.sendCb(decodeStatus, this.done);
      return;
    }
    this.finished();
  }

  private onReply(err: Error | null, value: number | Buffer | undefined): void {
    const st = this.run.stats;
    const s = this.run.bootSteps[this.k++];
    st.ops++;
    st.hist.record((now() - this.t0) * 1000);
    if (err !== null) {
      st.errors++;
      this.finished();
      return;
    }
    let ok: boolean;
    if (typeof value !== 'number') {
      ok = true;
      this.handles.set(s.found, value!);
    } else {
      ok = value >= 0;
      if (ok && s.proc === NfsProc.READ) st.bytes += value;
    }
    if (ok !== s.expectOk) st.nfsErrors++;
    this.next();
  }
}

let current: Run | null = null;

async function onMessage(m: ToWorker): Promise<void> {
  if (m.type === 'setup') {
    current = new Run(m);
    await current.setup();
    post({ type: 'ready' });
  } else if (m.type === 'go') {
    const run = current!;
    // Calls still unanswered this long after the deadline are not waited for.
    const drain = setTimeout(() => run.stop(), DRAIN_LIMIT_MS + run.spec.durationMs);
    await run.go();
    clearTimeout(drain);
    const result = run.result();
    await run.close();
    post({ type: 'done', result });
    process.disconnect();
  } else if (m.type === 'stop') {
    current?.stop();
  }
}

process.on('message', (m: ToWorker) => {
  onMessage(m).catch((err: Error) => {
    post({ type: 'error', message: err.stack ?? String(err) });
    setTimeout(() => process.exit(1), 100);
  });
});
// The parent going away (Ctrl-C, crash) ends the worker too.
process.on('disconnect', () => setTimeout(() => process.exit(0), 50).unref());
