// Unix stream sockets with fd passing (SCM_RIGHTS), through koffi: Node's
// net cannot carry fds, and vhost-user passes guest memory, kick and call
// eventfds that way. All sockets here are non-blocking and driven by
// koffi.node.poll on the main thread. Errors become SysError; EAGAIN is
// reported as a value, not thrown.
import koffi from 'koffi';
import { c as libc, errno } from './libc.js';
import { SysError } from './errno.js';
import { SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_NOSIGNAL } from './constants.js';
import { setNonBlocking } from './fd.js';

const lib = koffi.load('libc.so.6');

const c = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  bind: lib.func('int bind(int fd, const void *addr, uint32_t len)'),
  listen: lib.func('int listen(int fd, int backlog)'),
  accept4: lib.func('int accept4(int fd, void *addr, void *len, int flags)'),
  connect: lib.func('int connect(int fd, const void *addr, uint32_t len)'),
  recvmsg: lib.func('int64_t recvmsg(int fd, void *msg, int flags)'),
  sendmsg: lib.func('int64_t sendmsg(int fd, const void *msg, int flags)'),
  getsockopt: lib.func('int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)'),
  getsockname: lib.func('int getsockname(int fd, _Out_ void *addr, _Inout_ uint32_t *len)'),
  close: libc.close,
};

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SCM_RIGHTS = 1;
const SO_PEERCRED = 17;
const SO_ACCEPTCONN = 30;
const SO_DOMAIN = 39;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;
const EAGAIN = 11;
const EINTR = 4;

function check(r: number | bigint, op: string, obj?: string): number {
  const n = Number(r);
  if (n < 0) throw new SysError(errno(), op, obj);
  return n;
}

function sockaddrUn(path: string): Buffer {
  const p = Buffer.from(path);
  if (p.length > 107) throw new SysError(36 /* ENAMETOOLONG */, 'socket path', path);
  const a = Buffer.alloc(2 + p.length + 1);
  a.writeUInt16LE(AF_UNIX, 0);
  p.copy(a, 2);
  return a;
}

/** A non-blocking unix stream socket listening at `path` (the caller handles stale files and modes). */
export function listenUnixSocket(path: string, backlog = 4): number {
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), 'socket');
  try {
    const a = sockaddrUn(path);
    check(c.bind(fd, a, a.length), 'bind', path);
    check(c.listen(fd, backlog), 'listen', path);
    return fd;
  } catch (e) {
    c.close(fd);
    throw e;
  }
}

/** A non-blocking unix stream socket connected to `path`. */
export function connectUnixSocket(path: string): number {
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), 'socket');
  try {
    const a = sockaddrUn(path);
    check(c.connect(fd, a, a.length), 'connect', path);
    setNonBlocking(fd);
    return fd;
  } catch (e) {
    c.close(fd);
    throw e;
  }
}

/** Accepts one connection (non-blocking, close-on-exec), or -1 when none is pending. */
export function acceptConnection(listenFd: number): number {
  const fd = Number(c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (fd >= 0) return fd;
  const e = errno();
  if (e === EAGAIN || e === EINTR) return -1;
  throw new SysError(e, 'accept4');
}

function sockoptInt(fd: number, name: number): number {
  const v = Buffer.alloc(4);
  const len = [4];
  check(c.getsockopt(fd, SOL_SOCKET, name, v, len), 'getsockopt', `fd ${fd}`);
  return v.readInt32LE(0);
}

/** True when `fd` is a listening AF_UNIX stream socket (for an inherited --fd). */
export function isListeningUnixSocket(fd: number): boolean {
  try {
    return sockoptInt(fd, SO_DOMAIN) === AF_UNIX && sockoptInt(fd, SO_ACCEPTCONN) === 1;
  } catch {
    return false;
  }
}

/** What an inherited fd is, as sd_is_socket*() would tell: family, type, listening, and its address. */
export interface SocketInfo {
  domain: number;
  /** SOCK_STREAM, SOCK_DGRAM, ... */
  type: number;
  listening: boolean;
  /** AF_UNIX: the bound path; an abstract name starts with '@'; '' when unbound */
  path?: string;
  /** AF_INET/AF_INET6: the bound address (IPv6 in full, eight groups) and port */
  host?: string;
  port?: number;
}

/** Describes a socket fd; throws SysError (ENOTSOCK for a file or pipe, EBADF for no fd). */
export function socketInfo(fd: number): SocketInfo {
  const domain = sockoptInt(fd, SO_DOMAIN);
  const info: SocketInfo = { domain, type: sockoptInt(fd, SO_TYPE), listening: sockoptInt(fd, SO_ACCEPTCONN) === 1 };
  const a = Buffer.alloc(128);
  const len = [a.length];
  check(c.getsockname(fd, a, len), 'getsockname', `fd ${fd}`);
  const n = Math.min(len[0]!, a.length);
  if (domain === AF_UNIX) {
    const raw = a.subarray(2, n);
    if (raw.length && raw[0] === 0) info.path = `@${raw.subarray(1).toString()}`;
    else {
      const end = raw.indexOf(0);
      info.path = (end < 0 ? raw : raw.subarray(0, end)).toString();
    }
  } else if (domain === AF_INET) {
    info.port = a.readUInt16BE(2);
    info.host = [...a.subarray(4, 8)].join('.');
  } else if (domain === AF_INET6) {
    info.port = a.readUInt16BE(2);
    const g: string[] = [];
    for (let i = 0; i < 8; i++) g.push(a.readUInt16BE(8 + 2 * i).toString(16));
    info.host = g.join(':');
  }
  return info;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export function peerCredentials(fd: number): PeerCred | undefined {
  const v = Buffer.alloc(12);
  const len = [12];
  if (Number(c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, v, len)) < 0) return undefined;
  return { pid: v.readInt32LE(0), uid: v.readUInt32LE(4), gid: v.readUInt32LE(8) };
}

// ---- messages with fds

/** Most fds one message may carry (the vhost-user limit is 8). */
export const MAX_FDS = 16;
const CMSG_HDR = 16; // cmsg_len (size_t), cmsg_level, cmsg_type
const CONTROL_LEN = CMSG_HDR + 4 * MAX_FDS;

/**
 * Reusable msghdr/iovec/control storage for recvmsg/sendmsg. Pointers inside
 * the msghdr are the addresses of Buffers this object keeps referenced.
 */
export class MsgIo {
  private readonly msghdr = Buffer.alloc(56);
  private readonly iov = Buffer.alloc(16);
  private readonly control = Buffer.alloc(CONTROL_LEN);
  private readonly controlAddr = koffi.address(this.control);

  constructor() {
    this.msghdr.writeBigUInt64LE(koffi.address(this.iov), 16); // msg_iov
    this.msghdr.writeBigUInt64LE(1n, 24); // msg_iovlen
  }

  /**
   * Receives into buf[off, off+len); fds that arrived are appended to `fds`.
   * Returns bytes read, 0 at end of stream, -1 when nothing is ready.
   * Throws on errors, and when fds were truncated (more than MAX_FDS).
   */
  recv(fd: number, buf: Buffer, off: number, len: number, fds: number[]): number {
    this.iov.writeBigUInt64LE(koffi.address(buf) + BigInt(off), 0);
    this.iov.writeBigUInt64LE(BigInt(len), 8);
    this.msghdr.writeBigUInt64LE(this.controlAddr, 32);
    this.msghdr.writeBigUInt64LE(BigInt(CONTROL_LEN), 40);
    this.msghdr.writeInt32LE(0, 48);
    const n = Number(c.recvmsg(fd, this.msghdr, MSG_CMSG_CLOEXEC));
    if (n < 0) {
      const e = errno();
      if (e === EAGAIN || e === EINTR) return -1;
      throw new SysError(e, 'recvmsg');
    }
    const controlLen = Number(this.msghdr.readBigUInt64LE(40));
    this.collectFds(controlLen, fds);
    if (this.msghdr.readInt32LE(48) & MSG_CTRUNC) throw new SysError(7 /* E2BIG */, 'recvmsg', 'too many fds in one message');
    return n;
  }

  private collectFds(controlLen: number, fds: number[]): void {
    let at = 0;
    while (at + CMSG_HDR <= controlLen) {
      const clen = Number(this.control.readBigUInt64LE(at));
      if (clen < CMSG_HDR || at + clen > controlLen) break;
      if (this.control.readInt32LE(at + 8) === SOL_SOCKET && this.control.readInt32LE(at + 12) === SCM_RIGHTS) {
        for (let p = at + CMSG_HDR; p + 4 <= at + clen; p += 4) fds.push(this.control.readInt32LE(p));
      }
      at += (clen + 7) & ~7;
    }
  }

  /** Sends buf (with `fds` attached); returns bytes sent, -1 when the socket buffer is full. */
  send(fd: number, buf: Buffer, fds: readonly number[] = []): number {
    if (fds.length > MAX_FDS) throw new SysError(7, 'sendmsg', 'too many fds');
    this.iov.writeBigUInt64LE(koffi.address(buf), 0);
    this.iov.writeBigUInt64LE(BigInt(buf.length), 8);
    if (fds.length) {
      const clen = CMSG_HDR + 4 * fds.length;
      this.control.writeBigUInt64LE(BigInt(clen), 0);
      this.control.writeInt32LE(SOL_SOCKET, 8);
      this.control.writeInt32LE(SCM_RIGHTS, 12);
      fds.forEach((f, i) => this.control.writeInt32LE(f, CMSG_HDR + 4 * i));
      this.msghdr.writeBigUInt64LE(this.controlAddr, 32);
      this.msghdr.writeBigUInt64LE(BigInt((clen + 7) & ~7), 40);
    } else {
      this.msghdr.writeBigUInt64LE(0n, 32);
      this.msghdr.writeBigUInt64LE(0n, 40);
    }
    const n = Number(c.sendmsg(fd, this.msghdr, MSG_NOSIGNAL));
    if (n < 0) {
      const e = errno();
      if (e === EAGAIN || e === EINTR) return -1;
      throw new SysError(e, 'sendmsg');
    }
    return n;
  }
}
