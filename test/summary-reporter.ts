/**
 * Prints one closing line, "N passed, N failed, N skipped", that CI reads to know tests ran
 * (vitest's own summary is not a format it recognises).
 */
import fs from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const state = t.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
      }
      if (m.state() === 'failed' && [...m.children.allTests()].length === 0) failed++;
    }
    // At exit, so that it comes after vitest's own summary and really is the closing line.
    process.once('exit', () => fs.writeSync(1, `${passed} passed, ${failed} failed, ${skipped} skipped\n`));
  }
}
