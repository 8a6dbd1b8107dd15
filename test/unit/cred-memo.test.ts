/** The per-connection AUTH_SYS memo: same identity decoded once, any change decoded afresh. */
import { describe, expect, it } from 'vitest';
import { CredMemo, decodeCallHeader, writeCallHeader, type Credentials } from '../../src/rpc/message.js';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr.js';

function call(cred: Credentials, stamp = 0): Buffer {
  const w = new XdrWriter();
  w.begin();
  writeCallHeader(w, 7, 100003, 3, 1, cred);
  const buf = Buffer.from(w.finish());
  buf.writeUInt32BE(stamp, 32); // xid, type, rpcvers, prog, vers, proc, flavor, length: the stamp follows
  return buf;
}

const node7: Credentials = { flavor: 1, uid: 1000, gid: 100, gids: [100, 27], machineName: 'node7' };

describe('credential memo', () => {
  it('shares one frozen Credentials across calls whose identity bytes match, whatever the stamp', () => {
    const memo = new CredMemo();
    const a = decodeCallHeader(new XdrReader(call(node7, 1)), memo)!;
    const b = decodeCallHeader(new XdrReader(call(node7, 2)), memo)!;
    expect(a.cred).toEqual(node7);
    expect(b.cred).toBe(a.cred);
    expect(Object.isFrozen(b.cred) && Object.isFrozen(b.cred.gids)).toBe(true);
  });

  it('decodes a changed uid, gid list or machine name afresh', () => {
    const memo = new CredMemo();
    decodeCallHeader(new XdrReader(call(node7)), memo);
    for (const other of [
      { ...node7, uid: 0 },
      { ...node7, gids: [100] },
      { ...node7, machineName: 'node8' },
    ]) {
      expect(decodeCallHeader(new XdrReader(call(other)), memo)!.cred).toEqual(other);
    }
  });

  it('still refuses a malformed credential after a good one on the same connection', () => {
    const memo = new CredMemo();
    decodeCallHeader(new XdrReader(call(node7)), memo);
    const bad = call({ ...node7, gids: [1, 2, 3] });
    bad.writeUInt32BE(17, 40 + 8 + 8); // gid count: stamp, name length + "node7" padded, uid, gid, then the count
    const h = decodeCallHeader(new XdrReader(bad), memo)!;
    expect(h.badCred).toBe(true);
  });
});
