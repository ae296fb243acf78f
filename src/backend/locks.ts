// POSIX record locks on real host OFD locks. A lock owner (a guest process:
// 9P client_id+proc_id, FUSE lock_owner) gets its own open file description
// per inode, so locks of one owner merge as POSIX says while different
// owners, guests, protocols and host processes exclude each other.
//
// flock(): FUSE says which requests are flock() (FUSE_LK_FLOCK) and those
// become host flock(2) locks. The guest's 9p client cannot say so: v9fs
// turns flock() into a POSIX lock over the whole file before it sends
// Tlock, and nothing on the wire tells the two apart. So an owner that asks
// for it (`flockWholeFile`, the 9P server does) also holds a host flock(2)
// on its open file description while it holds a lock over the whole file:
// shared while any part of that lock is a read lock, exclusive otherwise.
// Its flock() then excludes a virtio-fs guest's flock() and a host
// process's flock(2), as well as every POSIX lock. The cost is the one NFS
// clients have (they send flock() as a whole-file byte-range lock too): a
// 9P guest's whole-file fcntl() lock also excludes flock() users elsewhere
// (inside that guest its flock() and fcntl() locks conflict already).
//
// Blocking locks (F_SETLKW) wait here too, on a timer, never by parking a
// thread, so other requests and clients go on. The host has no OFD-lock
// wakeup an event loop could wait on, so a waiter retries with backoff (2 ms
// doubling to 100 ms); the caller's AbortSignal (FUSE INTERRUPT, a session
// ending) and the handle closing end the wait.
import {
  Errno,
  SysError,
  close,
  F_RDLCK,
  F_UNLCK,
  F_WRLCK,
  O_RDONLY,
  O_RDWR,
  flockNb,
  ofdGetLock,
  ofdSetLock,
  reopen,
  type LockRange,
} from '../sys/index.js';
import type { OpenFile } from './files.js';

interface OwnerFd {
  fd: number;
  /** open handles through which this owner has locked */
  users: Set<OpenFile>;
}

export type LockRequest = Omit<LockRange, 'pid'>;

export interface LockOptions {
  /**
   * This owner's lock over the whole file is also its flock(2) on the file
   * (the 9P server: the guest's 9p client sends flock() as such a lock).
   */
  flockWholeFile?: boolean;
}

export interface SetLockOptions extends LockOptions {
  /** the guest's pid of the process taking it, for F_GETLK of others */
  pid?: number;
}

export interface WaitLockOptions extends SetLockOptions {
  /** a flock(2) lock (FUSE_LK_FLOCK): only the request's type counts */
  flock?: boolean;
  /** aborting it ends the wait with EINTR, the lock not taken */
  signal?: AbortSignal;
}

const LOCK_RETRY_MIN_MS = 2;
const LOCK_RETRY_MAX_MS = 100;

/**
 * A lock one of our owners holds, remembered so F_GETLK can name the
 * holder's pid: the host reports OFD locks with pid -1.
 */
interface Held {
  owner: string;
  start: number;
  /** inclusive; Infinity = to end of file */
  end: number;
  type: number;
  pid: number;
}

const endOf = (l: LockRequest): number => (l.len === 0 ? Infinity : l.start + l.len - 1);

/** An inode's held locks after `owner` sets `l`: POSIX merge/split within one owner. */
function merge(list: readonly Held[], owner: string, l: LockRequest, pid: number): Held[] {
  const start = l.start;
  const end = endOf(l);
  const out: Held[] = [];
  for (const h of list) {
    if (h.owner !== owner || h.end < start || h.start > end) {
      out.push(h);
      continue;
    }
    if (h.start < start) out.push({ ...h, end: start - 1 });
    if (h.end > end) out.push({ ...h, start: end + 1 });
  }
  if (l.type !== F_UNLCK) out.push({ owner, start, end, type: l.type, pid });
  return out;
}

/** F_RDLCK or F_WRLCK when `owner`'s locks cover the whole file (read if any part is), else F_UNLCK. */
function wholeFileType(list: readonly Held[], owner: string): number {
  const mine = list.filter((h) => h.owner === owner).sort((a, b) => a.start - b.start);
  let next = 0;
  let type = F_WRLCK;
  for (const h of mine) {
    if (h.start > next) return F_UNLCK;
    next = Math.max(next, h.end + 1);
    if (h.type === F_RDLCK) type = F_RDLCK;
    if (next === Infinity) return type;
  }
  return F_UNLCK;
}

export class LockTable {
  private readonly owners = new Map<string, OwnerFd>();
  private readonly byFile = new Map<OpenFile, Set<string>>();
  private readonly held = new Map<number, Held[]>();
  /** the flock(2) type each owner fd holds because of a whole-file lock (flockWholeFile) */
  private readonly flocks = new Map<string, number>();
  /** blocking requests waiting through each handle: closing it ends them */
  private readonly waiters = new Map<OpenFile, Set<(e: SysError) => void>>();

  private static key(owner: string, file: OpenFile): string {
    return `${owner}\u0000${file.inode.id}`;
  }

  private ownerFd(owner: string, file: OpenFile): number {
    const key = LockTable.key(owner, file);
    let o = this.owners.get(key);
    if (!o) {
      let fd: number;
      try {
        fd = reopen(file.inode.fd, O_RDWR, file.inode.label);
      } catch {
        fd = reopen(file.inode.fd, file.flags & 3 ? file.flags & 3 : O_RDONLY, file.inode.label);
      }
      o = { fd, users: new Set() };
      this.owners.set(key, o);
    }
    if (!o.users.has(file)) {
      o.users.add(file);
      let keys = this.byFile.get(file);
      if (!keys) this.byFile.set(file, (keys = new Set()));
      keys.add(key);
    }
    return o.fd;
  }

  /** Try to take (or release, type F_UNLCK) a lock; false = conflict. `pid` is the guest's, for F_GETLK. */
  set(owner: string, file: OpenFile, l: LockRequest, pid = 0, o: LockOptions = {}): boolean {
    const fd = this.ownerFd(owner, file);
    const { label, id } = file.inode;
    const after = merge(this.held.get(id) ?? [], owner, l, pid);
    if (!o.flockWholeFile) {
      if (!ofdSetLock(fd, l, label)) return false;
      this.store(id, after);
      return true;
    }
    const key = LockTable.key(owner, file);
    const had = this.flocks.get(key) ?? F_UNLCK;
    const want = wholeFileType(after, owner);
    if (want !== had && !flockNb(fd, want, label)) {
      // flock(2) converts a lock by dropping the old one first: take it back.
      if (had !== F_UNLCK && !flockNb(fd, had, label)) this.flocks.delete(key);
      return false;
    }
    if (!ofdSetLock(fd, l, label)) {
      // Back to the flock it had: an unlock or a downgrade, which cannot conflict.
      if (want !== had) flockNb(fd, had, label);
      return false;
    }
    if (want === F_UNLCK) this.flocks.delete(key);
    else this.flocks.set(key, want);
    this.store(id, after);
    return true;
  }

  private store(inodeId: number, list: Held[]): void {
    if (list.length) this.held.set(inodeId, list);
    else this.held.delete(inodeId);
  }

  private forget(owner: string, inodeId: number): void {
    const list = this.held.get(inodeId)?.filter((h) => h.owner !== owner);
    if (list?.length) this.held.set(inodeId, list);
    else this.held.delete(inodeId);
  }

  /**
   * A blocking set (F_SETLKW, or flock() without LOCK_NB when `o.flock`):
   * resolves once the lock is taken. Rejects with EINTR when `o.signal`
   * aborts, EBADF when the handle closes first, or the error of a try.
   */
  wait(owner: string, file: OpenFile, l: LockRequest, o: WaitLockOptions = {}): Promise<void> {
    const attempt = (): boolean => (o.flock ? this.flock(owner, file, l.type) : this.set(owner, file, l, o.pid ?? 0, o));
    const what = `${file.inode.label} (${o.flock ? 'flock' : 'SETLKW'})`;
    return new Promise<void>((resolve, reject) => {
      if (o.signal?.aborted) return reject(new SysError(Errno.EINTR, 'lock wait', `${what}: interrupted`));
      if (attempt()) return resolve(); // a throw rejects
      let delay = LOCK_RETRY_MIN_MS;
      let timer: NodeJS.Timeout | undefined;
      let waiters = this.waiters.get(file);
      if (!waiters) this.waiters.set(file, (waiters = new Set()));
      const end = (e?: unknown): void => {
        clearTimeout(timer);
        o.signal?.removeEventListener('abort', onAbort);
        waiters.delete(end);
        if (!waiters.size && this.waiters.get(file) === waiters) this.waiters.delete(file);
        if (e === undefined) resolve();
        else reject(e);
      };
      const onAbort = (): void => end(new SysError(Errno.EINTR, 'lock wait', `${what}: interrupted`));
      const retry = (): void => {
        try {
          if (attempt()) return end();
        } catch (e) {
          return end(e);
        }
        delay = Math.min(delay * 2, LOCK_RETRY_MAX_MS);
        timer = setTimeout(retry, delay);
      };
      waiters.add(end);
      o.signal?.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(retry, delay);
    });
  }

  /** Blocking requests still waiting. */
  get waiting(): number {
    let n = 0;
    for (const w of this.waiters.values()) n += w.size;
    return n;
  }

  /** BSD flock() for `owner` on the whole file; false = held by another owner. */
  flock(owner: string, file: OpenFile, type: number): boolean {
    return flockNb(this.ownerFd(`flock:${owner}`, file), type, file.inode.label);
  }

  /** The conflicting lock, or one with type F_UNLCK when `l` could be taken. */
  get(owner: string, file: OpenFile, l: LockRequest, o: LockOptions = {}): LockRange {
    const r = ofdGetLock(this.ownerFd(owner, file), l, file.inode.label);
    if (r.type === F_UNLCK) {
      const f = o.flockWholeFile && l.start === 0 && l.len === 0 ? this.flockHolder(owner, file, l.type) : F_UNLCK;
      return f === F_UNLCK ? { ...l, type: F_UNLCK, pid: 0 } : { type: f, start: 0, len: 0, pid: 0 };
    }
    // A host process's classic lock comes with its pid; an OFD lock (ours,
    // or another OFD user's) with -1: name the holder when it is one of ours.
    if (r.pid > 0) return r;
    const end = r.len === 0 ? Infinity : r.start + r.len - 1;
    const h = this.held.get(file.inode.id)?.find((x) => x.owner !== owner && x.start <= end && x.end >= r.start);
    return { ...r, pid: h?.pid ?? 0 };
  }

  /**
   * The type of a flock(2) held elsewhere that a whole-file lock of `type`
   * would meet (F_UNLCK: none), probed by trying it on a fresh open file
   * description. Not while this owner holds a flock itself: the probe would
   * meet its own.
   */
  private flockHolder(owner: string, file: OpenFile, type: number): number {
    if (this.flocks.has(LockTable.key(owner, file))) return F_UNLCK;
    let fd: number;
    try {
      fd = reopen(file.inode.fd, O_RDONLY, file.inode.label);
    } catch {
      return F_UNLCK;
    }
    try {
      if (flockNb(fd, type, file.inode.label)) return F_UNLCK;
      return type === F_WRLCK && flockNb(fd, F_RDLCK, file.inode.label) ? F_RDLCK : F_WRLCK;
    } finally {
      close(fd); // drops the probe's lock
    }
  }

  /**
   * A handle is closing. As with POSIX close(), the owners that locked
   * through it lose every lock they hold on the file; requests still
   * waiting for a lock through it end with EBADF.
   */
  closeFile(file: OpenFile): void {
    const waiters = this.waiters.get(file);
    if (waiters) {
      this.waiters.delete(file);
      for (const end of [...waiters]) end(new SysError(Errno.EBADF, 'lock wait', `${file.inode.label}: the handle was closed`));
    }
    const keys = this.byFile.get(file);
    if (!keys) return;
    this.byFile.delete(file);
    for (const key of keys) {
      const o = this.owners.get(key);
      if (!o) continue;
      this.owners.delete(key);
      this.flocks.delete(key);
      close(o.fd);
      const sep = key.lastIndexOf('\u0000');
      this.forget(key.slice(0, sep), Number(key.slice(sep + 1)));
      for (const other of o.users) if (other !== file) this.byFile.get(other)?.delete(key);
    }
  }

  get size(): number {
    return this.owners.size;
  }
}
