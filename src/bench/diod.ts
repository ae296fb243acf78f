// Starts diod (the reference 9P2000.L server) on a temp export for tests and
// benchmarks: installs the Debian package if it is missing, picks a free TCP
// port or a socket path, waits until it accepts connections, stops it on
// teardown.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';

const DIOD = '/usr/sbin/diod';

/** Installs the diod package with apt-get when the binary is missing. */
export function ensureDiod(): string {
  if (existsSync(DIOD)) return DIOD;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '-qq', 'diod'], { stdio: 'pipe', env });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'pipe', env });
    r = spawnSync('apt-get', ['install', '-y', '-qq', 'diod'], { stdio: 'pipe', env });
  }
  if (r.status !== 0 || !existsSync(DIOD)) {
    throw new Error(`could not install diod: ${r.stderr?.toString() ?? ''}`);
  }
  return DIOD;
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts connections at opts, or rejects after ms. */
export async function waitListening(opts: net.NetConnectOpts, ms = 10_000, proc?: ChildProcess): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = net.connect(opts);
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => {
        s.destroy();
        res(false);
      });
    });
    if (ok) return;
    if (proc && proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode} before listening`);
    if (Date.now() > deadline) throw new Error(`nothing listening at ${JSON.stringify(opts)} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface DiodServer {
  /** `127.0.0.1:PORT` or the socket path: what diodls -s and P9Client.connect take. */
  address: string;
  host?: string;
  port?: number;
  socketPath?: string;
  exportDir: string;
  proc: ChildProcess;
  /** diod's log (stderr). */
  log(): string;
  stop(): Promise<void>;
}

export interface DiodOptions {
  /** Listen on this unix socket instead of a TCP port. */
  socketPath?: string;
  /** Extra diod arguments. */
  args?: string[];
  /** Worker threads (-w). */
  threads?: number;
}

/**
 * Starts `diod -f -n -N -e EXPORT -l ADDR` (foreground, no auth, no user
 * database: numeric ids are taken as they are).
 */
export async function startDiod(exportDir: string, o: DiodOptions = {}): Promise<DiodServer> {
  const bin = ensureDiod();
  for (let attempt = 0; ; attempt++) {
    const port = o.socketPath ? undefined : await freePort();
    const listen = o.socketPath ?? `127.0.0.1:${port}`;
    const args = [
      '-f',
      '-n',
      '-N',
      '-L',
      'stderr',
      '-e',
      exportDir,
      '-l',
      listen,
      ...(o.threads ? ['-w', String(o.threads)] : []),
      ...(o.args ?? []),
    ];
    // cwd beside the export (a temp folder): diod 1.0.24 sometimes dumps core when stopped, and a core must not land in the checkout.
    const proc = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dirname(exportDir) });
    let log = '';
    proc.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      if (log.length > 1 << 20) log = log.slice(-(1 << 19));
    });
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    try {
      await waitListening(o.socketPath ? { path: o.socketPath } : { host: '127.0.0.1', port: port! }, 10_000, proc);
    } catch (e) {
      proc.kill('SIGKILL');
      await exited;
      if (attempt < 3 && !o.socketPath) continue; // port raced away: try another
      throw new Error(`diod did not start: ${(e as Error).message}\n${log}`);
    }
    const srv: DiodServer = {
      address: listen,
      exportDir,
      proc,
      log: () => log,
      stop: async () => {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(t);
        }
      },
    };
    if (port !== undefined) {
      srv.host = '127.0.0.1';
      srv.port = port;
    } else srv.socketPath = o.socketPath!;
    return srv;
  }
}
