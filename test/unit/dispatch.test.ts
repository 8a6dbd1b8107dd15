import { afterEach, describe, expect, it } from 'vitest';
import { RpcDispatcher, type ProcedureSpec, type Program, type ReplySink, type RpcCall } from '../../src/rpc/dispatch.js';
import type { Credentials } from '../../src/rpc/message.js';

/** Big-endian u32 words as bytes, built without the code under test. */
function words(...ws: number[]): Buffer {
  const b = Buffer.alloc(ws.length * 4);
  ws.forEach((w, i) => b.writeUInt32BE(w >>> 0, i * 4));
  return b;
}

function xdrString(bytes: Buffer): Buffer {
  const pad = (4 - (bytes.length & 3)) & 3;
  return Buffer.concat([words(bytes.length), bytes, Buffer.alloc(pad)]);
}

class FakeSink implements ReplySink {
  readonly address = '127.0.0.1';
  readonly port = 700;
  inFlight = 0;
  sent: Buffer[] = [];
  views: Buffer[] = [];
  doneCount = 0;
  constructor(readonly tcp: boolean) {}
  send(head: Buffer, payload: Buffer | null, pad: Buffer | null): void {
    this.views.push(head);
    this.sent.push(Buffer.concat([head, ...(payload ? [payload] : []), ...(pad ? [pad] : [])]));
  }
  done(): void {
    this.doneCount++;
  }
}

const PROG = 0x20000099;
const XID = 0xdeadbeef;

const AUTH_NONE = 0;
const AUTH_SYS = 1;
const RPCSEC_GSS = 6;

function authSysBody(opts: { stamp?: number; machine?: Buffer; uid?: number; gid?: number; gids?: number[] } = {}): Buffer {
  const gids = opts.gids ?? [4, 24, 27];
  return Buffer.concat([
    words(opts.stamp ?? 0x12345678),
    xdrString(opts.machine ?? Buffer.from('node-07')),
    words(opts.uid ?? 1000, opts.gid ?? 100, gids.length, ...gids),
  ]);
}

function call(opts: {
  xid?: number;
  rpcvers?: number;
  prog?: number;
  vers?: number;
  proc: number;
  credFlavor?: number;
  credBody?: Buffer;
  credLen?: number;
  args?: Buffer;
}): Buffer {
  const body = opts.credBody ?? Buffer.alloc(0);
  const pad = (4 - (body.length & 3)) & 3;
  return Buffer.concat([
    words(opts.xid ?? XID, 0, opts.rpcvers ?? 2, opts.prog ?? PROG, opts.vers ?? 3, opts.proc),
    words(opts.credFlavor ?? AUTH_NONE, opts.credLen ?? body.length),
    body,
    Buffer.alloc(pad),
    words(AUTH_NONE, 0),
    opts.args ?? Buffer.alloc(0),
  ]);
}

/** Expected reply bytes; TCP replies carry a last-fragment record mark. */
function reply(tcp: boolean, ...ws: number[]): Buffer {
  const body = words(...ws);
  return tcp ? Buffer.concat([words(0x80000000 | body.length), body]) : body;
}

const acceptedHead = (xid = XID) => [xid, 1, 0, AUTH_NONE, 0];

let seenCred: Credentials | null = null;
let release: (() => void) | null = null;

function spec(name: string, handler: (c: RpcCall) => void | Promise<void>, needsCred = false): ProcedureSpec {
  return { name, handler, mutates: false, nonIdempotent: false, needsCred };
}

const program: Program = {
  program: PROG,
  name: 'test',
  versions: [
    {
      version: 3,
      procedures: [
        spec('NULL', (c) => {
          c.beginReply(0);
          c.send();
        }),
        // ECHO: u32 in, u32 + 1 and the u32 again out.
        spec('ECHO', (c) => {
          const v = c.args.u32();
          const w = c.beginReply(8);
          w.u32(v + 1);
          w.u32(v);
          c.send();
        }),
        // Reads two words; called with one -> GARBAGE_ARGS.
        spec('TWO', (c) => {
          c.args.u32();
          c.args.u32();
          c.beginReply(0);
          c.send();
        }),
        spec('THROW', () => {
          throw new Error('boom');
        }),
        spec('REJECT', async () => {
          await Promise.resolve();
          throw new Error('async boom');
        }),
        spec(
          'WHOAMI',
          (c) => {
            seenCred = c.cred;
            const w = c.beginReply(16);
            w.u32(c.cred.uid);
            c.send();
          },
          true,
        ),
        undefined, // 6: hole
        spec('LATER', async (c) => {
          await new Promise<void>((resolve) => (release = resolve));
          const w = c.beginReply(4);
          w.u32(7);
          c.send();
        }),
        // READ-like: counted opaque whose 5 data bytes go out as a separate payload with padding.
        spec('PAYLOAD', (c) => {
          const w = c.beginReply(8);
          w.u32(5);
          c.send(Buffer.from([1, 2, 3, 4, 5]));
        }),
        spec('DROP', (c) => c.drop()),
        // Async garbage: an XdrError after an await is still GARBAGE_ARGS.
        spec('ASYNCTWO', async (c) => {
          await Promise.resolve();
          c.args.u32();
          c.args.u32();
          c.beginReply(0);
          c.send();
        }),
      ],
    },
    { version: 4, procedures: [spec('NULL4', (c) => (c.beginReply(0), c.send()))] },
  ],
};

function setup(tcp: boolean) {
  const d = new RpcDispatcher();
  d.register(program);
  const sink = new FakeSink(tcp);
  return { d, sink };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

afterEach(() => {
  seenCred = null;
  release = null;
});

for (const tcp of [false, true]) {
  describe(`RpcDispatcher replies over ${tcp ? 'TCP' : 'UDP'}`, () => {
    it('SUCCESS with results', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 1, args: words(41) }), sink);
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 0, 42, 41)]);
      d.dispatch(call({ proc: 0, vers: 4, xid: 5 }), sink);
      expect(sink.sent[1]).toEqual(reply(tcp, ...acceptedHead(5), 0));
      expect(sink.inFlight).toBe(0);
    });

    it('SUCCESS with a separate payload and its XDR padding', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 8 }), sink);
      const body = Buffer.concat([words(...acceptedHead(), 0, 5), Buffer.from([1, 2, 3, 4, 5, 0, 0, 0])]);
      const expected = tcp ? Buffer.concat([words(0x80000000 | body.length), body]) : body;
      expect(sink.sent).toEqual([expected]);
      expect(sink.inFlight).toBe(0);
    });

    it('PROG_UNAVAIL for an unknown program', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ prog: 100003, proc: 0 }), sink);
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 1)]);
    });

    it('PROG_MISMATCH with the lowest and highest version', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ vers: 2, proc: 0 }), sink);
      d.dispatch(call({ vers: 5, proc: 0 }), sink);
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 2, 3, 4), reply(tcp, ...acceptedHead(), 2, 3, 4)]);
    });

    it('PROC_UNAVAIL for a hole and for a procedure past the table', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 6 }), sink);
      d.dispatch(call({ proc: 1000 }), sink);
      d.dispatch(call({ proc: 1, vers: 4 }), sink);
      const expected = reply(tcp, ...acceptedHead(), 3);
      expect(sink.sent).toEqual([expected, expected, expected]);
      expect(sink.inFlight).toBe(0);
    });

    it('GARBAGE_ARGS when a handler reads past the end of its arguments', async () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 2, args: words(1) }), sink);
      d.dispatch(call({ proc: 1 }), sink); // ECHO without its argument
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 4), reply(tcp, ...acceptedHead(), 4)]);
      d.dispatch(call({ proc: 10, args: words(1) }), sink);
      await tick();
      expect(sink.sent[2]).toEqual(reply(tcp, ...acceptedHead(), 4));
      expect(sink.inFlight).toBe(0);
    });

    it('SYSTEM_ERR when a handler throws or its promise rejects', async () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 3 }), sink);
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 5)]);
      expect(sink.inFlight).toBe(0);
      d.dispatch(call({ proc: 4, xid: 77 }), sink);
      expect(sink.inFlight).toBe(1);
      await tick();
      expect(sink.sent[1]).toEqual(reply(tcp, ...acceptedHead(77), 5));
      expect(sink.inFlight).toBe(0);
    });

    it('RPC_MISMATCH (2..2) for rpcvers 3, before any program check', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ rpcvers: 3, proc: 0 }), sink);
      d.dispatch(call({ rpcvers: 3, prog: 1, proc: 0 }), sink);
      const expected = reply(tcp, XID, 1, 1, 0, 2, 2);
      expect(sink.sent).toEqual([expected, expected]);
    });

    it('AUTH_ERROR BADCRED for malformed AUTH_SYS bodies', () => {
      const { d, sink } = setup(tcp);
      const bad: Buffer[] = [
        authSysBody({ gids: Array.from({ length: 17 }, (_, i) => i) }), // > 16 gids
        authSysBody({ machine: Buffer.alloc(256, 0x61) }), // machinename > 255
        authSysBody().subarray(0, 20), // truncated: ends inside uid/gid
        Buffer.concat([authSysBody(), words(0)]), // trailing bytes inside the credential
      ];
      for (const body of bad) d.dispatch(call({ proc: 5, credFlavor: AUTH_SYS, credBody: body }), sink);
      // BADCRED also on a procedure that does not need credentials.
      d.dispatch(call({ proc: 0, credFlavor: AUTH_SYS, credBody: bad[0] }), sink);
      const expected = reply(tcp, XID, 1, 1, 1, 1);
      expect(sink.sent).toEqual(Array.from({ length: 5 }, () => expected));
      expect(seenCred).toBeNull();
      expect(sink.inFlight).toBe(0);
    });

    it('accepts AUTH_SYS at the limits: 16 gids and a 255-byte machine name', () => {
      const { d, sink } = setup(tcp);
      const gids = Array.from({ length: 16 }, (_, i) => 1000 + i);
      const machine = Buffer.alloc(255, 0x62);
      d.dispatch(call({ proc: 5, credFlavor: AUTH_SYS, credBody: authSysBody({ gids, machine, uid: 3 }) }), sink);
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 0, 3)]);
      expect(seenCred!.gids).toEqual(gids);
      expect(seenCred!.machineName).toBe('b'.repeat(255));
    });

    it('AUTH_ERROR TOOWEAK for an unknown flavor on a procedure that needs credentials', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 5, credFlavor: RPCSEC_GSS, credBody: Buffer.alloc(12, 1) }), sink);
      expect(sink.sent).toEqual([reply(tcp, XID, 1, 1, 1, 5)]);
      expect(seenCred).toBeNull();
      // The same flavor on a procedure without needsCred is served.
      d.dispatch(call({ proc: 0, credFlavor: RPCSEC_GSS, credBody: Buffer.alloc(12, 1) }), sink);
      expect(sink.sent[1]).toEqual(reply(tcp, ...acceptedHead(), 0));
    });

    it('ignores a REPLY message sent to the server', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(words(XID, 1, 0, 0, 0, 0), sink);
      d.dispatch(words(XID, 1), sink);
      expect(sink.sent).toEqual([]);
      expect(sink.inFlight).toBe(0);
      expect(sink.doneCount).toBe(0);
    });

    it('drops a truncated call header, at every truncation point', () => {
      const { d, sink } = setup(tcp);
      const full = call({ proc: 0, credFlavor: AUTH_SYS, credBody: authSysBody() });
      const argsStart = full.length; // NULL has no arguments: the header is the whole record
      for (let n = 0; n < argsStart; n++) d.dispatch(full.subarray(0, n), sink);
      // A truncated record must not be read past its end even when the buffer goes on.
      const big = Buffer.concat([full, Buffer.alloc(64)]);
      d.dispatch(big.subarray(0, 30), sink);
      expect(sink.sent).toEqual([]);
      expect(sink.inFlight).toBe(0);
      // Credential or verifier lengths above 400 bytes are refused.
      d.dispatch(call({ proc: 0, credFlavor: AUTH_SYS, credLen: 401, credBody: Buffer.alloc(404) }), sink);
      expect(sink.sent).toEqual([]);
      d.dispatch(full, sink);
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 0)]);
    });

    it('decodes the AUTH_SYS fields', () => {
      const { d, sink } = setup(tcp);
      const machine = Buffer.from([0x6e, 0xff, 0x80, 0x2d, 0x31]); // non-UTF-8 bytes survive
      d.dispatch(
        call({ proc: 5, credFlavor: AUTH_SYS, credBody: authSysBody({ uid: 0xfffffffe, gid: 100, gids: [4, 24, 27], machine }) }),
        sink,
      );
      expect(seenCred).toEqual({ flavor: AUTH_SYS, uid: 0xfffffffe, gid: 100, gids: [4, 24, 27], machineName: machine.toString('latin1') });
      expect(Buffer.from(seenCred!.machineName, 'latin1')).toEqual(machine);
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 0, 0xfffffffe)]);
    });

    it('gives AUTH_NONE callers the anonymous identity', () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 5 }), sink);
      expect(seenCred).toMatchObject({ flavor: AUTH_NONE, uid: 65534, gid: 65534, gids: [] });
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(), 0, 65534)]);
    });

    it('accounts calls in flight until they are answered or dropped', async () => {
      const { d, sink } = setup(tcp);
      d.dispatch(call({ proc: 7, xid: 1 }), sink);
      expect(sink.inFlight).toBe(1);
      const first = release!;
      d.dispatch(call({ proc: 7, xid: 2 }), sink);
      expect(sink.inFlight).toBe(2);
      const second = release!;
      d.dispatch(call({ proc: 9, xid: 3 }), sink); // dropped, no reply
      expect(sink.inFlight).toBe(2);
      expect(sink.doneCount).toBe(1);
      second();
      await tick();
      expect(sink.inFlight).toBe(1);
      first();
      await tick();
      expect(sink.inFlight).toBe(0);
      // Replies go out in completion order, each with its own xid.
      expect(sink.sent).toEqual([reply(tcp, ...acceptedHead(2), 0, 7), reply(tcp, ...acceptedHead(1), 0, 7)]);
    });

    it('keeps every reply view intact while later replies are encoded', () => {
      const { d, sink } = setup(tcp);
      // ~40 bytes per reply: 10000 replies run through more than one 256 KiB slab.
      const n = 10000;
      for (let i = 0; i < n; i++) d.dispatch(call({ proc: 1, xid: i, args: words(i) }), sink);
      expect(sink.inFlight).toBe(0);
      expect(sink.views.length).toBe(n);
      expect(new Set(sink.views.map((v) => v.buffer)).size).toBeGreaterThan(1);
      const wrong: number[] = [];
      for (let i = 0; i < n; i++) {
        if (!sink.views[i].equals(reply(tcp, ...acceptedHead(i), 0, i + 1, i))) wrong.push(i);
      }
      expect(wrong).toEqual([]);
    });
  });
}

describe('RpcDispatcher observer', () => {
  it('reports each answered call with its reply size', () => {
    const { d, sink } = setup(true);
    const seen: [string, number][] = [];
    d.observer = { onReply: (c, bytes) => seen.push([c.spec.name, bytes]) };
    d.dispatch(call({ proc: 1, args: words(1) }), sink);
    d.dispatch(call({ proc: 8 }), sink);
    expect(seen).toEqual([
      ['ECHO', 4 + 32],
      ['PAYLOAD', 4 + 28 + 8],
    ]);
  });
});
