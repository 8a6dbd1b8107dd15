/**
 * Starts the server inside the test process on ephemeral loopback ports (no portmapper), and
 * connects our own client to it — the quickest way to drive every procedure.
 */
import { ExportTable, parseExports, quickExport, type ExportEntry } from '../../src/mount/exports.js';
import { ClusterNfsServer, type ServerConfig } from '../../src/server/server.js';
import { MountClient } from '../../src/client/mount-client.js';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient, type RpcClientOptions } from '../../src/client/rpc-client.js';
import { MOUNT_PROGRAM, MOUNT_V3 } from '../../src/mount/constants.js';

export { ExportTable, parseExports, quickExport };

/** `more`: the rest of the configuration (metrics port, cache sizes, limits, hosts files). */
export async function startServer(exports: ExportEntry[], stateDir: string | null, more: Partial<ServerConfig> = {}): Promise<ClusterNfsServer> {
  return ClusterNfsServer.start({ exports, bind: '127.0.0.1', nfsPort: 0, mountPort: 0, portmapPort: null, stateDir, ...more });
}

export interface Session {
  rpc: RpcClient;
  mountRpc: RpcClient;
  nfs: Nfs3Client;
  mount: MountClient;
  root: Buffer;
  close(): Promise<void>;
}

/** Mounts `exportPath` as a client (optionally from another 127.x source address) and returns clients. */
export async function mountSession(
  server: ClusterNfsServer,
  exportPath: string,
  opts: Partial<RpcClientOptions> = {},
): Promise<Session> {
  const mountRpc = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.mount, ...opts });
  const mount = new MountClient(mountRpc, MOUNT_V3);
  const res = await mount.mnt(exportPath);
  if (res.status !== 0 || res.fh === null) {
    mountRpc.close();
    throw Object.assign(new Error(`MNT ${exportPath} failed with ${res.status}`), { mountStatus: res.status });
  }
  const rpc = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, ...opts });
  return {
    rpc,
    mountRpc,
    nfs: new Nfs3Client(rpc),
    mount,
    root: res.fh,
    async close() {
      await Promise.all([rpc.close(), mountRpc.close()]);
    },
  };
}

export { MOUNT_PROGRAM };

/** The handle of `rel` (slash-separated) below the session's root; throws unless every LOOKUP is OK. */
export async function fhOf(s: Session, rel: string): Promise<Buffer> {
  const r = await s.nfs.lookupPath(s.root, rel);
  if (r.status !== 0 || r.fh === null) throw new Error(`LOOKUP of ${rel} failed with status ${r.status}`);
  return r.fh;
}
