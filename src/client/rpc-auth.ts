/**
 * Credential and verifier bytes of a call, encoded once per identity rather than once per call:
 * they are the same for every call a simulated node makes.
 */
import os from 'node:os';
import { AuthFlavor, type Credentials } from '../rpc/message.js';
import { XdrWriter } from '../rpc/xdr.js';

/** AUTH_SYS identity; fields left out default to root on this host. */
export interface AuthSysOptions {
  uid?: number;
  gid?: number;
  gids?: number[];
  machineName?: string;
  stamp?: number;
}

/** 'none' sends AUTH_NONE; otherwise AUTH_SYS. */
export type AuthOption = 'none' | AuthSysOptions | Credentials;

/**
 * cred (flavor, length, body) followed by an AUTH_NONE verifier. Nothing is validated on purpose:
 * tests send 17 gids or 300-byte machine names to see the server refuse them.
 */
export function encodeAuth(auth: AuthOption | null | undefined): Buffer {
  const w = new XdrWriter(1024);
  w.begin();
  if (auth === 'none' || (auth && 'flavor' in auth && auth.flavor === AuthFlavor.NONE)) {
    w.u32(AuthFlavor.NONE);
    w.u32(0);
  } else {
    const a = auth ?? {};
    w.u32(AuthFlavor.SYS);
    w.u32(0);
    w.u32(('stamp' in a ? a.stamp : undefined) ?? 0);
    w.bytesString(a.machineName ?? os.hostname());
    w.u32(a.uid ?? 0);
    w.u32(a.gid ?? 0);
    const gids = a.gids ?? [];
    w.u32(gids.length);
    for (const g of gids) w.u32(g);
    w.patchU32(4, w.length() - 8);
  }
  w.u32(AuthFlavor.NONE);
  w.u32(0);
  return Buffer.from(w.finish());
}
