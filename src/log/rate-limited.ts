/**
 * Log lines that a hostile client could otherwise trigger once per packet: at most one line per
 * message per interval, carrying how many were left out since the last one. Only runs on the
 * error path, so the Map look-up by message costs nothing on the normal call path.
 */
import type { Logger } from 'pino';

export class RateLimitedLog {
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly state = new Map<string, { at: number; suppressed: number }>();

  constructor(log: Logger, intervalMs = 5000) {
    this.log = log;
    this.intervalMs = intervalMs;
  }

  warn(fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    let s = this.state.get(msg);
    if (s === undefined) {
      s = { at: -Infinity, suppressed: 0 };
      this.state.set(msg, s);
    }
    if (now - s.at < this.intervalMs) {
      s.suppressed++;
      return;
    }
    s.at = now;
    fields.suppressed = s.suppressed;
    s.suppressed = 0;
    this.log.warn(fields, msg);
  }
}
