// RLIMIT_NOFILE: every live inode holds an O_PATH fd, so a busy guest needs
// many. Raise the soft limit to the hard one at start-up (as virtiofsd does).
import { c, errno } from './libc.js';
import { SysError } from './errno.js';

const RLIMIT_NOFILE = 7;

/** Raises the soft open-file limit to the hard limit; returns the new soft limit. */
export function raiseNofileLimit(): number {
  const cur = Buffer.alloc(16);
  if (c.prlimit(0, RLIMIT_NOFILE, null, cur) < 0) throw new SysError(errno(), 'prlimit', 'RLIMIT_NOFILE');
  const hard = cur.readBigUInt64LE(8);
  const want = Buffer.alloc(16);
  want.writeBigUInt64LE(hard, 0);
  want.writeBigUInt64LE(hard, 8);
  if (c.prlimit(0, RLIMIT_NOFILE, want, cur) < 0) return Number(cur.readBigUInt64LE(0));
  return hard > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(hard);
}

/** Sets both open-file limits to `n` (virtiofsd's --rlimit-nofile); raising the hard limit needs CAP_SYS_RESOURCE. */
export function setNofileLimit(n: number): number {
  const want = Buffer.alloc(16);
  want.writeBigUInt64LE(BigInt(n), 0);
  want.writeBigUInt64LE(BigInt(n), 8);
  if (c.prlimit(0, RLIMIT_NOFILE, want, null) < 0) throw new SysError(errno(), 'prlimit(RLIMIT_NOFILE)', String(n));
  return n;
}
