// The I/O engine a test runs on: DUOFS_IO_ENGINE (sync, threads, io_uring;
// `npm run test:engines` runs the protocol, FUSE and vhost suites once per
// engine), else what `auto` picks. RecordingEngine keeps every result, so a
// test can prove no call failed (an EFAULT would mean guest memory was
// unmapped under a read).
import { createEngine, defaultEngineChoice, threadPoolSize } from '../../src/io/select.js';
import { buildIov, iovLength } from '../../src/io/iov.js';
import type { EngineStats, FsSpeed, IoEngine, IoVecs, Offset } from '../../src/io/engine.js';

export function engineUnderTest(): Promise<IoEngine> {
  return createEngine({ choice: defaultEngineChoice(), threadPoolSize: threadPoolSize() });
}

export interface CallResult {
  call: 'read' | 'write' | 'fsync' | 'fallocate' | 'copy_file_range';
  fd: number;
  result: number;
}

export class RecordingEngine implements IoEngine {
  readonly completed: CallResult[] = [];

  constructor(private readonly inner: IoEngine) {}

  get kind() {
    return this.inner.kind;
  }

  get inflight(): number {
    return this.inner.inflight;
  }

  /** Calls that ended in an error. */
  get failed(): CallResult[] {
    return this.completed.filter((r) => r.result < 0);
  }

  private record(call: CallResult['call'], fd: number, p: Promise<number>): Promise<number> {
    return p.then((result) => {
      this.completed.push({ call, fd, result });
      return result;
    });
  }

  readv(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.record('read', fd, this.inner.readv(fd, v, offset, speed));
  }

  writev(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.record('write', fd, this.inner.writev(fd, v, offset, speed));
  }

  fsync(fd: number, datasync: boolean, speed?: FsSpeed): Promise<number> {
    return this.record('fsync', fd, this.inner.fsync(fd, datasync, speed));
  }

  fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number> {
    return this.record('fallocate', fd, this.inner.fallocate(fd, mode, offset, length));
  }

  copyFileRange(fdIn: number, offIn: Offset, fdOut: number, offOut: Offset, length: number): Promise<number> {
    return this.record('copy_file_range', fdIn, this.inner.copyFileRange(fdIn, offIn, fdOut, offOut, length));
  }

  stats(): EngineStats {
    return this.inner.stats();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * What a fault function answers for one call: 0 passes it on, a positive
 * number fails it with that errno, `{ short: n }` passes on only its first
 * n bytes (a read or write that comes back short, as on a filling disk).
 */
export type Fault = number | { short: number };

/**
 * Makes chosen calls fail as the storage would: `fault(call, fd, offset,
 * length)` says what happens to each (see Fault; offset and length are
 * those of a read or write, 0 for the other calls).
 */
export class FaultEngine extends RecordingEngine {
  constructor(
    inner: IoEngine,
    private readonly fault: (call: CallResult['call'], fd: number, offset: number, length: number) => Fault,
  ) {
    super(inner);
  }

  private failing(call: CallResult['call'], fd: number, offset: Offset, length: number, pass: (cut?: number) => Promise<number>): Promise<number> {
    const f = this.fault(call, fd, Number(offset), length);
    if (typeof f === 'object') return pass(f.short);
    if (!f) return pass();
    this.completed.push({ call, fd, result: -f }); // an injected failure counts as a failed call
    return Promise.resolve(-f);
  }

  override readv(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.failing('read', fd, offset, iovLength(v), (cut) => super.readv(fd, cut === undefined ? v : iovTake(v, cut), offset, speed));
  }

  override writev(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.failing('write', fd, offset, iovLength(v), (cut) => super.writev(fd, cut === undefined ? v : iovTake(v, cut), offset, speed));
  }

  override fsync(fd: number, datasync: boolean, speed?: FsSpeed): Promise<number> {
    return this.failing('fsync', fd, 0, 0, () => super.fsync(fd, datasync, speed));
  }

  override fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number> {
    return this.failing('fallocate', fd, offset, Number(length), () => super.fallocate(fd, mode, offset, length));
  }
}

/** The first `n` bytes of an iovec array (a new iovec buffer over the same memory). */
export function iovTake(v: IoVecs, n: number): IoVecs {
  const addr: number[] = [];
  const len: number[] = [];
  for (let k = 0; k < v.count && n > 0; k++) {
    const a = v.iov.readUInt32LE(k * 16) + v.iov.readUInt32LE(k * 16 + 4) * 2 ** 32;
    const l = Math.min(v.iov.readUInt32LE(k * 16 + 8), n);
    addr.push(a);
    len.push(l);
    n -= l;
  }
  return buildIov(addr, len, 0, addr.length, [...v.keep, v.iov]);
}

/**
 * A disk quota under the engine: writes to the fds `charged` picks may
 * write `limit` bytes in all (every byte a write moves counts, as a block
 * quota counts allocation; overwrites count again). The write that crosses
 * the limit is short — the bytes up to the limit really land in the file —
 * and every write after it fails with EDQUOT until `grant` raises the limit:
 * what pwrite(2) does on a filesystem whose quota runs out part way.
 */
export class QuotaEngine extends RecordingEngine {
  used = 0;

  constructor(
    inner: IoEngine,
    private readonly charged: (fd: number) => boolean,
    public limit: number,
  ) {
    super(inner);
  }

  grant(bytes: number): void {
    this.limit += bytes;
  }

  override async writev(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    if (!this.charged(fd)) return super.writev(fd, v, offset, speed);
    const left = this.limit - this.used;
    if (left <= 0) {
      this.completed.push({ call: 'write', fd, result: -EDQUOT });
      return -EDQUOT;
    }
    const want = iovLength(v);
    this.used += Math.min(want, left); // charged when the call starts, as a filesystem reserves before it copies
    const n = await super.writev(fd, want > left ? iovTake(v, left) : v, offset, speed);
    if (n < Math.min(want, left)) this.used -= Math.min(want, left) - Math.max(n, 0);
    return n;
  }
}

export const EDQUOT = 122;
