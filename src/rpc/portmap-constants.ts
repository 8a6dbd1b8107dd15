/**
 * Portmapper / rpcbind numbers (RFC 1833).
 */

export const PORTMAP_PROGRAM = 100000;
export const PMAP_V2 = 2;
export const RPCBIND_V3 = 3;
export const RPCBIND_V4 = 4;
export const PMAP_PORT = 111;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const enum PmapProc {
  NULL = 0,
  SET = 1,
  UNSET = 2,
  GETPORT = 3,
  DUMP = 4,
  CALLIT = 5,
}

/** rpcbind v3/v4 procedures (v4 adds more after 8; we serve the ones clients use for lookup). */
export const enum RpcbProc {
  NULL = 0,
  SET = 1,
  UNSET = 2,
  GETADDR = 3,
  DUMP = 4,
  CALLIT = 5,
  GETTIME = 6,
  UADDR2TADDR = 7,
  TADDR2UADDR = 8,
  // v4 only
  GETVERSADDR = 9,
  INDIRECT = 10,
  GETADDRLIST = 11,
  GETSTAT = 12,
}
