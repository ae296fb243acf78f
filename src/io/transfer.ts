// File data between files and memory segments (guest memory views, or plain
// Buffers on the socket and /dev/fuse paths) through an engine, with no
// intermediate buffer: one vectored call over all segments, the way
// virtiofsd does it (a guest hands 1 MiB over as 256 page descriptors; a
// call per page cost more than the copy it saves). Neighbouring segments are
// merged; more than IOV_MAX pieces take several calls. A short read ends the
// transfer (end of file); a short write goes on with the rest.
import { Errno, SysError, type WriteOptions } from '../sys/index.js';
import { hostAddressOf } from '../sys/memory.js';
import { addressOf } from '../sys/raw-io.js';
import { viewsOf } from '../sys/vectored.js';
import type { FsSpeed, IoEngine, IoVecs, Offset } from './engine.js';
import { IOV_MAX, buildIov } from './iov.js';

const advance = (pos: Offset, n: number): Offset => (typeof pos === 'bigint' ? pos + BigInt(n) : pos + n);

interface Ranges {
  addr: number[];
  len: number[];
}

/** (address, length) pairs of the views, neighbours in host memory merged. */
function rangesOf(views: readonly Buffer[]): Ranges {
  const addr: number[] = [];
  const len: number[] = [];
  for (const v of views) {
    if (v.length === 0) continue;
    const a = hostAddressOf(v) ?? addressOf(v);
    const last = addr.length - 1;
    if (last >= 0 && addr[last]! + len[last]! === a) len[last]! += v.length;
    else {
      addr.push(a);
      len.push(v.length);
    }
  }
  return { addr, len };
}

/** Where a file's data lives and what to call it in errors. */
export interface Target {
  fd: number;
  speed?: FsSpeed;
  what?: string;
}

/**
 * The iovec of a call that completes on this thread: the kernel reads it
 * during the call only, so one buffer serves every such call (no
 * allocation per request). Never handed to an asynchronous call.
 */
const nowIov: IoVecs = { iov: Buffer.alloc(16), count: 1, keep: [] };
const nowWords = new Uint32Array(nowIov.iov.buffer, nowIov.iov.byteOffset, 4);

function nowIovOf(addr: number, len: number): IoVecs {
  nowWords[0] = addr >>> 0;
  nowWords[1] = Math.floor(addr / 2 ** 32);
  nowWords[2] = len;
  return nowIov;
}

/** The iovec for an inline attempt: the shared one for a single range. */
const iovNow = (r: Ranges, views: readonly Buffer[]): IoVecs =>
  r.addr.length === 1 ? nowIovOf(r.addr[0]!, r.len[0]!) : buildIov(r.addr, r.len, 0, r.addr.length, views);

/** The bytes `r` covers. */
function totalOf(r: Ranges): number {
  let n = 0;
  for (const l of r.len) n += l;
  return n;
}

/**
 * Reads up to `max` bytes at `offset` into `segments`, starting `skip` bytes
 * in (after a reply header). The bytes read (fewer at end of file): at once
 * when the engine could read them inline (a page-cache hit), else a
 * promise. Errors come as a rejected promise with a SysError naming preadv
 * and the file.
 */
export function readInto(
  engine: IoEngine,
  t: Target,
  offset: Offset,
  segments: readonly Buffer[],
  skip: number,
  max: number,
): number | Promise<number> {
  const views = viewsOf(segments, skip, max);
  const r = rangesOf(views);
  if (r.addr.length <= IOV_MAX && engine.readvNow) {
    const n = engine.readvNow(t.fd, iovNow(r, views), offset, t.speed);
    if (n !== undefined && n >= 0) return n; // whole, or short at end of file
    if (n !== undefined) return Promise.reject(new SysError(-n, 'preadv', t.what ?? `fd ${t.fd}`));
  }
  return readLoop(engine, t, offset, views, r);
}

async function readLoop(engine: IoEngine, t: Target, offset: Offset, views: readonly Buffer[], r: Ranges): Promise<number> {
  let done = 0;
  let pos = offset;
  for (let i = 0; i < r.addr.length; i += IOV_MAX) {
    const count = Math.min(IOV_MAX, r.addr.length - i);
    let want = 0;
    for (let k = i; k < i + count; k++) want += r.len[k]!;
    const n = await engine.readv(t.fd, buildIov(r.addr, r.len, i, count, views), pos, t.speed);
    if (n < 0) {
      if (done > 0) return done; // what was read is the answer; the error comes with the next read
      throw new SysError(-n, 'preadv', t.what ?? `fd ${t.fd}`);
    }
    done += n;
    pos = advance(pos, n);
    if (n < want) break;
  }
  return done;
}

/**
 * Writes all of `views` at `offset`, retrying short writes. The bytes
 * written: at once when the engine could write them inline in one call (a
 * buffered write on a local disk), else a promise. A call that fails before
 * anything was written, or at all unless `o.partial` (see WriteOptions),
 * rejects with a SysError.
 */
export function writeFrom(engine: IoEngine, t: Target, offset: Offset, views: readonly Buffer[], o: WriteOptions): number | Promise<number> {
  const r = rangesOf(views);
  if (r.addr.length <= IOV_MAX && engine.writevNow) {
    const n = engine.writevNow(t.fd, iovNow(r, views), offset, t.speed);
    if (n !== undefined && n === totalOf(r)) return n;
    // A short write or an error goes the long way: it retries or names the error.
    if (n !== undefined) return writeLoop(engine, t, offset, views, r, o, n);
  }
  return writeLoop(engine, t, offset, views, r, o);
}

/** The write loop; `first` is the result of a first call already made inline. */
async function writeLoop(
  engine: IoEngine,
  t: Target,
  offset: Offset,
  views: readonly Buffer[],
  r: Ranges,
  o: WriteOptions,
  first?: number,
): Promise<number> {
  let done = 0;
  let i = 0;
  let partial = 0; // bytes of range i already written
  while (i < r.addr.length) {
    const count = Math.min(IOV_MAX, r.addr.length - i);
    let n: number;
    if (first !== undefined) {
      n = first;
      first = undefined;
    } else {
      const addr = r.addr.slice(i, i + count);
      const len = r.len.slice(i, i + count);
      addr[0]! += partial;
      len[0]! -= partial;
      n = await engine.writev(t.fd, buildIov(addr, len, 0, count, views), advance(offset, done), t.speed);
    }
    const err = n < 0 ? -n : n === 0 ? Errno.ENOSPC : 0; // no progress at all would loop for ever: the disk is full
    if (err) {
      if (o.partial && done > 0) return done;
      throw new SysError(err, 'pwritev', `${t.what ?? `fd ${t.fd}`}${done > 0 ? ` after ${done} bytes` : ''}`);
    }
    done += n;
    let left = n + partial;
    partial = 0;
    while (i < r.addr.length && left >= r.len[i]!) left -= r.len[i++]!;
    partial = left;
  }
  return done;
}
