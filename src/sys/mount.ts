// mount(2)/umount2(2) and raw read/write, for attaching a FUSE session to
// the host kernel through /dev/fuse.
import { c, errno } from './libc.js';
import { SysError } from './errno.js';

export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MNT_DETACH = 2;

export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  if (c.mount(source, target, fstype, flags, data) < 0) throw new SysError(errno(), 'mount', target);
}

export function umount2(target: string, flags: number): void {
  if (c.umount2(target, flags) < 0) throw new SysError(errno(), 'umount2', target);
}

/** read(2); returns -errno instead of throwing (EAGAIN is routine on non-blocking fds). */
export function readRaw(fd: number, buf: Buffer): number {
  const n = Number(c.read(fd, buf, buf.length));
  return n < 0 ? -errno() : n;
}

/** write(2); returns -errno instead of throwing. */
export function writeRaw(fd: number, buf: Buffer): number {
  const n = Number(c.write(fd, buf, buf.length));
  return n < 0 ? -errno() : n;
}
