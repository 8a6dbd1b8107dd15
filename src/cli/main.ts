#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * The clusternfs command line. Errors an admin can fix (a missing directory, a taken port, a bad
 * exports line) are printed as one sentence, never as a stack trace.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { rootLogger, setLogLevel } from '../log/logger.js';
import { ConfigError, loadExportsFile, quickExport, type ExportEntry } from '../mount/exports.js';
import { ClusterNfsServer, StartupError } from '../server/server.js';
import { DEFAULT_CACHE_OPTIONS } from '../cache/options.js';
import { addLimitOptions, limitsFromOptions, type LimitOptions } from './limit-options.js';
import { importSnapshotsCommand } from './import-snapshots.js';
import { packageRoot, SAMPLE_EXPORT } from '../package-paths.js';
import { resolveCommandDefinition } from './resolve-command.js';
import { tagCommandDefinition } from './tag-command.js';
import { tagsCommand } from './tags-command.js';
import { UserError } from './user-error.js';

export { SAMPLE_EXPORT };

function version(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).version as string;
  } catch {
    return 'unknown';
  }
}

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('not a port number (0-65535)');
  return n;
}

function positive(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('not a positive number');
  return n;
}

function defaultStateDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/clusternfs';
  return path.join(process.env.XDG_STATE_HOME ?? path.join(os.homedir(), '.local', 'state'), 'clusternfs');
}

interface ServeOptions extends LimitOptions {
  config?: string;
  bind: string;
  nfsPort: number;
  mountPort: number;
  portmapPort: number;
  portmap: boolean;
  metricsPort?: number;
  stateDir: string;
  logLevel: string;
  hostsFile: string[];
  attrCacheEntries: number;
  attrCacheMb: number;
  listingCacheEntries: number;
  listingCacheMb: number;
  watchMax: number;
  cacheTtlMs: number;
  contentCacheMb: number;
  metricsPerClient: number;
  heapGrowth: number;
  warmUp: boolean;
}

async function exportsFor(dir: string | undefined, opts: ServeOptions): Promise<ExportEntry[]> {
  if (dir !== undefined && opts.config !== undefined) throw new UserError('give either EXPORT_DIR or --config, not both');
  if (opts.config !== undefined) {
    if (!fs.existsSync(opts.config)) throw new UserError(`config file ${opts.config} does not exist`);
    return loadExportsFile(opts.config);
  }
  const target = path.resolve(dir ?? SAMPLE_EXPORT);
  let st: fs.Stats;
  try {
    st = fs.statSync(target);
  } catch {
    throw new UserError(`export directory ${target} does not exist`);
  }
  if (!st.isDirectory()) throw new UserError(`${target} is not a directory`);
  return [quickExport(target)];
}

async function serve(dir: string | undefined, opts: ServeOptions): Promise<void> {
  setLogLevel(opts.logLevel);
  // V8 sizes the next full GC from the live heap and how fast it collects, up to 4x the live
  // size. A LOOKUP storm over a big tree promotes short-lived objects into old space, so the
  // heap grew to three times what it holds (mem-1m: 160 MB used of ~60 MB live, 462 MB RSS);
  // a fixed, small growth keeps RSS near the live size at the cost of more frequent marking,
  // which a server answering from its caches (no promotion) hardly ever pays.
  v8.setFlagsFromString(`--heap-growing-percent=${Math.floor(opts.heapGrowth)}`);
  const exports = await exportsFor(dir, opts);
  for (const f of opts.hostsFile) if (!fs.existsSync(f)) throw new UserError(`hosts file ${f} does not exist`);
  const server = await ClusterNfsServer.start({
    exports,
    bind: opts.bind,
    nfsPort: opts.nfsPort,
    mountPort: opts.mountPort,
    portmapPort: opts.portmap ? opts.portmapPort : null,
    stateDir: opts.stateDir,
    metricsPort: opts.metricsPort ?? null,
    hostsFiles: opts.hostsFile,
    cache: {
      attrEntries: Math.floor(opts.attrCacheEntries),
      attrBytes: opts.attrCacheMb * 1024 * 1024,
      listingEntries: Math.floor(opts.listingCacheEntries),
      listingBytes: opts.listingCacheMb * 1024 * 1024,
      watchMax: Math.floor(opts.watchMax),
      ttlMs: opts.cacheTtlMs,
      contentBytes: opts.contentCacheMb * 1024 * 1024,
    },
    metricsPerClient: Math.floor(opts.metricsPerClient),
    version: version(),
    limits: limitsFromOptions(opts),
    warmUp: opts.warmUp,
  });
  // One line on stdout for scripts and tests; the structured log goes to the same stream.
  rootLogger.info({ ready: true, ports: server.ports }, 'ready');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    rootLogger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      server.flushSync();
      process.exit(1);
    }, 5000);
    force.unref();
    server.stop().then(
      () => process.exit(0),
      (err) => {
        rootLogger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('clusternfs')
    .description('NFSv3 server for diskless clusters: one shared root image, per-node files by tags')
    .version(version(), '-V, --version');
  program
    .command('serve')
    .description('serve EXPORT_DIR (quick mode: exported under its absolute path to loopback clients), the exports of --config, or the bundled sample export')
    .argument('[EXPORT_DIR]', 'directory to export in quick mode')
    .option('-c, --config <FILE>', 'exports(5)-style file: /srv/root 10.0.0.0/24(rw,no_root_squash) *(ro)')
    .option('--bind <ADDR>', 'address all services listen on', '0.0.0.0')
    .option('--nfs-port <N>', 'NFS port (TCP and UDP)', port, 2049)
    .option('--mount-port <N>', 'MOUNT port (TCP and UDP)', port, 20048)
    .option('--portmap-port <N>', 'portmapper port; if taken by a system rpcbind, our programs are registered with it', port, 111)
    .option('--no-portmap', 'neither serve nor register with a portmapper (clients must be given the ports)')
    .option('--metrics-port <N>', 'HTTP port for Prometheus /metrics', port)
    .option('--attr-cache-entries <N>', 'most objects whose attributes are cached, per export', positive, DEFAULT_CACHE_OPTIONS.attrEntries)
    .option('--attr-cache-mb <MB>', 'memory the attribute cache may use, per export', positive, DEFAULT_CACHE_OPTIONS.attrBytes / 1024 / 1024)
    .option('--listing-cache-entries <N>', 'most directory listings cached, per export', positive, DEFAULT_CACHE_OPTIONS.listingEntries)
    .option('--listing-cache-mb <MB>', 'memory the listing cache may use, per export', positive, DEFAULT_CACHE_OPTIONS.listingBytes / 1024 / 1024)
    .option('--watch-max <N>', 'most directories watched with inotify; beyond it cached entries are revalidated after --cache-ttl-ms', positive, DEFAULT_CACHE_OPTIONS.watchMax)
    .option('--cache-ttl-ms <MS>', 'how long entries of directories that cannot be watched are trusted', positive, DEFAULT_CACHE_OPTIONS.ttlMs)
    .option('--heap-growth <PERCENT>', 'how far the JavaScript heap may grow past its live size before a full GC (lower: less memory, more GC time)', positive, 20)
    .option('--content-cache-mb <MB>', 'memory for whole files of up to 8 MiB served to READ from memory, per export (0: none)', (v) => (v === '0' ? 0 : positive(v)), DEFAULT_CACHE_OPTIONS.contentBytes / 1024 / 1024)
    .option('--no-warm-up', 'open the ports at once, without first answering a few thousand calls from itself so that the first clients meet optimised code')
    .option('--metrics-per-client <N>', 'per-client series on /metrics for up to N clients (0: none)', (v) => (v === '0' ? 0 : positive(v)), 0)
    .option('--state-dir <DIR>', 'where file-handle indexes are kept so handles survive restarts', defaultStateDir())
    .option('--hosts-file <FILE>', 'client host names for HOST tags: a hosts file or DHCP leases (dnsmasq, ISC dhcpd); repeatable, else reverse DNS', (f: string, all: string[]) => [...all, f], [] as string[])
    .addOption(new Option('--log-level <LEVEL>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .action((dir: string | undefined, opts: ServeOptions) => serve(dir, opts));
  addLimitOptions(program.commands.find((c) => c.name() === 'serve')!);
  // Admin commands for tagged trees (issue 4), each in its own file.
  program.addCommand(tagsCommand());
  program.addCommand(tagCommandDefinition());
  program.addCommand(resolveCommandDefinition());
  program.addCommand(importSnapshotsCommand());
  // A usage mistake (unknown flag, missing argument) is an admin mistake too: status 2, as ours.
  for (const cmd of [program, ...program.commands]) {
    cmd.exitOverride().configureOutput({ outputError: (msg, write) => write(`clusternfs: ${msg.replace(/^error: /, '')}`) });
  }
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    // Commander has printed its message (or the help) already.
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    if (err instanceof UserError || err instanceof ConfigError || err instanceof StartupError) {
      process.stderr.write(`clusternfs: ${err.message}\n`);
      process.exit(2);
    }
    // A file-system refusal met by an admin command (EACCES, EROFS, ENOSPC) is clear without a trace.
    const sys = err as NodeJS.ErrnoException;
    if (typeof sys?.code === 'string' && typeof sys.syscall === 'string') {
      process.stderr.write(`clusternfs: ${sys.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

void main();
