/**
 * One clusternfs process: the exports' stores, the NFS and MOUNT programs on their TCP and UDP
 * ports, and the portmapper (embedded, or our programs registered with a system rpcbind).
 */
import path from 'node:path';
import { componentLogger } from '../log/logger.js';
import { MOUNT_PROGRAM, MOUNT_V1, MOUNT_V3 } from '../mount/constants.js';
import { ExportTable, type ExportEntry } from '../mount/exports.js';
import { MountProgram } from '../mount/program.js';
import { NFS_PROGRAM, NFS_V3 } from '../nfs/constants.js';
import { NfsProgram, type NfsExport } from '../nfs/program.js';
import { RpcDispatcher } from '../rpc/dispatch.js';
import { ReplyCache } from '../rpc/reply-cache.js';
import { ConnectionGuard, DEFAULT_LIMITS, LimitHits, type ServerLimits } from '../rpc/limits.js';
import { registerLimitMetrics } from '../metrics/limits.js';
import { PortmapRegistry } from '../rpc/portmap.js';
import { startPortmapper, type PortmapperService } from '../rpc/rpcbind-registrar.js';
import { TcpTransport } from '../rpc/tcp.js';
import { UdpTransport } from '../rpc/udp.js';
import { ExportStore } from '../store/export-store.js';
import { serveMetrics, ServerMetrics } from '../metrics/metrics.js';
import { ClientIdentities } from '../remap/identity.js';
import { Remapper } from '../remap/remapper.js';
import type { CacheOptions } from '../cache/options.js';
import { warmUp, type StartWarmUpServer } from './warm-up.js';

const log = componentLogger('server');

export interface ServerConfig {
  exports: ExportEntry[];
  /** Address every service binds to. */
  bind: string;
  nfsPort: number;
  mountPort: number;
  /** null: do not serve or register with a portmapper (clients must be given the ports). */
  portmapPort: number | null;
  /** Where handle indexes live; null keeps them in memory (handles then do not survive a restart). */
  stateDir: string | null;
  /** HTTP port for Prometheus /metrics; null serves none. */
  metricsPort?: number | null;
  /** Hosts or DHCP-leases files giving client host names for HOST tags (else reverse DNS). */
  hostsFiles?: string[];
  /** Attribute/listing cache sizes and freshness per export (defaults in src/cache/options.ts). */
  cache?: Partial<CacheOptions>;
  /** Per-client series on /metrics (capped at this many clients); 0 = none. */
  metricsPerClient?: number;
  /** Shown on the status page. */
  version?: string;
  /** Overrides of the protection limits (src/rpc/limits.ts); the rest keep their defaults. */
  limits?: Partial<ServerLimits>;
  /** Answer a few thousand read-only calls from itself before serving (src/server/warm-up.ts). */
  warmUp?: boolean;
}

export interface ListeningPorts {
  nfs: number;
  mount: number;
  portmap: number | null;
  metrics: number | null;
}

/** Turns "address in use" and friends into a sentence for the admin. */
export class StartupError extends Error {}

async function listenBoth(tcp: TcpTransport, udp: UdpTransport, port: number, host: string, service: string, flag: string): Promise<number> {
  try {
    const bound = await tcp.listen(port, host);
    await udp.listen(bound, host);
    return bound;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${host}:${port}`;
    if (code === 'EADDRINUSE') throw new StartupError(`${service} port ${where} is already in use (another NFS server?); choose another with ${flag}`);
    if (code === 'EACCES') throw new StartupError(`not allowed to bind ${service} port ${where}: ports below 1024 need root (or CAP_NET_BIND_SERVICE)`);
    if (code === 'EADDRNOTAVAIL') throw new StartupError(`cannot bind ${where}: no such local address (check --bind)`);
    throw err;
  }
}

export class ClusterNfsServer {
  readonly ports: ListeningPorts;
  readonly exportTable: ExportTable;
  /** Per-client remapping; its `stats` are plain numbers for the metrics code. */
  readonly remapper: Remapper;
  private readonly transports: (TcpTransport | UdpTransport)[];
  /** The exports' stores (their caches and counters: metrics, status page, tests). */
  readonly stores: ExportStore[];
  /** Portmapper (unregisters from a system rpcbind) and metrics endpoint. */
  private readonly closers: (() => Promise<void>)[];

  private constructor(
    ports: ListeningPorts,
    table: ExportTable,
    transports: (TcpTransport | UdpTransport)[],
    stores: ExportStore[],
    closers: (() => Promise<void>)[],
    remapper: Remapper,
  ) {
    this.ports = ports;
    this.exportTable = table;
    this.remapper = remapper;
    this.transports = transports;
    this.stores = stores;
    this.closers = closers;
  }

  static async start(cfg: ServerConfig): Promise<ClusterNfsServer> {
    // Clients send the mode they want, their user's umask already applied; ours must not apply again.
    process.umask(0);
    const table = new ExportTable(cfg.exports);
    const stores = new Map<ExportEntry, ExportStore>();
    const served: NfsExport[] = [];
    for (const entry of cfg.exports) {
      const stateDir = cfg.stateDir === null ? null : path.join(cfg.stateDir, 'exports', entry.fsid.toString(16).padStart(8, '0'));
      const store = await ExportStore.open(entry.fsid, entry.realPath, { stateDir, cache: cfg.cache });
      stores.set(entry, store);
      served.push({ fsid: entry.fsid, path: entry.path, store });
    }

    const metrics = new ServerMetrics({ perClient: cfg.metricsPerClient ?? 0 });
    const nfsDispatch = new RpcDispatcher();
    // Retransmitted non-idempotent calls (a REMOVE whose reply was lost) get the first reply.
    nfsDispatch.replyCache = new ReplyCache();
    metrics.watchReplyCache(nfsDispatch.replyCache);
    const remapper = new Remapper();
    const identities = new ClientIdentities({ hostsFiles: cfg.hostsFiles ?? [] });
    const nfs = new NfsProgram(served, table, undefined, { remapper, identities });
    const nfsProgram = nfs.program();
    metrics.registerCache('tags', remapper.stats.index);
    metrics.registerRemapStats(() => remapper.stats.rules);
    metrics.registerRemapEvents(remapper.stats);
    nfsDispatch.register(nfsProgram);
    const mountDispatch = new RpcDispatcher();
    const mountProgram = new MountProgram({
      exports: table,
      // A node mounting a subdirectory of a cluster export gets the directories its LOOKUPs would reach.
      rootHandle: (entry, below, caller) => {
        const store = stores.get(entry)!;
        const policy = caller.options;
        if (policy.cluster !== true || policy.clusterAdmin) return store.subdirHandle(below);
        const client = identities.view(caller.address, caller.uid, caller.gid);
        return store.subdirHandle(below, (dir, name) => remapper.lookup(store, policy, dir, name, client));
      },
    });
    mountDispatch.register(mountProgram);
    for (const [d, p] of [[nfsDispatch, nfsProgram], [mountDispatch, mountProgram]] as const) {
      metrics.watch(p);
      d.observer = metrics;
    }

    const guard = new ConnectionGuard({ ...DEFAULT_LIMITS, ...cfg.limits }, new LimitHits());
    registerLimitMetrics(metrics.registry, guard);
    const transports: (TcpTransport | UdpTransport)[] = [];
    const closers: (() => Promise<void>)[] = [async () => metrics.close()];
    const connections = () => transports.reduce((n, t) => n + (t instanceof TcpTransport ? t.connections() : 0), 0);
    metrics.watchServer([...stores.values()], nfs.errorReplies, connections);
    metrics.setStatusSource({ version: cfg.version ?? 'unknown', exports: served, connections });
    const opened = <T extends TcpTransport | UdpTransport>(t: T): T => {
      transports.push(t);
      return t;
    };
    // After this server's own objects exist, so that V8 optimises against their field types too
    // (objects built later with other kinds of fields would throw the optimised code away).
    if (cfg.warmUp === true) {
      const bootPrivately: StartWarmUpServer = ({ exportEntry, cache, stateDir }) =>
        ClusterNfsServer.start({ exports: [exportEntry], bind: '127.0.0.1', nfsPort: 0, mountPort: 0, portmapPort: null, stateDir: cfg.stateDir === null ? null : stateDir, cache, limits: cfg.limits });
      await warmUp(bootPrivately, { cache: cfg.cache, fsid: cfg.exports[0]?.fsid });
    }
    try {
      const nfs = await listenBoth(opened(new TcpTransport(nfsDispatch, guard)), opened(new UdpTransport(nfsDispatch)), cfg.nfsPort, cfg.bind, 'NFS', '--nfs-port');
      const mount = await listenBoth(opened(new TcpTransport(mountDispatch, guard)), opened(new UdpTransport(mountDispatch)), cfg.mountPort, cfg.bind, 'MOUNT', '--mount-port');
      let portmapper: PortmapperService | null = null;
      if (cfg.portmapPort !== null) {
        const registry = new PortmapRegistry();
        registry.addProgram(MOUNT_PROGRAM, [MOUNT_V1, MOUNT_V3], mount);
        registry.addProgram(NFS_PROGRAM, [NFS_V3], nfs);
        try {
          // Observed like NFS and MOUNT: whether booting nodes ask the portmapper shows on /metrics.
          const portmapDispatch = new RpcDispatcher();
          portmapDispatch.observer = metrics;
          portmapper = await startPortmapper({ registry, host: cfg.bind, port: cfg.portmapPort, dispatcher: portmapDispatch });
          for (const p of portmapDispatch.registered()) metrics.watch(p);
        } catch (err) {
          throw new StartupError((err as Error).message);
        }
      }
      let metricsPort: number | null = null;
      if (cfg.metricsPort !== undefined && cfg.metricsPort !== null) {
        const http = await serveMetrics(metrics, cfg.bind, cfg.metricsPort).catch((err: NodeJS.ErrnoException) => {
          throw new StartupError(`cannot serve metrics on ${cfg.bind}:${cfg.metricsPort}: ${err.code ?? err.message}`);
        });
        metricsPort = http.port;
        closers.push(http.close);
      }
      const ports = { nfs, mount, portmap: portmapper?.port ?? null, metrics: metricsPort };
      log.info({ ...ports, portmapper: portmapper?.mode ?? 'none', exports: cfg.exports.map((e) => e.path) }, 'clusternfs serving');
      if (portmapper !== null) closers.push(() => portmapper!.close());
      return new ClusterNfsServer(ports, table, transports, [...stores.values()], closers, remapper);
    } catch (err) {
      await Promise.all([...transports.map((t) => t.close()), ...closers.map((c) => c())]);
      throw err;
    }
  }

  async stop(): Promise<void> {
    for (const close of this.closers) await close().catch((err) => log.warn({ err }, 'shutdown step failed'));
    await Promise.all(this.transports.map((t) => t.close()));
    await Promise.all(this.stores.map((s) => s.close()));
    log.info('clusternfs stopped');
  }

  /** After stop(): lets the stores' cached data go, keeping the objects (warm-up.ts, `retained`). */
  dropStorage(): void {
    for (const s of this.stores) s.dropStorage();
  }

  /** For exit paths that cannot wait: make sure the handle indexes are on disk. */
  flushSync(): void {
    for (const s of this.stores) s.flushSync();
  }
}
