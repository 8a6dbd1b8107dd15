/** Builds test trees: a file at `rel` below `root`, its directories made as needed. */
import fs from 'node:fs';
import path from 'node:path';

export function putFile(root: string, rel: string, content: string, mode?: number): void {
  const p = path.join(root, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content, mode === undefined ? undefined : { mode });
}
