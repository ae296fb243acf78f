// A FUSE session attached to the host kernel through /dev/fuse, so an
// operator can look at an export exactly as a virtio-fs guest sees it.
// The fd is non-blocking and watched from Node's event loop; this thread
// never touches the mount itself (that would deadlock on its own requests).
import koffi from 'koffi';
import {
  AT_FDCWD, Errno, MNT_DETACH, MS_NODEV, MS_NOSUID, O_CLOEXEC, O_NONBLOCK, O_RDWR, SysError, close, mount, openat,
  readRaw, umount2, writeRaw,
} from '../../src/sys/index.js';
import type { Logger } from '../../src/log.js';
import { OUT_HEADER_SIZE } from './constants.js';
import { encodeOutHeader } from './wire.js';
import { RequestBody, type ReplyTo } from './request.js';
import type { FuseSession } from './session.js';

/** Header + the largest WRITE payload, with room for the write_in struct. */
const bufferSize = (maxWrite: number): number => maxWrite + 4096 + 80;

/**
 * Requests read per turn of the event loop. The poll is level-triggered, so
 * what is left is read on the next turn, after every other fd has had its
 * turn: a flood through the mount cannot starve the guests' queues, the 9P
 * sockets or new connections (issue 12 measured 11.6 s for one 9P request).
 */
export const DEV_FUSE_BATCH = 32;
/** Requests taken from the kernel and not yet answered; past it the reader waits (the kernel queues the rest). */
export const DEV_FUSE_MAX_INFLIGHT = 256;

export class DevFuseMount {
  private readonly fd: number;
  private readonly poll: ReturnType<typeof koffi.node.poll>;
  private readonly inBuf: Buffer;
  private closed = false;
  /** requests handed to the session and not yet answered */
  private inflight = 0;
  private reading = true;

  private constructor(
    private readonly mountpoint: string,
    private readonly session: FuseSession,
    private readonly log: Logger,
    maxWrite: number,
    fd: number,
  ) {
    this.fd = fd;
    this.inBuf = Buffer.alloc(bufferSize(maxWrite));
    this.poll = koffi.node.poll(fd, { readable: true, disconnect: true }, this.onPoll);
  }

  /** Opens /dev/fuse and mounts it on `mountpoint` (root only). */
  static attach(mountpoint: string, session: FuseSession, log: Logger, maxWrite: number): DevFuseMount {
    const fd = openat(AT_FDCWD, '/dev/fuse', O_RDWR | O_NONBLOCK | O_CLOEXEC);
    try {
      mount('duofs', mountpoint, 'fuse.duofs', MS_NOSUID | MS_NODEV,
        `fd=${fd},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other,max_read=${maxWrite}`);
    } catch (e) {
      close(fd);
      throw e;
    }
    log.info({ mountpoint }, 'FUSE session mounted on the host');
    return new DevFuseMount(mountpoint, session, log, maxWrite, fd);
  }

  private drain(): void {
    for (let batch = 0; batch < DEV_FUSE_BATCH && !this.closed; batch++) {
      if (this.inflight >= DEV_FUSE_MAX_INFLIGHT) {
        this.pauseReading();
        return;
      }
      const n = readRaw(this.fd, this.inBuf);
      if (n === -Errno.EAGAIN || n === -Errno.EINTR) return;
      if (n === -Errno.ENOENT) continue; // an interrupted request vanished
      if (n === -Errno.ENODEV || n === 0) {
        this.onUnmounted();
        return;
      }
      if (n < 0) {
        this.log.error({ mountpoint: this.mountpoint, errno: -n }, 'reading /dev/fuse failed');
        return;
      }
      // A request may finish after the next read (a WRITE's data on the
      // engine): it gets bytes of its own.
      const unique = this.inBuf.readBigUInt64LE(8);
      this.inflight++;
      this.session.handle(RequestBody.of(Buffer.from(this.inBuf.subarray(0, n))), this.replyTo(unique));
    }
  }

  private pauseReading(): void {
    if (!this.reading) return;
    this.reading = false;
    this.poll.stop();
  }

  /** One request answered (or needing no answer): the reader may go on. */
  private finished(): void {
    this.inflight--;
    if (!this.reading && !this.closed && this.inflight < DEV_FUSE_MAX_INFLIGHT / 2) {
      this.reading = true;
      this.poll.start({ readable: true, disconnect: true }, this.onPoll);
    }
  }

  private readonly onPoll = (ev: { readable?: boolean; disconnect?: boolean }): void => {
    if (ev.disconnect && !ev.readable) this.onUnmounted();
    else this.drain();
  };

  private replyTo(unique: bigint): ReplyTo {
    let answered = false;
    const done = (): void => {
      if (answered) return;
      answered = true;
      this.finished();
    };
    return {
      send: (error, body) => {
        done();
        const len = OUT_HEADER_SIZE + (error ? 0 : body.reduce((a, b) => a + b.length, 0));
        const out = Buffer.allocUnsafe(len);
        encodeOutHeader(out, len, error, unique);
        if (!error) {
          let at = OUT_HEADER_SIZE;
          for (const b of body) at += b.copy(out, at);
        }
        return this.write(out);
      },
      sendRead: (size, fill) => {
        const buf = Buffer.allocUnsafe(OUT_HEADER_SIZE + size);
        const failed = (e: unknown): void => {
          done();
          const errno = e instanceof SysError ? e.errno : Errno.EIO;
          const out = Buffer.alloc(OUT_HEADER_SIZE);
          encodeOutHeader(out, OUT_HEADER_SIZE, errno, unique);
          this.write(out);
        };
        const filled = (n: number): void => {
          done();
          encodeOutHeader(buf, OUT_HEADER_SIZE + n, 0, unique);
          this.write(buf.subarray(0, OUT_HEADER_SIZE + n));
        };
        try {
          const n = fill([buf.subarray(OUT_HEADER_SIZE, OUT_HEADER_SIZE + size)], 0, size);
          if (typeof n === 'number') filled(n);
          else n.then(filled, failed);
        } catch (e) {
          failed(e);
        }
      },
      none: done,
    };
  }

  /** Writes one reply; false when the kernel did not take it. */
  private write(frame: Buffer): boolean {
    if (this.closed) return false;
    const r = writeRaw(this.fd, frame);
    // ENOENT: the request was interrupted and is gone.
    if (r < 0 && r !== -Errno.ENOENT) this.session.logs.warn('dev-fuse.write', { mountpoint: this.mountpoint, errno: -r }, 'writing a FUSE reply failed');
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
    this.poll.stop();
    this.poll.close();
    if (unmount) {
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
