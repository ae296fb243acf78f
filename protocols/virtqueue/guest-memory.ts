// Guest memory as the frontend shares it: regions (guest physical range, the
// frontend's own virtual address for it, an fd and offset), each mmapped once.
// Everything a guest hands us is a guest physical address; translate() turns
// (gpa, len) into Buffer views on the mapping, or refuses. Views never cross a
// region's end, so nothing outside guest memory is ever reachable.
//
// Lifetime: a region removed (or replaced) while a descriptor chain or a ring
// still points into it is only unmapped once the last pin is released, so a
// device finishing a request late writes into live memory, never into a hole.
import { registerWindow } from '../../src/sys/memory.js';
import { closeFd } from '../../src/sys/fd.js';
import { fileSeals, fstatFd, F_SEAL_SHRINK, mmapShared, munmap, viewOf } from '../../src/sys/mem.js';
import type { DirtyLog } from './dirty-log.js';

/** One region as vhost-user describes it (all numbers are byte addresses/sizes). */
export interface RegionSpec {
  guestAddr: number;
  size: number;
  /** The frontend's virtual address of the region (vring addresses are in this space). */
  userAddr: number;
  /** Where the region starts in the fd. */
  mmapOffset: number;
}

/** A guest-memory problem the frontend caused; the message says what. */
export class GuestMemoryError extends Error {
  override name = 'GuestMemoryError';
}

// External ArrayBuffers over 4 GiB abort the process in Node 20, and Buffer
// offsets are limited too: a region is viewed through 1 GiB windows.
const CHUNK = 2 ** 30;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

// Each window's host address is registered in sys (registerWindow), so the
// data path builds iovecs for preadv/pwritev straight from the views.
export { hostAddressOf } from '../../src/sys/memory.js';

export class MappedRegion implements RegionSpec {
  readonly guestAddr: number;
  readonly size: number;
  readonly userAddr: number;
  readonly mmapOffset: number;
  /** False when a memfd could still be shrunk under us (a SIGBUS risk the frontend controls). */
  readonly sealedAgainstShrink: boolean;
  private readonly mapBase: bigint;
  private readonly mapLength: number;
  private readonly hostBase: bigint;
  private readonly windows: ArrayBuffer[] = [];
  private pins = 0;
  private retired = false;
  private unmapped = false;
  /** The frontend's fd of the region, kept until the region is retired: a takeover hands it on. */
  fd: number;

  constructor(spec: RegionSpec, fd: number) {
    this.fd = fd;
    this.guestAddr = spec.guestAddr;
    this.size = spec.size;
    this.userAddr = spec.userAddr;
    this.mmapOffset = spec.mmapOffset;
    const st = fstatFd(fd);
    if (st.type === S_IFREG) {
      if (st.size < spec.mmapOffset + spec.size) {
        throw new GuestMemoryError(
          `region at gpa 0x${spec.guestAddr.toString(16)} needs ${spec.mmapOffset + spec.size} bytes of its fd, which has ${st.size}`,
        );
      }
    } else if (st.type !== S_IFCHR && st.type !== S_IFBLK) {
      throw new GuestMemoryError(`region fd is not a file or device (mode 0${st.type.toString(8)})`);
    }
    this.sealedAgainstShrink = st.type !== S_IFREG || (fileSeals(fd) & F_SEAL_SHRINK) !== 0;
    // Mapped from offset 0 like libvhost-user: mmap_offset need not be aligned
    // to the (huge) page size of the backing file.
    this.mapLength = spec.mmapOffset + spec.size;
    this.mapBase = mmapShared(fd, this.mapLength, 0);
    this.hostBase = this.mapBase + BigInt(spec.mmapOffset);
    try {
      for (let off = 0; off < spec.size; off += CHUNK) {
        const ab = viewOf(this.hostBase + BigInt(off), Math.min(CHUNK, spec.size - off));
        registerWindow(ab, Number(this.hostBase) + off);
        this.windows.push(ab);
      }
    } catch (e) {
      munmap(this.mapBase, this.mapLength);
      throw e;
    }
  }

  get guestEnd(): number {
    return this.guestAddr + this.size;
  }

  /** Views of [off, off+len) of this region appended to `out` (split at window edges). */
  viewsAt(off: number, len: number, out: Buffer[]): void {
    while (len > 0) {
      const w = Math.floor(off / CHUNK);
      const at = off - w * CHUNK;
      const n = Math.min(len, CHUNK - at);
      out.push(Buffer.from(this.windows[w]!, at, n));
      off += n;
      len -= n;
    }
  }

  /** A single view of [off, off+len) with its own ArrayBuffer (for rings: never split). */
  dedicatedView(off: number, len: number): Buffer {
    const ab = viewOf(this.hostBase + BigInt(off), len);
    registerWindow(ab, Number(this.hostBase) + off);
    return Buffer.from(ab);
  }

  pin(): void {
    this.pins++;
  }

  unpin(): void {
    if (--this.pins === 0 && this.retired) this.unmap();
  }

  /** Removed from the table: unmapped now, or when the last pin goes. */
  retire(): void {
    this.retired = true;
    closeFd(this.fd);
    this.fd = -1;
    if (this.pins === 0) this.unmap();
  }

  get isMapped(): boolean {
    return !this.unmapped;
  }

  private unmap(): void {
    if (this.unmapped) return;
    this.unmapped = true;
    this.windows.length = 0;
    munmap(this.mapBase, this.mapLength);
  }
}

/** The regions are kept sorted by guest address; lookups are binary searches. */
export class GuestMemory {
  private regions: MappedRegion[] = [];
  private lastHit: MappedRegion | undefined;
  /**
   * The migration dirty log, set while the driver has LOG_ALL on and the
   * frontend gave a log (SET_LOG_BASE); null otherwise. Every device write
   * into guest memory goes through a writable chain descriptor or a used
   * ring, and both report here (logWrite) after writing.
   */
  dirtyLog: DirtyLog | null = null;

  constructor(readonly maxRegions = 509) {}

  get regionCount(): number {
    return this.regions.length;
  }

  list(): readonly MappedRegion[] {
    return this.regions;
  }

  /**
   * Maps `fd` (kept by the region, closed when it is retired, or now if
   * the region is refused) and adds the region. Refuses
   * sizes that are zero or beyond 2^53, overlaps with existing regions, and
   * fds too short for the region.
   */
  add(spec: RegionSpec, fd: number): MappedRegion {
    try {
      checkSpec(spec);
      if (this.regions.length >= this.maxRegions) throw new GuestMemoryError(`more than ${this.maxRegions} memory regions`);
      for (const r of this.regions) {
        if (spec.guestAddr < r.guestEnd && r.guestAddr < spec.guestAddr + spec.size) {
          throw new GuestMemoryError(`region at gpa 0x${spec.guestAddr.toString(16)} overlaps the one at 0x${r.guestAddr.toString(16)}`);
        }
        if (spec.userAddr < r.userAddr + r.size && r.userAddr < spec.userAddr + spec.size) {
          throw new GuestMemoryError(`region at user address 0x${spec.userAddr.toString(16)} overlaps the one at 0x${r.userAddr.toString(16)}`);
        }
      }
      const region = new MappedRegion(spec, fd);
      this.regions.push(region);
      this.regions.sort((a, b) => a.guestAddr - b.guestAddr);
      return region;
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /**
   * Replaces the whole table (SET_MEM_TABLE): all new regions are mapped
   * first, so a failure leaves the old table in place. Every fd is the
   * regions' (or closed).
   */
  replaceAll(entries: readonly { spec: RegionSpec; fd: number }[]): void {
    const staged = new GuestMemory(this.maxRegions);
    let i = 0;
    try {
      for (; i < entries.length; i++) staged.add(entries[i]!.spec, entries[i]!.fd);
    } catch (e) {
      for (let j = i + 1; j < entries.length; j++) closeFd(entries[j]!.fd);
      staged.clear();
      throw e;
    }
    this.clear();
    this.regions = staged.regions;
  }

  /** Removes the region with this guest address, size and user address; false if none. */
  remove(spec: Pick<RegionSpec, 'guestAddr' | 'size' | 'userAddr'>): boolean {
    const i = this.regions.findIndex((r) => r.guestAddr === spec.guestAddr && r.size === spec.size && r.userAddr === spec.userAddr);
    if (i < 0) return false;
    const [r] = this.regions.splice(i, 1);
    if (this.lastHit === r) this.lastHit = undefined;
    r!.retire();
    return true;
  }

  /** Drops every region (unmapped as soon as nothing pins them). */
  clear(): void {
    for (const r of this.regions) r.retire();
    this.regions = [];
    this.lastHit = undefined;
  }

  /** The device wrote guest physical [gpa, gpa+len): marks it in the dirty log when logging is on. */
  logWrite(gpa: number, len: number): void {
    this.dirtyLog?.mark(gpa, len);
  }

  /**
   * The device wrote the first `bytes` bytes of a chain's writable space,
   * whose descriptors cover `extents` ([gpa, length] pairs): marks them.
   */
  logChainWrite(extents: readonly number[], bytes: number): void {
    const log = this.dirtyLog;
    if (log === null) return;
    for (let i = 0; i < extents.length && bytes > 0; i += 2) {
      const n = Math.min(extents[i + 1]!, bytes);
      log.mark(extents[i]!, n);
      bytes -= n;
    }
  }

  regionAt(gpa: number): MappedRegion | undefined {
    const hit = this.lastHit;
    if (hit !== undefined && gpa >= hit.guestAddr && gpa < hit.guestEnd) return hit;
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (gpa < r.guestAddr) hi = mid - 1;
      else if (gpa >= r.guestEnd) lo = mid + 1;
      else return (this.lastHit = r);
    }
    return undefined;
  }

  /**
   * Appends views of guest range [gpa, gpa+len) to `out`, pinning each region
   * touched into `pins` (once). A range may run on into a region that
   * starts exactly where the previous one ends (a new view begins there).
   * False when any byte is outside guest memory; `out` may then hold a prefix.
   */
  translate(gpa: number, len: number, out: Buffer[], pins: MappedRegion[]): boolean {
    while (len > 0) {
      const r = this.regionAt(gpa);
      if (r === undefined) return false;
      const off = gpa - r.guestAddr;
      const n = Math.min(len, r.size - off);
      r.viewsAt(off, n, out);
      if (!pins.includes(r)) {
        r.pin();
        pins.push(r);
      }
      gpa += n;
      len -= n;
    }
    return true;
  }

  /**
   * One contiguous view of the frontend's virtual range [va, va+len) (vring
   * addresses), or undefined if it is not inside a single region. The caller
   * must pin the returned region for as long as it keeps the view.
   */
  viewUserRange(va: number, len: number): { buf: Buffer; region: MappedRegion } | undefined {
    for (const r of this.regions) {
      if (va >= r.userAddr && va - r.userAddr + len <= r.size) {
        return { buf: r.dedicatedView(va - r.userAddr, len), region: r };
      }
    }
    return undefined;
  }

  /** Guest physical address of a frontend virtual address, or undefined. */
  userToGuest(va: number): number | undefined {
    for (const r of this.regions) if (va >= r.userAddr && va < r.userAddr + r.size) return r.guestAddr + (va - r.userAddr);
    return undefined;
  }
}

function checkSpec(s: RegionSpec): void {
  const ok = (n: number) => Number.isSafeInteger(n) && n >= 0;
  if (!ok(s.guestAddr) || !ok(s.size) || !ok(s.userAddr) || !ok(s.mmapOffset)) {
    throw new GuestMemoryError('memory region address, size or offset beyond 2^53');
  }
  if (s.size === 0) throw new GuestMemoryError('memory region of size 0');
  for (const [what, base] of [
    ['guest', s.guestAddr],
    ['user', s.userAddr],
    ['mmap offset', s.mmapOffset],
  ] as const) {
    if (!Number.isSafeInteger(base + s.size)) throw new GuestMemoryError(`memory region ${what} range wraps past 2^53`);
  }
}
