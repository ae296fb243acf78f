// Plays systemd for the CLI: listening sockets made here and passed at fds
// 3, 4, ... with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES (through `sh -c
// 'LISTEN_PID=$$ exec ...'`, as the service manager sets them between fork
// and exec), or through systemd-socket-activate; and a NOTIFY_SOCKET (a unix
// datagram socket, bound by a small python3 process: Node has none) that
// collects what duofs notifies.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
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

/** A fake service manager's notification socket: every datagram received, in order. */
export interface NotifyListener {
  /** what NOTIFY_SOCKET is set to: the path, or '@name' for an abstract socket */
  address: string;
  messages: string[];
  close(): void;
}

const LISTENER = `
import socket, sys, json
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a = sys.argv[1]
s.bind('\\0' + a[1:] if a.startswith('@') else a)
print(json.dumps('bound'), flush=True)
while True:
    print(json.dumps(s.recv(65536).decode()), flush=True)
`;

export async function notifyListener(address: string): Promise<NotifyListener> {
  const p = spawn('python3', ['-u', '-c', LISTENER, address], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages: string[] = [];
  let bound = false;
  createInterface({ input: p.stdout! }).on('line', (l) => {
    const m = JSON.parse(l) as string;
    if (m === 'bound' && !bound) bound = true;
    else messages.push(m);
  });
  await waitFor(() => bound, 'the notify socket');
  return {
    address,
    messages,
    close: () => {
      p.kill('SIGKILL');
      if (!address.startsWith('@')) fs.rmSync(address, { force: true });
    },
  };
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
