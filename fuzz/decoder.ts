/**
 * Coverage-guided fuzzing of the record decoder, the RPC header decoder and every procedure's
 * argument decoding, in-process and without a socket. Inputs are TCP byte streams: they go
 * through RecordDecoder into the real dispatcher (portmap, MOUNT and NFS programs over a scratch
 * export), and the same bytes minus the record mark as a UDP datagram.
 *
 * Coverage comes from V8's precise block coverage (node:inspector): an input that reaches a block
 * of our code no earlier input reached joins the corpus and is mutated further.
 *
 * A bug is: an exception escaping dispatch, an unhandled rejection, a reply that is not an RPC
 * reply, more replies than calls, or a call never answered nor dropped (which would stall a TCP
 * connection at its in-flight limit for good).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import path from 'node:path';
import { ExportTable, quickExport } from '../src/mount/exports.js';
import { MountProgram } from '../src/mount/program.js';
import { NfsProgram } from '../src/nfs/program.js';
import { RpcDispatcher, type ReplySink } from '../src/rpc/dispatch.js';
import { PortmapRegistry, createPortmapProgram } from '../src/rpc/portmap.js';
import { RecordDecoder } from '../src/rpc/record.js';
import { ReplyCache } from '../src/rpc/reply-cache.js';
import { XdrReader } from '../src/rpc/xdr.js';
import { ExportStore } from '../src/store/export-store.js';
import { everyCall, type BaseCall, type CallContext } from './calls.js';
import { frameForTcp, mutateMessage } from './mutate.js';
import { Rng } from './rng.js';

class CheckingSink implements ReplySink {
  readonly address = '127.0.0.1';
  readonly port = 800;
  readonly localAddress = '127.0.0.1';
  inFlight = 0;
  calls = 0;
  replies = 0;
  problem: string | null = null;
  readonly tcp: boolean;
  readonly chunks: Buffer[] = [];

  constructor(tcp: boolean) {
    this.tcp = tcp;
  }

  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    this.replies++;
    const off = this.tcp ? 4 : 0;
    if (head.length < off + 12 || head.readUInt32BE(off + 4) !== 1) this.problem ??= 'reply is not an RPC reply message';
    if (this.tcp && (head.readUInt32BE(0) & 0x7fffffff) !== head.length - 4 + (payload?.length ?? 0) + (pad?.length ?? 0)) this.problem ??= 'record mark does not match the reply length';
    if (this.replies > this.calls) this.problem ??= `${this.replies} replies to ${this.calls} calls`;
    if (this.chunks.length < 4) this.chunks.push(Buffer.from(head));
  }

  done(): void {}
}

interface Harness {
  dispatcher: RpcDispatcher;
  ctx: CallContext;
  close(): Promise<void>;
}

async function harness(): Promise<Harness> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-fuzzdec-'));
  const dir = path.join(work, 'export');
  fs.mkdirSync(path.join(dir, 'dir'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'file'), Buffer.alloc(8192, 0x61));
  const entry = quickExport(dir);
  const table = new ExportTable([entry]);
  const store = await ExportStore.open(entry.fsid, entry.realPath, { stateDir: null });
  const dispatcher = new RpcDispatcher();
  dispatcher.replyCache = new ReplyCache();
  const policy = table.clientOptionsSync(entry, '127.0.0.1')!;
  dispatcher.register(new NfsProgram([{ fsid: entry.fsid, path: entry.path, store }], { authorize: () => policy }).program());
  dispatcher.register(new MountProgram({ exports: table, rootHandle: (_e, below) => store.subdirHandle(below) }));
  dispatcher.register(createPortmapProgram(new PortmapRegistry(), { bindAddress: '127.0.0.1' }));
  const root = (await store.subdirHandle([]))!;
  const ctx: CallContext = { exportPath: dir, root, file: await lookup(dispatcher, root, 'file'), dir: (await store.subdirHandle(['dir']))! };
  return {
    dispatcher,
    ctx,
    async close() {
      await store.close();
      fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

/** A LOOKUP through the dispatcher itself, so the file handle is one the server made. */
async function lookup(d: RpcDispatcher, dirFh: Buffer, name: string): Promise<Buffer> {
  const [call] = everyCall(new Rng(1), { exportPath: '', root: dirFh, file: dirFh, dir: dirFh }).filter((c) => c.service === 'nfs' && c.proc === 3);
  const sink = new CheckingSink(false);
  sink.calls = 1;
  const msg = Buffer.from(call.message);
  const nameLen = msg.readUInt32BE(call.argsAt + 4 + ((dirFh.length + 3) & ~3));
  const fixed = Buffer.concat([msg.subarray(0, msg.length - 4 - ((nameLen + 3) & ~3)), Buffer.from([0, 0, 0, name.length]), Buffer.from(name.padEnd((name.length + 3) & ~3, '\0'))]);
  d.dispatch(fixed, sink);
  for (let i = 0; i < 200 && sink.replies === 0; i++) await new Promise((r) => setTimeout(r, 5));
  const r = new XdrReader(sink.chunks[0], 24);
  if (r.u32() !== 0) throw new Error(`fuzz setup: LOOKUP ${name} failed`);
  return Buffer.from(r.opaque(64));
}

/** Runs one input (a TCP byte stream) through decoder and dispatcher, TCP and UDP. */
function exec(d: RpcDispatcher, input: Buffer, split: number): CheckingSink[] {
  const tcp = new CheckingSink(true);
  const decoder = new RecordDecoder(
    {
      onRecord(record) {
        tcp.calls++;
        d.dispatch(record, tcp);
      },
      onViolation() {},
    },
    { maxRecordBytes: 64 * 1024, maxFragments: 16 },
  );
  decoder.feed(input.subarray(0, split));
  decoder.feed(input.subarray(split));
  const udp = new CheckingSink(false);
  udp.calls = 1;
  if (input.length > 4) d.dispatch(input.subarray(4), udp);
  return [tcp, udp];
}

export interface DecoderResult {
  execs: number;
  features: number;
  corpus: number;
  bugs: string[];
}

interface Pending {
  input: Buffer;
  sinks: CheckingSink[];
}

function saveBug(dir: string, input: Buffer, reason: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `decoder-${createHash('sha256').update(input).digest('hex').slice(0, 16)}.bin`);
  fs.writeFileSync(file, input);
  fs.writeFileSync(`${file.slice(0, -4)}.txt`, `${reason}\n`);
  return file;
}

async function settle(pending: Pending[], corpusDir: string, bugs: string[]): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && pending.some((p) => p.sinks.some((s) => s.inFlight !== 0))) await new Promise((r) => setTimeout(r, 5));
  for (const p of pending) {
    for (const s of p.sinks) {
      const problem = s.problem ?? (s.inFlight !== 0 ? `${s.inFlight} call(s) never answered nor dropped` : null);
      if (problem !== null) bugs.push(`${problem}: ${saveBug(corpusDir, p.input, problem)}`);
    }
  }
  pending.length = 0;
}

let currentInput: Buffer | null = null;
let asyncFailure: string | null = null;

function onAsyncFailure(err: unknown): void {
  asyncFailure ??= `unhandled: ${(err as Error)?.stack ?? String(err)}`;
}

export async function runDecoder(opts: { seconds: number; seed: number; corpusDir: string; log?: (s: string) => void }): Promise<DecoderResult> {
  const rng = new Rng(opts.seed ^ 0x5eed);
  const h = await harness();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  const ourScripts = new Map<string, boolean>();
  const seen = new Set<string>();
  const covered = async (): Promise<number> => {
    const { result } = await session.post('Profiler.takePreciseCoverage');
    let fresh = 0;
    for (const script of result) {
      let ours = ourScripts.get(script.scriptId);
      if (ours === undefined) {
        ours = /\/(src|dist\/src)\/(rpc|nfs|mount|store|remap|cache)\//.test(script.url);
        ourScripts.set(script.scriptId, ours);
      }
      if (!ours) continue;
      for (const fn of script.functions) {
        for (const range of fn.ranges) {
          if (range.count === 0) continue;
          const key = `${script.url}:${range.startOffset}:${range.endOffset}`;
          if (!seen.has(key)) {
            seen.add(key);
            fresh++;
          }
        }
      }
    }
    return fresh;
  };
  process.on('unhandledRejection', onAsyncFailure);
  process.on('uncaughtException', onAsyncFailure);
  const corpus: BaseCall[] = everyCall(rng, h.ctx);
  const bugs: string[] = [];
  const pending: Pending[] = [];
  let execs = 0;
  const deadline = Date.now() + opts.seconds * 1000;
  try {
    await covered();
    // The seeds: one valid call of every procedure, each run once for its coverage.
    for (const seed of corpus) {
      const input = frameForTcp(new Rng(0), seed.message);
      pending.push({ input, sinks: exec(h.dispatcher, input, input.length) });
      execs++;
      await new Promise((r) => setImmediate(r));
      await covered();
    }
    while (Date.now() < deadline) {
      const parent = rng.pick(corpus);
      const message = mutateMessage(rng, parent);
      const input = frameForTcp(rng, message);
      currentInput = input;
      try {
        pending.push({ input, sinks: exec(h.dispatcher, input, rng.below(input.length + 1)) });
      } catch (err) {
        bugs.push(`dispatch threw ${(err as Error).message}: ${saveBug(opts.corpusDir, input, (err as Error).stack ?? String(err))}`);
      }
      execs++;
      await new Promise((r) => setImmediate(r));
      if (asyncFailure !== null) {
        bugs.push(`${asyncFailure.split('\n')[0]}: ${saveBug(opts.corpusDir, currentInput, asyncFailure)}`);
        asyncFailure = null;
      }
      if ((await covered()) > 0) corpus.push({ ...parent, message });
      if (pending.length >= 64) await settle(pending, opts.corpusDir, bugs);
    }
    await settle(pending, opts.corpusDir, bugs);
  } finally {
    process.off('unhandledRejection', onAsyncFailure);
    process.off('uncaughtException', onAsyncFailure);
    await session.post('Profiler.stopPreciseCoverage');
    session.disconnect();
    await h.close();
  }
  return { execs, features: seen.size, corpus: corpus.length, bugs };
}

/** Replays saved decoder reproducers; returns those that still show a bug. */
export async function replayDecoder(files: string[]): Promise<string[]> {
  if (files.length === 0) return [];
  const h = await harness();
  const bugs: string[] = [];
  process.on('unhandledRejection', onAsyncFailure);
  try {
    for (const file of files) {
      const input = fs.readFileSync(file);
      let sinks: CheckingSink[] = [];
      try {
        sinks = exec(h.dispatcher, input, input.length >> 1);
      } catch (err) {
        bugs.push(`${file}: dispatch threw ${(err as Error).message}`);
        continue;
      }
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && sinks.some((s) => s.inFlight !== 0)) await new Promise((r) => setTimeout(r, 5));
      for (const s of sinks) {
        const problem = s.problem ?? (s.inFlight !== 0 ? 'call never answered' : null);
        if (problem !== null) bugs.push(`${file}: ${problem}`);
      }
      if (asyncFailure !== null) {
        bugs.push(`${file}: ${asyncFailure}`);
        asyncFailure = null;
      }
    }
  } finally {
    process.off('unhandledRejection', onAsyncFailure);
    await h.close();
  }
  return bugs;
}
