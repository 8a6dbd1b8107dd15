/**
 * npm run fuzz -- --seconds N [--seed S] [--mode both|net|decoder] [--corpus DIR] [--replay]
 *
 * Splits the time between the network fuzzer (a real server process over TCP and UDP) and the
 * in-process coverage-guided decoder fuzzer. Cases that broke the server are saved under the
 * corpus directory (default test/fuzz-corpus) as reproducers, which --replay (and the test suite)
 * runs again. Exits 1 if anything broke.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setLogLevel } from '../src/log/logger.js';
import { procedureCount } from './calls.js';
import { replayDecoder, runDecoder } from './decoder.js';
import { replayNetwork, runNetwork } from './network.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '60' },
      seed: { type: 'string' },
      mode: { type: 'string', default: 'both' },
      corpus: { type: 'string', default: path.join(REPO, 'test', 'fuzz-corpus') },
      replay: { type: 'boolean', default: false },
    },
  });
  const corpus = path.resolve(values.corpus!);
  // The in-process decoder fuzzer would log every malformed call it makes.
  setLogLevel('silent');
  const say = (s: string) => process.stdout.write(`${s}\n`);
  if (values.replay) {
    const files = fs.existsSync(corpus) ? fs.readdirSync(corpus).map((f) => path.join(corpus, f)) : [];
    const net = files.filter((f) => f.endsWith('.json'));
    const dec = files.filter((f) => f.endsWith('.bin'));
    const broken = [...(await replayNetwork(net)), ...(await replayDecoder(dec))];
    say(JSON.stringify({ replayed: { network: net.length, decoder: dec.length }, broken }));
    return broken.length === 0 ? 0 : 1;
  }
  const seconds = Number(values.seconds);
  const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 0x7fffffff);
  if (!(seconds > 0) || !Number.isInteger(seed)) throw new Error('--seconds must be positive and --seed an integer');
  const mode = values.mode!;
  say(`fuzz: seed ${seed}, ${seconds} s, mode ${mode}, ${procedureCount()} procedures; reproducers go to ${corpus}`);
  const summary: Record<string, unknown> = { seed };
  let failures = 0;
  if (mode === 'both' || mode === 'decoder') {
    const r = await runDecoder({ seconds: mode === 'both' ? seconds / 3 : seconds, seed, corpusDir: corpus, log: say });
    summary.decoder = { execs: r.execs, coverageBlocks: r.features, corpus: r.corpus, bugs: r.bugs.length };
    for (const b of r.bugs) say(`decoder bug: ${b}`);
    failures += r.bugs.length;
  }
  if (mode === 'both' || mode === 'net') {
    const r = await runNetwork({ seconds: mode === 'both' ? (seconds * 2) / 3 : seconds, seed, corpusDir: corpus, log: say });
    summary.network = { cases: r.cases, batches: r.batches, livenessFailures: r.failures };
    failures += r.failures;
  }
  say(JSON.stringify(summary));
  return failures === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(2);
  },
);
