/**
 * The `serve` flags for the protection limits (src/rpc/limits.ts). Sizes in bytes, times in
 * seconds; each default is the one the server uses without the flag.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { DEFAULT_LIMITS, type ServerLimits } from '../rpc/limits.js';

export interface LimitOptions {
  maxRecordBytes: number;
  maxFragments: number;
  maxCallsPerConnection: number;
  maxUnsentBytes: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
  partialRecordTimeout: number;
  idleTimeout: number;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('not a positive integer');
  return n;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('not a positive number of seconds');
  return n;
}

export function addLimitOptions(cmd: Command): Command {
  const d = DEFAULT_LIMITS;
  return cmd
    .option('--max-record-bytes <N>', 'largest RPC record accepted over TCP; a larger one closes the connection', positiveInt, d.maxRecordBytes)
    .option('--max-fragments <N>', 'most fragments per RPC record (floods of tiny fragments close the connection)', positiveInt, d.maxFragments)
    .option('--max-calls-per-connection <N>', 'calls in flight per connection before reading from it pauses', positiveInt, d.maxCallsPerConnection)
    .option('--max-unsent-bytes <N>', 'reply bytes a client has not read before reading from it pauses (backpressure)', positiveInt, d.maxUnsentBytesPerConnection)
    .option('--max-connections <N>', 'TCP connections open at once, all clients together', positiveInt, d.maxConnections)
    .option('--max-connections-per-client <N>', 'TCP connections open at once from one client address', positiveInt, d.maxConnectionsPerClient)
    .option('--partial-record-timeout <SECONDS>', 'close a connection that began a record and did not finish it in time', seconds, d.partialRecordTimeoutMs / 1000)
    .option('--idle-timeout <SECONDS>', 'close a connection with no traffic for this long', seconds, d.idleTimeoutMs / 1000);
}

export function limitsFromOptions(o: LimitOptions): ServerLimits {
  return {
    maxRecordBytes: o.maxRecordBytes,
    maxFragments: o.maxFragments,
    maxCallsPerConnection: o.maxCallsPerConnection,
    maxUnsentBytesPerConnection: o.maxUnsentBytes,
    maxConnections: o.maxConnections,
    maxConnectionsPerClient: o.maxConnectionsPerClient,
    partialRecordTimeoutMs: Math.round(o.partialRecordTimeout * 1000),
    idleTimeoutMs: Math.round(o.idleTimeout * 1000),
  };
}
