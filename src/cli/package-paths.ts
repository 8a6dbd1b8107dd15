/** Where the installed package lives, for what it ships: its version and the sample export. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const packageRoot = path.resolve(here, '..', '..', '..');
/** The bundled sample export served when no directory or config is given. */
export const SAMPLE_EXPORT = path.join(packageRoot, 'sample', 'root');
