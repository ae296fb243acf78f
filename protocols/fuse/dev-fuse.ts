// A FUSE session attached to the host kernel through /dev/fuse, so an
// operator can look at an export exactly as a virtio-fs guest sees it.
// The fd is non-blocking and watched from Node's event loop; this thread
// never touches the mount itself (that would deadlock on its own requests).
import {
  AT_FDCWD,
  Errno,
  MNT_DETACH,
  MS_NODEV,
  MS_NOSUID,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  SysError,
  close,
  mount,
  openat,
  readRaw,
  umount2,
  writeRaw,
} from '../../src/sys/index.js';
import type { Logger } from '../../src/log.js';
import { pollFd, type FdPoll, type PollCallback } from '../../src/sys/poll.js';
import { OP, OUT_HEADER_SIZE } from './constants.js';
import { encodeOutHeader } from './wire.js';
import { RequestBody, type ReplyTo } from './request.js';
import type { FuseSession } from './session.js';

/** Header + the largest WRITE payload, with room for the write_in struct (the kernel refuses smaller reads). */
const bufferSize = (maxWrite: number): number => maxWrite + 4096 + 80;

/** Requests read per turn of the event loop; then other clients, queues and completions get theirs. */
export const REQUESTS_PER_TURN = 32;
/**
 * Requests taken from /dev/fuse and not yet answered. At the bound we stop
 * reading (the kernel queues the rest) until one finishes, so a flood
 * costs at most this many request buffers.
 */
export const MAX_IN_FLIGHT = 64;

export class DevFuseMount {
  private readonly fd: number;
  private readonly poll: FdPoll;
  private readonly onPoll: PollCallback;
  private readonly bufSize: number;
  /**
   * Request buffers not holding a request. A buffer goes back only when its
   * request is answered (replies come out of order; a WRITE's data and a
   * READ's reply live in it until then).
   */
  private readonly free: Buffer[] = [];
  private inFlight = 0;
  /** The poll is started (we wait for the fd to become readable). */
  private polling = false;
  /** A batch stopped at REQUESTS_PER_TURN; the next one runs here. */
  private resume: NodeJS.Immediate | null = null;
  private draining = false;
  private closed = false;

  private constructor(
    private readonly mountpoint: string,
    private readonly session: FuseSession,
    private readonly log: Logger,
    maxWrite: number,
    fd: number,
    /** we mounted it, so close() unmounts it */
    private readonly owned: boolean,
  ) {
    this.fd = fd;
    this.bufSize = bufferSize(maxWrite);
    this.onPoll = (status, ev) => {
      if (status === 0 && ev && ev.disconnect && !ev.readable) this.onUnmounted();
      else if (this.resume === null && !this.draining) this.drain();
    };
    this.poll = pollFd(fd, { readable: true, disconnect: true }, this.onPoll);
    this.polling = true;
  }

  /** Opens /dev/fuse and mounts it on `mountpoint` (root only). */
  static attach(mountpoint: string, session: FuseSession, log: Logger, maxWrite: number): DevFuseMount {
    const fd = DevFuseMount.mountChannel(mountpoint, maxWrite);
    log.info({ mountpoint }, 'FUSE session mounted on the host');
    return new DevFuseMount(mountpoint, session, log, maxWrite, fd, true);
  }

  /**
   * Opens /dev/fuse and mounts it on `mountpoint`, returning the channel fd
   * for a server to adopt: a sandbox supervisor mounts in the host's mount
   * namespace and hands the fd to the confined server (whose own mounts no
   * one else would see).
   */
  static mountChannel(mountpoint: string, maxWrite: number): number {
    const fd = openat(AT_FDCWD, '/dev/fuse', O_RDWR | O_NONBLOCK | O_CLOEXEC);
    try {
      mount(
        'duofs',
        mountpoint,
        'fuse.duofs',
        MS_NOSUID | MS_NODEV,
        `fd=${fd},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other,max_read=${maxWrite}`,
      );
    } catch (e) {
      close(fd);
      throw e;
    }
    return fd;
  }

  /** Serves a channel mounted by someone else (see mountChannel); they unmount it, not we. */
  static adopt(fd: number, mountpoint: string, session: FuseSession, log: Logger, maxWrite: number): DevFuseMount {
    log.info({ mountpoint, fd }, 'FUSE session serves a mount made by the sandbox supervisor');
    return new DevFuseMount(mountpoint, session, log, maxWrite, fd, false);
  }

  /**
   * Reads and dispatches requests, at most REQUESTS_PER_TURN, then yields.
   * Leaves exactly one way to be called again: the poll (after EAGAIN), a
   * setImmediate (the batch was used up), or a finishing request (at
   * MAX_IN_FLIGHT). The poll is level-triggered, so it is stopped in the
   * other two cases (else it would fire on every turn, or spin).
   */
  private drain(): void {
    if (this.closed) return;
    this.draining = true;
    try {
      for (let budget = REQUESTS_PER_TURN; budget > 0 && !this.closed; budget--) {
        if (this.inFlight >= MAX_IN_FLIGHT) {
          this.unwatch(); // finish() reads on
          return;
        }
        const buf = this.free.pop() ?? Buffer.allocUnsafeSlow(this.bufSize);
        const n = readRaw(this.fd, buf);
        if (n <= 0) {
          this.free.push(buf);
          if (n === -Errno.ENOENT) continue; // an interrupted request vanished
          if (n === -Errno.ENODEV || n === 0) {
            this.onUnmounted();
            return;
          }
          if (n !== -Errno.EAGAIN && n !== -Errno.EINTR) {
            this.log.error({ mountpoint: this.mountpoint, errno: -n }, 'reading /dev/fuse failed');
          }
          this.watch();
          return;
        }
        this.dispatch(buf, n);
      }
      if (this.closed) return;
      // The batch is used up and more may be queued: continue after the others had their turn.
      this.unwatch();
      this.continueSoon();
    } finally {
      this.draining = false;
    }
  }

  private dispatch(buf: Buffer, n: number): void {
    const unique = buf.readBigUInt64LE(8);
    if (buf.readUInt32LE(4) === OP.SETLKW) {
      // A lock wait may last until another request (the unlock, an
      // INTERRUPT) arrives: it must not hold a pooled buffer or count
      // towards the bound, or enough waiters would stop us reading for good.
      const own = Buffer.from(buf.subarray(0, n));
      this.free.push(buf);
      this.session.handle(RequestBody.of(own), this.replyTo(unique, null));
      return;
    }
    this.inFlight++;
    this.session.handle(RequestBody.of(buf.subarray(0, n)), this.replyTo(unique, buf));
  }

  private watch(): void {
    if (this.polling || this.closed) return;
    this.poll.start({ readable: true, disconnect: true }, this.onPoll);
    this.polling = true;
  }

  private unwatch(): void {
    if (!this.polling) return;
    this.poll.stop();
    this.polling = false;
  }

  private continueSoon(): void {
    if (this.resume !== null || this.closed) return;
    this.resume = setImmediate(() => {
      this.resume = null;
      this.drain();
    });
  }

  /** A request was answered: its buffer can take the next one. */
  private finish(buf: Buffer): void {
    this.free.push(buf);
    this.inFlight--;
    // Stopped at the bound: read on (later, not inside the reply call).
    if (!this.closed && !this.draining && !this.polling) this.continueSoon();
  }

  /** The reply side of one request; `slot` is its pooled buffer (null: it has its own). */
  private replyTo(unique: bigint, slot: Buffer | null): ReplyTo {
    let open = slot !== null;
    const release = (): void => {
      if (!open) return;
      open = false;
      this.finish(slot!);
    };
    const written = (frame: Buffer): boolean => {
      const ok = this.write(frame);
      release();
      return ok;
    };
    return {
      send: (error, body) => {
        const len = OUT_HEADER_SIZE + (error ? 0 : body.reduce((a, b) => a + b.length, 0));
        const out = Buffer.allocUnsafe(len);
        encodeOutHeader(out, len, error, unique);
        if (!error) {
          let at = OUT_HEADER_SIZE;
          for (const b of body) at += b.copy(out, at);
        }
        return written(out);
      },
      sendRead: (size, fill) => {
        // The request is parsed by now: its own buffer takes the reply (the
        // kernel asks for at most max_read = max_write bytes, which fits).
        const buf = slot && OUT_HEADER_SIZE + size <= slot.length ? slot : Buffer.allocUnsafe(OUT_HEADER_SIZE + size);
        const failed = (e: unknown): void => {
          const errno = e instanceof SysError ? e.errno : Errno.EIO;
          encodeOutHeader(buf, OUT_HEADER_SIZE, errno, unique);
          written(buf.subarray(0, OUT_HEADER_SIZE));
        };
        const filled = (n: number): void => {
          encodeOutHeader(buf, OUT_HEADER_SIZE + n, 0, unique);
          written(buf.subarray(0, OUT_HEADER_SIZE + n));
        };
        try {
          const n = fill([buf.subarray(OUT_HEADER_SIZE, OUT_HEADER_SIZE + size)], 0, size);
          if (typeof n === 'number') filled(n);
          else n.then(filled, failed);
        } catch (e) {
          failed(e);
        }
      },
      none: release,
    };
  }

  /** Writes one reply; false when the kernel did not take it. */
  private write(frame: Buffer): boolean {
    if (this.closed) return false;
    const r = writeRaw(this.fd, frame);
    // ENOENT: the request was interrupted and is gone.
    if (r < 0 && r !== -Errno.ENOENT)
      this.session.logs.warn('dev-fuse.write', { mountpoint: this.mountpoint, errno: -r }, 'writing a FUSE reply failed');
    return r >= 0;
  }

  private onUnmounted(): void {
    if (this.closed) return;
    this.log.info({ mountpoint: this.mountpoint }, 'FUSE mount went away');
    this.shutdown(false);
  }

  /** Unmounts (lazily, so busy users do not block exit) and closes the channel. */
  close(): void {
    this.shutdown(true);
  }

  private shutdown(unmount: boolean): void {
    if (this.closed) return;
    this.closed = true;
    if (this.resume !== null) clearImmediate(this.resume);
    this.resume = null;
    this.poll.stop();
    this.poll.close();
    this.polling = false;
    if (unmount && this.owned) {
      try {
        umount2(this.mountpoint, MNT_DETACH);
      } catch (e) {
        this.log.warn({ mountpoint: this.mountpoint, err: (e as Error).message }, 'unmount failed');
      }
    }
    close(this.fd);
    this.session.close();
  }
}
