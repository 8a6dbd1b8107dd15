import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FHSIZE_V2, MNTPATHLEN, MOUNT_PROGRAM, MountProc, MountStat } from '../../src/mount/constants.js';
import { ExportTable, parseExports, type ExportEntry, type HostNameResolver } from '../../src/mount/exports.js';
import { MNT1_HANDLE_TOO_LONG, MountProgram } from '../../src/mount/program.js';
import { RpcDispatcher, type ReplySink } from '../../src/rpc/dispatch.js';
import { AcceptStat, writeCallHeader } from '../../src/rpc/message.js';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr.js';

let root: string;
let pub: string;
let priv: string;
let longh: string;

beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'cnfs-mount-'));
  pub = path.join(root, 'pub');
  priv = path.join(root, 'priv');
  longh = path.join(root, 'long');
  for (const d of [pub, priv, longh]) mkdirSync(d);
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

class CaptureSink implements ReplySink {
  readonly tcp: boolean;
  inFlight = 0;
  replies: Buffer[] = [];
  private waiters: ((b: Buffer) => void)[] = [];

  constructor(readonly address: string, readonly port: number, tcp = false) {
    this.tcp = tcp;
  }

  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    // head is a view of the shared reply slab: copy it now
    const bytes = Buffer.concat([head, payload ?? Buffer.alloc(0), pad ?? Buffer.alloc(0)]);
    this.replies.push(bytes);
    const w = this.waiters.shift();
    if (w) w(bytes);
  }

  done(): void {}

  next(): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply within 2 s')), 2000);
      this.waiters.push((b) => {
        clearTimeout(timer);
        resolve(b);
      });
    });
  }
}

let xid = 1000;

function encodeCall(vers: number, proc: number, args?: (w: XdrWriter) => void): Buffer {
  const w = new XdrWriter(4096);
  w.begin();
  writeCallHeader(w, ++xid, MOUNT_PROGRAM, vers, proc, { flavor: 1, uid: 0, gid: 0, gids: [], machineName: 'test' });
  args?.(w);
  return Buffer.from(w.finish());
}

/** Sends one call through the dispatcher; returns a reader positioned at the results. */
async function rpc(
  dispatcher: RpcDispatcher,
  sink: CaptureSink,
  vers: number,
  proc: number,
  args?: (w: XdrWriter) => void,
  expectStat: AcceptStat = AcceptStat.SUCCESS,
): Promise<XdrReader> {
  const record = encodeCall(vers, proc, args);
  const sentXid = xid;
  const reply = sink.next();
  dispatcher.dispatch(record, sink);
  const bytes = await reply;
  const r = new XdrReader(bytes);
  if (sink.tcp) r.u32();
  expect(r.u32()).toBe(sentXid);
  expect(r.u32()).toBe(1); // REPLY
  expect(r.u32()).toBe(0); // MSG_ACCEPTED
  r.u32(); // verifier flavor
  r.opaque(400);
  expect(r.u32()).toBe(expectStat);
  expect(sink.inFlight).toBe(0);
  return r;
}

const str = (s: string) => (w: XdrWriter) => w.opaque(Buffer.from(s, 'utf8'));

function readDump(r: XdrReader): { host: string; dir: string }[] {
  const out = [];
  while (r.bool()) out.push({ host: r.opaque(255).toString(), dir: r.opaque(MNTPATHLEN).toString() });
  expect(r.remaining()).toBe(0);
  return out;
}

/** Root handles: short for pub/priv, 40 bytes for `long` (fits v3, not v1). */
function fakeHandle(e: ExportEntry): Buffer {
  const len = e.path.endsWith('/long') ? 40 : 12;
  const b = Buffer.alloc(len, 0xab);
  b.writeUInt32BE(e.fsid, 0);
  return b;
}

describe('MOUNT program through the RPC dispatcher', () => {
  let table: ExportTable;
  let program: MountProgram;
  let dispatcher: RpcDispatcher;
  let handleCalls: string[];

  beforeEach(() => {
    const entries = parseExports(
      [
        `${pub}  127.0.0.0/8(rw,insecure) trusted.cluster(rw) 10.0.0.0/8(ro)`,
        `${priv} 127.0.0.2(rw)   # secure by default`,
        `${longh} *(ro,insecure)`,
      ].join('\n'),
      'exports',
    );
    const resolver: HostNameResolver = { reverse: async (a) => (a === '192.0.2.9' ? 'trusted.cluster' : null) };
    table = new ExportTable(entries, { resolver });
    handleCalls = [];
    program = new MountProgram({
      exports: table,
      rootHandle: async (e, below) => {
        handleCalls.push(below.length === 0 ? e.path : `${e.path}:${below.join('/')}`);
        await new Promise((r) => setTimeout(r, 1));
        // The fake export tree has one subdirectory, 'sub'.
        if (below.length === 0) return fakeHandle(e);
        return below.join('/') === 'sub' ? Buffer.concat([fakeHandle(e).subarray(0, 16), Buffer.from('sub-handle-0000!')]) : null;
      },
    });
    dispatcher = new RpcDispatcher();
    dispatcher.register(program);
  });

  it('answers NULL on v1 and v3', async () => {
    const sink = new CaptureSink('127.0.0.1', 40000);
    expect((await rpc(dispatcher, sink, 3, MountProc.NULL)).remaining()).toBe(0);
    expect((await rpc(dispatcher, sink, 1, MountProc.NULL)).remaining()).toBe(0);
  });

  it('MNT v3: root handle and AUTH_SYS for an allowed client', async () => {
    const sink = new CaptureSink('127.0.0.1', 40000);
    const r = await rpc(dispatcher, sink, 3, MountProc.MNT, str(pub));
    expect(r.u32()).toBe(MountStat.OK);
    const fh = r.opaque(64);
    expect(Buffer.compare(fh, fakeHandle(table.find(pub)!))).toBe(0);
    expect(r.u32()).toBe(1);
    expect(r.u32()).toBe(1); // AUTH_SYS
    expect(r.remaining()).toBe(0);
    expect(handleCalls).toEqual([pub]);
  });

  it('MNT v3 over TCP carries a record mark', async () => {
    const sink = new CaptureSink('127.0.0.1', 40000, true);
    const r = await rpc(dispatcher, sink, 3, MountProc.MNT, str(pub + '/'));
    expect(r.u32()).toBe(MountStat.OK);
    expect(sink.replies[0].readUInt32BE(0)).toBe((0x80000000 | (sink.replies[0].length - 4)) >>> 0);
  });

  it('MNT v3: ACCES for a client no pattern admits', async () => {
    const sink = new CaptureSink('192.168.1.1', 700);
    const r = await rpc(dispatcher, sink, 3, MountProc.MNT, str(pub));
    expect(r.u32()).toBe(MountStat.ACCES);
    expect(r.remaining()).toBe(0);
    expect(handleCalls).toEqual([]);
  });

  it('MNT v3: host-name pattern via the resolver', async () => {
    const r = await rpc(dispatcher, new CaptureSink('192.0.2.9', 800), 3, MountProc.MNT, str(pub));
    expect(r.u32()).toBe(MountStat.OK);
  });

  it('MNT v3: NOENT for a path that is not exported, nor below an export, nor a missing subdirectory', async () => {
    const sink = new CaptureSink('127.0.0.1', 40000);
    for (const p of [root, pub + '/missing', pub + '/sub/../../x', 'pub', '']) {
      const r = await rpc(dispatcher, sink, 3, MountProc.MNT, str(p));
      expect(r.u32(), p).toBe(MountStat.NOENT);
      expect(r.remaining()).toBe(0);
    }
  });

  it('MNT v3: an existing subdirectory of an export mounts with its own handle, as mountd allows', async () => {
    const sink = new CaptureSink('127.0.0.1', 40000);
    const r = await rpc(dispatcher, sink, 3, MountProc.MNT, str(pub + '/sub/'));
    expect(r.u32()).toBe(MountStat.OK);
    expect(r.opaque(64).subarray(-16).toString()).toBe('sub-handle-0000!');
    expect(handleCalls).toContain(`${pub}:sub`);
    const dump = await rpc(dispatcher, sink, 3, MountProc.DUMP);
    const dirs: string[] = [];
    while (dump.u32() === 1) {
      dump.opaque(1024);
      dirs.push(dump.opaque(1024).toString());
    }
    expect(dirs).toContain(pub + '/sub');
  });

  it('MNT v3: a secure export refuses an unprivileged source port, accepts a privileged one', async () => {
    const high = await rpc(dispatcher, new CaptureSink('127.0.0.2', 1024), 3, MountProc.MNT, str(priv));
    expect(high.u32()).toBe(MountStat.ACCES);
    const low = await rpc(dispatcher, new CaptureSink('127.0.0.2', 1023), 3, MountProc.MNT, str(priv));
    expect(low.u32()).toBe(MountStat.OK);
    // insecure export: any port
    const ins = await rpc(dispatcher, new CaptureSink('127.0.0.2', 50000), 3, MountProc.MNT, str(pub));
    expect(ins.u32()).toBe(MountStat.OK);
    // 127.0.0.3 is not in priv's list at all
    const other = await rpc(dispatcher, new CaptureSink('127.0.0.3', 700), 3, MountProc.MNT, str(priv));
    expect(other.u32()).toBe(MountStat.ACCES);
  });

  it('MNT v3: SERVERFAULT when the root handle cannot be made', async () => {
    const p = new MountProgram({
      exports: table,
      rootHandle: async () => {
        throw new Error('disk on fire');
      },
    });
    const d = new RpcDispatcher();
    d.register(p);
    const r = await rpc(d, new CaptureSink('127.0.0.1', 700), 3, MountProc.MNT, str(pub));
    expect(r.u32()).toBe(MountStat.SERVERFAULT);
    expect(readDump(await rpc(d, new CaptureSink('127.0.0.1', 700), 3, MountProc.DUMP))).toEqual([]);
  });

  it('MNT: GARBAGE_ARGS for a path longer than MNTPATHLEN or truncated arguments', async () => {
    const sink = new CaptureSink('127.0.0.1', 700);
    const long = '/' + 'x'.repeat(MNTPATHLEN);
    await rpc(dispatcher, sink, 3, MountProc.MNT, str(long), AcceptStat.GARBAGE_ARGS);
    await rpc(dispatcher, sink, 3, MountProc.MNT, (w) => w.u32(100), AcceptStat.GARBAGE_ARGS);
    await rpc(dispatcher, sink, 3, MountProc.UMNT, undefined, AcceptStat.GARBAGE_ARGS);
    // exactly MNTPATHLEN is fine (and not exported)
    const r = await rpc(dispatcher, sink, 3, MountProc.MNT, str('/' + 'x'.repeat(MNTPATHLEN - 1)));
    expect(r.u32()).toBe(MountStat.NOENT);
  });

  it('DUMP lists mounts after MNT and forgets them after UMNT and UMNTALL', async () => {
    const a = new CaptureSink('127.0.0.1', 700);
    const b = new CaptureSink('127.0.0.2', 700);
    expect(readDump(await rpc(dispatcher, a, 3, MountProc.DUMP))).toEqual([]);
    expect((await rpc(dispatcher, a, 3, MountProc.MNT, str(pub + '/'))).u32()).toBe(MountStat.OK);
    expect((await rpc(dispatcher, a, 3, MountProc.MNT, str(pub))).u32()).toBe(MountStat.OK); // again: listed once
    expect((await rpc(dispatcher, b, 3, MountProc.MNT, str(pub))).u32()).toBe(MountStat.OK);
    expect((await rpc(dispatcher, b, 3, MountProc.MNT, str(priv))).u32()).toBe(MountStat.OK);
    expect((await rpc(dispatcher, a, 3, MountProc.MNT, str(priv))).u32()).toBe(MountStat.ACCES); // not listed
    expect(readDump(await rpc(dispatcher, a, 3, MountProc.DUMP))).toEqual([
      { host: '127.0.0.1', dir: pub },
      { host: '127.0.0.2', dir: pub },
      { host: '127.0.0.2', dir: priv },
    ]);
    expect((await rpc(dispatcher, a, 3, MountProc.UMNT, str(pub + '/'))).remaining()).toBe(0);
    expect(readDump(await rpc(dispatcher, b, 1, MountProc.DUMP))).toEqual([
      { host: '127.0.0.2', dir: pub },
      { host: '127.0.0.2', dir: priv },
    ]);
    // UMNT of something never mounted is harmless
    await rpc(dispatcher, a, 3, MountProc.UMNT, str('/nowhere'));
    expect((await rpc(dispatcher, b, 3, MountProc.UMNTALL)).remaining()).toBe(0);
    expect(readDump(await rpc(dispatcher, a, 3, MountProc.DUMP))).toEqual([]);
    expect(program.mounts()).toEqual([]);
  });

  it('bounds the mount list', async () => {
    const p = new MountProgram({ exports: table, rootHandle: async (e) => fakeHandle(e) }, { maxMountEntries: 2 });
    const d = new RpcDispatcher();
    d.register(p);
    for (const host of ['127.0.0.1', '127.0.0.2', '127.0.0.3']) {
      expect((await rpc(d, new CaptureSink(host, 700), 3, MountProc.MNT, str(pub))).u32()).toBe(MountStat.OK);
    }
    expect(p.mounts().map((m) => m.host)).toEqual(['127.0.0.2', '127.0.0.3']);
  });

  it('EXPORT lists every export with its client patterns as groups (v1 and v3, EXPORTALL)', async () => {
    const expected = [
      { dir: pub, groups: ['127.0.0.0/8', 'trusted.cluster', '10.0.0.0/8'] },
      { dir: priv, groups: ['127.0.0.2'] },
      { dir: longh, groups: ['*'] },
    ];
    for (const [vers, proc] of [
      [3, MountProc.EXPORT],
      [1, MountProc.EXPORT],
      [1, 6],
    ]) {
      const r = await rpc(dispatcher, new CaptureSink('203.0.113.1', 40000), vers, proc);
      const got = [];
      while (r.bool()) {
        const dir = r.opaque(MNTPATHLEN).toString();
        const groups = [];
        while (r.bool()) groups.push(r.opaque(255).toString());
        got.push({ dir, groups });
      }
      expect(r.remaining()).toBe(0);
      expect(got).toEqual(expected);
    }
  });

  it('MNT v1: a fixed 32-byte handle, zero padded', async () => {
    const r = await rpc(dispatcher, new CaptureSink('127.0.0.1', 700), 1, MountProc.MNT, str(pub));
    expect(r.u32()).toBe(0);
    const fh = r.fixedOpaque(FHSIZE_V2);
    expect(r.remaining()).toBe(0);
    const want = Buffer.alloc(FHSIZE_V2);
    fakeHandle(table.find(pub)!).copy(want);
    expect(Buffer.compare(fh, want)).toBe(0);
    expect(readDump(await rpc(dispatcher, new CaptureSink('127.0.0.1', 700), 1, MountProc.DUMP))).toEqual([{ host: '127.0.0.1', dir: pub }]);
  });

  it('MNT v1: errno status without handle when refused or when our handle is longer than 32 bytes', async () => {
    const denied = await rpc(dispatcher, new CaptureSink('192.168.1.1', 700), 1, MountProc.MNT, str(pub));
    expect(denied.u32()).toBe(13);
    expect(denied.remaining()).toBe(0);
    const missing = await rpc(dispatcher, new CaptureSink('127.0.0.1', 700), 1, MountProc.MNT, str('/nope'));
    expect(missing.u32()).toBe(2);
    const tooLong = await rpc(dispatcher, new CaptureSink('127.0.0.1', 700), 1, MountProc.MNT, str(longh));
    expect(tooLong.u32()).toBe(MNT1_HANDLE_TOO_LONG);
    expect(MNT1_HANDLE_TOO_LONG).toBe(13);
    expect(tooLong.remaining()).toBe(0);
    // the same export works over v3 with its 40-byte handle
    const v3 = await rpc(dispatcher, new CaptureSink('127.0.0.1', 700), 3, MountProc.MNT, str(longh));
    expect(v3.u32()).toBe(MountStat.OK);
    expect(v3.opaque(64).length).toBe(40);
    expect(program.mounts()).toEqual([{ host: '127.0.0.1', dir: longh }]);
  });

  it('rejects unknown versions and procedures', async () => {
    const sink = new CaptureSink('127.0.0.1', 700);
    const r = await rpc(dispatcher, sink, 2, MountProc.NULL, undefined, AcceptStat.PROG_MISMATCH);
    expect([r.u32(), r.u32()]).toEqual([1, 3]);
    await rpc(dispatcher, sink, 3, 6, undefined, AcceptStat.PROC_UNAVAIL);
  });

  it('serves a new table after setExports', async () => {
    const sink = new CaptureSink('127.0.0.1', 700);
    program.setExports(new ExportTable(parseExports(`${priv} 127.0.0.1(rw,insecure)`, 'new'), { resolver: { reverse: async () => null } }));
    expect((await rpc(dispatcher, sink, 3, MountProc.MNT, str(pub))).u32()).toBe(MountStat.NOENT);
    expect((await rpc(dispatcher, sink, 3, MountProc.MNT, str(priv))).u32()).toBe(MountStat.OK);
    const r = await rpc(dispatcher, sink, 3, MountProc.EXPORT);
    expect(r.bool()).toBe(true);
    expect(r.opaque(MNTPATHLEN).toString()).toBe(priv);
  });
});
