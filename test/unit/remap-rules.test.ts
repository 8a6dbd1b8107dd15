/**
 * One test per rule of docs/cluster-tags.md (the tag grammar and the resolution order), plus the
 * "known defects of the anchors" (unfs3) pinned as fixed. Pure: tags.ts and resolve.ts only.
 */
import { describe, expect, it } from 'vitest';
import { buildTagIndex, clientView, resolveName, updateTagIndex, visibleBases, type ClientView } from '../../src/remap/resolve.js';
import { hasTag, masterOf, normalizeIp, parseEntryName, parseTag, taggedName, variantName } from '../../src/remap/tags.js';

const n7 = clientView('10.0.0.7', 'node7.cluster.example', 1000, 100);
const n8 = clientView('10.0.0.8', 'node8', 1001, 101);

function resolveIn(names: string[], name: string, c: ClientView) {
  return resolveName(buildTagIndex(names), name, c);
}

describe('tag grammar (cluster-tags.md "Tags")', () => {
  it('IP=a.b.c.d selects that client address', () => {
    expect(parseEntryName('hostname$$IP=10.0.0.7$$')).toMatchObject({ base: 'hostname', tag: { kind: 'ip', prefix: 32, exact: true } });
    expect(resolveIn(['hostname', 'hostname$$IP=10.0.0.7$$'], 'hostname', n7)).toMatchObject({ rule: 'ip', read: 'hostname$$IP=10.0.0.7$$' });
    expect(resolveIn(['hostname', 'hostname$$IP=10.0.0.7$$'], 'hostname', n8)).toMatchObject({ rule: 'master', read: 'hostname' });
  });

  it('IPv6 addresses are tags too, compared in canonical form', () => {
    expect(parseEntryName('x$$IP=fd00::7$$')?.tag).toMatchObject({ kind: 'ip', prefix: 128 });
    const c = clientView('fd00:0:0:0:0:0:0:7');
    expect(c.ip).toBe('fd00::7');
    expect(resolveIn(['x', 'x$$IP=FD00:0::7$$'], 'x', c)).toMatchObject({ rule: 'ip', read: 'x$$IP=FD00:0::7$$' });
    // IPv4-mapped IPv6 (a dual-stack socket) is the IPv4 client.
    expect(normalizeIp('::ffff:10.0.0.7')).toBe('10.0.0.7');
  });

  it('CLIENT=a.b.c.d is the same as IP=', () => {
    expect(resolveIn(['motd', 'motd$$CLIENT=10.0.0.7$$'], 'motd', n7)).toMatchObject({ rule: 'ip', read: 'motd$$CLIENT=10.0.0.7$$' });
    expect(resolveIn(['motd', 'motd$$CLIENT=10.0.0.7$$'], 'motd', n8).rule).toBe('master');
  });

  it('IP=a.b.c.d_n selects a network, any n in 0-32, longest prefix wins numerically', () => {
    for (let p = 0; p <= 32; p++) expect(parseTag(`IP=10.0.0.7_${p}`)).toMatchObject({ kind: 'ip', prefix: p });
    expect(parseTag('IP=10.0.0.7_33')).toBeNull();
    const names = ['f', 'f$$IP=10.0.0.0_8$$', 'f$$IP=10.0.0.0_24$$', 'f$$IP=10.0.0.0_30$$', 'f$$IP=10.0.0.0_9$$'];
    expect(resolveIn(names, 'f', n7)).toMatchObject({ rule: 'subnet', read: 'f$$IP=10.0.0.0_24$$' });
    expect(resolveIn(names, 'f', clientView('10.0.0.3'))).toMatchObject({ rule: 'subnet', read: 'f$$IP=10.0.0.0_30$$' });
    expect(resolveIn(names, 'f', clientView('10.200.0.1'))).toMatchObject({ rule: 'subnet', read: 'f$$IP=10.0.0.0_8$$' });
    expect(resolveIn(names, 'f', clientView('11.0.0.1'))).toMatchObject({ rule: 'master', read: 'f' });
    expect(resolveIn(['f$$IP=0.0.0.0_0$$'], 'f', clientView('192.0.2.1'))).toMatchObject({ rule: 'subnet' });
  });

  it('IPv6 subnets take any prefix 0-128', () => {
    expect(parseTag('IP=fd00::_129')).toBeNull();
    const names = ['g$$IP=fd00::_16$$', 'g$$IP=fd00:1::_32$$', 'g$$IP=fd00:1:2:3::_63$$'];
    expect(resolveIn(names, 'g', clientView('fd00:1:2:3::9')).read).toBe('g$$IP=fd00:1:2:3::_63$$');
    expect(resolveIn(names, 'g', clientView('fd00:1:2:4::9')).read).toBe('g$$IP=fd00:1::_32$$');
    expect(resolveIn(names, 'g', clientView('fd00:2::1')).read).toBe('g$$IP=fd00::_16$$');
    expect(resolveIn(names, 'g', clientView('10.0.0.7')).read).toBeNull();
  });

  it('HOST=node7 selects the client whose short host name is node7', () => {
    expect(resolveIn(['h', 'h$$HOST=node7$$'], 'h', n7)).toMatchObject({ rule: 'host', read: 'h$$HOST=node7$$' });
    expect(resolveIn(['h', 'h$$HOST=NODE7$$'], 'h', n7).rule).toBe('host');
    expect(resolveIn(['h', 'h$$HOST=node7$$'], 'h', n8).rule).toBe('master');
  });

  it('HOST=rack1-* selects host names starting with rack1-, longest prefix wins', () => {
    const names = ['p', 'p$$HOST=rack1-*$$', 'p$$HOST=rack1-n1*$$', 'p$$HOST=r*$$'];
    expect(resolveIn(names, 'p', clientView('10.1.1.1', 'rack1-n17')).read).toBe('p$$HOST=rack1-n1*$$');
    expect(resolveIn(names, 'p', clientView('10.1.1.1', 'rack1-n27')).read).toBe('p$$HOST=rack1-*$$');
    expect(resolveIn(names, 'p', clientView('10.1.1.1', 'rack2-n1')).read).toBe('p$$HOST=r*$$');
    expect(resolveIn(names, 'p', clientView('10.1.1.1', 'other'))).toMatchObject({ rule: 'master', read: 'p' });
  });

  it('UID=n and GID=n select by the call\'s AUTH_SYS ids', () => {
    const names = ['u', 'u$$UID=1000$$', 'u$$GID=101$$'];
    expect(resolveIn(names, 'u', n7)).toMatchObject({ rule: 'uid', read: 'u$$UID=1000$$' });
    expect(resolveIn(names, 'u', n8)).toMatchObject({ rule: 'gid', read: 'u$$GID=101$$' });
    expect(resolveIn(names, 'u', clientView('10.0.0.9', null, 5, 5)).rule).toBe('master');
  });

  it('CLIENT selects any client', () => {
    expect(resolveIn(['c', 'c$$CLIENT$$'], 'c', n7)).toMatchObject({ rule: 'client', read: 'c$$CLIENT$$' });
    expect(resolveIn(['c$$CLIENT$$'], 'c', n8)).toMatchObject({ rule: 'client', read: 'c$$CLIENT$$' });
  });

  it('name$$$$ is the master itself, whatever variants exist', () => {
    expect(masterOf('hostname$$$$')).toBe('hostname');
    expect(resolveIn(['hostname', 'hostname$$IP=10.0.0.7$$'], 'hostname$$$$', n7)).toMatchObject({ rule: 'master-explicit', read: 'hostname' });
    expect(resolveIn(['hostname$$IP=10.0.0.7$$'], 'hostname$$$$', n7).read).toBeNull();
  });

  it('CREATE=IP/CLIENT names and markers decide what a create makes, only when nothing was found', () => {
    expect(resolveIn(['$$CREATE=IP$$'], 'messages', n7)).toMatchObject({ rule: 'create', read: null, create: 'messages$$IP=10.0.0.7$$' });
    expect(resolveIn(['$$CREATE=CLIENT$$'], 'messages', n7)).toMatchObject({ rule: 'create', create: 'messages$$CLIENT$$' });
    expect(resolveIn(['messages$$CREATE=IP$$'], 'messages', n7).create).toBe('messages$$IP=10.0.0.7$$');
    // The name-level marker applies to its name only.
    expect(resolveIn(['messages$$CREATE=IP$$'], 'other', n7)).toMatchObject({ rule: 'none', create: 'other' });
    // Found something: the create-type procedure acts on it (the master here).
    expect(resolveIn(['$$CREATE=IP$$', 'messages'], 'messages', n7)).toMatchObject({ rule: 'master', read: 'messages' });
    // Name-level beats directory marker.
    expect(resolveIn(['$$CREATE=IP$$', 'm$$CREATE=CLIENT$$'], 'm', n7).create).toBe('m$$CLIENT$$');
  });

  it('ALWAYS: access and create go to the client\'s variant, even when it does not exist yet', () => {
    expect(resolveIn(['$$ALWAYS=IP$$', 'run'], 'run', n7)).toMatchObject({ rule: 'always', read: null, create: 'run$$IP=10.0.0.7$$' });
    expect(resolveIn(['$$ALWAYS=IP$$', 'run', 'run$$IP=10.0.0.7$$'], 'run', n7)).toMatchObject({ rule: 'ip', read: 'run$$IP=10.0.0.7$$' });
    expect(resolveIn(['run$$ALWAYS=CLIENT$$', 'run'], 'run', n7)).toMatchObject({ rule: 'always', create: 'run$$CLIENT$$' });
  });

  it('COW: the master for reading, the client\'s variant for changing', () => {
    expect(resolveIn(['$$COW=IP$$', 'log'], 'log', n7)).toMatchObject({ rule: 'cow', read: 'log', cow: 'log$$IP=10.0.0.7$$' });
    expect(resolveIn(['log$$COW=IP$$', 'log'], 'log', n7)).toMatchObject({ rule: 'cow', read: 'log', cow: 'log$$IP=10.0.0.7$$' });
    // After the copy-up the client's variant is found by rule 2; others still see the master.
    const after = ['$$COW=IP$$', 'log', 'log$$IP=10.0.0.7$$'];
    expect(resolveIn(after, 'log', n7)).toMatchObject({ rule: 'ip', read: 'log$$IP=10.0.0.7$$' });
    expect(resolveIn(after, 'log', n8)).toMatchObject({ rule: 'cow', read: 'log', cow: 'log$$IP=10.0.0.8$$' });
    // No master: a create goes to the variant.
    expect(resolveIn(['$$COW=IP$$'], 'new', n7)).toMatchObject({ rule: 'cow', read: null, create: 'new$$IP=10.0.0.7$$' });
  });

  it('the variant formatter and the raw-name predicate agree with the parser', () => {
    expect(variantName('messages', 'ip', '10.0.0.7')).toBe('messages$$IP=10.0.0.7$$');
    expect(variantName('messages', 'client', '10.0.0.7')).toBe('messages$$CLIENT$$');
    for (const raw of ['a$$IP=10.0.0.7$$', 'a$$IP=fd00::_64$$', 'a$$HOST=x*$$', 'a$$UID=0$$', 'a$$CLIENT$$', 'a$$$$', '$$COW=IP$$', 'a$$ALWAYS=CLIENT$$']) {
      expect(hasTag(raw), raw).toBe(true);
      const p = parseEntryName(raw)!;
      expect(taggedName(p.base, p.tag)).toBe(raw.replace('fd00::_64', 'fd00::_64'));
    }
    for (const plain of ['a', 'a$$', 'price$$5', 'a$$BOGUS=1$$', 'a$$IP=10.0.0.300$$', 'a$$UID=x$$', '$$$$']) expect(hasTag(plain), plain).toBe(false);
  });
});

describe('resolution order (cluster-tags.md "Resolution", steps 1-10)', () => {
  // Every kind of variant present at once; removing the winner each time must give the next step.
  const all = [
    'f',
    'f$$IP=10.0.0.7$$',
    'f$$HOST=node7$$',
    'f$$IP=10.0.0.0_24$$',
    'f$$HOST=node*$$',
    'f$$UID=1000$$',
    'f$$GID=100$$',
    'f$$CLIENT$$',
  ];
  it('takes the first that exists, and after a variant is removed the next one shows again', () => {
    const expected = ['ip', 'host', 'subnet', 'host-prefix', 'uid', 'gid', 'client', 'master'];
    let names = [...all];
    for (const rule of expected) {
      const r = resolveIn(names, 'f', n7);
      expect(r.rule).toBe(rule);
      names = names.filter((x) => x !== r.read);
    }
    expect(resolveIn(names, 'f', n7)).toMatchObject({ rule: 'none', read: null, create: 'f' });
  });

  it('explicit variants (steps 2-7) win over ALWAYS (8), which wins over COW (9), which wins over the master (10)', () => {
    expect(resolveIn(['$$ALWAYS=IP$$', '$$COW=IP$$', 'f', 'f$$CLIENT$$'], 'f', n7).rule).toBe('client');
    expect(resolveIn(['$$ALWAYS=IP$$', '$$COW=IP$$', 'f'], 'f', n7).rule).toBe('always');
    expect(resolveIn(['$$COW=IP$$', 'f'], 'f', n7).rule).toBe('cow');
  });

  it('no host name (reverse DNS failed) means HOST tags do not match, and nothing crashes', () => {
    const noHost = clientView('10.0.0.7', null);
    expect(resolveIn(['f', 'f$$HOST=node7$$', 'f$$HOST=*$$'], 'f', noHost)).toMatchObject({ rule: 'master', read: 'f' });
  });
});

describe('listing view (cluster-tags.md "What a client sees")', () => {
  const names = ['.', '..', 'hostname', 'hostname$$IP=10.0.0.7$$', 'only8$$IP=10.0.0.8$$', 'plain', '$$CREATE=IP$$', 'x$$CLIENT$$'];
  it('lists each base once as this client resolves it; markers and others\' variants are not listed', () => {
    const v7 = visibleBases(buildTagIndex(names), n7);
    expect(v7.map((e) => [e.base, e.entry]).sort()).toEqual([
      ['hostname', 'hostname$$IP=10.0.0.7$$'],
      ['plain', 'plain'],
      ['x', 'x$$CLIENT$$'],
    ]);
    const v8 = visibleBases(buildTagIndex(names), n8);
    expect(v8.map((e) => [e.base, e.entry]).sort()).toEqual([
      ['hostname', 'hostname'],
      ['only8', 'only8$$IP=10.0.0.8$$'],
      ['plain', 'plain'],
      ['x', 'x$$CLIENT$$'],
    ]);
  });

  it('bases outside the remapped subtrees are listed raw', () => {
    const v = visibleBases(buildTagIndex(['etc', 'etc$$IP=10.0.0.8$$', 'etcfoo', 'etcfoo$$IP=10.0.0.7$$']), n7, (b) => b === 'etc');
    expect(v.map((e) => e.base).sort()).toEqual(['etc', 'etcfoo', 'etcfoo$$IP=10.0.0.7$$']);
  });
});

describe('known defects of the anchors, pinned as fixed', () => {
  it('HOST is matched with the base name: hosts does not match hosts.allow$$HOST=n1$$', () => {
    const names = ['hosts', 'hosts.allow', 'hosts.allow$$HOST=n1$$'];
    const c = clientView('10.0.0.1', 'n1');
    expect(resolveIn(names, 'hosts', c)).toMatchObject({ rule: 'master', read: 'hosts' });
    expect(resolveIn(names, 'hosts.allow', c)).toMatchObject({ rule: 'host', read: 'hosts.allow$$HOST=n1$$' });
  });

  it('subnets are compared numerically, not as strings: /24 beats /8', () => {
    // unfs3 compared "10.0.0.0_8" and "10.0.0.0_24" as strings and took /8.
    const names = ['f$$IP=10.0.0.0_8$$', 'f$$IP=10.0.0.0_24$$', 'f$$IP=10.0.0.0_16$$'];
    expect(resolveIn(names, 'f', n7).read).toBe('f$$IP=10.0.0.0_24$$');
    // and 10.0.0.1 is not "in" 10.0.0.10_32 by string prefix
    expect(resolveIn(['g$$IP=10.0.0.10_32$$'], 'g', clientView('10.0.0.1')).read).toBeNull();
  });

  it('any prefix length, not only /8 /16 /24', () => {
    expect(resolveIn(['f$$IP=10.0.0.4_30$$'], 'f', n7).read).toBe('f$$IP=10.0.0.4_30$$');
    expect(resolveIn(['f$$IP=10.0.0.4_30$$'], 'f', clientView('10.0.0.8')).read).toBeNull();
    expect(resolveIn(['f$$IP=10.0.0.0_13$$'], 'f', clientView('10.7.255.255')).read).toBe('f$$IP=10.0.0.0_13$$');
    expect(resolveIn(['f$$IP=10.0.0.0_13$$'], 'f', clientView('10.8.0.0')).read).toBeNull();
  });

  it('IPv6 clients are served (unfs3 was IPv4 only)', () => {
    expect(resolveIn(['f', 'f$$IP=::1$$'], 'f', clientView('::1')).rule).toBe('ip');
  });

  it('no NULL-host crash: a client without a host name resolves every tag kind safely', () => {
    const c: ClientView = { ...clientView('10.0.0.7'), host: null };
    const names = ['f$$HOST=a$$', 'f$$HOST=a*$$', 'f$$HOST=*$$', 'f$$UID=0$$'];
    expect(() => resolveIn(names, 'f', c)).not.toThrow();
    expect(resolveIn(names, 'f', c).rule).toBe('uid');
  });
});

describe('updateTagIndex (our own changes, without reading the directory)', () => {
  // Every kind of entry, in an order that is not sorted, with duplicates of one address.
  const pool = [
    'hostname', 'hostname$$IP=10.0.0.7$$', 'hostname$$CLIENT=10.0.0.7$$', 'hostname$$HOST=node8$$', 'hostname$$IP=10.0.0.0_8$$',
    'hostname$$IP=10.0.0.0_24$$', 'hostname$$HOST=node*$$', 'profile$$UID=1000$$', 'profile$$GID=101$$', 'profile', 'motd$$CLIENT$$',
    'spool$$COW=IP$$', 'spool', 'log$$CREATE=IP$$', '$$CREATE=IP$$', '$$COW=CLIENT$$', 'plain', 'other', 'x$$$$', 'new$$IP=10.0.0.8$$',
  ];
  const asked = ['hostname', 'profile', 'motd', 'spool', 'log', 'plain', 'other', 'new', 'none', 'x', 'hostname$$$$'];

  function sameAnswers(updated: ReturnType<typeof buildTagIndex>, names: Set<string>): void {
    const fresh = buildTagIndex(names);
    for (const c of [n7, n8, clientView('192.168.1.1', null, 1000, 5)]) {
      for (const q of asked) expect(resolveName(updated, q, c), `${q} after ${[...names].join(' ')}`).toEqual(resolveName(fresh, q, c));
      const key = (v: { base: string; entry: string }) => `${v.base}>${v.entry}`;
      expect(visibleBases(updated, c).map(key).sort()).toEqual(visibleBases(fresh, c).map(key).sort());
    }
  }

  it('answers as an index read afresh would, after every add and remove', () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const names = new Set<string>(pool.slice(0, 6));
    let index = buildTagIndex(names);
    for (let step = 0; step < 400; step++) {
      const name = pool[rnd(pool.length)];
      const present = !names.has(name);
      if (present) names.add(name);
      else names.delete(name);
      index = updateTagIndex(index, name, present)!; // only a lean index asks for a reread (null)
      sameAnswers(index, names);
    }
  });
});

describe('tag index size (cluster-tags.md "Cost")', () => {
  it('keeps a group only for names with variants: a directory of plain names costs a set of names, not an object each', () => {
    const plain = Array.from({ length: 1000 }, (_, i) => `file${i}`);
    const index = buildTagIndex([...plain, 'hostname', 'hostname$$IP=10.0.0.7$$', '$$COW=IP$$']);
    expect([...index.groups.keys()]).toEqual(['hostname']);
    expect(index.groups.get('hostname')!.names).toEqual(['hostname', 'hostname$$IP=10.0.0.7$$']);
    expect(index.masters!.size).toBe(1001);
    // Plain names still resolve and list as before: the directory's COW marker applies to them.
    const c = clientView('10.0.0.9', null, 0, 0);
    expect(resolveName(index, 'file5', c)).toMatchObject({ rule: 'cow', read: 'file5', cow: 'file5$$IP=10.0.0.9$$' });
    expect(visibleBases(index, c)).toHaveLength(1001);
    // A master removed and added back by our own change leaves no group behind.
    const updated = updateTagIndex(updateTagIndex(index, 'file5', false)!, 'file5', true)!;
    expect(updated.groups.has('file5')).toBe(false);
    expect(resolveName(updated, 'file5', c).read).toBe('file5');
  });

  it('a lean index of a directory without tags keeps no names, and resolves each name to itself', () => {
    const plain = Array.from({ length: 1000 }, (_, i) => `file${i}`);
    const index = buildTagIndex([...plain, 'price$$5'], true);
    expect(index.tagged).toBe(false);
    expect(index.masters).toBeNull();
    expect(index.groups.size).toBe(0);
    expect(resolveName(index, 'file5', n7)).toMatchObject({ rule: 'master', read: 'file5' });
    // Rule 1: the master, whether it exists is the file system's to say.
    expect(resolveName(index, 'file5$$$$', n7)).toMatchObject({ rule: 'master-explicit', read: 'file5' });
    // Plain names come and go without a reread; the first tag asks for one (null).
    expect(updateTagIndex(index, 'file1000', true)).toBe(index);
    expect(updateTagIndex(index, 'file5', false)).toBe(index);
    expect(updateTagIndex(index, 'file5$$IP=10.0.0.7$$', true)).toBeNull();
    expect(updateTagIndex(index, '$$COW=IP$$', true)).toBeNull();
    // A directory with a tag gets the whole index, lean or not.
    const tagged = buildTagIndex([...plain, 'file5$$IP=10.0.0.7$$'], true);
    expect(tagged.masters!.size).toBe(1000);
    expect(resolveName(tagged, 'file5', n7).read).toBe('file5$$IP=10.0.0.7$$');
  });
});
