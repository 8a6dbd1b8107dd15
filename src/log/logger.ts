/**
 * One structured logger for the whole server (pino: JSON lines, cheap when a level is off).
 * Modules take a child with their own `component` so a line says where it came from; call sites
 * add the client, xid and procedure.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const level = process.env.CLUSTERNFS_LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info');

export const rootLogger: Logger = pino({ level, base: { app: 'clusternfs' } });

// pino children copy their level when created; keep them so a --log-level given later reaches all.
const children: Logger[] = [];

export function componentLogger(component: string): Logger {
  const child = rootLogger.child({ component });
  children.push(child);
  return child;
}

export function setLogLevel(newLevel: string): void {
  rootLogger.level = newLevel;
  for (const child of children) child.level = newLevel;
}
