import dgram from 'node:dgram';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RpcDispatcher, type ReplySink } from '../../src/rpc/dispatch.js';
import { writeCallHeader } from '../../src/rpc/message.js';
import {
  createPortmapProgram,
  formatUaddr,
  parseUaddr,
  PortmapRegistry,
  registerPortmapperSelf,
  REMOTE_OWNER,
  SERVER_OWNER,
} from '../../src/rpc/portmap.js';
import { IPPROTO_TCP, IPPROTO_UDP, PORTMAP_PROGRAM } from '../../src/rpc/portmap-constants.js';
import { pmapDump, pmapGetport, pmapSet, probePortmapper, startPortmapper, type PortmapperService } from '../../src/rpc/rpcbind-registrar.js';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr.js';

const MOUNT = 100005;
const NFS = 100003;

class FakeSink implements ReplySink {
  inFlight = 0;
  replies: Buffer[] = [];
  constructor(
    readonly address: string,
    readonly tcp = false,
    readonly port = 1023,
  ) {}
  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    const parts = [Buffer.from(head)];
    if (payload) parts.push(Buffer.from(payload));
    if (pad) parts.push(Buffer.from(pad));
    this.replies.push(Buffer.concat(parts));
  }
  done(): void {}
}

interface Server {
  registry: PortmapRegistry;
  dispatcher: RpcDispatcher;
}

function makeServer(bindAddress = ''): Server {
  const registry = new PortmapRegistry();
  registerPortmapperSelf(registry, 111);
  registry.addProgram(MOUNT, [1, 3], 20048);
  registry.addProgram(NFS, [3], 2049);
  const dispatcher = new RpcDispatcher();
  dispatcher.register(createPortmapProgram(registry, { bindAddress }));
  return { registry, dispatcher };
}

let xid = 1000;

/** Sends one call through the dispatcher and returns the accept_stat and a reader at the results. */
function call(
  s: Server,
  vers: number,
  proc: number,
  args: (w: XdrWriter) => void,
  from = '127.0.0.1',
  tcp = false,
): { stat: number; r: XdrReader } {
  const w = new XdrWriter(4096);
  w.begin();
  const myXid = ++xid;
  writeCallHeader(w, myXid, PORTMAP_PROGRAM, vers, proc, null);
  args(w);
  const record = Buffer.from(w.finish());
  const sink = new FakeSink(from, tcp);
  s.dispatcher.dispatch(record, sink);
  expect(sink.replies).toHaveLength(1);
  const r = new XdrReader(sink.replies[0]);
  if (tcp) {
    const mark = r.u32();
    expect(mark >>> 0).toBe((0x80000000 | (sink.replies[0].length - 4)) >>> 0);
  }
  expect(r.u32()).toBe(myXid);
  expect(r.u32()).toBe(1); // REPLY
  expect(r.u32()).toBe(0); // MSG_ACCEPTED
  r.u32(); // verifier flavor
  r.opaque(400);
  const stat = r.u32();
  return { stat, r };
}

function ok(res: { stat: number; r: XdrReader }): XdrReader {
  expect(res.stat).toBe(0);
  return res.r;
}

const pmap = (prog: number, vers: number, prot: number, port: number) => (w: XdrWriter) => {
  w.u32(prog);
  w.u32(vers);
  w.u32(prot);
  w.u32(port);
};

const rpcb = (prog: number, vers: number, netid: string, addr: string, owner = '') => (w: XdrWriter) => {
  w.u32(prog);
  w.u32(vers);
  w.bytesString(netid);
  w.bytesString(addr);
  w.bytesString(owner);
};

function getport(s: Server, prog: number, vers: number, prot: number): number {
  const r = ok(call(s, 2, 3, pmap(prog, vers, prot, 0)));
  const port = r.u32();
  expect(r.remaining()).toBe(0);
  return port;
}

function dump2(s: Server): string[] {
  const r = ok(call(s, 2, 4, () => {}));
  const out: string[] = [];
  while (r.bool()) out.push(`${r.u32()}/${r.u32()}/${r.u32()}:${r.u32()}`);
  expect(r.remaining()).toBe(0);
  return out;
}

interface Rpcb {
  prog: number;
  vers: number;
  netid: string;
  uaddr: string;
  owner: string;
}

function dumpRpcb(s: Server, vers: 3 | 4, from = '127.0.0.1'): Rpcb[] {
  const r = ok(call(s, vers, 4, () => {}, from));
  const out: Rpcb[] = [];
  while (r.bool()) out.push({ prog: r.u32(), vers: r.u32(), netid: r.bytesString(64), uaddr: r.bytesString(64), owner: r.bytesString(64) });
  expect(r.remaining()).toBe(0);
  return out;
}

function getaddr(s: Server, vers: 3 | 4, proc: number, prog: number, pvers: number, netid: string, hint = '', from = '127.0.0.1', tcp = false): string {
  const r = ok(call(s, vers, proc, rpcb(prog, pvers, netid, hint), from, tcp));
  const u = r.bytesString(64);
  expect(r.remaining()).toBe(0);
  return u;
}

function boolReply(res: { stat: number; r: XdrReader }): boolean {
  const r = ok(res);
  const v = r.bool();
  expect(r.remaining()).toBe(0);
  return v;
}

describe('universal addresses', () => {
  it('formats and parses h1.h2.h3.h4.p1.p2', () => {
    expect(formatUaddr('127.0.0.1', 2049)).toBe('127.0.0.1.8.1');
    expect(formatUaddr('10.0.0.7', 111)).toBe('10.0.0.7.0.111');
    expect(parseUaddr('10.0.0.7.78.80')).toEqual({ host: '10.0.0.7', port: 20048 });
    expect(parseUaddr('10.0.0.7.78')).toBeNull();
    expect(parseUaddr('10.0.0.700.1.1')).toBeNull();
    expect(parseUaddr('::1.0.111')).toBeNull();
  });
});

describe('portmap v2 through the dispatcher', () => {
  it('answers NULL on v2, v3 and v4 and PROG_MISMATCH 2..4 otherwise', () => {
    const s = makeServer();
    for (const v of [2, 3, 4]) expect(ok(call(s, v, 0, () => {})).remaining()).toBe(0);
    const { stat, r } = call(s, 5, 0, () => {});
    expect(stat).toBe(2);
    expect([r.u32(), r.u32()]).toEqual([2, 4]);
  });

  it('GETPORT: hit, miss (0), other-version fallback like rpcbind, unknown protocol (0)', () => {
    const s = makeServer();
    expect(getport(s, MOUNT, 3, IPPROTO_TCP)).toBe(20048);
    expect(getport(s, MOUNT, 1, IPPROTO_UDP)).toBe(20048);
    expect(getport(s, NFS, 3, IPPROTO_UDP)).toBe(2049);
    expect(getport(s, PORTMAP_PROGRAM, 2, IPPROTO_UDP)).toBe(111);
    expect(getport(s, 100021, 4, IPPROTO_TCP)).toBe(0); // NLM: not registered
    expect(getport(s, NFS, 3, 132)).toBe(0); // SCTP: no such netid
    // rpcbind's find_service(): a missing version still leads to the program (which then
    // answers PROG_MISMATCH with its range).
    expect(getport(s, NFS, 4, IPPROTO_TCP)).toBe(2049);
  });

  it('DUMP lists every mapping', () => {
    const s = makeServer();
    const d = dump2(s);
    expect(d).toHaveLength(12);
    for (const v of [2, 3, 4]) for (const p of [6, 17]) expect(d).toContain(`100000/${v}/${p}:111`);
    for (const v of [1, 3]) for (const p of [6, 17]) expect(d).toContain(`100005/${v}/${p}:20048`);
    for (const p of [6, 17]) expect(d).toContain(`100003/3/${p}:2049`);
  });

  it('SET/UNSET from loopback work; SET refuses an existing tuple', () => {
    const s = makeServer();
    expect(boolReply(call(s, 2, 1, pmap(100021, 4, IPPROTO_UDP, 40000), '127.0.0.1'))).toBe(true);
    expect(getport(s, 100021, 4, IPPROTO_UDP)).toBe(40000);
    expect(getport(s, 100021, 4, IPPROTO_TCP)).toBe(0);
    expect(boolReply(call(s, 2, 1, pmap(100021, 4, IPPROTO_UDP, 40001), '127.0.0.5'))).toBe(false);
    expect(getport(s, 100021, 4, IPPROTO_UDP)).toBe(40000);
    expect(boolReply(call(s, 2, 1, pmap(100021, 4, IPPROTO_TCP, 40002), '127.0.0.1', true))).toBe(true);
    expect(boolReply(call(s, 2, 2, pmap(100021, 4, 0, 0), '127.0.0.1'))).toBe(true);
    expect(getport(s, 100021, 4, IPPROTO_UDP)).toBe(0);
    expect(getport(s, 100021, 4, IPPROTO_TCP)).toBe(0);
    expect(boolReply(call(s, 2, 2, pmap(100021, 4, 0, 0), '127.0.0.1'))).toBe(false); // nothing left
  });

  it('SET/UNSET from a non-loopback address are refused and change nothing', () => {
    const s = makeServer();
    const before = dump2(s);
    expect(boolReply(call(s, 2, 1, pmap(100021, 4, IPPROTO_UDP, 40000), '10.1.2.3'))).toBe(false);
    expect(boolReply(call(s, 2, 2, pmap(NFS, 3, 0, 0), '10.1.2.3'))).toBe(false);
    expect(boolReply(call(s, 3, 1, rpcb(100021, 4, 'udp', '10.1.2.3.156.64'), '10.1.2.3'))).toBe(false);
    expect(boolReply(call(s, 4, 2, rpcb(NFS, 3, '', ''), '10.1.2.3'))).toBe(false);
    expect(dump2(s)).toEqual(before);
  });

  it("the server's own mappings cannot be removed from outside, even from loopback", () => {
    const s = makeServer();
    expect(boolReply(call(s, 2, 2, pmap(NFS, 3, 0, 0), '127.0.0.1'))).toBe(false);
    expect(boolReply(call(s, 4, 2, rpcb(MOUNT, 3, 'tcp', ''), '127.0.0.1'))).toBe(false);
    expect(getport(s, NFS, 3, IPPROTO_TCP)).toBe(2049);
    expect(getport(s, MOUNT, 3, IPPROTO_TCP)).toBe(20048);
  });

  it('CALLIT is PROC_UNAVAIL; truncated arguments are GARBAGE_ARGS', () => {
    const s = makeServer();
    expect(call(s, 2, 5, pmap(NFS, 3, 0, 0)).stat).toBe(3);
    expect(call(s, 3, 5, rpcb(NFS, 3, '', '')).stat).toBe(3);
    expect(call(s, 2, 3, (w) => w.u32(NFS)).stat).toBe(4);
    expect(call(s, 4, 3, (w) => w.u32(NFS)).stat).toBe(4);
  });
});

describe('rpcbind v3/v4 through the dispatcher', () => {
  it('GETADDR answers a usable uaddr: never 0.0.0.0 for a wildcard bind', () => {
    const s = makeServer('0.0.0.0');
    expect(getaddr(s, 3, 3, NFS, 3, 'tcp')).toBe('127.0.0.1.8.1');
    expect(getaddr(s, 4, 3, MOUNT, 3, 'udp')).toBe('127.0.0.1.78.80');
    // The client tells us in r_addr which address of ours it used (libtirpc, the kernel).
    expect(getaddr(s, 3, 3, NFS, 3, 'tcp', '192.168.5.5.0.111', '10.1.2.3')).toBe('192.168.5.5.8.1');
    // A wildcard r_addr is no help.
    const u = getaddr(s, 4, 3, NFS, 3, 'udp', '0.0.0.0.0.111', '127.0.0.9');
    expect(u).toBe('127.0.0.1.8.1');
    // Miss: empty string.
    expect(getaddr(s, 3, 3, 100021, 4, 'udp')).toBe('');
    expect(getaddr(s, 3, 3, NFS, 3, 'tcp6')).toBe('');
  });

  it('GETADDR uses a specific bind address and the transport netid when r_netid is empty', () => {
    const s = makeServer('10.9.8.7');
    expect(getaddr(s, 3, 3, NFS, 3, 'udp', '192.168.5.5.0.111', '10.1.2.3')).toBe('10.9.8.7.8.1');
    s.registry.set({ prog: 100021, vers: 4, netid: 'tcp', port: 4045, host: null, owner: REMOTE_OWNER });
    expect(getaddr(s, 4, 3, 100021, 4, '', '', '127.0.0.1', true)).toBe('10.9.8.7.15.205');
    expect(getaddr(s, 4, 3, 100021, 4, '', '', '127.0.0.1', false)).toBe('');
  });

  it('v4 GETVERSADDR is exact, GETADDR is not', () => {
    const s = makeServer();
    expect(getaddr(s, 4, 3, NFS, 4, 'tcp')).toBe('127.0.0.1.8.1');
    expect(getaddr(s, 4, 9, NFS, 4, 'tcp')).toBe('');
    expect(getaddr(s, 4, 9, NFS, 3, 'tcp')).toBe('127.0.0.1.8.1');
    expect(call(s, 3, 9, rpcb(NFS, 3, 'tcp', '')).stat).toBe(3); // not in v3
  });

  it('DUMP v3 and v4 list prog, vers, netid, uaddr and owner', () => {
    const s = makeServer();
    for (const v of [3, 4] as const) {
      const d = dumpRpcb(s, v);
      expect(d).toHaveLength(12);
      expect(d).toContainEqual({ prog: 100000, vers: 4, netid: 'tcp', uaddr: '127.0.0.1.0.111', owner: SERVER_OWNER });
      expect(d).toContainEqual({ prog: NFS, vers: 3, netid: 'udp', uaddr: '127.0.0.1.8.1', owner: SERVER_OWNER });
      expect(d).toContainEqual({ prog: MOUNT, vers: 1, netid: 'tcp', uaddr: '127.0.0.1.78.80', owner: SERVER_OWNER });
    }
  });

  it('v3 SET keeps an explicit host and records the owner as "unknown"; UNSET by netid', () => {
    const s = makeServer();
    expect(boolReply(call(s, 3, 1, rpcb(100021, 4, 'udp', '127.0.0.2.156.64', 'root')))).toBe(true);
    expect(boolReply(call(s, 4, 1, rpcb(100021, 4, 'tcp', '0.0.0.0.156.65', 'root')))).toBe(true);
    expect(boolReply(call(s, 4, 1, rpcb(100021, 4, 'tcp', '0.0.0.0.156.66')))).toBe(false); // exists
    expect(boolReply(call(s, 4, 1, rpcb(100021, 1, 'tcp', 'garbage')))).toBe(false);
    expect(boolReply(call(s, 4, 1, rpcb(100021, 1, 'local', '/run/x.sock')))).toBe(false);
    expect(getaddr(s, 4, 3, 100021, 4, 'udp')).toBe('127.0.0.2.156.64');
    expect(getaddr(s, 4, 3, 100021, 4, 'tcp')).toBe('127.0.0.1.156.65');
    expect(getport(s, 100021, 4, IPPROTO_UDP)).toBe(40000);
    expect(dumpRpcb(s, 4)).toContainEqual({ prog: 100021, vers: 4, netid: 'udp', uaddr: '127.0.0.2.156.64', owner: REMOTE_OWNER });
    expect(boolReply(call(s, 3, 2, rpcb(100021, 4, 'udp', '')))).toBe(true);
    expect(getport(s, 100021, 4, IPPROTO_UDP)).toBe(0);
    expect(getport(s, 100021, 4, IPPROTO_TCP)).toBe(40001);
  });

  it('v4 GETADDRLIST lists every transport of (prog, vers)', () => {
    const s = makeServer();
    const r = ok(call(s, 4, 11, rpcb(MOUNT, 3, '', '')));
    const out: string[] = [];
    while (r.bool()) out.push([r.bytesString(64), r.bytesString(64), r.u32(), r.bytesString(64), r.bytesString(64)].join(' '));
    expect(r.remaining()).toBe(0);
    expect(out.sort()).toEqual(['127.0.0.1.78.80 tcp 3 inet tcp', '127.0.0.1.78.80 udp 1 inet udp']);
  });

  it('GETTIME answers the current time in seconds', () => {
    const s = makeServer();
    const t = ok(call(s, 3, 6, () => {})).u32();
    expect(Math.abs(t - Date.now() / 1000)).toBeLessThan(5);
  });
});

// In-process check of the startup decision on an unprivileged port: the first instance serves the
// portmapper, the second finds the port taken and registers with the first over loopback.
describe('startPortmapper', () => {
  const toClose: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of toClose.splice(0).reverse()) await c().catch(() => {});
  });

  it('serves when the port is free, registers with the portmapper that owns it otherwise', async () => {
    const reg1 = new PortmapRegistry();
    reg1.addProgram(MOUNT, [3], 20048);
    const first: PortmapperService = await startPortmapper({ registry: reg1, host: '127.0.0.1', port: 0 });
    toClose.push(() => first.close());
    expect(first.mode).toBe('embedded');
    const port = first.port;
    const ch = { kind: 'udp' as const, host: '127.0.0.1', port };
    expect(await probePortmapper('127.0.0.1', port, 1000)).toBe('udp');
    expect(await pmapGetport(ch, PORTMAP_PROGRAM, 4, 'tcp')).toBe(port);
    expect(await pmapGetport({ kind: 'tcp', host: '127.0.0.1', port }, MOUNT, 3, 'udp')).toBe(20048);

    const reg2 = new PortmapRegistry();
    reg2.addProgram(NFS, [3], 32049);
    const second = await startPortmapper({ registry: reg2, host: '127.0.0.1', port, system: { socketPaths: [], timeoutMs: 1000 } });
    toClose.push(() => second.close());
    expect(second.mode).toBe('system');
    expect(second.channel).toBe(`udp:127.0.0.1:${port}`);
    expect(await pmapGetport(ch, NFS, 3, 'tcp')).toBe(32049);
    expect(await pmapGetport(ch, NFS, 3, 'udp')).toBe(32049);
    await second.close();
    expect(await pmapGetport(ch, NFS, 3, 'tcp')).toBe(0);
    expect((await pmapDump(ch)).map((m) => m.prog).sort()).toEqual([MOUNT, MOUNT, ...Array(6).fill(PORTMAP_PROGRAM)].sort());
    // PMAP SET never replaces an existing (prog, vers, prot).
    expect(await pmapSet(ch, { prog: MOUNT, vers: 3, netid: 'tcp', port: 1 })).toBe(false);
  });

  it('fails clearly when the port is held by something that is not a portmapper', async () => {
    const tcp = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const port = (tcp.address() as net.AddressInfo).port;
    const udp = dgram.createSocket('udp4');
    toClose.push(() => new Promise<void>((resolve) => tcp.close(() => resolve())));
    toClose.push(() => new Promise<void>((resolve) => udp.close(() => resolve())));
    await new Promise<void>((resolve) => udp.bind(port, '127.0.0.1', resolve));
    await expect(
      startPortmapper({ registry: new PortmapRegistry(), host: '127.0.0.1', port, probeTimeoutMs: 500, system: { socketPaths: [] } }),
    ).rejects.toThrow(/no portmapper answers/);
  });
});
