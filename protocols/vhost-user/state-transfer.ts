// Device state transfer (vhost-user DEVICE_STATE): the device's state
// streamed over a pipe the frontend passes with SET_DEVICE_STATE_FD, saved
// (we write, then close: EOF ends the stream) or loaded (we read to EOF,
// then hand the bytes to the device). CHECK_DEVICE_STATE waits for `done`.
//
// The pipe is driven by libuv (a net.Socket on the fd), never by a blocking
// read or write, so a frontend that never reads or never closes cannot hold
// the event loop: it runs into the size limit or the timeout, and the
// transfer fails.
import net from 'node:net';
import { closeFd } from '../../src/sys/fd.js';
import { fstatFd } from '../../src/sys/mem.js';

const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;

export class TransferError extends Error {
  override name = 'TransferError';
}

export interface TransferLimits {
  /** bytes a loaded state may have */
  maxBytes: number;
  /** the whole transfer, from SET_DEVICE_STATE_FD to EOF */
  timeoutMs: number;
}

export class StateTransfer {
  /** Settles when the transfer is over: resolved when it succeeded, rejected with why not. */
  readonly done: Promise<void>;
  private socket: net.Socket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private settle!: (e?: Error) => void;

  private constructor(
    readonly direction: 'save' | 'load',
    fd: number,
    limits: TransferLimits,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = (e) => {
        if (this.timer) clearTimeout(this.timer);
        this.timer = null;
        if (e) reject(e);
        else resolve();
      };
    });
    this.done.catch(() => {}); // CHECK_DEVICE_STATE may never come; the failure is reported there
    let type: number;
    try {
      type = fstatFd(fd).type;
    } catch (e) {
      closeFd(fd);
      throw new TransferError(`state fd: ${(e as Error).message}`);
    }
    if (type !== S_IFIFO && type !== S_IFSOCK) {
      closeFd(fd);
      throw new TransferError(`state fd is not a pipe or socket (mode 0${type.toString(8)})`);
    }
    this.socket = new net.Socket({ fd, readable: direction === 'load', writable: direction === 'save', allowHalfOpen: true });
    this.socket.on('error', (e) => this.fail(`${direction} stream: ${e.message}`));
    this.timer = setTimeout(() => this.fail(`${direction} stream not finished within ${limits.timeoutMs} ms`), limits.timeoutMs);
    this.timer.unref();
  }

  /** SAVE: writes what `produce` returns, then closes the pipe. A failing `produce` closes it at once (the frontend sees EOF). */
  static save(fd: number, produce: () => Buffer | Promise<Buffer>, limits: TransferLimits): StateTransfer {
    const t = new StateTransfer('save', fd, limits);
    void (async () => {
      let state: Buffer;
      try {
        state = await produce();
      } catch (e) {
        t.fail(`saving the device state: ${(e as Error).message}`);
        return;
      }
      const s = t.socket;
      if (!s) return;
      s.end(state, () => {
        t.close();
        t.settle();
      });
    })();
    return t;
  }

  /** LOAD: reads to EOF (at most maxBytes), then hands the bytes to `consume`. */
  static load(fd: number, consume: (state: Buffer) => Promise<void>, limits: TransferLimits): StateTransfer {
    const t = new StateTransfer('load', fd, limits);
    const chunks: Buffer[] = [];
    let got = 0;
    const s = t.socket!;
    s.on('data', (b: Buffer) => {
      got += b.length;
      if (got > limits.maxBytes) {
        t.fail(`load stream: more than ${limits.maxBytes} bytes of state`);
        return;
      }
      chunks.push(b);
    });
    s.on('end', () => {
      t.close();
      consume(Buffer.concat(chunks, got)).then(
        () => t.settle(),
        (e: unknown) => t.settle(new TransferError(`loading the device state: ${(e as Error).message}`)),
      );
    });
    return t;
  }

  private fail(why: string): void {
    this.close();
    this.settle(new TransferError(why));
  }

  private close(): void {
    const s = this.socket;
    this.socket = null;
    s?.destroy();
  }

  /** The session ended or another transfer replaced this one. */
  abort(why: string): void {
    if (this.socket) this.fail(why);
  }
}
