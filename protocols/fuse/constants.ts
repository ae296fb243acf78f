// FUSE kernel ABI values (linux/fuse.h, protocol 7.38+).

export const FUSE_KERNEL_VERSION = 7;
/** The minor version duofs speaks: 7.39 adds STATX (birth times); virtiofsd replies 7.38. */
export const FUSE_KERNEL_MINOR_VERSION = 39;
export const FUSE_ROOT_ID = 1;

export const OP = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;

/** INIT flags (low 32 bits in `flags`, high 32 in `flags2` when INIT_EXT). */
export const INIT = {
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  FILE_OPS: 1n << 2n,
  ATOMIC_O_TRUNC: 1n << 3n,
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  SPLICE_WRITE: 1n << 7n,
  SPLICE_MOVE: 1n << 8n,
  SPLICE_READ: 1n << 9n,
  FLOCK_LOCKS: 1n << 10n,
  HAS_IOCTL_DIR: 1n << 11n,
  AUTO_INVAL_DATA: 1n << 12n,
  DO_READDIRPLUS: 1n << 13n,
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  NO_OPEN_SUPPORT: 1n << 17n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  POSIX_ACL: 1n << 20n,
  ABORT_ERROR: 1n << 21n,
  MAX_PAGES: 1n << 22n,
  CACHE_SYMLINKS: 1n << 23n,
  NO_OPENDIR_SUPPORT: 1n << 24n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  MAP_ALIGNMENT: 1n << 26n,
  SUBMOUNTS: 1n << 27n,
  HANDLE_KILLPRIV_V2: 1n << 28n,
  SETXATTR_EXT: 1n << 29n,
  INIT_EXT: 1n << 30n,
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  CREATE_SUPP_GROUP: 1n << 34n,
  DIRECT_IO_ALLOW_MMAP: 1n << 36n,
} as const;

/** setattr valid bits */
export const FATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

/** open reply flags */
export const FOPEN = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
} as const;

/** OFFSET_MAX: fuse_file_lock.end of a lock to the end of the file (and fuse_read_in offsets' limit). */
export const OFFSET_MAX = 0x7fffffffffffffffn;

export const FUSE_GETATTR_FH = 1;
export const FUSE_LK_FLOCK = 1;
export const FUSE_FSYNC_FDATASYNC = 1;
export const FUSE_RELEASE_FLUSH = 1;
export const FUSE_RELEASE_FLOCK_UNLOCK = 2;
export const FUSE_WRITE_KILL_SUIDGID = 4;
/** open_in.open_flags: kill suid/sgid on truncate (HANDLE_KILLPRIV_V2) */
export const FUSE_OPEN_KILL_SUIDGID = 1;
export const FUSE_SETXATTR_ACL_KILL_SGID = 1;

/** fuse_attr flags */
export const FUSE_ATTR_SUBMOUNT = 1;

// Sizes of the fixed request structs (sizeof in linux/fuse.h): what the
// session reads through the ArgReader before any name or data.
export const INIT_IN_SIZE = 64;
export const FORGET_IN_SIZE = 8;
export const BATCH_FORGET_IN_SIZE = 8;
/** struct fuse_forget_one, BATCH_FORGET_IN_SIZE's count of them follow */
export const FORGET_ONE_SIZE = 16;
export const GETATTR_IN_SIZE = 16;
export const STATX_IN_SIZE = 24;
export const SETATTR_IN_SIZE = 88;
export const MKNOD_IN_SIZE = 16;
export const MKDIR_IN_SIZE = 8;
export const RENAME_IN_SIZE = 8;
export const RENAME2_IN_SIZE = 16;
export const LINK_IN_SIZE = 8;
/** struct fuse_open_in (OPEN, OPENDIR) */
export const OPEN_IN_SIZE = 8;
/** struct fuse_create_in (CREATE, TMPFILE) */
export const CREATE_IN_SIZE = 16;
/** struct fuse_read_in (READ, READDIR, READDIRPLUS) */
export const READ_IN_SIZE = 40;
export const WRITE_IN_SIZE = 40;
/** struct fuse_release_in (RELEASE, RELEASEDIR) */
export const RELEASE_IN_SIZE = 24;
export const FLUSH_IN_SIZE = 24;
/** struct fuse_fsync_in (FSYNC, FSYNCDIR) */
export const FSYNC_IN_SIZE = 16;
/** struct fuse_setxattr_in with SETXATTR_EXT */
export const SETXATTR_IN_SIZE = 16;
/** fuse_setxattr_in without SETXATTR_EXT: size and flags */
export const FUSE_COMPAT_SETXATTR_IN_SIZE = 8;
/** struct fuse_getxattr_in (GETXATTR, LISTXATTR) */
export const GETXATTR_IN_SIZE = 8;
export const ACCESS_IN_SIZE = 8;
/** struct fuse_lk_in (GETLK, SETLK, SETLKW) */
export const LK_IN_SIZE = 48;
export const INTERRUPT_IN_SIZE = 8;
export const FALLOCATE_IN_SIZE = 32;
export const LSEEK_IN_SIZE = 24;
export const COPY_FILE_RANGE_IN_SIZE = 56;
export const SYNCFS_IN_SIZE = 8;

/** Request extensions: fuse_in_header.total_extlen counts units of this many bytes. */
export const EXT_UNIT = 8;
/** struct fuse_ext_header */
export const EXT_HEADER_SIZE = 8;
/** enum fuse_ext_type: 0..FUSE_MAX_NR_SECCTX are a fuse_secctx_header (the type is its nr_secctx) */
export const FUSE_MAX_NR_SECCTX = 31;
/** struct fuse_secctx: size (of the context), padding */
export const SECCTX_SIZE = 8;
/** enum fuse_ext_type: FUSE_EXT_GROUPS (struct fuse_supp_groups) */
export const FUSE_EXT_GROUPS = 32;
/** struct fuse_supp_groups without its groups[] */
export const SUPP_GROUPS_SIZE = 4;

// Sizes of the reply structures (sizeof in linux/fuse.h; test/fuse/wire.test.ts
// checks each against the struct's fields and each encoder against them).
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const OPEN_OUT_SIZE = 16;
/** struct fuse_dirent without its name: FUSE_NAME_OFFSET */
export const DIRENT_SIZE = 24;
/** struct fuse_direntplus without its name: FUSE_NAME_OFFSET_DIRENTPLUS */
export const DIRENTPLUS_SIZE = ENTRY_OUT_SIZE + DIRENT_SIZE;
/** FUSE_REC_ALIGN: dirent records are padded to 64 bits */
export const DIRENT_ALIGN = 8;
/** struct fuse_write_out (WRITE, COPY_FILE_RANGE) */
export const WRITE_OUT_SIZE = 8;
/** struct fuse_lseek_out */
export const LSEEK_OUT_SIZE = 8;
/** struct fuse_getxattr_out (GETXATTR, LISTXATTR with size 0) */
export const GETXATTR_OUT_SIZE = 8;
/** struct fuse_file_lock, the whole of struct fuse_lk_out */
export const FILE_LOCK_SIZE = 24;
export const LK_OUT_SIZE = FILE_LOCK_SIZE;
/** struct fuse_init_out since 7.23 */
export const INIT_OUT_SIZE = 64;
/** fuse_init_out before 7.5: major and minor only (the reply to an INIT of a newer major) */
export const FUSE_COMPAT_INIT_OUT_SIZE = 8;
/** fuse_init_out of 7.5 to 7.22 */
export const FUSE_COMPAT_22_INIT_OUT_SIZE = 24;
/** The first minor version whose fuse_init_out is INIT_OUT_SIZE bytes. */
export const INIT_OUT_FULL_MINOR = 23;
/** struct fuse_statx (7.39) */
export const STATX_SIZE = 256;
/** struct fuse_statx_out: attr_valid, attr_valid_nsec, flags, spare[2], then fuse_statx */
export const STATX_OUT_SIZE = 32 + STATX_SIZE;
