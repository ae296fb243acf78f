// getdents64(2): raw directory entries with the filesystem's own d_off
// cookies, which are stable resume points (what seekdir/telldir use).
import { c, errno } from './libc.js';
import { SysError } from './errno.js';

export interface Dirent {
  ino: bigint;
  /** cookie of the *next* entry: lseek(fd, off) resumes after this one */
  off: bigint;
  type: number;
  name: Buffer;
}

/**
 * Reads one batch of entries from `fd`'s current position into `buf` and
 * decodes them. An empty array means end of directory.
 */
export function getdents(fd: number, buf: Buffer, what = 'dir'): Dirent[] {
  const n = Number(c.getdents64(fd, buf, buf.length));
  if (n < 0) throw new SysError(errno(), 'getdents64', what);
  return decodeDirents(buf, n);
}

/**
 * getdents(), on libuv's pool (a directory on a server: FUSE, NFS). `fd`
 * and `buf` must stay untouched until the promise settles.
 */
export function getdentsOnPool(fd: number, buf: Buffer, what = 'dir'): Promise<Dirent[]> {
  return new Promise<Dirent[]>((resolve, reject) => {
    c.getdents64.async(fd, buf, buf.length, (err: unknown, r: number | bigint) => {
      const n = Number(r);
      if (err) reject(new SysError(5, 'getdents64', what));
      else if (n < 0) reject(new SysError(errno(), 'getdents64', what));
      else resolve(decodeDirents(buf, n));
    });
  });
}

function decodeDirents(buf: Buffer, n: number): Dirent[] {
  const out: Dirent[] = [];
  let p = 0;
  while (p < n) {
    const reclen = buf.readUInt16LE(p + 16);
    const nameStart = p + 19;
    let nameEnd = buf.indexOf(0, nameStart);
    if (nameEnd < 0 || nameEnd > p + reclen) nameEnd = p + reclen;
    out.push({
      ino: buf.readBigUInt64LE(p),
      off: buf.readBigInt64LE(p + 8),
      type: buf[p + 18]!,
      name: Buffer.from(buf.subarray(nameStart, nameEnd)),
    });
    p += reclen;
  }
  return out;
}

/** Positions a directory fd at a cookie returned in Dirent.off (0 = start). */
export function seekdir(fd: number, off: bigint, what = 'dir'): void {
  // Cookies are opaque signed 64-bit values (ext4 hashes use all 64 bits),
  // so they travel as BigInt, never as a lossy Number.
  if (BigInt(c.lseek(fd, BigInt.asIntN(64, off), 0)) < 0n) throw new SysError(errno(), 'lseek', what);
}
