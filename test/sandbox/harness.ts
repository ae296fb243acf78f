// Runs test/sandbox/fixtures/seccomp-serve.ts (compiled: dist/, built by
// jest's global setup) as a child and talks to it over stdin/stdout; the
// FUSE mount, sockets and export are made in a temporary directory. Also a
// command line for measuring the allow-list by hand:
//   node --import ./test/lab/ts-hooks.mjs test/sandbox/harness.ts [--mode none|log|kill] [--engine E] [--strace FILE]
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SeccompMode } from '../../src/sandbox/seccomp.js';
import { fuseMountWorkload, ninepWorkload, virtiofsWorkload } from './workload.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../..');
export const fixture = path.join(repoRoot, 'dist/test/sandbox/fixtures/seccomp-serve.js');

export interface ServeConfig {
  mode: SeccompMode;
  ioEngine?: 'sync' | 'threads' | 'io_uring';
  ninep?: boolean;
  virtiofs?: boolean;
  fuseMount?: boolean;
  deny?: string[];
  allow?: string[];
  noTsync?: boolean;
  warmPool?: boolean;
  logLevel?: 'info' | 'debug' | 'warn';
}

export interface Served {
  pid: number;
  child: ChildProcess;
  base: string;
  exportDir: string;
  ninepSocket: string;
  virtiofsSocket: string;
  mountpoint: string;
  /** sends one command line */
  send(cmd: string): void;
  /** the next stdout line matching `re` (rejects when the child exits first) */
  line(re: RegExp, timeoutMs?: number): Promise<string>;
  /** how the child ended */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
  stdout(): string;
  /** ends the child if still running, unmounts, removes the directory */
  cleanup(): Promise<void>;
}

function isMounted(dir: string): boolean {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === dir);
}

export async function startServe(cfg: ServeConfig, o: { strace?: string } = {}): Promise<Served> {
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-seccomp-')));
  const exportDir = path.join(base, 'export');
  const mountpoint = path.join(base, 'mnt');
  fs.mkdirSync(exportDir, { mode: 0o755 });
  fs.mkdirSync(mountpoint);
  const ninepSocket = path.join(base, '9p.sock');
  const virtiofsSocket = path.join(base, 'vfs.sock');
  const json = JSON.stringify({
    mode: cfg.mode,
    sharedDir: exportDir,
    ...(cfg.ninep !== false ? { ninepSocket } : {}),
    ...(cfg.virtiofs !== false ? { virtiofsSocket } : {}),
    ...(cfg.fuseMount ? { fuseMount: mountpoint } : {}),
    ...(cfg.ioEngine ? { ioEngine: cfg.ioEngine } : {}),
    ...(cfg.deny ? { deny: cfg.deny } : {}),
    ...(cfg.allow ? { allow: cfg.allow } : {}),
    ...(cfg.noTsync ? { noTsync: true } : {}),
    ...(cfg.warmPool === false ? { warmPool: false } : {}),
    logLevel: cfg.logLevel ?? 'info',
  });
  const argv = o.strace
    ? (['/usr/bin/strace', ['-f', '-qq', '-s', '48', '-o', o.strace, process.execPath, fixture, json]] as const)
    : ([process.execPath, [fixture, json]] as const);
  const child = spawn(argv[0], [...argv[1]], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: { re: RegExp; resolve: (l: string) => void; reject: (e: Error) => void; from: number }[] = [];
  const lines: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => {
      for (const w of waiters.splice(0))
        w.reject(new Error(`the server exited (code ${code}, signal ${signal}) before a line matching ${w.re}\nstdout:\n${out}\nstderr:\n${err}`));
      r({ code, signal });
    }),
  );
  let consumed = 0;
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString();
    const parts = out.split('\n');
    lines.splice(0, lines.length, ...parts.slice(0, -1));
    for (const w of [...waiters]) {
      const i = lines.findIndex((l, k) => k >= w.from && w.re.test(l));
      if (i >= 0) {
        waiters.splice(waiters.indexOf(w), 1);
        consumed = Math.max(consumed, i + 1);
        w.resolve(lines[i]!);
      }
    }
  });
  child.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const line = (re: RegExp, timeoutMs = 20_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const i = lines.findIndex((l, k) => k >= consumed && re.test(l));
      if (i >= 0) {
        consumed = i + 1;
        resolve(lines[i]!);
        return;
      }
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`the server has exited (code ${child.exitCode}, signal ${child.signalCode})\nstdout:\n${out}\nstderr:\n${err}`));
        return;
      }
      const w = { re, resolve, reject, from: consumed };
      waiters.push(w);
      setTimeout(() => {
        const k = waiters.indexOf(w);
        if (k >= 0) {
          waiters.splice(k, 1);
          reject(new Error(`no line matching ${re} in ${timeoutMs} ms\nstdout:\n${out}\nstderr:\n${err}`));
        }
      }, timeoutMs).unref();
    });
  const s: Served = {
    pid: 0,
    child,
    base,
    exportDir,
    ninepSocket,
    virtiofsSocket,
    mountpoint,
    send: (cmd) => void child.stdin!.write(cmd + '\n'),
    line,
    exited,
    stderr: () => err,
    stdout: () => out,
    cleanup: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      if (isMounted(mountpoint)) spawnSync('umount', ['-l', mountpoint]);
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
  try {
    const ready = await line(/^READY /, 30_000);
    s.pid = (JSON.parse(ready.slice(6)) as { pid: number }).pid;
  } catch (e) {
    await s.cleanup();
    throw e;
  }
  return s;
}

/** Every workload the server under test serves: 9P, virtio-fs, the FUSE mount, then its own work. */
export async function driveAll(s: Served, cfg: ServeConfig): Promise<void> {
  if (cfg.ninep !== false) await ninepWorkload(s.ninepSocket, s.exportDir);
  if (cfg.virtiofs !== false) {
    await virtiofsWorkload(s.virtiofsSocket);
    await virtiofsWorkload(s.virtiofsSocket, 'vfs2'); // a reconnect (a guest reboot)
  }
  if (cfg.fuseMount) await fuseMountWorkload(s.mountpoint);
  s.send('work');
  await s.line(/^OK work|^ERROR/);
}

// The command line (measurement by hand).
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (k: string): string | undefined => (process.argv.includes(k) ? process.argv[process.argv.indexOf(k) + 1] : undefined);
  const cfg: ServeConfig = {
    mode: (arg('--mode') ?? 'none') as SeccompMode,
    fuseMount: !process.argv.includes('--no-fuse'),
    warmPool: !process.argv.includes('--cold-pool'),
  };
  const engine = arg('--engine');
  if (engine) cfg.ioEngine = engine as NonNullable<ServeConfig['ioEngine']>;
  const strace = arg('--strace');
  const s = await startServe(cfg, strace ? { strace } : {});
  try {
    await driveAll(s, cfg);
    s.send('exit');
    const r = await s.exited;
    process.stdout.write(
      `server pid ${s.pid} exited: ${JSON.stringify(r)}\n${s
        .stderr()
        .split('\n')
        .filter((l) => /seccomp|unmount|error/i.test(l))
        .join('\n')}\n`,
    );
  } finally {
    await s.cleanup();
  }
}
