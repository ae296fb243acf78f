// The I/O engine a test runs on: DUOFS_IO_ENGINE (sync, threads, io_uring;
// `npm run test:engines` runs the protocol, FUSE and vhost suites once per
// engine), else what `auto` picks. RecordingEngine keeps every result, so a
// test can prove no call failed (an EFAULT would mean guest memory was
// unmapped under a read).
import { createEngine, defaultEngineChoice, threadPoolSize } from '../../src/io/select.js';
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

/** Makes chosen calls fail as the storage would: `fault(call, fd)` returns an errno to fail with, or 0 to pass the call on. */
export class FaultEngine extends RecordingEngine {
  constructor(inner: IoEngine, private readonly fault: (call: CallResult['call'], fd: number) => number) {
    super(inner);
  }

  private failing(call: CallResult['call'], fd: number, pass: () => Promise<number>): Promise<number> {
    const e = this.fault(call, fd);
    return e ? Promise.resolve(-e) : pass();
  }

  override readv(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.failing('read', fd, () => super.readv(fd, v, offset, speed));
  }

  override writev(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number> {
    return this.failing('write', fd, () => super.writev(fd, v, offset, speed));
  }

  override fsync(fd: number, datasync: boolean, speed?: FsSpeed): Promise<number> {
    return this.failing('fsync', fd, () => super.fsync(fd, datasync, speed));
  }

  override fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number> {
    return this.failing('fallocate', fd, () => super.fallocate(fd, mode, offset, length));
  }
}
