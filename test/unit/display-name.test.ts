/** Names on disk are bytes: the admin commands print UTF-8 as is and escape everything else. */
import { describe, expect, it } from 'vitest';
import { displayName, isPlainName, toByteString } from '../../src/cli/display-name.js';

const bytes = (...b: number[]) => Buffer.from(b).toString('latin1');

describe('displayName', () => {
  it('shows UTF-8 names unchanged', () => {
    const name = toByteString('café$$IP=10.0.0.7$$');
    expect(displayName(name)).toBe('café$$IP=10.0.0.7$$');
    expect(isPlainName(name)).toBe(true);
  });

  it('escapes a name that is not UTF-8 byte by byte, and its backslashes, so it stays unambiguous', () => {
    const name = bytes(0x63, 0x61, 0x66, 0xe9, 0x5c); // "caf" + latin1 é + backslash
    expect(displayName(name)).toBe('caf\\xe9\\x5c');
    expect(isPlainName(name)).toBe(false);
  });

  it('escapes control characters that would break a table row', () => {
    expect(displayName('a\nb\tc')).toBe('a\\x0ab\\x09c');
  });
});
