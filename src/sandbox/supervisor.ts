// The first stage of --sandbox namespace. Namespaces are per thread in
// Linux and Node has threads before any of our code runs (V8's workers,
// libuv's pool), so the server cannot enter a mount namespace itself and
// take every thread with it. Instead this process — the one the operator,
// libvirt or systemd started — starts the server again inside new mount,
// pid, ipc and uts namespaces (net too unless 9P listens on TCP; a user
// namespace too as a non-root user), through util-linux's unshare(1), and
// stays as its supervisor, as virtiofsd's parent does:
//  * it mounts --fuse-mount here, in the host's mount namespace, and hands
//    the /dev/fuse fd over (a mount made inside would be seen by no one);
//  * it forwards SIGTERM, SIGINT and SIGHUP to the server;
//  * it hands socket-activated listeners down at their numbers (LISTEN_PID
//    could not name the server: unshare forks it), and it is the process
//    that tells systemd READY=1 (when the server reports ready) and
//    STOPPING=1 (src/systemd/notify.ts);
//  * when the server ends it unlinks the server's sockets (inside, those
//    names mean files of the export), unmounts the FUSE mount, says in one
//    line how the server ended — a seccomp kill included — and exits with
//    the server's status;
//  * as a non-root user given --uid-map/--gid-map it writes the user
//    namespace's maps (newuidmap/newgidmap) before the server runs
//    (userns.ts), where --map-root-user would map only its own id.
import { withServerV8Flags } from '../sys/v8-flags.js';
import { spawn, type StdioOptions } from 'node:child_process';
import { accessSync, constants, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { createInterface } from 'node:readline';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { DevFuseMount } from '../../protocols/fuse/dev-fuse.js';
import { MNT_DETACH, close, umount2 } from '../sys/index.js';
import { exitNow } from '../sys/root.js';
import type { Logger } from '../log.js';
import { CHANNEL_ENV, FUSE_FD_ENV, STAGE_ENV, USERNS_ENV } from './mode.js';
import { SandboxError } from './root.js';
import { SeccompWatch, describeSeccompDeath } from './seccomp-log.js';
import { USERNS_WAITING, applyUsernsMaps, hasUsernsMaps, usernsLaunch } from './userns.js';
import type { UsernsMaps } from './userns-map.js';
import type { ServiceNotifier } from '../systemd/notify.js';

export interface SupervisorOptions {
  /** the arguments after node's own: the entry script and the command line */
  argv: string[];
  log: Logger;
  /** fds the server must inherit at the same numbers (--fd, --9p-fd, --virtiofs-fd) */
  inheritFds?: number[];
  /** a new network namespace (false when 9P listens on TCP: a new one would have no interfaces) */
  newNet: boolean;
  /** --fuse-mount: mounted here, served inside */
  fuse?: { mountpoint: string; maxWrite: number };
  /** false: start the server plainly, only to keep the FUSE mount out here (chroot, none) */
  namespaces?: boolean;
  /** --uid-map/--gid-map (checked by checkUsernsMapsAllowed): the user namespace's maps, for a non-root supervisor */
  usernsMaps?: UsernsMaps;
  /** more environment for the server (the socket-activated listeners) */
  env?: Record<string, string>;
  /** $NOTIFY_SOCKET: this process notifies systemd on the server's behalf */
  notifier?: ServiceNotifier;
}

/** The unshare(1) options for the server's namespaces. */
export function unshareArgs(o: { newNet: boolean; userns: boolean }): string[] {
  return [
    ...(o.userns ? ['--user', '--map-root-user'] : []),
    '--mount',
    '--pid',
    '--fork',
    '--kill-child',
    '--mount-proc',
    '--ipc',
    '--uts',
    ...(o.newNet ? ['--net'] : []),
  ];
}

/** An executable on PATH (or in /usr/bin, /bin), or undefined. */
export function findTool(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '/usr/bin:/bin').split(':').concat(['/usr/bin', '/bin'])) {
    if (!dir) continue;
    const p = `${dir}/${name}`;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

function findUtilLinux(name: 'unshare' | 'setpriv'): string {
  const p = findTool(name);
  if (p === undefined) throw new SandboxError(`--sandbox namespace needs ${name}(1) from util-linux; install it, or choose --sandbox chroot or none`);
  return p;
}

/** The server's pid in our pid namespace: unshare --fork's one child. */
function serverPid(unsharePid: number): number | undefined {
  try {
    const kids = readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    return kids.length ? Number(kids[0]) : undefined;
  } catch {
    return undefined;
  }
}

const SIGSYS_STATUS = 128 + 31;

/** Starts the server inside new namespaces and supervises it; resolves to the exit status to exit with. */
export async function superviseInNamespaces(o: SupervisorOptions): Promise<number> {
  const namespaces = o.namespaces ?? true;
  const unshare = namespaces ? findUtilLinux('unshare') : process.execPath;
  const euid = process.geteuid?.() ?? 0;
  const egid = process.getegid?.() ?? 0;
  const userns = namespaces && euid !== 0;
  const maps = userns && hasUsernsMaps(o.usernsMaps) ? o.usernsMaps : undefined;
  const inherit = [...new Set(o.inheritFds ?? [])];
  // The channel and the FUSE fd go at the first numbers no inherited fd takes.
  const taken = new Set([0, 1, 2, ...inherit]);
  const nextFree = (): number => {
    let n = 3;
    while (taken.has(n)) n++;
    taken.add(n);
    return n;
  };
  const channelAt = nextFree();
  let fuseFd: number | undefined;
  let fuseAt: number | undefined;
  if (o.fuse) {
    fuseFd = DevFuseMount.mountChannel(o.fuse.mountpoint, o.fuse.maxWrite);
    fuseAt = nextFree();
    o.log.info({ mountpoint: o.fuse.mountpoint }, 'FUSE session mounted on the host (served from the sandbox)');
  }
  const stdio: StdioOptions = [];
  const top = Math.max(...taken);
  for (let i = 0; i <= top; i++) {
    if (i <= 2) stdio.push('inherit');
    else if (i === channelAt) stdio.push('pipe');
    else if (i === fuseAt) stdio.push(fuseFd!);
    else if (inherit.includes(i)) stdio.push(i);
    else stdio.push('ignore');
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...o.env,
    [STAGE_ENV]: namespaces ? 'namespace' : 'child',
    [CHANNEL_ENV]: String(channelAt),
    ...(fuseAt !== undefined ? { [FUSE_FD_ENV]: String(fuseAt) } : {}),
    ...(userns ? { [USERNS_ENV]: '1' } : {}),
  };
  const server = [process.execPath, ...withServerV8Flags(process.execArgv), ...o.argv];
  let args: string[];
  if (maps) {
    const l = usernsLaunch({
      maps,
      euid,
      egid,
      newNet: o.newNet,
      channelFd: channelAt,
      setpriv: findUtilLinux('setpriv'),
      command: server,
      log: o.log,
    });
    args = [...l.unshare, '--', ...l.command];
  } else {
    args = namespaces ? [...unshareArgs({ newNet: o.newNet, userns }), '--', ...server] : server.slice(1);
  }
  if (namespaces && !o.newNet)
    o.log.info('sandbox: the server keeps the host network namespace (9P listens on TCP; a new namespace would have no interfaces)');
  const watch = SeccompWatch.open(); // every seccomp record from now on, to name a killing call
  const child = spawn(unshare, args, { stdio, env });
  if (fuseFd !== undefined) close(fuseFd); // the server has its copy
  const sockets = new Set<string>();
  const channel = child.stdio[channelAt] as (Readable & { write?: (s: string) => boolean }) | null;
  let mapFailure: Error | undefined;
  let mapped = false;
  const mapNamespace = (): void => {
    if (!maps || mapped || child.pid === undefined) return;
    mapped = true;
    try {
      applyUsernsMaps(child.pid, { maps, euid, egid, findTool, log: o.log });
      channel?.write?.('go\n');
    } catch (e) {
      mapFailure = e as Error;
      o.log.error(mapFailure.message);
      child.kill('SIGKILL');
    }
  };
  if (channel) {
    createInterface({ input: channel }).on('line', (line) => {
      try {
        const ev = JSON.parse(line) as { sockets?: string[]; userns?: string; ready?: string };
        if (ev.userns === USERNS_WAITING) return mapNamespace();
        if (typeof ev.ready === 'string') return o.notifier?.ready(ev.ready);
        for (const s of ev.sockets ?? []) sockets.add(s);
        if (findServer() !== undefined && pending) forward(pending);
      } catch {
        o.log.warn({ line: line.slice(0, 200) }, 'sandbox supervisor: unreadable line from the server');
      }
    });
  }
  let serverAt: number | undefined; // its pid here, known once it reports
  const findServer = (): number | undefined => (serverAt ??= child.pid === undefined ? undefined : namespaces ? serverPid(child.pid) : child.pid);
  let pending: NodeJS.Signals | undefined;
  const forward = (sig: NodeJS.Signals): void => {
    const pid = findServer();
    if (pid === undefined) {
      pending = sig; // not forked yet: forwarded when it reports
      return;
    }
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  const handlers = (['SIGTERM', 'SIGINT', 'SIGHUP'] as const).map((sig) => {
    const h = (): void => {
      if (sig !== 'SIGHUP') o.notifier?.stopping();
      forward(sig);
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', (e) => reject(new SandboxError(`--sandbox namespace: cannot start ${unshare}: ${e.message}`)));
    child.once('exit', (c, s) => resolve([c, s]));
  });
  for (const [sig, h] of handlers) process.off(sig, h);
  for (const s of sockets) {
    try {
      unlinkSync(s);
    } catch {
      // already gone
    }
  }
  if (o.fuse) {
    try {
      umount2(o.fuse.mountpoint, MNT_DETACH);
    } catch (e) {
      o.log.warn({ mountpoint: o.fuse.mountpoint, err: (e as Error).message }, 'unmount failed');
    }
  }
  // unshare --fork exits with the server's status, or dies of its signal.
  const sig = signal ?? (code !== null && code > 128 ? signalName(code - 128) : null);
  if (sig === 'SIGSYS' || code === SIGSYS_STATUS) {
    const line =
      serverAt !== undefined
        ? await describeSeccompDeath(serverAt, { watch })
        : 'the server died of SIGSYS before it reported: a forbidden system call under seccomp (look for "type=1326" in dmesg or the audit log)';
    watch?.close();
    o.log.error({ signal: 'SIGSYS' }, line);
    return SIGSYS_STATUS;
  }
  watch?.close();
  if (mapFailure) return 1; // said above, as virtiofsd's helper says it; virtiofsd exits 1 too
  if (sig !== null && sig !== 'SIGTERM' && sig !== 'SIGINT') o.log.error({ signal: sig }, `the server died of ${sig}`);
  return code ?? 128 + (signalNumber(signal) ?? 1);
}

function signalName(n: number): NodeJS.Signals | null {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name as NodeJS.Signals;
  return null;
}

function signalNumber(s: NodeJS.Signals | null): number | undefined {
  return s === null ? undefined : (osConstants.signals as Record<string, number>)[s];
}

/**
 * In the server: ends this process when the supervisor goes away (killed:
 * nothing would forward signals or clean up any more, and a server left
 * alone would keep its sockets busy for the next one).
 */
export function exitWithSupervisor(log: Logger): void {
  const fd = Number(process.env[CHANNEL_ENV]);
  if (!Number.isInteger(fd) || fd < 3) return;
  const s = new Socket({ fd, readable: true, writable: false });
  s.on('data', () => undefined);
  s.on('error', () => undefined);
  s.once('close', () => {
    log.error('the sandbox supervisor is gone: exiting');
    exitNow(1);
  });
}

/** In the server: tells the supervisor which socket files are its to remove, and when it is ready (serving, confined). */
export function reportToSupervisor(ev: { sockets: readonly string[] } | { ready: string }): void {
  const fd = Number(process.env[CHANNEL_ENV]);
  if (!Number.isInteger(fd) || fd < 3) return;
  try {
    writeSync(fd, JSON.stringify(ev) + '\n');
  } catch {
    // no supervisor listening: nothing to tell
  }
}
