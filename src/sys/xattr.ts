// Extended attributes by fd. O_PATH fds cannot be used with f*xattr, so for
// those the path-based calls go through /proc/self/fd/N, which the kernel
// resolves to the very inode (no rename race, no symlink walk).
import { c, cstr, errno, onPool } from './libc.js';
import { SysError } from './errno.js';
import { XATTR_LIST_MAX, XATTR_SIZE_MAX } from './constants.js';
import { procPath } from './fs.js';

const valueBuf = Buffer.alloc(XATTR_SIZE_MAX);
const listBuf = Buffer.alloc(XATTR_LIST_MAX);

function check(ret: number, op: string, what: string): number {
  if (ret < 0) throw new SysError(errno(), op, what);
  return ret;
}

/** The value of attribute `name` of the inode behind O_PATH `fd`. */
export function getxattr(fd: number, name: Buffer, what = 'fd'): Buffer {
  const n = check(Number(c.getxattr(cstr(procPath(fd)), cstr(name), valueBuf, valueBuf.length)), 'getxattr', `${what} ${name}`);
  return Buffer.from(valueBuf.subarray(0, n));
}

/** The size of attribute `name`, without reading it. */
export function getxattrSize(fd: number, name: Buffer, what = 'fd'): number {
  return check(Number(c.getxattr(cstr(procPath(fd)), cstr(name), null, 0)), 'getxattr', `${what} ${name}`);
}

export function setxattr(fd: number, name: Buffer, value: Buffer, flags: number, what = 'fd'): void {
  check(c.setxattr(cstr(procPath(fd)), cstr(name), value, value.length, flags), 'setxattr', `${what} ${name}`);
}

export function removexattr(fd: number, name: Buffer, what = 'fd'): void {
  check(c.removexattr(cstr(procPath(fd)), cstr(name)), 'removexattr', `${what} ${name}`);
}

/** Attribute names, each as bytes without its NUL. */
export function listxattr(fd: number, what = 'fd'): Buffer[] {
  return splitNames(listBuf, check(Number(c.listxattr(cstr(procPath(fd)), listBuf, listBuf.length)), 'listxattr', what));
}

function splitNames(list: Buffer, n: number): Buffer[] {
  const names: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    if (list[i] === 0) {
      if (i > start) names.push(Buffer.from(list.subarray(start, i)));
      start = i + 1;
    }
  }
  return names;
}

// The same calls on libuv's pool, for filesystems where they can wait on a
// server; each has its own buffer (calls overlap), and `fd` must stay open
// until the promise settles.

export async function getxattrOnPool(fd: number, name: Buffer, what = 'fd'): Promise<Buffer> {
  const value = Buffer.allocUnsafe(XATTR_SIZE_MAX);
  const n = await onPool(c.getxattr, [cstr(procPath(fd)), cstr(name), value, value.length], 'getxattr', `${what} ${name}`);
  return Buffer.from(value.subarray(0, n));
}

export async function listxattrOnPool(fd: number, what = 'fd'): Promise<Buffer[]> {
  const list = Buffer.allocUnsafe(XATTR_LIST_MAX);
  return splitNames(list, await onPool(c.listxattr, [cstr(procPath(fd)), list, list.length], 'listxattr', what));
}

export async function setxattrOnPool(fd: number, name: Buffer, value: Buffer, flags: number, what = 'fd'): Promise<void> {
  await onPool(c.setxattr, [cstr(procPath(fd)), cstr(name), value, value.length, flags], 'setxattr', `${what} ${name}`);
}

export async function removexattrOnPool(fd: number, name: Buffer, what = 'fd'): Promise<void> {
  await onPool(c.removexattr, [cstr(procPath(fd)), cstr(name)], 'removexattr', `${what} ${name}`);
}

/** Same calls on a real (non-O_PATH) fd: no /proc lookup. */
export function fgetxattr(fd: number, name: Buffer, what = 'fd'): Buffer {
  const n = check(Number(c.fgetxattr(fd, cstr(name), valueBuf, valueBuf.length)), 'fgetxattr', `${what} ${name}`);
  return Buffer.from(valueBuf.subarray(0, n));
}

export function fsetxattr(fd: number, name: Buffer, value: Buffer, flags: number, what = 'fd'): void {
  check(c.fsetxattr(fd, cstr(name), value, value.length, flags), 'fsetxattr', `${what} ${name}`);
}
