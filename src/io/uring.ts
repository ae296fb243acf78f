// The io_uring engine: each call becomes one SQE; the kernel runs it inline
// when it can (a page-cache hit) or on its own workers when it would block,
// and posts a CQE whose res is already our convention (count or -errno).
// Calls made in one turn of the event loop are submitted together, with one
// io_uring_enter at the end of the microtask queue. Completions are reaped
// right after each submit (those the kernel finished inline) and whenever
// the ring's eventfd turns readable in the event loop.
//
// Every call holds a slot (its user_data) that keeps the iovec array and the
// Buffers it points into referenced until its CQE arrives. At most
// cqEntries calls are in the kernel at once, so the CQ never overflows;
// calls beyond that, or beyond a full SQ, wait in a JS queue in order and
// are never dropped. copy_file_range has no io_uring opcode: it runs on the
// fallback engine (threads).
import { IORING_FSYNC_DATASYNC, IORING_OP_FALLOCATE, IORING_OP_FSYNC, IORING_OP_READV, IORING_OP_WRITEV, IoUring } from '../sys/uring.js';
import { addressOf } from '../sys/raw-io.js';
import type { EngineStats, FsSpeed, IoEngine, IoVecs, Offset } from './engine.js';
import { fsyncInline, readInlineFirst, writeInline } from './inline-first.js';

const EBADF = 9;
const EINVAL = 22;
const EAGAIN = 11;
const EBUSY = 16;
const MAX_OFFSET = 2n ** 63n;

/** One call: what goes in its SQE, what must outlive it, whom to tell. */
interface Call {
  opcode: number;
  fd: number;
  off: Offset;
  addr: number | bigint;
  len: number;
  opFlags: number;
  keep: unknown;
  resolve: (r: number) => void;
}

/** A u64 the kernel takes as a signed position: negative (or >= 2^63) is EINVAL, as for preadv. READV's -1 would mean "the file position". */
function badOffset(o: Offset): boolean {
  return typeof o === 'bigint' ? o < 0n || o >= MAX_OFFSET : !(o >= 0) || !Number.isSafeInteger(o);
}

export class UringEngine implements IoEngine {
  readonly kind = 'io_uring' as const;
  private readonly ring: IoUring;
  /** calls in the kernel, by user_data */
  private readonly slots: (Call | undefined)[];
  private readonly freeSlots: number[] = [];
  /** calls waiting for a slot or an SQE, oldest first */
  private waiting: Call[] = [];
  private waitHead = 0;
  private inKernel = 0;
  private delegated = 0;
  private flushQueued = false;
  private inlineCalls = 0;
  private offloadedCalls = 0;
  private closed = false;
  /** the ring is released: nothing may touch it again */
  private gone = false;
  private idle: (() => void)[] = [];
  private readonly flushNow = (): void => this.flush();
  private readonly completeCall = (id: number, res: number): void => this.complete(id, res);

  constructor(
    entries: number,
    private readonly fallback: IoEngine,
    private readonly inlineFirst = true,
  ) {
    this.ring = new IoUring(entries);
    const n = Math.min(this.ring.cqEntries, 65536);
    this.slots = new Array<Call | undefined>(n).fill(undefined);
    for (let i = n - 1; i >= 0; i--) this.freeSlots.push(i);
    this.ring.watch(() => this.onEventFd());
  }

  get inflight(): number {
    return this.inKernel + (this.waiting.length - this.waitHead) + this.delegated;
  }

  private inline(r: number): Promise<number> {
    this.inlineCalls++;
    return Promise.resolve(r);
  }

  private start(c: Omit<Call, 'resolve'>): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    return new Promise<number>((resolve) => {
      const call = c as Call;
      call.resolve = resolve;
      if (this.inflight === 0) this.ring.hold(true);
      if (this.waitHead === this.waiting.length && this.place(call)) return;
      this.waiting.push(call);
      this.scheduleFlush();
    });
  }

  /** Writes `call` into an SQE if a slot and an SQE are free; false when it must wait. */
  private place(call: Call): boolean {
    if (this.freeSlots.length === 0) return false;
    if (this.ring.sqSpace() === 0) {
      this.flush(); // a full SQ: hand it to the kernel now to make room
      if (this.freeSlots.length === 0 || this.ring.sqSpace() === 0) return false;
    }
    const id = this.freeSlots.pop()!;
    this.slots[id] = call;
    this.inKernel++;
    this.ring.prep(call.opcode, call.fd, call.off, call.addr, call.len, call.opFlags, id);
    this.scheduleFlush();
    return true;
  }

  private scheduleFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(this.flushNow);
  }

  /** Submits every prepared SQE, then reaps what the kernel finished inline. */
  private flush(): void {
    this.flushQueued = false;
    if (this.gone) return;
    if (this.ring.unsubmitted() > 0) {
      const r = this.ring.submit();
      if (r < 0 && r !== -EAGAIN && r !== -EBUSY) {
        // The kernel took none of them and will not: fail them, as a syscall would.
        for (const id of this.ring.unprep()) this.complete(id, r);
      } else if (r < 0 || this.ring.unsubmitted() > 0) {
        // Short of kernel resources for now: try again after the next completion or tick.
        setImmediate(this.flushNow);
      }
    }
    this.ring.reap(this.completeCall);
    this.admit();
    this.releaseIfDone();
  }

  private onEventFd(): void {
    if (this.gone) return;
    this.ring.reap(this.completeCall);
    this.admit();
    if (this.ring.unsubmitted() > 0) this.scheduleFlush();
    this.releaseIfDone();
  }

  /** Moves waiting calls into freed slots. */
  private admit(): void {
    while (this.waitHead < this.waiting.length) {
      if (this.freeSlots.length === 0 || this.ring.sqSpace() === 0) break;
      const call = this.waiting[this.waitHead]!;
      this.waiting[this.waitHead++] = undefined as unknown as Call;
      this.place(call); // cannot fail: a slot and an SQE are free
    }
    if (this.waitHead === this.waiting.length && this.waitHead > 0) {
      this.waiting = [];
      this.waitHead = 0;
    }
  }

  private complete(id: number, res: number): void {
    const call = this.slots[id];
    if (!call) return; // not ours: never expected
    this.slots[id] = undefined;
    this.freeSlots.push(id);
    this.inKernel--;
    this.offloadedCalls++; // through the ring, however soon it was reaped; `inline` is what never left the loop
    call.keep = undefined;
    call.resolve(res);
    this.settled();
  }

  private settled(): void {
    if (this.inflight === 0 && !this.gone) this.ring.hold(false);
  }

  readv(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): Promise<number> {
    if (badOffset(offset)) return Promise.resolve(this.closed ? -EBADF : -EINVAL);
    if (this.closed) return Promise.resolve(-EBADF);
    // A page-cache hit costs less inline than an SQE round trip (inline-first.ts).
    const a = this.inlineFirst ? readInlineFirst(fd, v, offset, speed) : { got: 0, rest: v, offset };
    if ('done' in a) return this.inline(a.done);
    const got = a.got;
    if (got) this.inlineCalls++;
    return this.start({ opcode: IORING_OP_READV, fd, off: a.offset, addr: addressOf(a.rest.iov), len: a.rest.count, opFlags: 0, keep: a.rest }).then(
      (n) => (got === 0 ? n : n < 0 ? got : got + n),
    );
  }

  writev(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): Promise<number> {
    if (badOffset(offset)) return Promise.resolve(this.closed ? -EBADF : -EINVAL);
    if (this.closed) return Promise.resolve(-EBADF);
    // io_uring hands buffered ext4 writes to its workers (~20 µs); inline they cost ~6 µs.
    const r = this.inlineFirst ? writeInline(fd, v, offset, speed) : undefined;
    if (r !== undefined) return this.inline(r);
    return this.start({ opcode: IORING_OP_WRITEV, fd, off: offset, addr: addressOf(v.iov), len: v.count, opFlags: 0, keep: v });
  }

  readvNow(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): number | undefined {
    // Bad offsets and a closed ring get their answer from readv.
    if (!this.inlineFirst || this.closed || speed === 'remote' || badOffset(offset)) return undefined;
    const a = readInlineFirst(fd, v, offset, speed);
    if (!('done' in a)) return undefined; // partly or not cached: readv reads it (again) through the ring
    this.inlineCalls++;
    return a.done;
  }

  writevNow(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed = 'remote'): number | undefined {
    if (!this.inlineFirst || this.closed || badOffset(offset)) return undefined;
    const r = writeInline(fd, v, offset, speed);
    if (r !== undefined) this.inlineCalls++;
    return r;
  }

  fsync(fd: number, datasync: boolean, speed: FsSpeed = 'remote'): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    const r = this.inlineFirst ? fsyncInline(fd, datasync, speed) : undefined;
    if (r !== undefined) return this.inline(r);
    return this.start({ opcode: IORING_OP_FSYNC, fd, off: 0, addr: 0, len: 0, opFlags: datasync ? IORING_FSYNC_DATASYNC : 0, keep: undefined });
  }

  fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number> {
    if (badOffset(offset) || badOffset(length)) return Promise.resolve(this.closed ? -EBADF : -EINVAL);
    // IORING_OP_FALLOCATE: off = offset, addr = length, len = mode.
    return this.start({ opcode: IORING_OP_FALLOCATE, fd, off: offset, addr: length, len: mode, opFlags: 0, keep: undefined });
  }

  copyFileRange(fdIn: number, offIn: Offset, fdOut: number, offOut: Offset, length: number): Promise<number> {
    if (this.closed) return Promise.resolve(-EBADF);
    if (this.inflight === 0) this.ring.hold(true);
    this.delegated++;
    this.offloadedCalls++;
    return this.fallback.copyFileRange(fdIn, offIn, fdOut, offOut, length).then((r) => {
      this.delegated--;
      this.settled();
      this.releaseIfDone();
      return r;
    });
  }

  stats(): EngineStats {
    return { kind: this.kind, inline: this.inlineCalls, offloaded: this.offloadedCalls, inflight: this.inflight };
  }

  /** After close(), once nothing is in flight. Only called outside a reap loop (it unmaps the CQ). */
  private releaseIfDone(): void {
    if (!this.closed || this.gone || this.inflight !== 0) return;
    this.gone = true;
    this.ring.close();
    const w = this.idle;
    this.idle = [];
    // On a later turn: the callers' reactions to the last calls (queued now) run first.
    if (w.length > 0)
      setImmediate(() => {
        for (const f of w) f();
      });
  }

  /** Stops taking calls; once every call in flight has completed, releases the ring. The fallback engine is not ours to close. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.releaseIfDone();
      if (!this.gone) this.scheduleFlush(); // anything prepared still goes to the kernel
    }
    if (this.gone) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }
}

/** The io_uring engine, or a SysError('io_uring_setup', errno) when the kernel refuses a ring (the caller falls back). */
export interface UringOptions {
  entries?: number;
  /** copy_file_range, which has no opcode */
  fallback: IoEngine;
  /** answer page-cache hits inline before using the ring (default true; tests turn it off to drive the ring) */
  inlineFirst?: boolean;
}

export function createUringEngine(o: UringOptions): IoEngine {
  return new UringEngine(o.entries ?? 256, o.fallback, o.inlineFirst ?? true);
}
