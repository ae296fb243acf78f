// 9P2000.L wire constants and a small, independent codec for the test client.
// Written from the protocol description (Linux include/net/9p/9p.h, the
// 9P2000.L wiki page, diod's protocol.md), deliberately sharing no code with
// the server in protocols/9p so that a symmetric misreading shows up as a
// failing test rather than as two halves that agree with each other.

export const HEADER_SIZE = 7; // size[4] type[1] tag[2]
export const NOTAG = 0xffff;
export const NOFID = 0xffffffff;
export const NONUNAME = 0xffffffff;
export const MAXWELEM = 16;
/** Rread header: size[4] type[1] tag[2] count[4]. */
export const IOHDRSZ_READ = 11;
/**
 * What Linux v9fs and diod reserve for I/O headers (P9_IOHDRSZ): clients size
 * reads and writes as msize - 24; diod refuses larger counts with EIO.
 */
export const IOHDRSZ = 24;
/** Twrite header: size[4] type[1] tag[2] fid[4] offset[8] count[4]. */
export const IOHDRSZ_WRITE = 23;

export const T = {
  lerror: 6,
  Rlerror: 7,
  statfs: 8,
  Rstatfs: 9,
  lopen: 12,
  Rlopen: 13,
  lcreate: 14,
  Rlcreate: 15,
  symlink: 16,
  Rsymlink: 17,
  mknod: 18,
  Rmknod: 19,
  rename: 20,
  Rrename: 21,
  readlink: 22,
  Rreadlink: 23,
  getattr: 24,
  Rgetattr: 25,
  setattr: 26,
  Rsetattr: 27,
  xattrwalk: 30,
  Rxattrwalk: 31,
  xattrcreate: 32,
  Rxattrcreate: 33,
  readdir: 40,
  Rreaddir: 41,
  fsync: 50,
  Rfsync: 51,
  lock: 52,
  Rlock: 53,
  getlock: 54,
  Rgetlock: 55,
  link: 70,
  Rlink: 71,
  mkdir: 72,
  Rmkdir: 73,
  renameat: 74,
  Rrenameat: 75,
  unlinkat: 76,
  Runlinkat: 77,
  version: 100,
  Rversion: 101,
  auth: 102,
  Rauth: 103,
  attach: 104,
  Rattach: 105,
  error: 106,
  Rerror: 107,
  flush: 108,
  Rflush: 109,
  walk: 110,
  Rwalk: 111,
  open: 112,
  Ropen: 113,
  create: 114,
  Rcreate: 115,
  read: 116,
  Rread: 117,
  write: 118,
  Rwrite: 119,
  clunk: 120,
  Rclunk: 121,
  remove: 122,
  Rremove: 123,
  stat: 124,
  Rstat: 125,
  wstat: 126,
  Rwstat: 127,
} as const;

export const QTDIR = 0x80;
export const QTAPPEND = 0x40;
export const QTEXCL = 0x20;
export const QTAUTH = 0x08;
export const QTTMP = 0x04;
export const QTSYMLINK = 0x02;
export const QTFILE = 0x00;

export const GETATTR = {
  MODE: 0x1n,
  NLINK: 0x2n,
  UID: 0x4n,
  GID: 0x8n,
  RDEV: 0x10n,
  ATIME: 0x20n,
  MTIME: 0x40n,
  CTIME: 0x80n,
  INO: 0x100n,
  SIZE: 0x200n,
  BLOCKS: 0x400n,
  BASIC: 0x7ffn,
  BTIME: 0x800n,
  GEN: 0x1000n,
  DATA_VERSION: 0x2000n,
  ALL: 0x3fffn,
} as const;

export const SETATTR = {
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

/** Linux x86 open flags, which is what 9P2000.L's P9_DOTL_* flags are. */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DSYNC: 0o10000,
  DIRECT: 0o40000,
  LARGEFILE: 0o100000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  NOATIME: 0o1000000,
  CLOEXEC: 0o2000000,
  SYNC: 0o4010000,
} as const;

export const LOCK_TYPE = { RDLCK: 0, WRLCK: 1, UNLCK: 2 } as const;
export const LOCK_STATUS = { SUCCESS: 0, BLOCKED: 1, ERROR: 2, GRACE: 3 } as const;
export const LOCK_FLAGS = { BLOCK: 1, RECLAIM: 2 } as const;
export const AT_REMOVEDIR = 0x200;
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

/** Linux errno numbers (x86/generic) and names the tests care about. */
export const ERRNO: Record<string, number> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  EIDRM: 43,
  ENODATA: 61,
  ETIME: 62,
  ENOLINK: 67,
  EPROTO: 71,
  EBADMSG: 74,
  EOVERFLOW: 75,
  EILSEQ: 84,
  EUSERS: 87,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  ESTALE: 116,
  EDQUOT: 122,
  ECANCELED: 125,
};
const ERRNO_NAME = new Map<number, string>(Object.entries(ERRNO).map(([k, v]) => [v, k]));
export function errnoName(n: number): string {
  return ERRNO_NAME.get(n) ?? `E#${n}`;
}

export function typeName(t: number): string {
  for (const [k, v] of Object.entries(T)) if (v === t) return k.startsWith('R') ? k : `T${k}`;
  return `type#${t}`;
}

export interface Qid {
  type: number;
  version: number;
  path: bigint;
}

export type Name = string | Buffer;
export function nameBuf(n: Name): Buffer {
  return typeof n === 'string' ? Buffer.from(n, 'utf8') : n;
}

/** Growable little-endian writer. */
export class Writer {
  private buf = Buffer.allocUnsafe(256);
  private len = 0;
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const nb = Buffer.allocUnsafe(cap);
    this.buf.copy(nb, 0, 0, this.len);
    this.buf = nb;
  }
  u8(v: number): this {
    this.ensure(1);
    this.buf.writeUInt8(v & 0xff, this.len);
    this.len += 1;
    return this;
  }
  u16(v: number): this {
    this.ensure(2);
    this.buf.writeUInt16LE(v & 0xffff, this.len);
    this.len += 2;
    return this;
  }
  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.len);
    this.len += 4;
    return this;
  }
  u64(v: bigint | number): this {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), this.len);
    this.len += 8;
    return this;
  }
  /** string[s]: len[2] then bytes; strings are encoded as UTF-8. */
  str(s: Name): this {
    const b = nameBuf(s);
    this.u16(b.length);
    return this.bytes(b);
  }
  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }
  qid(q: Qid): this {
    return this.u8(q.type).u32(q.version).u64(q.path);
  }
  get length(): number {
    return this.len;
  }
  done(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

export class DecodeError extends Error {}

/** Bounds-checked little-endian reader. */
export class Reader {
  off = 0;
  constructor(readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.off + n > this.buf.length) {
      throw new DecodeError(`truncated: need ${n} bytes at ${this.off}, have ${this.buf.length - this.off}`);
    }
  }
  u8(): number {
    this.need(1);
    const v = this.buf.readUInt8(this.off);
    this.off += 1;
    return v;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.off);
    this.off += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.off);
    this.off += 8;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  strBuf(): Buffer {
    return this.bytes(this.u16());
  }
  str(): string {
    return this.strBuf().toString('utf8');
  }
  qid(): Qid {
    return { type: this.u8(), version: this.u32(), path: this.u64() };
  }
  get remaining(): number {
    return this.buf.length - this.off;
  }
  end(): void {
    if (this.off !== this.buf.length) throw new DecodeError(`${this.buf.length - this.off} trailing bytes`);
  }
}

/** A complete frame: size[4] type[1] tag[2] body. */
export function frame(type: number, tag: number, body: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(HEADER_SIZE + body.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt8(type, 4);
  b.writeUInt16LE(tag, 5);
  b.set(body, HEADER_SIZE);
  return b;
}

export interface DirEntry {
  qid: Qid;
  offset: bigint;
  type: number;
  name: Buffer;
}

/** Parses Rreaddir data: qid[13] offset[8] type[1] name[s] repeated. */
export function parseDirents(data: Buffer): DirEntry[] {
  const r = new Reader(data);
  const out: DirEntry[] = [];
  while (r.remaining > 0) out.push({ qid: r.qid(), offset: r.u64(), type: r.u8(), name: r.strBuf() });
  return out;
}

export interface Attr {
  valid: bigint;
  qid: Qid;
  mode: number;
  uid: number;
  gid: number;
  nlink: bigint;
  rdev: bigint;
  size: bigint;
  blksize: bigint;
  blocks: bigint;
  atimeSec: bigint;
  atimeNsec: bigint;
  mtimeSec: bigint;
  mtimeNsec: bigint;
  ctimeSec: bigint;
  ctimeNsec: bigint;
  btimeSec: bigint;
  btimeNsec: bigint;
  gen: bigint;
  dataVersion: bigint;
}

export function parseAttr(r: Reader): Attr {
  return {
    valid: r.u64(),
    qid: r.qid(),
    mode: r.u32(),
    uid: r.u32(),
    gid: r.u32(),
    nlink: r.u64(),
    rdev: r.u64(),
    size: r.u64(),
    blksize: r.u64(),
    blocks: r.u64(),
    atimeSec: r.u64(),
    atimeNsec: r.u64(),
    mtimeSec: r.u64(),
    mtimeNsec: r.u64(),
    ctimeSec: r.u64(),
    ctimeNsec: r.u64(),
    btimeSec: r.u64(),
    btimeNsec: r.u64(),
    gen: r.u64(),
    dataVersion: r.u64(),
  };
}

export interface Statfs {
  type: number;
  bsize: number;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  fsid: bigint;
  namelen: number;
}

export interface SetattrArgs {
  valid: number;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: bigint | number;
  atimeSec?: bigint | number;
  atimeNsec?: bigint | number;
  mtimeSec?: bigint | number;
  mtimeNsec?: bigint | number;
}

export interface LockArgs {
  type: number;
  flags?: number;
  start?: bigint | number;
  length?: bigint | number;
  procId?: number;
  clientId?: Name;
}

export interface LockInfo {
  type: number;
  start: bigint;
  length: bigint;
  procId: number;
  clientId: string;
}
