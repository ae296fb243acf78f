// eventfds: the kick and call signals of virtqueues (vhost-user passes them
// over its socket; the frontend double makes its own).
import koffi from 'koffi';
import { c, errno } from './libc.js';
import { SysError } from './errno.js';

const eventfd = koffi.load('libc.so.6').func('int eventfd(unsigned int initval, int flags)');

const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;

export function createEventFd(nonBlocking = true): number {
  const fd = Number(eventfd(0, EFD_CLOEXEC | (nonBlocking ? EFD_NONBLOCK : 0)));
  if (fd < 0) throw new SysError(errno(), 'eventfd');
  return fd;
}

const one = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
const sink = Buffer.alloc(8);

/** Adds 1 to an eventfd (a kick or an interrupt). Errors are returned, not thrown: a dead peer is not our crash. */
export function signalEventFd(fd: number): number {
  return Number(c.write(fd, one, 8)) === 8 ? 0 : errno();
}

/** Reads (and resets) an eventfd's counter; 0 when it was not signalled (EAGAIN). */
export function drainEventFd(fd: number): number {
  const n = Number(c.read(fd, sink, 8));
  return n === 8 ? Number(sink.readBigUInt64LE(0)) : 0;
}
