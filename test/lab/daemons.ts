// Host-side server processes for lab guests, above all duofs itself: start a
// daemon, wait until its socket exists, capture its output for failure
// messages, and always stop it (pdeathsig as the last resort).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, stopProcess, tail, trackProcess } from './lab.js';

export interface HostDaemon {
  readonly name: string;
  readonly process: ChildProcess;
  /** Everything the daemon printed on stdout and stderr so far. */
  output(): string;
  /** Stops the daemon (SIGTERM, then SIGKILL); safe to call twice. */
  stop(): Promise<void>;
}

export class DaemonError extends Error {}

export interface StartOptions {
  name: string;
  command: string;
  args: string[];
  /** Unix sockets (or other files) that must exist before the daemon counts as ready. */
  waitFor: string[];
  readyTimeoutMs?: number;
  env?: Record<string, string>;
  cwd?: string;
  /**
   * Run as this host user instead of root: `setpriv --reuid=UID --regid=GID
   * --clear-groups` (pdeathsig still applies; setpriv sets it after the id
   * change). The user needs no passwd entry. Omitted: root, as before.
   */
  user?: { uid: number; gid: number };
}

/** Starts a host process and waits until each `waitFor` path is a socket (or file). */
export async function startHostDaemon(o: StartOptions): Promise<HostDaemon> {
  const ids = o.user ? [`--reuid=${o.user.uid}`, `--regid=${o.user.gid}`, '--clear-groups'] : [];
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', ...ids, '--', o.command, ...o.args], {
    cwd: o.cwd ?? repoRoot,
    env: { ...process.env, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  trackProcess(child);
  let out = '';
  const grab = (b: Buffer) => {
    if (out.length < 4e6) out += b.toString('utf8');
  };
  child.stdout!.on('data', grab);
  child.stderr!.on('data', grab);
  let spawnError: Error | undefined;
  child.once('error', (e) => {
    spawnError = e;
  });
  const d: HostDaemon = {
    name: o.name,
    process: child,
    output: () => out,
    stop: () => stopProcess(child),
  };
  const deadline = Date.now() + (o.readyTimeoutMs ?? 20_000);
  const ready = () => o.waitFor.every((p) => existsSync(p) && (statSync(p).isSocket() || statSync(p).isFile()));
  while (!ready()) {
    const gone = child.exitCode !== null || child.signalCode !== null || spawnError;
    if (gone || Date.now() > deadline) {
      await d.stop();
      throw new DaemonError(
        `${o.name} ${gone ? `exited (${spawnError?.message ?? child.exitCode ?? child.signalCode})` : 'did not become ready'} ` +
          `before creating ${o.waitFor.join(', ')}\n$ ${o.command} ${o.args.join(' ')}\n--- ${o.name} output (tail) ---\n${tail(out, 40)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return d;
}

export const duofsBin = join(repoRoot, 'bin', 'duofs.js');
export const duofsCli = join(repoRoot, 'dist', 'src', 'cli.js');

let built = false;
/** Compiles the project (tsc -> dist/) once per process, so bin/duofs.js runs current sources. */
export function ensureDuofsBuilt(): void {
  if (built) return;
  const r = spawnSync(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', repoRoot], {
    cwd: repoRoot,
    encoding: 'utf8',
  });
  if (!existsSync(duofsCli)) {
    throw new DaemonError(`duofs is not built (${duofsCli} missing); tsc said:\n${tail(r.stdout + r.stderr, 30)}`);
  }
  built = true;
}

/**
 * Starts `node bin/duofs.js <args>` and waits for the sockets in `waitFor`
 * (e.g. the --9p-socket path). Example:
 *   const d = await startDuofs(['serve', '--shared-dir', dir, '--9p-socket', sock, '--log-level', 'info'], [sock]);
 *   ...; await d.stop();
 * `opts.user` runs it as an unprivileged host user (see StartOptions.user);
 * the export and socket folders must then be that user's.
 */
export async function startDuofs(
  args: string[],
  waitFor: string[],
  opts: { readyTimeoutMs?: number; env?: Record<string, string>; user?: { uid: number; gid: number } } = {},
): Promise<HostDaemon> {
  ensureDuofsBuilt();
  return startHostDaemon({ name: 'duofs', command: process.execPath, args: [duofsBin, ...args], waitFor, ...opts });
}
