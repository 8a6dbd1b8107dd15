/** The project's own RPC, portmap, MOUNT and NFSv3 clients, for tests and the benchmark suite. */
export * from './rpc-client.js';
export * from './portmap-client.js';
export * from './mount-client.js';
export * from './nfs3-client.js';
export * as nfs3Args from './nfs3-args.js';
export * as nfs3Results from './nfs3-results.js';
