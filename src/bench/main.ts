// `duofs bench`: compare protocol and server throughput on one tree.
//
//   duofs bench [--shared-dir DIR] [--servers a,b] [--jobs x,y] [--size 128M] [--repeat 3]
//   duofs bench --host [--servers ...] [--jobs ...] [--cpu-prof]
//   duofs bench --render results/bench.json
//
// Wiring (src/cli.ts):
//   import { benchOptions, runBench } from './bench/main.js';
//   .command('bench', 'compare ...', benchOptions, async (argv) => process.exit(await runBench(argv)))
//
// Exit status: 0 every cell produced figures, 1 some cells failed (the table
// is still written), 2 the run could not start (the message says why and
// what fixes it).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { BenchError, labDir } from './env.js';
import {
  DEFAULT_GUEST_SERVERS,
  GUEST_JOBS,
  GUEST_SERVERS,
  HOL_LOADS,
  HOST_LOADS,
  HOST_SERVERS,
  SLOW_GUEST_JOBS,
  SLOW_GUEST_SERVERS,
  parseSizeMiB,
} from './jobs.js';
import { RESULT_FORMAT, type BenchResult } from './model.js';
import { Progress } from './progress.js';
import { renderMarkdown, renderText } from './render-table.js';
import { renderSvg } from './render-svg.js';
import { formatProfileSummary, parseCpuProfile, summarizeProfile } from './profile.js';

export interface BenchArgs {
  sharedDir?: string;
  host?: boolean;
  servers?: (string | number)[];
  jobs?: (string | number)[];
  size?: string;
  repeat?: number;
  runtime?: number;
  iodepth?: number;
  direct?: boolean;
  files?: number;
  xattr?: boolean;
  cpuProf?: boolean;
  out?: string;
  keep?: boolean;
  timeout?: number;
  mem?: number;
  cpus?: number;
  duofsArg?: (string | number)[];
  concurrency?: number;
  render?: string;
  quiet?: boolean;
  slowStorage?: number;
}

/** The jobs a mode knows, and those it runs by default. */
export function jobCatalogue(host: boolean, slow: boolean): { known: string[]; defaults: string[] } {
  const base = (host ? HOST_LOADS : GUEST_JOBS).map((j) => j.name);
  const extra = (host ? HOL_LOADS : SLOW_GUEST_JOBS).map((j) => j.name);
  return slow ? { known: [...extra, ...base], defaults: extra } : { known: base, defaults: base };
}

/** The servers a mode runs when --servers is not given. */
export function defaultServers(host: boolean, slow: boolean): string[] {
  if (host) return HOST_SERVERS.filter((s) => slow || s.name !== 'virtiofsd-t16').map((s) => s.name);
  return slow ? SLOW_GUEST_SERVERS : DEFAULT_GUEST_SERVERS;
}

const list = (v: (string | number)[] | undefined): string[] | undefined =>
  v
    ?.flatMap((x) => String(x).split(','))
    .map((x) => x.trim())
    .filter(Boolean);

/** The yargs options of `duofs bench` (plug into .command('bench', ..., benchOptions, ...)). */
export function benchOptions<T>(y: Argv<T>) {
  return y
    .usage(
      '$0 bench [options]\n\nCompare protocol and server throughput on one tree: every server mounts the same export in one lab guest ' +
        '(QEMU/TCG) and runs the same fio, metadata and untar jobs, repeated, with ratios to the reference server of each protocol ' +
        '(duofs-virtiofs : virtiofsd, duofs-9p : QEMU 9p). --host pushes requests at the servers from this process instead (no guest). ' +
        'Writes a table (stdout, bench.md), bench.json and a chart (bench.svg). Needs root and the lab (npm run lab:setup).',
    )
    .option('shared-dir', {
      type: 'string',
      describe: 'the tree every server exports (the bench works in DIR/.duofs-bench and removes it); default: a fresh folder under .lab/work',
    })
    .option('host', {
      type: 'boolean',
      default: false,
      describe:
        'host-side mode, no guest: the vhost-user test frontend drives duofs and virtiofsd with FUSE requests, the 9P client drives duofs and diod over unix sockets',
    })
    .option('servers', {
      type: 'string',
      array: true,
      describe: `servers, comma separated. Guest: ${GUEST_SERVERS.map((s) => s.name).join(', ')} (default: all but diod). Host: ${HOST_SERVERS.map((s) => s.name).join(', ')} (default: all)`,
    })
    .option('jobs', {
      type: 'string',
      array: true,
      describe: `jobs, comma separated. Guest: ${GUEST_JOBS.map((j) => j.name).join(', ')}. Host: ${HOST_LOADS.map((j) => j.name).join(', ')}. Default: all`,
    })
    .option('size', { type: 'string', describe: 'guest: size of the fio data file per server (K/M/G); default 128M, 32M with --slow-storage' })
    .option('repeat', { type: 'number', default: 3, describe: 'repetitions of every cell (the table shows median [min–max])' })
    .option('runtime', { type: 'number', describe: 'seconds per fio job in the guest (default 5) or per host-side measurement (default 2)' })
    .option('iodepth', { type: 'number', default: 16, describe: 'guest: queue depth of the libaio jobs' })
    .option('direct', { type: 'boolean', default: true, describe: 'guest: fio with O_DIRECT where the mount allows it (--no-direct: buffered)' })
    .option('files', { type: 'number', default: 1000, describe: 'guest: files of the metadata job' })
    .option('xattr', {
      type: 'boolean',
      default: false,
      describe: 'virtio-fs servers with extended attributes (duofs --xattr, virtiofsd --xattr); off for both by default',
    })
    .option('concurrency', { type: 'number', default: 8, describe: 'host: requests in flight per load' })
    .option('cpu-prof', {
      type: 'boolean',
      default: false,
      describe:
        'run duofs under node --cpu-prof; profiles (.cpuprofile, open in Chrome DevTools) go to OUT/profiles and a summary of the hot spots is printed',
    })
    .option('out', {
      type: 'string',
      describe:
        'folder for bench.json, bench.md, bench.txt, bench.svg (default .lab/results/bench-<mode>-<time>; an installed duofs without a lab: the working directory)',
    })
    .option('timeout', { type: 'number', describe: 'guest: wall-clock limit in seconds (default: three times the estimate, at least 15 minutes)' })
    .option('mem', { type: 'number', default: 1024, describe: 'guest memory, MiB' })
    .option('cpus', { type: 'number', default: 1, describe: 'guest vCPUs (1 is fastest on a 2-core host under TCG)' })
    .option('duofs-arg', {
      type: 'string',
      array: true,
      describe: 'extra argument for every duofs serve (repeatable), e.g. --duofs-arg=--cache=always',
    })
    .option('keep', { type: 'boolean', default: false, describe: 'keep the work folder (trees, sockets, logs, raw fio output)' })
    .option('render', { type: 'string', describe: 'only render an earlier bench.json again (table, Markdown, SVG next to it)' })
    .option('quiet', { type: 'boolean', default: false, describe: 'no progress lines' })
    .option('slow-storage', {
      type: 'number',
      describe:
        'every server exports a FUSE mount of the tree (a second duofs, --fuse-mount --cache never) whose reads, writes and fsyncs start MS late. Guest: 4 KiB random I/O at queue depth 1 and 16 (slow-read-qd1 ...), virtiofsd also with --thread-pool-size=16 (virtiofsd-t16). Host: head-of-line jobs, getattr latency while 16 slow reads are in flight (hol-same, hol-cross)',
    })
    .example('$0 bench', 'every server, every guest job, 3 repetitions (about an hour under TCG)')
    .example('$0 bench --servers duofs-virtiofs,virtiofsd --jobs seq-read,seq-write --repeat 5', 'virtio-fs only, sequential I/O')
    .example('$0 bench --host --cpu-prof', 'host-side request rates, with a CPU profile of duofs')
    .example('$0 bench --slow-storage 20 --repeat 1', 'every read and write of the export takes 20 ms: who keeps requests in flight');
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

/** Writes bench.json, bench.md, bench.txt and bench.svg; returns their paths. */
export function writeOutputs(r: BenchResult, dir: string, extraText = ''): Record<string, string> {
  mkdirSync(dir, { recursive: true });
  const files = { json: join(dir, 'bench.json'), md: join(dir, 'bench.md'), txt: join(dir, 'bench.txt'), svg: join(dir, 'bench.svg') };
  writeFileSync(files.json, JSON.stringify(r, null, 1) + '\n');
  writeFileSync(files.txt, renderText(r) + (extraText ? `\n${extraText}` : ''));
  writeFileSync(files.md, reportMarkdown(r, extraText));
  writeFileSync(files.svg, renderSvg(r));
  return files;
}

/** The Markdown report: what ran, the table, the notes. */
export function reportMarkdown(r: BenchResult, extraText = ''): string {
  const m = r.machine;
  const lines = [
    `# duofs bench (${r.kind === 'guest' ? 'guest' : 'host-side'}), ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `\`${r.command}\``,
    '',
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memGiB} GiB, Linux ${m.kernel}, node ${m.node}. Load average ${m.loadStart.toFixed(2)} at the start, ${m.loadEnd.toFixed(2)} at the end, ${m.loadMax.toFixed(2)} at most; ` +
      `other QEMU guests running: ${m.otherGuestsStart} at the start, ${m.otherGuestsEnd} at the end, ${m.otherGuestsMax} at most.`,
    '',
    `Versions: ${Object.entries(r.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join('; ')}.`,
    '',
    `Settings: ${Object.entries(r.settings)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}.`,
    '',
    renderMarkdown(r),
    ...r.servers.map((s) => `* **${s.name}**: ${s.description}${s.status !== 'ok' ? ` — ${s.status}${s.error ? `: ${s.error}` : ''}` : ''}`),
    '',
    ...r.notes.map((n) => `* ${n}`),
  ];
  if (extraText) lines.push('', '```', extraText.trimEnd(), '```');
  return lines.join('\n') + '\n';
}

function profileSummaries(profiles: { server: string; file: string }[], root: string): string {
  let text = '';
  for (const p of profiles) {
    try {
      const s = summarizeProfile(parseCpuProfile(readFileSync(p.file, 'utf8')), { root, top: 15 });
      text += formatProfileSummary(s, `CPU profile of duofs (${p.server}), ${p.file}`) + '\n';
    } catch (e) {
      text += `CPU profile ${p.file}: ${(e as Error).message}\n`;
    }
  }
  return text;
}

export async function runBench(argv: BenchArgs): Promise<number> {
  const progress = new Progress(process.stderr, undefined, argv.quiet === true);
  try {
    if (argv.render) {
      const file = resolve(argv.render);
      const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResult;
      if (r.format !== RESULT_FORMAT) throw new BenchError(`${file} is not a duofs bench result (format ${String(r.format)})`);
      const files = writeOutputs(r, resolve(file, '..'));
      process.stdout.write(renderText(r));
      progress.line(`wrote ${Object.values(files).join(', ')}`);
      return r.cells.every((c) => c.ok) ? 0 : 1;
    }
    const host = argv.host === true;
    const slowMs = argv.slowStorage;
    const slow = slowMs !== undefined;
    if (slow && !(Number.isFinite(slowMs) && slowMs >= 0 && slowMs <= 10_000))
      throw new BenchError(`--slow-storage ${String(slowMs)}: expected milliseconds, 0 to 10000`);
    const catalogue = jobCatalogue(host, slow);
    const servers = list(argv.servers) ?? defaultServers(host, slow);
    const jobs = list(argv.jobs) ?? catalogue.defaults;
    const known = (host ? HOST_SERVERS : GUEST_SERVERS).map((s) => s.name);
    const mode = `${host ? '--host' : 'the guest bench'}${slow ? ' with --slow-storage' : ''}`;
    for (const s of servers) if (!known.includes(s)) throw new BenchError(`unknown server ${s} for ${mode}; known: ${known.join(', ')}`);
    for (const j of jobs)
      if (!catalogue.known.includes(j)) throw new BenchError(`unknown job ${j} for ${mode}; known: ${catalogue.known.join(', ')}`);
    if (servers.length === 0 || jobs.length === 0) throw new BenchError('nothing to run: give at least one server and one job');
    const repeat = argv.repeat ?? 3;
    if (!Number.isInteger(repeat) || repeat < 1) throw new BenchError('--repeat: a whole number of at least 1');
    // An installed duofs has no lab of its own: results go to the working directory.
    const resultsDir = existsSync(labDir) ? join(labDir, 'results') : process.cwd();
    const outDir = resolve(argv.out ?? join(resultsDir, `bench-${host ? 'host' : 'guest'}${slow ? '-slow' : ''}-${stamp()}`));
    const command = `duofs bench ${process.argv.slice(process.argv.indexOf('bench') + 1).join(' ')}`.trim();
    let sizeMiB: number;
    try {
      sizeMiB = parseSizeMiB(argv.size ?? (slow ? '32M' : '128M'));
    } catch (e) {
      throw new BenchError((e as Error).message);
    }

    let result: BenchResult;
    let profiles: { server: string; file: string }[];
    if (host) {
      const { runHostBench } = await import('./host.js');
      ({ result, profiles } = await runHostBench(
        {
          servers,
          jobs,
          repeat,
          seconds: argv.runtime ?? 2,
          concurrency: argv.concurrency ?? 8,
          cpuProf: argv.cpuProf === true,
          outDir,
          sharedDir: argv.sharedDir,
          xattr: argv.xattr === true,
          duofsArgs: list(argv.duofsArg) ?? [],
          command,
          ...(slow ? { slowMs } : {}),
        },
        progress,
      ));
    } else {
      const { runGuestBench } = await import('./guest.js');
      ({ result, profiles } = await runGuestBench(
        {
          sharedDir: argv.sharedDir,
          servers,
          jobs,
          sizeMiB,
          runtimeSec: argv.runtime ?? 5,
          repeat,
          iodepth: argv.iodepth ?? 16,
          direct: argv.direct !== false,
          files: argv.files ?? 1000,
          xattr: argv.xattr === true,
          cpuProf: argv.cpuProf === true,
          outDir,
          keep: argv.keep === true,
          timeoutSec: argv.timeout,
          memMiB: argv.mem ?? 1024,
          cpus: argv.cpus ?? 1,
          duofsArgs: list(argv.duofsArg) ?? [],
          command,
          ...(slow ? { slowMs } : {}),
        },
        progress,
      ));
    }
    const { repoRoot } = await import('./env.js');
    const prof = profileSummaries(profiles, repoRoot);
    const files = writeOutputs(result, outDir, prof);
    progress.done();
    process.stdout.write('\n' + renderText(result));
    if (prof) process.stdout.write('\n' + prof);
    progress.line(
      `\nwrote ${files.txt}\n      ${files.md}\n      ${files.json}\n      ${files.svg}${profiles.length ? `\n      ${profiles.map((p) => p.file).join('\n      ')}` : ''}`,
    );
    return result.cells.every((c) => c.ok) ? 0 : 1;
  } catch (e) {
    progress.done();
    if (e instanceof BenchError) {
      console.error(`duofs bench: ${e.message}`);
      return 2;
    }
    throw e;
  }
}
