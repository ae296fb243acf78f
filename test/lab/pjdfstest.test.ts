// pjdfstest (the public POSIX conformance suite, vendored in
// test/lab/vendor/pjdfstest) in real guests: a subset (SUBSET below) on
// duofs over virtio-fs and over virtio-9p (passthrough), and on QEMU's 9p
// beside them as the reference for what a 9p client can do. Each run's
// failing checks must be exactly the known ones of
// test/lab/pjdfstest-expected.json (so the pass count is exact); the
// reference run keeps that file honest about what a 9p client cannot do
// (QEMU's 9p has no entry: it must pass every check of the subset).
// The reference run checks QEMU rather than duofs, so `npm test` leaves it
// out (it costs CI about 150 s); DUOFS_LAB_PJD=all runs every configuration,
// DUOFS_LAB_PJD=qemu-9p-passthrough,... names some. One guest at a time.
// The whole suite: `npm run pjdfstest` (docs/lab.md).
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestScriptsDir, labAvailable, labDir } from './lab.js';
import { spawnSync } from 'node:child_process';
import {
  buildPjdfstest,
  compareRun,
  configName,
  expectedFailures,
  expectedFile,
  loadKnownFailures,
  parsePjdOutput,
  pjdTestFiles,
  runPjdfstest,
  stagePjdfstest,
  type KnownFailure,
  type PjdConfig,
  type PjdRun,
} from './pjdfstest.js';

// Chosen for coverage per second (the */03.t name-length tests spend minutes in
// the shell; chown/00.t, 1280 checks, takes 2-5 minutes alone and is in the
// whole suite): ownership (chown/05.t), modes and their clearing (chmod/00.t,
// chmod/11.t sticky, chmod/12.t setuid/setgid on write), every file type
// (open/00.t, mkfifo/00.t, link/00.t, rename/00.t), symlinks, truncate.
const SUBSET = [
  'chown/05.t',
  'chmod/00.t',
  'chmod/11.t',
  'chmod/12.t',
  'open/00.t',
  'rename/00.t',
  'link/00.t',
  'mkfifo/00.t',
  'truncate/00.t',
  ...['00', '01', '02', '04', '05', '06', '07', '08', '09', '10', '11', '12'].map((n) => `symlink/${n}.t`),
];
/** Guest-side limit per run (seconds); generous for a loaded 2-core host. */
const LIMIT_S = 900;

const ALL: PjdConfig[] = [
  { impl: 'duofs', protocol: 'virtiofs', model: 'passthrough' },
  { impl: 'duofs', protocol: '9p', model: 'passthrough' },
  { impl: 'qemu', protocol: '9p', model: 'passthrough' },
];
/** DUOFS_LAB_PJD=name,name picks configurations, `all` every one; unset: duofs's. */
const only = process.env.DUOFS_LAB_PJD?.split(',').filter(Boolean);
const CONFIGS = only?.includes('all') ? ALL : only ? ALL.filter((c) => only.includes(configName(c))) : ALL.filter((c) => c.impl === 'duofs');

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

// Needs what the lab needs (root, gcc, perl), not a guest.
d('pjdfstest build and scenario on the host', () => {
  test('the vendored sources build into a static binary that runs', () => {
    const bin = buildPjdfstest();
    expect(buildPjdfstest()).toBe(bin); // cached: same sources, same file
    const r = spawnSync(bin, [], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/usage: pjdfstest/);
    expect(spawnSync('file', [bin], { encoding: 'utf8' }).stdout).toMatch(/statically linked|static-pie/);
  });

  test('the scenario runs a .t and reports it; it refuses to run when namegen would give every file one name', () => {
    if (process.getuid?.() !== 0) throw new Error('pjdfstest needs root (as the lab does)');
    const tmp = mkdtempSync(join(tmpdir(), 'duofs-pjd-'));
    try {
      const base = join(tmp, 'stage');
      stagePjdfstest(base);
      const mnt = join(tmp, 'mnt');
      mkdirSync(mnt);
      const scenario = join(guestScriptsDir, 'scenarios', 'pjdfstest.pl');
      const run = () => spawnSync('perl', [scenario, mnt, 'symlink/00.t'], { encoding: 'utf8', env: { ...process.env, PJD_BASE: base } });
      const ok = run();
      expect(ok.status).toBe(0);
      expect(parsePjdOutput(ok.stdout).get('symlink/00.t')).toMatchObject({ planned: 14, run: 14, passed: 14, failed: [] });
      expect(ok.stdout).toMatch(/^PJD-TOTAL files=1 planned=14 passed=14 /m);
      // The lab root has no openssl: without the shim (or with a broken one), refuse.
      writeFileSync(join(base, 'bin', 'openssl'), '#!/bin/sh\nexit 127\n', { mode: 0o755 });
      rmSync(join(mnt, 'pjdfstest'), { recursive: true });
      const broken = run();
      expect(broken.status).toBe(2);
      expect(broken.stdout).toMatch(/PJD-ERROR namegen/);
      expect(broken.stdout).not.toMatch(/PJD-FILE/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('pjdfstest results', () => {
  const output = [
    'PJD-PLAN files=2',
    "PJD-NOTOK chown/00.t not ok 7 - tried 'symlink a b', expected 0, got EEXIST",
    'PJD-FILE chown/00.t planned=10 run=10 passed=7 exit=0 secs=1.5 failed=7-8,10',
    'PJD-FILE chmod/12.t planned=14 run=12 passed=12 exit=1 secs=0.3 failed=13-14',
    'PJD-TOTAL files=2 planned=24 passed=19 secs=1.8',
  ].join('\n');
  const fakeRun = (config: string): PjdRun => ({
    config,
    files: parsePjdOutput(output),
    total: { files: 2, planned: 24, passed: 19 },
    output,
    guestRun: undefined as never,
  });

  test('per-file lines parse into failed check numbers and what they tried', () => {
    const f = parsePjdOutput(output);
    expect(f.get('chown/00.t')).toMatchObject({ planned: 10, run: 10, passed: 7, failed: [7, 8, 10] });
    expect(f.get('chown/00.t')!.notok[0]).toMatch(/symlink a b.*EEXIST/);
    expect(f.get('chmod/12.t')).toMatchObject({ planned: 14, run: 12, exit: 1, failed: [13, 14] });
  });

  test('a run matches only when its failures are exactly the known ones', () => {
    const known: KnownFailure[] = [
      { where: ['duofs-9p-*'], file: 'chown/00.t', checks: [7, 8, 10], reason: 'x' },
      { where: ['*'], file: 'chmod/12.t', checks: [13, 14], reason: 'y' },
    ];
    expect(expectedFailures(known, 'duofs-9p-passthrough', 'chown/00.t')).toEqual([7, 8, 10]);
    expect(expectedFailures(known, 'duofs-virtiofs-passthrough', 'chown/00.t')).toEqual([]);
    const files = ['chown/00.t', 'chmod/12.t'];
    // chmod/12.t ran short (12 of 14): a problem even though 13-14 are "known"
    expect(compareRun(fakeRun('duofs-9p-passthrough'), files, known)).toEqual(['chmod/12.t: ran 12 of 14 planned checks (exit 1)']);
    const vfs = compareRun(fakeRun('duofs-virtiofs-passthrough'), files, known);
    expect(vfs[0]).toMatch(/^chown\/00.t: 3 unexpected failure\(s\): 7,8,10/);
    const fixed = compareRun(fakeRun('duofs-9p-passthrough'), files, [...known, { where: ['*'], file: 'chown/00.t', checks: [1], reason: 'z' }]);
    expect(fixed).toContain(`chown/00.t: known failure(s) 1 passed now (update ${expectedFile})`);
    expect(compareRun(fakeRun('duofs-9p-passthrough'), [...files, 'link/00.t'], known)).toContain('link/00.t: did not run');
  });
});

d('pjdfstest subset on real guests', () => {
  const files = pjdTestFiles(SUBSET);
  const known = loadKnownFailures();

  test('the subset selects the files it names', () => {
    expect(files).toEqual(
      expect.arrayContaining(['chown/05.t', 'chmod/12.t', 'rename/00.t', 'symlink/01.t', 'link/00.t', 'mkfifo/00.t', 'truncate/00.t']),
    );
    expect(files).toHaveLength(SUBSET.length);
  });

  for (const c of CONFIGS) {
    const name = configName(c);
    test(
      `${name}: every check of the subset passes but the known failures`,
      async () => {
        if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
        const run: PjdRun = await runPjdfstest(c, {
          selection: SUBSET,
          limitS: LIMIT_S,
          onLine: (l) => {
            if (l.startsWith('PJD-DIR ')) process.stderr.write(`lab: pjdfstest ${name}: ${l.slice(8)}\n`);
          },
        });
        const out = join(labDir, 'results', 'pjdfstest');
        mkdirSync(out, { recursive: true });
        writeFileSync(join(out, `subset-${name}.txt`), run.output);
        process.stderr.write(
          `lab: pjdfstest ${name}: ${run.total.passed}/${run.total.planned} in ${run.total.files} files, ` +
            `${run.guestRun.sections[0]?.guestSeconds} s guest time, wall ${(run.guestRun.wallMs / 1000).toFixed(0)} s\n`,
        );
        expect(compareRun(run, files, known)).toEqual([]);
        expect(run.total.files).toBe(files.length);
      },
      (LIMIT_S + 180) * 1000,
    );
  }
});
