/**
 * READDIR cookies: a hash of the entry's name, not its position or inode number. A listing
 * continued after the directory changed resumes at the same name (entries present throughout are
 * returned exactly once, as ext4's hash cookies do), so we never need NFS3ERR_BAD_COOKIE.
 * Cookies 1 and 2 are '.' and '..'; hashed cookies have a non-zero high word and stay below 2^63
 * for clients that store them signed.
 */
import type { ListingEntry } from './export-store.js';

function fnv1a(s: string, seed: number): number {
  let h = seed;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h >>> 0;
}

export function listingCookie(name: string): { hi: number; lo: number } {
  return { hi: (fnv1a(name, 0x811c9dc5) % 0x7ffffffe) + 1, lo: fnv1a(name, 0x050c5d1f) };
}

/** Index of the first entry whose cookie is greater than (hi, lo); cookie 0 starts at 0. */
export function firstAfter(entries: ListingEntry[], hi: number, lo: number): number {
  if (hi === 0 && lo === 0) return 0;
  let a = 0;
  let b = entries.length;
  while (a < b) {
    const m = (a + b) >>> 1;
    const e = entries[m];
    if (e.cookieHi < hi || (e.cookieHi === hi && e.cookieLo <= lo)) a = m + 1;
    else b = m;
  }
  return a;
}

/**
 * Sorts entries by cookie and nudges the later of two names with the same 63-bit hash, so every
 * cookie names exactly one position.
 */
export function orderCookies(entries: ListingEntry[]): void {
  entries.sort((a, b) => a.cookieHi - b.cookieHi || a.cookieLo - b.cookieLo);
  for (let i = 1; i < entries.length; i++) {
    const p = entries[i - 1];
    const e = entries[i];
    if (e.cookieHi === p.cookieHi && e.cookieLo <= p.cookieLo) {
      e.cookieLo = p.cookieLo + 1;
      if (e.cookieLo > 0xffffffff) {
        e.cookieLo = 0;
        e.cookieHi = p.cookieHi + 1;
      }
    }
  }
}

/**
 * Whether a listing holds `name`: one binary search by the name's cookie, then the few entries a
 * hash collision could have nudged it to.
 */
export function listingHas(entries: ListingEntry[], name: string): boolean {
  const { hi, lo } = listingCookie(name);
  let a = 0;
  let b = entries.length;
  while (a < b) {
    const m = (a + b) >>> 1;
    const e = entries[m];
    if (e.cookieHi < hi || (e.cookieHi === hi && e.cookieLo < lo)) a = m + 1;
    else b = m;
  }
  for (let i = a; i < entries.length && i < a + 8; i++) if (entries[i].name === name) return true;
  return false;
}
