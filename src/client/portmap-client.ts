/**
 * Portmapper v2 and rpcbind v3/v4 client (RFC 1833): enough to find, register and list services,
 * as a diskless node's initramfs and `rpcinfo` do.
 */
import { PMAP_V2, PORTMAP_PROGRAM, PmapProc, RPCBIND_V4, RpcbProc } from '../rpc/portmap-constants.js';
import type { XdrReader, XdrWriter } from '../rpc/xdr.js';
import type { RpcClient } from './rpc-client.js';

export interface PmapMapping {
  prog: number;
  vers: number;
  /** IPPROTO_TCP or IPPROTO_UDP */
  prot: number;
  port: number;
}

export interface RpcbEntry {
  prog: number;
  vers: number;
  /** 'tcp', 'udp', 'tcp6', ... */
  netid: string;
  /** Universal address, e.g. '127.0.0.1.8.1' for port 2049. */
  addr: string;
  owner: string;
}

/** RFC 1833 strings have no bound; ours keep a hostile reply from costing much. */
const MAX_STR = 1024;

export function encodeMapping(w: XdrWriter, m: PmapMapping): void {
  w.u32(m.prog);
  w.u32(m.vers);
  w.u32(m.prot);
  w.u32(m.port);
}

export function encodeRpcb(w: XdrWriter, e: RpcbEntry): void {
  w.u32(e.prog);
  w.u32(e.vers);
  w.bytesString(e.netid);
  w.bytesString(e.addr);
  w.bytesString(e.owner);
}

export function decodePmapList(r: XdrReader): PmapMapping[] {
  const out: PmapMapping[] = [];
  while (r.bool()) {
    const prog = r.u32();
    const vers = r.u32();
    const prot = r.u32();
    out.push({ prog, vers, prot, port: r.u32() });
  }
  return out;
}

export function decodeRpcbList(r: XdrReader): RpcbEntry[] {
  const out: RpcbEntry[] = [];
  while (r.bool()) {
    const prog = r.u32();
    const vers = r.u32();
    const netid = r.bytesString(MAX_STR);
    const addr = r.bytesString(MAX_STR);
    out.push({ prog, vers, netid, addr, owner: r.bytesString(MAX_STR) });
  }
  return out;
}

/** '127.0.0.1.8.1' → { host: '127.0.0.1', port: 2049 }; null for an empty or malformed address. */
export function parseUaddr(uaddr: string): { host: string; port: number } | null {
  const parts = uaddr.split('.');
  if (parts.length < 3) return null;
  const hi = Number(parts[parts.length - 2]);
  const lo = Number(parts[parts.length - 1]);
  if (!Number.isInteger(hi) || !Number.isInteger(lo) || hi > 255 || lo > 255 || hi < 0 || lo < 0) return null;
  return { host: parts.slice(0, -2).join('.'), port: hi * 256 + lo };
}

export function toUaddr(host: string, port: number): string {
  return `${host}.${port >> 8}.${port & 0xff}`;
}

const readU32 = (r: XdrReader): number => r.u32();
const readBool = (r: XdrReader): boolean => r.bool();
const readString = (r: XdrReader): string => r.bytesString(MAX_STR);
const readVoid = (_r: XdrReader): void => {};

export class PortmapClient {
  readonly rpc: RpcClient;

  constructor(rpc: RpcClient) {
    this.rpc = rpc;
  }

  null(vers: number = PMAP_V2): Promise<void> {
    this.rpc.begin(PORTMAP_PROGRAM, vers, PmapProc.NULL);
    return this.rpc.send(readVoid);
  }

  set(prog: number, vers: number, prot: number, port: number): Promise<boolean> {
    encodeMapping(this.rpc.begin(PORTMAP_PROGRAM, PMAP_V2, PmapProc.SET), { prog, vers, prot, port });
    return this.rpc.send(readBool);
  }

  /** PMAP v2 UNSET removes every protocol of prog/vers; prot and port are ignored by servers. */
  unset(prog: number, vers: number, prot = 0, port = 0): Promise<boolean> {
    encodeMapping(this.rpc.begin(PORTMAP_PROGRAM, PMAP_V2, PmapProc.UNSET), { prog, vers, prot, port });
    return this.rpc.send(readBool);
  }

  /** 0 when not registered. */
  getport(prog: number, vers: number, prot: number): Promise<number> {
    encodeMapping(this.rpc.begin(PORTMAP_PROGRAM, PMAP_V2, PmapProc.GETPORT), { prog, vers, prot, port: 0 });
    return this.rpc.send(readU32);
  }

  dump(): Promise<PmapMapping[]> {
    this.rpc.begin(PORTMAP_PROGRAM, PMAP_V2, PmapProc.DUMP);
    return this.rpc.send(decodePmapList);
  }

  /** rpcbind GETADDR (v3 or v4): the universal address, '' when not registered. */
  getaddr(prog: number, vers: number, netid: string, rpcbVers = RPCBIND_V4, addr = '', owner = ''): Promise<string> {
    encodeRpcb(this.rpc.begin(PORTMAP_PROGRAM, rpcbVers, RpcbProc.GETADDR), { prog, vers, netid, addr, owner });
    return this.rpc.send(readString);
  }

  rpcbDump(rpcbVers = RPCBIND_V4): Promise<RpcbEntry[]> {
    this.rpc.begin(PORTMAP_PROGRAM, rpcbVers, RpcbProc.DUMP);
    return this.rpc.send(decodeRpcbList);
  }

  rpcbSet(entry: RpcbEntry, rpcbVers = RPCBIND_V4): Promise<boolean> {
    encodeRpcb(this.rpc.begin(PORTMAP_PROGRAM, rpcbVers, RpcbProc.SET), entry);
    return this.rpc.send(readBool);
  }

  rpcbUnset(entry: RpcbEntry, rpcbVers = RPCBIND_V4): Promise<boolean> {
    encodeRpcb(this.rpc.begin(PORTMAP_PROGRAM, rpcbVers, RpcbProc.UNSET), entry);
    return this.rpc.send(readBool);
  }
}
