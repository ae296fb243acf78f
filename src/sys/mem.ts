// Shared memory: mmap of the fds vhost-user passes (guest RAM regions),
// views over mapped memory, and memfds (the guest RAM of the vhost-user
// frontend double, as QEMU's memory-backend-memfd). Pointers are bigints
// (koffi 3); errors become SysError.
import koffi from 'koffi';
import { c as libc, errno } from './libc.js';
import { SysError } from './errno.js';

const lib = koffi.load('libc.so.6');

const c = {
  mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: lib.func('int munmap(void *addr, size_t length)'),
  fstat: lib.func('int fstat(int fd, _Out_ void *statbuf)'),
  memfd_create: lib.func('int memfd_create(const char *name, unsigned int flags)'),
};

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_NORESERVE = 0x4000;
const MAP_FAILED = 0xffffffffffffffffn;
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
export const F_SEAL_SHRINK = 0x0002;
const F_SEAL_GROW = 0x0004;

/** Maps `length` bytes of `fd` from file offset `offset`, shared, read-write. */
export function mmapShared(fd: number, length: number, offset: number): bigint {
  const p = c.mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, offset) as bigint | null;
  if (p === null || BigInt(p) === MAP_FAILED) throw new SysError(errno(), 'mmap', `fd ${fd}`);
  return BigInt(p);
}

export function munmap(addr: bigint, length: number): void {
  if (c.munmap(addr, length) !== 0) throw new SysError(errno(), 'munmap');
}

/** An ArrayBuffer over `length` bytes of native memory at `addr` (no copy). */
export function viewOf(addr: bigint, length: number): ArrayBuffer {
  return koffi.view(addr, length);
}

export interface FdInfo {
  /** S_IFMT bits of st_mode */
  type: number;
  size: number;
}

const statBuf = Buffer.alloc(144); // struct stat, x86_64
/** The file type and size of an fd a peer passed (struct stat, not statx: any fd, no path). */
export function fstatFd(fd: number): FdInfo {
  if (c.fstat(fd, statBuf) !== 0) throw new SysError(errno(), 'fstat', `fd ${fd}`);
  return { type: statBuf.readUInt32LE(24) & 0o170000, size: Number(statBuf.readBigInt64LE(48)) };
}

/** The memfd seals of `fd` (0 when the fd cannot carry seals). */
export function fileSeals(fd: number): number {
  const r = Number(libc.fcntlInt(fd, F_GET_SEALS, 0));
  return r < 0 ? 0 : r;
}

const check = (r: number | bigint, op: string, obj?: string): void => {
  if (Number(r) < 0) throw new SysError(errno(), op, obj);
};

/** A memfd of `size` bytes sealed against resizing, like QEMU's memory-backend-memfd. */
export function createMemfd(name: string, size: number, seal = true): number {
  const fd = Number(c.memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd < 0) throw new SysError(errno(), 'memfd_create');
  try {
    check(libc.ftruncate(fd, size), 'ftruncate');
    if (seal) check(libc.fcntlInt(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 'fcntl', 'F_ADD_SEALS');
    return fd;
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}
