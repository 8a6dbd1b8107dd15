/**
 * Malformed input on real sockets: every bad record gets a correct error reply or a clean close,
 * and the server keeps serving everyone else (TCP and UDP).
 *
 * Strict decoding, over TCP and UDP alike: every opaque and string is bounded by its protocol
 * maximum (handles 64, names 255, paths 1024, AUTH_SYS 16 gids and a 255-byte machine name),
 * lengths are checked against what is left of the record or datagram, RPC version 3 is
 * RPC_MISMATCH, a REPLY sent to the server is ignored, and the server keeps answering after each.
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeMntArgs } from '../../src/client/mount-client.js';
import { encodeDiropArgs, encodeFhArgs, encodeSymlinkArgs } from '../../src/client/nfs3-args.js';
import { RpcClient } from '../../src/client/rpc-client.js';
import { MOUNT_PROGRAM, MOUNT_V3 } from '../../src/mount/constants.js';
import { NFS_PROGRAM, NfsStat } from '../../src/nfs/constants.js';
import type { ClusterNfsServer } from '../../src/server/server.js';
import { mountSession, quickExport, startServer, type Session } from '../helpers/inproc-server.js';

let work: string;
let server: ClusterNfsServer;
let s: Session;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-hostile-'));
  server = await startServer([quickExport(work)], null);
  s = await mountSession(server, work);
});

afterAll(async () => {
  await s?.close();
  await server?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

async function stillServing(): Promise<void> {
  expect((await s.nfs.getattr(s.root)).status).toBe(NfsStat.OK);
}

/**
 * Sends raw bytes on a fresh TCP connection; resolves with what came back until close, until a
 * reply record ending with xid `untilXid` arrived, or after 1 s.
 */
function tcpExchange(bytes: Buffer, untilXid?: number): Promise<{ reply: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = net.connect(server.ports.nfs, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ reply: Buffer.concat(chunks), closed });
    };
    const timer = setTimeout(done, 1000);
    sock.on('data', (c) => {
      chunks.push(c);
      const all = Buffer.concat(chunks);
      // A NULL reply is 24 bytes after its record mark: xid first.
      if (untilXid !== undefined && all.length >= 28 && all.readUInt32BE(all.length - 24) === untilXid) done();
    });
    sock.on('close', () => {
      closed = true;
      done();
    });
    sock.on('error', () => {});
    sock.write(bytes);
  });
}

function record(body: Buffer): Buffer {
  const hdr = Buffer.alloc(4);
  hdr.writeUInt32BE((0x80000000 | body.length) >>> 0);
  return Buffer.concat([hdr, body]);
}

function callHeader(xid: number, rpcvers: number, prog: number, vers: number, proc: number): Buffer {
  const b = Buffer.alloc(40);
  [xid, 0, rpcvers, prog, vers, proc, 0, 0, 0, 0].forEach((v, i) => b.writeUInt32BE(v, i * 4));
  return b;
}

describe('over TCP', () => {
  it('a record header claiming 2 GiB closes that connection only', async () => {
    const r = await tcpExchange(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    expect(r.closed).toBe(true);
    expect(r.reply.length).toBe(0);
    await stillServing();
  });

  it('garbage records are dropped or refused, and the same connection still answers a NULL call after them', async () => {
    const records: Buffer[] = [];
    for (let i = 0; i < 50; i++) {
      const junk = Buffer.alloc(8 + ((i * 37) % 200));
      for (let j = 0; j < junk.length; j++) junk[j] = (i * 131 + j * 71) & 0xff;
      junk.writeUInt32BE(0xdead0000 + i, 0); // xid: never the one we wait for
      records.push(record(junk));
    }
    records.push(record(callHeader(0x4e554c4c, 2, NFS_PROGRAM, 3, 0)));
    const r = await tcpExchange(Buffer.concat(records), 0x4e554c4c);
    expect(r.closed).toBe(false);
    expect(r.reply.readUInt32BE(r.reply.length - 24 + 0)).toBe(0x4e554c4c);
    await stillServing();
  });

  it('RPC version 3 gets RPC_MISMATCH 2..2', async () => {
    const r = await tcpExchange(record(callHeader(0x1234, 3, NFS_PROGRAM, 3, 0)));
    // record mark, xid, REPLY, MSG_DENIED, RPC_MISMATCH, low, high
    expect(r.reply.readUInt32BE(4)).toBe(0x1234);
    expect([1, 2, 3, 4, 5].map((i) => r.reply.readUInt32BE(4 + i * 4))).toEqual([1, 1, 0, 2, 2]);
    await stillServing();
  });

  it('truncated GETATTR arguments get GARBAGE_ARGS', async () => {
    const body = Buffer.concat([callHeader(0x99, 2, NFS_PROGRAM, 3, 1), Buffer.from([0, 0, 0, 32, 1, 2])]);
    const r = await tcpExchange(record(body));
    expect(r.reply.readUInt32BE(4)).toBe(0x99);
    expect(r.reply.readUInt32BE(4 + 5 * 4)).toBe(4); // accept_stat GARBAGE_ARGS
  });
});

describe('over UDP', () => {
  it('garbage datagrams and a lying length never stop UDP service', async () => {
    const sock = dgram.createSocket('udp4');
    for (let i = 0; i < 50; i++) sock.send(Buffer.alloc(i * 3, i), server.ports.nfs, '127.0.0.1');
    // A GETATTR whose handle length says 1000 bytes in a 60-byte datagram.
    const lying = Buffer.concat([callHeader(0x77, 2, NFS_PROGRAM, 3, 1), Buffer.from([0, 0, 3, 0xe8, 1, 2, 3, 4])]);
    const reply = await new Promise<Buffer>((resolve) => {
      sock.on('message', (m) => {
        if (m.readUInt32BE(0) === 0x77) resolve(m);
      });
      sock.send(lying, server.ports.nfs, '127.0.0.1');
    });
    sock.close();
    expect(reply.readUInt32BE(5 * 4)).toBe(4); // GARBAGE_ARGS
    const udp = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.nfs, transport: 'udp' });
    await udp.call(NFS_PROGRAM, 3, 0, null);
    await udp.close();
    await stillServing();
  });
});

const GARBAGE_ARGS = 4;
/** accept_stat of an accepted reply (xid, REPLY, MSG_ACCEPTED, verifier flavor and length, stat). */
const acceptStat = (reply: Buffer) => {
  expect(reply.readUInt32BE(8)).toBe(0); // MSG_ACCEPTED
  return reply.readUInt32BE(20);
};

describe.each(['tcp', 'udp'] as const)('strict decoding over %s', (transport) => {
  let rpc: RpcClient;
  let nfsPort: number;

  beforeAll(async () => {
    nfsPort = server.ports.nfs;
    rpc = await RpcClient.connect({ host: '127.0.0.1', port: nfsPort, transport, timeoutMs: 5000 });
  });

  afterAll(async () => {
    await rpc?.close();
  });

  async function stillAnswers(client = rpc): Promise<void> {
    await client.call(NFS_PROGRAM, 3, 0, null);
  }

  it('a 65-byte file handle is GARBAGE_ARGS; 64 bytes is a well-formed (stale) handle', async () => {
    const long = await rpc.callRaw(rpc.encodeCall(NFS_PROGRAM, 3, 1, (w) => encodeFhArgs(w, Buffer.alloc(65, 1))));
    expect(acceptStat(long)).toBe(GARBAGE_ARGS);
    const max = await rpc.callRaw(rpc.encodeCall(NFS_PROGRAM, 3, 1, (w) => encodeFhArgs(w, Buffer.alloc(64, 1))));
    expect(acceptStat(max)).toBe(0);
    expect(max.readUInt32BE(24)).not.toBe(NfsStat.OK);
    await stillAnswers();
  });

  it('a 256-byte name is NAMETOOLONG; a name longer than a path can be is GARBAGE_ARGS', async () => {
    const r256 = await rpc.callRaw(rpc.encodeCall(NFS_PROGRAM, 3, 3, (w) => encodeDiropArgs(w, s.root, 'n'.repeat(256))));
    expect(acceptStat(r256)).toBe(0);
    expect(r256.readUInt32BE(24)).toBe(NfsStat.NAMETOOLONG);
    const r255 = await rpc.callRaw(rpc.encodeCall(NFS_PROGRAM, 3, 3, (w) => encodeDiropArgs(w, s.root, 'n'.repeat(255))));
    expect(r255.readUInt32BE(24)).toBe(NfsStat.NOENT);
    const huge = await rpc.callRaw(rpc.encodeCall(NFS_PROGRAM, 3, 3, (w) => encodeDiropArgs(w, s.root, 'n'.repeat(1025))));
    expect(acceptStat(huge)).toBe(GARBAGE_ARGS);
    await stillAnswers();
  });

  it('a symlink target over 1024 bytes is GARBAGE_ARGS', async () => {
    const r = await rpc.callRaw(rpc.encodeCall(NFS_PROGRAM, 3, 10, (w) => encodeSymlinkArgs(w, s.root, 'l', 't'.repeat(1025), {})));
    expect(acceptStat(r)).toBe(GARBAGE_ARGS);
    expect(fs.existsSync(path.join(work, 'l'))).toBe(false);
    await stillAnswers();
  });

  it('a MOUNT path over 1024 bytes is GARBAGE_ARGS', async () => {
    const m = await RpcClient.connect({ host: '127.0.0.1', port: server.ports.mount, transport, timeoutMs: 5000 });
    try {
      const r = await m.callRaw(m.encodeCall(MOUNT_PROGRAM, MOUNT_V3, 1, (w) => encodeMntArgs(w, `/${'p'.repeat(1024)}`)));
      expect(acceptStat(r)).toBe(GARBAGE_ARGS);
      await m.call(MOUNT_PROGRAM, MOUNT_V3, 0, null);
    } finally {
      await m.close();
    }
  });

  it('AUTH_SYS with 17 gids or a 256-byte machine name is AUTH_ERROR BADCRED; 16 and 255 are accepted', async () => {
    for (const [auth, ok] of [
      [{ gids: Array.from({ length: 17 }, (_, i) => i) }, false],
      [{ machineName: 'm'.repeat(256) }, false],
      [{ gids: Array.from({ length: 16 }, (_, i) => i), machineName: 'm'.repeat(255) }, true],
    ] as const) {
      const c = await RpcClient.connect({ host: '127.0.0.1', port: nfsPort, transport, timeoutMs: 5000, auth: { ...auth } });
      try {
        const r = await c.callRaw(c.encodeCall(NFS_PROGRAM, 3, 1, (w) => encodeFhArgs(w, s.root)));
        if (ok) {
          expect(acceptStat(r)).toBe(0);
          expect(r.readUInt32BE(24)).toBe(NfsStat.OK);
        } else {
          expect([r.readUInt32BE(8), r.readUInt32BE(12), r.readUInt32BE(16)]).toEqual([1, 1, 1]); // MSG_DENIED, AUTH_ERROR, AUTH_BADCRED
        }
      } finally {
        await c.close();
      }
    }
    await stillAnswers();
  });

  it('RPC version 3 is RPC_MISMATCH 2..2', async () => {
    const msg = rpc.encodeCall(NFS_PROGRAM, 3, 0, null);
    msg.writeUInt32BE(3, 8);
    const r = await rpc.callRaw(msg);
    expect([1, 2, 3, 4, 5].map((i) => r.readUInt32BE(i * 4))).toEqual([1, 1, 0, 2, 2]);
  });

  it('a REPLY message sent to the server gets no answer and changes nothing', async () => {
    const msg = rpc.encodeCall(NFS_PROGRAM, 3, 0, null);
    msg.writeUInt32BE(1, 4); // msg_type REPLY
    await expect(rpc.callRaw(msg, { timeoutMs: 1500 })).rejects.toThrow();
    await stillAnswers();
  });

  it('lengths that run past the end of the record are GARBAGE_ARGS, at every truncation of a LOOKUP', async () => {
    const full = rpc.encodeCall(NFS_PROGRAM, 3, 3, (w) => encodeDiropArgs(w, s.root, 'some-name'));
    const argsAt = full.length - (4 + s.root.length + 4 + 12);
    let garbage = 0;
    for (let cut = argsAt; cut < full.length; cut += 4) {
      const r = await rpc.callRaw(full.subarray(0, cut));
      if (acceptStat(r) === GARBAGE_ARGS) garbage++;
    }
    expect(garbage).toBe((full.length - argsAt) / 4);
    await stillAnswers();
  });
});
