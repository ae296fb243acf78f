// Checks on the single path components a client sends. Every path
// operation is (parent inode, one name); these keep it that way.
import { Errno, fail } from '../sys/index.js';

const SLASH = 0x2f;
const DOT = 0x2e;

export const isDot = (n: Buffer): boolean => n.length === 1 && n[0] === DOT;
export const isDotDot = (n: Buffer): boolean => n.length === 2 && n[0] === DOT && n[1] === DOT;

/** A name for lookup: '.' and '..' are allowed (the caller resolves them). */
export function checkLookupName(op: string, name: Buffer): void {
  if (name.length === 0 || name.length > 255 || name.includes(SLASH) || name.includes(0)) {
    fail(name.length > 255 ? Errno.ENAMETOOLONG : Errno.EINVAL, op, printable(name));
  }
}

/** A name that will be created, removed or renamed: '.' and '..' refused. */
export function checkEntryName(op: string, name: Buffer, dotErrno: number = Errno.EINVAL): void {
  checkLookupName(op, name);
  if (isDot(name) || isDotDot(name)) fail(dotErrno, op, printable(name));
}

/** For logs and error messages only: names are bytes and stay bytes. */
export function printable(name: Buffer): string {
  return JSON.stringify(name.toString('utf8'));
}
