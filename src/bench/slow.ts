// `--slow-storage MS`: the tree every server under test exports is a FUSE
// mount served by a second duofs (`serve --fuse-mount --debug-io-latency-ms
// MS --cache never`) over the real folder. virtiofsd and QEMU's 9p have no
// latency flag; a slow file system under the export is the same for all.
// --cache never makes every read direct, so each read a server issues is one
// host read that takes MS, and the kernel sends concurrent ones at once.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BenchError, repoRoot } from './env.js';

export interface SlowCheck {
  /** wall time of one 4 KiB O_DIRECT dd through the slow mount, ms */
  oneMs: number;
  /** wall time of `parallel` such dd at once, ms */
  parallelMs: number;
  parallel: number;
  /** the same one dd on the real folder (process start-up), ms */
  baselineMs: number;
}

const mounted = (dir: string): boolean =>
  readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === dir);

const live = new Set<SlowStorage>();
let exitHooked = false;

export class SlowStorage {
  private output = '';

  private constructor(
    readonly real: string,
    readonly mountpoint: string,
    readonly ms: number,
    private readonly child: ChildProcess,
  ) {
    const grab = (b: Buffer): void => {
      if (this.output.length < 1e5) this.output += b.toString('utf8');
    };
    child.stdout!.on('data', grab);
    child.stderr!.on('data', grab);
  }

  /** Mounts `real` on `mountpoint` (an empty folder outside `real`) with every read, write and fsync MS late. */
  static async start(real: string, mountpoint: string, ms: number, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<SlowStorage> {
    if (!Number.isFinite(ms) || ms < 0) throw new BenchError(`--slow-storage ${ms}: expected milliseconds (0 or more)`);
    const args = [
      join(repoRoot, 'bin', 'duofs.js'),
      'serve',
      '--shared-dir',
      real,
      '--fuse-mount',
      mountpoint,
      '--debug-io-latency-ms',
      String(ms),
      '--cache',
      'never',
      '--log-level',
      'warn',
      ...extraArgs,
    ];
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    const s = new SlowStorage(real, mountpoint, ms, child);
    live.add(s);
    if (!exitHooked) {
      exitHooked = true;
      // A SIGKILLed server leaves a dead FUSE mount ("Transport endpoint is not connected").
      process.on('exit', () => {
        for (const x of live) x.forceUnmount();
      });
    }
    const deadline = Date.now() + 20_000;
    while (!mounted(mountpoint)) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        await s.stop();
        throw new BenchError(
          `the slow storage did not mount (${child.exitCode ?? child.signalCode ?? 'not mounted within 20 s'}):\n$ node ${args.join(' ')}\n${s.output.slice(-2000)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return s;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  log(): string {
    return this.output;
  }

  /**
   * Times 4 KiB O_DIRECT reads of `file` (a name under both folders) with dd:
   * one alone, then `parallel` at once. They should take about MS each, and
   * the parallel ones MS together, not `parallel` × MS.
   */
  async check(file: string, parallel = 16): Promise<SlowCheck> {
    const dd = (dir: string, block: number): Promise<number> =>
      new Promise((resolve, reject) => {
        const t0 = performance.now();
        const p = spawn('dd', [`if=${join(dir, file)}`, 'of=/dev/null', 'bs=4k', 'count=1', `skip=${block}`, 'iflag=direct', 'status=none'], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let err = '';
        p.stderr.on('data', (b: Buffer) => (err += b.toString()));
        p.once('exit', (code) =>
          code === 0
            ? resolve(performance.now() - t0)
            : reject(new BenchError(`slow storage check: dd of ${join(dir, file)} failed (${code}): ${err.trim()}`)),
        );
      });
    const baselineMs = await dd(this.real, 1);
    const oneMs = await dd(this.mountpoint, 3);
    const t0 = performance.now();
    await Promise.all(Array.from({ length: parallel }, (_, i) => dd(this.mountpoint, 5 + i * 13)));
    return { oneMs, parallelMs: performance.now() - t0, parallel, baselineMs };
  }

  /** SIGTERM (duofs unmounts on exit), then a lazy unmount if the mount is still there. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    }
    this.forceUnmount();
    live.delete(this);
  }

  private forceUnmount(): void {
    if (mounted(this.mountpoint)) spawnSync('umount', ['-l', this.mountpoint]);
  }
}

/** A sentence for the notes: what the check measured. */
export function describeCheck(ms: number, c: SlowCheck): string {
  return (
    `Slow storage checked before the run with dd (4 KiB, O_DIRECT, through the mount): one read ${c.oneMs.toFixed(1)} ms, ` +
    `${c.parallel} at once ${c.parallelMs.toFixed(1)} ms together (dd on the real folder: ${c.baselineMs.toFixed(1)} ms; ${ms} ms asked).`
  );
}

/** Throws when the slow mount does not delay reads, or serializes them. */
export function judgeCheck(ms: number, c: SlowCheck): void {
  if (ms > 0 && c.oneMs < 0.8 * ms)
    throw new BenchError(
      `slow storage: one read took ${c.oneMs.toFixed(1)} ms through the mount, less than the ${ms} ms asked: the latency is not applied`,
    );
  if (ms > 0 && c.parallelMs > Math.max(4 * ms + 4 * c.baselineMs, (c.parallel * ms) / 2)) {
    throw new BenchError(
      `slow storage: ${c.parallel} reads at once took ${c.parallelMs.toFixed(1)} ms (one: ${c.oneMs.toFixed(1)} ms): the mount serializes reads, the comparison would measure it rather than the servers`,
    );
  }
}
