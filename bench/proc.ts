/** What /proc says about a process: CPU time (all threads) and memory, for the server under test. */
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

let clockTicks = 0;

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat. */
function ticksPerSecond(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of the process (all its threads), in seconds; NaN if it is gone. */
export function cpuSeconds(pid: number): number {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return NaN;
  }
  // The command name may hold spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** VmRSS and VmHWM (peak) in bytes. */
export function memory(pid: number): { rss: number; hwm: number } {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return { rss: NaN, hwm: NaN };
  }
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Samples VmRSS while a workload runs; the peak of one workload (VmHWM only knows the lifetime peak). */
export class RssSampler {
  private peak = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly pid: number, private readonly everyMs = 200) {}

  start(): void {
    this.peak = memory(this.pid).rss || 0;
    this.timer = setInterval(() => {
      const r = memory(this.pid).rss;
      if (r > this.peak) this.peak = r;
    }, this.everyMs);
    this.timer.unref();
  }

  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const r = memory(this.pid).rss;
    if (r > this.peak) this.peak = r;
    return this.peak;
  }
}
