// Open-file-description (OFD) record locks: owned by an open file, not by
// the process, so one daemon can hold locks for many guest owners, and the
// host kernel arbitrates between them, host processes and other servers.
import { c, errno } from './libc.js';
import { SysError } from './errno.js';
import { F_UNLCK } from './constants.js';

const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;

export interface LockRange {
  /** F_RDLCK, F_WRLCK or F_UNLCK */
  type: number;
  start: number;
  /** 0 = to end of file */
  len: number;
  /** pid of the holder as the host reports it (-1 for OFD locks) */
  pid: number;
}

const flockBuf = Buffer.alloc(32);

function pack(l: Omit<LockRange, 'pid'>): void {
  flockBuf.fill(0);
  flockBuf.writeInt16LE(l.type, 0);
  flockBuf.writeInt16LE(0, 2); // SEEK_SET
  flockBuf.writeBigInt64LE(BigInt(l.start), 8);
  flockBuf.writeBigInt64LE(BigInt(l.len), 16);
}

/** Non-blocking set: returns false when another owner holds a conflicting lock. */
export function ofdSetLock(fd: number, l: Omit<LockRange, 'pid'>, what = 'fd'): boolean {
  pack(l);
  if (c.fcntl(fd, F_OFD_SETLK, flockBuf) < 0) {
    const e = errno();
    if (e === 11 /* EAGAIN */ || e === 13 /* EACCES */) return false;
    throw new SysError(e, 'fcntl(F_OFD_SETLK)', what);
  }
  return true;
}

/** The first lock that would conflict with `l`, or type F_UNLCK if none. */
export function ofdGetLock(fd: number, l: Omit<LockRange, 'pid'>, what = 'fd'): LockRange {
  pack(l);
  if (c.fcntl(fd, F_OFD_GETLK, flockBuf) < 0) throw new SysError(errno(), 'fcntl(F_OFD_GETLK)', what);
  const type = flockBuf.readInt16LE(0);
  return {
    type,
    start: Number(flockBuf.readBigInt64LE(8)),
    len: Number(flockBuf.readBigInt64LE(16)),
    pid: type === F_UNLCK ? 0 : flockBuf.readInt32LE(24),
  };
}

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

/** flock(2) without blocking: type F_RDLCK/F_WRLCK/F_UNLCK; false = held elsewhere. */
export function flockNb(fd: number, type: number, what = 'fd'): boolean {
  const op = type === 0 ? LOCK_SH : type === 1 ? LOCK_EX : LOCK_UN;
  if (c.flock(fd, op | LOCK_NB) < 0) {
    const e = errno();
    if (e === 11 /* EWOULDBLOCK */) return false;
    throw new SysError(e, 'flock', what);
  }
  return true;
}
