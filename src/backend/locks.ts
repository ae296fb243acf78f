// POSIX record locks on real host OFD locks. A lock owner (a guest process:
// 9P client_id+proc_id, FUSE lock_owner) gets its own open file description
// per inode, so locks of one owner merge as POSIX says while different
// owners, guests, protocols and host processes exclude each other.
import { close, F_UNLCK, O_RDONLY, O_RDWR, flockNb, ofdGetLock, ofdSetLock, reopen, type LockRange } from '../sys/index.js';
import type { OpenFile } from './files.js';

interface OwnerFd {
  fd: number;
  /** open handles through which this owner has locked */
  users: Set<OpenFile>;
}

export type LockRequest = Omit<LockRange, 'pid'>;

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

export class LockTable {
  private readonly owners = new Map<string, OwnerFd>();
  private readonly byFile = new Map<OpenFile, Set<string>>();
  private readonly held = new Map<number, Held[]>();

  private ownerFd(owner: string, file: OpenFile): number {
    const key = `${owner}\u0000${file.inode.id}`;
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
  set(owner: string, file: OpenFile, l: LockRequest, pid = 0): boolean {
    const ok = ofdSetLock(this.ownerFd(owner, file), l, file.inode.label);
    if (ok) this.remember(owner, file.inode.id, l, pid);
    return ok;
  }

  /** Mirrors POSIX merge/split for one owner's ranges on one inode. */
  private remember(owner: string, inodeId: number, l: LockRequest, pid: number): void {
    const start = l.start;
    const end = endOf(l);
    const out: Held[] = [];
    for (const h of this.held.get(inodeId) ?? []) {
      if (h.owner !== owner || h.end < start || h.start > end) {
        out.push(h);
        continue;
      }
      if (h.start < start) out.push({ ...h, end: start - 1 });
      if (h.end > end) out.push({ ...h, start: end + 1 });
    }
    if (l.type !== F_UNLCK) out.push({ owner, start, end, type: l.type, pid });
    if (out.length) this.held.set(inodeId, out);
    else this.held.delete(inodeId);
  }

  private forget(owner: string, inodeId: number): void {
    const list = this.held.get(inodeId)?.filter((h) => h.owner !== owner);
    if (list?.length) this.held.set(inodeId, list);
    else this.held.delete(inodeId);
  }

  /** BSD flock() for `owner` on the whole file; false = held by another owner. */
  flock(owner: string, file: OpenFile, type: number): boolean {
    return flockNb(this.ownerFd(`flock:${owner}`, file), type, file.inode.label);
  }

  /** The conflicting lock, or one with type F_UNLCK when `l` could be taken. */
  get(owner: string, file: OpenFile, l: LockRequest): LockRange {
    const r = ofdGetLock(this.ownerFd(owner, file), l, file.inode.label);
    if (r.type === F_UNLCK) return { ...l, type: F_UNLCK, pid: 0 };
    // A host process's classic lock comes with its pid; an OFD lock (ours,
    // or another OFD user's) with -1: name the holder when it is one of ours.
    if (r.pid > 0) return r;
    const end = r.len === 0 ? Infinity : r.start + r.len - 1;
    const h = this.held.get(file.inode.id)?.find((x) => x.owner !== owner && x.start <= end && x.end >= r.start);
    return { ...r, pid: h?.pid ?? 0 };
  }

  /**
   * A handle is closing. As with POSIX close(), the owners that locked
   * through it lose every lock they hold on the file.
   */
  closeFile(file: OpenFile): void {
    const keys = this.byFile.get(file);
    if (!keys) return;
    this.byFile.delete(file);
    for (const key of keys) {
      const o = this.owners.get(key);
      if (!o) continue;
      this.owners.delete(key);
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
