import { describe, expect, it } from 'vitest';
import { CreateMode, FType, NfsStat, StableHow } from '../../src/nfs/constants.js';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr.js';
import * as A from '../../src/client/nfs3-args.js';
import * as D from '../../src/client/nfs3-results.js';
import { decodeExports, decodeMntV1Res, decodeMntV3Res } from '../../src/client/mount-client.js';
import { decodePmapList, parseUaddr, toUaddr } from '../../src/client/portmap-client.js';
import { RpcClient, RpcError, parseReply } from '../../src/client/rpc-client.js';

/** Hex with spaces between words, as the RFC layouts are easiest to read by hand. */
function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function encode(fn: (w: XdrWriter) => void): string {
  const w = new XdrWriter(256);
  w.begin();
  fn(w);
  return w.finish().toString('hex');
}

function reader(s: string): XdrReader {
  return new XdrReader(hex(s));
}

const FH4 = Buffer.from([0xaa, 0xbb, 0xcc, 0xdd]);

// fattr3 of a regular file: type 1, mode 0644, nlink 2, uid 1000, gid 100, size 2^32+1,
// used 4096, rdev 0/0, fsid 0x0000000100000002, fileid 12345, atime 1.2, mtime 3.4, ctime 5.6
const FATTR_HEX = `
  00000001 000001a4 00000002 000003e8 00000064
  00000001 00000001  00000000 00001000
  00000000 00000000
  00000001 00000002  00000000 00003039
  00000001 00000002  00000003 00000004  00000005 00000006`;

describe('NFSv3 argument encoders produce the RFC 1813 layout', () => {
  it('LOOKUP: nfs_fh3 then filename3, both padded', () => {
    const fh = Buffer.from([1, 2, 3, 4, 5, 6]);
    expect(encode((w) => A.encodeDiropArgs(w, fh, 'abc'))).toBe('00000006' + '010203040506' + '0000' + '00000003' + '61626300');
  });

  it('names are byte strings: latin1 chars and raw bytes go out unchanged', () => {
    expect(encode((w) => A.encodeDiropArgs(w, FH4, '\xe9'))).toBe('00000004aabbccdd' + '00000001' + 'e9000000');
    expect(encode((w) => A.encodeDiropArgs(w, FH4, Buffer.from([0xff, 0xfe])))).toBe('00000004aabbccdd' + '00000002' + 'fffe0000');
  });

  it('SETATTR: sattr3 with set_it flags, both time_how kinds and a ctime guard', () => {
    const got = encode((w) =>
      A.encodeSetattrArgs(w, FH4, { mode: 0o644, size: 0x100000002, atime: { sec: 0x11223344, nsec: 5 }, mtime: 'server' }, { sec: 7, nsec: 8 }),
    );
    expect(got).toBe(
      hex(`
        00000004 aabbccdd
        00000001 000001a4
        00000000
        00000000
        00000001 00000001 00000002
        00000002 11223344 00000005
        00000001
        00000001 00000007 00000008`).toString('hex'),
    );
  });

  it('SETATTR without changes or guard is all DONT_CHANGE', () => {
    expect(encode((w) => A.encodeSetattrArgs(w, FH4, {}))).toBe('00000004aabbccdd' + '00000000'.repeat(7));
  });

  it('WRITE: offset as hyper, count, stable_how, opaque data', () => {
    const got = encode((w) => A.encodeWriteArgs(w, FH4, 2 ** 32 + 5, Buffer.from('xyz'), StableHow.FILE_SYNC));
    expect(got).toBe(hex('00000004 aabbccdd 00000001 00000005 00000003 00000002 00000003 78797a00').toString('hex'));
  });

  it('CREATE EXCLUSIVE sends the verifier instead of attributes', () => {
    const verf = Buffer.from('0102030405060708', 'hex');
    const got = encode((w) => A.encodeCreateArgs(w, FH4, 'f', CreateMode.EXCLUSIVE, { mode: 0o600 }, verf));
    expect(got).toBe(hex('00000004 aabbccdd 00000001 66000000 00000002 01020304 05060708').toString('hex'));
    expect(() => encode((w) => A.encodeCreateArgs(w, FH4, 'f', CreateMode.EXCLUSIVE, {}))).toThrow(RangeError);
  });

  it('CREATE GUARDED sends sattr3', () => {
    const got = encode((w) => A.encodeCreateArgs(w, FH4, 'f', CreateMode.GUARDED, { uid: 5, gid: 6 }));
    expect(got).toBe(hex('00000004 aabbccdd 00000001 66000000 00000001 00000000 00000001 00000005 00000001 00000006 00000000 00000000 00000000').toString('hex'));
  });

  it('MKNOD: devices carry specdata3, FIFOs only attributes, other types nothing', () => {
    const chr = encode((w) => A.encodeMknodArgs(w, FH4, 'c', FType.CHR, { mode: 0o600 }, { major: 1, minor: 3 }));
    expect(chr).toBe(hex('00000004 aabbccdd 00000001 63000000 00000004 00000001 00000180 00000000 00000000 00000000 00000000 00000000 00000001 00000003').toString('hex'));
    const fifo = encode((w) => A.encodeMknodArgs(w, FH4, 'p', FType.FIFO, {}));
    expect(fifo).toBe(hex('00000004 aabbccdd 00000001 70000000 00000007' + ' 00000000'.repeat(6)).toString('hex'));
    const reg = encode((w) => A.encodeMknodArgs(w, FH4, 'r', FType.REG, { mode: 1 }));
    expect(reg).toBe(hex('00000004 aabbccdd 00000001 72000000 00000001').toString('hex'));
  });

  it('READDIRPLUS: exact 64-bit cookie, cookieverf, dircount, maxcount', () => {
    const verf = Buffer.from('1122334455667788', 'hex');
    const got = encode((w) => A.encodeReaddirplusArgs(w, FH4, 0xfedcba9876543210n, verf, 1024, 8192));
    expect(got).toBe(hex('00000004 aabbccdd fedcba98 76543210 11223344 55667788 00000400 00002000').toString('hex'));
    expect(encode((w) => A.encodeReaddirArgs(w, FH4, 0n, null, 512))).toBe(hex('00000004 aabbccdd 00000000 00000000 00000000 00000000 00000200').toString('hex'));
  });

  it('SYMLINK: sattr3 comes before the target path', () => {
    const got = encode((w) => A.encodeSymlinkArgs(w, FH4, 'l', '../t', {}));
    expect(got).toBe(hex('00000004 aabbccdd 00000001 6c000000' + ' 00000000'.repeat(6) + ' 00000004 2e2e2f74').toString('hex'));
  });

  it('RENAME, LINK, ACCESS, COMMIT', () => {
    expect(encode((w) => A.encodeRenameArgs(w, FH4, 'a', FH4, 'bb'))).toBe(hex('00000004 aabbccdd 00000001 61000000 00000004 aabbccdd 00000002 62620000').toString('hex'));
    expect(encode((w) => A.encodeLinkArgs(w, FH4, FH4, 'x'))).toBe(hex('00000004 aabbccdd 00000004 aabbccdd 00000001 78000000').toString('hex'));
    expect(encode((w) => A.encodeAccessArgs(w, FH4, 0x3f))).toBe('00000004aabbccdd0000003f');
    expect(encode((w) => A.encodeCommitArgs(w, FH4, 0, 0))).toBe('00000004aabbccdd' + '00000000'.repeat(3));
  });

  it('call header: xid, CALL, rpcvers 2, prog/vers/proc, AUTH_SYS body, AUTH_NONE verifier', () => {
    const c = new RpcClient({ host: '127.0.0.1', port: 9, transport: 'udp', auth: { uid: 1000, gid: 100, gids: [100, 4], machineName: 'node1' } });
    const msg = c.encodeCall(100003, 3, 1, (w) => A.encodeFhArgs(w, FH4));
    const xid = msg.readUInt32BE(0).toString(16).padStart(8, '0');
    expect(msg.toString('hex')).toBe(
      hex(`${xid} 00000000 00000002 000186a3 00000003 00000001
        00000001 00000024
          00000000 00000005 6e6f6465 31000000 000003e8 00000064 00000002 00000064 00000004
        00000000 00000000
        00000004 aabbccdd`).toString('hex'),
    );
    c.setAuth('none');
    const none = c.encodeCall(100005, 3, 0, null);
    expect(none.subarray(4).toString('hex')).toBe(hex('00000000 00000002 000186a5 00000003 00000000 00000000 00000000 00000000 00000000').toString('hex'));
    expect(none.readUInt32BE(0)).toBe((msg.readUInt32BE(0) + 1) >>> 0);
  });
});

describe('NFSv3 result decoders parse hand-built replies', () => {
  it('GETATTR: every fattr3 field', () => {
    const res = D.decodeGetattrRes(reader('00000000' + FATTR_HEX));
    expect(res.status).toBe(NfsStat.OK);
    expect(res.attr).toEqual({
      type: FType.REG,
      mode: 0o644,
      nlink: 2,
      uid: 1000,
      gid: 100,
      size: 2 ** 32 + 1,
      used: 4096,
      rdev: { major: 0, minor: 0 },
      fsid: 0x100000002n,
      fileid: 12345,
      atime: { sec: 1, nsec: 2 },
      mtime: { sec: 3, nsec: 4 },
      ctime: { sec: 5, nsec: 6 },
    });
  });

  it('GETATTR error carries no attributes', () => {
    expect(D.decodeGetattrRes(reader('00000046'))).toEqual({ status: NfsStat.STALE, attr: null });
  });

  it('LOOKUP error still carries the directory attributes', () => {
    const res = D.decodeLookupRes(reader('00000002 00000001' + FATTR_HEX));
    expect(res.status).toBe(NfsStat.NOENT);
    expect(res.fh).toBeNull();
    expect(res.dirAttr?.fileid).toBe(12345);
  });

  it('WRITE: wcc before/after, count, committed, verifier', () => {
    const r = reader(`00000000
      00000001  00000000 00000010  00000009 00000000  0000000a 00000000
      00000001 ${FATTR_HEX}
      00000003 00000002 deadbeef 01020304`);
    const res = D.decodeWriteRes(r);
    expect(res.status).toBe(NfsStat.OK);
    expect(res.wcc.before).toEqual({ size: 16, mtime: { sec: 9, nsec: 0 }, ctime: { sec: 10, nsec: 0 } });
    expect(res.wcc.after?.size).toBe(2 ** 32 + 1);
    expect(res.count).toBe(3);
    expect(res.committed).toBe(StableHow.FILE_SYNC);
    expect(res.verf?.toString('hex')).toBe('deadbeef01020304');
    expect(r.remaining()).toBe(0);
  });

  it('WRITE error: only wcc, here without before or after', () => {
    expect(D.decodeWriteRes(reader('0000001e 00000000 00000000'))).toEqual({
      status: NfsStat.ROFS, wcc: { before: null, after: null }, count: 0, committed: -1, verf: null,
    });
  });

  it('READDIRPLUS with two entries: exact cookies, attributes and handles', () => {
    const r = reader(`00000000
      00000000
      0102030405060708
      00000001  00000000 00000007  00000001 61000000  80000000 00000001
        00000001 ${FATTR_HEX}
        00000001 00000004 aabbccdd
      00000001  00000000 00000008  00000002 ff620000  ffffffff fffffffe
        00000000
        00000000
      00000000
      00000001`);
    const res = D.decodeReaddirplusRes(r);
    expect(res.status).toBe(NfsStat.OK);
    expect(res.dirAttr).toBeNull();
    expect(res.cookieverf?.toString('hex')).toBe('0102030405060708');
    expect(res.eof).toBe(true);
    expect(res.entries).toHaveLength(2);
    const [a, b] = res.entries;
    expect(a.fileid).toBe(7);
    expect(a.name).toBe('a');
    expect(a.cookie).toBe(0x8000000000000001n);
    expect(a.attr?.mode).toBe(0o644);
    expect(a.fh?.toString('hex')).toBe('aabbccdd');
    expect(b.fileid).toBe(8);
    expect(Buffer.from(b.name, 'latin1').toString('hex')).toBe('ff62');
    expect(b.cookie).toBe(0xfffffffffffffffen);
    expect(b.attr).toBeNull();
    expect(b.fh).toBeNull();
    expect(r.remaining()).toBe(0);
  });

  it('READDIR: a truncated entry list is an error, not a silent short list', () => {
    expect(() => D.decodeReaddirRes(reader('00000000 00000000 0102030405060708 00000001 00000000'))).toThrow();
  });

  it('READ: data and eof; CREATE with post_op_fh3 and dir wcc', () => {
    const read = D.decodeReadRes(reader('00000000 00000000 00000005 00000001 00000005 68656c6c 6f000000'));
    expect(read.count).toBe(5);
    expect(read.eof).toBe(true);
    expect(read.data.toString()).toBe('hello');
    const create = D.decodeDiropRes(reader('00000000 00000001 00000002 beef0000 00000000 00000000 00000000'));
    expect(create.fh?.toString('hex')).toBe('beef');
    expect(create.objAttr).toBeNull();
    expect(create.dirWcc).toEqual({ before: null, after: null });
  });

  it('FSINFO and PATHCONF', () => {
    const fsinfo = D.decodeFsinfoRes(reader('00000000 00000000 00100000 00010000 00001000 00100000 00010000 00001000 00002000 7fffffff ffffffff 00000000 00000001 0000001b'));
    expect(fsinfo).toMatchObject({ rtmax: 1 << 20, wtpref: 65536, dtpref: 8192, maxFileSize: Number.MAX_SAFE_INTEGER, timeDelta: { sec: 0, nsec: 1 }, properties: 0x1b });
    const pc = D.decodePathconfRes(reader('00000000 00000000 00000020 000000ff 00000001 00000001 00000000 00000001'));
    expect(pc).toMatchObject({ linkMax: 32, nameMax: 255, noTrunc: true, chownRestricted: true, caseInsensitive: false, casePreserving: true });
  });
});

describe('MOUNT, portmap and RPC reply decoding', () => {
  it('MNT v3 handle and auth flavors; MNT v1 fixed 32-byte fhstatus', () => {
    expect(decodeMntV3Res(reader('00000000 00000004 aabbccdd 00000002 00000001 00000000'))).toEqual({
      status: 0, fh: FH4, authFlavors: [1, 0],
    });
    expect(decodeMntV3Res(reader('0000000d'))).toEqual({ status: 13, fh: null, authFlavors: [] });
    const v1 = decodeMntV1Res(reader('00000000' + '11'.repeat(32)));
    expect(v1.fh?.length).toBe(32);
  });

  it('EXPORT list with groups', () => {
    const r = reader(`00000001 00000004 2f737276 00000001 00000001 2a000000 00000001 00000002 31300000 00000000
      00000001 00000002 2f780000 00000000
      00000000`);
    expect(decodeExports(r)).toEqual([
      { dir: '/srv', groups: ['*', '10'] },
      { dir: '/x', groups: [] },
    ]);
  });

  it('PMAP DUMP list and universal addresses', () => {
    expect(decodePmapList(reader('00000001 000186a3 00000003 00000006 00000801 00000000'))).toEqual([{ prog: 100003, vers: 3, prot: 6, port: 2049 }]);
    expect(parseUaddr('127.0.0.1.8.1')).toEqual({ host: '127.0.0.1', port: 2049 });
    expect(parseUaddr('')).toBeNull();
    expect(toUaddr('127.0.0.1', 20048)).toBe('127.0.0.1.78.80');
  });

  it('reply kinds become RpcError with their details', () => {
    const mismatch = (): XdrReader => parseReply(hex('00000007 00000001 00000000 00000000 00000000 00000002 00000002 00000003'));
    expect(mismatch).toThrow(RpcError);
    try {
      mismatch();
    } catch (e) {
      expect(e).toMatchObject({ kind: 'PROG_MISMATCH', xid: 7, low: 2, high: 3 });
    }
    try {
      parseReply(hex('00000008 00000001 00000001 00000001 00000005'));
      expect.unreachable();
    } catch (e) {
      expect(e).toMatchObject({ kind: 'AUTH_ERROR', authStat: 5 });
    }
    const ok = parseReply(hex('00000009 00000001 00000000 00000001 00000004 01020304 00000000 0000002a'));
    expect(ok.u32()).toBe(42);
  });
});
