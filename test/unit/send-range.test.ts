/**
 * The native sendfile addon on its own, over a real loopback TCP connection: what reaches the
 * client is the head, the file's bytes and the tail, exactly; a file shorter than the range, a
 * client that reads nothing (stall timeout) and abort() each end the send with the errno the
 * transport acts on (tcp.ts closes the connection), and the socket Node owns stays Node's.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendRangeAddon } from '../../src/rpc/send-range.js';

const { ENODATA, ETIMEDOUT } = os.constants.errno;
const FILE_BYTES = 3 * 1024 * 1024 + 17;

let work: string;
let filePath: string;
let content: Buffer;
let fileFd: number;
/** A sparse file larger than the kernel's socket buffers on both sides, for the sends that must wait. */
let bigFd: number;
const BIG_BYTES = 128 * 1024 * 1024;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-sendrange-'));
  filePath = path.join(work, 'data');
  content = randomBytes(FILE_BYTES);
  fs.writeFileSync(filePath, content);
  fileFd = fs.openSync(filePath, 'r');
  const big = path.join(work, 'big');
  fs.writeFileSync(big, '');
  fs.truncateSync(big, BIG_BYTES);
  bigFd = fs.openSync(big, 'r');
});

afterAll(() => {
  fs.closeSync(fileFd);
  fs.closeSync(bigFd);
  fs.rmSync(work, { recursive: true, force: true });
});

/** A connected pair: the server side (whose descriptor the addon writes to) and the client. */
async function pair(): Promise<{ server: net.Socket; client: net.Socket; close: () => void }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const server = await accepted;
  listener.close();
  return {
    server,
    client,
    close: () => {
      server.destroy();
      client.destroy();
    },
  };
}

function fdOf(socket: net.Socket): number {
  return (socket as unknown as { _handle: { fd: number } })._handle.fd;
}

function send(server: net.Socket, position: number, length: number, head: Buffer, tail: Buffer | null, stallMs = 10_000, file = fileFd): { dup: number; done: Promise<[number, number]> } {
  let dup = -1;
  const done = new Promise<[number, number]>((resolve) => {
    dup = sendRangeAddon!.start(fdOf(server), file, position, length, head, tail, stallMs, (errno, sent) => resolve([errno, sent]));
  });
  return { dup, done };
}

/** Everything the client receives until `n` bytes or the connection ends. */
function receive(client: net.Socket, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  return new Promise((resolve) => {
    const finish = () => resolve(Buffer.concat(chunks));
    client.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= n) finish();
    });
    client.on('close', finish);
    client.on('error', () => {});
  });
}

describe('native sendfile addon', () => {
  it('is built (npm install compiles it; CI must run the path it serves)', () => {
    expect(sendRangeAddon).not.toBeNull();
    expect(sendRangeAddon!.threads).toBeGreaterThan(0);
  });

  it('sends head, the byte range and the tail, exactly and in order', async () => {
    const { server, client, close } = await pair();
    try {
      const head = Buffer.from('HEAD-of-reply');
      const tail = Buffer.from([0, 0, 0]);
      const position = 12_345;
      const length = 2 * 1024 * 1024 + 1;
      const got = receive(client, head.length + length + tail.length);
      const { done } = send(server, position, length, head, tail);
      expect(await done).toEqual([0, head.length + length + tail.length]);
      const bytes = await got;
      expect(bytes.length).toBe(head.length + length + tail.length);
      expect(bytes.subarray(0, head.length).equals(head)).toBe(true);
      expect(bytes.subarray(head.length, head.length + length).equals(content.subarray(position, position + length))).toBe(true);
      expect(bytes.subarray(head.length + length).equals(tail)).toBe(true);
      // The socket is still Node's and still works after the addon's duplicate was closed.
      const more = receive(client, 5);
      server.write('after');
      expect((await more).toString()).toContain('after');
    } finally {
      close();
    }
  });

  it('fails with ENODATA when the file ends before the range does (it shrank), after sending what there was', async () => {
    const { server, client, close } = await pair();
    try {
      const head = Buffer.from('H');
      const position = FILE_BYTES - 1000;
      const got = receive(client, head.length + 1000);
      const { done } = send(server, position, 5000, head, null);
      expect(await done).toEqual([ENODATA, head.length + 1000]);
      expect((await got).subarray(head.length).equals(content.subarray(position))).toBe(true);
    } finally {
      close();
    }
  });

  /**
   * A send of the big sparse file to a client that reads nothing, so it must wait; `during` runs
   * meanwhile with the duplicate descriptor. Resolves with the send's errno and bytes sent.
   */
  async function sendToStalledClient(stallMs: number, during: (dup: number) => Promise<void>): Promise<[number, number]> {
    const { server, client, close } = await pair();
    try {
      client.pause();
      const { dup, done } = send(server, 0, BIG_BYTES, Buffer.from('H'), null, stallMs, bigFd);
      await during(dup);
      const result = await done;
      expect(result[1]).toBeLessThan(BIG_BYTES);
      return result;
    } finally {
      close();
    }
  }

  it('gives up with ETIMEDOUT on a client that reads nothing for the stall time', async () => {
    const [errno, sent] = await sendToStalledClient(300, async () => {});
    expect(errno).toBe(ETIMEDOUT);
    expect(sent).toBeGreaterThan(0);
  });

  it('abort() ends a send that waits for a client, at once and with an error', async () => {
    // Far longer than the test may take: only abort() can end it in time.
    const [errno] = await sendToStalledClient(120_000, async (dup) => {
      // Let it fill the buffers and start waiting, then abort (as tcp.ts does on 'close').
      await new Promise((r) => setTimeout(r, 200));
      sendRangeAddon!.abort(dup);
    });
    expect(errno).not.toBe(0);
    expect(errno).not.toBe(ETIMEDOUT);
  });
});
