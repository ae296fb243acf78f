// The test frontend's guest RAM: one sealed memfd mapped in this process and
// carved into regions placed at chosen guest physical addresses, with a
// first-fit allocator for rings and buffers.
import { closeFd } from '../sys/fd.js';
import { createMemfd, mmapShared, munmap, viewOf } from '../sys/mem.js';

export interface RegionLayout {
  /** Guest physical address of the region. */
  gpa: number;
  size: number;
}

export interface GuestRegion extends RegionLayout {
  /** Offset of the region in the memfd. */
  fileOffset: number;
  /** This process's virtual address of the region: the vhost-user "user address". */
  userAddr: number;
  /** The whole region, for reads and writes. */
  bytes: Buffer;
}

export class GuestRam {
  readonly fd: number;
  readonly regions: GuestRegion[] = [];
  private readonly base: bigint;
  private readonly total: number;
  private free: [number, number][] = []; // [gpa start, gpa end), sorted

  constructor(layout: RegionLayout[]) {
    this.total = layout.reduce((n, r) => n + r.size, 0);
    this.fd = createMemfd('duofs-test-guest', this.total);
    this.base = mmapShared(this.fd, this.total, 0);
    let off = 0;
    for (const r of layout) {
      const bytes = Buffer.from(viewOf(this.base + BigInt(off), r.size));
      this.regions.push({ ...r, fileOffset: off, userAddr: Number(this.base) + off, bytes });
      this.free.push([r.gpa, r.gpa + r.size]);
      off += r.size;
    }
    this.free.sort((a, b) => a[0] - b[0]);
  }

  regionOf(gpa: number, len = 1): GuestRegion {
    let r: GuestRegion | undefined;
    for (const x of this.regions) if (gpa >= x.gpa && gpa + len <= x.gpa + x.size) r = x;
    if (!r) throw new Error(`test frontend: [0x${gpa.toString(16)}, +${len}) is not inside one region`);
    return r;
  }

  /** A Buffer view of guest memory [gpa, gpa+len) (must be inside one region). */
  view(gpa: number, len: number): Buffer {
    if (this.closed) throw new Error('guest RAM is unmapped (the frontend closed)');
    const r = this.regionOf(gpa, len);
    return r.bytes.subarray(gpa - r.gpa, gpa - r.gpa + len);
  }

  write(gpa: number, data: Buffer): void {
    const r = this.regionOf(gpa, data.length);
    data.copy(r.bytes, gpa - r.gpa);
  }

  fill(gpa: number, len: number, value = 0): void {
    const r = this.regionOf(gpa, len);
    r.bytes.fill(value, gpa - r.gpa, gpa - r.gpa + len);
  }

  read(gpa: number, len: number): Buffer {
    return Buffer.from(this.view(gpa, len));
  }

  /** The frontend virtual address ("user address") of a guest physical address. */
  userAddrOf(gpa: number): number {
    const r = this.regionOf(gpa);
    return r.userAddr + (gpa - r.gpa);
  }

  // Small buffers (the per-request hot path) come from power-of-two size
  // classes recycled through free lists, so a request costs no searching.
  private readonly classFree = new Map<number, number[]>();
  private readonly classOf = new Map<number, number>();

  /**
   * `size` bytes aligned to `align`, optionally inside region `regionIndex`.
   * Small unplaced requests use size classes; the rest is first fit.
   */
  alloc(size: number, align = 16, regionIndex?: number): number {
    if (regionIndex === undefined && align <= 64 && size <= 65536) {
      const cls = Math.max(64, 2 ** Math.ceil(Math.log2(size)));
      const g = this.classFree.get(cls)?.pop() ?? this.carve(cls, 64);
      this.classOf.set(g, cls);
      return g;
    }
    return this.carve(size, align, regionIndex);
  }

  private carve(size: number, align: number, regionIndex?: number): number {
    const within = regionIndex === undefined ? undefined : this.regions[regionIndex];
    for (let i = 0; i < this.free.length; i++) {
      const [s, e] = this.free[i]!;
      if (within && (s < within.gpa || e > within.gpa + within.size)) continue;
      const at = Math.ceil(s / align) * align;
      if (at + size > e) continue;
      if (!this.regions.some((r) => at >= r.gpa && at + size <= r.gpa + r.size)) continue;
      const pieces: [number, number][] = [];
      if (at > s) pieces.push([s, at]);
      if (at + size < e) pieces.push([at + size, e]);
      this.free.splice(i, 1, ...pieces);
      return at;
    }
    throw new Error(`test frontend: out of guest memory for ${size} bytes`);
  }

  release(gpa: number, size: number): void {
    const cls = this.classOf.get(gpa);
    if (cls !== undefined) {
      let list = this.classFree.get(cls);
      if (!list) this.classFree.set(cls, (list = []));
      list.push(gpa);
      return;
    }
    if (size === 0) return;
    this.free.push([gpa, gpa + size]);
    this.free.sort((a, b) => a[0] - b[0]);
    const merged: [number, number][] = [];
    for (const f of this.free) {
      const last = merged[merged.length - 1];
      if (last && last[1] === f[0] && this.regionOf(last[0]) === this.regionOf(f[0])) last[1] = f[1];
      else merged.push([f[0], f[1]]);
    }
    this.free = merged;
  }

  private closed = false;

  close(): void {
    if (this.closed) return;
    this.closed = true;
    munmap(this.base, this.total);
    closeFd(this.fd);
  }
}
