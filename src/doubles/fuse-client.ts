// A small FUSE client for driver-level tests: it encodes requests (the
// kernel's wire format, linux/fuse.h 7.38/7.39), puts them on a virtio-fs
// request queue through the test frontend (the real vhost-user path), and
// decodes the replies. An error reply surfaces as a FuseError carrying the
// errno and its name. Every reply is checked against the protocol (used
// length = out header length, matching unique); mismatches are recorded in
// `violations` and fail the call, so a test cannot quietly accept a
// malformed reply.
import { errnoName } from '../sys/index.js';
import type { Completion, VhostUserFrontend } from './vhost-user-frontend.js';

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

export const ROOT = 1n;
export const IN_HEADER = 40;
export const OUT_HEADER = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT = 40 + ATTR_SIZE;
export const ATTR_OUT = 16 + ATTR_SIZE;
export const STATX_OUT = 32 + 256;

export const INIT_FLAGS = {
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
  INIT_RESERVED: 1n << 31n,
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  CREATE_SUPP_GROUP: 1n << 34n,
} as const;

/** Every INIT flag a 7.38 kernel can offer (what a modern guest sends). */
export const ALL_INIT_FLAGS = Object.values(INIT_FLAGS).reduce((a, b) => a | b, 0n) & ~INIT_FLAGS.INIT_RESERVED;

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

export const FOPEN = { DIRECT_IO: 1, KEEP_CACHE: 2, NONSEEKABLE: 4, CACHE_DIR: 8, PARALLEL_DIRECT_WRITES: 64 } as const;
export const FUSE_GETATTR_FH = 1;
export const FUSE_LK_FLOCK = 1;
export const FUSE_WRITE_KILL_SUIDGID = 4;
export const FUSE_OPEN_KILL_SUIDGID = 1;
export const FUSE_RELEASE_FLUSH = 1;
export const FUSE_RELEASE_FLOCK_UNLOCK = 2;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
export const OFFSET_MAX = 0x7fffffffffffffffn;
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const RENAME_WHITEOUT = 4;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;

export class FuseError extends Error {
  /** the errno's name, e.g. "ENOENT" */
  readonly code: string;
  constructor(
    readonly errno: number,
    readonly op: string,
    readonly unique: bigint,
  ) {
    super(`${op}: ${errnoName(errno)} (${errno})`);
    this.name = 'FuseError';
    this.code = errnoName(errno);
  }
}

export class FuseProtocolError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'FuseProtocolError';
  }
}

// ---- decoded structures ---------------------------------------------------------

export interface Attr {
  ino: bigint;
  size: bigint;
  blocks: bigint;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  atimensec: number;
  mtimensec: number;
  ctimensec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
  flags: number;
}

export interface EntryOut {
  nodeid: bigint;
  generation: bigint;
  entryValid: bigint;
  attrValid: bigint;
  attr: Attr;
}

export interface AttrOut {
  attrValid: bigint;
  attr: Attr;
}

export interface OpenOut {
  fh: bigint;
  openFlags: number;
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: bigint;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
  mapAlignment: number;
  /** bytes of fuse_init_out in the reply */
  size: number;
}

export interface Dirent {
  ino: bigint;
  off: bigint;
  type: number;
  name: Buffer;
}

export interface DirentPlus extends Dirent {
  entry: EntryOut;
}

export interface Statfs {
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  bsize: number;
  namelen: number;
  frsize: number;
}

export interface FileLock {
  start: bigint;
  end: bigint;
  type: number;
  pid: number;
}

export interface StatxTime {
  sec: bigint;
  nsec: number;
}

export interface Statx {
  attrValid: bigint;
  flags: number;
  mask: number;
  blksize: number;
  attributes: bigint;
  nlink: number;
  uid: number;
  gid: number;
  mode: number;
  ino: bigint;
  size: bigint;
  blocks: bigint;
  atime: StatxTime;
  btime: StatxTime;
  ctime: StatxTime;
  mtime: StatxTime;
  rdevMajor: number;
  rdevMinor: number;
}

export interface SetattrIn {
  valid: number;
  fh?: bigint;
  size?: bigint;
  lockOwner?: bigint;
  atime?: bigint;
  mtime?: bigint;
  ctime?: bigint;
  atimensec?: number;
  mtimensec?: number;
  mode?: number;
  uid?: number;
  gid?: number;
}

export function parseAttr(b: Buffer, at = 0): Attr {
  return {
    ino: b.readBigUInt64LE(at),
    size: b.readBigUInt64LE(at + 8),
    blocks: b.readBigUInt64LE(at + 16),
    atime: b.readBigInt64LE(at + 24),
    mtime: b.readBigInt64LE(at + 32),
    ctime: b.readBigInt64LE(at + 40),
    atimensec: b.readUInt32LE(at + 48),
    mtimensec: b.readUInt32LE(at + 52),
    ctimensec: b.readUInt32LE(at + 56),
    mode: b.readUInt32LE(at + 60),
    nlink: b.readUInt32LE(at + 64),
    uid: b.readUInt32LE(at + 68),
    gid: b.readUInt32LE(at + 72),
    rdev: b.readUInt32LE(at + 76),
    blksize: b.readUInt32LE(at + 80),
    flags: b.readUInt32LE(at + 84),
  };
}

export function parseEntry(b: Buffer, at = 0): EntryOut {
  return {
    nodeid: b.readBigUInt64LE(at),
    generation: b.readBigUInt64LE(at + 8),
    entryValid: b.readBigUInt64LE(at + 16),
    attrValid: b.readBigUInt64LE(at + 24),
    attr: parseAttr(b, at + 40),
  };
}

export function parseAttrOut(b: Buffer): AttrOut {
  return { attrValid: b.readBigUInt64LE(0), attr: parseAttr(b, 16) };
}

export function parseOpen(b: Buffer, at = 0): OpenOut {
  return { fh: b.readBigUInt64LE(at), openFlags: b.readUInt32LE(at + 8) };
}

export function parseInit(b: Buffer): InitOut {
  const full = b.length >= 64;
  return {
    major: b.readUInt32LE(0),
    minor: b.readUInt32LE(4),
    maxReadahead: b.readUInt32LE(8),
    flags: BigInt(b.readUInt32LE(12)) | (full ? BigInt(b.readUInt32LE(32)) << 32n : 0n),
    maxBackground: b.readUInt16LE(16),
    congestionThreshold: b.readUInt16LE(18),
    maxWrite: b.readUInt32LE(20),
    timeGran: b.length >= 28 ? b.readUInt32LE(24) : 0,
    maxPages: full ? b.readUInt16LE(28) : 0,
    mapAlignment: full ? b.readUInt16LE(30) : 0,
    size: b.length,
  };
}

/** fuse_dirent records (READDIR). */
export function parseDirents(b: Buffer): Dirent[] {
  const out: Dirent[] = [];
  let at = 0;
  while (at < b.length) {
    if (at + 24 > b.length) throw new FuseProtocolError(`dirent header at ${at} runs past ${b.length} bytes`);
    const namelen = b.readUInt32LE(at + 16);
    if (at + 24 + namelen > b.length) throw new FuseProtocolError(`dirent name at ${at} runs past ${b.length} bytes`);
    out.push({
      ino: b.readBigUInt64LE(at),
      off: b.readBigUInt64LE(at + 8),
      type: b.readUInt32LE(at + 20),
      name: Buffer.from(b.subarray(at + 24, at + 24 + namelen)),
    });
    at += (24 + namelen + 7) & ~7;
  }
  return out;
}

/** fuse_direntplus records (READDIRPLUS). */
export function parseDirentsPlus(b: Buffer): DirentPlus[] {
  const out: DirentPlus[] = [];
  let at = 0;
  while (at < b.length) {
    if (at + ENTRY_OUT + 24 > b.length) throw new FuseProtocolError(`direntplus at ${at} runs past ${b.length} bytes`);
    const entry = parseEntry(b, at);
    const d = at + ENTRY_OUT;
    const namelen = b.readUInt32LE(d + 16);
    if (d + 24 + namelen > b.length) throw new FuseProtocolError(`direntplus name at ${at} runs past ${b.length} bytes`);
    out.push({
      entry,
      ino: b.readBigUInt64LE(d),
      off: b.readBigUInt64LE(d + 8),
      type: b.readUInt32LE(d + 20),
      name: Buffer.from(b.subarray(d + 24, d + 24 + namelen)),
    });
    at += (ENTRY_OUT + 24 + namelen + 7) & ~7;
  }
  return out;
}

export function parseStatfs(b: Buffer): Statfs {
  return {
    blocks: b.readBigUInt64LE(0),
    bfree: b.readBigUInt64LE(8),
    bavail: b.readBigUInt64LE(16),
    files: b.readBigUInt64LE(24),
    ffree: b.readBigUInt64LE(32),
    bsize: b.readUInt32LE(40),
    namelen: b.readUInt32LE(44),
    frsize: b.readUInt32LE(48),
  };
}

export function parseLock(b: Buffer): FileLock {
  return { start: b.readBigUInt64LE(0), end: b.readBigUInt64LE(8), type: b.readUInt32LE(16), pid: b.readUInt32LE(20) };
}

export function parseStatx(b: Buffer): Statx {
  const x = 32;
  const t = (at: number): StatxTime => ({ sec: b.readBigInt64LE(at), nsec: b.readUInt32LE(at + 8) });
  return {
    attrValid: b.readBigUInt64LE(0),
    flags: b.readUInt32LE(12),
    mask: b.readUInt32LE(x),
    blksize: b.readUInt32LE(x + 4),
    attributes: b.readBigUInt64LE(x + 8),
    nlink: b.readUInt32LE(x + 16),
    uid: b.readUInt32LE(x + 20),
    gid: b.readUInt32LE(x + 24),
    mode: b.readUInt16LE(x + 28),
    ino: b.readBigUInt64LE(x + 32),
    size: b.readBigUInt64LE(x + 40),
    blocks: b.readBigUInt64LE(x + 48),
    atime: t(x + 64),
    btime: t(x + 80),
    ctime: t(x + 96),
    mtime: t(x + 112),
    rdevMajor: b.readUInt32LE(x + 128),
    rdevMinor: b.readUInt32LE(x + 132),
  };
}

// ---- encoding ------------------------------------------------------------------------

const u32 = (...v: number[]): Buffer => {
  const b = Buffer.alloc(4 * v.length);
  v.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i));
  return b;
};
const u64 = (...v: bigint[]): Buffer => {
  const b = Buffer.alloc(8 * v.length);
  v.forEach((x, i) => b.writeBigUInt64LE(BigInt.asUintN(64, x), 8 * i));
  return b;
};
/**
 * The security context extension the kernel adds to CREATE, MKDIR, MKNOD
 * and SYMLINK with FUSE_SECURITY_CTX (fs/fuse/dir.c get_security_context):
 * fuse_secctx_header (size, nr_secctx), fuse_secctx (size, padding), the
 * xattr name with its NUL, the context; padded to 8 bytes. No name: none.
 */
export function secctxExt(name?: string, value?: Buffer): Buffer {
  const body = name === undefined ? Buffer.alloc(0) : Buffer.concat([u32(value!.length, 0), cstr(name), value!]);
  const size = (8 + body.length + 7) & ~7;
  const b = Buffer.alloc(size);
  b.writeUInt32LE(size, 0);
  b.writeUInt32LE(name === undefined ? 0 : 1, 4);
  body.copy(b, 8);
  return b;
}

/** A name as the kernel sends it: bytes then NUL. */
export const cstr = (s: string | Buffer): Buffer => Buffer.concat([typeof s === 'string' ? Buffer.from(s) : s, Buffer.from([0])]);

export interface Caller {
  uid?: number;
  gid?: number;
  pid?: number;
}

export function inHeader(len: number, opcode: number, unique: bigint, nodeid: bigint, c: Caller = {}): Buffer {
  const h = Buffer.alloc(IN_HEADER);
  h.writeUInt32LE(len >>> 0, 0);
  h.writeUInt32LE(opcode >>> 0, 4);
  h.writeBigUInt64LE(unique, 8);
  h.writeBigUInt64LE(BigInt.asUintN(64, nodeid), 16);
  h.writeUInt32LE(c.uid ?? 0, 24);
  h.writeUInt32LE(c.gid ?? 0, 28);
  h.writeUInt32LE(c.pid ?? 4242, 32);
  return h;
}

/** fuse_init_in for protocol 7.`minor` offering `flags` (INIT_EXT puts the high half in flags2). */
export function initIn(o: { major?: number; minor?: number; maxReadahead?: number; flags?: bigint } = {}): Buffer {
  const b = Buffer.alloc(64);
  const flags = o.flags ?? ALL_INIT_FLAGS;
  b.writeUInt32LE(o.major ?? 7, 0);
  b.writeUInt32LE(o.minor ?? 38, 4);
  b.writeUInt32LE(o.maxReadahead ?? 128 * 1024, 8);
  b.writeUInt32LE(Number(flags & 0xffffffffn), 12);
  b.writeUInt32LE(Number((flags >> 32n) & 0xffffffffn), 16);
  return b;
}

export function setattrIn(s: SetattrIn): Buffer {
  const b = Buffer.alloc(88);
  b.writeUInt32LE(s.valid >>> 0, 0);
  b.writeBigUInt64LE(s.fh ?? 0n, 8);
  b.writeBigUInt64LE(s.size ?? 0n, 16);
  b.writeBigUInt64LE(s.lockOwner ?? 0n, 24);
  b.writeBigUInt64LE(BigInt.asUintN(64, s.atime ?? 0n), 32);
  b.writeBigUInt64LE(BigInt.asUintN(64, s.mtime ?? 0n), 40);
  b.writeBigUInt64LE(BigInt.asUintN(64, s.ctime ?? 0n), 48);
  b.writeUInt32LE(s.atimensec ?? 0, 56);
  b.writeUInt32LE(s.mtimensec ?? 0, 60);
  b.writeUInt32LE(s.mode ?? 0, 68);
  b.writeUInt32LE(s.uid ?? 0, 76);
  b.writeUInt32LE(s.gid ?? 0, 80);
  return b;
}

export function lkIn(fh: bigint, owner: bigint, lk: { start?: bigint; end?: bigint; type: number; pid?: number }, lkFlags = 0): Buffer {
  const b = Buffer.alloc(48);
  b.writeBigUInt64LE(fh, 0);
  b.writeBigUInt64LE(owner, 8);
  b.writeBigUInt64LE(lk.start ?? 0n, 16);
  b.writeBigUInt64LE(lk.end ?? OFFSET_MAX, 24);
  b.writeUInt32LE(lk.type, 32);
  b.writeUInt32LE(lk.pid ?? 4242, 36);
  b.writeUInt32LE(lkFlags, 40);
  return b;
}

// ---- the client ---------------------------------------------------------------------------

export interface Reply {
  unique: bigint;
  /** negative errno as sent (0 = success) */
  error: number;
  /** the reply body after the out header */
  body: Buffer;
  /** bytes the device reported in the used ring */
  usedLen: number;
  /** the out header's len field */
  headerLen: number;
}

export interface SendOptions extends Caller {
  /** request queue (default: the client's queue) */
  queue?: number;
  /** nodeid in the header (default 0) */
  nodeid?: bigint;
  /** device-writable buffer sizes (default [16, replySize]) */
  in?: number[];
  /** how to split the request bytes into readable descriptors (sizes); default header | args */
  split?: number[];
  indirect?: boolean;
  /** override the unique */
  unique?: bigint;
  /** override the header's len field */
  len?: number;
  /** fail when no reply comes within this many ms (default: the client's timeoutMs) */
  timeoutMs?: number;
  /** request extensions after the arguments (8-byte records; total_extlen says how many units) */
  ext?: Buffer;
}

export interface Sent {
  unique: bigint;
  reply: Promise<Reply>;
}

/** Splits `data` into consecutive pieces of the given sizes (the last piece takes the rest). */
export function splitBytes(data: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const s of sizes) {
    if (at >= data.length) break;
    out.push(data.subarray(at, Math.min(data.length, at + s)));
    at += s;
  }
  if (at < data.length) out.push(data.subarray(at));
  return out;
}

export class FuseClient {
  private nextUnique = 1n;
  /** protocol violations seen in replies */
  readonly violations: string[] = [];
  /** default caller credentials for new requests */
  caller: Caller = { uid: 0, gid: 0 };
  init?: InitOut;
  /** a reply that does not come within this many ms fails the call (a hang is a failure) */
  timeoutMs = 5000;

  /** node id of each open handle, for the header of handle operations (the kernel sends it; virtiofsd needs it) */
  private readonly fhNodes = new Map<bigint, bigint>();

  constructor(
    readonly fe: VhostUserFrontend,
    readonly queue = 1,
  ) {}

  /** The node id a kernel would put in the header of a request on handle `fh` (0 for a handle never opened). */
  nodeOf(fh: bigint): bigint {
    return this.fhNodes.get(fh) ?? 0n;
  }

  private opened(fh: bigint, nodeid: bigint): void {
    this.fhNodes.set(fh, nodeid);
  }

  takeUnique(): bigint {
    const u = this.nextUnique;
    this.nextUnique += 2n; // the kernel's uniques are even-spaced too (interrupts use unique|1)
    return u;
  }

  /** Puts one request on a queue; `args` are the bytes after the in header. */
  send(opcode: number, args: Buffer[], o: SendOptions = {}): Sent {
    const unique = o.unique ?? this.takeUnique();
    if (o.ext) args = [...args, o.ext];
    const argLen = args.reduce((n, a) => n + a.length, 0);
    const header = inHeader(o.len ?? IN_HEADER + argLen, opcode, unique, o.nodeid ?? 0n, { ...this.caller, ...o });
    if (o.ext) header.writeUInt16LE(o.ext.length / 8, 36); // total_extlen
    const whole = Buffer.concat([header, ...args]);
    const out = o.split ? splitBytes(whole, o.split) : argLen > 0 ? [header, Buffer.concat(args)] : [header];
    const completion = this.fe.request(o.queue ?? this.queue, { out, in: o.in ?? [OUT_HEADER, 4096], indirect: o.indirect ?? false });
    const what = `${opName(opcode)} unique ${unique}`;
    return { unique, reply: deadline(completion, o.timeoutMs ?? this.timeoutMs, `no reply to ${what}`).then((c) => this.decode(opcode, unique, c)) };
  }

  private decode(opcode: number, unique: bigint, c: Completion): Reply {
    if (c.len < OUT_HEADER) {
      const v = `opcode ${opcode} unique ${unique}: used length ${c.len} is shorter than an out header`;
      this.violations.push(v);
      throw new FuseProtocolError(v);
    }
    const headerLen = c.data.readUInt32LE(0);
    const error = c.data.readInt32LE(4);
    const u = c.data.readBigUInt64LE(8);
    const problems: string[] = [];
    if (u !== unique) problems.push(`unique ${u} (sent ${unique})`);
    if (headerLen !== c.len) problems.push(`out header len ${headerLen} but used length ${c.len}`);
    if (error > 0 || error < -4095) problems.push(`error field ${error}`);
    if (error !== 0 && headerLen !== OUT_HEADER) problems.push(`error reply of ${headerLen} bytes`);
    if (problems.length) {
      const v = `opcode ${opcode} unique ${unique}: ${problems.join(', ')}`;
      this.violations.push(v);
      throw new FuseProtocolError(v);
    }
    return { unique, error, body: c.data.subarray(OUT_HEADER, c.len), usedLen: c.len, headerLen };
  }

  /** Sends and waits; an error reply throws FuseError. */
  async call(opcode: number, args: Buffer[], o: SendOptions = {}): Promise<Buffer> {
    const r = await this.send(opcode, args, o).reply;
    if (r.error) throw new FuseError(-r.error, opName(opcode), r.unique);
    return r.body;
  }

  /** Sends a request that gets no reply (FORGET, BATCH_FORGET, INTERRUPT) on the hiprio queue; resolves with the used length. */
  async noReply(opcode: number, args: Buffer[], o: SendOptions = {}): Promise<number> {
    const unique = o.unique ?? this.takeUnique();
    const argLen = args.reduce((n, a) => n + a.length, 0);
    const header = inHeader(o.len ?? IN_HEADER + argLen, opcode, unique, o.nodeid ?? 0n, { ...this.caller, ...o });
    const whole = Buffer.concat([header, ...args]);
    const out = o.split ? splitBytes(whole, o.split) : argLen > 0 ? [header, Buffer.concat(args)] : [header];
    const c = await deadline(
      this.fe.request(o.queue ?? 0, { out, in: o.in ?? [], indirect: o.indirect ?? false }),
      o.timeoutMs ?? this.timeoutMs,
      `${opName(opcode)} unique ${unique} was never returned to the driver`,
    );
    return c.len;
  }

  private static expectSize(op: string, b: Buffer, n: number): Buffer {
    if (b.length !== n) throw new FuseProtocolError(`${op}: reply body of ${b.length} bytes, expected ${n}`);
    return b;
  }

  // ---- session ---------------------------------------------------------------------

  async doInit(o: Parameters<typeof initIn>[0] = {}, so: SendOptions = {}): Promise<InitOut> {
    const b = await this.call(OP.INIT, [initIn(o)], { in: [OUT_HEADER, 64], ...so });
    this.init = parseInit(b);
    return this.init;
  }

  async destroy(o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize('DESTROY', await this.call(OP.DESTROY, [], { in: [OUT_HEADER], ...o }), 0);
  }

  // ---- names -------------------------------------------------------------------------

  async lookup(parent: bigint, name: string | Buffer, o: SendOptions = {}): Promise<EntryOut> {
    return parseEntry(
      FuseClient.expectSize('LOOKUP', await this.call(OP.LOOKUP, [cstr(name)], { nodeid: parent, in: [OUT_HEADER, ENTRY_OUT], ...o }), ENTRY_OUT),
    );
  }

  forget(nodeid: bigint, nlookup: bigint, o: SendOptions = {}): Promise<number> {
    return this.noReply(OP.FORGET, [u64(nlookup)], { nodeid, ...o });
  }

  batchForget(items: [bigint, bigint][], o: SendOptions & { count?: number } = {}): Promise<number> {
    const head = u32(o.count ?? items.length, 0);
    return this.noReply(OP.BATCH_FORGET, [head, ...items.map(([n, c]) => u64(n, c))], o);
  }

  async getattr(nodeid: bigint, fh?: bigint, o: SendOptions = {}): Promise<AttrOut> {
    const args = Buffer.concat([u32(fh === undefined ? 0 : FUSE_GETATTR_FH, 0), u64(fh ?? 0n)]);
    return parseAttrOut(
      FuseClient.expectSize('GETATTR', await this.call(OP.GETATTR, [args], { nodeid, in: [OUT_HEADER, ATTR_OUT], ...o }), ATTR_OUT),
    );
  }

  async setattr(nodeid: bigint, s: SetattrIn, o: SendOptions = {}): Promise<AttrOut> {
    return parseAttrOut(
      FuseClient.expectSize('SETATTR', await this.call(OP.SETATTR, [setattrIn(s)], { nodeid, in: [OUT_HEADER, ATTR_OUT], ...o }), ATTR_OUT),
    );
  }

  async statx(nodeid: bigint, fh?: bigint, o: SendOptions & { sxMask?: number } = {}): Promise<Statx> {
    const args = Buffer.concat([u32(fh === undefined ? 0 : FUSE_GETATTR_FH, 0), u64(fh ?? 0n), u32(0, o.sxMask ?? 0xfff)]);
    return parseStatx(FuseClient.expectSize('STATX', await this.call(OP.STATX, [args], { nodeid, in: [OUT_HEADER, STATX_OUT], ...o }), STATX_OUT));
  }

  async readlink(nodeid: bigint, o: SendOptions = {}): Promise<Buffer> {
    return this.call(OP.READLINK, [], { nodeid, ...o });
  }

  async symlink(parent: bigint, name: string | Buffer, target: string | Buffer, o: SendOptions = {}): Promise<EntryOut> {
    return parseEntry(
      FuseClient.expectSize(
        'SYMLINK',
        await this.call(OP.SYMLINK, [cstr(name), cstr(target)], { nodeid: parent, in: [OUT_HEADER, ENTRY_OUT], ...o }),
        ENTRY_OUT,
      ),
    );
  }

  async mknod(parent: bigint, name: string | Buffer, mode: number, rdev = 0, o: SendOptions & { umask?: number } = {}): Promise<EntryOut> {
    const args = Buffer.concat([u32(mode, rdev, o.umask ?? 0, 0), cstr(name)]);
    return parseEntry(
      FuseClient.expectSize('MKNOD', await this.call(OP.MKNOD, [args], { nodeid: parent, in: [OUT_HEADER, ENTRY_OUT], ...o }), ENTRY_OUT),
    );
  }

  async mkdir(parent: bigint, name: string | Buffer, mode = 0o755, o: SendOptions & { umask?: number } = {}): Promise<EntryOut> {
    const args = Buffer.concat([u32(mode, o.umask ?? 0), cstr(name)]);
    return parseEntry(
      FuseClient.expectSize('MKDIR', await this.call(OP.MKDIR, [args], { nodeid: parent, in: [OUT_HEADER, ENTRY_OUT], ...o }), ENTRY_OUT),
    );
  }

  async unlink(parent: bigint, name: string | Buffer, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize('UNLINK', await this.call(OP.UNLINK, [cstr(name)], { nodeid: parent, in: [OUT_HEADER], ...o }), 0);
  }

  async rmdir(parent: bigint, name: string | Buffer, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize('RMDIR', await this.call(OP.RMDIR, [cstr(name)], { nodeid: parent, in: [OUT_HEADER], ...o }), 0);
  }

  async rename(parent: bigint, oldName: string | Buffer, newdir: bigint, newName: string | Buffer, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize(
      'RENAME',
      await this.call(OP.RENAME, [u64(newdir), cstr(oldName), cstr(newName)], { nodeid: parent, in: [OUT_HEADER], ...o }),
      0,
    );
  }

  async rename2(
    parent: bigint,
    oldName: string | Buffer,
    newdir: bigint,
    newName: string | Buffer,
    flags: number,
    o: SendOptions = {},
  ): Promise<void> {
    FuseClient.expectSize(
      'RENAME2',
      await this.call(OP.RENAME2, [u64(newdir), u32(flags, 0), cstr(oldName), cstr(newName)], { nodeid: parent, in: [OUT_HEADER], ...o }),
      0,
    );
  }

  async link(oldNodeid: bigint, newParent: bigint, name: string | Buffer, o: SendOptions = {}): Promise<EntryOut> {
    return parseEntry(
      FuseClient.expectSize(
        'LINK',
        await this.call(OP.LINK, [u64(oldNodeid), cstr(name)], { nodeid: newParent, in: [OUT_HEADER, ENTRY_OUT], ...o }),
        ENTRY_OUT,
      ),
    );
  }

  // ---- files ---------------------------------------------------------------------------

  /** OPEN; `openFlags` is fuse_open_in.open_flags (FUSE_OPEN_KILL_SUIDGID). */
  async open(nodeid: bigint, flags: number, o: SendOptions & { openFlags?: number } = {}): Promise<OpenOut> {
    const r = parseOpen(
      FuseClient.expectSize('OPEN', await this.call(OP.OPEN, [u32(flags, o.openFlags ?? 0)], { nodeid, in: [OUT_HEADER, 16], ...o }), 16),
    );
    this.opened(r.fh, nodeid);
    return r;
  }

  async create(
    parent: bigint,
    name: string | Buffer,
    flags: number,
    mode = 0o644,
    o: SendOptions & { umask?: number; openFlags?: number } = {},
  ): Promise<{ entry: EntryOut; open: OpenOut }> {
    const args = Buffer.concat([u32(flags, mode, o.umask ?? 0, o.openFlags ?? 0), cstr(name)]);
    const b = FuseClient.expectSize(
      'CREATE',
      await this.call(OP.CREATE, [args], { nodeid: parent, in: [OUT_HEADER, ENTRY_OUT + 16], ...o }),
      ENTRY_OUT + 16,
    );
    const r = { entry: parseEntry(b), open: parseOpen(b, ENTRY_OUT) };
    this.opened(r.open.fh, r.entry.nodeid);
    return r;
  }

  async tmpfile(parent: bigint, flags: number, mode = 0o600, o: SendOptions = {}): Promise<{ entry: EntryOut; open: OpenOut }> {
    const b = FuseClient.expectSize(
      'TMPFILE',
      await this.call(OP.TMPFILE, [u32(flags, mode, 0, 0)], { nodeid: parent, in: [OUT_HEADER, ENTRY_OUT + 16], ...o }),
      ENTRY_OUT + 16,
    );
    const r = { entry: parseEntry(b), open: parseOpen(b, ENTRY_OUT) };
    this.opened(r.open.fh, r.entry.nodeid);
    return r;
  }

  readIn(fh: bigint, offset: bigint, size: number): Buffer {
    const b = Buffer.alloc(40);
    b.writeBigUInt64LE(fh, 0);
    b.writeBigUInt64LE(offset, 8);
    b.writeUInt32LE(size >>> 0, 16);
    return b;
  }

  /** READ; `inSizes` lays out the writable descriptors (default: header + one buffer of `size`). */
  async read(fh: bigint, offset: bigint, size: number, o: SendOptions = {}): Promise<Buffer> {
    return this.call(OP.READ, [this.readIn(fh, offset, size)], { nodeid: this.nodeOf(fh), in: [OUT_HEADER, Math.max(size, 1)], ...o });
  }

  writeIn(fh: bigint, offset: bigint, size: number, writeFlags = 0): Buffer {
    const b = Buffer.alloc(40);
    b.writeBigUInt64LE(fh, 0);
    b.writeBigUInt64LE(offset, 8);
    b.writeUInt32LE(size >>> 0, 16);
    b.writeUInt32LE(writeFlags, 20);
    return b;
  }

  /** WRITE; `split` lays the whole request (header, write_in, data) over readable descriptors. */
  async write(fh: bigint, offset: bigint, data: Buffer, o: SendOptions & { writeFlags?: number; size?: number } = {}): Promise<number> {
    const b = FuseClient.expectSize(
      'WRITE',
      await this.call(OP.WRITE, [this.writeIn(fh, offset, o.size ?? data.length, o.writeFlags ?? 0), data], {
        nodeid: this.nodeOf(fh),
        in: [OUT_HEADER, 8],
        split: o.split ?? [IN_HEADER, 40, data.length],
        ...o,
      }),
      8,
    );
    return b.readUInt32LE(0);
  }

  async statfs(nodeid: bigint, o: SendOptions = {}): Promise<Statfs> {
    return parseStatfs(FuseClient.expectSize('STATFS', await this.call(OP.STATFS, [], { nodeid, in: [OUT_HEADER, 80], ...o }), 80));
  }

  async release(fh: bigint, o: SendOptions & { flags?: number; releaseFlags?: number; lockOwner?: bigint; opcode?: number } = {}): Promise<void> {
    const args = Buffer.concat([u64(fh), u32(o.flags ?? 0, o.releaseFlags ?? 0), u64(o.lockOwner ?? 0n)]);
    FuseClient.expectSize('RELEASE', await this.call(o.opcode ?? OP.RELEASE, [args], { nodeid: this.nodeOf(fh), in: [OUT_HEADER], ...o }), 0);
    this.fhNodes.delete(fh);
  }

  releasedir(fh: bigint, o: SendOptions = {}): Promise<void> {
    return this.release(fh, { ...o, opcode: OP.RELEASEDIR });
  }

  async flush(fh: bigint, lockOwner: bigint, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize(
      'FLUSH',
      await this.call(OP.FLUSH, [Buffer.concat([u64(fh), u32(0, 0), u64(lockOwner)])], { nodeid: this.nodeOf(fh), in: [OUT_HEADER], ...o }),
      0,
    );
  }

  async fsync(fh: bigint, datasync = false, o: SendOptions & { opcode?: number } = {}): Promise<void> {
    FuseClient.expectSize(
      'FSYNC',
      await this.call(o.opcode ?? OP.FSYNC, [Buffer.concat([u64(fh), u32(datasync ? 1 : 0, 0)])], {
        nodeid: this.nodeOf(fh),
        in: [OUT_HEADER],
        ...o,
      }),
      0,
    );
  }

  fsyncdir(fh: bigint, datasync = false, o: SendOptions = {}): Promise<void> {
    return this.fsync(fh, datasync, { ...o, opcode: OP.FSYNCDIR });
  }

  async fallocate(fh: bigint, offset: bigint, length: bigint, mode = 0, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize(
      'FALLOCATE',
      await this.call(OP.FALLOCATE, [Buffer.concat([u64(fh, offset, length), u32(mode, 0)])], { nodeid: this.nodeOf(fh), in: [OUT_HEADER], ...o }),
      0,
    );
  }

  async lseek(fh: bigint, offset: bigint, whence: number, o: SendOptions = {}): Promise<bigint> {
    const b = FuseClient.expectSize(
      'LSEEK',
      await this.call(OP.LSEEK, [Buffer.concat([u64(fh, offset), u32(whence, 0)])], { nodeid: this.nodeOf(fh), in: [OUT_HEADER, 8], ...o }),
      8,
    );
    return b.readBigUInt64LE(0);
  }

  async copyFileRange(
    fhIn: bigint,
    offIn: bigint,
    nodeOut: bigint,
    fhOut: bigint,
    offOut: bigint,
    len: bigint,
    flags = 0n,
    o: SendOptions = {},
  ): Promise<number> {
    const b = FuseClient.expectSize(
      'COPY_FILE_RANGE',
      await this.call(OP.COPY_FILE_RANGE, [u64(fhIn, offIn, nodeOut, fhOut, offOut, len, flags)], {
        nodeid: this.nodeOf(fhIn),
        in: [OUT_HEADER, 8],
        ...o,
      }),
      8,
    );
    return b.readUInt32LE(0);
  }

  async syncfs(nodeid: bigint = ROOT, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize('SYNCFS', await this.call(OP.SYNCFS, [u64(0n)], { nodeid, in: [OUT_HEADER], ...o }), 0);
  }

  async access(nodeid: bigint, mask: number, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize('ACCESS', await this.call(OP.ACCESS, [u32(mask, 0)], { nodeid, in: [OUT_HEADER], ...o }), 0);
  }

  // ---- directories -------------------------------------------------------------------------

  async opendir(nodeid: bigint, o: SendOptions = {}): Promise<OpenOut> {
    const r = parseOpen(FuseClient.expectSize('OPENDIR', await this.call(OP.OPENDIR, [u32(0, 0)], { nodeid, in: [OUT_HEADER, 16], ...o }), 16));
    this.opened(r.fh, nodeid);
    return r;
  }

  async readdirRaw(fh: bigint, offset: bigint, size: number, plus: boolean, o: SendOptions = {}): Promise<Buffer> {
    return this.call(plus ? OP.READDIRPLUS : OP.READDIR, [this.readIn(fh, offset, size)], { nodeid: this.nodeOf(fh), in: [OUT_HEADER, size], ...o });
  }

  async readdir(fh: bigint, offset: bigint, size = 4096, o: SendOptions = {}): Promise<Dirent[]> {
    return parseDirents(await this.readdirRaw(fh, offset, size, false, o));
  }

  async readdirplus(fh: bigint, offset: bigint, size = 4096, o: SendOptions = {}): Promise<DirentPlus[]> {
    return parseDirentsPlus(await this.readdirRaw(fh, offset, size, true, o));
  }

  /** Reads a whole directory from `start`, READDIR or READDIRPLUS, `size` bytes at a time. */
  async readdirAll(fh: bigint, o: { plus?: boolean; size?: number; start?: bigint } = {}): Promise<DirentPlus[] | Dirent[]> {
    const all: Dirent[] = [];
    let off = o.start ?? 0n;
    for (;;) {
      const batch = o.plus ? await this.readdirplus(fh, off, o.size ?? 65536) : await this.readdir(fh, off, o.size ?? 65536);
      if (batch.length === 0) return all;
      all.push(...batch);
      off = batch[batch.length - 1]!.off;
    }
  }

  // ---- xattrs -----------------------------------------------------------------------------------

  async setxattr(nodeid: bigint, name: string, value: Buffer, flags = 0, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize(
      'SETXATTR',
      await this.call(OP.SETXATTR, [u32(value.length, flags), cstr(name), value], { nodeid, in: [OUT_HEADER], ...o }),
      0,
    );
  }

  /** GETXATTR with size 0 returns the value's length (a number); otherwise the value. */
  async getxattr(nodeid: bigint, name: string, size: number, o: SendOptions = {}): Promise<Buffer | number> {
    const b = await this.call(OP.GETXATTR, [u32(size, 0), cstr(name)], { nodeid, in: [OUT_HEADER, Math.max(size, 8)], ...o });
    if (size === 0) return FuseClient.expectSize('GETXATTR', b, 8).readUInt32LE(0);
    return b;
  }

  async listxattr(nodeid: bigint, size: number, o: SendOptions = {}): Promise<Buffer | number> {
    const b = await this.call(OP.LISTXATTR, [u32(size, 0)], { nodeid, in: [OUT_HEADER, Math.max(size, 8)], ...o });
    if (size === 0) return FuseClient.expectSize('LISTXATTR', b, 8).readUInt32LE(0);
    return b;
  }

  async removexattr(nodeid: bigint, name: string, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize('REMOVEXATTR', await this.call(OP.REMOVEXATTR, [cstr(name)], { nodeid, in: [OUT_HEADER], ...o }), 0);
  }

  // ---- locks ------------------------------------------------------------------------------------

  async getlk(nodeid: bigint, fh: bigint, owner: bigint, lk: Parameters<typeof lkIn>[2], lkFlags = 0, o: SendOptions = {}): Promise<FileLock> {
    return parseLock(
      FuseClient.expectSize('GETLK', await this.call(OP.GETLK, [lkIn(fh, owner, lk, lkFlags)], { nodeid, in: [OUT_HEADER, 24], ...o }), 24),
    );
  }

  async setlk(nodeid: bigint, fh: bigint, owner: bigint, lk: Parameters<typeof lkIn>[2], lkFlags = 0, o: SendOptions = {}): Promise<void> {
    FuseClient.expectSize('SETLK', await this.call(OP.SETLK, [lkIn(fh, owner, lk, lkFlags)], { nodeid, in: [OUT_HEADER], ...o }), 0);
  }

  /** SETLKW: returns the unique (for INTERRUPT) and the pending reply. */
  setlkw(nodeid: bigint, fh: bigint, owner: bigint, lk: Parameters<typeof lkIn>[2], lkFlags = 0, o: SendOptions = {}): Sent {
    return this.send(OP.SETLKW, [lkIn(fh, owner, lk, lkFlags)], { nodeid, in: [OUT_HEADER], ...o });
  }

  /** INTERRUPT of `target` on the hiprio queue. */
  interrupt(target: bigint, o: SendOptions = {}): Promise<number> {
    return this.noReply(OP.INTERRUPT, [u64(target)], { unique: target | 1n, ...o });
  }
}

/** Rejects when `p` has not settled within `ms` (0 = wait forever). */
export function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  if (ms <= 0) return p;
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

export function opName(opcode: number): string {
  for (const [k, v] of Object.entries(OP)) if (v === opcode) return k;
  return `opcode ${opcode}`;
}

/** Awaits a promise that must reject with a FuseError; returns its errno name. */
export async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FuseError) return e.code;
    throw e;
  }
  return 'OK';
}

/** The errno name of a raw reply ('OK' for success). */
export async function replyErrno(p: Promise<Reply>): Promise<string> {
  const r = await p;
  return r.error ? errnoName(-r.error) : 'OK';
}
