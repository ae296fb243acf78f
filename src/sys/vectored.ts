// File data between files and memory segments (guest memory views) with no
// intermediate buffer: one preadv/pwritev over all segments, the way
// virtiofsd does it. A guest kernel hands over 1 MiB as 256 page-sized
// descriptors; a syscall per page cost more than the copy it saves.
// The backend's data path (read into a sink, write from a source) runs on it.
import { Errno, SysError } from './errno.js';
import { pread, preadv, pwrite, pwritev } from './fs.js';
import { hostAddressOf } from './memory.js';

/** Linux's IOV_MAX: the most entries one preadv/pwritev takes. */
const IOV_MAX = 1024;
const iovScratch = Buffer.alloc(IOV_MAX * 16);
/** The same memory as u32 words: iovecs are written as (lo, hi) pairs, no BigInt per entry. */
const iov32 = new Uint32Array(iovScratch.buffer, iovScratch.byteOffset, IOV_MAX * 4);
const TWO32 = 2 ** 32;

function setIov(k: number, addr: number, len: number): void {
  iov32[k * 4] = addr >>> 0;
  iov32[k * 4 + 1] = Math.floor(addr / TWO32);
  iov32[k * 4 + 2] = len >>> 0;
  iov32[k * 4 + 3] = 0;
}

type Offset = number | bigint;
const advance = (pos: Offset, n: number): Offset => (typeof pos === 'bigint' ? pos + BigInt(n) : pos + n);

/** Views of bytes [skip, skip+max) of `segments` (no copy). */
export function viewsOf(segments: readonly Buffer[], skip: number, max: number): Buffer[] {
  const out: Buffer[] = [];
  let want = max;
  for (const s of segments) {
    if (want <= 0) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const take = Math.min(s.length - skip, want);
    out.push(skip === 0 && take === s.length ? s : s.subarray(skip, skip + take));
    want -= take;
    skip = 0;
  }
  return out;
}

/**
 * (address, length) pairs of guest-memory views, neighbours in host memory
 * merged; undefined if any view is not guest memory (a plain Buffer).
 */
function hostRanges(views: readonly Buffer[]): { addr: number[]; len: number[] } | undefined {
  const addr: number[] = [];
  const len: number[] = [];
  for (const v of views) {
    if (v.length === 0) continue;
    const a = hostAddressOf(v);
    if (a === undefined) return undefined;
    const last = addr.length - 1;
    if (last >= 0 && addr[last]! + len[last]! === a) len[last]! += v.length;
    else {
      addr.push(a);
      len.push(v.length);
    }
  }
  return { addr, len };
}

type Vectored = (fd: number, iov: Buffer, count: number, offset: Offset, what?: string) => number;

/**
 * Moves the ranges with as few vectored calls as IOV_MAX allows. A short
 * transfer ends a read (end of file); a write goes on with the rest, as
 * write(2) callers must, until it is done or a call fails.
 */
function transfer(
  call: Vectored, isWrite: boolean, fd: number, r: { addr: number[]; len: number[] }, offset: Offset, what?: string, progress = { done: 0 },
): number {
  let done = 0;
  let pos = offset;
  let i = 0;
  let partial = 0; // bytes of entry i already moved
  while (i < r.addr.length) {
    let count = 0;
    let want = 0;
    for (let j = i; j < r.addr.length && count < IOV_MAX; j++, count++) {
      const skip = j === i ? partial : 0;
      setIov(count, r.addr[j]! + skip, r.len[j]! - skip);
      want += r.len[j]! - skip;
    }
    const n = isWrite ? wrote(call(fd, iovScratch, count, pos, what), done, what) : call(fd, iovScratch, count, pos, what);
    done += n;
    progress.done = done;
    pos = advance(pos, n);
    if (n < want && !isWrite) break;
    // step over what was moved
    let left = n + partial;
    partial = 0;
    while (i < r.addr.length && left >= r.len[i]!) left -= r.len[i++]!;
    partial = left;
  }
  return done;
}

/** A write call that moved nothing would loop for ever: report it as the disk being full. */
function wrote(n: number, done: number, what?: string): number {
  if (n === 0) throw new SysError(Errno.ENOSPC, 'pwritev', `${what ?? 'file'}: no progress after ${done} bytes`);
  return n;
}

/**
 * Reads up to `max` bytes of `fd` at `offset` into `segments`, starting
 * `skip` bytes in (after the reply header). Returns the bytes read; stops
 * early at end of file. Throws SysError.
 */
export function preadIntoSegments(
  segments: readonly Buffer[], skip: number, fd: number, offset: Offset, max: number, what?: string,
): number {
  const views = viewsOf(segments, skip, max);
  const ranges = hostRanges(views);
  return ranges ? transfer(preadv, false, fd, ranges, offset, what) : oneByOne(pread, views, fd, offset, what);
}

/** How a write that fails part way is answered. */
export interface WriteOptions {
  /**
   * true: the bytes written before the failure are the answer (write(2)'s
   * short count; the client retries the rest and meets the error itself).
   * false: the error is the answer. A client that caches writes (FUSE
   * --writeback) must get the error: it counts a short success as the
   * whole page written, and the rest would be lost though fsync succeeds.
   */
  partial: boolean;
}

/**
 * Writes all of `views` (request payload, guest memory or plain buffers) to
 * `fd` at `offset`, retrying short writes. Returns the bytes written. Throws
 * SysError when a call fails before anything was written, or at all unless
 * `o.partial`.
 */
export function pwriteFromSegments(views: readonly Buffer[], fd: number, offset: Offset, what: string | undefined, o: WriteOptions): number {
  const ranges = hostRanges(views);
  const progress = { done: 0 };
  try {
    if (ranges) return transfer(pwritev, true, fd, ranges, offset, what, progress);
    // Plain buffers (the /dev/fuse path): a call per buffer, each retried until written.
    for (const v of views) {
      for (let at = 0; at < v.length; ) {
        const n = wrote(pwrite(fd, at === 0 ? v : v.subarray(at), advance(offset, progress.done), what), progress.done, what);
        at += n;
        progress.done += n;
      }
    }
    return progress.done;
  } catch (e) {
    if (!o.partial || progress.done === 0) throw e;
    return progress.done;
  }
}

/** Plain buffers (the /dev/fuse path): a pread per buffer, up to the first short one (end of file). */
function oneByOne(
  call: (fd: number, buf: Buffer, offset: Offset, what?: string) => number, views: readonly Buffer[], fd: number, offset: Offset, what?: string,
): number {
  let done = 0;
  let pos = offset;
  for (const v of views) {
    const n = call(fd, v, pos, what);
    done += n;
    pos = advance(pos, n);
    if (n < v.length) break;
  }
  return done;
}
