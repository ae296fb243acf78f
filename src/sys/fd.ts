// Plain fd housekeeping the transports need: close without a throw, and the
// O_NONBLOCK and FD_CLOEXEC flags (sockets and eventfds are driven by koffi.node.poll).
import { c, errno } from './libc.js';
import { SysError } from './errno.js';

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** Closes `fd` when it is one (>= 0); errors are ignored (the fd is gone either way). */
export function closeFd(fd: number): void {
  if (fd >= 0) c.close(fd);
}

export function setNonBlocking(fd: number): void {
  const fl = Number(c.fcntlInt(fd, F_GETFL, 0));
  if (fl < 0) throw new SysError(errno(), 'fcntl', `fd ${fd}`);
  if (Number(c.fcntlInt(fd, F_SETFL, fl | O_NONBLOCK)) < 0) throw new SysError(errno(), 'fcntl', `fd ${fd}`);
}

/** Sets or clears FD_CLOEXEC (an inherited fd a child must or must not keep across exec). */
export function setCloseOnExec(fd: number, on: boolean): void {
  const fl = Number(c.fcntlInt(fd, F_GETFD, 0));
  if (fl < 0) throw new SysError(errno(), 'fcntl(F_GETFD)', `fd ${fd}`);
  if (Number(c.fcntlInt(fd, F_SETFD, on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC)) < 0) throw new SysError(errno(), 'fcntl(F_SETFD)', `fd ${fd}`);
}
