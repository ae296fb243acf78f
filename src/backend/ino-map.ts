// Maps host (st_dev, st_ino) to the 64-bit inode numbers guests see (9P qid
// paths, FUSE st_ino). Files on the export's own filesystem keep their host
// inode number; each other filesystem mounted inside the export gets a
// device index in the top 16 bits, so numbers never collide (QEMU's
// multidevs=remap does the same job with a different encoding).

const DEV_SHIFT = 48n;
const INO_MASK = (1n << DEV_SHIFT) - 1n;

export class InoMap {
  private readonly devices = new Map<bigint, bigint>();
  private readonly overflow = new Map<string, bigint>();
  private nextOverflow = 1n;

  constructor(rootDev: bigint) {
    this.devices.set(rootDev, 0n);
  }

  guestIno(dev: bigint, ino: bigint): bigint {
    let idx = this.devices.get(dev);
    if (idx === undefined) {
      idx = BigInt(this.devices.size);
      if (idx >= 0xffffn) idx = 0xffffn; // index space exhausted: fall through to overflow
      this.devices.set(dev, idx);
    }
    if (ino <= INO_MASK && idx < 0xffffn) return (idx << DEV_SHIFT) | ino;
    // Inode numbers too wide for the scheme get a private number space.
    const key = `${dev}:${ino}`;
    let v = this.overflow.get(key);
    if (v === undefined) {
      v = (0xffffn << DEV_SHIFT) | this.nextOverflow++;
      this.overflow.set(key, v);
    }
    return v;
  }

  /** A distinct small number per host filesystem (FUSE st_dev with submounts). */
  deviceIndex(dev: bigint): number {
    this.guestIno(dev, 0n);
    return Number(this.devices.get(dev));
  }
}
