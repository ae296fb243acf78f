// The bench's options, job catalogue and fio command lines; bad input gives
// exit status 2 with a message, --render re-renders a saved result.
import { afterAll, describe, expect, jest, test } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yargs from 'yargs';
import { benchOptions, runBench, type BenchArgs } from '../../src/bench/main.js';
import { GUEST_JOBS, fioArgs, parseSizeMiB } from '../../src/bench/jobs.js';
import { LineSplitter, Progress, fmtDuration } from '../../src/bench/progress.js';
import { fixtureResult } from './fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'duofs-bench-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const parse = (args: string[]): BenchArgs => benchOptions(yargs(args)).strict().exitProcess(false).parseSync() as BenchArgs;

describe('options', () => {
  test('defaults and lists given either way', () => {
    const a = parse([]);
    expect(a).toMatchObject({ host: false, repeat: 3, iodepth: 16, direct: true, files: 1000, cpuProf: false });
    const b = parse([
      '--servers',
      'duofs-9p,qemu-9p',
      '--servers',
      'virtiofsd',
      '--jobs=seq-read',
      '--no-direct',
      '--cpu-prof',
      '--duofs-arg=--cache=always',
    ]);
    expect(b.servers).toEqual(['duofs-9p,qemu-9p', 'virtiofsd']);
    expect(b.jobs).toEqual(['seq-read']);
    expect(b.direct).toBe(false);
    expect(b.cpuProf).toBe(true);
    expect(b.duofsArg).toEqual(['--cache=always']);
  });

  test('sizes', () => {
    expect(parseSizeMiB('64M')).toBe(64);
    expect(parseSizeMiB('1G')).toBe(1024);
    expect(parseSizeMiB('2048k')).toBe(2);
    expect(parseSizeMiB('100')).toBe(100);
    expect(parseSizeMiB('1GiB')).toBe(1024);
    expect(() => parseSizeMiB('lots')).toThrow(/--size lots/);
    expect(() => parseSizeMiB('100k')).toThrow(/at least 1M/);
  });
});

describe('fio command lines', () => {
  const job = (n: string) => GUEST_JOBS.find((j) => j.name === n)!;
  const s = { sizeMiB: 64, runtimeSec: 5, iodepth: 16, direct: true };

  test('sequential and random, time based, JSON output', () => {
    const a = fioArgs(job('seq-read'), s);
    expect(a).toEqual(
      expect.arrayContaining([
        '--rw=read',
        '--bs=1M',
        '--ioengine=psync',
        '--iodepth=1',
        '--direct=1',
        '--size=64M',
        '--time_based=1',
        '--runtime=5',
        '--output-format=json',
      ]),
    );
    expect(a.some((x) => x.startsWith('--filename') || x.startsWith('--output='))).toBe(false);
    expect(fioArgs(job('rand-write'), s)).toEqual(expect.arrayContaining(['--rw=randwrite', '--bs=4k', '--iodepth=1']));
  });

  test('queue depth only for libaio; end_fsync only for buffered writes', () => {
    expect(fioArgs(job('rand-read-aio'), s)).toEqual(expect.arrayContaining(['--ioengine=libaio', '--iodepth=16']));
    expect(fioArgs(job('seq-write'), s)).not.toContain('--end_fsync=1');
    expect(fioArgs(job('seq-write'), { ...s, direct: false })).toEqual(expect.arrayContaining(['--direct=0', '--end_fsync=1']));
    expect(fioArgs(job('seq-read'), { ...s, direct: false })).not.toContain('--end_fsync=1');
    expect(() => fioArgs(job('meta'), s)).toThrow(/not a fio job/);
  });
});

describe('runBench', () => {
  test('an unknown server or job: status 2 and a message naming the known ones', async () => {
    const err = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      expect(await runBench({ servers: ['nfs'], quiet: true })).toBe(2);
      expect(String(err.mock.calls[0]![0])).toMatch(
        /unknown server nfs .*known: duofs-virtiofs, virtiofsd, duofs-9p, qemu-9p, duofs-9p-stream, diod/,
      );
      expect(await runBench({ host: true, jobs: ['seq-read'], quiet: true })).toBe(2);
      expect(String(err.mock.calls[1]![0])).toMatch(/unknown job seq-read for --host/);
      expect(await runBench({ repeat: 0, quiet: true })).toBe(2);
      expect(await runBench({ size: 'huge', quiet: true })).toBe(2);
      expect(String(err.mock.calls[3]![0])).toMatch(/--size huge/);
    } finally {
      err.mockRestore();
    }
  });

  test('--render writes the table, Markdown, JSON and SVG next to a saved result', async () => {
    const dir = join(tmp, 'render');
    const file = join(dir, 'bench.json');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir);
    writeFileSync(file, JSON.stringify(fixtureResult()));
    const out = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
    let code: number;
    try {
      code = await runBench({ render: file, quiet: true });
    } finally {
      out.mockRestore();
    }
    expect(code).toBe(1); // the recorded run has failed cells (diod)
    for (const f of ['bench.md', 'bench.txt', 'bench.svg']) expect(existsSync(join(dir, f))).toBe(true);
    expect(readFileSync(join(dir, 'bench.txt'), 'utf8')).toContain('seq read 1M');
    writeFileSync(file, JSON.stringify({ format: 'other' }));
    const err = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      expect(await runBench({ render: file, quiet: true })).toBe(2);
    } finally {
      err.mockRestore();
    }
  });
});

describe('progress', () => {
  test('not a terminal: plain lines only, no status, no escape codes', () => {
    let text = '';
    const sink = {
      write: (s: string) => {
        text += s;
        return true;
      },
    } as unknown as NodeJS.WritableStream;
    const p = new Progress(sink, false);
    p.status('[1/9] working');
    p.line('cell done');
    p.done();
    expect(text).toBe('cell done\n');
  });

  test('a terminal: the status line is redrawn around permanent lines', () => {
    let text = '';
    const sink = {
      write: (s: string) => {
        text += s;
        return true;
      },
      columns: 40,
    } as unknown as NodeJS.WritableStream;
    const p = new Progress(sink, true);
    p.status('[1/9] working');
    p.line('cell done');
    p.done();
    expect(text).toBe('\r\x1b[K[1/9] working\r\x1b[Kcell done\n[1/9] working\r\x1b[K');
  });

  test('console chunks become whole lines', () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l));
    s.push('BENCH-CELL 1 2 seq');
    s.push('-read a 0 begin\r\nnext');
    s.push(' line\n');
    expect(lines).toEqual(['BENCH-CELL 1 2 seq-read a 0 begin', 'next line']);
  });

  test('durations', () => {
    expect(fmtDuration(5)).toBe('5s');
    expect(fmtDuration(125)).toBe('2m05s');
    expect(fmtDuration(3 * 3600 + 60)).toBe('3h01m');
  });
});
