// The local syslog socket (/dev/log: an AF_UNIX datagram socket that
// journald or rsyslog serves), and getgrnam(3) for --socket-group. Node has
// neither unix datagram sockets nor the NSS group database.
import koffi from 'koffi';
import { SysError } from './errno.js';
import { SOCK_DGRAM, SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL } from './constants.js';

const lib = koffi.load('libc.so.6');
const GroupStruct = koffi.struct({ gr_name: 'char *', gr_passwd: 'char *', gr_gid: 'uint32_t', gr_mem: 'void *' });
const c = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  connect: lib.func('int connect(int fd, const void *addr, uint32_t len)'),
  send: lib.func('int64_t send(int fd, const void *buf, size_t len, int flags)'),
  close: lib.func('int close(int fd)'),
  getgrnam: lib.func('void *getgrnam(const char *name)'),
};

const AF_UNIX = 1;

/** A non-blocking datagram socket connected to `path` (e.g. /dev/log). */
export function connectUnixDgram(path: string): number {
  const p = Buffer.from(path);
  if (p.length > 107) throw new SysError(36 /* ENAMETOOLONG */, 'connect', path);
  const addr = Buffer.alloc(2 + p.length + 1);
  addr.writeUInt16LE(AF_UNIX, 0);
  p.copy(addr, 2);
  const fd = Number(c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd < 0) throw new SysError(koffi.errno(), 'socket', path);
  if (Number(c.connect(fd, addr, addr.length)) < 0) {
    const e = koffi.errno();
    c.close(fd);
    throw new SysError(e, 'connect', path);
  }
  return fd;
}

/** Sends one datagram; returns the errno on failure (0 on success): a logger must not throw. */
export function sendDgram(fd: number, msg: Buffer): number {
  return Number(c.send(fd, msg, msg.length, MSG_NOSIGNAL)) < 0 ? koffi.errno() : 0;
}

export function closeDgram(fd: number): void {
  c.close(fd);
}

/** The gid of a group name through NSS (getgrnam), or undefined when there is no such group. */
export function groupId(name: string): number | undefined {
  const p = c.getgrnam(name) as unknown;
  if (!p) return undefined;
  return (koffi.decode(p, GroupStruct) as { gr_gid: number }).gr_gid;
}
