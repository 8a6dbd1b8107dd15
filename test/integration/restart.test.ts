/**
 * File handles survive a server restart: a clean one, a kill -9 of the real process, and one
 * where the state directory was lost (the handles are then found again by walking the export).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MountClient } from '../../src/client/mount-client.js';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { NfsStat } from '../../src/nfs/constants.js';
import { mountSession, quickExport, startServer } from '../helpers/inproc-server.js';
import { ServerProcess } from '../helpers/server-process.js';

let work: string;
let root: string;
const PATHS = ['etc/hostname', 'usr/lib/deep/libx.so', 'usr/lib/deep', 'usr/bin/sh', 'var'];

interface Taken {
  rel: string;
  fh: Buffer;
  fileid: number;
}

async function takeHandles(nfs: Nfs3Client, rootFh: Buffer): Promise<Taken[]> {
  const out: Taken[] = [];
  for (const rel of PATHS) {
    const r = await nfs.lookupPath(rootFh, rel);
    expect(r.status, rel).toBe(NfsStat.OK);
    out.push({ rel, fh: r.fh!, fileid: r.objAttr!.fileid });
  }
  return out;
}

async function expectHandlesWork(nfs: Nfs3Client, taken: Taken[]): Promise<void> {
  for (const t of taken) {
    const r = await nfs.getattr(t.fh);
    expect(r.status, t.rel).toBe(NfsStat.OK);
    expect(r.attr!.fileid, t.rel).toBe(t.fileid);
  }
  const lib = taken.find((t) => t.rel === 'usr/lib/deep/libx.so')!;
  const read = await nfs.read(lib.fh, 0, 100);
  expect(read.data.toString()).toBe('ELF pretend\n');
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-restart-'));
  root = path.join(work, 'root');
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(root, 'usr', 'lib', 'deep'), { recursive: true });
  fs.mkdirSync(path.join(root, 'usr', 'bin'), { recursive: true });
  fs.mkdirSync(path.join(root, 'var'), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc', 'hostname'), 'node\n');
  fs.writeFileSync(path.join(root, 'usr', 'lib', 'deep', 'libx.so'), 'ELF pretend\n');
  fs.symlinkSync('busybox', path.join(root, 'usr', 'bin', 'sh'));
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('handles across restarts', () => {
  it('a clean restart with the same state directory keeps every handle and the root handle', async () => {
    const state = path.join(work, 'state-clean');
    const first = await startServer([quickExport(root)], state);
    const s1 = await mountSession(first, root);
    const taken = await takeHandles(s1.nfs, s1.root);
    await s1.close();
    await first.stop();

    const second = await startServer([quickExport(root)], state);
    try {
      const s2 = await mountSession(second, root);
      expect(s2.root.equals(s1.root)).toBe(true);
      await expectHandlesWork(s2.nfs, taken);
      await s2.close();
    } finally {
      await second.stop();
    }
  });

  it('after kill -9 of the server process the handles still work', async () => {
    const state = path.join(work, 'state-kill');
    const port = 21000 + Math.floor(Math.random() * 20000);
    const args = [root, '--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap', '--state-dir', state];
    const proc = await ServerProcess.startOnHost(args);
    let taken: Taken[];
    let rootFh: Buffer;
    try {
      const mrpc = await RpcClient.connect({ host: '127.0.0.1', port: port + 1 });
      const rpc = await RpcClient.connect({ host: '127.0.0.1', port });
      rootFh = (await new MountClient(mrpc).mnt(root)).fh!;
      taken = await takeHandles(new Nfs3Client(rpc), rootFh);
      await Promise.all([rpc.close(), mrpc.close()]);
    } finally {
      await proc.kill9();
    }
    const again = await ServerProcess.startOnHost(args);
    try {
      const rpc = await RpcClient.connect({ host: '127.0.0.1', port });
      await expectHandlesWork(new Nfs3Client(rpc), taken);
      await rpc.close();
    } finally {
      expect(await again.stop()).toBe(0);
    }
  });

  it('with the state directory lost, the handles are found again by walking the export', async () => {
    const state = path.join(work, 'state-lost');
    const first = await startServer([quickExport(root)], state);
    const s1 = await mountSession(first, root);
    const taken = await takeHandles(s1.nfs, s1.root);
    await s1.close();
    await first.stop();
    fs.rmSync(state, { recursive: true });

    const second = await startServer([quickExport(root)], state);
    try {
      const s2 = await mountSession(second, root);
      await expectHandlesWork(s2.nfs, taken);
      await s2.close();
    } finally {
      await second.stop();
    }
  });
});
