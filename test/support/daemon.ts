// Runs the real duofs CLI as a child process (a FUSE mount must never be
// served by the process that uses it) and tears it down reliably.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.join(repoRoot, 'bin', 'duofs.js');

export interface Daemon {
  child: ChildProcess;
  /** everything the daemon wrote to stderr so far */
  stderr(): string;
  stop(): Promise<number | null>;
}

function isMounted(dir: string): boolean {
  const real = fs.realpathSync(dir);
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === real);
}

/** Starts `duofs serve ARGS` and waits until every socket exists and the FUSE mount (if any) is up. */
export async function startDaemon(args: string[], wait: { sockets?: string[]; mount?: string } = {}): Promise<Daemon> {
  const child = spawn(process.execPath, [bin, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ready = (wait.sockets ?? []).every((s) => fs.existsSync(s)) && (!wait.mount || isMounted(wait.mount));
    if (ready) break;
    if (child.exitCode !== null) throw new Error(`duofs exited (${child.exitCode}):\n${err}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`duofs did not come up:\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    child,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode !== null) return child.exitCode;
      const done = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await done;
      clearTimeout(t);
      if (wait.mount && isMounted(wait.mount)) fs.rmSync(wait.mount, { force: true }); // never leave a dead mount behind
      return code;
    },
  };
}
