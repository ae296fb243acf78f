// Segments of memory as the transports hand them over (guest memory views,
// request payloads): views of a byte range without copying, and how a write
// that fails part way is answered. The data path itself runs on an I/O
// engine (src/io/transfer.ts).

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
