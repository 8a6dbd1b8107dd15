/**
 * File names on disk are bytes (the store keeps them as latin1 "byte strings", one char per
 * byte). The admin commands print them as UTF-8 when they are, and otherwise escape every byte
 * that is not printable ASCII as \xNN, so a stray ISO-8859-1 name is shown unambiguously
 * instead of as replacement characters or a crash.
 */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A byte-string name or path as text for a terminal or a table. */
export function displayName(byteString: string): string {
  const bytes = Buffer.from(byteString, 'latin1');
  let text: string | null = null;
  try {
    text = utf8.decode(bytes);
  } catch {
    text = null;
  }
  // Control characters would break a table row or move the cursor: escape them either way.
  if (text !== null && !/[\x00-\x1f\x7f]/.test(text)) return text;
  let out = '';
  for (const b of bytes) out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out;
}

/** True when the name's bytes are valid UTF-8 without control characters (printed unchanged). */
export function isPlainName(byteString: string): boolean {
  return displayName(byteString) === Buffer.from(byteString, 'latin1').toString('utf8');
}

/** A path typed on the command line (UTF-8 text) as a byte string for the fs helpers. */
export function toByteString(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}
