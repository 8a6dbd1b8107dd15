/**
 * Which client addresses are talking to us and how fast, for the distinct-clients gauge, the
 * status page and the optional per-client series.
 *
 * Per call this is one Map look-up by the sink's address string (the same string object for every
 * call of a TCP connection, so its hash is computed once) and two field writes: no Date.now(),
 * no allocation. A one-second timer (unref'd) advances the clock and computes rates.
 */

export interface ClientActivity {
  readonly address: string;
  calls: number;
  /** Tick (seconds since start) of the last call. */
  lastTick: number;
  /** Calls per second over the last few seconds (exponentially smoothed). */
  rate: number;
  callsAtLastTick: number;
}

/** Addresses idle this long are dropped from the table. */
const FORGET_AFTER_S = 600;
/** What "active" means for the distinct-clients gauge. */
export const ACTIVE_WINDOW_S = 60;

export class ClientTracker {
  private readonly clients = new Map<string, ClientActivity>();
  private readonly max: number;
  private tick = 0;
  private readonly timer: NodeJS.Timeout;
  /** Calls from addresses not tracked because the table was full. */
  untrackedCalls = 0;

  constructor(max = 4096) {
    this.max = max;
    this.timer = setInterval(() => this.advance(), 1000);
    this.timer.unref();
  }

  record(address: string): void {
    const c = this.clients.get(address);
    if (c !== undefined) {
      c.calls++;
      c.lastTick = this.tick;
    } else {
      this.add(address);
    }
  }

  private add(address: string): void {
    if (this.clients.size >= this.max) {
      this.forgetIdle(ACTIVE_WINDOW_S);
      if (this.clients.size >= this.max) {
        this.untrackedCalls++;
        return;
      }
    }
    this.clients.set(address, { address, calls: 1, lastTick: this.tick, rate: 0, callsAtLastTick: 0 });
  }

  private advance(): void {
    this.tick++;
    for (const c of this.clients.values()) {
      const delta = c.calls - c.callsAtLastTick;
      c.callsAtLastTick = c.calls;
      c.rate = c.rate * 0.7 + delta * 0.3;
    }
    if (this.tick % 60 === 0) this.forgetIdle(FORGET_AFTER_S);
  }

  private forgetIdle(seconds: number): void {
    for (const [a, c] of this.clients) if (this.tick - c.lastTick > seconds) this.clients.delete(a);
  }

  /** Clients that made a call within the last `ACTIVE_WINDOW_S` seconds, busiest first. */
  active(): ClientActivity[] {
    const out: ClientActivity[] = [];
    for (const c of this.clients.values()) if (this.tick - c.lastTick <= ACTIVE_WINDOW_S) out.push(c);
    return out.sort((a, b) => b.rate - a.rate || b.calls - a.calls);
  }

  /** All tracked clients (idle ones too, until forgotten), busiest first. */
  all(): ClientActivity[] {
    return [...this.clients.values()].sort((a, b) => b.calls - a.calls);
  }

  close(): void {
    clearInterval(this.timer);
  }
}
