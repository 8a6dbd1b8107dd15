import { describe, expect, it, vi } from 'vitest';
import type { Logger } from 'pino';
import { RateLimitedLog } from '../../src/log/rate-limited.js';

describe('RateLimitedLog', () => {
  it('writes one line per message per interval and counts the ones it left out', () => {
    const lines: [Record<string, unknown>, string][] = [];
    const fake = { warn: (f: Record<string, unknown>, m: string) => lines.push([f, m]) } as unknown as Logger;
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      const log = new RateLimitedLog(fake, 5000);
      for (let i = 0; i < 100; i++) log.warn({ client: `10.0.0.${i}` }, 'garbage arguments');
      log.warn({ client: 'x' }, 'RPC version mismatch');
      expect(lines.map(([f, m]) => [m, f.client, f.suppressed])).toEqual([
        ['garbage arguments', '10.0.0.0', 0],
        ['RPC version mismatch', 'x', 0],
      ]);
      vi.advanceTimersByTime(5000);
      log.warn({ client: 'later' }, 'garbage arguments');
      expect(lines[2][0]).toEqual({ client: 'later', suppressed: 99 });
    } finally {
      vi.useRealTimers();
    }
  });
});
