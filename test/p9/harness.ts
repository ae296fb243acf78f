// Starts duofs for the protocol suites: in process through startDuofs(), or
// as the CLI (`node bin/duofs.js serve ...`) for the CLI tests and the bench.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { P9Client } from './client.js';
import type { Qid } from './proto.js';
import { freePort, waitListening } from '../support/diod.js';
import { startDuofs, type ServeOptions } from '../../src/server.js';

// The repository root, whether this file runs from test/p9 (jest) or from
// dist/test/p9 (compiled, for the benchmark).
const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.basename(path.resolve(here, '../..')) === 'dist' ? path.resolve(here, '../../..') : path.resolve(here, '../..');

export interface Served {
  /** What P9Client.connect takes: "127.0.0.1:PORT" or a socket path. */
  address: string;
  host: string;
  port: number;
  socketPath?: string;
  close(): Promise<void>;
}

/** Starts duofs in this process on 127.0.0.1:<any port> (and a unix socket if given). */
export async function startInProcess(sharedDir: string, o: { socketPath?: string; logLevel?: string } = {}): Promise<Served> {
  const opts: ServeOptions = {
    sharedDir,
    ninepTcp: '127.0.0.1:0',
    logLevel: (o.logLevel ?? process.env.DUOFS_TEST_LOG ?? 'silent') as NonNullable<ServeOptions['logLevel']>,
  };
  if (o.socketPath) opts.ninepSocket = o.socketPath;
  const d = await startDuofs(opts);
  const a = d.ninepTcpAddress;
  if (!a) throw new Error('startDuofs did not report ninepTcpAddress');
  const s: Served = { address: `${a.host}:${a.port}`, host: a.host, port: a.port, close: () => d.close() };
  if (o.socketPath) s.socketPath = o.socketPath;
  return s;
}

let built = false;
/**
 * Builds dist/ once per process with the compiler step of
 * `node scripts/ensure-deps.mjs --build` (tsc -p .). The npm-install step of
 * that script is skipped: whatever runs these tests already has
 * node_modules, and `npm ci` refuses a lock file that is out of step.
 */
export function ensureBuilt(): void {
  if (built) return;
  const r = spawnSync(path.join(repoRoot, 'node_modules/.bin/tsc'), ['-p', repoRoot], { cwd: repoRoot, stdio: 'pipe' });
  if (r.status !== 0) throw new Error(`build failed:\n${r.stdout}\n${r.stderr}`);
  built = true;
}

export interface CliServer extends Served {
  proc: ChildProcess;
  log(): string;
}

/** Runs `node bin/duofs.js serve` (dist/ must be built) on a free TCP port and optionally a socket. */
export async function startCli(sharedDir: string, o: { socketPath?: string; logLevel?: string; extraArgs?: string[] } = {}): Promise<CliServer> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const args = [
      path.join(repoRoot, 'bin/duofs.js'),
      'serve',
      '--shared-dir',
      sharedDir,
      '--9p-tcp',
      `127.0.0.1:${port}`,
      '--log-level',
      o.logLevel ?? 'info',
      ...(o.socketPath ? ['--9p-socket', o.socketPath] : []),
      ...(o.extraArgs ?? []),
    ];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const onOut = (d: Buffer) => {
      log += d.toString();
      if (log.length > 1 << 20) log = log.slice(-(1 << 19));
    };
    proc.stdout!.on('data', onOut);
    proc.stderr!.on('data', onOut);
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    try {
      await waitListening({ host: '127.0.0.1', port }, 20_000, proc);
      if (o.socketPath) await waitListening({ path: o.socketPath }, 5_000, proc);
    } catch (e) {
      proc.kill('SIGKILL');
      await exited;
      if (attempt < 2 && /EADDRINUSE/.test(log)) continue;
      throw new Error(`duofs CLI did not start: ${(e as Error).message}\n${log}`);
    }
    const s: CliServer = {
      address: `127.0.0.1:${port}`,
      host: '127.0.0.1',
      port,
      proc,
      log: () => log,
      close: async () => {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(t);
        }
      },
    };
    if (o.socketPath) s.socketPath = o.socketPath;
    return s;
  }
}

/** Connects, versions and attaches with aname = the export path. */
export async function attach(
  srv: { address: string },
  exportDir: string,
  o: { uid?: number; msize?: number } = {},
): Promise<{ c: P9Client; root: number; qid: Qid }> {
  const so: { aname: string; uid?: number; msize?: number } = { aname: exportDir };
  if (o.uid !== undefined) so.uid = o.uid;
  if (o.msize !== undefined) so.msize = o.msize;
  return P9Client.session(srv.address, so);
}
