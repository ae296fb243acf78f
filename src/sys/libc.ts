// Raw koffi declarations of the libc entry points duofs uses. Nothing here
// checks errors; the typed wrappers in the sibling modules do. Buffers are
// passed as pointers to their own memory (koffi does not copy them for
// synchronous calls), so callers must NUL-terminate names (see cstr()).
import koffi from 'koffi';
import { Errno, SysError } from './errno.js';

const lib = koffi.load('libc.so.6');

// Fixed-arity views of syscall(2) for calls glibc does not wrap (openat2)
// or would broadcast to every thread (setgroups must stay per-thread).
const sysOpenat2 = lib.func('syscall', 'long', ['long', 'int', 'void *', 'void *', 'size_t']);
const sysSetgroups = lib.func('syscall', 'long', ['long', 'size_t', 'void *']);

export const c = {
  openat: lib.func('int openat(int dirfd, const void *path, int flags, uint32_t mode)'),
  close: lib.func('int close(int fd)'),
  statx: lib.func('int statx(int dirfd, const void *path, int flags, uint32_t mask, _Out_ void *buf)'),
  fstatfs: lib.func('int fstatfs(int fd, _Out_ void *buf)'),
  getdents64: lib.func('int64_t getdents64(int fd, _Out_ void *buf, size_t count)'),
  lseek: lib.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  mkdirat: lib.func('int mkdirat(int dirfd, const void *path, uint32_t mode)'),
  mknodat: lib.func('int mknodat(int dirfd, const void *path, uint32_t mode, uint64_t dev)'),
  symlinkat: lib.func('int symlinkat(const void *target, int dirfd, const void *path)'),
  readlinkat: lib.func('int64_t readlinkat(int dirfd, const void *path, _Out_ void *buf, size_t size)'),
  linkat: lib.func('int linkat(int olddirfd, const void *oldpath, int newdirfd, const void *newpath, int flags)'),
  unlinkat: lib.func('int unlinkat(int dirfd, const void *path, int flags)'),
  renameat2: lib.func('int renameat2(int olddirfd, const void *oldpath, int newdirfd, const void *newpath, uint32_t flags)'),
  fchownat: lib.func('int fchownat(int dirfd, const void *path, uint32_t uid, uint32_t gid, int flags)'),
  fchmodat: lib.func('int fchmodat(int dirfd, const void *path, uint32_t mode, int flags)'),
  fchmod: lib.func('int fchmod(int fd, uint32_t mode)'),
  utimensat: lib.func('int utimensat(int dirfd, const void *path, const void *times, int flags)'),
  ftruncate: lib.func('int ftruncate(int fd, int64_t length)'),
  truncate: lib.func('int truncate(const void *path, int64_t length)'),
  fallocate: lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
  fsync: lib.func('int fsync(int fd)'),
  fdatasync: lib.func('int fdatasync(int fd)'),
  syncfs: lib.func('int syncfs(int fd)'),
  pread: lib.func('int64_t pread(int fd, _Out_ void *buf, size_t count, int64_t offset)'),
  pwrite: lib.func('int64_t pwrite(int fd, const void *buf, size_t count, int64_t offset)'),
  preadv: lib.func('int64_t preadv(int fd, const void *iov, int iovcnt, int64_t offset)'),
  pwritev: lib.func('int64_t pwritev(int fd, const void *iov, int iovcnt, int64_t offset)'),
  preadv2: lib.func('int64_t preadv2(int fd, const void *iov, int iovcnt, int64_t offset, int flags)'),
  pwritev2: lib.func('int64_t pwritev2(int fd, const void *iov, int iovcnt, int64_t offset, int flags)'),
  copyFileRangeAt: lib.func('copy_file_range', 'int64_t', ['int', 'void *', 'int', 'void *', 'size_t', 'uint32_t']),
  /** memmove(p, p, 0) returns p: the address of a Buffer's memory, for iovecs and io_uring entries */
  addressOf: lib.func('memmove', 'uintptr_t', ['void *', 'void *', 'size_t']),
  copy_file_range: lib.func(
    'int64_t copy_file_range(int fdin, _Inout_ int64_t *offin, int fdout, _Inout_ int64_t *offout, size_t len, uint32_t flags)',
  ),
  fcntl: lib.func('int fcntl(int fd, int cmd, void *arg)'),
  fcntlInt: lib.func('fcntl', 'int', ['int', 'int', 'long']),
  getxattr: lib.func('int64_t getxattr(const void *path, const void *name, _Out_ void *value, size_t size)'),
  lgetxattr: lib.func('int64_t lgetxattr(const void *path, const void *name, _Out_ void *value, size_t size)'),
  fgetxattr: lib.func('int64_t fgetxattr(int fd, const void *name, _Out_ void *value, size_t size)'),
  setxattr: lib.func('int setxattr(const void *path, const void *name, const void *value, size_t size, int flags)'),
  lsetxattr: lib.func('int lsetxattr(const void *path, const void *name, const void *value, size_t size, int flags)'),
  fsetxattr: lib.func('int fsetxattr(int fd, const void *name, const void *value, size_t size, int flags)'),
  listxattr: lib.func('int64_t listxattr(const void *path, _Out_ void *list, size_t size)'),
  llistxattr: lib.func('int64_t llistxattr(const void *path, _Out_ void *list, size_t size)'),
  flistxattr: lib.func('int64_t flistxattr(int fd, _Out_ void *list, size_t size)'),
  removexattr: lib.func('int removexattr(const void *path, const void *name)'),
  lremovexattr: lib.func('int lremovexattr(const void *path, const void *name)'),
  fremovexattr: lib.func('int fremovexattr(int fd, const void *name)'),
  setfsuid: lib.func('int setfsuid(uint32_t uid)'),
  setfsgid: lib.func('int setfsgid(uint32_t gid)'),
  name_to_handle_at: lib.func('int name_to_handle_at(int dirfd, const void *path, _Inout_ void *handle, _Out_ int *mount_id, int flags)'),
  open_by_handle_at: lib.func('int open_by_handle_at(int mount_fd, void *handle, int flags)'),
  dup: lib.func('int dup(int fd)'),
  faccessat: lib.func('int faccessat(int dirfd, const void *path, int mode, int flags)'),
  flock: lib.func('int flock(int fd, int op)'),
  read: lib.func('int64_t read(int fd, _Out_ void *buf, size_t count)'),
  write: lib.func('int64_t write(int fd, const void *buf, size_t count)'),
  mount: lib.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
  umount2: lib.func('int umount2(const char *target, int flags)'),
  umask: lib.func('uint32_t umask(uint32_t mask)'),
  geteuid: lib.func('uint32_t geteuid()'),
  prlimit: lib.func('int prlimit(int pid, int resource, const void *newlim, _Out_ void *oldlim)'),
  getegid: lib.func('uint32_t getegid()'),
};

export const errno = (): number => koffi.errno();

/** A koffi function's asynchronous form: the call runs on libuv's pool, `done` on the loop. */
type PoolCallable = { async: (...args: unknown[]) => void };

/**
 * Runs one libc call on libuv's pool and resolves to its (non-negative)
 * result; a negative one rejects with the SysError naming `op` and `what`.
 * The argument array (paths, buffers) stays referenced until the call ends.
 */
export function onPool(fn: PoolCallable, args: unknown[], op: string, what: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    fn.async(...args, (err: unknown, r: number | bigint) => {
      void args;
      const ret = Number(r);
      if (err) reject(new SysError(Errno.EIO, op, what));
      else if (ret < 0) reject(new SysError(errno(), op, what));
      else resolve(ret);
    });
  });
}

const SYS_setgroups = 116;
const SYS_openat2 = 437;

export const openat2Raw = (dirfd: number, path: Buffer, how: Buffer): number => Number(sysOpenat2(SYS_openat2, dirfd, path, how, how.length));
export const setgroupsRaw = (count: number, list: Buffer): number => Number(sysSetgroups(SYS_setgroups, count, list));

/** A NUL-terminated copy of `s` for a `const char *` argument. */
export function cstr(s: Buffer | string): Buffer {
  if (typeof s === 'string') return Buffer.from(s + '\0');
  const b = Buffer.allocUnsafe(s.length + 1);
  s.copy(b);
  b[s.length] = 0;
  return b;
}

export const EMPTY_PATH = Buffer.from([0]);
