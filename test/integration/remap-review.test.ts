/**
 * Adversarial review of per-client remapping: a hostile or buggy node (127.0.0.21, .22 as source
 * addresses) tries to read or change another node's files or the shared COW masters through the
 * real protocol; each case pins a defect found in review (cluster-tags.md, "What a client sees",
 * "Copy-on-write").
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsStat } from '../../src/nfs/constants.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { fhOf, mountSession, parseExports, startServer, type Session } from '../helpers/inproc-server.js';
import { putFile } from '../helpers/tree.js';

let work: string;
let root: string;
let server: ClusterNfsServer;
let a: Session;
let b: Session;
let admin: Session;

const put = (rel: string, content: string) => putFile(root, rel, content);

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-remap-review-'));
  root = path.join(work, 'root');
  put('var/spool/$$COW=IP$$', '');
  put('var/spool/queue', 'shared master\n');
  put('var/big/$$COW=IP$$', '');
  put('var/big/data', 'M'.repeat(3 * 1024 * 1024));
  put('tmp/keep', '');
  put('etc/hostname', 'master\n');
  put('etc/hostname$$IP=127.0.0.22$$', 'twenty-two\n');
  const exports = parseExports(
    `${root} 127.0.0.1(rw,no_root_squash,insecure,cluster,cluster_admin) 127.0.0.0/8(rw,no_root_squash,insecure,cluster)\n`,
    'remap-review-test',
  );
  server = await startServer(exports, null);
  a = await mountSession(server, root, { localAddress: '127.0.0.21' });
  b = await mountSession(server, root, { localAddress: '127.0.0.22' });
  admin = await mountSession(server, root, { localAddress: '127.0.0.1' });
});

afterAll(async () => {
  await Promise.all([a, b, admin].filter(Boolean).map((s) => s.close()));
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('COW masters stay shared and unchanged', () => {
  it('LINK of a COW master links this node\'s copy: writes through the new name never reach the master', async () => {
    const master = await fhOf(a, 'var/spool/queue');
    const l = await a.nfs.link(master, await fhOf(a, 'tmp'), 'alias');
    expect(l.status).toBe(NfsStat.OK);
    expect((await a.nfs.write(await fhOf(a, 'tmp/alias'), 0, Buffer.from('node 21 '))).status).toBe(NfsStat.OK);
    expect(fs.readFileSync(path.join(root, 'var/spool/queue'), 'utf8')).toBe('shared master\n');
    expect((await b.nfs.readAll(await fhOf(b, 'var/spool/queue'))).data.toString()).toBe('shared master\n');
    // The link is this node's copy, so it sees its change under both names.
    expect((await a.nfs.readAll(await fhOf(a, 'var/spool/queue'))).data.toString()).toBe('node 21 aster\n');
    expect(fs.statSync(path.join(root, 'tmp/alias')).ino).toBe(fs.statSync(path.join(root, 'var/spool/queue$$IP=127.0.0.21$$')).ino);
  });

  /** Makes the store's next write wait at a gate (or fail): the copy-up's first chunk. */
  function holdNextWrite(fail: boolean): { reached: Promise<void>; release: () => void } {
    const store = server.stores[0];
    const real = store.write;
    let reached!: () => void;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const hit = new Promise<void>((r) => (reached = r));
    store.write = async function (this: typeof store, ...args: Parameters<typeof real>) {
      store.write = real;
      reached();
      await gate;
      if (fail) throw Object.assign(new Error('no space left (injected)'), { code: 'ENOSPC' });
      return real.apply(this, args);
    };
    return { reached: hit, release };
  }

  it('a copy-up is invisible until complete: a READ meanwhile still gets the master, not a partial copy', async () => {
    const h = await fhOf(a, 'var/big/data');
    const held = holdNextWrite(false);
    const writing = a.nfs.write(h, 0, Buffer.from('x'));
    await held.reached;
    const r = await a.nfs.read(h, 3 * 1024 * 1024 - 4, 4);
    held.release();
    const w = await writing;
    expect(r.status).toBe(NfsStat.OK);
    expect(r.data.toString()).toBe('MMMM');
    expect(w.status).toBe(NfsStat.OK);
    const copy = fs.readFileSync(path.join(root, 'var/big/data$$IP=127.0.0.21$$'), 'latin1');
    expect(copy.length).toBe(3 * 1024 * 1024);
    expect(copy.startsWith('xMM')).toBe(true);
  });

  it('a copy-up that fails leaves no half copy behind: the node still reads the whole master', async () => {
    const h = await fhOf(b, 'var/big/data');
    const held = holdNextWrite(true);
    const writing = b.nfs.write(h, 0, Buffer.from('y'));
    await held.reached;
    held.release();
    expect((await writing).status).not.toBe(NfsStat.OK);
    expect(fs.readdirSync(path.join(root, 'var/big')).sort()).toEqual(['$$COW=IP$$', 'data', 'data$$IP=127.0.0.21$$']);
    const r = await b.nfs.readAll(h);
    expect(r.data.length).toBe(3 * 1024 * 1024);
    expect(fs.readFileSync(path.join(root, 'var/big/data'), 'latin1')).toBe('M'.repeat(3 * 1024 * 1024));
  });
});

describe('rule 1: name$$$$ is the master', () => {
  it('also in a directory without any tag (a symlink target like ../tmp/keep$$$$ must not dangle)', async () => {
    const tmp = await fhOf(a, 'tmp');
    const r = await a.nfs.lookup(tmp, 'keep$$$$');
    expect(r.status).toBe(NfsStat.OK);
    expect(r.objAttr!.fileid).toBe(fs.statSync(path.join(root, 'tmp/keep')).ino);
    // Still not a name to create, remove or rename.
    expect((await a.nfs.create(tmp, 'new$$$$', { mode: 0o644 })).status).toBe(NfsStat.ACCES);
    expect((await a.nfs.remove(tmp, 'keep$$$$')).status).not.toBe(NfsStat.OK);
    expect(fs.existsSync(path.join(root, 'tmp/keep'))).toBe(true);
  });
});
