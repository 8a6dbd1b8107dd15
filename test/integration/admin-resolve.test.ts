/**
 * `clusternfs resolve` through the compiled CLI: for a client identity it names the entry chosen
 * at every path component, the rule of cluster-tags.md that chose it, and why the others were
 * passed over; it honours the export's cluster / cluster=subtrees / cluster_admin options.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectUserError, runCli } from '../helpers/cli-run.js';
import { REPO_ROOT } from '../helpers/server-process.js';

let work: string;
let root: string;

function put(rel: string, content: string): void {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

interface ResolveJson {
  client: { ip: string; host: string | null; uid: number; gid: number };
  export: { root: string; remapping: string };
  steps: { path: string; chosen: string | null; why: string; passedOver: { entry: string; why: string }[]; markers: string[] }[];
  result: { entry: string; type: string; size: number; target?: string } | null;
  note?: string;
}

function resolve(args: string[], expectCode = 0): ResolveJson {
  const r = runCli(['resolve', ...args, '--json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(expectCode);
  return JSON.parse(r.stdout) as ResolveJson;
}

/** The entry the client gets, relative to the root, and the rule words of the last step. */
function outcome(j: ResolveJson): [string | null, string] {
  return [j.result === null ? null : path.relative(root, j.result.entry), j.steps[j.steps.length - 1].why];
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-resolve-'));
  root = path.join(work, 'root');
  put('etc/hostname', 'master\n');
  put('etc/hostname$$IP=10.0.0.7$$', 'node7\n');
  put('etc/hostname$$HOST=node8$$', 'node8\n');
  put('etc/hostname$$IP=10.0.0.0_8$$', 'ten\n');
  put('etc/hostname$$IP=10.0.0.0_24$$', 'rack\n');
  put('etc/hostname$$HOST=rack2-*$$', 'rack2\n');
  put('etc/hostname$$UID=1000$$', 'uid1000\n');
  put('etc/hostname$$GID=50$$', 'gid50\n');
  put('etc/hostname$$CLIENT$$', 'default\n');
  put('etc/plain', 'plain\n');
  put('var/log/$$CREATE=IP$$', '');
  put('var$$IP=10.0.0.7$$/log/messages', 'node7 log\n');
  put('var/spool/$$COW=IP$$', '');
  put('var/spool/mail', 'shared mail\n');
  fs.symlinkSync('../etc', path.join(root, 'link'));
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('clusternfs resolve: the rule that matched, for each kind of client', () => {
  it('follows the resolution order of cluster-tags.md', () => {
    const cases: [string[], string, RegExp][] = [
      [['--ip', '10.0.0.7'], 'etc/hostname$$IP=10.0.0.7$$', /^rule 2 \(IP\)/],
      [['--ip', '172.16.0.8', '--host', 'node8'], 'etc/hostname$$HOST=node8$$', /^rule 3 \(HOST\)/],
      // The /24 wins over the /8: longest prefix, compared as numbers.
      [['--ip', '10.0.0.9'], 'etc/hostname$$IP=10.0.0.0_24$$', /^rule 4 /],
      [['--ip', '10.1.0.9'], 'etc/hostname$$IP=10.0.0.0_8$$', /^rule 4 /],
      [['--ip', '172.16.0.9', '--host', 'rack2-n1'], 'etc/hostname$$HOST=rack2-*$$', /^rule 5 /],
      [['--ip', '172.16.0.9', '--uid', '1000'], 'etc/hostname$$UID=1000$$', /^rule 6 \(UID\)/],
      [['--ip', '172.16.0.9', '--uid', '5', '--gid', '50'], 'etc/hostname$$GID=50$$', /^rule 6 \(GID\)/],
      [['--ip', '172.16.0.9', '--uid', '5'], 'etc/hostname$$CLIENT$$', /^rule 7 \(CLIENT\)/],
      [['--ip', '::1'], 'etc/hostname$$CLIENT$$', /^rule 7 \(CLIENT\)/],
    ];
    for (const [identity, entry, rule] of cases) {
      const [got, why] = outcome(resolve([path.join(root, 'etc', 'hostname'), '--root', root, ...identity]));
      expect(got, identity.join(' ')).toBe(entry);
      expect(why, identity.join(' ')).toMatch(rule);
    }
  });

  it('names every candidate passed over and why: another client, or outranked by an earlier rule', () => {
    const j = resolve(['/etc/hostname', '--root', root, '--ip', '10.0.0.7', '--uid', '1000']);
    const why = Object.fromEntries(j.steps[1].passedOver.map((c) => [c.entry, c.why]));
    expect(Object.keys(why).sort()).toEqual(
      ['hostname', 'hostname$$CLIENT$$', 'hostname$$GID=50$$', 'hostname$$HOST=node8$$', 'hostname$$HOST=rack2-*$$', 'hostname$$IP=10.0.0.0_24$$', 'hostname$$IP=10.0.0.0_8$$', 'hostname$$UID=1000$$'].sort(),
    );
    expect(why['hostname']).toMatch(/the master; rule 2 \(IP\) comes first/);
    expect(why['hostname$$IP=10.0.0.0_24$$']).toMatch(/matches this client too by rule 4 .*but rule 2 \(IP\) comes first/);
    expect(why['hostname$$UID=1000$$']).toMatch(/matches this client too by rule 6 \(UID\)/);
    expect(why['hostname$$HOST=node8$$']).toMatch(/not this client \(it serves host node8\)/);
    expect(why['hostname$$GID=50$$']).toMatch(/not this client \(it serves gid 50\)/);
  });

  it('works per path component: a tagged directory, a plain one, the root never remapped', () => {
    const mine = resolve([path.join(root, 'var', 'log', 'messages'), '--root', root, '--ip', '10.0.0.7']);
    expect(mine.steps.map((s) => s.chosen)).toEqual(['var$$IP=10.0.0.7$$', 'log', 'messages']);
    expect(mine.steps[0].why).toMatch(/^rule 2 \(IP\)/);
    expect(mine.steps[1].why).toMatch(/no variants/);
    expect(fs.readFileSync(mine.result!.entry, 'utf8')).toBe('node7 log\n');

    // Another node: the master var, whose log has only a CREATE marker: nothing yet (exit 1).
    const other = resolve([path.join(root, 'var', 'log', 'messages'), '--root', root, '--ip', '10.0.0.8'], 1);
    expect(other.steps.map((s) => s.chosen)).toEqual(['var', 'log', null]);
    expect(other.steps[2].why).toMatch(/CREATE marker.*a create by this client makes messages\$\$IP=10\.0\.0\.8\$\$/);
    expect(other.steps[2].markers).toEqual(['$$CREATE=IP$$: created per client (IP)']);
    expect(other.note).toMatch(/sees nothing at var\/log\/messages/);

    const top = resolve([root, '--root', root, '--ip', '10.0.0.8']);
    expect(top.steps).toEqual([]);
    expect(top.result!.type).toBe('dir');
  });

  it('COW: the master for reading, and where this client\'s changes go', () => {
    const j = resolve(['/var/spool/mail', '--root', root, '--ip', '10.0.0.8']);
    const [got, why] = outcome(j);
    expect(got).toBe('var/spool/mail');
    expect(why).toMatch(/^rule 9 \(COW\).*changes go to mail\$\$IP=10\.0\.0\.8\$\$/);
  });

  it('a raw tagged name is not addressable; a symlink on the way stops with a note; a file is no directory', () => {
    const raw = resolve(['/etc/hostname$$IP=10.0.0.7$$', '--root', root, '--ip', '10.0.0.7'], 1);
    expect(raw.steps[1].why).toMatch(/raw tagged name/);
    const link = resolve(['/link/hostname', '--root', root, '--ip', '10.0.0.7']);
    expect(link.result!.target).toBe('../etc');
    expect(link.note).toMatch(/is a symlink: the client follows it itself/);
    const notDir = resolve(['/etc/plain/x', '--root', root, '--ip', '10.0.0.7'], 1);
    expect(notDir.note).toMatch(/not a directory/);
  });

  it('the text output reads component by component and ends with the answer', () => {
    const r = runCli(['resolve', path.join(root, 'etc', 'hostname'), '--root', root, '--ip', '10.0.0.9']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^client 10\.0\.0\.9, host \(unknown/);
    expect(r.stdout).toMatch(/^\/  the export root: never remapped$/m);
    expect(r.stdout).toMatch(/^etc\/hostname {2}-> {2}hostname\$\$IP=10\.0\.0\.0_24\$\$$/m);
    expect(r.stdout).toMatch(/^ {4}passed over hostname\$\$IP=10\.0\.0\.0_8\$\$: matches this client too by rule 4/m);
    expect(r.stdout).toMatch(/^=> 10\.0\.0\.9 gets .*hostname\$\$IP=10\.0\.0\.0_24\$\$ \(file, 5 B\)$/m);
  });
});

describe('clusternfs resolve: where remapping applies', () => {
  it('follows the client\'s options in an exports file: cluster=/etc subtrees, cluster_admin, no cluster, not allowed', () => {
    const conf = path.join(work, 'exports');
    fs.writeFileSync(conf, `${root} 10.0.0.7(rw,cluster=/etc) 10.0.0.8(rw,cluster,cluster_admin) 10.0.0.0/24(rw,cluster) 10.1.0.0/16(ro)\n`);
    const in7 = resolve([path.join(root, 'etc', 'hostname'), '--config', conf, '--ip', '10.0.0.7']);
    expect(outcome(in7)[0]).toBe('etc/hostname$$IP=10.0.0.7$$');
    // /var is outside cluster=/etc: the master var, not var$$IP=10.0.0.7$$.
    const var7 = resolve(['/var/log/messages', '--config', conf, '--ip', '10.0.0.7'], 1);
    expect(var7.steps[0]).toMatchObject({ chosen: 'var', why: expect.stringMatching(/outside the export's cluster= subtrees/) });

    // Raw tagged names are judged by their base: inside /etc unreachable, outside /etc plain names.
    const rawIn = resolve(['/etc/hostname$$IP=10.0.0.7$$', '--config', conf, '--ip', '10.0.0.7'], 1);
    expect(rawIn.steps[1].why).toMatch(/raw tagged name/);
    const rawOut = resolve(['/var$$IP=10.0.0.7$$/log/messages', '--config', conf, '--ip', '10.0.0.7']);
    expect(rawOut.steps[0]).toMatchObject({ chosen: 'var$$IP=10.0.0.7$$', why: expect.stringMatching(/outside the export's cluster= subtrees/) });

    const admin = resolve([path.join(root, 'etc', 'hostname'), '--config', conf, '--ip', '10.0.0.8']);
    expect(admin.export.remapping).toBe('cluster_admin');
    expect(outcome(admin)).toEqual(['etc/hostname', expect.stringMatching(/cluster_admin clients see raw names/)]);

    const rack = resolve(['/etc/hostname', '--config', conf, '--ip', '10.0.0.9']);
    expect(outcome(rack)[0]).toBe('etc/hostname$$IP=10.0.0.0_24$$');

    const plain = resolve(['/etc/hostname', '--config', conf, '--ip', '10.1.2.3']);
    expect(plain.export.remapping).toBe('off');
    expect(outcome(plain)[0]).toBe('etc/hostname');

    const denied = resolve(['/etc/hostname', '--config', conf, '--ip', '192.168.1.1'], 1);
    expect(denied.export.remapping).toBe('not allowed');
    expect(denied.note).toMatch(/may not use this export/);
  });

  it('knows the host name from a hosts file, as serve --hosts-file does', () => {
    const hosts = path.join(work, 'hosts');
    fs.writeFileSync(hosts, '# cluster\n172.16.0.8 node8.cluster node8\n');
    const j = resolve(['/etc/hostname', '--root', root, '--ip', '172.16.0.8', '--hosts-file', hosts]);
    expect(j.client.host).toBe('node8');
    expect(outcome(j)[0]).toBe('etc/hostname$$HOST=node8$$');
  });

  it('defaults to the bundled sample export for a path inside it', () => {
    const j = resolve([path.join(REPO_ROOT, 'sample', 'root', 'etc', 'hostname'), '--ip', '127.0.0.11']);
    expect(path.basename(j.result!.entry)).toBe('hostname$$IP=127.0.0.11$$');
  });

  it('says what is wrong in one line with status 2', () => {
    expectUserError(runCli(['resolve', '/etc/hostname', '--ip', '10.0.0.7']), /give --root DIR .* or --config FILE/);
    expectUserError(runCli(['resolve', '/etc/hostname', '--root', root, '--ip', 'node7']), /--ip node7: not an IPv4 or IPv6 address/);
    expectUserError(runCli(['resolve', '/etc/hostname', '--root', root]), /required option '--ip <A>'/);
    expectUserError(runCli(['resolve', '/etc/hostname', '--root', root, '--ip', '10.0.0.7', '--uid', 'root']), /--uid root: not a numeric id/);
    expectUserError(runCli(['resolve', '/etc/../hostname', '--root', root, '--ip', '10.0.0.7']), /without '\.\.'/);
    expectUserError(runCli(['resolve', '/etc/hostname', '--root', path.join(work, 'nope'), '--ip', '10.0.0.7']), /is not a directory/);
  });
});
