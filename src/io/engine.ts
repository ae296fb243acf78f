// The I/O engine: where the backend's blocking syscalls run. The backend
// owns the state on the one JavaScript thread; the engine runs the calls
// that can block (a cold disk, NFS or a FUSE filesystem under the export)
// off that thread and completes them out of order, so one slow request
// never waits in front of another.
//
// Three engines share this interface: `sync` (every call inline, as before),
// `threads` (a call that would block runs on libuv's pool through koffi's
// async calls) and `io_uring` (submission and completion rings, completions
// on an eventfd in the event loop).
//
// Results follow the raw syscall convention: a promise of the count (>= 0)
// or of -errno. Engines never reject for a syscall failure; the caller
// (src/sys/vectored.ts, the backend) names the operation and the object.

export type Offset = number | bigint;

export type EngineKind = 'sync' | 'threads' | 'io_uring';

/**
 * An iovec array the kernel may read: `count` struct iovec entries (16
 * bytes each: u64 base, u64 len) at the start of `iov`. `keep` holds the
 * Buffers the entries point into; the engine keeps it (and `iov`) referenced
 * until the call completes, so neither can be collected under the kernel.
 */
export interface IoVecs {
  readonly iov: Buffer;
  readonly count: number;
  readonly keep: readonly Buffer[];
}

/**
 * What the backend knows of a file's filesystem (from fstatfs), so an engine
 * without the kernel's help (threads) can tell what may run inline:
 * 'memory' (tmpfs: never blocks), 'local' (a disk filesystem: buffered
 * writes land in the page cache), 'remote' (NFS, FUSE, anything unknown:
 * everything may block). Engines that let the kernel decide ignore it.
 */
export type FsSpeed = 'memory' | 'local' | 'remote';

export interface IoEngine {
  readonly kind: EngineKind;
  /** preadv(2). */
  readv(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number>;
  /** pwritev(2): one call, which may be short (the caller retries the rest). */
  writev(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): Promise<number>;
  /**
   * preadv(2) on this thread, now, when the engine would run it inline
   * anyway and it completes there whole (a page-cache hit): the count or
   * -errno. undefined: it may block, go through readv (which tries again).
   * The transfer layer calls it first, so the common request costs no
   * promise and its reply leaves in the turn its request came in.
   */
  readvNow?(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): number | undefined;
  /** pwritev(2) now when the engine would run it inline anyway (see readvNow); undefined: use writev. */
  writevNow?(fd: number, v: IoVecs, offset: Offset, speed?: FsSpeed): number | undefined;
  /** fsync(2), or fdatasync(2) when `datasync`. */
  fsync(fd: number, datasync: boolean, speed?: FsSpeed): Promise<number>;
  /** fallocate(2). */
  fallocate(fd: number, mode: number, offset: Offset, length: Offset): Promise<number>;
  /** copy_file_range(2) at explicit offsets (flags 0). */
  copyFileRange(fdIn: number, offIn: Offset, fdOut: number, offOut: Offset, length: number): Promise<number>;
  /** Calls submitted and not yet completed. */
  readonly inflight: number;
  /** What it has done so far (for `duofs status`, tests and the bench). */
  stats(): EngineStats;
  /**
   * Stops taking calls and resolves once every call in flight has completed
   * (their promises settle first). Idempotent.
   */
  close(): Promise<void>;
}

export interface EngineStats {
  kind: EngineKind;
  /** calls completed on the event loop thread without blocking */
  inline: number;
  /** calls that ran (or waited) off the event loop thread */
  offloaded: number;
  /** calls now in flight */
  inflight: number;
}

/** Offsets as the kernel wants them: an unsigned 64-bit position. */
export function offsetBig(o: Offset): bigint {
  return typeof o === 'bigint' ? o : BigInt(o);
}
