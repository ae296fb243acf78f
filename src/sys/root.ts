// The calls that change what a process sees as "/": pivot_root(2) (glibc
// has no wrapper), chroot(2), chdir/fchdir, and the mount flags the sandbox
// uses. chroot, chdir and pivot_root act on the fs_struct every thread of
// the process shares, so they confine the libuv pool and V8's threads too.
import koffi from 'koffi';
import { c, cstr, errno } from './libc.js';
import { SysError } from './errno.js';

const lib = koffi.load('libc.so.6');
const sysPivotRoot = lib.func('syscall', 'long', ['long', 'void *', 'void *']);
const chrootFn = lib.func('int chroot(const void *path)');
const chdirFn = lib.func('int chdir(const void *path)');
const fchdirFn = lib.func('int fchdir(int fd)');
const sethostnameFn = lib.func('int sethostname(const char *name, size_t len)');
const exitNowFn = lib.func('void _exit(int status)');
const mountNull = lib.func('mount', 'int', ['void *', 'void *', 'void *', 'ulong', 'void *']);

/** x86_64 and aarch64 syscall numbers of pivot_root. */
const SYS_PIVOT_ROOT = process.arch === 'arm64' ? 41 : 155;

export const MS_RDONLY = 0x1;
export const MS_NOEXEC = 0x8;
export const MS_REC = 0x4000;
export const MS_BIND = 0x1000;
export const MS_PRIVATE = 1 << 18;
export const MS_SLAVE = 1 << 19;

function check(ret: number | bigint, op: string, what: string): void {
  if (Number(ret) < 0) throw new SysError(errno(), op, what);
}

export function pivotRoot(newRoot: string, putOld: string): void {
  check(sysPivotRoot(SYS_PIVOT_ROOT, cstr(newRoot), cstr(putOld)), 'pivot_root', newRoot);
}

export function chroot(path: string): void {
  check(chrootFn(cstr(path)), 'chroot', path);
}

export function chdir(path: string): void {
  check(chdirFn(cstr(path)), 'chdir', path);
}

export function fchdir(fd: number, what = `fd ${fd}`): void {
  check(fchdirFn(fd), 'fchdir', what);
}

export function sethostname(name: string): void {
  check(sethostnameFn(name, Buffer.byteLength(name)), 'sethostname', name);
}

/** mount(2) with any of source, fstype and data absent (a bind, a propagation change). */
export function mountAt(source: string | null, target: string, fstype: string | null, flags: number, data: string | null = null): void {
  check(
    mountNull(source === null ? null : cstr(source), cstr(target), fstype === null ? null : cstr(fstype), flags, data === null ? null : cstr(data)),
    'mount',
    target,
  );
}

/** umount2(2) */
export function unmount(target: string, flags: number): void {
  check(c.umount2(target, flags), 'umount2', target);
}

/**
 * _exit(2): ends the process at once. process.exit() first joins libuv's
 * thread pool, which never returns while a pool thread is blocked (a slow
 * read, the capability drop's parked threads).
 */
export function exitNow(status: number): never {
  exitNowFn(status);
  throw new Error('unreachable');
}
