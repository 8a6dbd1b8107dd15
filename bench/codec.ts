/**
 * Codec evaluation: our hand-written XDR/RPC path against @jsonjoy.com/json-pack (devDependency).
 *
 *   npx tsc -p . && node dist/bench/codec.js [iterations] [rounds]
 *
 * Part 1 checks correctness on the two points that matter to a file server: file names as raw
 * bytes, and 64-bit fields. Part 2 times the per-call codec work of a cached GETATTR:
 *   decode: RPC call header + AUTH_SYS credential + nfs_fh3 (32-byte handle)
 *   encode: record mark + accepted reply header + nfsstat3 + fattr3
 * Each side is timed in rounds of `iterations` calls, alternating, and the median ns/op is
 * reported (min and max too: the machines are shared, so single rounds are noisy).
 * Results are written up in docs/codec.md.
 */
import { Reader } from '@jsonjoy.com/buffers/lib/Reader.js';
import {
  FullNfsv3Encoder,
  Nfsv3Decoder,
  Nfsv3DirOpArgs,
  Nfsv3Encoder,
  Nfsv3Entry,
  Nfsv3Fattr,
  Nfsv3Fh,
  Nfsv3GetattrResOk,
  Nfsv3GetattrResponse,
  Nfsv3LookupRequest,
  Nfsv3ReaddirRequest,
  Nfsv3SpecData,
  Nfsv3Time,
  type Nfsv3GetattrRequest,
  type Nfsv3ReaddirRequest as ReaddirRequestT,
  type Nfsv3LookupRequest as LookupRequestT,
} from '@jsonjoy.com/json-pack/lib/nfs/v3/index.js';
import { RpcCallMessage, RpcMessageDecoder, RpcOpaqueAuth } from '@jsonjoy.com/json-pack/lib/rpc/index.js';
import { XdrDecoder } from '@jsonjoy.com/json-pack/lib/xdr/XdrDecoder.js';
import { AcceptStat, decodeCallHeader, writeAcceptedHeader, writeCallHeader } from '../src/rpc/message.js';
import { XdrReader, XdrWriter } from '../src/rpc/xdr.js';

const NFS_PROGRAM = 100003;
const GETATTR = 1;
const LOOKUP = 3;
const READDIR = 16;

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
}

// ---------------------------------------------------------------------------------------------
// Part 1: correctness
// ---------------------------------------------------------------------------------------------

function checkNames(): void {
  console.log('== (a) file names as raw bytes: name = Buffer [0x66, 0xff, 0x80] ==');
  const rawName = Buffer.from([0x66, 0xff, 0x80]);
  const fh = Buffer.alloc(32, 7);

  // LOOKUP3args on the wire as a Linux client sends it: diropargs3 { nfs_fh3 dir; filename3 name }.
  const w = new XdrWriter();
  w.begin();
  w.opaque(fh);
  w.opaque(rawName);
  const wire = Buffer.from(w.finish());

  // Ours: decode as a byte string, re-encode.
  const r = new XdrReader(wire);
  r.opaque(64);
  const ourName = r.bytesString(255);
  const w2 = new XdrWriter();
  w2.begin();
  w2.opaque(fh);
  w2.bytesString(ourName);
  const ourBack = Buffer.from(w2.finish());
  console.log(`ours      decoded name bytes ${Buffer.from(ourName, 'latin1').toString('hex')}, re-encoded identical: ${ourBack.equals(wire)}`);

  // json-pack: decode the same LOOKUP args, re-encode.
  const dec = new Nfsv3Decoder();
  const req = dec.decodeMessage(new Reader(wire), LOOKUP, true) as LookupRequestT;
  const name = req.what.name;
  const enc = new Nfsv3Encoder();
  const back = enc.encodeMessage(new Nfsv3LookupRequest(new Nfsv3DirOpArgs(new Nfsv3Fh(fh), name)), LOOKUP, true);
  const nameOnWire = Buffer.from(back).subarray(4 + 32 + 4);
  const nameLen = Buffer.from(back).readUInt32BE(4 + 32);
  console.log(
    `json-pack decoded name ${JSON.stringify(name)} (UTF-8 bytes ${Buffer.from(name, 'utf8').toString('hex')}), ` +
      `re-encoded as ${nameLen} bytes ${nameOnWire.subarray(0, nameLen).toString('hex')}, identical: ${Buffer.from(back).equals(wire)}`,
  );
  // The API only takes strings: the best a caller can do is a latin1 string, which goes out as UTF-8.
  const latin1 = rawName.toString('latin1');
  const out = Buffer.from(enc.encodeMessage(new Nfsv3LookupRequest(new Nfsv3DirOpArgs(new Nfsv3Fh(fh), latin1)), LOOKUP, true));
  const l2 = out.readUInt32BE(36);
  console.log(`json-pack encoding the latin1 string ${JSON.stringify(latin1)} writes ${l2} bytes ${out.subarray(40, 40 + l2).toString('hex')}`);
  // Invalid UTF-8 is not even replaced consistently: bytes are dropped, so distinct names collide.
  const a = Buffer.from([0x66, 0xc3, 0x28, 0x61]); // invalid: c3 needs a continuation byte
  const b = Buffer.from([0x66, 0xc3, 0xa8, 0x61]); // valid UTF-8 "fèa"
  const lookupName = (n: Buffer) => {
    const wr = new XdrWriter();
    wr.begin();
    wr.opaque(fh);
    wr.opaque(n);
    return (dec.decodeMessage(new Reader(Buffer.from(wr.finish())), LOOKUP, true) as LookupRequestT).what.name;
  };
  const na = lookupName(a);
  const nb = lookupName(b);
  console.log(
    `json-pack: names ${a.toString('hex')} and ${b.toString('hex')} decode to ${JSON.stringify(na)} and ${JSON.stringify(nb)}: ` +
      `${na === nb ? 'COLLIDE (two files, one name)' : 'distinct'}`,
  );
  // READDIR entry names go through the same writeStr.
  const e = new Nfsv3Entry(1n, latin1, 1n);
  console.log(`json-pack entry3.name is a ${typeof e.name}: there is no Buffer/bytes variant of filename3`);
}

function checkHypers(): void {
  console.log('\n== (b) 64-bit fields (READDIR cookie, fattr3 size) ==');
  const values = [2n ** 32n + 1n, 2n ** 53n - 1n, 2n ** 53n + 1n, 2n ** 64n - 1n];
  for (const v of values) {
    const hi = Number(v >> 32n);
    const lo = Number(v & 0xffffffffn);
    // READDIR3args: dir, cookie, cookieverf[8], count.
    const w = new XdrWriter();
    w.begin();
    w.opaque(Buffer.alloc(32, 1));
    w.u64parts(hi, lo);
    w.fixedOpaque(Buffer.alloc(8, 2));
    w.u32(4096);
    const wire = Buffer.from(w.finish());
    const r = new XdrReader(wire);
    r.opaque(64);
    const ours = r.u64();
    const jp = (new Nfsv3Decoder().decodeMessage(new Reader(wire), READDIR, true) as ReaddirRequestT).cookie;
    const jpBack = Buffer.from(
      new Nfsv3Encoder().encodeMessage(new Nfsv3ReaddirRequest(new Nfsv3Fh(Buffer.alloc(32, 1)), jp, Buffer.alloc(8, 2), 4096), READDIR, true),
    );
    console.log(
      `cookie ${v}: ours reads ${ours} (${BigInt(ours) === v ? 'exact' : 'saturated'}), ` +
        `json-pack reads ${jp}n (${jp === v ? 'exact' : 'WRONG'}), json-pack re-encode identical: ${jpBack.equals(wire)}`,
    );
  }
}

function checkBounds(): void {
  console.log('\n== robustness notes ==');
  // A 40-byte GETATTR argument claiming a 1000-byte handle, inside a larger receive buffer.
  const chunk = Buffer.alloc(2000, 0x41);
  chunk.writeUInt32BE(1000, 0);
  const record = chunk.subarray(0, 40);
  try {
    new XdrReader(chunk, 0, 40).opaque(64);
    console.log('ours: accepted (unexpected)');
  } catch (e) {
    console.log(`ours: ${(e as Error).constructor.name}: ${(e as Error).message}`);
  }
  const viaEnd = new Nfsv3Decoder().decodeMessage(new Reader(chunk, undefined, 0, 40), GETATTR, true) as Nfsv3GetattrRequest | undefined;
  console.log(`json-pack, Reader(end=40) over the whole chunk: handle of ${viaEnd?.object.data.length} bytes (read past end)`);
  const viaView = new Nfsv3Decoder().decodeMessage(new Reader(record), GETATTR, true) as Nfsv3GetattrRequest | undefined;
  console.log(`json-pack, Reader over the 40-byte record: handle of ${viaView?.object.data.length} bytes (silently truncated, no error)`);
  const rr = new Reader();
  rr.reset(new Uint8Array(64));
  console.log(`json-pack Reader.reset(64 bytes) leaves end=${rr.end}, size()=${rr.size()}: a reused Reader needs end set by hand`);
}

// ---------------------------------------------------------------------------------------------
// Part 2: cost
// ---------------------------------------------------------------------------------------------

/** A GETATTR call as the Linux client sends it (the record, without its record mark). */
function getattrCall(): Buffer {
  const w = new XdrWriter();
  w.begin();
  writeCallHeader(w, 0x5a5a0001, NFS_PROGRAM, 3, GETATTR, {
    flavor: 1,
    uid: 1000,
    gid: 1000,
    gids: [4, 24, 27, 30, 46, 100, 1000],
    machineName: 'node-0042',
  });
  w.opaque(Buffer.alloc(32, 0x3c));
  return Buffer.from(w.finish());
}

/** What the attribute cache would hold for one file (plain numbers on our side). */
const attrs = {
  type: 1,
  mode: 0o100644,
  nlink: 1,
  uid: 0,
  gid: 0,
  size: 123456789,
  used: 123457536,
  rdevMajor: 0,
  rdevMinor: 0,
  fsid: 0x803,
  fileid: 2 ** 40 + 12345,
  atimeS: 1700000000,
  atimeNs: 123456789,
  mtimeS: 1700000001,
  mtimeNs: 223456789,
  ctimeS: 1700000002,
  ctimeNs: 323456789,
};

/** The same attributes as json-pack's struct (bigint 64-bit fields), built once as a cache would. */
const jpAttrs = new Nfsv3Fattr(
  attrs.type,
  attrs.mode,
  attrs.nlink,
  attrs.uid,
  attrs.gid,
  BigInt(attrs.size),
  BigInt(attrs.used),
  new Nfsv3SpecData(attrs.rdevMajor, attrs.rdevMinor),
  BigInt(attrs.fsid),
  BigInt(attrs.fileid),
  new Nfsv3Time(attrs.atimeS, attrs.atimeNs),
  new Nfsv3Time(attrs.mtimeS, attrs.mtimeNs),
  new Nfsv3Time(attrs.ctimeS, attrs.ctimeNs),
);

// --- ours ---
const ourReader = new XdrReader(Buffer.alloc(0));
const ourWriter = new XdrWriter();

function ourDecode(record: Buffer): number {
  const r = ourReader;
  r.reset(record, 0, record.length);
  const h = decodeCallHeader(r)!;
  const fh = r.opaque(64);
  return h.xid + h.cred.uid + h.cred.gids.length + fh.length;
}

function ourEncode(xid: number): Buffer {
  const w = ourWriter;
  const a = attrs;
  w.begin(128);
  w.u32(0); // record mark, patched below
  writeAcceptedHeader(w, xid, AcceptStat.SUCCESS);
  w.u32(0); // NFS3_OK
  w.u32(a.type);
  w.u32(a.mode);
  w.u32(a.nlink);
  w.u32(a.uid);
  w.u32(a.gid);
  w.u64(a.size);
  w.u64(a.used);
  w.u32(a.rdevMajor);
  w.u32(a.rdevMinor);
  w.u64(a.fsid);
  w.u64(a.fileid);
  w.u32(a.atimeS);
  w.u32(a.atimeNs);
  w.u32(a.mtimeS);
  w.u32(a.mtimeNs);
  w.u32(a.ctimeS);
  w.u32(a.ctimeNs);
  w.patchU32(0, (0x80000000 | (w.length() - 4)) >>> 0);
  return w.finish();
}

// --- json-pack ---
const jpReader = new Reader();
const jpRpcDecoder = new RpcMessageDecoder();
const jpNfsDecoder = new Nfsv3Decoder();
const jpXdr = new XdrDecoder();
const jpEncoder = new FullNfsv3Encoder();
const jpVerf = new RpcOpaqueAuth(0, new Reader(new Uint8Array(0)));

function jpDecode(record: Buffer): number {
  const reader = jpReader;
  reader.reset(record);
  reader.end = record.length; // reset() does not move `end`
  const msg = jpRpcDecoder.decodeMessage(reader) as RpcCallMessage;
  // json-pack hands back the credential body undecoded; AUTH_SYS is ours to parse, with its XDR reader.
  const xdr = jpXdr;
  xdr.reader = msg.cred.body;
  xdr.readUnsignedInt(); // stamp
  xdr.readString(); // machinename
  const uid = xdr.readUnsignedInt();
  xdr.readUnsignedInt(); // gid
  const n = xdr.readUnsignedInt();
  if (n > 16) throw new Error('gids');
  const gids = new Array<number>(n);
  for (let i = 0; i < n; i++) gids[i] = xdr.readUnsignedInt();
  const req = jpNfsDecoder.decodeMessage(msg.params!, GETATTR, true) as Nfsv3GetattrRequest;
  return msg.xid + uid + gids.length + req.object.data.length;
}

function jpEncode(xid: number): Uint8Array {
  jpEncoder.writeAcceptedReply(xid, GETATTR, jpVerf, new Nfsv3GetattrResponse(0, new Nfsv3GetattrResOk(jpAttrs)));
  return jpEncoder.writer.flush();
}

// --- timing ---
let blackhole = 0;

function timeRound(fn: (i: number) => number, iterations: number): number {
  const t0 = process.hrtime.bigint();
  let acc = 0;
  for (let i = 0; i < iterations; i++) acc += fn(i);
  const t1 = process.hrtime.bigint();
  blackhole ^= acc;
  return Number(t1 - t0) / iterations;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length & 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

interface Case {
  name: string;
  ours: (i: number) => number;
  theirs: (i: number) => number;
}

function run(iterations: number, rounds: number): void {
  const record = getattrCall();
  // Sanity: both sides decode the same values and encode the same bytes.
  if (ourDecode(record) !== jpDecode(record)) throw new Error('decoders disagree');
  const a = Buffer.from(ourEncode(0x1234));
  const b = Buffer.from(jpEncode(0x1234));
  if (!a.equals(b)) throw new Error(`encoders disagree:\nours ${hex(a)}\njp   ${hex(b)}`);
  if (a.length !== 4 + 24 + 4 + 84) throw new Error(`unexpected reply size ${a.length}`);

  console.log(`\n== (c) cost: ${iterations} calls per round, ${rounds} rounds, node ${process.version} ==`);
  console.log(`GETATTR call record ${record.length} bytes; reply ${a.length} bytes incl. record mark (fattr3 = 21 words)`);
  const cases: Case[] = [
    { name: 'decode GETATTR call', ours: () => ourDecode(record), theirs: () => jpDecode(record) },
    { name: 'encode GETATTR reply', ours: (i) => ourEncode(i).length, theirs: (i) => jpEncode(i).length },
    {
      name: 'decode + encode',
      ours: (i) => ourDecode(record) + ourEncode(i).length,
      theirs: (i) => jpDecode(record) + jpEncode(i).length,
    },
  ];
  for (const c of cases) {
    // Warm-up so both are optimised before measuring.
    timeRound(c.ours, Math.min(iterations, 200_000));
    timeRound(c.theirs, Math.min(iterations, 200_000));
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Alternate the order so drift on a shared machine hits both sides alike.
      if (r & 1) {
        theirs.push(timeRound(c.theirs, iterations));
        ours.push(timeRound(c.ours, iterations));
      } else {
        ours.push(timeRound(c.ours, iterations));
        theirs.push(timeRound(c.theirs, iterations));
      }
    }
    const mo = median(ours);
    const mt = median(theirs);
    const f = (x: number) => x.toFixed(1).padStart(7);
    console.log(
      `${c.name.padEnd(22)} ours median ${f(mo)} ns/op (min ${f(Math.min(...ours))}, max ${f(Math.max(...ours))})   ` +
        `json-pack median ${f(mt)} ns/op (min ${f(Math.min(...theirs))}, max ${f(Math.max(...theirs))})   ratio ${(mt / mo).toFixed(2)}x`,
    );
  }
  console.log(`(checksum ${blackhole})`);
}

const iterations = Number(process.argv[2] ?? 1_000_000);
const rounds = Number(process.argv[3] ?? 7);
checkNames();
checkHypers();
checkBounds();
run(iterations, rounds);
