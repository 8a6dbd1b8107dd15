/**
 * The acceptance test of the whole server: Debian's own kernel, in qemu, mounts its root over
 * NFSv3 from the clusternfs CLI and boots from it. The server runs in a network namespace of its
 * own with a bridge (10.99.0.1) and one tap per guest, so each guest is a distinct client with a
 * privileged source port, as real nodes are. The export is a copy of a debootstrapped bookworm
 * tree with per-node files by tags (docs/cluster-tags.md):
 *
 *  - four guests boot at once with `init=` a shell script that prints the /etc/hostname it is
 *    served (etc/hostname$$IP=<its address>$$), creates a file under a $$CREATE=IP$$ marker and
 *    appends to a shared file under a $$COW=IP$$ marker, then powers off;
 *  - one guest boots through systemd to multi-user.target on a writable root (its own /var, /tmp,
 *    /etc/machine-id and /etc/hostname by tags), reports no failed units and shuts down cleanly.
 *
 * The guests mount in the ways a booting node may: through a busybox initramfs with the kernel's
 * defaults (portmapper GETPORT over TCP on 111, MOUNT, NFS), with explicit
 * `port=2049,mountport=20048` (no portmapper), and with MOUNT over UDP (portmapper GETPORT and
 * MNT over UDP); and through the image's own initramfs-tools (klibc's nfsmount does the MOUNT
 * from user space). NFS itself over UDP cannot be tried: Debian's kernel is built with
 * CONFIG_NFS_DISABLE_UDP_SUPPORT and refuses `proto=udp`.
 *
 * The images are built once and cached outside the repository (prepare-images.sh). The server's
 * log and every guest's console are kept under test-artifacts/boot/.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePromText, type Exposition } from '../helpers/prom-text.js';
import { REPO_ROOT, ServerProcess } from '../helpers/server-process.js';
import { addBridge, addTap, Guest, masterSnapshot, prepareImages, snapshotDiff, type BootImages } from './boot-env.js';

const SERVER_IP = '10.99.0.1';
const NETMASK = '255.255.255.0';
const METRICS_PORT = 9108;
/** Generous: four TCG guests share two busy cores; alone one reaches its marker in about 10 s. */
const NODE_MARKER_MS = 300_000;
/** A full systemd boot takes about 35 s alone under TCG. */
const SYSTEMD_MARKER_MS = 480_000;
const POWEROFF_MS = 120_000;

interface Node {
  ip: string;
  hostname: string;
  /** initramfs-tools: the image's own initramfs (root=/dev/nfs, klibc nfsmount); else busybox. */
  initramfsTools?: boolean;
  /** nfsroot= options, and what the guest's /proc/mounts must then show for its root. */
  mount: string;
  expectOptions: RegExp[];
  forbidOptions: RegExp[];
}

const byPortmapperTcp = { expectOptions: [/(^|,)proto=tcp(,|$)/, /mountproto=tcp/], forbidOptions: [/(^|,)port=/, /mountport=/] };
const NODES: Node[] = [
  { ip: '10.99.0.11', hostname: 'node11', mount: 'vers=3', ...byPortmapperTcp },
  {
    ip: '10.99.0.12',
    hostname: 'node12',
    mount: 'vers=3,port=2049,mountport=20048',
    expectOptions: [/(^|,)port=2049(,|$)/, /mountport=20048/, /(^|,)proto=tcp(,|$)/],
    forbidOptions: [],
  },
  { ip: '10.99.0.13', hostname: 'node13', mount: 'vers=3,mountproto=udp', expectOptions: [/mountproto=udp/, /(^|,)proto=tcp(,|$)/], forbidOptions: [/mountport=/] },
  // klibc's nfsmount asks the portmapper and MOUNT itself and hands the kernel the NFS port.
  { ip: '10.99.0.14', hostname: 'node14', initramfsTools: true, mount: 'vers=3,tcp', expectOptions: [/(^|,)proto=tcp(,|$)/, /(^|,)port=2049(,|$)/], forbidOptions: [] },
];
const SYSTEMD_NODE: Node = { ip: '10.99.0.15', hostname: 'node15', mount: 'vers=3', ...byPortmapperTcp };
const SYSTEMD_MACHINE_ID = randomBytes(16).toString('hex');
const COW_MASTER = 'shared by all nodes\n';

const guestDir = path.join(__dirname, 'guest');
const artifacts = path.join(REPO_ROOT, 'test-artifacts', 'boot');
let images: BootImages;
let work: string;
let exportRoot: string;
let server: ServerProcess | undefined;
let guests: Guest[] = [];
let mastersBefore: Map<string, string>;
const timings: Record<string, number> = {};

function variant(rel: string, ip: string): string {
  return path.join(exportRoot, `${rel}$$IP=${ip}$$`);
}

function kernelArgs(node: Node, extra: string): string {
  const nfsroot = `nfsroot=${SERVER_IP}:${exportRoot},${node.mount}`;
  // initramfs-tools' udev renames eth0 (enp0s1), so its ip= leaves the device to be found.
  if (node.initramfsTools) return `root=/dev/nfs ${nfsroot} ip=${node.ip}:${SERVER_IP}::${NETMASK}:::off rw ${extra}`;
  return `ip=${node.ip}:${SERVER_IP}::${NETMASK}:${node.hostname}:eth0:off ${nfsroot} ${extra}`;
}

function startGuest(node: Node, memMiB: number, extra: string): Guest {
  const last = Number(node.ip.split('.')[3]);
  const guest = Guest.start({
    name: node.hostname,
    ns: server!.ns!,
    tap: `tap${last}`,
    macByte: last,
    memMiB,
    images,
    initrd: node.initramfsTools ? images.initrdTools : images.initrd,
    append: kernelArgs(node, extra),
    serialLog: path.join(artifacts, `serial-${node.hostname}.log`),
  });
  guests.push(guest);
  return guest;
}

function rootOptions(guest: Guest): string {
  return guest.consoleValue('CNFS-ROOT') ?? '';
}

function expectMountedAs(node: Node, guest: Guest): void {
  const opts = rootOptions(guest);
  expect(opts, `${node.hostname} root options`).toMatch(/(^|,)vers=3(,|$)/);
  for (const re of node.expectOptions) expect(opts, `${node.hostname} root options`).toMatch(re);
  for (const re of node.forbidOptions) expect(opts, `${node.hostname} root options`).not.toMatch(re);
}

/** The server's /metrics, scraped inside the namespace (kept as an artefact). */
function scrapeMetrics(): Exposition {
  const script = `fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`;
  const r = server!.exec(process.execPath, ['-e', script]);
  if (r.code !== 0) throw new Error(`metrics fetch failed: ${r.stderr}`);
  fs.writeFileSync(path.join(artifacts, 'metrics.txt'), r.stdout);
  return parsePromText(r.stdout);
}

/** Calls answered, summed over the versions of a program. */
function requests(m: Exposition, program: string, procedure: string): number {
  return m.samples.filter((s) => s.name === 'clusternfs_rpc_requests_total' && s.labels.program === program && s.labels.procedure === procedure).reduce((n, s) => n + s.value, 0);
}

function install(src: string, dest: string, mode: number): void {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.copyFileSync(src, dest);
  fs.chmodSync(dest, mode);
}

/** The per-node layout both scenarios need, on top of a plain copy of the image. */
function prepareExport(): void {
  const t = Date.now();
  const r = spawnSync('cp', ['-a', images.root, exportRoot], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`copying the image failed: ${r.stderr}`);
  timings.copyImageSeconds = (Date.now() - t) / 1000;

  for (const node of [...NODES, SYSTEMD_NODE]) fs.writeFileSync(variant('etc/hostname', node.ip), `${node.hostname}\n`);
  fs.writeFileSync(path.join(exportRoot, 'etc/hostname'), 'shared-image\n');

  // Four-node boot: new files become the creating node's; the shared file is copied on write.
  install(path.join(guestDir, 'node-check.sh'), path.join(exportRoot, 'usr/local/sbin/cnfs-node-check'), 0o755);
  fs.mkdirSync(path.join(exportRoot, 'var/log/cnfs'), { recursive: true });
  fs.writeFileSync(path.join(exportRoot, 'var/log/cnfs/$$CREATE=IP$$'), '');
  fs.mkdirSync(path.join(exportRoot, 'var/lib/cnfs'), { recursive: true });
  fs.writeFileSync(path.join(exportRoot, 'var/lib/cnfs/state'), COW_MASTER);
  fs.writeFileSync(path.join(exportRoot, 'var/lib/cnfs/$$COW=IP$$'), '');

  // systemd boot: a node of its own in everything a boot writes (the journal, random-seed,
  // timer stamps, wtmp under /var; sockets' directories under /tmp) and its own machine id.
  install(path.join(guestDir, 'bootok.sh'), path.join(exportRoot, 'usr/local/sbin/cnfs-bootok'), 0o755);
  install(path.join(guestDir, 'cnfs-bootok.service'), path.join(exportRoot, 'etc/systemd/system/cnfs-bootok.service'), 0o644);
  fs.mkdirSync(path.join(exportRoot, 'etc/systemd/system/multi-user.target.wants'), { recursive: true });
  fs.symlinkSync('../cnfs-bootok.service', path.join(exportRoot, 'etc/systemd/system/multi-user.target.wants/cnfs-bootok.service'));
  fs.writeFileSync(variant('etc/machine-id', SYSTEMD_NODE.ip), `${SYSTEMD_MACHINE_ID}\n`, { mode: 0o444 });
  const cpVar = spawnSync('cp', ['-a', path.join(exportRoot, 'var'), variant('var', SYSTEMD_NODE.ip)], { encoding: 'utf8' });
  if (cpVar.status !== 0) throw new Error(`copying /var for ${SYSTEMD_NODE.hostname} failed: ${cpVar.stderr}`);
  fs.mkdirSync(variant('tmp', SYSTEMD_NODE.ip));
  fs.chmodSync(variant('tmp', SYSTEMD_NODE.ip), 0o1777);
}

describe('real Linux kernel nodes boot their root from clusternfs', () => {
  beforeAll(async () => {
    fs.rmSync(artifacts, { recursive: true, force: true });
    fs.mkdirSync(artifacts, { recursive: true });
    let t = Date.now();
    images = await prepareImages();
    timings.prepareImagesSeconds = (Date.now() - t) / 1000;

    work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-boot-'));
    exportRoot = path.join(work, 'root');
    prepareExport();
    mastersBefore = masterSnapshot(exportRoot);

    const exportsFile = path.join(work, 'exports');
    fs.writeFileSync(exportsFile, `${exportRoot} 10.99.0.0/24(rw,no_root_squash,cluster)\n`);
    t = Date.now();
    server = await ServerProcess.start(
      ['--config', exportsFile, '--state-dir', path.join(work, 'state'), '--metrics-port', String(METRICS_PORT), '--log-level', 'debug'],
      'cnfsboot',
    );
    addBridge(server.ns!, `${SERVER_IP}/24`);
    for (const node of [...NODES, SYSTEMD_NODE]) addTap(server.ns!, `tap${node.ip.split('.')[3]}`);
  }, 30 * 60_000);

  afterAll(async () => {
    await Promise.all(guests.map((g) => g.kill()));
    if (server) {
      await server.stop();
      fs.writeFileSync(path.join(artifacts, 'server.log'), `${server.log.join('\n')}\n`);
    }
    fs.writeFileSync(path.join(artifacts, 'timings.json'), `${JSON.stringify({ images: images?.buildSeconds, ...timings }, null, 2)}\n`);
    if (work) fs.rmSync(work, { recursive: true, force: true });
    console.log(`boot test artefacts (server log, guest consoles, timings): ${artifacts}`);
  }, 60_000);

  it('four nodes boot at once, each sees its own /etc/hostname and writes only its own variants', async () => {
    const t = Date.now();
    const booted = NODES.map((node) => startGuest(node, 384, 'init=/usr/local/sbin/cnfs-node-check'));
    await Promise.all(booted.map((g) => g.waitFor('CNFS-NODE-DONE', NODE_MARKER_MS)));
    timings.fourNodesMarkerSeconds = (Date.now() - t) / 1000;
    await Promise.all(booted.map((g) => g.waitExit(POWEROFF_MS)));

    for (const [i, node] of NODES.entries()) {
      const g = booted[i];
      expect(g.consoleValue('CNFS-HOSTNAME'), g.tail()).toBe(node.hostname);
      expectMountedAs(node, g);
      expect(g.consoleValue('CNFS-CREATED')).toBe(`${node.hostname} booted from ${node.ip}`);
      expect(g.consoleValue('CNFS-COW')).toBe(`${COW_MASTER.trim()} ${node.hostname} `);
      expect(g.serial()).toContain('reboot: Power down');
      // On the server's disk: each node's file in its own variant, the shared file untouched.
      expect(fs.readFileSync(variant('var/log/cnfs/boot.txt', node.ip), 'utf8')).toBe(`${node.hostname} booted from ${node.ip}\n`);
      expect(fs.readFileSync(variant('var/lib/cnfs/state', node.ip), 'utf8')).toBe(`${COW_MASTER}${node.hostname}\n`);
    }
    expect(fs.existsSync(path.join(exportRoot, 'var/log/cnfs/boot.txt'))).toBe(false);
    expect(fs.readFileSync(path.join(exportRoot, 'var/lib/cnfs/state'), 'utf8')).toBe(COW_MASTER);
    expect(snapshotDiff(mastersBefore, masterSnapshot(exportRoot))).toEqual([]);

    // Every mount path was taken: the portmapper was asked (defaults over TCP, mountproto=udp
    // over UDP), every node mounted, and the kernel's NFSACL probe was turned away.
    const m = scrapeMetrics();
    expect(requests(m, 'portmap', 'GETPORT') + requests(m, 'portmap', 'GETADDR')).toBeGreaterThanOrEqual(3);
    expect(requests(m, 'mount', 'MNT')).toBeGreaterThanOrEqual(NODES.length);
    expect(server!.log.some((l) => l.includes('"prog":100227') && l.includes('program unavailable'))).toBe(true);
  }, NODE_MARKER_MS + POWEROFF_MS + 60_000);

  it('a node boots through systemd to multi-user.target with no failed unit and powers off cleanly', async () => {
    const t = Date.now();
    const g = startGuest(SYSTEMD_NODE, 512, 'rw');
    await g.waitFor('CNFS-BOOTOK', SYSTEMD_MARKER_MS);
    timings.systemdMarkerSeconds = (Date.now() - t) / 1000;
    expect(await g.waitExit(POWEROFF_MS)).toBe(0);
    timings.systemdPoweroffSeconds = (Date.now() - t) / 1000;

    expect(g.consoleValue('CNFS-FAILED-UNITS'), g.tail(200)).toBe('0');
    expect(g.consoleValue('CNFS-MULTI-USER')).toBe('active');
    expect(g.consoleValue('CNFS-HOSTNAME')).toBe(SYSTEMD_NODE.hostname);
    expect(g.consoleValue('CNFS-MACHINE-ID')).toBe(SYSTEMD_MACHINE_ID);
    expectMountedAs(SYSTEMD_NODE, g);
    expect(g.serial()).toContain('systemd-shutdown[1]: Powering off.');
    expect(g.serial()).toContain('reboot: Power down');

    // The boot's writes went to this node's /var; the shared tree is as it was.
    const journal = path.join(variant('var', SYSTEMD_NODE.ip), 'log/journal', SYSTEMD_MACHINE_ID, 'system.journal');
    expect(fs.statSync(journal).size).toBeGreaterThan(0);
    expect(fs.statSync(path.join(variant('var', SYSTEMD_NODE.ip), 'lib/systemd/random-seed')).size).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(exportRoot, 'var/log/journal', SYSTEMD_MACHINE_ID))).toBe(false);
    expect(snapshotDiff(mastersBefore, masterSnapshot(exportRoot))).toEqual([]);
  }, SYSTEMD_MARKER_MS + POWEROFF_MS + 60_000);
});
