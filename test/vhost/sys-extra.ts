// Syscalls only the tests need (through src/sys, where every koffi binding lives).
import { dup } from '../../src/sys/index.js';

/** A duplicate of `fd` (GuestMemory.add closes the fd it is given). */
export function dupFd(fd: number): number {
  return dup(fd);
}
