// The threads engine: a call that may block runs on libuv's thread pool
// (koffi's async calls; the pool has --thread-pool-size threads, set through
// UV_THREADPOOL_SIZE before the pool starts). A hop to the pool costs
// ~30 µs here against ~1 µs inline, so what cannot block stays inline:
//   * reads first try preadv2(RWF_NOWAIT), which answers from the page
//     cache or fails with EAGAIN; only then (or where the filesystem has
//     no NOWAIT, e.g. FUSE, NFS) does the read go to the pool. A partly
//     cached range returns the cached part inline and reads the rest there.
//   * buffered writes on a local disk or tmpfs land in the page cache and
//     run inline (ext4 and tmpfs refuse RWF_NOWAIT for buffered writes);
//     on anything else they go to the pool.
//   * fsync, fallocate and copy_file_range always go to the pool, except
//     on tmpfs (nothing to wait for).
import { copyFileRangeOnPool, fallocateOnPool, fsyncOnPool, preadvOnPool, pwritevOnPool } from '../sys/raw-io.js';
import { offsetBig, type EngineStats, type FsSpeed, type IoEngine, type IoVecs, type Offset } from './engine.js';
import { fsyncInline, readInlineFirst, writeInline } from './inline-first.js';

const EBADF = 9;

export class ThreadsEngine implements IoEngine {
  readonly kind = 'threads' as const;
  private running = 0;
  private inlineCalls = 0;
  private offloadedCalls = 0;
  private closed = false;
  private idle: (() => void)[] = [];

  constructor(readonly poolSize: number) {}

  get inflight(): number {
    return this.running;
  }

  /** Runs `start` on the pool; `keep` stays referenced until it completes. */
  private offload(start: (done: (r: number) => void) => void, keep: unknown): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    this.running++;
    this.offloadedCalls++;
    return new Promise<number>((resolve) => {
      start((r) => {
        void keep;
        this.running--;
        resolve(r);
        if (this.running === 0) this.wakeIdle();
      });
    });
  }

  private inline(r: number): Promise<number> {
    this.inlineCalls++;
    return Promise.resolve(r);
  }

  readv(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    const a = readInlineFirst(fd, v, offset, speed);
    if ('done' in a) return this.inline(a.done);
    if (a.got) this.inlineCalls++;
    const got = a.got;
    return this.offload((done) => preadvOnPool(fd, a.rest.iov, a.rest.count, a.offset, done), a.rest).then((n) =>
      got === 0 ? n : n < 0 ? got : got + n,
    );
  }

  writev(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    const r = writeInline(fd, v, offset, speed);
    if (r !== undefined) return this.inline(r);
    return this.offload((done) => pwritevOnPool(fd, v.iov, v.count, offset, done), v);
  }

  readvNow(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): number | undefined {
    // On NFS and FUSE the NOWAIT attempt only says EOPNOTSUPP; readv makes it.
    if (this.closed || speed === 'remote') return undefined;
    const a = readInlineFirst(fd, v, offset, speed);
    if (!('done' in a)) return undefined; // partly or not cached: readv reads it (again) off the loop
    this.inlineCalls++;
    return a.done;
  }

  writevNow(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): number | undefined {
    if (this.closed) return undefined;
    const r = writeInline(fd, v, offset, speed);
    if (r !== undefined) this.inlineCalls++;
    return r;
  }

  fsync(fd: number, datasync: boolean, speed: FsSpeed = 'remote'): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    const r = fsyncInline(fd, datasync, speed);
    if (r !== undefined) return this.inline(r);
    return this.offload((done) => fsyncOnPool(fd, datasync, done), undefined);
  }

  fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    return this.offload((done) => fallocateOnPool(fd, mode, offset, length, done), undefined);
  }

  copyFileRange(fdIn: number, offIn: Offset, fdOut: number, offOut: Offset, length: number): Promise<number> {
    const offs = Buffer.alloc(16);
    offs.writeBigInt64LE(offsetBig(offIn), 0);
    offs.writeBigInt64LE(offsetBig(offOut), 8);
    return this.offload((done) => copyFileRangeOnPool(fdIn, fdOut, offs, length, done), offs);
  }

  stats(): EngineStats {
    return { kind: this.kind, inline: this.inlineCalls, offloaded: this.offloadedCalls, inflight: this.running };
  }

  private wakeIdle(): void {
    const w = this.idle;
    this.idle = [];
    for (const f of w) f();
  }

  close(): Promise<void> {
    this.closed = true;
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }
}
