// Where things are and what is missing: the repository root (from src/bench
// under jest, or dist/src/bench when compiled), the lab, and the checks that
// turn a missing lab or tool into a message with the command that fixes it.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { register } from 'node:module';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root, whether this file runs from src/bench or dist/src/bench. */
export const repoRoot = basename(resolve(here, '../..')) === 'dist' ? resolve(here, '../../..') : resolve(here, '../..');
/** The lab (a checkout's .lab): DUOFS_LAB_DIR points an installed duofs at one. */
export const labDir = process.env.DUOFS_LAB_DIR ? resolve(process.env.DUOFS_LAB_DIR) : join(repoRoot, '.lab');
export const labRoot = join(labDir, 'root');

/** A problem the operator can fix; the message says how. Exit status 2. */
export class BenchError extends Error {
  override name = 'BenchError';
}

export const LAB_FIX = 'npm run lab:setup';

export interface LabStampInfo {
  hash: string;
  kernel: string;
  kernelVersion: string;
  virtiofsd: string;
  qemuVersion: string;
  virtiofsdVersion: string;
}

/** The lab root's stamp, or a BenchError naming the fix. */
export function requireLab(tools: { path: string; what: string }[] = []): LabStampInfo {
  if (process.getuid?.() !== 0)
    throw new BenchError('duofs bench boots lab guests and starts servers as root: run it as root (sudo npm run bench ...)');
  const stampPath = join(labDir, 'stamp.json');
  if (!existsSync(stampPath) || !existsSync(labRoot)) {
    throw new BenchError(
      `no lab root at ${labRoot} (QEMU, virtiofsd, diod, fio and a guest kernel live there): run \`${LAB_FIX}\` first (about a minute, ~600 MB)`,
    );
  }
  const stamp = JSON.parse(readFileSync(stampPath, 'utf8')) as LabStampInfo;
  for (const t of tools) {
    if (!existsSync(join(labRoot, t.path))) {
      throw new BenchError(`the lab root has no ${t.what} (${join(labRoot, t.path)}): rebuild it with \`${LAB_FIX} -- --force\``);
    }
  }
  return stamp;
}

let hooked = false;
/**
 * Imports a module of the lab harness (test/lab/*.ts) from its TypeScript
 * source, through the lab's own swc loader (test/lab/ts-loader.mjs; the same
 * way `node --import ./test/lab/ts-hooks.mjs test/lab/vm.ts` runs). The
 * compiled copies under dist/test/lab cannot be used: they locate the lab
 * root and the guest scripts relative to their own file.
 */
export async function importLabModule<T>(name: 'guest' | 'lab' | 'daemons'): Promise<T> {
  const loader = join(repoRoot, 'test', 'lab', 'ts-loader.mjs');
  const src = join(repoRoot, 'test', 'lab', `${name}.ts`);
  if (!existsSync(loader) || !existsSync(src))
    throw new BenchError(`the lab harness is missing (${src}); duofs bench runs from a checkout of the repository`);
  if (!existsSync(join(repoRoot, 'node_modules', '@swc', 'core')))
    throw new BenchError('@swc/core is missing (the lab harness runs through it): run `npm install`');
  if (!hooked) {
    register(pathToFileURL(loader).href);
    hooked = true;
  }
  return (await import(pathToFileURL(src).href)) as T;
}

// ------------------------------------------------------------------ the machine

/** Count of running QEMU system emulators (other helpers' guests, and ours). */
export function qemuProcesses(): number {
  let n = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('qemu-system')) n++;
    } catch {
      // gone
    }
  }
  return n;
}

export function machineBasics(): { cpus: number; cpuModel: string; memGiB: number; kernel: string; node: string } {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
  };
}

/**
 * CPU seconds (user + system) a process and its live descendants have used
 * so far, from /proc/PID/stat; undefined when gone. Descendants count: a
 * sandboxed duofs serves from a grandchild of the process started (its
 * supervisor and unshare(1) sit in between).
 */
export function cpuSeconds(pid: number): number | undefined {
  const own = (p: number): number | undefined => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields after the command: state(0) ... utime(11) stime(12)
      return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
    } catch {
      return undefined;
    }
  };
  const total = own(pid);
  if (total === undefined) return undefined;
  let sum = total;
  const stack = [pid];
  for (let depth = 0; stack.length && depth < 64; depth++) {
    const p = stack.pop()!;
    let kids: number[] = [];
    try {
      kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      // gone
    }
    for (const k of kids) {
      sum += own(k) ?? 0;
      stack.push(k);
    }
  }
  return sum;
}

/** Samples the load average and the count of other guests while a run goes on. */
export class MachineWatch {
  loadStart = os.loadavg()[0]!;
  loadMax = this.loadStart;
  otherStart: number;
  otherMax: number;
  private timer: NodeJS.Timeout;
  /** how many QEMU processes are ours right now */
  ours = 0;

  constructor() {
    this.otherStart = qemuProcesses();
    this.otherMax = this.otherStart;
    this.timer = setInterval(() => this.sample(), 5000);
    this.timer.unref();
  }

  private sample(): void {
    this.loadMax = Math.max(this.loadMax, os.loadavg()[0]!);
    this.otherMax = Math.max(this.otherMax, Math.max(0, qemuProcesses() - this.ours));
  }

  finish(): { loadStart: number; loadEnd: number; loadMax: number; otherGuestsStart: number; otherGuestsEnd: number; otherGuestsMax: number } {
    clearInterval(this.timer);
    this.sample();
    const loadEnd = os.loadavg()[0]!;
    const otherEnd = Math.max(0, qemuProcesses() - this.ours);
    return {
      loadStart: this.loadStart,
      loadEnd,
      loadMax: Math.max(this.loadMax, loadEnd),
      otherGuestsStart: this.otherStart,
      otherGuestsEnd: otherEnd,
      otherGuestsMax: Math.max(this.otherMax, otherEnd),
    };
  }
}
