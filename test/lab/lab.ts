// The lab's shared plumbing: where the lab root and per-run work folders are,
// the stamp lab setup writes, and a registry that kills every process the
// harness started (and removes its work folders) even when a test throws or
// jest exits early. See docs/lab.md.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const labDir = join(repoRoot, '.lab');
export const labRoot = join(labDir, 'root');
export const workBase = join(labDir, 'work');
/** Scripts that run inside the guest (init, scenarios); bound read-only into it. */
export const guestScriptsDir = join(repoRoot, 'test', 'lab', 'guest');

/** What scripts/lab-setup.mjs records once the lab root is complete. */
export interface LabStamp {
  hash: string;
  kernel: string; // path inside the root, e.g. /boot/vmlinuz-7.2.13+deb14-amd64
  kernelVersion: string;
  virtiofsd: string; // path inside the root
  qemuVersion: string;
  virtiofsdVersion: string;
  packages: string[];
}

export class LabUnavailable extends Error {}

/** The stamp of a complete lab root; throws LabUnavailable (with the fix) otherwise. */
export function labStamp(): LabStamp {
  const p = join(labDir, 'stamp.json');
  if (!existsSync(p) || !existsSync(labRoot)) {
    throw new LabUnavailable(`no lab root at ${labRoot}: run \`npm run lab:setup\` (as root) first`);
  }
  return JSON.parse(readFileSync(p, 'utf8')) as LabStamp;
}

/** True when this process can run lab guests at all (root, lab built). */
export function labAvailable(): { ok: true } | { ok: false; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: 'lab guests need root' };
  try {
    labStamp();
    return { ok: true };
  } catch (e) {
    return { ok: false, why: (e as Error).message };
  }
}

// ------------------------------------------------------------ cleanup registry

const liveProcs = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // Synchronous last resort; the normal path tears down in `finally` blocks.
  process.on('exit', () => {
    for (const p of liveProcs) killTree(p, 'SIGKILL');
    for (const d of liveDirs) removeWorkDir(d);
  });
}

/** Tracks a child so that it is killed when this process exits, whatever the reason. */
export function trackProcess(p: ChildProcess): void {
  hookExit();
  liveProcs.add(p);
  p.once('exit', () => liveProcs.delete(p));
}

/**
 * Kills a child we started, and its process group when it leads one.
 * Children are started through `setpriv --pdeathsig KILL`, so they also die
 * when this process dies without running any handler (SIGKILL, crash).
 */
export function killTree(p: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (p.pid === undefined || p.exitCode !== null || p.signalCode !== null) return;
  try {
    process.kill(-p.pid, signal);
  } catch {
    /* not a group leader */
  }
  try {
    process.kill(p.pid, signal);
  } catch {
    /* already gone */
  }
}

/** Resolves when the child has exited (immediately if it already has). */
export function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((res) => p.once('exit', () => res()));
}

/** Kills a child and waits (bounded) for it to be gone. */
export async function stopProcess(p: ChildProcess, graceMs = 2000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  killTree(p, 'SIGTERM');
  const timer = new Promise<'late'>((res) => setTimeout(() => res('late'), graceMs).unref());
  if ((await Promise.race([exited(p).then(() => 'done' as const), timer])) === 'late') {
    killTree(p, 'SIGKILL');
    await Promise.race([exited(p), new Promise((res) => setTimeout(res, 5000).unref())]);
  }
}

// ------------------------------------------------------------ work folders

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let seq = 0;
/**
 * A fresh folder .lab/work/<pid>-<n>-<label>/ (host trees, sockets, logs of
 * one guest). Folders left by dead processes are removed on the way.
 */
export function makeWorkDir(label: string): string {
  hookExit();
  mkdirSync(workBase, { recursive: true });
  for (const name of readdirSync(workBase)) {
    const pid = Number(name.split('-')[0]);
    if (pid && pid !== process.pid && !pidAlive(pid)) removeWorkDir(join(workBase, name));
  }
  const dir = join(workBase, `${process.pid}-${++seq}-${label.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40)}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  liveDirs.add(dir);
  return dir;
}

/** Keeps a work folder: it is no longer removed when this process exits. */
export function keepWorkDir(dir: string): void {
  liveDirs.delete(dir);
}

/** Removes a work folder without ever crossing into a mount (there should be none). */
export function removeWorkDir(dir: string): void {
  liveDirs.delete(dir);
  if (process.env.DUOFS_LAB_KEEP === '1') return;
  spawnSync('rm', ['-rf', '--one-file-system', dir], { stdio: 'ignore' });
}

/** Quotes a string for a POSIX shell. */
export function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Last `n` lines of a text, for failure messages. */
export function tail(text: string, n = 60): string {
  const lines = text.replace(/\r/g, '').split('\n');
  return lines.slice(-n).join('\n');
}
