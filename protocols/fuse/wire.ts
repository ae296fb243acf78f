// The FUSE wire format (linux/fuse.h): a bounds-checked reader for request
// arguments that names the field that ran short, and encoders for the reply
// structures. Every transport and the session use these; nothing else in
// protocols/fuse writes a reply structure at a literal offset.
import { Errno, SysError, type StatFs } from '../../src/sys/index.js';
import {
  ATTR_OUT_SIZE,
  ATTR_SIZE,
  DIRENT_ALIGN,
  DIRENT_SIZE,
  DIRENTPLUS_SIZE,
  ENTRY_OUT_SIZE,
  GETXATTR_OUT_SIZE,
  INIT_OUT_SIZE,
  LK_OUT_SIZE,
  LSEEK_OUT_SIZE,
  OFFSET_MAX,
  OPEN_OUT_SIZE,
  OUT_HEADER_SIZE,
  STATX_OUT_SIZE,
  WRITE_OUT_SIZE,
} from './constants.js';

/** Largest file offset (off_t). */
const OFF_MAX = OFFSET_MAX;

/**
 * Little-endian reader over one request's argument block. A field that
 * does not fit is EINVAL naming the operation and the field, never a
 * RangeError from Buffer.
 */
export class ArgReader {
  private off = 0;

  constructor(
    private readonly b: Buffer,
    private readonly op: string,
  ) {}

  get offsetInBlock(): number {
    return this.off;
  }

  get remaining(): number {
    return this.b.length - this.off;
  }

  private need(n: number, field: string): number {
    const at = this.off;
    if (at + n > this.b.length) {
      throw new SysError(Errno.EINVAL, `FUSE ${this.op}`, `${field}: needs ${n} bytes at ${at}, the arguments have ${this.b.length}`);
    }
    this.off = at + n;
    return at;
  }

  u16(field: string): number {
    return this.b.readUInt16LE(this.need(2, field));
  }
  u32(field: string): number {
    return this.b.readUInt32LE(this.need(4, field));
  }
  i32(field: string): number {
    return this.b.readInt32LE(this.need(4, field));
  }
  u64(field: string): bigint {
    return this.b.readBigUInt64LE(this.need(8, field));
  }
  skip(n: number, field = 'padding'): this {
    this.need(n, field);
    return this;
  }

  /** A file offset: a number when exact, a bigint past 2^53, EINVAL past off_t. */
  offset(field: string): number | bigint {
    const v = this.u64(field);
    if (v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
    if (v > OFF_MAX) throw new SysError(Errno.EINVAL, `FUSE ${this.op}`, `${field} ${v} beyond off_t`);
    return v;
  }

  /** A NUL-terminated name at the current position (without its NUL, a view). */
  name(field: string): Buffer {
    const end = this.b.indexOf(0, this.off);
    if (end < 0) throw new SysError(Errno.EINVAL, `FUSE ${this.op}`, `${field} is not NUL-terminated`);
    const v = this.b.subarray(this.off, end);
    this.off = end + 1;
    return v;
  }

  /** `n` bytes at the current position (a view). */
  bytes(n: number, field: string): Buffer {
    const at = this.need(n, field);
    return this.b.subarray(at, at + n);
  }
}

/** struct fuse_attr, as the session fills it. */
export interface FuseAttr {
  ino: bigint;
  size: number | bigint;
  blocks: number | bigint;
  atime: { sec: number | bigint; nsec: number };
  mtime: { sec: number | bigint; nsec: number };
  ctime: { sec: number | bigint; nsec: number };
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** new_encode_dev() form */
  rdev: number;
  blksize: number;
  /** FUSE_ATTR_* */
  flags: number;
}

/** Writes struct fuse_attr (88 bytes) at `at`. */
export function encodeAttr(b: Buffer, at: number, a: FuseAttr): void {
  b.writeBigUInt64LE(a.ino, at);
  b.writeBigUInt64LE(BigInt(a.size), at + 8);
  b.writeBigUInt64LE(BigInt(a.blocks), at + 16);
  b.writeBigInt64LE(BigInt(a.atime.sec), at + 24);
  b.writeBigInt64LE(BigInt(a.mtime.sec), at + 32);
  b.writeBigInt64LE(BigInt(a.ctime.sec), at + 40);
  b.writeUInt32LE(a.atime.nsec, at + 48);
  b.writeUInt32LE(a.mtime.nsec, at + 52);
  b.writeUInt32LE(a.ctime.nsec, at + 56);
  b.writeUInt32LE(a.mode >>> 0, at + 60);
  b.writeUInt32LE(a.nlink >>> 0, at + 64);
  b.writeUInt32LE(a.uid >>> 0, at + 68);
  b.writeUInt32LE(a.gid >>> 0, at + 72);
  b.writeUInt32LE(a.rdev >>> 0, at + 76);
  b.writeUInt32LE(a.blksize >>> 0, at + 80);
  b.writeUInt32LE(a.flags >>> 0, at + 84);
}

/** struct fuse_sx_time */
export interface SxTime {
  sec: number | bigint;
  nsec: number;
}

/** struct fuse_statx (7.39), as the session fills it; fields left out are 0. */
export interface FuseStatx {
  /** STATX_* bits of the fields that are filled */
  mask: number;
  blksize: number;
  attributes?: bigint;
  nlink: number;
  uid: number;
  gid: number;
  mode: number;
  ino: bigint;
  size: number | bigint;
  blocks: number | bigint;
  attributesMask?: bigint;
  atime?: SxTime;
  btime?: SxTime;
  ctime?: SxTime;
  mtime?: SxTime;
  rdevMajor: number;
  rdevMinor: number;
  devMajor?: number;
  devMinor?: number;
}

/** Writes struct fuse_sx_time (16 bytes) at `at`; none leaves it zero. */
function encodeSxTime(b: Buffer, at: number, t: SxTime | undefined): void {
  if (!t) return;
  b.writeBigInt64LE(BigInt(t.sec), at);
  b.writeUInt32LE(t.nsec, at + 8);
}

/** Writes struct fuse_statx (256 bytes) at `at` of a zeroed buffer. */
export function encodeStatx(b: Buffer, at: number, x: FuseStatx): void {
  b.writeUInt32LE(x.mask, at);
  b.writeUInt32LE(x.blksize, at + 4);
  b.writeBigUInt64LE(x.attributes ?? 0n, at + 8);
  b.writeUInt32LE(x.nlink, at + 16);
  b.writeUInt32LE(x.uid, at + 20);
  b.writeUInt32LE(x.gid, at + 24);
  b.writeUInt16LE(x.mode, at + 28);
  b.writeBigUInt64LE(x.ino, at + 32);
  b.writeBigUInt64LE(BigInt(x.size), at + 40);
  b.writeBigUInt64LE(BigInt(x.blocks), at + 48);
  b.writeBigUInt64LE(x.attributesMask ?? 0n, at + 56);
  encodeSxTime(b, at + 64, x.atime);
  encodeSxTime(b, at + 80, x.btime);
  encodeSxTime(b, at + 96, x.ctime);
  encodeSxTime(b, at + 112, x.mtime);
  b.writeUInt32LE(x.rdevMajor, at + 128);
  b.writeUInt32LE(x.rdevMinor, at + 132);
  b.writeUInt32LE(x.devMajor ?? 0, at + 136);
  b.writeUInt32LE(x.devMinor ?? 0, at + 140);
}

/** struct fuse_statx_out: the attribute timeout (whole seconds) and the statx. */
export function encodeStatxOut(attrValid: number, x: FuseStatx): Buffer {
  const b = Buffer.alloc(STATX_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(attrValid), 0);
  encodeStatx(b, 32, x);
  return b;
}

/** new_encode_dev: a glibc makedev() dev_t as the kernel's 32-bit form that fuse_attr.rdev carries. */
export function newEncodeDev(dev: bigint): bigint {
  const major = ((dev >> 32n) & 0xfffff000n) | ((dev >> 8n) & 0xfffn);
  const minor = ((dev >> 12n) & 0xffffff00n) | (dev & 0xffn);
  return ((minor & 0xffn) | (major << 8n) | ((minor & ~0xffn) << 12n)) & 0xffffffffn;
}

/** new_decode_dev: fuse_mknod_in.rdev back to a glibc makedev() dev_t. */
export function newDecodeDev(dev: number): bigint {
  const major = (dev & 0xfff00) >>> 8;
  const minor = (dev & 0xff) | ((dev >>> 12) & 0xfff00);
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** Timeouts of an entry or attribute reply, in whole seconds (nsec parts are 0). */
export interface Validity {
  entry: number;
  attr: number;
}

/** struct fuse_entry_out. Generation 0: node ids are never reused while referenced. */
export function entryOut(nodeid: bigint, valid: Validity, a: FuseAttr, into?: Buffer, at = 0): Buffer {
  const b = into ?? Buffer.alloc(ENTRY_OUT_SIZE);
  b.writeBigUInt64LE(nodeid, at);
  b.writeBigUInt64LE(0n, at + 8);
  b.writeBigUInt64LE(BigInt(valid.entry), at + 16);
  b.writeBigUInt64LE(BigInt(valid.attr), at + 24);
  b.writeUInt32LE(0, at + 32);
  b.writeUInt32LE(0, at + 36);
  encodeAttr(b, at + 40, a);
  return b;
}

/**
 * A fuse_entry_out of node id 0 in a direntplus record (`.` and `..`): no
 * dentry and no lookup reference, all zero but attr.mode's file type, which
 * the kernel checks there too.
 */
export function noEntryOut(mode: number, into: Buffer, at: number): void {
  const none = { sec: 0, nsec: 0 };
  entryOut(
    0n,
    { entry: 0, attr: 0 },
    {
      ino: 0n,
      size: 0,
      blocks: 0,
      atime: none,
      mtime: none,
      ctime: none,
      mode,
      nlink: 0,
      uid: 0,
      gid: 0,
      rdev: 0,
      blksize: 0,
      flags: 0,
    },
    into,
    at,
  );
}

/** DTTOIF: the S_IFMT bits of a d_type (DT_* is the file type shifted down by 12). */
export const dtToMode = (type: number): number => type << 12;

/** FUSE_DIRENT_ALIGN: a record padded to 64 bits. */
const direntAlign = (n: number): number => (n + DIRENT_ALIGN - 1) & ~(DIRENT_ALIGN - 1);

/** FUSE_DIRENT_SIZE: the bytes a fuse_dirent with a name of `nameLen` takes, padding included. */
export const direntSize = (nameLen: number): number => direntAlign(DIRENT_SIZE + nameLen);

/** FUSE_DIRENTPLUS_SIZE: the same for a fuse_direntplus. */
export const direntplusSize = (nameLen: number): number => direntAlign(DIRENTPLUS_SIZE + nameLen);

/** One directory entry as fuse_dirent carries it. */
export interface FuseDirent {
  ino: bigint;
  /** the offset of the next entry (d_off: signed on the host, u64 on the wire) */
  off: bigint;
  /** DT_* */
  type: number;
  name: Buffer;
}

/**
 * Writes struct fuse_dirent, its name and the zero padding to the next
 * 64-bit boundary at `at`; returns direntSize(name.length). (A
 * fuse_direntplus is its fuse_entry_out, then this at + ENTRY_OUT_SIZE.)
 */
export function encodeDirent(b: Buffer, at: number, d: FuseDirent): number {
  const n = d.name.length;
  const end = at + direntSize(n);
  b.writeBigUInt64LE(d.ino, at);
  b.writeBigUInt64LE(BigInt.asUintN(64, d.off), at + 8);
  b.writeUInt32LE(n, at + 16);
  b.writeUInt32LE(d.type, at + 20);
  d.name.copy(b, at + DIRENT_SIZE);
  b.fill(0, at + DIRENT_SIZE + n, end);
  return end - at;
}

/** struct fuse_attr_out. */
export function attrOut(attrValid: number, a: FuseAttr): Buffer {
  const b = Buffer.alloc(ATTR_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(attrValid), 0);
  encodeAttr(b, 16, a);
  return b;
}

/** struct fuse_open_out. */
export function openOut(fh: bigint, openFlags: number): Buffer {
  const b = Buffer.alloc(OPEN_OUT_SIZE);
  b.writeBigUInt64LE(fh, 0);
  b.writeUInt32LE(openFlags >>> 0, 8);
  return b;
}

/** struct fuse_statfs_out (struct fuse_kstatfs, 80 bytes). */
export function statfsOut(s: StatFs): Buffer {
  const b = Buffer.alloc(80);
  b.writeBigUInt64LE(s.blocks, 0);
  b.writeBigUInt64LE(s.bfree, 8);
  b.writeBigUInt64LE(s.bavail, 16);
  b.writeBigUInt64LE(s.files, 24);
  b.writeBigUInt64LE(s.ffree, 32);
  b.writeUInt32LE(s.bsize, 40);
  b.writeUInt32LE(s.namelen, 44);
  b.writeUInt32LE(s.frsize, 48);
  return b;
}

/** struct fuse_init_out. Fields left out are 0. */
export interface InitOut {
  major: number;
  minor: number;
  maxReadahead?: number;
  /** all 64 INIT flags: the low half goes to `flags`, the high half to `flags2` */
  flags?: bigint;
  maxBackground?: number;
  congestionThreshold?: number;
  maxWrite?: number;
  /** timestamp granularity in ns */
  timeGran?: number;
  maxPages?: number;
  mapAlignment?: number;
}

/**
 * struct fuse_init_out, all INIT_OUT_SIZE bytes; an older kernel gets a
 * prefix (FUSE_COMPAT_INIT_OUT_SIZE, FUSE_COMPAT_22_INIT_OUT_SIZE).
 */
export function encodeInitOut(o: InitOut): Buffer {
  const b = Buffer.alloc(INIT_OUT_SIZE);
  const flags = o.flags ?? 0n;
  b.writeUInt32LE(o.major, 0);
  b.writeUInt32LE(o.minor, 4);
  b.writeUInt32LE(o.maxReadahead ?? 0, 8);
  b.writeUInt32LE(Number(flags & 0xffffffffn), 12);
  b.writeUInt16LE(o.maxBackground ?? 0, 16);
  b.writeUInt16LE(o.congestionThreshold ?? 0, 18);
  b.writeUInt32LE(o.maxWrite ?? 0, 20);
  b.writeUInt32LE(o.timeGran ?? 0, 24);
  b.writeUInt16LE(o.maxPages ?? 0, 28);
  b.writeUInt16LE(o.mapAlignment ?? 0, 30);
  b.writeUInt32LE(Number((flags >> 32n) & 0xffffffffn), 32);
  return b;
}

/** struct fuse_write_out: the bytes a WRITE (or COPY_FILE_RANGE) moved. */
export function encodeWriteOut(size: number): Buffer {
  const b = Buffer.alloc(WRITE_OUT_SIZE);
  b.writeUInt32LE(size, 0);
  return b;
}

/** struct fuse_lseek_out: the offset SEEK_DATA / SEEK_HOLE found. */
export function encodeLseekOut(offset: number | bigint): Buffer {
  const b = Buffer.alloc(LSEEK_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(offset), 0);
  return b;
}

/** struct fuse_getxattr_out: the size of a value (GETXATTR) or name list (LISTXATTR) asked for with size 0. */
export function encodeGetxattrOut(size: number): Buffer {
  const b = Buffer.alloc(GETXATTR_OUT_SIZE);
  b.writeUInt32LE(size, 0);
  return b;
}

/** struct fuse_file_lock: a byte range [start, end] (end OFFSET_MAX: to the end of the file) and its holder. */
export interface FileLock {
  start: bigint;
  end: bigint;
  /** F_RDLCK, F_WRLCK or F_UNLCK */
  type: number;
  /** the holder's tgid; 0 when unknown or unlocked */
  pid: number;
}

/** Writes struct fuse_file_lock (24 bytes) at `at`. */
export function encodeFileLock(b: Buffer, at: number, lk: FileLock): void {
  b.writeBigUInt64LE(lk.start, at);
  b.writeBigUInt64LE(lk.end, at + 8);
  b.writeUInt32LE(lk.type, at + 16);
  b.writeUInt32LE(lk.pid, at + 20);
}

/** struct fuse_lk_out (GETLK): the lock that would conflict, or type F_UNLCK. */
export function encodeLkOut(lk: FileLock): Buffer {
  const b = Buffer.alloc(LK_OUT_SIZE);
  encodeFileLock(b, 0, lk);
  return b;
}

/** struct fuse_out_header at the start of `b`: total length, -errno (0 = success), unique. */
export function encodeOutHeader(b: Buffer, len: number, errno: number, unique: bigint): Buffer {
  b.writeUInt32LE(len >>> 0, 0);
  b.writeInt32LE(-errno, 4);
  b.writeBigUInt64LE(unique, 8);
  return b;
}

/** A fresh out header. */
export const outHeader = (len: number, errno: number, unique: bigint): Buffer => encodeOutHeader(Buffer.alloc(OUT_HEADER_SIZE), len, errno, unique);

export { ATTR_SIZE };
