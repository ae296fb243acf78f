// Syscalls only the tests need.
import koffi from 'koffi';

const dup = koffi.load('libc.so.6').func('int dup(int fd)');

/** A duplicate of `fd` (GuestMemory.add closes the fd it is given). */
export function dupFd(fd: number): number {
  const r = dup(fd) as number;
  if (r < 0) throw new Error(`dup(${fd}) failed: errno ${koffi.errno()}`);
  return r;
}
