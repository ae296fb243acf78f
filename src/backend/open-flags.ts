// Which open(2) flags a client may pass through to the host. Creation and
// truncation are decided by the operation, O_NOFOLLOW is always forced, and
// flags that make no sense for a server-held fd are dropped (as QEMU does).
import {
  O_ACCMODE,
  O_APPEND,
  O_CREAT,
  O_DIRECT,
  O_DIRECTORY,
  O_DSYNC,
  O_EXCL,
  O_LARGEFILE,
  O_NOATIME,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_SYNC,
  O_TRUNC,
} from '../sys/index.js';

const PASSED = O_ACCMODE | O_APPEND | O_TRUNC | O_DSYNC | O_SYNC | O_DIRECTORY | O_NOATIME | O_NONBLOCK | O_LARGEFILE;

/**
 * Flags for opening an existing object. O_DIRECT is dropped unless `direct`
 * (virtiofsd's --allow-direct-io): a client's buffers need not be aligned as
 * the host filesystem's O_DIRECT requires, and QEMU's 9p and virtiofsd drop
 * it too by default.
 */
export function openFlags(requested: number, direct = false): number {
  return (requested & (direct ? PASSED | O_DIRECT : PASSED)) | O_NOFOLLOW;
}

/** Flags for creating a file: O_CREAT always, O_EXCL kept if asked. */
export function createFlags(requested: number, direct = false): number {
  return openFlags(requested, direct) | O_CREAT | (requested & O_EXCL);
}

export const accessMode = (flags: number): number => flags & O_ACCMODE;
