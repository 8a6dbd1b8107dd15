/** Messages between the bench (parent) and its load-generating worker processes. */

export interface TargetInfo {
  host: string;
  nfsPort: number;
  mountPort: number;
  /** The path MNT asks for (clusternfs quick mode: the directory; ganesha: its Pseudo path). */
  exportPath: string;
}

export type WorkloadKind = 'getattr' | 'lookup' | 'read' | 'write' | 'boot' | 'touch-many';

export interface WorkloadSpec {
  name: string;
  kind: WorkloadKind;
  /** Stop issuing after this long (ms) ... */
  durationMs: number;
  /** ... or after this many calls per node, whichever comes first. */
  maxOpsPerNode: number;
  /** Calls each node keeps outstanding. */
  depth: number;
  /** Calls per second per node; 0 = as fast as replies come back. */
  ratePerNode: number;
  /** getattr: files every node revalidates (paths relative to the export root). */
  paths?: string[];
  /** lookup: directory and the name looked up in it. */
  dir?: string;
  lookupName?: string;
  /** read: the file and the READ size; write: the directory for per-node files and WRITE size. */
  file?: string;
  ioBytes?: number;
  /** boot: path of the trace to replay. */
  trace?: string;
  /** touch-many: directories (each node takes every N-th) and the files in each (f0..fN-1). */
  dirs?: string[];
  filesPerDir?: number;
}

export interface NodeInfo {
  index: number;
  address: string;
}

export type ToWorker =
  | { type: 'setup'; target: TargetInfo; nodes: NodeInfo[]; workload: WorkloadSpec; totalNodes: number }
  | { type: 'go' }
  | { type: 'stop' };

export interface WorkerResult {
  ops: number;
  /** RPC-level failures (timeouts, lost connections). */
  errors: number;
  /** Replies with an NFS/MOUNT error status (boot: only those the trace did not expect). */
  nfsErrors: number;
  /** boot: calls skipped because an earlier call that would give their handle failed. */
  skipped: number;
  bytes: number;
  hist: Array<[number, number]>;
  maxUs: number;
  /** Wall clock (ms since epoch, fractional) of the go signal and of the last reply. */
  startMs: number;
  endMs: number;
  cpuUs: number;
  /** Per node, when it finished (ms since epoch); boot-storm's makespan is the last of these. */
  nodeEndMs: number[];
}

export type FromWorker =
  | { type: 'ready' }
  | { type: 'progress'; ops: number }
  | { type: 'done'; result: WorkerResult }
  | { type: 'error'; message: string };
