// A FUSE request as a transport hands it over, and the reply side.
// Request bytes may be split over several buffers (guest descriptors);
// the session reads small arguments contiguously and takes WRITE payloads
// as slices, so file data is never copied through JS on its way in.
import { Errno, SysError } from '../../src/sys/index.js';
import { EXT_HEADER_SIZE, EXT_UNIT, FUSE_EXT_GROUPS, FUSE_MAX_NR_SECCTX, IN_HEADER_SIZE, SECCTX_SIZE, SUPP_GROUPS_SIZE } from './constants.js';
import { viewsOf } from '../../src/sys/vectored.js';

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
  totalExtlen: number;
  /** FUSE_EXT_GROUPS: the caller's supplementary group the kernel found relevant (CREATE_SUPP_GROUP) */
  suppGroups: number[];
  /**
   * FUSE_SECURITY_CTX (create, mkdir, mknod, symlink): the context the guest's
   * LSM chose for the new object, `null` when the record is malformed (the
   * request fails with EINVAL, as virtiofsd's parse does); unset when none
   * came (no record, or nr_secctx 0: no LSM labels it).
   */
  secctx?: { name: Buffer; value: Buffer } | null;
}

export function parseInHeader(b: Buffer): InHeader {
  if (b.length < IN_HEADER_SIZE) throw new SysError(Errno.EINVAL, 'fuse header', `${b.length} bytes`);
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: b.readBigUInt64LE(16),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
    totalExtlen: b.readUInt16LE(36),
    suppGroups: [],
  };
}

/** The bytes of a request after its in-header. */
export class RequestBody {
  readonly length: number;

  constructor(private readonly segments: Buffer[]) {
    this.length = segments.reduce((n, s) => n + s.length, 0);
  }

  static of(b: Buffer): RequestBody {
    return new RequestBody([b]);
  }

  /** The first `n` bytes as one buffer (a view when they are contiguous). */
  head(n: number): Buffer {
    if (n > this.length) throw new SysError(Errno.EINVAL, 'fuse request', `needs ${n} argument bytes, has ${this.length}`);
    const first = this.segments[0];
    if (first && first.length >= n) return first.subarray(0, n);
    return this.copy(0, n);
  }

  /** Bytes [from, from+len) as views on the underlying buffers (no copy). */
  slices(from: number, len: number): Buffer[] {
    if (from + len > this.length) throw new SysError(Errno.EINVAL, 'fuse request', `data ${from}+${len} beyond ${this.length} bytes`);
    return viewsOf(this.segments, from, len);
  }

  copy(from: number, len: number): Buffer {
    return Buffer.concat(this.slices(from, len), len);
  }
}

/** Fills `dst` from `skip` on with at most `max` bytes; returns (or resolves to) how many. */
export type ReadFill = (dst: readonly Buffer[], skip: number, max: number) => number | Promise<number>;

/** Where a reply goes; one per request, implemented by each transport. */
export interface ReplyTo {
  /**
   * error = 0 with body parts, or a positive errno with no body. Returns
   * false when the reply could not be delivered (no room in the guest's
   * buffers, the request was interrupted): whatever it handed out
   * (lookup references, open handles) must then be taken back.
   */
  send(error: number, body: Buffer[]): boolean;
  /**
   * READ: a reply body of up to `size` bytes that `fill` produces straight
   * into the destination (guest memory on virtio-fs): it gets the
   * transport's segments, where the body starts in them and how much room
   * there is, and returns the bytes it put there (or a promise of them: the
   * destination must stay valid until it settles). A SysError it throws or
   * rejects with becomes the error reply.
   */
  sendRead(size: number, fill: ReadFill): void;
  /** requests that get no reply (FORGET, BATCH_FORGET, INTERRUPT) */
  none(): void;
}

/**
 * Request extensions (fuse_ext_header records in the last totalExtlen *
 * EXT_UNIT bytes): FUSE_EXT_GROUPS and the security context; other or
 * malformed records are ignored, a malformed context is marked (null).
 */
/**
 * One security context after a fuse_secctx_header: fuse_secctx (size of the
 * context, padding), the xattr name NUL-terminated, then `size` bytes of
 * context (the block is padded with NULs). null when it does not hold
 * together, or holds more than one (the kernel never sends more).
 */
function parseSecctx(rec: Buffer, nr: number): { name: Buffer; value: Buffer } | null {
  if (nr !== 1 || rec.length < SECCTX_SIZE) return null;
  const size = rec.readUInt32LE(0);
  const nul = rec.indexOf(0, SECCTX_SIZE);
  if (size === 0 || nul <= SECCTX_SIZE || nul + 1 + size > rec.length) return null;
  return { name: Buffer.from(rec.subarray(SECCTX_SIZE, nul)), value: Buffer.from(rec.subarray(nul + 1, nul + 1 + size)) };
}

export function parseExtensions(h: InHeader, body: RequestBody): void {
  const extBytes = h.totalExtlen * EXT_UNIT;
  if (extBytes === 0 || extBytes > body.length) return;
  const ext = body.copy(body.length - extBytes, extBytes);
  let at = 0;
  while (at + EXT_HEADER_SIZE <= ext.length) {
    // struct fuse_ext_header: size (of the record, header included), type
    const size = ext.readUInt32LE(at);
    const type = ext.readUInt32LE(at + 4);
    if (size < EXT_HEADER_SIZE || at + size > ext.length) return;
    const groups = at + EXT_HEADER_SIZE + SUPP_GROUPS_SIZE;
    if (type === FUSE_EXT_GROUPS && size >= EXT_HEADER_SIZE + SUPP_GROUPS_SIZE) {
      // struct fuse_supp_groups: nr_groups, then groups[nr_groups] (u32 each), within the record
      const n = ext.readUInt32LE(at + EXT_HEADER_SIZE);
      for (let i = 0; i < n && groups + i * 4 + 4 <= at + size; i++) h.suppGroups.push(ext.readUInt32LE(groups + i * 4));
    } else if (type <= FUSE_MAX_NR_SECCTX) {
      // fuse_secctx_header (size, nr_secctx); the kernel sends one context at most
      h.secctx = type === 0 ? undefined : parseSecctx(ext.subarray(at + EXT_HEADER_SIZE, at + size), type);
    }
    at += (size + EXT_UNIT - 1) & ~(EXT_UNIT - 1);
  }
}
