// The service manager's notification socket (sd_notify(3)): an AF_UNIX
// datagram socket named by $NOTIFY_SOCKET, a path or an abstract name
// ('@name'). One datagram per notification, newline-separated VAR=value
// lines. Node has no unix datagram sockets, so the calls go through koffi.
import koffi from 'koffi';
import { SysError } from './errno.js';
import { SOCK_DGRAM, SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL } from './constants.js';

const lib = koffi.load('libc.so.6');
const c = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  connect: lib.func('int connect(int fd, const void *addr, uint32_t len)'),
  sendto: lib.func('int64_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  close: lib.func('int close(int fd)'),
};

const AF_UNIX = 1;

/** The sockaddr_un of a $NOTIFY_SOCKET value: '@name' is abstract (a leading NUL, no terminator). */
export function notifyAddress(spec: string): Buffer {
  const abstract = spec.startsWith('@');
  const name = abstract ? Buffer.concat([Buffer.from([0]), Buffer.from(spec.slice(1))]) : Buffer.from(spec);
  if (name.length === 0 || (!abstract && !spec.startsWith('/')))
    throw new SysError(22 /* EINVAL */, 'notify socket', `${JSON.stringify(spec)} (not an absolute path or @name)`);
  if (name.length > 107) throw new SysError(36 /* ENAMETOOLONG */, 'notify socket', spec);
  const a = Buffer.alloc(2 + name.length + (abstract ? 0 : 1));
  a.writeUInt16LE(AF_UNIX, 0);
  name.copy(a, 2);
  return a;
}

/**
 * A datagram socket for notifications. Unconnected (the default), each
 * send names the address, as sd_notify does; connected, the address is
 * resolved once, now — for a process that will change its root before it
 * notifies (the path would mean nothing after that).
 */
export class NotifySocket {
  private constructor(
    private readonly fd: number,
    private readonly addr: Buffer | null,
    readonly spec: string,
  ) {}

  static open(spec: string, o: { connect?: boolean } = {}): NotifySocket {
    const addr = notifyAddress(spec);
    const fd = Number(c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd < 0) throw new SysError(koffi.errno(), 'socket(AF_UNIX, SOCK_DGRAM)', spec);
    if (o.connect && Number(c.connect(fd, addr, addr.length)) < 0) {
      const e = koffi.errno();
      c.close(fd);
      throw new SysError(e, 'connect', `notify socket ${spec}`);
    }
    return new NotifySocket(fd, o.connect ? null : addr, spec);
  }

  /** Sends one datagram; throws SysError naming the socket (EAGAIN when its queue is full). */
  send(text: string): void {
    const msg = Buffer.from(text);
    const r = this.addr
      ? c.sendto(this.fd, msg, msg.length, MSG_NOSIGNAL, this.addr, this.addr.length)
      : c.sendto(this.fd, msg, msg.length, MSG_NOSIGNAL, null, 0);
    if (Number(r) < 0) throw new SysError(koffi.errno(), 'sendto', `notify socket ${this.spec}`);
  }

  close(): void {
    c.close(this.fd);
  }
}
