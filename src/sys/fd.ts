// Plain fd housekeeping the transports need: close without a throw, and the
// O_NONBLOCK flag (sockets and eventfds are driven by koffi.node.poll).
import { c, errno } from './libc.js';
import { SysError } from './errno.js';

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
