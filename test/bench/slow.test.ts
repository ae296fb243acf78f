// --slow-storage: its option, the jobs and servers it runs by default, how a
// queue depth becomes fio arguments per protocol, the references of the
// ratios, and the judgement of the host-side check of the slow mount.
import { describe, expect, jest, test } from '@jest/globals';
import yargs from 'yargs';
import { benchOptions, defaultServers, jobCatalogue, runBench, type BenchArgs } from '../../src/bench/main.js';
import { GUEST_SERVERS, HOST_SERVERS, SLOW_GUEST_JOBS, fioArgs, slowReferences } from '../../src/bench/jobs.js';
import { judgeCheck } from '../../src/bench/slow.js';

const parse = (args: string[]): BenchArgs => benchOptions(yargs(args)).strict().exitProcess(false).parseSync() as BenchArgs;
const settings = { sizeMiB: 32, runtimeSec: 5, iodepth: 16, direct: true };
const job = (n: string) => SLOW_GUEST_JOBS.find((j) => j.name === n)!;

describe('--slow-storage', () => {
  test('the option is a number of milliseconds; absent by default, and no size is forced', () => {
    expect(parse(['--slow-storage', '20']).slowStorage).toBe(20);
    expect(parse([]).slowStorage).toBeUndefined();
    expect(parse([]).size).toBeUndefined();
  });

  test('the default jobs and servers of each mode', () => {
    expect(jobCatalogue(false, true).defaults).toEqual(['slow-read-qd1', 'slow-read-qd16', 'slow-write-qd1', 'slow-write-qd16']);
    expect(jobCatalogue(false, true).known).toContain('seq-read');
    expect(jobCatalogue(false, false).known).not.toContain('slow-read-qd1');
    expect(jobCatalogue(true, true).defaults).toEqual(['hol-same', 'hol-cross']);
    expect(jobCatalogue(true, false).known).not.toContain('hol-same');
    expect(defaultServers(false, true)).toEqual(['duofs-virtiofs', 'virtiofsd-t16', 'virtiofsd', 'duofs-9p', 'qemu-9p']);
    expect(defaultServers(false, false)).not.toContain('virtiofsd-t16');
    expect(defaultServers(true, false)).not.toContain('virtiofsd-t16');
    expect(defaultServers(true, true)).toContain('virtiofsd-t16');
  });

  test('QD16 is libaio iodepth 16 on virtio-fs and 16 psync jobs on 9p; QD1 one request either way', () => {
    const vfs = fioArgs(job('slow-read-qd16'), settings, 'virtiofs');
    expect(vfs).toEqual(expect.arrayContaining(['--rw=randread', '--bs=4k', '--ioengine=libaio', '--iodepth=16', '--direct=1', '--size=32M']));
    expect(vfs.some((a) => a.startsWith('--numjobs'))).toBe(false);
    expect(fioArgs(job('slow-write-qd16'), settings, '9p')).toEqual(
      expect.arrayContaining(['--rw=randwrite', '--ioengine=psync', '--iodepth=1', '--numjobs=16']),
    );
    expect(fioArgs(job('slow-read-qd1'), settings, 'virtiofs')).toEqual(expect.arrayContaining(['--ioengine=libaio', '--iodepth=1']));
    const p1 = fioArgs(job('slow-read-qd1'), settings, '9p');
    expect(p1).toEqual(expect.arrayContaining(['--ioengine=psync', '--iodepth=1']));
    expect(p1.some((a) => a.startsWith('--numjobs'))).toBe(false);
    // --iodepth does not change a job with its own queue depth
    expect(fioArgs(job('slow-read-qd1'), { ...settings, iodepth: 4 }, 'virtiofs')).toContain('--iodepth=1');
  });

  test('virtio-fs ratios are against virtiofsd --thread-pool-size=16 when it runs, 9p ones unchanged', () => {
    const pick = (names: string[]) => GUEST_SERVERS.filter((s) => names.includes(s.name));
    const r = slowReferences(pick(['duofs-virtiofs', 'virtiofsd', 'virtiofsd-t16', 'duofs-9p', 'qemu-9p']));
    expect(Object.fromEntries(r.map((s) => [s.name, s.reference]))).toEqual({
      'duofs-virtiofs': 'virtiofsd-t16',
      virtiofsd: 'virtiofsd-t16',
      'virtiofsd-t16': 'virtiofsd-t16',
      'duofs-9p': 'qemu-9p',
      'qemu-9p': 'qemu-9p',
    });
    expect(slowReferences(pick(['duofs-virtiofs', 'virtiofsd']))[0]!.reference).toBe('virtiofsd');
    expect(HOST_SERVERS.find((s) => s.name === 'virtiofsd-t16')!.protocol).toBe('virtiofs');
  });

  test('bad values and jobs of the other mode: status 2 with a message', async () => {
    const err = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      expect(await runBench({ slowStorage: -1, quiet: true })).toBe(2);
      expect(String(err.mock.calls[0]![0])).toMatch(/--slow-storage -1: expected milliseconds/);
      expect(await runBench({ host: true, jobs: ['hol-same'], quiet: true })).toBe(2);
      expect(String(err.mock.calls[1]![0])).toMatch(/unknown job hol-same for --host; known:/);
      expect(await runBench({ host: true, slowStorage: 20, jobs: ['slow-read-qd1'], quiet: true })).toBe(2);
      expect(String(err.mock.calls[2]![0])).toMatch(/unknown job slow-read-qd1 for --host with --slow-storage; known: hol-same, hol-cross, getattr/);
    } finally {
      err.mockRestore();
    }
  });
});

describe('the check of the slow mount', () => {
  const check = { oneMs: 24, parallelMs: 40, parallel: 16, baselineMs: 3 };
  test('a mount that delays each read and lets 16 go at once passes', () => {
    expect(() => judgeCheck(20, check)).not.toThrow();
    expect(() => judgeCheck(0, { ...check, oneMs: 3 })).not.toThrow();
  });
  test('no delay, or reads one after the other, stops the run', () => {
    expect(() => judgeCheck(20, { ...check, oneMs: 5 })).toThrow(/latency is not applied/);
    expect(() => judgeCheck(20, { ...check, parallelMs: 16 * 21 })).toThrow(/serializes reads/);
  });
});
