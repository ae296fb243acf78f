// statx(2) and fstatfs(2), decoded from their raw buffers into plain objects.
import { c, cstr, errno, EMPTY_PATH, onPool } from './libc.js';
import { AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, makedev } from './constants.js';
import { SysError } from './errno.js';

export const STATX_BASIC_STATS = 0x7ff;
export const STATX_BTIME = 0x800;
export const STATX_MNT_ID = 0x1000;

export interface Timespec {
  sec: number;
  nsec: number;
}

export interface Stat {
  /** st_dev, glibc makedev() encoding */
  dev: bigint;
  ino: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: bigint;
  size: number;
  blksize: number;
  blocks: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** undefined when the filesystem does not report a birth time */
  btime: Timespec | undefined;
  mntId: bigint;
}

const buf = Buffer.alloc(256);

function ts(b: Buffer, off: number): Timespec {
  return { sec: Number(b.readBigInt64LE(off)), nsec: b.readUInt32LE(off + 8) };
}

function decode(b: Buffer): Stat {
  const mask = b.readUInt32LE(0);
  return {
    blksize: b.readUInt32LE(4),
    nlink: b.readUInt32LE(16),
    uid: b.readUInt32LE(20),
    gid: b.readUInt32LE(24),
    mode: b.readUInt16LE(28),
    ino: b.readBigUInt64LE(32),
    size: Number(b.readBigUInt64LE(40)),
    blocks: Number(b.readBigUInt64LE(48)),
    atime: ts(b, 64),
    btime: mask & STATX_BTIME ? ts(b, 80) : undefined,
    ctime: ts(b, 96),
    mtime: ts(b, 112),
    rdev: makedev(b.readUInt32LE(128), b.readUInt32LE(132)),
    dev: makedev(b.readUInt32LE(136), b.readUInt32LE(140)),
    mntId: mask & STATX_MNT_ID ? b.readBigUInt64LE(144) : 0n,
  };
}

/** statx of the object `fd` refers to (any fd, O_PATH included). */
export function fstat(fd: number, what = 'fd'): Stat {
  if (c.statx(fd, EMPTY_PATH, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME | STATX_MNT_ID, buf) < 0) {
    throw new SysError(errno(), 'statx', what);
  }
  return decode(buf);
}

/** statx of `name` in directory `dirfd`, never following a final symlink. */
export function fstatat(dirfd: number, name: Buffer | string, what?: string): Stat {
  if (c.statx(dirfd, cstr(name), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME | STATX_MNT_ID, buf) < 0) {
    throw new SysError(errno(), 'statx', what ?? name.toString());
  }
  return decode(buf);
}

export interface StatFs {
  type: number;
  bsize: number;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  fsid: bigint;
  namelen: number;
  frsize: number;
  flags: number;
}

const sfbuf = Buffer.alloc(120);

export function fstatfs(fd: number, what = 'fd'): StatFs {
  if (c.fstatfs(fd, sfbuf) < 0) throw new SysError(errno(), 'fstatfs', what);
  return decodeStatFs(sfbuf);
}

/** fstatfs(2) on libuv's pool (see statxOnPool). */
export async function fstatfsOnPool(fd: number, what = 'fd'): Promise<StatFs> {
  const out = Buffer.alloc(120);
  await onPool(c.fstatfs, [fd, out], 'fstatfs', what);
  return decodeStatFs(out);
}

function decodeStatFs(b: Buffer): StatFs {
  return {
    type: Number(b.readBigInt64LE(0)),
    bsize: Number(b.readBigInt64LE(8)),
    blocks: b.readBigUInt64LE(16),
    bfree: b.readBigUInt64LE(24),
    bavail: b.readBigUInt64LE(32),
    files: b.readBigUInt64LE(40),
    ffree: b.readBigUInt64LE(48),
    fsid: b.readBigUInt64LE(56),
    namelen: Number(b.readBigInt64LE(64)),
    frsize: Number(b.readBigInt64LE(72)),
    flags: Number(b.readBigInt64LE(80)),
  };
}

const STATX_MASK = STATX_BASIC_STATS | STATX_BTIME | STATX_MNT_ID;

/**
 * statx of `name` in `dirfd` (an empty name: `dirfd` itself) on libuv's
 * pool, for filesystems where a stat can wait on a server (FUSE, NFS).
 * `dirfd` must stay open until the promise settles (the caller holds it);
 * a failure rejects with the SysError naming `what`.
 */
export function statxOnPool(dirfd: number, name: Buffer | undefined, what: string): Promise<Stat> {
  const out = Buffer.alloc(256);
  const path = name ? cstr(name) : EMPTY_PATH;
  const flags = AT_SYMLINK_NOFOLLOW | (name ? 0 : AT_EMPTY_PATH);
  return new Promise<Stat>((resolve, reject) => {
    c.statx.async(dirfd, path, flags, STATX_MASK, out, (err: unknown, r: number) => {
      void path;
      if (err) reject(new SysError(5, 'statx', what));
      else if (r < 0) reject(new SysError(errno(), 'statx', what));
      else resolve(decode(out));
    });
  });
}
