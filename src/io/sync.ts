// The sync engine: every call inline on the event loop thread, as duofs did
// before it had engines. Cheapest on a fast local filesystem; on a slow one
// every request of every guest waits behind the slowest (use it to measure
// that, or where nothing else is allowed).
import { copyFileRangeRaw, fallocateRaw, fsyncRaw, preadvRaw, pwritevRaw } from '../sys/raw-io.js';
import { offsetBig, type EngineStats, type IoEngine, type IoVecs, type Offset } from './engine.js';

export class SyncEngine implements IoEngine {
  readonly kind = 'sync' as const;
  readonly inflight = 0;
  private calls = 0;
  private closed = false;

  private run(f: () => number): Promise<number> {
    if (this.closed) return Promise.resolve(-9 /* EBADF */);
    this.calls++;
    return Promise.resolve(f());
  }

  readv(fd: number, v: IoVecs, offset: Offset): Promise<number> {
    return this.run(() => preadvRaw(fd, v.iov, v.count, offset));
  }

  writev(fd: number, v: IoVecs, offset: Offset): Promise<number> {
    return this.run(() => pwritevRaw(fd, v.iov, v.count, offset));
  }

  readvNow(fd: number, v: IoVecs, offset: Offset): number | undefined {
    if (this.closed) return undefined;
    this.calls++;
    return preadvRaw(fd, v.iov, v.count, offset);
  }

  writevNow(fd: number, v: IoVecs, offset: Offset): number | undefined {
    if (this.closed) return undefined;
    this.calls++;
    return pwritevRaw(fd, v.iov, v.count, offset);
  }

  fsync(fd: number, datasync: boolean): Promise<number> {
    return this.run(() => fsyncRaw(fd, datasync));
  }

  fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number> {
    return this.run(() => fallocateRaw(fd, mode, offset, length));
  }

  copyFileRange(fdIn: number, offIn: Offset, fdOut: number, offOut: Offset, length: number): Promise<number> {
    const offs = Buffer.alloc(16);
    offs.writeBigInt64LE(offsetBig(offIn), 0);
    offs.writeBigInt64LE(offsetBig(offOut), 8);
    return this.run(() => copyFileRangeRaw(fdIn, fdOut, offs, length));
  }

  stats(): EngineStats {
    return { kind: this.kind, inline: this.calls, offloaded: 0, inflight: 0 };
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
