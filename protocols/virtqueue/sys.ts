// The few libc calls guest memory needs (mmap of the fds vhost-user passes),
// declared here so the virtqueue layer stands alone. Pointers are bigints
// (koffi 3); errors become SysError.
import koffi from 'koffi';
import { SysError } from '../../src/sys/errno.js';

const lib = koffi.load('libc.so.6');

const c = {
  mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: lib.func('int munmap(void *addr, size_t length)'),
  fstat: lib.func('int fstat(int fd, _Out_ void *statbuf)'),
  fcntl: lib.func('fcntl', 'int', ['int', 'int', 'long']),
  close: lib.func('int close(int fd)'),
};

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_NORESERVE = 0x4000;
const MAP_FAILED = 0xffffffffffffffffn;
const F_GET_SEALS = 1034;
export const F_SEAL_SHRINK = 0x0002;

/** Maps `length` bytes of `fd` from file offset `offset`, shared, read-write. */
export function mmapShared(fd: number, length: number, offset: number): bigint {
  const p = c.mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, offset) as bigint | null;
  if (p === null || BigInt(p) === MAP_FAILED) throw new SysError(koffi.errno(), 'mmap', `fd ${fd}`);
  return BigInt(p);
}

export function munmap(addr: bigint, length: number): void {
  if (c.munmap(addr, length) !== 0) throw new SysError(koffi.errno(), 'munmap');
}

export interface FdInfo {
  /** S_IFMT bits of st_mode */
  type: number;
  size: number;
}

const statBuf = Buffer.alloc(144); // struct stat, x86_64
export function fstatFd(fd: number): FdInfo {
  if (c.fstat(fd, statBuf) !== 0) throw new SysError(koffi.errno(), 'fstat', `fd ${fd}`);
  return { type: statBuf.readUInt32LE(24) & 0o170000, size: Number(statBuf.readBigInt64LE(48)) };
}

/** The memfd seals of `fd` (0 when the fd cannot carry seals). */
export function fileSeals(fd: number): number {
  const r = c.fcntl(fd, F_GET_SEALS, 0) as number;
  return r < 0 ? 0 : r;
}

export function closeFd(fd: number): void {
  if (fd >= 0) c.close(fd);
}

/** An ArrayBuffer over `length` bytes of native memory at `addr` (no copy). */
export function viewOf(addr: bigint, length: number): ArrayBuffer {
  return koffi.view(addr, length);
}
