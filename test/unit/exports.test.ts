import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  DEFAULT_EXPORT_OPTIONS,
  DnsHostNameResolver,
  ExportTable,
  fsidForPath,
  loadExportsFile,
  parseClientPattern,
  parseExports,
  quickExport,
  type ExportEntry,
  type HostNameResolver,
} from '../../src/mount/exports.js';

/** sha256('/srv/root'), first 4 bytes big-endian: pinned so a changed hash (new fsids after an upgrade) fails. */
const FSID_SRV_ROOT = 2400541485;

let root: string;
let a: string;
let b: string;
let spaced: string;
let file: string;

beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'cnfs-exports-'));
  a = path.join(root, 'a');
  b = path.join(root, 'b');
  spaced = path.join(root, 'with space');
  mkdirSync(a);
  mkdirSync(b);
  mkdirSync(spaced);
  file = path.join(root, 'plain-file');
  writeFileSync(file, 'x');
  symlinkSync(a, path.join(root, 'link-to-a'));
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The message of the ConfigError `fn` throws (fails the test if it throws anything else). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

/** A resolver answering from a fixed map, counting calls. */
class FakeResolver implements HostNameResolver {
  calls = 0;
  constructor(private readonly names: Record<string, string>, private readonly useCache = true) {}
  async reverse(address: string): Promise<string | null> {
    this.calls++;
    return this.names[address] ?? null;
  }
  cached(address: string): string | null | undefined {
    if (!this.useCache) return undefined;
    return this.names[address] ?? null;
  }
}

describe('parseExports: syntax', () => {
  it('parses the example line with options per client, in order', () => {
    const [e] = parseExports(`${a}  10.0.0.0/24(rw,no_root_squash) node*.cluster(ro) *(ro)\n`, 'exports');
    expect(e.path).toBe(a);
    expect(e.rules.map((r) => r.pattern)).toEqual(['10.0.0.0/24', 'node*.cluster', '*']);
    expect(e.rules[0].options).toMatchObject({ ro: false, rootSquash: false, secure: true });
    expect(e.rules[1].options).toMatchObject({ ro: true, rootSquash: true });
    expect(e.rules[2].match.kind).toBe('any');
    expect(e.source).toBe('exports:1');
  });

  it('gives defaults ro, root_squash, secure, sync when no options are given', () => {
    const [e] = parseExports(`${a} 10.0.0.1 host1()`, 'x');
    for (const r of e.rules) {
      expect(r.options).toEqual(DEFAULT_EXPORT_OPTIONS);
      expect(r.sync).toBe(true);
      expect(r.options.anonUid).toBe(65534);
    }
  });

  it('skips comments and blank lines, joins continuation lines, keeps line numbers', () => {
    const text = [
      '# exports for the cluster',
      '',
      `${a} 10.0.0.0/24(rw) \\`,
      '   # not a comment start inside continuation? it is: the rest of this line is ignored',
      '',
      `${b} \\`,
      '    10.1.0.0/16(rw)   # trailing comment',
      '   \t  ',
    ].join('\n');
    const es = parseExports(text, 'f');
    expect(es.map((e) => e.path)).toEqual([a, b]);
    expect(es[0].source).toBe('f:3');
    expect(es[1].source).toBe('f:6');
    expect(es[1].rules[0].options.ro).toBe(false);
  });

  it('continues a line across a backslash followed by blanks and CRLF', () => {
    const es = parseExports(`${a} \\  \r\n 10.0.0.1(rw)\r\n`, 'f');
    expect(es[0].rules[0].pattern).toBe('10.0.0.1');
  });

  it('applies -opts line defaults to the clients after them', () => {
    const [e] = parseExports(`${a} -rw,async,anonuid=1000 10.0.0.1 10.0.0.2(ro) -sync 10.0.0.3`, 'f');
    expect(e.rules[0].options).toMatchObject({ ro: false, anonUid: 1000 });
    expect(e.rules[0].sync).toBe(false);
    expect(e.rules[1].options).toMatchObject({ ro: true, anonUid: 1000 });
    expect(e.rules[2].options.ro).toBe(false);
    expect(e.rules[2].sync).toBe(true);
  });

  it('parses every option', () => {
    const [e] = parseExports(
      `${a} h1(rw,no_root_squash,all_squash,anonuid=7,anongid=8,insecure,async,no_subtree_check,subtree_check,fsid=42,cluster=/etc:/var/lib:/etc/,cluster_admin,sec=sys,no_wdelay)` +
        ` h2(cluster,no_all_squash,root_squash,secure,sync) h3(cluster,no_cluster) h4(cluster=/)`,
      'f',
    );
    expect(e.fsid).toBe(42);
    expect(e.rules[0].options).toEqual({
      ro: false,
      rootSquash: false,
      allSquash: true,
      anonUid: 7,
      anonGid: 8,
      secure: false,
      cluster: true,
      clusterSubtrees: [['etc'], ['var', 'lib']],
      clusterAdmin: true,
    });
    expect(e.rules[0].sync).toBe(false);
    expect(e.rules[1].options).toMatchObject({ cluster: true, clusterSubtrees: null, allSquash: false, rootSquash: true, secure: true });
    expect(e.rules[2].options.cluster).toBe(false);
    expect(e.rules[3].options).toMatchObject({ cluster: true, clusterSubtrees: null });
  });

  it('lets the last of conflicting flags win, like exports(5)', () => {
    const [e] = parseExports(`${a} *(rw,ro) 10.0.0.1(ro,rw)`, 'f');
    expect(e.rules[0].options.ro).toBe(true);
    expect(e.rules[1].options.ro).toBe(false);
  });

  it('normalizes the path and resolves its real directory', () => {
    const [e] = parseExports(`${root}//link-to-a/ *`, 'f');
    expect(e.path).toBe(path.join(root, 'link-to-a'));
    expect(e.realPath).toBe(a);
  });

  it('gives a stable fsid from the path, distinct per export', () => {
    const es1 = parseExports(`${a} *\n${b} *`, 'f');
    const es2 = parseExports(`${b} *\n${a} *`, 'g');
    expect(es1[0].fsid).toBe(fsidForPath(a));
    expect(es1[0].fsid).toBe(es2[1].fsid);
    expect(es1[0].fsid).not.toBe(es1[1].fsid);
    expect(Number.isInteger(es1[0].fsid) && es1[0].fsid >= 0 && es1[0].fsid <= 0xffffffff).toBe(true);
    // a fixed value: stable across restarts and versions (sha256 of the path, first 4 bytes)
    expect(fsidForPath('/srv/root')).toBe(FSID_SRV_ROOT);
  });

  it('can skip the directory check', () => {
    const [e] = parseExports('/does/not/exist *', 'f', { checkDirectories: false });
    expect(e.path).toBe('/does/not/exist');
  });
});

describe('parseExports: quoted paths', () => {
  it('accepts a quoted path with a space', () => {
    const [e] = parseExports(`"${spaced}" *(ro)`, 'f');
    expect(e.path).toBe(spaced);
  });
  it('accepts \\040 for a space', () => {
    const [e] = parseExports(`${spaced.replace(' ', '\\040')} *(ro)`, 'f');
    expect(e.path).toBe(spaced);
  });
  it('keeps # inside a quoted or unquoted path', () => {
    const [e] = parseExports(`"${root}/#x" *`, 'f', { checkDirectories: false });
    expect(e.path).toBe(`${root}/#x`);
    const [f] = parseExports(`${root}/y#z *`, 'f', { checkDirectories: false });
    expect(f.path).toBe(`${root}/y#z`);
  });
});

describe('parseExports: errors name the file and line', () => {
  const cases: [string, string, number, RegExp][] = [
    ['relative path', `\n\nsrv/root *`, 3, /must be absolute/],
    ['missing directory', `# c\n${'/nonexistent-cnfs-dir'} *`, 2, /does not exist/],
    ['not a directory', `PLAIN *`, 1, /is not a directory/],
    ['dot-dot in path', `\n/srv/../etc *`, 2, /must not contain/],
    ['unknown option', `A *(rw)\n\nB 10.0.0.1(rw,bogus)`, 3, /unknown option 'bogus'/],
    ['unsupported Linux option', `A *(crossmnt)`, 1, /'crossmnt' is not supported/],
    ['netgroup', `A\t@trusted(rw)`, 1, /netgroups are not supported/],
    ['options without client', `\nA (rw)`, 2, /options without a client.*\*\(rw\)/],
    ['no clients', `A`, 1, /has no clients/],
    ['unterminated quote', `\n"A *(rw)\n`, 2, /unterminated quote/],
    ['spaces inside parentheses', `A h(rw, sync)`, 1, /one pair of parentheses/],
    ['stray parenthesis', `A h)`, 1, /unbalanced/],
    ['prefix too long', `A 10.0.0.0/33`, 1, /prefix length must be 0-32/],
    ['non-contiguous netmask', `A 10.0.0.0/255.0.255.0`, 1, /not contiguous/],
    ['bad IPv4', `A 10.0.0.256`, 1, /not a valid address/],
    ['bad IPv6 prefix', `A fd00::/129`, 1, /prefix length must be 0-128/],
    ['bad host characters', `A ho$t`, 1, /not a valid host name/],
    ['anonuid not a number', `A *(anonuid=abc)`, 1, /anonuid=abc: expected a number/],
    ['anonuid negative', `A *(anonuid=-2)`, 1, /expected a number/],
    ['anongid too large', `A *(anongid=4294967296)`, 1, /expected a number/],
    ['value missing', `A *(fsid)`, 1, /needs a value/],
    ['value on a flag', `A *(rw=1)`, 1, /takes no value/],
    ['empty cluster list', `A *(cluster=)`, 1, /cluster= needs a list/],
    ['relative cluster subtree', `A *(cluster=etc)`, 1, /must start with '\/'/],
    ['dot-dot cluster subtree', `A *(cluster=/etc/../x)`, 1, /must not contain/],
    ['sec other than sys', `A *(sec=krb5)`, 1, /only sec=sys/],
    ['conflicting fsid', `A h1(fsid=1) \\\n h2(fsid=2)`, 2, /conflicting fsid/],
    ['duplicate path', `A *\n\nA/ 10.0.0.1`, 3, /already exported at f:1/],
    ['duplicate explicit fsid', `A *(fsid=5)\nB *(fsid=5)`, 2, /fsid 5 .* already used/],
  ];
  for (const [name, text, line, re] of cases) {
    it(name, () => {
      // One pass over whole tokens: the substituted temp paths may themselves contain 'A' or 'B'.
      const t = text.replace(/\b(PLAIN|A|B)\b/g, (tok) => (tok === 'PLAIN' ? file : tok === 'A' ? a : b));
      const err = configError(() => parseExports(t, 'f'));
      expect(err.file).toBe('f');
      expect(err.line).toBe(line);
      expect(err.message.startsWith(`f:${line}: `)).toBe(true);
      expect(err.message).toMatch(re);
    });
  }

  it('loadExportsFile reads a file and reports its name', async () => {
    const p = path.join(root, 'exports');
    writeFileSync(p, `${a} 10.0.0.0/8(rw)\n${b} *(nope)\n`);
    await expect(loadExportsFile(p)).rejects.toThrow(`${p}:2: unknown option 'nope'`);
    writeFileSync(p, `${a} 10.0.0.0/8(rw)\n`);
    const es = await loadExportsFile(p);
    expect(es[0].path).toBe(a);
    await expect(loadExportsFile(path.join(root, 'missing'))).rejects.toThrow(/cannot read exports file: ENOENT/);
  });
});

describe('quickExport', () => {
  it('exports the directory to loopback with rw,no_root_squash,insecure,cluster', () => {
    const e = quickExport(a + '/');
    expect(e.path).toBe(a);
    expect(e.rules.map((r) => r.pattern)).toEqual(['127.0.0.0/8', '::1']);
    expect(e.rules[0].options).toEqual({
      ...DEFAULT_EXPORT_OPTIONS,
      ro: false,
      rootSquash: false,
      secure: false,
      cluster: true,
    });
    expect(e.fsid).toBe(fsidForPath(a));
  });
  it('refuses a missing directory with a clear error', () => {
    expect(() => quickExport(path.join(root, 'nope'))).toThrow(ConfigError);
    expect(() => quickExport(path.join(root, 'nope'))).toThrow(/does not exist/);
  });
  it('matches loopback clients only', async () => {
    const t = new ExportTable([quickExport(a)], { resolver: new FakeResolver({}) });
    const e = t.entries[0];
    expect(await t.clientOptions(e, '127.0.0.1')).not.toBeNull();
    expect(await t.clientOptions(e, '127.3.2.1')).not.toBeNull();
    expect(await t.clientOptions(e, '::1')).not.toBeNull();
    expect(await t.clientOptions(e, '::ffff:127.0.0.5')).not.toBeNull();
    expect(await t.clientOptions(e, '10.0.0.1')).toBeNull();
    expect(await t.clientOptions(e, '::2')).toBeNull();
  });
});

describe('client patterns', () => {
  it('parses CIDR forms', () => {
    expect(parseClientPattern('10.0.0.0/24')).toEqual({ kind: 'ipv4', net: 0x0a000000, mask: 0xffffff00 });
    expect(parseClientPattern('10.0.0.77/255.255.255.0')).toEqual({ kind: 'ipv4', net: 0x0a000000, mask: 0xffffff00 });
    expect(parseClientPattern('0.0.0.0/0')).toEqual({ kind: 'ipv4', net: 0, mask: 0 });
    expect(parseClientPattern('::ffff:10.0.0.0/104')).toEqual({ kind: 'ipv4', net: 0x0a000000, mask: 0xff000000 });
    expect(parseClientPattern('fd00::/64')).toEqual({ kind: 'ipv6', net: [0xfd000000, 0, 0, 0], mask: [0xffffffff, 0xffffffff, 0, 0] });
    expect(parseClientPattern('NODE1.Cluster.')).toMatchObject({ kind: 'host', exact: 'node1.cluster', matchShort: false });
  });
});

describe('ExportTable.clientOptions', () => {
  let entries: ExportEntry[];
  let table: ExportTable;
  let resolver: FakeResolver;

  beforeAll(() => {
    entries = parseExports(
      [
        `${a} 10.0.0.7(rw,no_root_squash) 10.0.0.0/24(rw) node*.cluster(ro,cluster) fd00::/64(rw,cluster) 192.168.0.0/255.255.0.0(ro) *(ro,all_squash)`,
        `${b} 10.0.0.0/8(rw) web?.example.org(rw) db1(rw,cluster_admin) 2001:db8::5(rw,insecure)`,
      ].join('\n'),
      'f',
    );
    resolver = new FakeResolver({
      '172.16.0.3': 'node3.cluster',
      '172.16.0.4': 'web1.example.org.',
      '172.16.0.5': 'web12.example.org',
      '172.16.0.6': 'DB1.example.org',
      '10.0.0.7': 'node7.cluster',
      'fd00::9': 'node9.cluster',
    });
    table = new ExportTable(entries, { resolver });
  });

  it('finds exports by exact path, with or without trailing slash', () => {
    expect(table.find(a)).toBe(entries[0]);
    expect(table.find(a + '/')).toBe(entries[0]);
    expect(table.find(a + '//')).toBe(entries[0]);
    expect(table.find(path.dirname(a))).toBeUndefined();
    expect(table.find(a + '/sub')).toBeUndefined();
    expect(table.find('relative')).toBeUndefined();
    expect(table.byFsid(entries[1].fsid)).toBe(entries[1]);
  });

  it('uses the first matching pattern in the order written', async () => {
    const e = entries[0];
    // 10.0.0.7 is also in 10.0.0.0/24 and has a node* name, but its own line comes first
    expect(await table.clientOptions(e, '10.0.0.7')).toMatchObject({ ro: false, rootSquash: false });
    expect(await table.clientOptions(e, '10.0.0.8')).toMatchObject({ ro: false, rootSquash: true, cluster: false });
    expect(await table.clientOptions(e, '10.0.1.8')).toMatchObject({ ro: true, allSquash: true });
    expect(await table.clientOptions(e, '172.16.0.3')).toMatchObject({ ro: true, cluster: true, allSquash: false });
    expect(await table.clientOptions(e, '192.168.44.1')).toMatchObject({ ro: true, allSquash: false, cluster: false });
  });

  it('matches IPv4 CIDR boundaries and IPv4-mapped IPv6 addresses', async () => {
    const e = entries[1];
    expect(await table.clientOptions(e, '10.255.255.255')).not.toBeNull();
    expect(await table.clientOptions(e, '10.0.0.0')).not.toBeNull();
    expect(await table.clientOptions(e, '11.0.0.0')).toBeNull();
    expect(await table.clientOptions(e, '9.255.255.255')).toBeNull();
    expect(await table.clientOptions(e, '::ffff:10.1.2.3')).not.toBeNull();
    expect(await table.clientOptions(e, '::ffff:11.1.2.3')).toBeNull();
  });

  it('matches IPv6 networks and addresses', async () => {
    const e0 = entries[0];
    expect(await table.clientOptions(e0, 'fd00::1')).toMatchObject({ ro: false, cluster: true });
    expect(await table.clientOptions(e0, 'fd00:0:0:0:ffff:ffff:ffff:ffff')).toMatchObject({ ro: false });
    expect(await table.clientOptions(e0, 'fd00:0:0:1::1')).toMatchObject({ ro: true, allSquash: true }); // falls to *
    expect(await table.clientOptions(e0, 'fe80::1%eth0')).toMatchObject({ allSquash: true });
    const e1 = entries[1];
    expect(await table.clientOptions(e1, '2001:db8::5')).toMatchObject({ secure: false });
    expect(await table.clientOptions(e1, '2001:0db8:0000::0005')).toMatchObject({ secure: false });
    expect(await table.clientOptions(e1, '2001:db8::6')).toBeNull();
  });

  it('matches host names with wildcards, case-insensitively, and short names', async () => {
    const e1 = entries[1];
    expect(await table.clientOptions(e1, '172.16.0.4')).toMatchObject({ ro: false }); // web1.example.org.
    expect(await table.clientOptions(e1, '172.16.0.5')).toBeNull(); // web12: ? is one char
    expect(await table.clientOptions(e1, '172.16.0.6')).toMatchObject({ clusterAdmin: true }); // db1 = short name of DB1.example.org
    expect(await table.clientOptions(e1, '172.16.0.99')).toBeNull(); // no name
    expect(await table.clientOptions(entries[0], 'fd00::9')).toMatchObject({ cluster: true }); // address rule before host rule
  });

  it('answers synchronously for address-only decisions and says when it needs a name', async () => {
    const noCache = new FakeResolver({ '172.16.0.3': 'node3.cluster' }, false);
    const t = new ExportTable(entries, { resolver: noCache });
    const e = entries[0];
    expect(t.clientOptionsSync(e, '10.0.0.8')).toMatchObject({ ro: false });
    expect(t.clientOptionsSync(e, '10.0.0.8')).toBe(t.clientOptionsSync(e, '10.0.0.8'));
    expect(t.clientOptionsSync(e, '172.16.0.3')).toBeUndefined(); // host rule before a match
    expect(await t.clientOptions(e, '172.16.0.3')).toMatchObject({ cluster: true });
    expect(noCache.calls).toBe(1);
    // with a resolver cache the sync path answers host rules too
    expect(table.clientOptionsSync(e, '172.16.0.3')).toMatchObject({ cluster: true });
    expect(table.clientOptionsSync(e, '8.8.8.8')).toMatchObject({ allSquash: true });
  });

  it('treats a rejecting resolver as no name', async () => {
    const t = new ExportTable(entries, {
      resolver: { reverse: () => Promise.reject(new Error('boom')) },
    });
    expect(await t.clientOptions(entries[1], '172.16.0.4')).toBeNull();
    const t2 = new ExportTable(entries, {
      resolver: {
        reverse: () => {
          throw new Error('sync boom');
        },
      },
    });
    expect(await t2.clientOptions(entries[1], '172.16.0.4')).toBeNull();
  });

  it('does not hang on a resolver that never answers: host patterns just do not match', async () => {
    const t = new ExportTable(entries, {
      resolver: { reverse: () => new Promise<string | null>(() => {}) },
      hostLookupTimeoutMs: 50,
    });
    const started = performance.now();
    expect(await t.clientOptions(entries[1], '172.16.0.4')).toBeNull();
    // an address rule after the host rule still matches
    expect(await t.clientOptions(entries[1], '2001:db8::5')).toMatchObject({ secure: false });
    expect(await t.clientOptions(entries[0], '172.16.0.3')).toMatchObject({ allSquash: true }); // falls to *
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe('DnsHostNameResolver', () => {
  it('times out a slow reverse look-up, caches the miss, and takes a late answer', async () => {
    let release: (names: string[]) => void = () => {};
    let calls = 0;
    const r = new DnsHostNameResolver({
      timeoutMs: 30,
      verifyForward: false,
      reverseFn: () => {
        calls++;
        return new Promise<string[]>((res) => (release = res));
      },
    });
    const started = performance.now();
    expect(await r.reverse('10.0.0.1')).toBeNull();
    expect(performance.now() - started).toBeLessThan(500);
    expect(r.cached('10.0.0.1')).toBeNull();
    expect(await r.reverse('10.0.0.1')).toBeNull(); // cached miss: no second query, no wait
    expect(calls).toBe(1);
    release(['Late.Example.']);
    await new Promise((res) => setTimeout(res, 5));
    expect(r.cached('10.0.0.1')).toBe('late.example');
  });

  it('coalesces concurrent look-ups and caches answers until the TTL passes', async () => {
    let now = 1000;
    let calls = 0;
    const r = new DnsHostNameResolver({
      ttlMs: 100,
      verifyForward: false,
      now: () => now,
      reverseFn: async () => {
        calls++;
        return ['n1.cluster'];
      },
    });
    const [x, y] = await Promise.all([r.reverse('10.0.0.2'), r.reverse('10.0.0.2')]);
    expect([x, y]).toEqual(['n1.cluster', 'n1.cluster']);
    expect(calls).toBe(1);
    expect(r.cached('10.0.0.2')).toBe('n1.cluster');
    now += 101;
    expect(r.cached('10.0.0.2')).toBeUndefined();
    await r.reverse('10.0.0.2');
    expect(calls).toBe(2);
  });

  it('accepts a PTR name only when it resolves back to the address', async () => {
    const r = new DnsHostNameResolver({
      reverseFn: async (addr) => (addr === '10.0.0.3' ? ['liar.example', 'n3.cluster'] : ['n4.cluster']),
      forwardFn: async (name) => (name === 'n3.cluster' ? ['10.0.0.3'] : ['10.9.9.9']),
    });
    expect(await r.reverse('10.0.0.3')).toBe('n3.cluster');
    expect(await r.reverse('10.0.0.4')).toBeNull();
  });

  it('treats DNS errors as no name, and loopback as localhost without asking', async () => {
    let calls = 0;
    const r = new DnsHostNameResolver({
      reverseFn: async () => {
        calls++;
        throw Object.assign(new Error('queryPtr ENOTFOUND'), { code: 'ENOTFOUND' });
      },
    });
    expect(await r.reverse('10.0.0.5')).toBeNull();
    expect(await r.reverse('127.0.0.1')).toBe('localhost');
    expect(await r.reverse('::1')).toBe('localhost');
    expect(calls).toBe(1);
  });

  it('bounds its cache', async () => {
    const r = new DnsHostNameResolver({ maxEntries: 2, verifyForward: false, reverseFn: async (a) => [`h-${a}`] });
    await r.reverse('10.0.0.1');
    await r.reverse('10.0.0.2');
    await r.reverse('10.0.0.3');
    expect(r.cached('10.0.0.1')).toBeUndefined();
    expect(r.cached('10.0.0.3')).toBe('h-10.0.0.3');
  });
});
