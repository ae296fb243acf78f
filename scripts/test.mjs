#!/usr/bin/env node
// `npm test`: installs what the tests need, typechecks, then runs every jest
// suite (unit, protocol, host FUSE and real-guest lab tests) in one run so
// the closing "N passed, N failed" line counts all of them.
// Extra arguments go to jest (e.g. `npm test -- test/9p`).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ensureDeps, root } from './ensure-deps.mjs';

const run = (cmd, args, env = {}) =>
  spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } }).status ?? 1;

ensureDeps();

console.error('duofs: typecheck (tsc --noEmit)');
if (run(join(root, 'node_modules/.bin/tsc'), ['--noEmit', '-p', '.']) !== 0) {
  console.log('\n0 passed, 1 failed');
  process.exit(1);
}

const labSetup = join(root, 'scripts', 'lab-setup.mjs');
if (existsSync(labSetup) && process.env.DUOFS_SKIP_LAB !== '1') {
  if (run(process.execPath, [labSetup]) !== 0) {
    console.error('duofs: lab setup failed; see above (DUOFS_SKIP_LAB=1 skips lab tests)');
    console.log('\n0 passed, 1 failed');
    process.exit(1);
  }
}

const args = process.argv.slice(2);
const results = join(root, '.cache', 'jest-results.json');
mkdirSync(dirname(results), { recursive: true });
rmSync(results, { force: true });
const status = run(process.execPath, [
  '--experimental-vm-modules', '--no-warnings=ExperimentalWarning',
  join(root, 'node_modules/jest/bin/jest.js'), '--json', `--outputFile=${results}`, ...args,
]);
// The last line of the run is the plain count CI reads.
let line = '0 passed, 1 failed';
if (existsSync(results)) {
  const r = JSON.parse(readFileSync(results, 'utf8'));
  const failed = r.numFailedTests + r.numRuntimeErrorTestSuites;
  const skipped = r.numPendingTests + r.numTodoTests;
  line = `${r.numPassedTests} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : '');
}
console.log(`\n${line}`);
process.exit(status);
