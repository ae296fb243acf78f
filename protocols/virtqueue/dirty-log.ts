// The dirty log of live migration (vhost-user SET_LOG_BASE with LOG_SHMFD):
// a bitmap in memory shared with the frontend, one bit per 4 KiB page of
// guest *physical* address space (bit `p % 8` of byte `p / 8` for page `p`).
// While the driver has VHOST_F_LOG_ALL on, every byte the device writes into
// guest memory must have its page's bit set after the write, so the VMM
// copies the page again. Bits are set with Atomics.or: the VMM clears them
// concurrently (it reads and clears the bitmap while we run).
import { closeFd } from '../../src/sys/fd.js';
import { fstatFd, mmapShared, munmap, viewOf } from '../../src/sys/mem.js';

/** VHOST_LOG_PAGE: the log's page size, fixed by the protocol. */
export const LOG_PAGE_SIZE = 4096;
/** A bitmap this large covers 32 TiB of guest memory; anything bigger is refused. */
export const MAX_LOG_SIZE = 2 ** 30;
const S_IFREG = 0o100000;
const MAP_ALIGN = 4096;

export class DirtyLogError extends Error {
  override name = 'DirtyLogError';
}

export class DirtyLog {
  /** Bytes of bitmap (pages covered: 8 per byte). */
  readonly size: number;
  private readonly mapBase: bigint;
  private readonly mapLength: number;
  private bits: Uint8Array | null;
  /** Pages we had to skip because they lie beyond the bitmap (reported once by the owner). */
  outOfRange = 0;

  /**
   * Maps `size` bytes of `fd` from `offset` (the fd is always closed: the
   * mapping keeps the memory). Refuses sizes of 0 or above MAX_LOG_SIZE and
   * fds shorter than offset + size.
   */
  constructor(fd: number, size: number, offset: number) {
    try {
      if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_LOG_SIZE)
        throw new DirtyLogError(`log size ${size} is not between 1 and ${MAX_LOG_SIZE} bytes`);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + size))
        throw new DirtyLogError(`log offset ${offset} is beyond 2^53`);
      const st = fstatFd(fd);
      if (st.type !== S_IFREG) throw new DirtyLogError(`log fd is not a regular file or memfd (mode 0${st.type.toString(8)})`);
      if (st.size < offset + size) throw new DirtyLogError(`log needs ${offset + size} bytes of its fd, which has ${st.size}`);
      // mmap offsets must be page-aligned; the frontend's need not be.
      const mapOffset = offset - (offset % MAP_ALIGN);
      this.size = size;
      this.mapLength = size + (offset - mapOffset);
      this.mapBase = mmapShared(fd, this.mapLength, mapOffset);
      this.bits = new Uint8Array(viewOf(this.mapBase + BigInt(offset - mapOffset), size));
    } finally {
      closeFd(fd);
    }
  }

  /**
   * Marks every page that [gpa, gpa+len) touches. Pages beyond the bitmap
   * are counted in outOfRange (the frontend sized the log too small) and
   * skipped: the log is the frontend's memory and cannot grow.
   */
  mark(gpa: number, len: number): void {
    const bits = this.bits;
    if (bits === null || len <= 0) return;
    const first = Math.floor(gpa / LOG_PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    const pages = bits.length * 8;
    for (let p = first; p <= last; p++) {
      if (p >= pages) {
        this.outOfRange += last - p + 1;
        return;
      }
      // p may pass 2^32 (guest memory above 16 TiB): no 32-bit shifts on it.
      Atomics.or(bits, Math.floor(p / 8), 1 << (p % 8));
    }
  }

  /** Unmaps the bitmap (a new SET_LOG_BASE, or the session ended). */
  close(): void {
    if (this.bits === null) return;
    this.bits = null;
    munmap(this.mapBase, this.mapLength);
  }
}
