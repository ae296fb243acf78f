// File data straight into a chain's writable segments (guest memory):
// one pread per segment, no intermediate buffer. Shared by the virtio-fs
// READ and the virtio-9p Rread paths.
import { pread } from '../../src/sys/index.js';

/**
 * Reads up to `max` bytes of `fd` at `offset` into `segments`, starting
 * `skip` bytes in (after the reply header). Returns the bytes read; stops
 * early at end of file. Throws SysError from pread.
 */
export function preadIntoSegments(
  segments: readonly Buffer[], skip: number, fd: number, offset: number | bigint, max: number, what?: string,
): number {
  let want = max;
  let got = 0;
  let pos = offset;
  for (const s of segments) {
    if (want <= 0) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const dst = s.subarray(skip, skip + Math.min(s.length - skip, want));
    skip = 0;
    const n = pread(fd, dst, pos, what);
    got += n;
    want -= n;
    pos = typeof pos === 'bigint' ? pos + BigInt(n) : pos + n;
    if (n < dst.length) break;
  }
  return got;
}
