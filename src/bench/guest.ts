// The guest benchmark: one lab guest (QEMU/TCG) mounts the same host tree
// through every server asked for, and test/lab/guest/scenarios/bench-run.py
// runs the jobs on each mount in turn, repetition after repetition, with the
// order of servers rotating. The plan goes in, the results come out, through
// a folder of the host served to the guest by its own virtiofsd (mount
// `bench-out`, --cache=never): the host reads each cell the moment it is
// written, parses fio's JSON itself, and can tell the guest that a server it
// started has died (bench-out/dead/<server>).
import { SERVER_V8_FLAGS } from '../sys/v8-flags.js';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import type { LabDaemon, LabDaemonsModule, LabGuestModule, LabGuestRun, LabModule, LabMountSpec } from './lab-api.js';
import { BenchError, MachineWatch, importLabModule, labDir, labRoot, machineBasics, repoRoot, requireLab } from './env.js';
import { cellFromGuest, mountMessage, type GuestCell } from './cells.js';
import { GUEST_JOBS, GUEST_SERVERS, SLOW_GUEST_JOBS, fioArgs, slowReferences, type GuestJobDef, type ServerDef } from './jobs.js';
import { SlowStorage, describeCheck, judgeCheck } from './slow.js';
import { RESULT_FORMAT, type BenchResult, type CellResult } from './model.js';
import { LineSplitter, fmtDuration, type Progress } from './progress.js';
import { fmtValue } from './stats.js';

export interface GuestSettings {
  sharedDir: string | undefined;
  servers: string[];
  jobs: string[];
  sizeMiB: number;
  runtimeSec: number;
  repeat: number;
  iodepth: number;
  direct: boolean;
  files: number;
  xattr: boolean;
  cpuProf: boolean;
  /** where profiles go */
  outDir: string;
  keep: boolean;
  timeoutSec: number | undefined;
  memMiB: number;
  cpus: number;
  duofsArgs: string[];
  command: string;
  /** --slow-storage: every server exports a FUSE mount whose reads and writes take this many ms */
  slowMs?: number;
}

export interface GuestOutcome {
  result: BenchResult;
  /** CPU profiles written (one per duofs server) */
  profiles: { server: string; file: string }[];
}

/** The source tree the untar job extracts: Perl's base library from the lab root, tarred once. */
const UNTAR_SOURCE = 'usr/lib/x86_64-linux-gnu/perl-base';

interface Tarball {
  file: string;
  files: number;
  bytes: number;
  source: string;
}

function ensureTarball(stampHash: string): Tarball {
  const dir = join(labDir, 'bench');
  const file = join(dir, 'src-tree.tar');
  const meta = join(dir, 'src-tree.json');
  if (existsSync(file) && existsSync(meta)) {
    const m = JSON.parse(readFileSync(meta, 'utf8')) as Tarball & { stamp: string };
    if (m.stamp === stampHash) return { file, files: m.files, bytes: m.bytes, source: m.source };
  }
  const src = join(labRoot, UNTAR_SOURCE);
  if (!existsSync(src)) throw new BenchError(`the lab root has no ${src} for the untar job: rebuild it with \`npm run lab:setup -- --force\``);
  mkdirSync(dir, { recursive: true });
  let files = 0;
  let bytes = 0;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      files++;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) bytes += statSync(p).size;
    }
  };
  walk(src);
  const tmp = `${file}.tmp`;
  const r = spawnSync('tar', ['-cf', tmp, '-C', resolve(src, '..'), 'perl-base'], { encoding: 'utf8' });
  if (r.status !== 0) throw new BenchError(`could not make the untar source (tar -cf ${tmp}): ${r.stderr}`);
  execFileSync('mv', [tmp, file]);
  const t: Tarball = { file, files, bytes, source: `/${UNTAR_SOURCE} of the lab root` };
  writeFileSync(meta, JSON.stringify({ ...t, stamp: stampHash }));
  return t;
}

function duofsVersion(): string {
  let v = 'unknown';
  try {
    v = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    /* no package.json */
  }
  const rev = spawnSync('git', ['-C', repoRoot, 'describe', '--always', '--dirty'], { encoding: 'utf8' });
  return rev.status === 0 ? `${v} (${rev.stdout.trim()})` : v;
}

function jobTimeoutSec(j: GuestJobDef, s: GuestSettings): number {
  if (j.kind === 'fio') return s.runtimeSec + 120;
  if (j.kind === 'meta') return Math.max(300, Math.ceil(s.files * 0.2));
  return 900;
}

function jobEstimateSec(j: GuestJobDef, s: GuestSettings): number {
  if (j.kind === 'fio') return s.runtimeSec + 8;
  if (j.kind === 'meta') return 10 + s.files * 0.01;
  return 30;
}

interface DuofsHandle {
  server: string;
  daemon: LabDaemon;
  profile?: string;
}

export async function runGuestBench(s: GuestSettings, progress: Progress): Promise<GuestOutcome> {
  const stamp = requireLab([
    { path: 'usr/bin/fio', what: 'fio' },
    { path: 'usr/bin/python3', what: 'python3' },
    { path: 'usr/bin/socat', what: 'socat' },
  ]);
  if (!existsSync(join(repoRoot, 'dist', 'src', 'cli.js')))
    throw new BenchError('duofs is not built (dist/src/cli.js missing): run `npm run build` (npm run bench builds first)');
  const servers: ServerDef[] = s.servers.map((n) => {
    const d = GUEST_SERVERS.find((x) => x.name === n);
    if (!d) throw new BenchError(`unknown server ${n}; known: ${GUEST_SERVERS.map((x) => x.name).join(', ')}`);
    return d;
  });
  const allJobs = [...GUEST_JOBS, ...SLOW_GUEST_JOBS];
  const jobs: GuestJobDef[] = s.jobs.map((n) => {
    const d = allJobs.find((x) => x.name === n);
    if (!d) throw new BenchError(`unknown job ${n}; known: ${allJobs.map((x) => x.name).join(', ')}`);
    return d;
  });

  const lab = await importLabModule<LabModule>('lab');
  const guestMod = await importLabModule<LabGuestModule>('guest');
  const daemons = await importLabModule<LabDaemonsModule>('daemons');

  const startedAt = new Date().toISOString();
  const watch = new MachineWatch();
  const work = lab.makeWorkDir('bench');
  const benchOut = join(work, 'bench-out');
  mkdirSync(join(benchOut, 'cells'), { recursive: true });
  mkdirSync(join(benchOut, 'dead'), { recursive: true });
  const sockDir = join(work, 'sock');
  mkdirSync(sockDir, { recursive: true });
  const ownTree = !s.sharedDir;
  const slow = s.slowMs !== undefined;
  // Slow storage: the real folder goes under a FUSE mount, the servers export the mount.
  const real = s.sharedDir ? resolve(s.sharedDir) : join(work, slow ? 'slow-real' : 'tree');
  const tree = slow ? join(work, 'tree') : real;
  if (ownTree) mkdirSync(real, { recursive: true, mode: 0o755 });
  else if (!existsSync(real) || !statSync(real).isDirectory()) throw new BenchError(`--shared-dir ${real} is not a directory`);
  if (slow) mkdirSync(tree, { recursive: true, mode: 0o755 });
  let slowStore: SlowStorage | undefined;
  const benchDirName = '.duofs-bench';
  const benchDir = join(real, benchDirName);
  spawnSync('rm', ['-rf', '--one-file-system', benchDir]);

  const duofs: DuofsHandle[] = [];
  const notes: string[] = [];
  const cells = new Map<string, CellResult & { fioVersion?: string }>();
  const mountErrors = new Map<string, string>();
  const deadServers = new Map<string, string>();
  let guestError: string | undefined;
  let tarball: Tarball | undefined;
  const profiles: { server: string; file: string }[] = [];
  try {
    if (jobs.some((j) => j.kind === 'untar')) {
      tarball = ensureTarball(stamp.hash);
      try {
        linkSync(tarball.file, join(benchOut, 'src-tree.tar'));
      } catch {
        copyFileSync(tarball.file, join(benchOut, 'src-tree.tar'));
      }
    }
    if (s.slowMs !== undefined) {
      progress.status(`mounting the slow storage (${s.slowMs} ms per read and write)`);
      slowStore = await SlowStorage.start(real, tree, s.slowMs);
      const probe = '.duofs-slow-check';
      writeFileSync(join(real, probe), Buffer.alloc(1 << 20, 1));
      try {
        const c = await slowStore.check(probe);
        notes.push(describeCheck(s.slowMs, c));
        progress.line(describeCheck(s.slowMs, c));
        judgeCheck(s.slowMs, c);
      } finally {
        rmSync(join(real, probe), { force: true });
      }
    }
    // Slow storage: the data files are written on the real folder, not through the servers. Guest 9p
    // writes reach the server 4 KiB at a time, so a 32 MiB layout would take minutes of slow writes.
    const hostLaidOut = slow && jobs.some((j) => j.kind === 'fio');
    if (hostLaidOut) {
      const chunk = Buffer.alloc(1 << 20);
      for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
      for (const x of servers) {
        const d = join(benchDir, x.name);
        mkdirSync(d, { recursive: true });
        const fd = openSync(join(d, 'data'), 'w');
        try {
          for (let m = 0; m < s.sizeMiB; m++) writeSync(fd, chunk);
        } finally {
          closeSync(fd);
        }
      }
    }
    const fioSettings = { sizeMiB: s.sizeMiB, runtimeSec: s.runtimeSec, iodepth: s.iodepth, direct: s.direct };
    const plan = {
      servers: servers.map((x) => ({ name: x.name, protocol: x.protocol, mount: `/mnt/${x.name}`, workdir: `${benchDirName}/${x.name}` })),
      jobs: jobs.map((j) => ({
        name: j.name,
        kind: j.kind,
        timeoutSec: jobTimeoutSec(j, s),
        ...(j.fio
          ? {
              file: j.fio.file,
              args: fioArgs(j, fioSettings),
              // 9p gets its requests in flight from several jobs (see GuestJobDef.fio.qd)
              ...(j.fio.qd !== undefined
                ? { argsByProtocol: { virtiofs: fioArgs(j, fioSettings, 'virtiofs'), '9p': fioArgs(j, fioSettings, '9p') } }
                : {}),
            }
          : {}),
      })),
      repeat: s.repeat,
      sizeMiB: s.sizeMiB,
      hostLaidOut,
      direct: s.direct,
      dropCaches: true,
      cellTimeoutSec: Math.max(...jobs.map((j) => jobTimeoutSec(j, s))),
      files: s.files,
      untarFile: 'src-tree.tar',
      untarFiles: tarball?.files ?? 0,
      untarBytes: tarball?.bytes ?? 0,
    };
    writeFileSync(join(benchOut, 'plan.json'), JSON.stringify(plan, null, 1));

    // Host-side servers: one duofs process per front-end, on the same tree.
    const duofsBin = join(repoRoot, 'bin', 'duofs.js');
    const profDir = join(s.outDir, 'profiles');
    if (s.cpuProf) mkdirSync(profDir, { recursive: true });
    const mounts: LabMountSpec[] = [];
    for (const srv of servers) {
      const sock = join(sockDir, `${srv.name}.sock`);
      let front: string[] | undefined;
      let mount: LabMountSpec;
      switch (srv.name) {
        case 'duofs-virtiofs':
          front = ['--virtiofs-socket', sock, '--tag', srv.name, ...(s.xattr ? ['--xattr'] : [])];
          mount = { kind: 'vhost-user-fs', name: srv.name, socket: sock, tag: srv.name };
          break;
        case 'duofs-9p':
          front = ['--9p-vhost-socket', sock, '--9p-tag', srv.name];
          mount = { kind: 'vhost-user-9p', name: srv.name, socket: sock, tag: srv.name, msize: 512000 };
          break;
        case 'duofs-9p-stream':
          front = ['--9p-socket', sock];
          mount = { kind: '9p-stream', name: srv.name, socket: sock, msize: 512000 };
          break;
        case 'virtiofsd':
        case 'virtiofsd-t16':
          mount = {
            kind: 'virtiofsd',
            name: srv.name,
            dir: tree,
            args: [
              '--sandbox=chroot',
              '--log-level=warn',
              '--rlimit-nofile=20000',
              ...(s.xattr ? ['--xattr'] : []),
              ...(srv.name === 'virtiofsd-t16' ? ['--thread-pool-size=16'] : []),
            ],
          };
          break;
        case 'qemu-9p':
          mount = { kind: 'qemu-9p', name: srv.name, dir: tree, securityModel: 'passthrough', msize: 512000 };
          break;
        case 'diod':
          mount = { kind: 'diod', name: srv.name, dir: tree, msize: 512000 };
          break;
        default:
          throw new BenchError(`no recipe for server ${srv.name}`);
      }
      mounts.push(mount);
      if (front) {
        const profName = `duofs-${srv.name}.cpuprofile`;
        const nodeArgs = [...SERVER_V8_FLAGS, ...(s.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${profName}`] : [])];
        progress.status(`starting ${srv.name}`);
        try {
          const d = await daemons.startHostDaemon({
            name: srv.name,
            command: process.execPath,
            // A profile is written at exit to a host path, which a sandboxed server no longer sees.
            args: [
              ...nodeArgs,
              duofsBin,
              'serve',
              '--shared-dir',
              tree,
              '--log-level',
              'warn',
              ...front,
              ...(s.cpuProf ? ['--sandbox', 'none'] : []),
              ...s.duofsArgs,
            ],
            waitFor: [sock],
          });
          const h: DuofsHandle = { server: srv.name, daemon: d };
          if (s.cpuProf) h.profile = join(profDir, profName);
          duofs.push(h);
          d.process.once('exit', (code, signal) => {
            if (stopping) return;
            const said = lab.tail(d.output(), 8).replace(/\s+/g, ' ').trim().slice(-600);
            const why = `duofs (${srv.name}) exited during the run (${signal ?? `status ${code}`})${said ? `; its last output: ${said}` : ''}`;
            deadServers.set(srv.name, why);
            try {
              writeFileSync(join(benchOut, 'dead', srv.name), why);
            } catch {
              /* the work folder is gone */
            }
            progress.line(`!! ${why}`);
          });
        } catch (e) {
          const why = `duofs (${srv.name}) did not start: ${(e as Error).message.split('\n').slice(0, 4).join(' ')}`;
          deadServers.set(srv.name, why);
          writeFileSync(join(benchOut, 'dead', srv.name), why);
          progress.line(`!! ${why}`);
          mounts.pop();
        }
      }
    }
    mounts.push({ kind: 'virtiofsd', name: 'bench-out', dir: benchOut, args: ['--sandbox=chroot', '--log-level=warn', '--cache=never'] });

    // Time: boot, layout, the cells; the limit is generous (TCG on a busy machine).
    const estimate = 60 + servers.length * (10 + s.sizeMiB / 20) + s.repeat * servers.length * jobs.reduce((n, j) => n + jobEstimateSec(j, s), 0);
    const timeoutSec = s.timeoutSec ?? Math.max(900, Math.ceil(3 * estimate));
    const total = s.repeat * jobs.length * servers.length;
    progress.line(
      `duofs bench: ${servers.length} servers x ${jobs.length} jobs x ${s.repeat} repetitions = ${total} cells on ${tree}; ` +
        `about ${fmtDuration(estimate)} (limit ${fmtDuration(timeoutSec)}); results in ${s.outDir}`,
    );

    // Progress from the guest console.
    let cellsDone = 0;
    let cellSecs = 0;
    let current = 'booting the guest';
    const t0 = Date.now();
    const eta = (): string => (cellsDone > 0 ? `, eta ~${fmtDuration((cellSecs / cellsDone) * (total - cellsDone))}` : '');
    const refresh = (): void => progress.status(`[${cellsDone}/${total}] ${current} (${fmtDuration((Date.now() - t0) / 1000)}${eta()})`);
    const ticker = setInterval(refresh, 1000);
    ticker.unref();
    const readCell = (id: string): (CellResult & { fioVersion?: string }) | undefined => {
      try {
        const g = JSON.parse(readFileSync(join(benchOut, 'cells', `${id}.json`), 'utf8')) as GuestCell;
        return cellFromGuest(
          g,
          jobs.find((j) => j.name === g.job),
          (name) => {
            try {
              return readFileSync(join(benchOut, 'cells', name), 'utf8');
            } catch {
              return undefined;
            }
          },
        );
      } catch {
        return undefined;
      }
    };
    const splitter = new LineSplitter((l) => {
      let m: RegExpExecArray | null;
      if (l.includes('@@DUOFS-LAB BOOTED')) {
        current = 'guest booted, mounting';
        progress.line(`guest booted after ${fmtDuration((Date.now() - t0) / 1000)}`);
      } else if ((m = /@@DUOFS-LAB MOUNT-FAILED (\S+)@@/.exec(l))) {
        progress.line(`!! ${m[1]} could not be mounted`);
      } else if ((m = /^BENCH-PREPARE (\S+)/.exec(l))) {
        current = `preparing ${m[1]} (O_DIRECT probe, ${s.sizeMiB} MiB data file)`;
      } else if ((m = /^BENCH-DEAD (\S+) (.*)$/.exec(l))) {
        progress.line(`!! ${m[1]} is given up: its remaining cells are skipped (${m[2]})`);
      } else if ((m = /^BENCH-LAYOUT (\S+) (.*)$/.exec(l))) {
        progress.line(`${m[1]}: data file laid out, ${m[2]}`);
      } else if ((m = /^BENCH-CELL (\d+) (\d+) (\S+) (\S+) (\d+) (begin|end|skip)(?: rc=(\S+) secs=([\d.]+))?/.exec(l))) {
        const [, i, n, job, server, rep, what, , secs] = m;
        const label = `[${i}/${n}] rep ${Number(rep) + 1}/${s.repeat} ${job} on ${server}`;
        if (what === 'begin') {
          current = `rep ${Number(rep) + 1}/${s.repeat}: ${job} on ${server}`;
        } else {
          cellsDone = Number(i);
          cellSecs += Number(secs ?? 0);
          const c = readCell(`r${rep}-${job}-${server}`);
          const jd = jobs.find((j) => j.name === job);
          const shown =
            c?.ok && jd
              ? jd.metrics
                  .filter((x) => x.shown)
                  .map((x) => `${fmtValue(c.metrics[x.key] ?? NaN)} ${x.key === x.unit ? '' : x.label === x.unit ? '' : x.label + ' '}${x.unit}`)
                  .join(', ')
              : '';
          progress.line(
            what === 'skip'
              ? `${label}: skipped (${(c?.error ?? 'server failed').slice(0, 120)})`
              : c?.ok
                ? `${label}: ${shown} (${Number(secs).toFixed(1)} s)`
                : `${label}: FAILED ${(c?.error ?? `rc ${m[7]}`).slice(0, 200)}`,
          );
        }
      }
      refresh();
    });

    watch.ours = 1;
    let run: LabGuestRun | undefined;
    try {
      run = await guestMod.runGuest({
        label: 'bench',
        workDir: work,
        mounts,
        scenario: 'bench-run.py',
        scenarioOn: ['bench-out'],
        timeoutMs: timeoutSec * 1000,
        allowMountFailure: true,
        memoryMiB: s.memMiB,
        cpus: s.cpus,
        keepWorkDir: s.keep,
        onConsole: (t) => splitter.push(t),
      });
      for (const [name, text] of Object.entries(run.mountFailures)) mountErrors.set(name, `mount failed: ${mountMessage(text)}`);
      const sec = run.sections.find((x) => x.mount === 'bench-out');
      if (!sec) guestError = mountErrors.get('bench-out') ?? 'the guest never ran the bench script';
      else if (sec.rc !== 0) guestError = `the bench script exited with ${sec.rc}: ${lab.tail(sec.output, 6).replace(/\s+/g, ' ').slice(-500)}`;
    } catch (e) {
      if (existsSync(join(benchOut, 'done'))) {
        // bench-run.py finished, then powered off without init's final sync (a dead server's mount would hang it).
        progress.line('the guest finished the plan and powered off directly (a server had died)');
      } else {
        guestError = (e as Error).message.split('\n')[0];
        progress.line(`!! the guest failed: ${(e as Error).message.split('\n').slice(0, 30).join('\n')}`);
      }
    } finally {
      watch.ours = 0;
      clearInterval(ticker);
      progress.done();
    }

    // Collect every cell (also those the progress lines did not show).
    for (const name of readdirSync(join(benchOut, 'cells'))) {
      const m = /^(r\d+-.+)\.json$/.exec(name);
      if (!m || name.endsWith('.fio.json') || name.endsWith('.meta.json')) continue;
      const c = readCell(m[1]!);
      if (c) cells.set(`${c.rep}|${c.job}|${c.server}`, c);
    }
  } finally {
    stopping = true;
    for (const h of duofs) {
      await stopGracefully(h.daemon, lab);
      if (h.profile && existsSync(h.profile)) profiles.push({ server: h.server, file: h.profile });
    }
    stopping = false;
    spawnSync('rm', ['-rf', '--one-file-system', benchDir]);
    if (slowStore) await slowStore.stop();
    if (!s.keep) lab.removeWorkDir(work);
    else progress.line(`work folder kept: ${work}`);
  }

  // Every cell of the plan, failed where nothing came back.
  const out: CellResult[] = [];
  let fioVersion: string | undefined;
  for (let rep = 0; rep < s.repeat; rep++) {
    for (const j of jobs) {
      for (const srv of servers) {
        const c = cells.get(`${rep}|${j.name}|${srv.name}`);
        if (c) {
          fioVersion ??= c.fioVersion;
          const { fioVersion: _v, ...rest } = c;
          if (!rest.ok && mountErrors.has(srv.name)) rest.error = mountErrors.get(srv.name)!;
          out.push(rest);
        } else {
          out.push({
            server: srv.name,
            job: j.name,
            rep,
            ok: false,
            metrics: {},
            error: mountErrors.get(srv.name) ?? deadServers.get(srv.name) ?? `not run${guestError ? ` (${guestError.slice(0, 200)})` : ''}`,
          });
        }
      }
    }
  }
  const machine = watch.finish();
  notes.push(
    `Guest: QEMU TCG (software emulation), ${s.cpus} vCPU, ${s.memMiB} MiB, kernel ${stamp.kernelVersion}; every server mounts the same host tree (${ownTree ? 'a fresh folder under .lab/work' : tree}), each works in its own folder ${benchDirName}/<server>.`,
    `Guest caches dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every cell and between the metadata phases. The host page cache is not dropped: each server's data file is written through that server before its first read, so reads are served from the host page cache for every server alike (the run measures protocols and servers, not the host disk).`,
    s.direct
      ? `fio runs with --direct=1 where the mount accepts O_DIRECT: the guest page cache stays out of the figures, 9p (no cache) and virtiofs (cache=auto) are treated alike, and libaio really keeps ${s.iodepth} requests in flight (without O_DIRECT, io_submit on these file systems completes each request before returning).`
      : 'fio runs buffered (--no-direct): figures include the guest page cache and readahead; libaio degrades to synchronous I/O.',
    `Each cell is time based (${s.runtimeSec} s of fio per cell); the order of the servers rotates between jobs and repetitions. Metadata job: ${s.files} empty files in one directory (create, stat, readdir listings, unlink), from Python. Untar: ${tarball ? `${tarball.files} entries, ${(tarball.bytes / 1e6).toFixed(1)} MB (${tarball.source})` : 'not run'}, extracted from guest memory.`,
  );
  if (slow) {
    notes.push(
      `Slow storage (--slow-storage ${s.slowMs}): every server exports a FUSE mount of the real folder served by a second duofs (serve --fuse-mount --debug-io-latency-ms ${s.slowMs} --cache never), so every read, write and fsync a server issues starts ${s.slowMs} ms late, for all servers alike (the data files are written by the host on the real folder, not through the servers); --cache never makes the mount's I/O direct (no host page cache), one server read is one slow read. Jobs with a queue depth use libaio at that iodepth on virtio-fs and psync with that many fio jobs on 9p.`,
    );
  }
  if (s.servers.includes('diod'))
    notes.push(
      'diod: reached over the 9P stream relay like duofs-9p-stream; the lab has seen it refuse the guest kernel\'s attach ("user lookup: Operation not permitted"), see docs/lab.md.',
    );
  const serverStatus = servers.map((d) => {
    const mine = out.filter((c) => c.server === d.name);
    const ok = mine.filter((c) => c.ok).length;
    const error = mountErrors.get(d.name) ?? deadServers.get(d.name) ?? mine.find((c) => !c.ok)?.error;
    return {
      ...d,
      status: ok === mine.length ? ('ok' as const) : ok === 0 ? ('failed' as const) : ('partial' as const),
      ...(ok === mine.length || !error ? {} : { error }),
    };
  });
  const result: BenchResult = {
    format: RESULT_FORMAT,
    kind: 'guest',
    startedAt,
    finishedAt: new Date().toISOString(),
    command: s.command,
    machine: { ...machineBasics(), ...machine },
    versions: {
      duofs: duofsVersion(),
      qemu: stamp.qemuVersion.replace(/^QEMU emulator version /, ''),
      virtiofsd: stamp.virtiofsdVersion.replace(/^virtiofsd /, ''),
      'guest kernel': stamp.kernelVersion,
      ...(fioVersion ? { fio: fioVersion.replace(/^fio-/, '') } : {}),
      node: process.version,
    },
    settings: {
      ...(s.slowMs !== undefined ? { slowStorageMs: s.slowMs } : {}),
      size: `${s.sizeMiB}M`,
      runtime: s.runtimeSec,
      repeat: s.repeat,
      iodepth: s.iodepth,
      direct: s.direct,
      files: s.files,
      xattr: s.xattr,
      vcpus: s.cpus,
      memMiB: s.memMiB,
      msize: 512000,
      tree: ownTree ? '(fresh folder)' : tree,
      ...(s.duofsArgs.length ? { duofsArgs: s.duofsArgs.join(' ') } : {}),
    },
    servers: slow ? slowReferences(serverStatus) : serverStatus,
    jobs: jobs.map((j) => ({ name: j.name, title: j.title, metrics: j.metrics })),
    cells: out,
    notes,
  };
  return { result, profiles };
}

let stopping = false;

/** SIGTERM, and time to write a CPU profile, before the harness's SIGKILL. */
async function stopGracefully(d: LabDaemon, lab: LabModule): Promise<void> {
  const p = d.process;
  if (p.exitCode === null && p.signalCode === null && p.pid !== undefined) {
    try {
      process.kill(p.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await Promise.race([lab.exited(p), new Promise((r) => setTimeout(r, 60_000).unref())]);
  }
  await d.stop();
}
