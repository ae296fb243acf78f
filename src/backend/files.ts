// Open files and directory streams: the host fds behind a client's open
// handle (a 9P fid after Tlopen, a FUSE fh).
import { DT_UNKNOWN, Errno, SysError, close, getdents, getdentsOnPool, seekdir, type Dirent } from '../sys/index.js';
import type { Inode } from './inode-table.js';
import type { FdAccount } from './fd-budget.js';
import type { FsSpeed } from '../io/engine.js';

export class OpenFile {
  private closed = false;
  /** in-flight asynchronous calls (fsync) that still use the fd */
  private busy = 0;
  /** the session whose fd budget this fd is charged to */
  account: FdAccount | undefined;
  /** the speed class of its filesystem: what the engine may run inline */
  speed: FsSpeed = 'remote';

  constructor(
    readonly inode: Inode,
    readonly fd: number,
    readonly flags: number,
  ) {
    inode.openCount++;
  }

  /** Released by its client (the fd may still serve calls in flight). */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs an asynchronous call with the fd kept open until it finishes. */
  async use<T>(fn: (fd: number) => Promise<T>): Promise<T> {
    this.busy++;
    try {
      return await fn(this.fd);
    } finally {
      this.busy--;
      if (this.closed && this.busy === 0) this.closeFd();
    }
  }

  /**
   * Like use, for a call that may finish at once: then no promise is made
   * (nothing can close the fd while this thread runs it).
   */
  useNow<T>(fn: (fd: number) => T | Promise<T>): T | Promise<T> {
    const r = fn(this.fd);
    if (!(r instanceof Promise)) return r;
    this.busy++;
    return r.finally(() => {
      this.busy--;
      if (this.closed && this.busy === 0) this.closeFd();
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.inode.handleClosed();
    if (this.busy === 0) this.closeFd();
  }

  private closeFd(): void {
    try {
      close(this.fd);
    } finally {
      this.account?.give();
      this.account = undefined;
    }
  }
}

const DIRENT_BUF = 32 * 1024;

/**
 * A directory stream with stable offsets: every entry carries the host
 * filesystem's cookie for the position after it, and a read at any cookie
 * returned earlier resumes right there (telldir/seekdir semantics).
 */
export class DirStream {
  private readonly buf = Buffer.allocUnsafe(DIRENT_BUF);
  /** entries read from the host but not yet handed out */
  private pending: Dirent[] = [];
  /** cookie of the position the next pending entry (or host read) starts at */
  private pos = 0n;
  private closed = false;
  /** a read on the pool still uses the fd (and the buffer) */
  private busy = false;
  /** reads on the pool, one after another (the position and buffer are shared) */
  private queue: Promise<void> = Promise.resolve();
  /** the session whose fd budget this fd is charged to */
  account: FdAccount | undefined;

  constructor(
    readonly inode: Inode,
    readonly fd: number,
    private readonly opts: { hide?: (name: Buffer) => boolean; unknownTypes?: boolean } = {},
  ) {
    inode.openCount++;
  }

  /**
   * Calls `emit` for entries starting at `offset` until it returns false
   * (the reply is full; that entry is kept for the next call) or the
   * directory ends.
   */
  read(offset: bigint, emit: (d: Dirent) => boolean): void {
    this.seekTo(offset);
    while (this.emitPending(emit)) {
      this.pending = this.fetch();
      if (this.pending.length === 0) return;
    }
  }

  private seekTo(offset: bigint): void {
    if (offset === this.pos) return;
    seekdir(this.fd, offset, this.inode.label);
    this.pending = [];
    this.pos = offset;
  }

  /** Hands out the pending entries; false once `emit` is full (that entry stays pending). */
  private emitPending(emit: (d: Dirent) => boolean): boolean {
    while (this.pending.length > 0) {
      const d = this.pending[0]!;
      if (!emit(d)) return false;
      this.pending.shift();
      this.pos = d.off;
    }
    return true;
  }

  /**
   * read(), with getdents on libuv's pool (a directory on a server). Reads
   * of one stream run one after another; the fd stays open until the last
   * one ends, even if the client releases the stream meanwhile.
   */
  readOnPool(offset: bigint, emit: (d: Dirent) => boolean): Promise<void> {
    const run = this.queue.then(() => this.readLater(offset, emit));
    this.queue = run.catch(() => {});
    return run;
  }

  private async readLater(offset: bigint, emit: (d: Dirent) => boolean): Promise<void> {
    if (this.closed) throw new SysError(Errno.EBADF, 'getdents64', `${this.inode.label} (released)`);
    this.busy = true;
    try {
      this.seekTo(offset);
      while (this.emitPending(emit)) {
        this.pending = await this.fetchOnPool();
        if (this.pending.length === 0) return;
      }
    } finally {
      this.busy = false;
      if (this.closed) this.closeFd();
    }
  }

  /** One batch from the host, minus names the security model keeps for itself. */
  private fetch(): Dirent[] {
    for (;;) {
      const kept = this.keep(getdents(this.fd, this.buf, this.inode.label));
      if (kept) return kept;
    }
  }

  private async fetchOnPool(): Promise<Dirent[]> {
    for (;;) {
      const kept = this.keep(await getdentsOnPool(this.fd, this.buf, this.inode.label));
      if (kept) return kept;
    }
  }

  /** The entries of a batch the client sees; undefined when all were hidden (read on). */
  private keep(batch: Dirent[]): Dirent[] | undefined {
    if (batch.length === 0) return batch;
    const { hide, unknownTypes } = this.opts;
    const kept = hide ? batch.filter((d) => !hide(d.name)) : batch;
    if (unknownTypes) for (const d of kept) d.type = DT_UNKNOWN;
    if (kept.length > 0) return kept;
    // A hidden entry's cookie still moves the position on.
    this.pos = batch[batch.length - 1]!.off;
    return undefined;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.inode.handleClosed();
    if (!this.busy) this.closeFd();
  }

  private fdClosed = false;

  private closeFd(): void {
    if (this.fdClosed) return;
    this.fdClosed = true;
    try {
      close(this.fd);
    } finally {
      this.account?.give();
      this.account = undefined;
    }
  }
}
