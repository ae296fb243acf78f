// 9P2000.L message types and field values (Linux include/net/9p/9p.h).

export const T = {
  lerror: 6,
  statfs: 8,
  lopen: 12,
  lcreate: 14,
  symlink: 16,
  mknod: 18,
  rename: 20,
  readlink: 22,
  getattr: 24,
  setattr: 26,
  xattrwalk: 30,
  xattrcreate: 32,
  readdir: 40,
  fsync: 50,
  lock: 52,
  getlock: 54,
  link: 70,
  mkdir: 72,
  renameat: 74,
  unlinkat: 76,
  version: 100,
  auth: 102,
  attach: 104,
  error: 106,
  flush: 108,
  walk: 110,
  open: 112,
  create: 114,
  read: 116,
  write: 118,
  clunk: 120,
  remove: 122,
  stat: 124,
  wstat: 126,
} as const;

/** Rlerror's type; every other reply type is its request's type + 1. */
export const RLERROR = 7;

export const HEADER_SIZE = 7; // size[4] type[1] tag[2]
/** Rread/Rreaddir header: size[4] type[1] tag[2] count[4] */
export const IOHDRSZ = 11;
export const NOTAG = 0xffff;
export const NOFID = 0xffffffff;
export const NONUNAME = 0xffffffff;
export const MIN_MSIZE = 4096;
export const MAX_WALK_NAMES = 16;

export const QTDIR = 0x80;
export const QTSYMLINK = 0x02;
export const QTFILE = 0x00;

/** Tsetattr valid bits */
export const ATTR = {
  MODE: 0x1,
  UID: 0x2,
  GID: 0x4,
  SIZE: 0x8,
  ATIME: 0x10,
  MTIME: 0x20,
  CTIME: 0x40,
  ATIME_SET: 0x80,
  MTIME_SET: 0x100,
} as const;

/** Tgetattr request_mask / Rgetattr valid bits */
export const GETATTR = {
  BASIC: 0x7ff,
  BTIME: 0x800,
  GEN: 0x1000,
  DATA_VERSION: 0x2000,
  ALL: 0x3fff,
} as const;

export const LOCK_TYPE = { RDLCK: 0, WRLCK: 1, UNLCK: 2 } as const;
export const LOCK_FLAGS = { BLOCK: 1, RECLAIM: 2 } as const;
export const LOCK_STATUS = { SUCCESS: 0, BLOCKED: 1, ERROR: 2, GRACE: 3 } as const;

export const AT_REMOVEDIR = 0x200;

/** P9_DOTL_* open flags that differ from x86 Linux's O_* values. */
export const DOTL_SYNC = 0o4000000;

export const VERSION_9P2000_L = '9P2000.L';
