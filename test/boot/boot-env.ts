/**
 * What the real-boot test needs around qemu: the cached images (prepare-images.sh), the guests'
 * network inside the server's namespace (a bridge holding the server's address and one tap per
 * guest), and qemu guests whose serial console goes to a file the test watches for markers.
 * Nothing here leaves the namespace: the taps exist only inside it and qemu runs inside it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const HERE = __dirname;
/** Built images live outside the repository and survive test runs (see prepare-images.sh). */
export const IMAGE_CACHE = process.env.CLUSTERNFS_BOOT_CACHE ?? '/var/cache/clusternfs-boot';

export interface BootImages {
  /** The debootstrapped tree; read-only for tests, which export a copy of it. */
  root: string;
  vmlinuz: string;
  /** The busybox initramfs (initramfs-init.sh). */
  initrd: string;
  /** The image's own initramfs-tools initramfs (root=/dev/nfs, klibc nfsmount). */
  initrdTools: string;
  kernelRelease: string;
  /** Seconds each part took when it was built (the first run on a machine). */
  buildSeconds: Record<string, number>;
}

/**
 * Builds what is missing (minutes on a fresh machine, a second when cached) and says where it is.
 * Asynchronous: a worker blocked for minutes loses its RPC channel to the vitest main process.
 */
export async function prepareImages(): Promise<BootImages> {
  const child = spawn('bash', [path.join(HERE, 'prepare-images.sh'), IMAGE_CACHE], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const timer = setTimeout(() => child.kill('SIGTERM'), 25 * 60_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`prepare-images.sh failed (status ${code}, signal ${signal})`);
  const kv = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const need = (k: string) => {
    const v = kv.get(k);
    if (v === undefined) throw new Error(`prepare-images.sh did not print ${k}:\n${stdout}`);
    return v;
  };
  const buildSeconds: Record<string, number> = {};
  for (const [k, v] of kv) if (k.startsWith('seconds_')) buildSeconds[k.slice('seconds_'.length)] = Number(v);
  return { root: need('ROOT'), vmlinuz: need('VMLINUZ'), initrd: need('INITRD'), initrdTools: need('INITRD_TOOLS'), kernelRelease: need('KERNEL_RELEASE'), buildSeconds };
}

function inNs(ns: string, args: string[]): void {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} in ${ns} failed: ${r.stderr}`);
}

/** The guests' LAN inside the namespace: bridge `br0` with the server's address. */
export function addBridge(ns: string, serverCidr: string): void {
  inNs(ns, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
  inNs(ns, ['ip', 'addr', 'add', serverCidr, 'dev', 'br0']);
  inNs(ns, ['ip', 'link', 'set', 'br0', 'up']);
}

/** One tap per guest on the bridge; qemu opens it by name from inside the namespace. */
export function addTap(ns: string, tap: string): void {
  inNs(ns, ['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  inNs(ns, ['ip', 'link', 'set', tap, 'master', 'br0', 'up']);
}

export interface GuestSpec {
  name: string;
  ns: string;
  tap: string;
  /** Last byte of the MAC, to keep guests apart on the bridge. */
  macByte: number;
  memMiB: number;
  images: BootImages;
  initrd: string;
  /** Kernel command line after the console settings. */
  append: string;
  serialLog: string;
}

/** One qemu process (TCG: /dev/kvm is not usable on these machines) with its serial console. */
export class Guest {
  private exitCode: number | null | undefined;
  private readonly exited: Promise<number | null>;

  private constructor(
    readonly spec: GuestSpec,
    private readonly child: ChildProcess,
    private readonly stderr: string[],
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? null : code);
        resolve(code);
      });
    });
  }

  static start(spec: GuestSpec): Guest {
    fs.writeFileSync(spec.serialLog, '');
    const mac = `52:54:00:99:00:${spec.macByte.toString(16).padStart(2, '0')}`;
    const args = [
      'netns', 'exec', spec.ns, 'qemu-system-x86_64',
      '-machine', 'q35,accel=tcg', '-cpu', 'max', '-smp', '1', '-m', String(spec.memMiB),
      '-nodefaults', '-display', 'none', '-no-reboot',
      '-kernel', spec.images.vmlinuz, '-initrd', spec.initrd,
      // panic=-1 with -no-reboot: a kernel panic ends qemu instead of hanging until the timeout.
      // no_timer_check: on a loaded host, TCG delivers too few timer ticks during the kernel's
      // early IO-APIC timer test, which then panics ("IO-APIC + timer doesn't work!").
      '-append', `console=ttyS0 panic=-1 no_timer_check ${spec.append}`,
      '-netdev', `tap,id=net0,ifname=${spec.tap},script=no,downscript=no`,
      '-device', `virtio-net-pci,netdev=net0,mac=${mac}`,
      '-serial', `file:${spec.serialLog}`,
    ];
    // `ip netns exec` execs qemu in place, so the child's pid is qemu's and kill() reaches it.
    const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: string[] = [];
    child.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    return new Guest(spec, child, stderr);
  }

  serial(): string {
    try {
      return fs.readFileSync(this.spec.serialLog, 'utf8');
    } catch {
      return '';
    }
  }

  /** The end of the console (and qemu's own complaints) for a failure message. */
  tail(lines = 60): string {
    const serial = this.serial().split('\n').slice(-lines).join('\n');
    const qemu = this.stderr.join('').trim();
    return `--- ${this.spec.name}: last ${lines} lines of ${this.spec.serialLog} ---\n${serial}${qemu ? `\n--- qemu stderr ---\n${qemu}` : ''}`;
  }

  /** Resolves when `marker` is on the console; fails with the console's tail on timeout or exit. */
  async waitFor(marker: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.serial().includes(marker)) return;
      if (this.exitCode !== undefined) {
        // The last lines may have been written just before the exit.
        if (this.serial().includes(marker)) return;
        throw new Error(`${this.spec.name} exited (${this.exitCode}) without printing ${marker}\n${this.tail()}`);
      }
      if (Date.now() > deadline) throw new Error(`${this.spec.name} did not print ${marker} within ${timeoutMs / 1000} s\n${this.tail()}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Waits for qemu to end by itself (the guest powered off); the exit code, or a timeout error. */
  async waitExit(timeoutMs: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.spec.name} did not power off within ${timeoutMs / 1000} s\n${this.tail()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends qemu if it still runs (cleanup after failures); always safe to call. */
  async kill(): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** The value of the first `KEY=value` line on the console. */
  consoleValue(key: string): string | undefined {
    const m = new RegExp(`^${key}=(.*)$`, 'm').exec(this.serial().replace(/\r/g, ''));
    return m?.[1];
  }
}

/**
 * Every entry of the tree that is not a tagged variant or marker (no `$$` in its path), with what
 * a write would change: for files and links size, mode, owner and mtime; for directories mode and
 * owner (their entry lists are covered by the entries themselves). Comparing two snapshots shows
 * whether anything shared by all nodes was changed.
 */
export function masterSnapshot(root: string): Map<string, string> {
  const r = spawnSync('find', ['.', '-xdev', '-printf', '%y %m %U:%G %s %T@ %p\\0'], { cwd: root, maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`find in ${root} failed: ${r.stderr}`);
  const out = new Map<string, string>();
  for (const rec of r.stdout.toString('utf8').split('\0')) {
    if (rec === '') continue;
    const parts = rec.split(' ');
    const p = parts.slice(5).join(' ');
    if (p.includes('$$')) continue;
    const [type, mode, owner, size, mtime] = parts;
    out.set(p, type === 'd' ? `${type} ${mode} ${owner}` : `${type} ${mode} ${owner} ${size} ${mtime}`);
  }
  return out;
}

/** Paths whose entry differs between two snapshots (added, removed or changed). */
export function snapshotDiff(before: Map<string, string>, after: Map<string, string>): string[] {
  const diff: string[] = [];
  for (const [p, v] of before) if (after.get(p) !== v) diff.push(`${p}: ${v} -> ${after.get(p) ?? '(gone)'}`);
  for (const [p, v] of after) if (!before.has(p)) diff.push(`${p}: (new) ${v}`);
  return diff;
}
