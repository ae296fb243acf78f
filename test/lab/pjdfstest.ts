// pjdfstest, the public POSIX conformance suite (vendored in
// test/lab/vendor/pjdfstest, see UPSTREAM.md there), in a lab guest on one
// file server: builds the binary on the host, stages it with the tests into
// the guest's run folder, starts the server, runs
// test/lab/guest/scenarios/pjdfstest.pl on its mount and parses the per-file
// results. Used by test/lab/pjdfstest.test.ts (a subset, in `npm test`) and
// test/lab/pjdfstest-cli.ts (`npm run pjdfstest`, the whole suite).
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, GuestError, type GuestRun, type MountSpec, type SecurityModel } from './guest.js';
import { makeWorkDir, removeWorkDir, repoRoot, tail } from './lab.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import type { Protocol } from './servers.js';

export const vendorDir = join(repoRoot, 'test', 'lab', 'vendor', 'pjdfstest');
const cacheDir = join(repoRoot, '.cache', 'pjdfstest');

/**
 * The pjdfstest binary for the vendored sources: `gcc -static` on the host
 * (the guest's root is the lab root, whose libc may differ; a static binary
 * runs on either). Cached under .cache/pjdfstest/<hash of the sources and
 * flags>/; rebuilt only when those change. Throws with gcc's output.
 */
export function buildPjdfstest(): string {
  const flags = ['-O2', '-static', '-Wall', '-Werror', '-I', vendorDir];
  const h = createHash('sha256');
  for (const f of ['pjdfstest.c', 'config.h'])
    h.update(f)
      .update('\0')
      .update(readFileSync(join(vendorDir, f)));
  h.update(flags.join(' '));
  const dir = join(cacheDir, h.digest('hex').slice(0, 16));
  const bin = join(dir, 'pjdfstest');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  const r = spawnSync('gcc', [...flags, '-o', tmp, join(vendorDir, 'pjdfstest.c')], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(
      `building pjdfstest failed (gcc ${flags.join(' ')} -o ${tmp} pjdfstest.c: ${r.error?.message ?? `status ${r.status}`}):\n${tail(r.stdout + r.stderr, 30)}`,
    );
  }
  renameSync(tmp, bin); // atomic: a concurrent build of the same sources yields the same file
  return bin;
}

/**
 * Copies the binary, tests/ and the `openssl md5` shim into `dst` (for a
 * guest: <workDir>/guest/pjdfstest, its /duofs-lab/run/pjdfstest).
 */
export function stagePjdfstest(dst: string): void {
  const bin = buildPjdfstest();
  mkdirSync(join(dst, 'bin'), { recursive: true });
  cpSync(bin, join(dst, 'pjdfstest'));
  chmodSync(join(dst, 'pjdfstest'), 0o755);
  cpSync(join(vendorDir, 'tests'), join(dst, 'tests'), { recursive: true });
  // tests/misc.sh names files with `openssl md5`; the lab root has md5sum but no openssl.
  writeFileSync(
    join(dst, 'bin', 'openssl'),
    "#!/bin/sh\n# openssl md5 for pjdfstest's namegen (tests/misc.sh)\n" +
      '[ "$1" = md5 ] || { echo "openssl shim: only md5" >&2; exit 1; }\nmd5sum | sed "s/ .*//"\n',
    { mode: 0o755 },
  );
}

/** Every .t under the vendored tests/, relative to tests/ (e.g. "chown/00.t"). */
export function pjdTestFiles(sel: string[] = ['.']): string[] {
  const root = join(vendorDir, 'tests');
  const out = new Set<string>();
  const visit = (rel: string) => {
    const abs = join(root, rel);
    if (rel.endsWith('.t')) {
      out.add(rel);
      return;
    }
    for (const n of readdirSync(abs, { withFileTypes: true })) {
      if (n.isDirectory()) visit(rel === '.' ? n.name : `${rel}/${n.name}`);
      else if (n.name.endsWith('.t')) out.add(rel === '.' ? n.name : `${rel}/${n.name}`);
    }
  };
  for (const s of sel) {
    if (!existsSync(join(root, s))) throw new Error(`pjdfstest: no test or directory ${s} under ${root}`);
    visit(s.replace(/\/+$/, '') || '.');
  }
  return [...out].sort();
}

// ------------------------------------------------------------ configurations

export type Impl = 'duofs' | 'qemu' | 'virtiofsd';

export interface PjdConfig {
  impl: Impl;
  protocol: Protocol;
  model: SecurityModel;
  /** duofs as a host user without privileges (mapped models only). */
  unprivileged?: boolean;
  /** Extra server arguments (duofs serve, or virtiofsd), e.g. ['--cache', 'never']; named in the configuration. */
  args?: string[];
}

/** e.g. duofs-virtiofs-passthrough, qemu-9p-mapped-xattr, duofs-9p-mapped-file-unpriv. */
export function configName(c: PjdConfig): string {
  const extra = c.args?.length ? `[${c.args.join(' ')}]` : '';
  return `${c.impl}-${c.protocol}-${c.model}${c.unprivileged ? '-unpriv' : ''}${extra}`;
}

/** Refuses combinations that do not exist (virtiofsd has no security models; QEMU serves 9p only). */
export function checkConfig(c: PjdConfig): void {
  const name = configName(c);
  if (c.impl === 'qemu' && c.protocol !== '9p') throw new Error(`${name}: QEMU's own server is 9p only`);
  if (c.impl === 'virtiofsd' && (c.protocol !== 'virtiofs' || c.model !== 'passthrough'))
    throw new Error(`${name}: virtiofsd serves virtio-fs with passthrough only`);
  if (c.unprivileged && (c.impl !== 'duofs' || !c.model.startsWith('mapped')))
    throw new Error(`${name}: only duofs with a mapped model runs unprivileged`);
}

/** The unprivileged user duofs runs as (a bare uid/gid, as in unprivileged.test.ts). */
export const UNPRIV = { uid: 64123, gid: 64123 };

interface Served {
  mount: MountSpec;
  daemon?: HostDaemon;
}

/**
 * Starts what serves `tree` for the configuration. duofs: virtio-fs on a
 * vhost-user-fs socket with --xattr (as the lab's virtiofsd), 9P as a
 * vhost-user virtio-9p device (trans=virtio, msize 512000), as QEMU's 9p.
 */
async function serve(c: PjdConfig, workDir: string, tree: string): Promise<Served> {
  const name = 'pjd';
  if (c.impl === 'qemu') {
    if (c.args?.length) throw new Error(`${configName(c)}: no extra arguments for QEMU's 9p`);
    return { mount: { kind: 'qemu-9p', name, dir: tree, securityModel: c.model, msize: 512000 } };
  }
  if (c.impl === 'virtiofsd') {
    const args = c.args?.length ? ['--sandbox=chroot', '--xattr', '--log-level=warn', '--rlimit-nofile=20000', ...c.args] : undefined;
    return { mount: { kind: 'virtiofsd', name, dir: tree, args } };
  }
  const sockDir = join(workDir, 'sock');
  mkdirSync(sockDir, { recursive: true, mode: 0o755 });
  const sock = join(sockDir, `${name}.sock`);
  if (c.unprivileged) {
    chownSync(tree, UNPRIV.uid, UNPRIV.gid);
    chownSync(sockDir, UNPRIV.uid, UNPRIV.gid);
  }
  const common = ['--shared-dir', tree, '--security-model', c.model, '--log-level', 'warn'];
  const args =
    c.protocol === 'virtiofs'
      ? ['serve', ...common, '--virtiofs-socket', sock, '--tag', name, '--xattr']
      : ['serve', ...common, '--9p-vhost-socket', sock, '--9p-tag', name];
  args.push(...(c.args ?? []));
  const daemon = await startDuofs(args, [sock], c.unprivileged ? { user: UNPRIV } : {});
  const mount: MountSpec =
    c.protocol === 'virtiofs'
      ? { kind: 'vhost-user-fs', name, socket: sock, tag: name }
      : { kind: 'vhost-user-9p', name, socket: sock, tag: name, msize: 512000 };
  return { mount, daemon };
}

// ------------------------------------------------------------ results

export interface FileResult {
  file: string;
  planned: number;
  run: number;
  passed: number;
  exit: number;
  secs: number;
  /** Check numbers that failed (or were planned and never printed). */
  failed: number[];
  /** What the first failing checks tried (the scenario's PJD-NOTOK lines). */
  notok: string[];
}

export interface PjdRun {
  config: string;
  files: Map<string, FileResult>;
  total: { files: number; planned: number; passed: number };
  guestRun: GuestRun;
  output: string;
}

function expandList(s: string): number[] {
  if (s === '-' || s === '') return [];
  const out: number[] = [];
  for (const part of s.split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let i = a; i <= (b ?? a); i++) out.push(i);
  }
  return out;
}

/** Parses the scenario's PJD-FILE and PJD-NOTOK lines. */
export function parsePjdOutput(output: string): Map<string, FileResult> {
  const files = new Map<string, FileResult>();
  const notok = new Map<string, string[]>();
  for (const line of output.split('\n')) {
    const n = /^PJD-NOTOK (\S+) (.*)$/.exec(line);
    if (n) {
      (notok.get(n[1]) ?? notok.set(n[1], []).get(n[1])!).push(n[2]);
      continue;
    }
    const m = /^PJD-FILE (\S+) planned=(\d+) run=(\d+) passed=(\d+) exit=(-?\d+) secs=([\d.]+) failed=(\S+)\s*$/.exec(line);
    if (!m) continue;
    files.set(m[1], { file: m[1], planned: +m[2], run: +m[3], passed: +m[4], exit: +m[5], secs: +m[6], failed: expandList(m[7]), notok: [] });
  }
  for (const [f, l] of notok) {
    const r = files.get(f);
    if (r) r.notok = l;
  }
  return files;
}

export interface RunOptions {
  /** Directories or .t files relative to tests/ (default: all). */
  selection?: string[];
  /** Guest-side limit for the whole scenario, seconds. */
  limitS: number;
  /** Called with each complete console line (progress: PJD-DIR, PJD-FILE). */
  onLine?: (line: string) => void;
  keepWorkDir?: boolean;
}

/** One guest: a fresh export, the server for `c`, pjdfstest on its mount. */
export async function runPjdfstest(c: PjdConfig, o: RunOptions): Promise<PjdRun> {
  checkConfig(c);
  const config = configName(c);
  const selection = o.selection ?? ['.'];
  pjdTestFiles(selection); // refuses an unknown selection before booting anything
  const workDir = makeWorkDir(`pjd-${config}`);
  let served: Served | undefined;
  try {
    stagePjdfstest(join(workDir, 'guest', 'pjdfstest'));
    const tree = freshTree(workDir, 'export');
    served = await serve(c, workDir, tree);
    let partial = '';
    const guestRun = await runGuest({
      label: `pjd-${config}`,
      workDir,
      mounts: [served.mount],
      scenario: 'pjdfstest.pl',
      scenarioArgs: selection,
      scenarioTimeoutSec: o.limitS,
      timeoutMs: (o.limitS + 120) * 1000,
      memoryMiB: 1024,
      keepWorkDir: o.keepWorkDir,
      onConsole:
        o.onLine &&
        ((s) => {
          const lines = (partial + s).split('\n');
          partial = lines.pop() ?? '';
          for (const l of lines) o.onLine!(l.replace(/\r/g, ''));
        }),
    });
    const section = guestRun.sections.find((s) => s.mount === served!.mount.name);
    if (!section) throw new GuestError(`pjdfstest on ${config}: no scenario output\n${tail(guestRun.console, 40)}`);
    if (section.rc !== 0)
      throw new GuestError(
        `pjdfstest on ${config}: the scenario exited with ${section.rc}${section.rc === 124 ? ` (guest limit ${o.limitS} s)` : ''}\n${tail(section.output, 40)}`,
      );
    const files = parsePjdOutput(section.output);
    const t = /^PJD-TOTAL files=(\d+) planned=(\d+) passed=(\d+)/m.exec(section.output);
    if (!t) throw new GuestError(`pjdfstest on ${config}: no PJD-TOTAL line\n${tail(section.output, 40)}`);
    return { config, files, total: { files: +t[1], planned: +t[2], passed: +t[3] }, guestRun, output: section.output };
  } catch (e) {
    const logs = served?.daemon?.output();
    if (e instanceof Error && logs?.trim()) e.message += `\n--- duofs output (tail) ---\n${tail(logs, 30)}`;
    throw e;
  } finally {
    await served?.daemon?.stop();
    if (!o.keepWorkDir) removeWorkDir(workDir);
  }
}

// ------------------------------------------------------------ expectations

export interface KnownFailure {
  /** Configuration names this applies to; `*` matches any run of characters (e.g. "*-9p-*"). */
  where: string[];
  file: string;
  checks: number[];
  reason: string;
}

export const expectedFile = join(repoRoot, 'test', 'lab', 'pjdfstest-expected.json');

export function loadKnownFailures(): KnownFailure[] {
  return (JSON.parse(readFileSync(expectedFile, 'utf8')) as { known: KnownFailure[] }).known;
}

const globRe = (g: string) =>
  new RegExp(
    `^${g
      .split('*')
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );

/** The checks of `file` expected to fail on `config`. */
export function expectedFailures(known: KnownFailure[], config: string, file: string): number[] {
  const s = new Set<number>();
  for (const k of known) if (k.file === file && k.where.some((w) => globRe(w).test(config))) k.checks.forEach((n) => s.add(n));
  return [...s].sort((a, b) => a - b);
}

/**
 * Every difference between a run and its expectation: a file that did not
 * run, ran short, or whose failing checks are not exactly the known ones.
 * Empty = the run is as expected (pass count exact).
 */
export function compareRun(run: PjdRun, files: string[], known: KnownFailure[]): string[] {
  const problems: string[] = [];
  for (const f of files) {
    const r = run.files.get(f);
    if (!r) {
      problems.push(`${f}: did not run`);
      continue;
    }
    if (r.planned === 0 || r.run !== r.planned) problems.push(`${f}: ran ${r.run} of ${r.planned} planned checks (exit ${r.exit})`);
    const want = expectedFailures(known, run.config, f);
    const extra = r.failed.filter((n) => !want.includes(n));
    const fixed = want.filter((n) => !r.failed.includes(n));
    if (extra.length)
      problems.push(
        `${f}: ${extra.length} unexpected failure(s): ${extra.join(',')}${r.notok.length ? `\n    ${r.notok.slice(0, 6).join('\n    ')}` : ''}`,
      );
    if (fixed.length) problems.push(`${f}: known failure(s) ${fixed.join(',')} passed now (update ${expectedFile})`);
  }
  for (const f of run.files.keys()) if (!files.includes(f)) problems.push(`${f}: ran but was not selected`);
  return problems;
}
