/** Where the installed package lives, for what it ships: its version, the sample export, the native addon. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The directory holding package.json, found upwards from here: dist/src when built, src under vitest. */
function findPackageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4 && !fs.existsSync(path.join(dir, 'package.json')); i++) dir = path.dirname(dir);
  return dir;
}

export const packageRoot = findPackageRoot();
/** The bundled sample export served when no directory or config is given. */
export const SAMPLE_EXPORT = path.join(packageRoot, 'sample', 'root');
