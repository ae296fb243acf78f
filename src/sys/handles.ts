// name_to_handle_at / open_by_handle_at: stable file handles that survive
// renames and let an inode be reopened without keeping an fd open.
import { c, errno, EMPTY_PATH } from './libc.js';
import { SysError } from './errno.js';
import { AT_EMPTY_PATH } from './constants.js';

const MAX_HANDLE_SZ = 128;

export interface FileHandle {
  mountId: number;
  /** struct file_handle as the kernel filled it (header + bytes) */
  raw: Buffer;
}

/** The handle of the object behind `fd` (O_PATH fds allowed). */
export function nameToHandle(fd: number, what = 'fd'): FileHandle {
  const raw = Buffer.alloc(8 + MAX_HANDLE_SZ);
  raw.writeUInt32LE(MAX_HANDLE_SZ, 0);
  const mountId = [0];
  if (c.name_to_handle_at(fd, EMPTY_PATH, raw, mountId, AT_EMPTY_PATH) < 0) {
    throw new SysError(errno(), 'name_to_handle_at', what);
  }
  const used = raw.readUInt32LE(0);
  return { mountId: mountId[0]!, raw: Buffer.from(raw.subarray(0, 8 + used)) };
}

/** Opens a handle relative to any fd on the same mount (needs CAP_DAC_READ_SEARCH). */
export function openByHandle(mountFd: number, h: FileHandle, flags: number, what = 'handle'): number {
  const fd = c.open_by_handle_at(mountFd, h.raw, flags);
  if (fd < 0) throw new SysError(errno(), 'open_by_handle_at', what);
  return fd;
}
