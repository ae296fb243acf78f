// A slow disk on demand: wraps an engine and starts every read, write and
// fsync a fixed time late, without holding the event loop (a timer per call,
// so any number wait at once, as on real storage). The call itself runs at
// the end, so the memory it reads or fills is touched late, as a disk's DMA
// would: tests use that to prove guest memory outlives the requests on it.
// For tests and the bench's slow-storage mode (--debug-io-latency-ms).
import type { EngineStats, FsSpeed, IoEngine, IoVecs, Offset } from './engine.js';

export type DelayedCall = 'read' | 'write' | 'fsync';
/** ms before a call starts: one figure for all, or per call and fd (tests make one file slow). */
export type Delay = number | ((call: DelayedCall, fd: number) => number);

export class LatencyEngine implements IoEngine {
  constructor(
    private readonly inner: IoEngine,
    private readonly delay: Delay,
  ) {}

  get kind() {
    return this.inner.kind;
  }

  get inflight(): number {
    return this.inner.inflight + this.waiting;
  }

  private waiting = 0;

  private later(what: DelayedCall, fd: number, call: () => Promise<number>): Promise<number> {
    const ms = typeof this.delay === 'number' ? this.delay : this.delay(what, fd);
    if (ms <= 0) return call();
    this.waiting++;
    return new Promise((resolve) =>
      setTimeout(() => {
        this.waiting--;
        resolve(call());
        if (this.waiting === 0) this.wakeIdle();
      }, ms),
    );
  }

  private idle: (() => void)[] = [];

  private wakeIdle(): void {
    const w = this.idle;
    this.idle = [];
    for (const f of w) f();
  }

  readv(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.later('read', fd, () => this.inner.readv(fd, v, offset, speed));
  }

  writev(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.later('write', fd, () => this.inner.writev(fd, v, offset, speed));
  }

  fsync(fd: number, datasync: boolean, speed?: FsSpeed): Promise<number> {
    return this.later('fsync', fd, () => this.inner.fsync(fd, datasync, speed));
  }

  fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number> {
    return this.inner.fallocate(fd, mode, offset, length);
  }

  copyFileRange(fdIn: number, offIn: Offset, fdOut: number, offOut: Offset, length: number): Promise<number> {
    return this.inner.copyFileRange(fdIn, offIn, fdOut, offOut, length);
  }

  stats(): EngineStats {
    return this.inner.stats();
  }

  async close(): Promise<void> {
    if (this.waiting > 0) await new Promise<void>((r) => this.idle.push(r));
    await this.inner.close();
  }
}
