// The data-path syscalls in the raw convention the I/O engines use: the
// result (>= 0) or -errno, never a throw. Each comes inline and as a call
// on libuv's pool (koffi's async calls; koffi hands the worker's errno back).
// Pointers passed to an async call must stay referenced until it completes:
// the engines keep them.
import { c, errno } from './libc.js';

type Offset = number | bigint;

/** preadv2(2) flag: fail with EAGAIN instead of waiting for the disk. */
export const RWF_NOWAIT = 0x8;

const raw = (r: number | bigint): number => {
  const n = Number(r);
  return n < 0 ? -errno() : n;
};

export const preadvRaw = (fd: number, iov: Buffer, count: number, offset: Offset, flags = 0): number => raw(c.preadv2(fd, iov, count, offset, flags));
export const pwritevRaw = (fd: number, iov: Buffer, count: number, offset: Offset, flags = 0): number =>
  raw(c.pwritev2(fd, iov, count, offset, flags));
export const fsyncRaw = (fd: number, datasync: boolean): number => raw(datasync ? c.fdatasync(fd) : c.fsync(fd));
export const fallocateRaw = (fd: number, mode: number, offset: Offset, length: Offset): number => raw(c.fallocate(fd, mode, offset, length));

/** copy_file_range(2) at explicit offsets; `offs` is 16 bytes: the in and out positions (updated by the kernel). */
export const copyFileRangeRaw = (fdIn: number, fdOut: number, offs: Buffer, length: number): number =>
  raw(c.copyFileRangeAt(fdIn, offs, fdOut, offs.subarray(8), length, 0));

type Done = (r: number) => void;
const settle =
  (done: Done) =>
  (err: unknown, r: number | bigint): void => {
    // An exception inside koffi itself (not the syscall) is reported as EIO.
    if (err) done(-5);
    else done(raw(r));
  };

export const preadvOnPool = (fd: number, iov: Buffer, count: number, offset: Offset, done: Done): void =>
  c.preadv2.async(fd, iov, count, offset, 0, settle(done));
export const pwritevOnPool = (fd: number, iov: Buffer, count: number, offset: Offset, done: Done): void =>
  c.pwritev2.async(fd, iov, count, offset, 0, settle(done));
export const fsyncOnPool = (fd: number, datasync: boolean, done: Done): void => (datasync ? c.fdatasync : c.fsync).async(fd, settle(done));
export const fallocateOnPool = (fd: number, mode: number, offset: Offset, length: Offset, done: Done): void =>
  c.fallocate.async(fd, mode, offset, length, settle(done));
export const copyFileRangeOnPool = (fdIn: number, fdOut: number, offs: Buffer, length: number, done: Done): void =>
  c.copyFileRangeAt.async(fdIn, offs, fdOut, offs.subarray(8), length, 0, settle(done));

/** The host address of a Buffer's first byte (its memory never moves while it is referenced). */
export const addressOf = (b: Buffer): number => Number(c.addressOf(b, b, 0));
