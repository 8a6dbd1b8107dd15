/**
 * kill -9 of the real server process in the middle of a write workload, several times: after a
 * restart, every write acknowledged as FILE_SYNC or DATA_SYNC, and every UNSTABLE write covered
 * by a successful COMMIT with the same verifier, is on disk; handles taken before the crash work.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MountClient } from '../../src/client/mount-client.js';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { NfsStat, StableHow } from '../../src/nfs/constants.js';
import { ServerProcess } from '../helpers/server-process.js';

const ROUNDS = 4;
const FILES = 4;
const CHUNK = 4096;

let work: string;
let root: string;

interface Acked {
  file: number;
  offset: number;
  fill: number;
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-crash-'));
  root = path.join(work, 'root');
  fs.mkdirSync(root);
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

function chunk(fill: number): Buffer {
  return Buffer.alloc(CHUNK, fill);
}

/** Writes until the connection dies or the budget runs out; returns what the server acknowledged. */
async function workload(nfs: Nfs3Client, handles: Buffer[], round: number, budget: number): Promise<Acked[]> {
  const acked: Acked[] = [];
  const pending: Acked[] = [];
  let verifier: Buffer | null = null;
  try {
    for (let i = 0; i < budget; i++) {
      const file = i % FILES;
      const offset = (round * budget + i) * CHUNK;
      const fill = (round * 31 + i) % 251 + 1;
      if (i % 3 === 0) {
        // Unstable: only durable once a COMMIT answers with the verifier the writes got.
        const r = await nfs.write(handles[file], offset, chunk(fill), StableHow.UNSTABLE);
        if (r.status !== NfsStat.OK) break;
        verifier ??= r.verf;
        if (!r.verf!.equals(verifier!)) pending.length = 0;
        pending.push({ file, offset, fill });
        if (pending.length >= 6) {
          const c = await nfs.commit(handles[file]);
          // COMMIT of one file: only that file's unstable writes are covered by it.
          if (c.status === NfsStat.OK && c.verf!.equals(verifier!)) {
            for (const p of pending.filter((x) => x.file === file)) acked.push(p);
            for (let k = pending.length - 1; k >= 0; k--) if (pending[k].file === file) pending.splice(k, 1);
          }
        }
      } else {
        const stable = i % 3 === 1 ? StableHow.FILE_SYNC : StableHow.DATA_SYNC;
        const r = await nfs.write(handles[file], offset, chunk(fill), stable);
        if (r.status !== NfsStat.OK) break;
        expect(r.committed).toBeGreaterThanOrEqual(stable);
        acked.push({ file, offset, fill });
      }
    }
  } catch {
    // The server was killed under us: what was acknowledged so far is what counts.
  }
  return acked;
}

it('nothing acknowledged as stable or committed is lost to kill -9, over several crashes', async () => {
  const state = path.join(work, 'state');
  const port = 22000 + Math.floor(Math.random() * 20000);
  const args = [root, '--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap', '--state-dir', state];
  const allAcked: Acked[] = [];
  let handles: Buffer[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const proc = await ServerProcess.startOnHost(args);
    const mrpc = await RpcClient.connect({ host: '127.0.0.1', port: port + 1, timeoutMs: 5000 });
    const rpc = await RpcClient.connect({ host: '127.0.0.1', port, timeoutMs: 5000 });
    const nfs = new Nfs3Client(rpc);
    const rootFh = (await new MountClient(mrpc).mnt(root)).fh!;
    if (round === 0) {
      for (let f = 0; f < FILES; f++) handles.push((await nfs.create(rootFh, `data-${f}`, { mode: 0o644 })).fh!);
    } else {
      // Handles taken before the crash still name the same files.
      for (let f = 0; f < FILES; f++) expect((await nfs.getattr(handles[f])).status).toBe(NfsStat.OK);
    }
    const killAfterMs = 50 + Math.floor(Math.random() * 250);
    const killer = new Promise<void>((resolve) => setTimeout(() => void proc.kill9().then(resolve), killAfterMs));
    const acked = await workload(nfs, handles, round, 5000);
    await killer;
    allAcked.push(...acked);
    await Promise.all([rpc.close(), mrpc.close()]);
  }
  // After the last crash: restart once more and check every acknowledged chunk, through NFS and on disk.
  const proc = await ServerProcess.startOnHost(args);
  try {
    const rpc = await RpcClient.connect({ host: '127.0.0.1', port });
    const nfs = new Nfs3Client(rpc);
    const files = handles.map((_, f) => fs.readFileSync(path.join(root, `data-${f}`)));
    for (const a of allAcked) {
      const local = files[a.file].subarray(a.offset, a.offset + CHUNK);
      expect(local.equals(chunk(a.fill)), `file ${a.file} offset ${a.offset}`).toBe(true);
    }
    const sample = allAcked.filter((_, i) => i % 25 === 0);
    for (const a of sample) {
      const r = await nfs.read(handles[a.file], a.offset, CHUNK);
      expect(r.data.equals(chunk(a.fill))).toBe(true);
    }
    await rpc.close();
    console.log(`crash test: ${ROUNDS} kill -9 rounds, ${allAcked.length} acknowledged writes verified`);
    expect(allAcked.length).toBeGreaterThan(ROUNDS * 10);
  } finally {
    expect(await proc.stop()).toBe(0);
  }
  handles = [];
});
