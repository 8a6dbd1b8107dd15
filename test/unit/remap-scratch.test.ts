/**
 * The scratch name a copy is made under before it is moved into place (COW copy-up, `clusternfs
 * tag`): no client may resolve to it, see it listed or hold a handle of it while it is half made —
 * whatever address, host name or AUTH_SYS credentials it sends (a uid is the client's to choose).
 */
import { describe, expect, it } from 'vitest';
import { buildTagIndex, clientView, resolveName, visibleBases } from '../../src/remap/resolve.js';
import { hasTag, parseEntryName, scratchName } from '../../src/remap/tags.js';

const scratch = scratchName('0123456789abcdef');
const base = parseEntryName(scratch)!.base;
const clients = [
  clientView('10.0.0.7', 'node7', 0, 0),
  clientView('10.0.0.8', null, 4294967295, 4294967295),
  clientView('fd00::9', 'rack1-n9', 1000, 100),
];

describe('scratchName', () => {
  it('is a tagged name, so ordinary clients can neither create nor rename onto it', () => {
    expect(hasTag(scratch)).toBe(true);
  });

  it('is never what any client resolves to, by its base or spelled with $$$$, nor listed', () => {
    for (const dirMarkers of [[], ['$$COW=IP$$'], ['$$ALWAYS=CLIENT$$'], ['$$CREATE=IP$$']]) {
      const index = buildTagIndex([scratch, 'motd', 'motd$$IP=10.0.0.7$$', ...dirMarkers]);
      for (const c of clients) {
        for (const name of [base, `${base}$$$$`, scratch]) {
          const r = resolveName(index, name, c);
          expect(r.read, `${name} for ${c.ip} uid ${c.uid} with ${dirMarkers.join()}`).not.toBe(scratch);
          expect(r.cow).not.toBe(scratch);
        }
        expect(visibleBases(index, c).map((v) => v.entry)).not.toContain(scratch);
      }
    }
  });
});
