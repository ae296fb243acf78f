// Typed wrappers over the *at() family. Every failure throws SysError naming
// the call and the object. `name` arguments are single path components as
// raw bytes; the caller (the backend) has already refused '/', NUL, '.' and
// '..' where they are not allowed.
import { c, cstr, errno, EMPTY_PATH, onPool, openat2Raw } from './libc.js';
import { AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, O_CLOEXEC, O_NOFOLLOW, O_PATH, UTIME_OMIT } from './constants.js';
import { SysError } from './errno.js';

function check(ret: number, op: string, what: string | Buffer): number {
  if (ret < 0) throw new SysError(errno(), op, typeof what === 'string' ? what : what.toString());
  return ret;
}

let procFdPrefix = '/proc/self/fd/';

/** The path through which an fd (O_PATH ones included) can be reopened. */
export function procPath(fd: number): string {
  return procFdPrefix + fd;
}

/**
 * In the sandbox there is no /proc in the root: the process's working
 * directory is its /proc/self/fd, opened before the root changed (as
 * virtiofsd keeps proc_self_fd), and the path of fd N is just "N".
 */
export function useProcFdWorkingDirectory(): void {
  procFdPrefix = '';
}

export function openat(dirfd: number, name: Buffer | string, flags: number, mode = 0): number {
  return check(c.openat(dirfd, cstr(name), flags | O_CLOEXEC, mode), 'openat', name);
}

/** An O_PATH handle on `name` in `dirfd`; a final symlink is not followed. */
export function openPath(dirfd: number, name: Buffer | string): number {
  return openat(dirfd, name, O_PATH | O_NOFOLLOW);
}

/**
 * Re-open the object behind an O_PATH fd with real access flags. Goes
 * through /proc/self/fd so a renamed or unlinked file is still reachable.
 */
export function reopen(pathFd: number, flags: number, what = 'fd'): number {
  return check(c.openat(AT_FDCWD, cstr(procPath(pathFd)), (flags & ~O_NOFOLLOW) | O_CLOEXEC, 0), 'open', what);
}

const howBuf = Buffer.alloc(24);
/** openat2(2): `resolve` are RESOLVE_* flags (e.g. RESOLVE_BENEATH). */
export function openat2(dirfd: number, path: Buffer | string, flags: number, mode: number, resolve: number): number {
  howBuf.writeBigUInt64LE(BigInt(flags | O_CLOEXEC), 0);
  howBuf.writeBigUInt64LE(BigInt(mode), 8);
  howBuf.writeBigUInt64LE(BigInt(resolve), 16);
  return check(openat2Raw(dirfd, cstr(path), howBuf), 'openat2', path);
}

export function close(fd: number): void {
  c.close(fd);
}

export function mkdirat(dirfd: number, name: Buffer, mode: number): void {
  check(c.mkdirat(dirfd, cstr(name), mode), 'mkdirat', name);
}

export function mknodat(dirfd: number, name: Buffer, mode: number, dev: bigint): void {
  check(c.mknodat(dirfd, cstr(name), mode, dev), 'mknodat', name);
}

export function symlinkat(target: Buffer, dirfd: number, name: Buffer): void {
  check(c.symlinkat(cstr(target), dirfd, cstr(name)), 'symlinkat', name);
}

const linkBuf = Buffer.alloc(4096);
/** readlinkat(fd, ""): the target of the symlink an O_PATH fd refers to. */
export function readlinkFd(fd: number, what = 'symlink'): Buffer {
  const n = check(Number(c.readlinkat(fd, EMPTY_PATH, linkBuf, linkBuf.length)), 'readlinkat', what);
  return Buffer.from(linkBuf.subarray(0, n));
}

export function readlinkat(dirfd: number, name: Buffer | string): Buffer {
  const n = check(Number(c.readlinkat(dirfd, cstr(name), linkBuf, linkBuf.length)), 'readlinkat', name);
  return Buffer.from(linkBuf.subarray(0, n));
}

/** Hard link of the object behind O_PATH `fd` as `newName` in `newDirFd`. */
export function linkFd(fd: number, newDirFd: number, newName: Buffer): void {
  // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd + AT_SYMLINK_FOLLOW does not.
  check(c.linkat(AT_FDCWD, cstr(procPath(fd)), newDirFd, cstr(newName), 0x400), 'linkat', newName);
}

export function linkat(oldDirFd: number, oldName: Buffer, newDirFd: number, newName: Buffer): void {
  check(c.linkat(oldDirFd, cstr(oldName), newDirFd, cstr(newName), 0), 'linkat', newName);
}

export function unlinkat(dirfd: number, name: Buffer, flags: number): void {
  check(c.unlinkat(dirfd, cstr(name), flags), 'unlinkat', name);
}

export function renameat2(oldDirFd: number, oldName: Buffer, newDirFd: number, newName: Buffer, flags: number): void {
  check(c.renameat2(oldDirFd, cstr(oldName), newDirFd, cstr(newName), flags), 'renameat2', oldName);
}

/** chown of the object behind any fd, O_PATH included; a symlink itself is changed. */
export function fchownFd(fd: number, uid: number, gid: number, what = 'fd'): void {
  check(c.fchownat(fd, EMPTY_PATH, uid >>> 0, gid >>> 0, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), 'fchownat', what);
}

/** chmod of the object behind an O_PATH fd (through /proc/self/fd: fchmod refuses O_PATH). */
export function fchmodPathFd(fd: number, mode: number, what = 'fd'): void {
  check(c.fchmodat(AT_FDCWD, cstr(procPath(fd)), mode, 0), 'fchmodat', what);
}

export interface TimeSpec {
  sec: number;
  nsec: number;
}
export type TimeArg = TimeSpec | 'now' | 'omit';

const timesBuf = Buffer.alloc(32);
function packTime(off: number, t: TimeArg): void {
  if (t === 'now' || t === 'omit') {
    timesBuf.writeBigInt64LE(0n, off);
    timesBuf.writeBigInt64LE(BigInt(t === 'now' ? (1 << 30) - 1 : UTIME_OMIT), off + 8);
  } else {
    timesBuf.writeBigInt64LE(BigInt(t.sec), off);
    timesBuf.writeBigInt64LE(BigInt(t.nsec), off + 8);
  }
}

/**
 * utimensat on the object behind an O_PATH fd. Non-symlinks go through
 * /proc/self/fd; a symlink needs its parent and name (AT_SYMLINK_NOFOLLOW).
 */
export function utimensFd(fd: number, atime: TimeArg, mtime: TimeArg, what = 'fd'): void {
  packTime(0, atime);
  packTime(16, mtime);
  check(c.utimensat(AT_FDCWD, cstr(procPath(fd)), timesBuf, 0), 'utimensat', what);
}

export function utimensat(dirfd: number, name: Buffer, atime: TimeArg, mtime: TimeArg): void {
  packTime(0, atime);
  packTime(16, mtime);
  check(c.utimensat(dirfd, cstr(name), timesBuf, AT_SYMLINK_NOFOLLOW), 'utimensat', name);
}

export function ftruncate(fd: number, size: number | bigint, what = 'fd'): void {
  check(c.ftruncate(fd, size), 'ftruncate', what);
}

/** truncate(2) of the object behind an O_PATH fd. */
export function truncatePathFd(fd: number, size: number | bigint, what = 'fd'): void {
  check(c.truncate(cstr(procPath(fd)), size), 'truncate', what);
}

export function fallocate(fd: number, mode: number, offset: number, len: number, what = 'fd'): void {
  check(c.fallocate(fd, mode, offset, len), 'fallocate', what);
}

export function fsync(fd: number, what = 'fd'): void {
  check(c.fsync(fd), 'fsync', what);
}

export function fdatasync(fd: number, what = 'fd'): void {
  check(c.fdatasync(fd), 'fdatasync', what);
}

export function syncfs(fd: number, what = 'fd'): void {
  check(c.syncfs(fd), 'syncfs', what);
}

export function pread(fd: number, buf: Buffer, offset: number | bigint, what = 'fd'): number {
  return check(Number(c.pread(fd, buf, buf.length, offset)), 'pread', what);
}

export function pwrite(fd: number, buf: Buffer, offset: number | bigint, what = 'fd'): number {
  return check(Number(c.pwrite(fd, buf, buf.length, offset)), 'pwrite', what);
}

export function lseek(fd: number, offset: number, whence: number, what = 'fd'): number {
  return check(Number(c.lseek(fd, offset, whence)), 'lseek', what);
}

export function copyFileRange(fdIn: number, offIn: number, fdOut: number, offOut: number, len: number, flags = 0): number {
  const a = [offIn];
  const b = [offOut];
  return check(Number(c.copy_file_range(fdIn, a, fdOut, b, len, flags)), 'copy_file_range', 'fd');
}

export function dup(fd: number): number {
  return check(c.dup(fd), 'dup', 'fd');
}

export function umask(mask: number): number {
  return c.umask(mask);
}

export const AT = { FDCWD: AT_FDCWD, SYMLINK_NOFOLLOW: AT_SYMLINK_NOFOLLOW };

const AT_EACCESS = 0x200;
/** access(2) check of the object behind an O_PATH fd, with the fs credentials in force. */
export function accessPathFd(fd: number, mask: number, what = 'fd'): void {
  check(c.faccessat(AT_FDCWD, cstr(procPath(fd)), mask, AT_EACCESS), 'faccessat', what);
}

/** preadv on an iovec array already laid out in `iov` (16 bytes per entry). */
export function preadv(fd: number, iov: Buffer, count: number, offset: number | bigint, what = 'fd'): number {
  return check(Number(c.preadv(fd, iov, count, offset)), 'preadv', what);
}

/** pwritev on an iovec array already laid out in `iov` (16 bytes per entry). */
export function pwritev(fd: number, iov: Buffer, count: number, offset: number | bigint, what = 'fd'): number {
  return check(Number(c.pwritev(fd, iov, count, offset)), 'pwritev', what);
}

/** openat(2) on libuv's pool (see statxOnPool); resolves to the new fd. */
export function openatOnPool(dirfd: number, name: Buffer, flags: number, what: string): Promise<number> {
  const path = cstr(name);
  return new Promise<number>((resolve, reject) => {
    c.openat.async(dirfd, path, flags | O_CLOEXEC, 0, (err: unknown, r: number) => {
      void path;
      if (err) reject(new SysError(5, 'openat', what));
      else if (r < 0) reject(new SysError(errno(), 'openat', what));
      else resolve(r);
    });
  });
}

/** reopen() on libuv's pool (see statxOnPool): `pathFd` must stay open until the promise settles. */
export function reopenOnPool(pathFd: number, flags: number, what = 'fd'): Promise<number> {
  return openatOnPool(AT_FDCWD, Buffer.from(procPath(pathFd)), flags & ~O_NOFOLLOW, what);
}

// The name calls that can wait on a server (NFS, FUSE), on libuv's pool: the
// directory fds must stay open until the promise settles (the backend holds them).

export async function unlinkatOnPool(dirfd: number, name: Buffer, flags: number, what: string): Promise<void> {
  await onPool(c.unlinkat, [dirfd, cstr(name), flags], 'unlinkat', what);
}

export async function renameat2OnPool(
  oldDirFd: number,
  oldName: Buffer,
  newDirFd: number,
  newName: Buffer,
  flags: number,
  what: string,
): Promise<void> {
  await onPool(c.renameat2, [oldDirFd, cstr(oldName), newDirFd, cstr(newName), flags], 'renameat2', what);
}
