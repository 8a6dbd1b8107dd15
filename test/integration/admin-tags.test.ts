/**
 * `clusternfs tags` and `clusternfs tag` on temp trees, through the compiled CLI: the table and
 * JSON say whom each variant serves (cluster-tags.md, "Tags"), the walk never follows a symlink
 * and survives non-UTF-8 names, and `tag` makes variants without ever overwriting one silently.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectUserError, runCli } from '../helpers/cli-run.js';

let work: string;
let root: string;
const isRoot = process.getuid?.() === 0;

function put(rel: string, content: string, mode = 0o644): string {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  fs.chmodSync(p, mode);
  return p;
}

interface TagRow {
  path: string;
  entry: string;
  entryHex?: string;
  tag: string;
  serves: string;
  type: string;
  master: boolean;
  size: number;
  mtime: string;
}

function tagsJson(dir: string): TagRow[] {
  const r = runCli(['tags', dir, '--json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as TagRow[];
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-tags-'));
  root = path.join(work, 'root');
  put('etc/hostname', 'master\n');
  put('etc/hostname$$IP=10.0.0.7$$', 'node7\n');
  put('etc/hostname$$CLIENT=10.0.0.8$$', 'node8\n');
  put('etc/fstab$$IP=10.0.0.0_24$$', 'rack fstab\n');
  put('etc/fstab$$IP=fd00::_64$$', 'v6 fstab\n');
  put('etc/motd$$HOST=rack1-*$$', 'rack1\n');
  put('etc/motd$$HOST=node9$$', 'node9\n');
  put('etc/motd$$CLIENT$$', 'default\n');
  put('home/ssh$$UID=1000$$', 'k\n');
  put('home/ssh$$GID=100$$', 'k\n');
  put('var/log/$$CREATE=IP$$', '');
  put('var/spool/$$COW=IP$$', '');
  put('var/cache$$ALWAYS=CLIENT$$', '');
  put('etc/not-a-tag$$FOO=1$$', 'plain\n');
  fs.mkdirSync(path.join(root, 'var$$IP=10.0.0.9$$', 'log'), { recursive: true });
  put('var$$IP=10.0.0.9$$/log/messages$$IP=10.0.0.9$$', 'x\n');
  // A name that is not UTF-8 (latin1 é) and a symlink to a directory full of tags outside DIR.
  fs.writeFileSync(Buffer.concat([Buffer.from(path.join(root, 'caf')), Buffer.from([0xe9]), Buffer.from('$$IP=10.0.0.7$$')]), 'latin1 name\n');
  fs.mkdirSync(path.join(work, 'outside'));
  fs.writeFileSync(path.join(work, 'outside', 'secret$$IP=10.9.9.9$$'), 'never listed\n');
  fs.symlinkSync(path.join(work, 'outside'), path.join(root, 'link-out'));
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('clusternfs tags', () => {
  it('lists every variant and marker with whom it serves, and nothing else', () => {
    const rows = tagsJson(root);
    const by = (entry: string) => rows.find((r) => r.entry === entry);
    const expected: [string, string, string, string][] = [
      ['etc/hostname$$IP=10.0.0.7$$', 'etc/hostname', '10.0.0.7', 'file'],
      ['etc/hostname$$CLIENT=10.0.0.8$$', 'etc/hostname', '10.0.0.8', 'file'],
      ['etc/fstab$$IP=10.0.0.0_24$$', 'etc/fstab', '10.0.0.0/24', 'file'],
      ['etc/fstab$$IP=fd00::_64$$', 'etc/fstab', 'fd00::/64', 'file'],
      ['etc/motd$$HOST=rack1-*$$', 'etc/motd', 'hosts rack1-*', 'file'],
      ['etc/motd$$HOST=node9$$', 'etc/motd', 'host node9', 'file'],
      ['etc/motd$$CLIENT$$', 'etc/motd', 'any client', 'file'],
      ['home/ssh$$UID=1000$$', 'home/ssh', 'uid 1000', 'file'],
      ['home/ssh$$GID=100$$', 'home/ssh', 'gid 100', 'file'],
      ['var/log/$$CREATE=IP$$', 'var/log/', 'created per client (IP)', 'marker'],
      ['var/spool/$$COW=IP$$', 'var/spool/', 'copy-on-write per client (IP)', 'marker'],
      ['var/cache$$ALWAYS=CLIENT$$', 'var/cache', 'always its own, once for all clients (CLIENT)', 'file'],
      ['var$$IP=10.0.0.9$$', 'var', '10.0.0.9', 'dir'],
      ['var$$IP=10.0.0.9$$/log/messages$$IP=10.0.0.9$$', 'var$$IP=10.0.0.9$$/log/messages', '10.0.0.9', 'file'],
    ];
    for (const [entry, base, serves, type] of expected) {
      const row = by(entry);
      expect(row, entry).toBeDefined();
      expect([row!.path, row!.serves, row!.type], entry).toEqual([base, serves, type]);
    }
    // Plus the non-UTF-8 name; no plain names, no unknown tags, nothing behind the symlink.
    expect(rows).toHaveLength(expected.length + 1);
    expect(rows.some((r) => r.entry.includes('not-a-tag') || r.entry.includes('secret'))).toBe(false);
    // Masters: etc/hostname has one; etc/motd and var/log/messages do not.
    expect(by('etc/hostname$$IP=10.0.0.7$$')!.master).toBe(true);
    expect(by('etc/motd$$CLIENT$$')!.master).toBe(false);
    expect(by('etc/hostname$$IP=10.0.0.7$$')!.size).toBe('node7\n'.length);
  });

  it('shows a name that is not UTF-8 escaped, with its exact bytes in JSON', () => {
    const row = tagsJson(root).find((r) => r.entry.startsWith('caf'));
    expect(row).toBeDefined();
    expect(row!.entry).toBe('caf\\xe9$$IP=10.0.0.7$$');
    expect(Buffer.from(row!.entryHex!, 'hex')).toEqual(Buffer.concat([Buffer.from('caf'), Buffer.from([0xe9]), Buffer.from('$$IP=10.0.0.7$$')]));
    const table = runCli(['tags', root]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^caf\\xe9 \(no master\)\s+\$\$IP=10\.0\.0\.7\$\$\s+10\.0\.0\.7\s+file/m);
  });

  it('prints a table with a header, one row per tagged entry', () => {
    const r = runCli(['tags', '.'], { cwd: root });
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^PATH\s+TAG\s+SERVES\s+TYPE\s+SIZE\s+MTIME/);
    expect(lines).toHaveLength(tagsJson(root).length + 1);
    expect(r.stdout).toMatch(/^etc\/fstab \(no master\)\s+\$\$IP=10\.0\.0\.0_24\$\$\s+10\.0\.0\.0\/24\s+file\s+11 B/m);
  });

  it('lists the exports of an exports file, and refuses a missing directory', () => {
    const conf = path.join(work, 'exports');
    fs.writeFileSync(conf, `${root}/etc 127.0.0.1(rw,cluster)\n`);
    const rows = JSON.parse(runCli(['tags', '--config', conf, '--json']).stdout) as TagRow[];
    expect(rows.map((r) => r.entry).sort()).toEqual(tagsJson(path.join(root, 'etc')).map((r) => r.entry).sort());
    expect(rows.length).toBeGreaterThan(5);
    expectUserError(runCli(['tags', path.join(work, 'nope')]), /directory .*nope does not exist/);
  });
});

describe('clusternfs tag', () => {
  it('makes a variant with given content, refuses to overwrite it, and replaces it with --force', () => {
    const master = put('etc/issue', 'welcome\n', 0o640);
    const variant = `${master}$$IP=10.0.0.21$$`;
    const made = runCli(['tag', master, '--ip', '10.0.0.21', '--content', 'node21']);
    expect(made.stderr).toBe('');
    expect(made.code).toBe(0);
    expect(made.stdout).toMatch(/created .*issue\$\$IP=10\.0\.0\.21\$\$ for 10\.0\.0\.21/);
    expect(fs.readFileSync(variant, 'utf8')).toBe('node21\n');
    // The master's mode, not the umask's.
    expect(fs.statSync(variant).mode & 0o7777).toBe(0o640);

    expectUserError(runCli(['tag', master, '--ip', '10.0.0.21', '--content', 'other']), /exists already; use --force/);
    expect(fs.readFileSync(variant, 'utf8')).toBe('node21\n');

    const forced = runCli(['tag', master, '--ip', '10.0.0.21', '--from-master', '--force']);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/^replaced /);
    expect(fs.readFileSync(variant, 'utf8')).toBe('welcome\n');
    // No temporary name is left behind.
    expect(fs.readdirSync(path.dirname(master)).filter((n) => n.includes('clusternfs-'))).toEqual([]);
  });

  it('--from-master keeps content, mode, owner and times; a directory is copied whole with its symlinks', () => {
    const master = put('etc/shadow', 'secret\n');
    // chown clears setuid bits, so the mode comes after it.
    if (isRoot) fs.chownSync(master, 1234, 567);
    fs.chmodSync(master, 0o4750);
    fs.utimesSync(master, new Date('2020-02-03T04:05:06Z'), new Date('2021-03-04T05:06:07Z'));
    expect(runCli(['tag', master, '--host', 'node7.cluster', '--from-master']).code).toBe(0);
    const v = fs.lstatSync(`${path.join(root, 'etc', 'shadow')}$$HOST=node7$$`);
    expect(v.mode & 0o7777).toBe(0o4750);
    expect(v.mtime.toISOString()).toBe('2021-03-04T05:06:07.000Z');
    if (isRoot) expect([v.uid, v.gid]).toEqual([1234, 567]);

    const dir = path.join(root, 'srv', 'data');
    put('srv/data/a/b.txt', 'b\n', 0o600);
    fs.symlinkSync('/nonexistent/target', path.join(dir, 'dangling'));
    fs.chmodSync(dir, 0o751);
    const r = runCli(['tag', dir, '--ip', '10.0.1.0/24', '--from-master']);
    expect(r.stdout).toMatch(/for 10\.0\.1\.0\/24 \(a copy of the master\)/);
    const copy = `${dir}$$IP=10.0.1.0_24$$`;
    expect(fs.statSync(copy).mode & 0o7777).toBe(0o751);
    expect(fs.readFileSync(path.join(copy, 'a', 'b.txt'), 'utf8')).toBe('b\n');
    expect(fs.statSync(path.join(copy, 'a', 'b.txt')).mode & 0o7777).toBe(0o600);
    expect(fs.readlinkSync(path.join(copy, 'dangling'))).toBe('/nonexistent/target');
  });

  it('makes CLIENT, UID and host-prefix variants that tags then lists', () => {
    const master = put('etc/profile', 'p\n');
    expect(runCli(['tag', master, '--client', '--empty']).code).toBe(0);
    expect(runCli(['tag', master, '--uid', '1000', '--content', 'u']).code).toBe(0);
    expect(runCli(['tag', master, '--host', 'rack2-*', '--content', 'r']).code).toBe(0);
    const serves = tagsJson(root)
      .filter((row) => row.path === 'etc/profile')
      .map((row) => row.serves)
      .sort();
    expect(serves).toEqual(['any client', 'hosts rack2-*', 'uid 1000']);
    expect(fs.statSync(`${master}$$CLIENT$$`).size).toBe(0);
  });

  it('says what is wrong in one line with status 2', () => {
    const master = path.join(root, 'etc', 'hostname');
    expectUserError(runCli(['tag', master, '--ip', '10.0.0.300', '--empty']), /--ip 10\.0\.0\.300: not an IPv4 or IPv6 address/);
    expectUserError(runCli(['tag', master, '--ip', '10.0.0.5/24', '--empty']), /host bits are set; did you mean 10\.0\.0\.0\/24/);
    expectUserError(runCli(['tag', master, '--ip', '10.0.0.0/33', '--empty']), /prefix length must be 0-32/);
    expectUserError(runCli(['tag', master, '--host', 'bad host', '--empty']), /not a host name/);
    expectUserError(runCli(['tag', master, '--ip', '10.0.0.5', '--client', '--empty']), /exactly one of --ip, --host, --client/);
    expectUserError(runCli(['tag', master, '--ip', '10.0.0.5']), /say what the variant holds .*--from-master.*--content/);
    expectUserError(runCli(['tag', `${master}$$IP=10.0.0.7$$`, '--ip', '10.0.0.5', '--empty']), /already a tagged name/);
    expectUserError(runCli(['tag', path.join(root, 'etc', 'none'), '--ip', '10.0.0.5', '--from-master']), /no master to copy/);
    expectUserError(runCli(['tag', path.join(root, 'nodir', 'x'), '--ip', '10.0.0.5', '--empty']), /directory .*nodir does not exist/);
    expectUserError(runCli(['tag', master, '--ip']), /argument missing/);
    expect(fs.existsSync(`${master}$$IP=10.0.0.5$$`)).toBe(false);
  });

  it('--help explains the flags to an admin', () => {
    const help = runCli(['tag', '--help']).stdout;
    for (const flag of ['--ip', '--host', '--client', '--from-master', '--content', '--from-file', '--empty', '--force', 'Examples']) expect(help).toContain(flag);
  });
});
