// Socket activation (sd_listen_fds(3)): systemd, or systemd-socket-activate,
// binds the listening sockets and starts duofs with them at fds 3, 4, ...,
// saying how many in $LISTEN_FDS, for which process in $LISTEN_PID, and
// their FileDescriptorName= in $LISTEN_FDNAMES (colon-separated).
//
// Which fd serves which front-end (docs/operator-guide.md, "systemd"):
//  1. by name: FileDescriptorName=virtiofs, 9p-vhost, 9p (a 9P stream
//     listener, unix or TCP) or 9p-tcp (the same; for readability). A
//     name is the contract the unit states; duofs then needs no flag for
//     that socket. Several fds may share a name (several vhost-user
//     devices, one guest each).
//  2. unnamed (no LISTEN_FDNAMES, or systemd's defaults: the socket
//     unit's name "*.socket", or "unknown"): by address. The fd's bound
//     path (getsockname) must equal a --virtiofs-socket, --9p-vhost-socket
//     or --9p-socket path, or its address the --9p-tcp one; that flag is
//     then served on the fd instead of a socket duofs makes. This is what
//     an operator who wrote the same path in the .socket unit and in
//     ExecStart= expects.
// Anything else — an fd that is not a listening stream socket, a name no
// front-end has, an unnamed socket no flag names, a vhost-user front-end on
// a TCP socket — is a unit that does not match the command line: a usage
// error (exit 2) naming the fd, rather than a socket silently left unserved.
// A $LISTEN_PID that is not ours is ignored, as sd_listen_fds does: the fds
// were meant for another process (a parent that forgot to unset them).
// The variables are unset once read (sd_listen_fds(unset=1)) and the fds
// made close-on-exec; the sandbox supervisor hands them down explicitly.
import { setCloseOnExec } from '../sys/fd.js';
import { AF_INET, AF_INET6, AF_UNIX, socketInfo, type SocketInfo } from '../sys/sockets.js';
import { SOCK_STREAM } from '../sys/constants.js';
import { SysError } from '../sys/errno.js';
import { parseHostPort } from '../listeners.js';

/** The first inherited fd (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

export type FrontEnd = 'virtiofs' | '9p-vhost' | '9p';

/** FileDescriptorName= values and the front-end each selects. */
export const FD_NAMES: Readonly<Record<string, FrontEnd>> = { virtiofs: 'virtiofs', '9p-vhost': '9p-vhost', '9p': '9p', '9p-tcp': '9p' };

/** A command line (or a unit) that cannot work: the CLI prints the message and exits 2. */
export class ActivationError extends Error {
  override name = 'ActivationError';
}

export interface InheritedFd {
  fd: number;
  /** FileDescriptorName=, when the manager gave one */
  name?: string;
}

export interface ListenFds {
  fds: InheritedFd[];
  /** why the variables were ignored (LISTEN_PID names another process), for one log line */
  ignored?: string;
}

/** sd_listen_fds_with_names(unset=1): reads and removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): ListenFds {
  const pidVar = env['LISTEN_PID'];
  const countVar = env['LISTEN_FDS'];
  const namesVar = env['LISTEN_FDNAMES'];
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDS'];
  delete env['LISTEN_FDNAMES'];
  if (pidVar === undefined || countVar === undefined) return { fds: [] };
  if (!/^\d+$/.test(pidVar)) throw new ActivationError(`LISTEN_PID=${pidVar}: expected a process id`);
  if (Number(pidVar) !== pid)
    return { fds: [], ignored: `LISTEN_PID=${pidVar} is not this process (${pid}): the inherited fds are not ours; ignored` };
  if (!/^\d+$/.test(countVar)) throw new ActivationError(`LISTEN_FDS=${countVar}: expected a number of fds`);
  const n = Number(countVar);
  const names = namesVar === undefined ? [] : namesVar.split(':');
  if (namesVar !== undefined && names.length !== n)
    throw new ActivationError(`LISTEN_FDNAMES=${namesVar} names ${names.length} fds, LISTEN_FDS=${n} passes ${n}`);
  const fds: InheritedFd[] = [];
  for (let i = 0; i < n; i++) {
    const fd = LISTEN_FDS_START + i;
    try {
      setCloseOnExec(fd, true);
    } catch (e) {
      throw new ActivationError(`LISTEN_FDS=${n}: fd ${fd} ${e instanceof SysError ? `cannot be used (${e.code})` : String(e)}`);
    }
    const name = names[i];
    fds.push(name === undefined ? { fd } : { fd, name });
  }
  return { fds };
}

/** An inherited listening socket, assigned to one front-end. */
export interface ActivatedSocket {
  fd: number;
  frontEnd: FrontEnd;
  /** how logs and STATUS= name it: unix:PATH or tcp:HOST:PORT, and the fd */
  where: string;
  /** the flag value it stands in for (a --virtiofs-socket path, the --9p-tcp address), if any */
  replaces?: string;
}

/** The listener flags of the command line (a socket-activated one is not made again). */
export interface ListenerFlags {
  virtiofsSocket: string[];
  ninepVhostSocket: string[];
  ninepSocket?: string;
  ninepTcp?: string;
}

const systemdDefaultName = (name: string | undefined): boolean => name === undefined || name === '' || name === 'unknown' || name.endsWith('.socket');

function describe(fd: number, info: SocketInfo): string {
  if (info.domain === AF_UNIX) return `unix:${info.path || '(unnamed)'} (fd ${fd})`;
  if (info.domain === AF_INET || info.domain === AF_INET6) return `tcp:${info.host}:${info.port} (fd ${fd})`;
  return `fd ${fd} (family ${info.domain})`;
}

/** IPv4 as is; IPv6 in full, eight groups without leading zeros, as socketInfo() gives it. */
function canonicalHost(host: string): string {
  if (!host.includes(':')) return host;
  const [head, tail] = host.includes('::') ? host.split('::') : [host, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => parseInt(g, 16).toString(16)).join(':');
}

function tcpMatches(spec: string | undefined, info: SocketInfo): boolean {
  if (spec === undefined || info.port === undefined || info.host === undefined) return false;
  let want;
  try {
    want = parseHostPort(spec);
  } catch {
    return false;
  }
  return want.port === info.port && canonicalHost(want.host) === info.host;
}

/** Assigns each inherited fd to a front-end (see the head of this file); throws ActivationError. */
export function assignListenFds(fds: readonly InheritedFd[], flags: ListenerFlags): ActivatedSocket[] {
  const out: ActivatedSocket[] = [];
  const taken = new Set<string>();
  for (const { fd, name } of fds) {
    const label = name && !systemdDefaultName(name) ? `fd ${fd} (FileDescriptorName=${name})` : `fd ${fd}`;
    let info: SocketInfo;
    try {
      info = socketInfo(fd);
    } catch (e) {
      const why = e instanceof SysError ? (e.code === 'ENOTSOCK' ? 'is not a socket (ENOTSOCK)' : `cannot be read: ${e.message}`) : String(e);
      throw new ActivationError(`socket activation: ${label} ${why}; duofs takes listening stream sockets (ListenStream=)`);
    }
    const where = describe(fd, info);
    if (info.type !== SOCK_STREAM || !info.listening)
      throw new ActivationError(
        `socket activation: ${label}, ${where}, is not a listening stream socket; give duofs ListenStream= sockets with Accept=no`,
      );
    const unix = info.domain === AF_UNIX;
    const tcp = info.domain === AF_INET || info.domain === AF_INET6;
    let frontEnd: FrontEnd | undefined;
    if (name !== undefined && !systemdDefaultName(name)) {
      frontEnd = FD_NAMES[name];
      if (frontEnd === undefined)
        throw new ActivationError(
          `socket activation: ${label}, ${where}: no front-end has that name; name it ${Object.keys(FD_NAMES).join(', ')} (FileDescriptorName=)`,
        );
      if (frontEnd !== '9p' && !unix) throw new ActivationError(`socket activation: ${label}, ${where}: vhost-user needs a unix socket`);
      if (frontEnd === '9p' && !unix && !tcp) throw new ActivationError(`socket activation: ${label}, ${where}: 9P needs a unix or TCP socket`);
    } else if (unix && info.path && flags.virtiofsSocket.includes(info.path)) frontEnd = 'virtiofs';
    else if (unix && info.path && flags.ninepVhostSocket.includes(info.path)) frontEnd = '9p-vhost';
    else if (unix && info.path && flags.ninepSocket === info.path) frontEnd = '9p';
    else if (tcp && tcpMatches(flags.ninepTcp, info)) frontEnd = '9p';
    else
      throw new ActivationError(
        `socket activation: ${label}, ${where}, matches no front-end: name it with FileDescriptorName=${Object.keys(FD_NAMES).join('|')}, or give its ${tcp ? 'address to --9p-tcp' : 'path to --virtiofs-socket, --9p-vhost-socket or --9p-socket'}`,
      );
    // The flag this fd stands in for, so that its socket is not made again.
    let replaces: string | undefined;
    if (unix && info.path) {
      const candidates = frontEnd === 'virtiofs' ? flags.virtiofsSocket : frontEnd === '9p-vhost' ? flags.ninepVhostSocket : [flags.ninepSocket];
      if (candidates.includes(info.path)) replaces = info.path;
      else if ([...flags.virtiofsSocket, ...flags.ninepVhostSocket, flags.ninepSocket].includes(info.path))
        throw new ActivationError(
          `socket activation: ${label}, ${where}, is named for ${frontEnd} but the command line gives that path to another front-end`,
        );
    } else if (tcp && frontEnd === '9p' && tcpMatches(flags.ninepTcp, info)) replaces = flags.ninepTcp;
    if (replaces !== undefined) {
      if (taken.has(replaces))
        throw new ActivationError(`socket activation: ${label}, ${where}: another inherited fd stands for ${replaces} already`);
      taken.add(replaces);
    }
    out.push({ fd, frontEnd, where, ...(replaces !== undefined ? { replaces } : {}) });
  }
  return out;
}

/** The listener flags left for duofs to make itself once the activated sockets are taken out. */
export function remainingFlags(flags: ListenerFlags, activated: readonly ActivatedSocket[]): ListenerFlags {
  const replaced = new Set(activated.map((a) => a.replaces).filter((r): r is string => r !== undefined));
  const out: ListenerFlags = {
    virtiofsSocket: flags.virtiofsSocket.filter((p) => !replaced.has(p)),
    ninepVhostSocket: flags.ninepVhostSocket.filter((p) => !replaced.has(p)),
  };
  if (flags.ninepSocket !== undefined && !replaced.has(flags.ninepSocket)) out.ninepSocket = flags.ninepSocket;
  if (flags.ninepTcp !== undefined && !replaced.has(flags.ninepTcp)) out.ninepTcp = flags.ninepTcp;
  return out;
}

/** The assignment as the supervisor hands it to the server it starts (an environment variable). */
export function encodeActivated(a: readonly ActivatedSocket[]): string {
  return JSON.stringify(a);
}

export function decodeActivated(s: string | undefined): ActivatedSocket[] {
  if (!s) return [];
  const v = JSON.parse(s) as ActivatedSocket[];
  if (!Array.isArray(v) || v.some((x) => !Number.isInteger(x.fd) || !Object.values(FD_NAMES).includes(x.frontEnd)))
    throw new ActivationError('the sandbox supervisor handed down an unreadable socket list');
  return v;
}
