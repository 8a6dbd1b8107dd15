/**
 * Client identity for HOST tags (cluster-tags.md, "Vocabulary"): host names from hosts and DHCP
 * leases files, else reverse DNS that never stalls a call and never crashes (unfs3's NULL-host
 * crash when reverse DNS failed).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClientIdentities, parseHostsText, parseHostsTextSliced } from '../../src/remap/identity.js';
import type { HostNameResolver } from '../../src/mount/exports.js';
import { buildTagIndex, resolveName } from '../../src/remap/resolve.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function tempFile(text: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-ident-'));
  dirs.push(d);
  const f = path.join(d, 'hosts');
  fs.writeFileSync(f, text);
  return f;
}

/** Lets pending promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

describe('hosts and leases files', () => {
  it('reads /etc/hosts syntax: first name, short, lower case; comments ignored', () => {
    const m = parseHostsText('# nodes\n10.0.0.7  Node7.Cluster.example node7\n10.0.0.8 n8 # eight\nfd00::9 n9\n\n');
    expect(Object.fromEntries(m)).toEqual({ '10.0.0.7': 'node7', '10.0.0.8': 'n8', 'fd00::9': 'n9' });
  });

  it('reads dnsmasq leases', () => {
    const m = parseHostsText('1700000000 52:54:00:12:34:56 10.0.0.21 rack1-n21 01:52:54:00:12:34:56\n1700000000 52:54:00:12:34:57 10.0.0.22 * *\n');
    expect(Object.fromEntries(m)).toEqual({ '10.0.0.21': 'rack1-n21' });
  });

  it('reads ISC dhcpd.leases, the later lease of an address winning', () => {
    const text = `lease 10.0.0.31 {\n  starts 4 2026/01/01 00:00:00;\n  client-hostname "old31";\n}\nlease 10.0.0.31 {\n  client-hostname "n31";\n}\nlease 10.0.0.32 {\n  hardware ethernet 52:54:00:00:00:32;\n}\n`;
    expect(Object.fromEntries(parseHostsText(text))).toEqual({ '10.0.0.31': 'n31' });
  });

  it('gives the client its host name from the file, without DNS, and picks up changes', async () => {
    const f = tempFile('10.0.0.7 node7\n');
    const ids = new ClientIdentities({ hostsFiles: [f], resolver: null, recheckMs: 0 });
    expect(ids.view('10.0.0.7', 5, 6)).toEqual({ ip: '10.0.0.7', addr: expect.anything(), host: 'node7', uid: 5, gid: 6 });
    expect(ids.view('::ffff:10.0.0.7', 0, 0).host).toBe('node7');
    expect(ids.view('10.0.0.8', 0, 0).host).toBeNull();
    fs.writeFileSync(f, '10.0.0.7 node7b\n10.0.0.8 node8\n');
    fs.utimesSync(f, new Date(), new Date(Date.now() + 5000));
    ids.view('10.0.0.7', 0, 0); // starts the (asynchronous) check
    // The check runs in the background (a call never waits for it): poll, bounded.
    for (let i = 0; i < 300 && ids.view('10.0.0.8', 0, 0).host === null; i++) await new Promise((r) => setTimeout(r, 10));
    expect(ids.view('10.0.0.8', 0, 0).host).toBe('node8');
    expect(ids.view('10.0.0.7', 0, 0).host).toBe('node7b');
  });

  it('reads files of many blank lines, CRLF lines, comments and mixed formats line by line', async () => {
    const blank = '\n'.repeat(40_000);
    const text = [
      blank,
      '# hosts part\r',
      '10.0.0.7 node7 # seven\r',
      '   \t  \r',
      'lease 10.0.0.31 {\r',
      '  # a comment inside a lease } is no brace\r',
      '  client-hostname "N31.cluster";\r',
      '}\r',
      'lease 10.0.0.32 { client-hostname "n32"; } lease 10.0.0.33 {',
      '  hardware ethernet 52:54:00:00:00:33;',
      '}',
      'lease not-an-ip { client-hostname "bogus"; }',
      blank,
      '1700000000 52:54:00:12:34:56 10.0.0.21 rack1-n21 *\r',
      '10.0.0.7 later-name',
      'lease 10.0.0.31 {',
      '  client-hostname "n31b";',
      '}',
      '   lease',
      'garbage line here',
      blank,
    ].join('\n');
    const want = { '10.0.0.7': 'node7', '10.0.0.31': 'n31b', '10.0.0.32': 'n32', '10.0.0.21': 'rack1-n21' };
    expect(Object.fromEntries(parseHostsText(text))).toEqual(want);
    expect(Object.fromEntries(await parseHostsTextSliced(text))).toEqual(want);
    expect(parseHostsText('\n'.repeat(100_000) + '   lease 10.0.0.9 {\n client-hostname "n9";').size).toBe(0);
  });

  it('reads a changed file again in slices: calls go on while a big file is parsed', async () => {
    const line = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255} host${i}\n`;
    const f = tempFile('10.0.0.7 node7\n');
    const ids = new ClientIdentities({ hostsFiles: [f], resolver: null, recheckMs: 0 });
    fs.writeFileSync(f, Array.from({ length: 100_000 }, (_, i) => line(i)).join(''));
    fs.utimesSync(f, new Date(), new Date(Date.now() + 5000));
    ids.view('10.0.0.7', 0, 0); // starts the check
    // Turns of the event loop in which a call was answered while the file was being read again.
    let turnsWhileLoading = 0;
    // Bounded by time, not turns: on a loaded machine the file's read alone can outlast 2,000 turns.
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && ids.view('10.1.134.159', 0, 0).host === null) {
      await new Promise((r) => setImmediate(r));
      turnsWhileLoading++;
    }
    expect(ids.view('10.1.134.159', 0, 0).host).toBe('host99999');
    expect(ids.view('10.0.0.7', 0, 0).host).toBe('host7');
    // 100,000 lines in slices of 4,096: the loop turned between them.
    expect(turnsWhileLoading).toBeGreaterThan(20);
  });

  it('a hosts file over the size bound is not read', () => {
    const f = tempFile('10.0.0.7 node7\n'.repeat(100));
    const ids = new ClientIdentities({ hostsFiles: [f], resolver: null, maxFileBytes: 1000 });
    expect(ids.view('10.0.0.7', 0, 0).host).toBeNull();
    const ok = new ClientIdentities({ hostsFiles: [f], resolver: null, maxFileBytes: 10_000 });
    expect(ok.view('10.0.0.7', 0, 0).host).toBe('node7');
  });

  it('a missing hosts file is a warning, not a crash', () => {
    const ids = new ClientIdentities({ hostsFiles: ['/nonexistent/clusternfs-hosts'], resolver: null });
    expect(ids.view('10.0.0.7', 0, 0).host).toBeNull();
  });
});

describe('reverse DNS never stalls a call and never crashes', () => {
  it('a DNS that never answers: the call goes on at once with no host name; HOST tags do not match', async () => {
    let asked = 0;
    const hanging: HostNameResolver = { reverse: () => (asked++, new Promise<string | null>(() => {})), cached: () => undefined };
    const ids = new ClientIdentities({ resolver: hanging });
    const c = ids.view('10.0.0.7', 0, 0);
    expect(c.host).toBeNull();
    await settle();
    expect(ids.view('10.0.0.7', 0, 0).host).toBeNull();
    await settle();
    // Asked once, not once per call.
    expect(asked).toBe(1);
    const idx = buildTagIndex(['f', 'f$$HOST=node7$$', 'f$$HOST=*$$']);
    expect(resolveName(idx, 'f', c)).toMatchObject({ rule: 'master', read: 'f' });
  });

  it('a DNS that fails (rejects or throws) leaves the client without a host name', async () => {
    const failing: HostNameResolver = { reverse: () => Promise.reject(new Error('SERVFAIL')) };
    const throwing: HostNameResolver = {
      reverse: () => {
        throw new Error('resolver broken');
      },
      cached: () => {
        throw new Error('cache broken');
      },
    };
    for (const resolver of [failing, throwing]) {
      const ids = new ClientIdentities({ resolver });
      expect(ids.view('10.0.0.7', 0, 0).host).toBeNull();
      await settle();
      expect(ids.view('10.0.0.7', 0, 0).host).toBeNull();
    }
  });

  it('an answer arriving later is used from then on (short name, lower case)', async () => {
    let answer!: (n: string | null) => void;
    const slow: HostNameResolver = { reverse: () => new Promise<string | null>((r) => (answer = r)) };
    const ids = new ClientIdentities({ resolver: slow });
    expect(ids.view('10.0.0.7', 0, 0).host).toBeNull();
    await settle();
    answer('Node7.Cluster.Example.');
    await settle();
    expect(ids.view('10.0.0.7', 0, 0).host).toBe('node7');
  });
});
