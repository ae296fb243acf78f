// Zero-copy 9P wire codec. A Reader walks a received frame in place (names
// and data come out as subarrays of the frame, never copies); a Writer
// fills a reply buffer. Both are little-endian, as 9P is.
import { Errno, SysError } from '../../src/sys/index.js';
import { HEADER_SIZE, RLERROR } from './constants.js';
import { viewsOf } from '../../src/sys/vectored.js';

/** A frame that does not parse: answered with Rlerror(EPROTO). */
export class ProtocolError extends SysError {
  constructor(what: string) {
    super(Errno.EPROTO, 'decode', what);
  }
}

export interface Qid {
  type: number;
  version: number;
  path: bigint;
}

export class Reader {
  private off: number;

  /**
   * `tail`: a Twrite's data left where the transport found it (guest
   * memory), logically following the frame's bytes; see data().
   */
  constructor(
    private readonly buf: Buffer,
    start = HEADER_SIZE,
    private readonly end = buf.length,
    private readonly tail?: readonly Buffer[],
  ) {
    this.off = start;
  }

  private need(n: number, what: string): number {
    const at = this.off;
    if (at + n > this.end) throw new ProtocolError(`${what} runs past the end of the frame`);
    this.off = at + n;
    return at;
  }

  u8(): number {
    return this.buf[this.need(1, 'u8')]!;
  }

  u16(): number {
    return this.buf.readUInt16LE(this.need(2, 'u16'));
  }

  u32(): number {
    return this.buf.readUInt32LE(this.need(4, 'u32'));
  }

  u64(): bigint {
    return this.buf.readBigUInt64LE(this.need(8, 'u64'));
  }

  /**
   * A file offset or size: a number when it fits one exactly, else a bigint
   * (still a valid off_t). Beyond off_t's range is EINVAL, as the kernel says.
   */
  offset(): number | bigint {
    const v = this.u64();
    if (v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
    if (v > 0x7fffffffffffffffn) throw new SysError(Errno.EINVAL, 'decode', `offset ${v} beyond off_t`);
    return v;
  }

  /** A signed 64-bit count of seconds (times before 1970 are negative). */
  i64n(): number {
    return Number(BigInt.asIntN(64, this.u64()));
  }

  /** A string as raw bytes (a view into the frame). */
  str(): Buffer {
    const len = this.u16();
    const at = this.need(len, 'string');
    return this.buf.subarray(at, at + len);
  }

  bytes(n: number): Buffer {
    const at = this.need(n, 'data');
    return this.buf.subarray(at, at + n);
  }

  /** `n` bytes of file data as views: from the frame, or from the tail when the transport left them in place. */
  data(n: number): readonly Buffer[] {
    if (this.tail === undefined) return [this.bytes(n)];
    let have = 0;
    for (const t of this.tail) have += t.length;
    if (this.off !== this.end || n > have) throw new ProtocolError('data runs past the end of the frame');
    return n === have ? this.tail : viewsOf(this.tail, 0, n);
  }

  get remaining(): number {
    return this.end - this.off;
  }
}

export class Writer {
  private buf: Buffer;
  private off = HEADER_SIZE;

  constructor(capacity = 256) {
    this.buf = Buffer.allocUnsafe(Math.max(capacity, HEADER_SIZE));
  }

  private room(n: number): number {
    const at = this.off;
    if (at + n > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, at + n));
      this.buf.copy(grown, 0, 0, at);
      this.buf = grown;
    }
    this.off = at + n;
    return at;
  }

  // room() may replace this.buf, so it must run before this.buf is read.
  u8(v: number): this {
    const at = this.room(1);
    this.buf[at] = v;
    return this;
  }

  u16(v: number): this {
    const at = this.room(2);
    this.buf.writeUInt16LE(v, at);
    return this;
  }

  u32(v: number): this {
    const at = this.room(4);
    this.buf.writeUInt32LE(v >>> 0, at);
    return this;
  }

  u64(v: bigint | number): this {
    const at = this.room(8);
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), at);
    return this;
  }

  str(s: Buffer | string): this {
    const b = typeof s === 'string' ? Buffer.from(s) : s;
    this.u16(b.length);
    const at = this.room(b.length);
    b.copy(this.buf, at);
    return this;
  }

  bytes(b: Buffer): this {
    const at = this.room(b.length);
    b.copy(this.buf, at);
    return this;
  }

  qid(q: Qid): this {
    return this.u8(q.type).u32(q.version).u64(q.path);
  }

  get length(): number {
    return this.off;
  }

  /** Reserves `n` bytes and returns them for the caller to fill in place. */
  reserve(n: number): Buffer {
    const at = this.room(n);
    return this.buf.subarray(at, at + n);
  }

  /** Gives back the tail of the last reserve() that was not used. */
  unreserve(n: number): void {
    this.off -= n;
  }

  /** Writes the header and returns the finished frame. */
  finish(type: number, tag: number): Buffer {
    this.buf.writeUInt32LE(this.off, 0);
    this.buf[4] = type;
    this.buf.writeUInt16LE(tag, 5);
    return this.buf.subarray(0, this.off);
  }
}

export const QID_SIZE = 13;

/** Rlerror (size[4] type[1] tag[2] ecode[4]): the one encoder every 9P transport answers errors with. */
export function encodeRlerror(tag: number, errno: number): Buffer {
  return new Writer(11).u32(errno).finish(RLERROR, tag);
}
