// What the engines run inline, before any hop off the event loop: a hop
// costs ~30 µs to the pool and ~3-5 µs through a ring against ~1 µs for a
// page-cache hit inline (4 KiB, measured here), and most guest reads are hits.
//   * reads try preadv2(RWF_NOWAIT): the page cache answers, or EAGAIN says
//     the disk would be needed (FUSE and NFS answer EOPNOTSUPP: no NOWAIT);
//   * buffered writes on a local disk or tmpfs land in the page cache (ext4
//     and tmpfs refuse RWF_NOWAIT for buffered writes, so the filesystem's
//     class decides);
//   * on tmpfs (memory) nothing ever waits.
import { RWF_NOWAIT, fsyncRaw, preadvRaw, pwritevRaw } from '../sys/raw-io.js';
import type { FsSpeed, IoVecs, Offset } from './engine.js';
import { iovLength, iovSkip } from './iov.js';

const EAGAIN = 11;
const EOPNOTSUPP = 95;

export type ReadAttempt =
  /** finished inline: the count or -errno */
  | { done: number }
  /** needs the disk for `rest` (at `offset`); `got` bytes are already read */
  | { got: number; rest: IoVecs; offset: Offset };

export function readInlineFirst(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed): ReadAttempt {
  if (speed === 'memory') return { done: preadvRaw(fd, v.iov, v.count, offset) };
  const r = preadvRaw(fd, v.iov, v.count, offset, RWF_NOWAIT);
  if (r === -EAGAIN || r === -EOPNOTSUPP) return { got: 0, rest: v, offset };
  if (r <= 0 || r >= iovLength(v)) return { done: r };
  // Partly in the page cache: the rest may need the disk.
  return { got: r, rest: iovSkip(v, r), offset: typeof offset === 'bigint' ? offset + BigInt(r) : offset + r };
}

/** A buffered write that only fills the page cache, done inline; undefined: it may block. */
export function writeInline(fd: number, v: IoVecs, offset: Offset, speed: FsSpeed): number | undefined {
  return speed === 'remote' ? undefined : pwritevRaw(fd, v.iov, v.count, offset);
}

/** fsync on tmpfs has nothing to wait for. */
export function fsyncInline(fd: number, datasync: boolean, speed: FsSpeed): number | undefined {
  return speed === 'memory' ? fsyncRaw(fd, datasync) : undefined;
}
