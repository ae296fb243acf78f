// An fd in Node's event loop: libuv's uv_poll through koffi.node.poll, so
// sockets, eventfds and /dev/fuse are served on the main thread without a
// thread blocked in read(2).
import koffi from 'koffi';

export interface PollOptions {
  readable?: boolean;
  writable?: boolean;
  disconnect?: boolean;
}

export interface PollEvents {
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
}

/**
 * What koffi really calls back with (its typings say only the events):
 * libuv's status, negative on an error (e.g. POLLERR from a reset peer),
 * after which polling has stopped, and the events that fired.
 */
export type PollCallback = (status: number, events?: PollEvents) => void;

export interface FdPoll {
  /** (Re)starts watching, with a new callback. */
  start(opts: PollOptions, callback: PollCallback): void;
  stop(): void;
  /** Ends the watch; call before closing the fd (libuv must not poll a closed fd). */
  close(): void;
  unref(): void;
  ref(): void;
}

/** Starts watching `fd` for the events in `opts`. */
export function pollFd(fd: number, opts: PollOptions, callback: PollCallback): FdPoll {
  return koffi.node.poll(fd, opts, callback as unknown as (ev: PollEvents) => void) as unknown as FdPoll;
}
