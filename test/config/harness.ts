// `duofs serve --config FILE` as a child process, driven as an operator
// would: SIGHUP after rewriting the file, `duofs status` over the control socket.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ensureBuilt, repoRoot } from '../p9/harness.js';
import { queryStatus } from '../../src/config/control.js';
import type { DaemonStatus } from '../../src/config/daemon.js';

export interface ConfigDaemonProc {
  proc: ChildProcess;
  log(): string;
  status(): Promise<DaemonStatus>;
  /** SIGHUP, then waits until the log says the reload was done (or refused) */
  hup(): Promise<void>;
  close(): Promise<void>;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `node bin/duofs.js ARGS` to completion. */
export function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin/duofs.js'), ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export async function startConfigDaemon(config: string, controlSocket: string, extra: string[] = []): Promise<ConfigDaemonProc> {
  ensureBuilt();
  const proc = spawn(
    process.execPath,
    [
      path.join(repoRoot, 'bin/duofs.js'),
      'serve',
      '--config',
      config,
      '--sandbox',
      'none',
      '--seccomp',
      'none',
      ...(extra.includes('--log-level') ? [] : ['--log-level', 'info']),
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  const onOut = (d: Buffer): void => {
    log += d.toString();
  };
  proc.stdout!.on('data', onOut);
  proc.stderr!.on('data', onOut);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`duofs serve --config exited ${proc.exitCode}:\n${log}`);
    try {
      await queryStatus(controlSocket);
      break;
    } catch {
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`duofs serve --config did not answer on ${controlSocket}:\n${log}`);
      }
      await sleep(100);
    }
  }
  let reloads = 0;
  return {
    proc,
    log: () => log,
    status: () => queryStatus(controlSocket),
    hup: async () => {
      const want = ++reloads;
      const count = (): number => (log.match(/reload: \d+ added|config not reloaded/g) ?? []).length;
      proc.kill('SIGHUP');
      const until = Date.now() + 30_000;
      while (count() < want) {
        if (Date.now() > until) throw new Error(`no reload logged after SIGHUP:\n${log}`);
        await sleep(50);
      }
    },
    close: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
