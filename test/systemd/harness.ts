// Plays systemd for the CLI: listening sockets made here and passed at fds
// 3, 4, ... with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES (through `sh -c
// 'LISTEN_PID=$$ exec ...'`, as the service manager sets them between fork
// and exec), or through systemd-socket-activate.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const bin = path.join(repoRoot, 'bin', 'duofs.js');

export interface Daemon {
  proc: ChildProcess;
  err: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function track(proc: ChildProcess): Daemon {
  let err = '';
  proc.stdout?.on('data', (b: Buffer) => {
    err += b.toString();
  });
  proc.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  return { proc, err: () => err, exited };
}

/**
 * `duofs serve ARGS` with `fds` at 3, 4, ... and the LISTEN_* variables the
 * service manager would set (listenPid 'self' = the duofs process itself).
 */
export function startActivated(args: string[], o: { fds: number[]; names?: string[]; listenPid?: 'self' | number; env?: NodeJS.ProcessEnv }): Daemon {
  const stdio: StdioOptions = ['ignore', 'pipe', 'pipe', ...o.fds];
  const vars = [`LISTEN_FDS=${o.fds.length}`, ...(o.names ? [`LISTEN_FDNAMES=${o.names.join(':')}`] : [])];
  const pid = o.listenPid === undefined || o.listenPid === 'self' ? '$$' : String(o.listenPid);
  const quoted = [process.execPath, bin, 'serve', '--log-format', 'text', ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const proc = spawn('/bin/sh', ['-c', `LISTEN_PID=${pid} ${vars.join(' ')} exec ${quoted}`], { stdio, env: { ...process.env, ...o.env } });
  return track(proc);
}

export async function waitFor(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The server's pid: the supervisor's grandchild (unshare --fork's child), or the process itself. */
export function serverPid(pid: number): number {
  const kids = (p: number): number[] => {
    try {
      return fs.readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const unshare = kids(pid)[0];
  return unshare === undefined ? pid : (kids(unshare)[0] ?? unshare);
}
