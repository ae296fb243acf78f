// A descriptor chain popped from a virtqueue: the driver's request as views
// on guest memory. Readable segments carry the request (driver -> device),
// writable ones receive the reply (device -> driver). The views alias live
// guest memory, which the guest can change at any moment: copy a header out
// before validating it, and never touch the views after complete().
import type { MappedRegion } from './guest-memory.js';

/** What a chain reports back to (the queue it came from). */
export interface ChainOwner {
  completeChain(chain: DescriptorChain, bytesWritten: number): void;
}

export class DescriptorChain {
  /** Total bytes in `readable`. */
  readonly readableLength: number;
  /** Total bytes in `writable`: the most complete() may report. */
  readonly writableLength: number;
  private done = false;

  constructor(
    readonly queueIndex: number,
    /** Index of the head descriptor (the id the used ring reports). */
    readonly head: number,
    /** Device-readable views, in chain order. */
    readonly readable: Buffer[],
    /** Device-writable views, in chain order. */
    readonly writable: Buffer[],
    /** @internal regions pinned while the chain is outstanding */
    readonly pins: MappedRegion[],
    /** @internal the queue generation that popped the chain */
    readonly generation: number,
    private readonly owner: ChainOwner,
    /**
     * @internal guest physical extents of the writable descriptors, in chain
     * order, as [gpa, length] pairs flattened: what the dirty log marks
     */
    readonly writableGpa: readonly number[] = [],
  ) {
    let r = 0;
    for (const b of readable) r += b.length;
    let w = 0;
    for (const b of writable) w += b.length;
    this.readableLength = r;
    this.writableLength = w;
  }

  get completed(): boolean {
    return this.done;
  }

  /**
   * Returns the chain to the driver, reporting `bytesWritten` bytes written
   * into the writable segments (clamped to writableLength). Exactly once; a
   * second call is ignored and returns false.
   */
  complete(bytesWritten: number): boolean {
    if (this.done) return false;
    this.done = true;
    this.owner.completeChain(this, bytesWritten);
    return true;
  }
}

/** Copies up to `max` bytes of the readable segments starting at `offset` into one new Buffer. */
export function gather(segments: readonly Buffer[], offset = 0, max = Infinity): Buffer {
  let total = 0;
  for (const s of segments) total += s.length;
  const len = Math.max(0, Math.min(max, total - offset));
  const out = Buffer.allocUnsafe(len);
  let skip = offset;
  let at = 0;
  for (const s of segments) {
    if (at >= len) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    at += s.copy(out, at, skip, Math.min(s.length, skip + (len - at)));
    skip = 0;
  }
  return out;
}

/**
 * Copies `src` into the writable segments starting at byte `offset` of the
 * chain's writable space; returns the bytes copied (short if space runs out).
 */
export function scatter(segments: readonly Buffer[], src: Buffer, offset = 0): number {
  let skip = offset;
  let from = 0;
  for (const s of segments) {
    if (from >= src.length) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    from += src.copy(s, skip, from);
    skip = 0;
  }
  return from;
}
