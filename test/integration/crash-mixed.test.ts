/**
 * kill -9 at a random moment of a mixed workload (WRITE FILE_SYNC/DATA_SYNC/UNSTABLE+COMMIT,
 * CREATE, MKDIR, RENAME, REMOVE, SETATTR), many times over, each followed by a restart on the same
 * state directory. The client keeps a model of everything the server acknowledged; after every
 * restart the model must hold, through the handles taken before the crash:
 *   - every handle of a file or directory that exists resolves, and LOOKUP of its name gives the
 *     same handle (the handle index survived, torn or not);
 *   - every write acknowledged as FILE_SYNC/DATA_SYNC, or UNSTABLE and then covered by a COMMIT
 *     with the same verifier, reads back (through NFS and on disk);
 *   - removed names are gone, renamed ones are under their new name, modes set are the modes.
 * The one call in flight when the server died may or may not have happened: what it touched is
 * dropped from the model.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MountClient } from '../../src/client/mount-client.js';
import { Nfs3Client } from '../../src/client/nfs3-client.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { NfsStat, StableHow } from '../../src/nfs/constants.js';
import { Rng } from '../../fuzz/rng.js';
import { ServerProcess } from '../helpers/server-process.js';

const ROUNDS = 12;
const CHUNK = 2048;

interface Node {
  kind: 'file' | 'dir';
  fh: Buffer;
  parent: Node | null;
  name: string;
  /** Mode acknowledged by SETATTR or CREATE/MKDIR; null once uncertain. */
  mode: number | null;
  /** Chunk index → fill byte, for writes that are durable by the protocol's promise. */
  durable: Map<number, number>;
  /** UNSTABLE writes not yet covered by a COMMIT. */
  unstable: Map<number, number>;
  nextChunk: number;
}

let work: string;
let root: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-crashmix-'));
  root = path.join(work, 'root');
  fs.mkdirSync(root);
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

function pathOf(n: Node): string {
  return n.parent === null ? root : path.join(pathOf(n.parent), n.name);
}

function fill(chunk: number, byte: number): Buffer {
  return Buffer.alloc(CHUNK, byte);
}

class Model {
  readonly top: Node;
  readonly nodes = new Set<Node>();
  private counter = 0;
  verifier: Buffer | null = null;

  constructor(rootFh: Buffer) {
    this.top = { kind: 'dir', fh: rootFh, parent: null, name: '', mode: null, durable: new Map(), unstable: new Map(), nextChunk: 0 };
  }

  fresh(prefix: string): string {
    return `${prefix}${this.counter++}`;
  }

  dirs(): Node[] {
    return [this.top, ...[...this.nodes].filter((n) => n.kind === 'dir')];
  }

  files(): Node[] {
    return [...this.nodes].filter((n) => n.kind === 'file');
  }

  /** Drops a node and everything under it from what we check. */
  forget(n: Node): void {
    this.nodes.delete(n);
    for (const m of [...this.nodes]) if (m.parent === n) this.forget(m);
  }
}

/** Runs random operations until the server dies under us (or the budget ends). */
async function workload(nfs: Nfs3Client, model: Model, rng: Rng, budget: number): Promise<number> {
  let done = 0;
  for (; done < budget; done++) {
    const files = model.files();
    const dirs = model.dirs();
    const op = files.length < 3 ? rng.below(2) : rng.below(9);
    // `undo` drops from the model what an unacknowledged call may or may not have changed.
    let undo: () => void = () => {};
    try {
      switch (op) {
        case 0: {
          const parent = rng.pick(dirs);
          const name = model.fresh('f');
          const mode = rng.pick([0o600, 0o644, 0o640]);
          const r = await nfs.create(parent.fh, name, { mode });
          expect(r.status).toBe(NfsStat.OK);
          model.nodes.add({ kind: 'file', fh: r.fh!, parent, name, mode, durable: new Map(), unstable: new Map(), nextChunk: 0 });
          break;
        }
        case 1: {
          if (dirs.length > 8) break;
          const parent = rng.pick(dirs);
          const name = model.fresh('d');
          const r = await nfs.mkdir(parent.fh, name, { mode: 0o755 });
          expect(r.status).toBe(NfsStat.OK);
          model.nodes.add({ kind: 'dir', fh: r.fh!, parent, name, mode: 0o755, durable: new Map(), unstable: new Map(), nextChunk: 0 });
          break;
        }
        case 2:
        case 3:
        case 4: {
          const f = rng.pick(files);
          const chunk = f.nextChunk++;
          const byte = 1 + rng.below(250);
          const stable = rng.pick([StableHow.FILE_SYNC, StableHow.DATA_SYNC, StableHow.UNSTABLE, StableHow.UNSTABLE]);
          const r = await nfs.write(f.fh, chunk * CHUNK, fill(chunk, byte), stable);
          expect(r.status).toBe(NfsStat.OK);
          if (r.committed !== StableHow.UNSTABLE) f.durable.set(chunk, byte);
          else {
            if (model.verifier !== null && !r.verf!.equals(model.verifier)) for (const n of model.files()) n.unstable.clear();
            model.verifier = r.verf;
            f.unstable.set(chunk, byte);
          }
          break;
        }
        case 5: {
          const f = rng.pick(files);
          if (f.unstable.size === 0) break;
          const r = await nfs.commit(f.fh);
          expect(r.status).toBe(NfsStat.OK);
          // Only writes answered with the verifier COMMIT gives back are covered by it.
          if (model.verifier !== null && r.verf!.equals(model.verifier)) for (const [c, b] of f.unstable) f.durable.set(c, b);
          f.unstable.clear();
          break;
        }
        case 6: {
          const n = rng.pick([...model.nodes]);
          const to = n.kind === 'dir' ? model.top : rng.pick(dirs);
          const name = model.fresh(n.kind === 'dir' ? 'D' : 'F');
          undo = () => model.forget(n);
          const r = await nfs.rename(n.parent!.fh, n.name, to.fh, name);
          expect(r.status).toBe(NfsStat.OK);
          n.parent = to;
          n.name = name;
          break;
        }
        case 7: {
          const f = rng.pick(files);
          undo = () => model.forget(f);
          const r = await nfs.remove(f.parent!.fh, f.name);
          expect(r.status).toBe(NfsStat.OK);
          model.forget(f);
          break;
        }
        case 8: {
          const n = rng.pick([...model.nodes]);
          const mode = n.kind === 'dir' ? rng.pick([0o755, 0o750, 0o700]) : rng.pick([0o600, 0o644, 0o664, 0o400]);
          undo = () => {
            n.mode = null;
          };
          const r = await nfs.setattr(n.fh, { mode });
          expect(r.status).toBe(NfsStat.OK);
          n.mode = mode;
          break;
        }
      }
    } catch (err) {
      // Assertion failures are real failures; anything else is the connection dying with the server.
      if ((err as Error).name === 'AssertionError') throw err;
      undo();
      break;
    }
  }
  return done;
}

/** The model holds after a restart: through NFS (old handles) and on disk. */
async function verify(nfs: Nfs3Client, model: Model): Promise<number> {
  let checkedChunks = 0;
  for (const n of model.nodes) {
    const where = `${n.kind} ${pathOf(n)}`;
    const g = await nfs.getattr(n.fh);
    expect(g.status, `old handle of ${where}`).toBe(NfsStat.OK);
    const l = await nfs.lookup(n.parent!.fh, n.name);
    expect(l.status, `lookup of ${where}`).toBe(NfsStat.OK);
    expect(l.fh!.equals(n.fh), `lookup of ${where} gives the same handle`).toBe(true);
    const st = fs.lstatSync(pathOf(n));
    expect(st.isDirectory(), where).toBe(n.kind === 'dir');
    if (n.mode !== null) {
      expect(g.attr!.mode & 0o7777, `mode of ${where}`).toBe(n.mode);
      expect(st.mode & 0o7777, `mode on disk of ${where}`).toBe(n.mode);
    }
    if (n.kind === 'file' && n.durable.size > 0) {
      const disk = fs.readFileSync(pathOf(n));
      for (const [chunk, byte] of n.durable) {
        expect(disk.subarray(chunk * CHUNK, (chunk + 1) * CHUNK).equals(fill(chunk, byte)), `${where} chunk ${chunk} on disk`).toBe(true);
        checkedChunks++;
      }
      const [chunk, byte] = [...n.durable][n.durable.size - 1];
      const r = await nfs.read(n.fh, chunk * CHUNK, CHUNK);
      expect(r.data.equals(fill(chunk, byte)), `${where} chunk ${chunk} via NFS`).toBe(true);
    }
  }
  return checkedChunks;
}

it(`the acknowledged state survives ${ROUNDS} kill -9s at random moments of a mixed workload`, async () => {
  const seed = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 0x7fffffff));
  const rng = new Rng(seed);
  const state = path.join(work, 'state');
  const port = 22000 + Math.floor(Math.random() * 20000);
  const args = [root, '--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap', '--state-dir', state];
  let model: Model | null = null;
  let ops = 0;
  let chunks = 0;
  for (let round = 0; round <= ROUNDS; round++) {
    const proc = await ServerProcess.startOnHost(args);
    const mrpc = await RpcClient.connect({ host: '127.0.0.1', port: port + 1, timeoutMs: 5000 });
    const rpc = await RpcClient.connect({ host: '127.0.0.1', port, timeoutMs: 5000 });
    try {
      const nfs = new Nfs3Client(rpc);
      const rootFh = (await new MountClient(mrpc).mnt(root)).fh!;
      model ??= new Model(rootFh);
      expect(rootFh.equals(model.top.fh)).toBe(true);
      // Clients holding handles continue after the restart: everything acknowledged is there.
      chunks += await verify(nfs, model);
      if (round === ROUNDS) {
        expect(await proc.stop()).toBe(0);
        break;
      }
      const killAfterMs = 30 + rng.below(400);
      const killer = new Promise<void>((resolve) => setTimeout(() => void proc.kill9().then(resolve), killAfterMs));
      ops += await workload(nfs, model, rng, 100_000);
      await killer;
    } catch (err) {
      await proc.stop();
      throw Object.assign(err as Error, { message: `seed ${seed}, round ${round}: ${(err as Error).message}` });
    } finally {
      await Promise.all([rpc.close(), mrpc.close()]);
    }
  }
  const m = model!;
  console.log(
    `crash (mixed): seed ${seed}, ${ROUNDS} kill -9 rounds, ${ops} acknowledged operations, ` +
      `${m.files().length} files and ${m.dirs().length - 1} directories held by handle, ${chunks} durable-chunk checks over all restarts`,
  );
  expect(ops).toBeGreaterThan(ROUNDS * 5);
  expect(m.nodes.size).toBeGreaterThan(3);
  expect(chunks).toBeGreaterThan(0);
}, 300_000);
