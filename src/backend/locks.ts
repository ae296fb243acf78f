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

export class LockTable {
  private readonly owners = new Map<string, OwnerFd>();
  private readonly byFile = new Map<OpenFile, Set<string>>();

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

  /** Try to take (or release, type F_UNLCK) a lock; false = conflict. */
  set(owner: string, file: OpenFile, l: LockRequest): boolean {
    return ofdSetLock(this.ownerFd(owner, file), l, file.inode.label);
  }

  /** BSD flock() for `owner` on the whole file; false = held by another owner. */
  flock(owner: string, file: OpenFile, type: number): boolean {
    return flockNb(this.ownerFd(`flock:${owner}`, file), type, file.inode.label);
  }

  /** The conflicting lock, or one with type F_UNLCK when `l` could be taken. */
  get(owner: string, file: OpenFile, l: LockRequest): LockRange {
    const r = ofdGetLock(this.ownerFd(owner, file), l, file.inode.label);
    return r.type === F_UNLCK ? { ...l, type: F_UNLCK, pid: 0 } : r;
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
      for (const other of o.users) if (other !== file) this.byFile.get(other)?.delete(key);
    }
  }

  get size(): number {
    return this.owners.size;
  }
}
