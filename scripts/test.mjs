#!/usr/bin/env node
// `npm test`: installs what the tests need, typechecks, lints and checks the
// formatting (biome check), then runs every jest suite (unit, protocol, host
// FUSE and real-guest lab tests) in one run so the closing "N passed,
// N failed" line counts all of them (a failed lint/format check is one); then the
// protocol, FUSE and vhost suites once more on each other I/O engine, and two
// lab suites on the threads engine (`npm run test:engines` runs everything on
// every engine).
// Extra arguments go to jest (e.g. `npm test -- test/9p`).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDeps, root } from './ensure-deps.mjs';

const run = (cmd, args, env = {}) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } }).status ?? 1;

ensureDeps();

// Host tools suites need, installed with apt-get when missing (as root only;
// a failure leaves the suites to say what is missing):
//  * btrfs-progs for test/faults/real-quota.test.ts (a btrfs qgroup is the
//    real disk quota this kernel offers: no tmpfs quotas, no quota format
//    for ext4);
//  * uidmap (newuidmap, newgidmap) for --uid-map/--gid-map:
//    test/sandbox/userns-map.test.ts and test/lab/libvirt-session.test.ts
//    start duofs as an ordinary user with libvirt's session-mode maps;
//  * attr (getfattr, setfattr) for the host side of test/fuse/xattr.test.ts
//    and test/fuse/virtiofsd-options.test.ts.
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const HOST_TOOLS = [
  { cmd: 'mkfs.btrfs', pkg: 'btrfs-progs', for: 'test/faults/real-quota.test.ts' },
  { cmd: 'newuidmap', pkg: 'uidmap', for: 'test/sandbox/userns-map.test.ts and test/lab/libvirt-session.test.ts' },
  { cmd: 'getfattr', pkg: 'attr', for: 'test/fuse/xattr.test.ts and test/fuse/virtiofsd-options.test.ts' },
];
const missing = process.getuid?.() === 0 ? HOST_TOOLS.filter((t) => !has(t.cmd)) : [];
if (missing.length) {
  const pkgs = missing.map((t) => t.pkg);
  console.error(`duofs: installing ${pkgs.join(', ')} on the host (apt-get)`);
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...pkgs], env);
  if (install() !== 0 && (run('apt-get', ['update', '-q'], env), install() !== 0)) {
    for (const t of missing) console.error(`duofs: could not install ${t.pkg}; ${t.for} will fail`);
  }
}

console.error('duofs: typecheck (tsc --noEmit)');
if (run(join(root, 'node_modules/.bin/tsc'), ['--noEmit', '-p', '.']) !== 0) {
  console.log('\n0 passed, 1 failed');
  process.exit(1);
}

// Lint and format check (biome.jsonc). A finding fails the run but does not
// stop it: the jest results still come, and the closing line counts the
// check as one failure. Warnings fail too, so they cannot pile up.
console.error('duofs: lint and format check (biome check)');
const lintFailed = run(join(root, 'node_modules/.bin/biome'), ['check', '--error-on-warnings', '.']) !== 0;
const lintMessage =
  'duofs: lint/format check failed (biome check, above): `npm run format` rewrites the formatting, ' +
  '`npx biome check --write .` applies the safe lint fixes, the rest is by hand';
if (lintFailed) console.error(lintMessage);

const labSetup = join(root, 'scripts', 'lab-setup.mjs');
if (existsSync(labSetup) && process.env.DUOFS_SKIP_LAB !== '1') {
  if (run(process.execPath, [labSetup]) !== 0) {
    console.error('duofs: lab setup failed; see above (DUOFS_SKIP_LAB=1 skips lab tests)');
    console.log('\n0 passed, 1 failed');
    process.exit(1);
  }
}

const args = process.argv.slice(2);
const resultsDir = join(root, '.cache');
mkdirSync(resultsDir, { recursive: true });

/** One jest run; returns its exit status and counts (from --json). */
function jest(name, jestArgs, env = {}) {
  const file = join(resultsDir, `jest-results${name ? `-${name}` : ''}.json`);
  rmSync(file, { force: true });
  const status = run(
    process.execPath,
    [
      '--experimental-vm-modules',
      '--no-warnings=ExperimentalWarning',
      join(root, 'node_modules/jest/bin/jest.js'),
      '--json',
      `--outputFile=${file}`,
      ...jestArgs,
    ],
    env,
  );
  if (!existsSync(file)) return { status: status || 1, passed: 0, failed: 1, skipped: 0 };
  const r = JSON.parse(readFileSync(file, 'utf8'));
  return { status, passed: r.numPassedTests, failed: r.numFailedTests + r.numRuntimeErrorTestSuites, skipped: r.numPendingTests + r.numTodoTests };
}

const runs = [jest('', args)];
// The main run uses the default engine (auto: io_uring where the kernel
// allows it). The protocol, FUSE and vhost suites and two real-guest suites
// run once more on each other engine (DUOFS_ENGINE_MATRIX, comma-separated;
// empty: none). Only for a whole run: `npm test -- PATTERN` runs PATTERN once.
// The sync engine skips the two lab suites: it runs every call inline, which
// the protocol suites already cover; the guests' time goes to the engines
// that complete out of order (threads here, io_uring in the main run).
const MATRIX_SUITES = ['test/fuse/', 'test/p9/', 'test/vhost/'];
const MATRIX_LAB_SUITES = ['test/lab/cross-protocol.test.ts', 'test/lab/virtio9p.test.ts'];
const matrix = args.length ? [] : (process.env.DUOFS_ENGINE_MATRIX ?? 'threads,sync').split(',').filter(Boolean);
for (const engine of matrix) {
  const lab = engine !== 'sync';
  console.error(`duofs: the protocol, FUSE, vhost${lab ? ' and two lab' : ''} suites again on --io-engine ${engine}`);
  runs.push(jest(engine, lab ? [...MATRIX_SUITES, ...MATRIX_LAB_SUITES] : MATRIX_SUITES, { DUOFS_IO_ENGINE: engine }));
}
// The protocol suites once more on a backend whose every metadata result
// comes a turn late (src/backend/deferred.ts): each continuation a protocol
// runs after a wait is exercised, as on storage the I/O engine must wait for.
if (!args.length && process.env.DUOFS_DEFERRED_RUN !== '0') {
  console.error('duofs: the protocol, FUSE and vhost suites again on a backend that answers late');
  runs.push(jest('deferred', ['test/fuse/', 'test/p9/', 'test/vhost/'], { DUOFS_TEST_DEFERRED_BACKEND: '1' }));
}
if (lintFailed) {
  console.error(lintMessage);
  runs.push({ status: 1, passed: 0, failed: 1, skipped: 0 });
}
// The last line of the run is the plain count CI reads.
const sum = (k) => runs.reduce((a, r) => a + r[k], 0);
const skipped = sum('skipped');
console.log(`\n${sum('passed')} passed, ${sum('failed')} failed` + (skipped ? `, ${skipped} skipped` : ''));
process.exit(runs.find((r) => r.status !== 0)?.status ?? 0);
