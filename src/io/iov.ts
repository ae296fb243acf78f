// struct iovec arrays (u64 base, u64 len per entry, little-endian) built from
// host addresses, for preadv/pwritev and io_uring's READV/WRITEV.
import type { IoVecs } from './engine.js';

const TWO32 = 2 ** 32;
/** Linux's IOV_MAX: the most entries one vectored call takes. */
export const IOV_MAX = 1024;

/** An iovec array of `addr`/`len` pairs [from, from+count). */
export function buildIov(addr: readonly number[], len: readonly number[], from: number, count: number, keep: readonly Buffer[]): IoVecs {
  const iov = Buffer.allocUnsafe(count * 16);
  const w = new Uint32Array(iov.buffer, iov.byteOffset, count * 4);
  for (let k = 0; k < count; k++) {
    const a = addr[from + k]!;
    w[k * 4] = a >>> 0;
    w[k * 4 + 1] = Math.floor(a / TWO32);
    w[k * 4 + 2] = len[from + k]! >>> 0;
    w[k * 4 + 3] = 0;
  }
  return { iov, count, keep };
}

/** Total bytes an iovec array covers. */
export function iovLength(v: IoVecs): number {
  let n = 0;
  for (let k = 0; k < v.count; k++) n += v.iov.readUInt32LE(k * 16 + 8);
  return n;
}

/** The same array with its first `n` bytes stepped over (a new iovec buffer; the memory is the same). */
export function iovSkip(v: IoVecs, n: number): IoVecs {
  const addr: number[] = [];
  const len: number[] = [];
  for (let k = 0; k < v.count; k++) {
    const a = v.iov.readUInt32LE(k * 16) + v.iov.readUInt32LE(k * 16 + 4) * TWO32;
    const l = v.iov.readUInt32LE(k * 16 + 8);
    if (n >= l) {
      n -= l;
      continue;
    }
    addr.push(a + n);
    len.push(l - n);
    n = 0;
  }
  return buildIov(addr, len, 0, addr.length, v.keep);
}
