// The inode table: one entry per live host inode, keyed by (st_dev, st_ino),
// holding an O_PATH fd and a reference count. 9P fids and FUSE node ids both
// point here; an entry (and its fd) goes away when the last reference does.
//
// A guest keeps every inode in its dentry cache referenced, so a busy guest
// can hold more inodes than the process may have fds. Past a budget, the
// least recently used entries trade their fd for a file handle
// (name_to_handle_at) and reopen it on next use (open_by_handle_at), as
// virtiofsd's --inode-file-handles does. That needs CAP_DAC_READ_SEARCH;
// without it (an unprivileged daemon) entries keep their fds.
import {
  Errno,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_PATH,
  O_RDONLY,
  S_IFDIR,
  SysError,
  close,
  fstat,
  nameToHandle,
  openByHandle,
  reopen as reopenFd,
  type FileHandle,
  type Stat,
  S_IFMT,
} from '../sys/index.js';
import type { InoMap } from './ino-map.js';

export class Inode {
  /** references held by fids, FUSE lookups and internal users */
  refs = 0;
  /**
   * The guest's file type (S_IFMT). Equal to hostKind except in the mapped
   * models, where symlinks, devices, FIFOs and sockets are regular host files.
   */
  kind: number;
  /** (parent, name) it was last reached by, kept only when the model needs it */
  loc: { parent: Inode; name: Buffer } | undefined;
  /** -1 while evicted (then `handle` reopens it) */
  private openFd: number;
  /** set when the fd was traded for a handle; undefined = cannot be evicted */
  handle: FileHandle | undefined;
  /** the handle could not be taken (filesystem without handles): never evict */
  pinned = false;
  /** open files and directory streams on it: an unlinked file must keep its fd */
  openCount = 0;
  /** the request that last used it (see InodeTable.beginRequest) */
  usedIn = 0;

  /** @internal an OpenFile or DirStream on it closed */
  handleClosed(): void {
    if (--this.openCount === 0) this.table.closedHandle(this);
  }

  constructor(
    private readonly table: InodeTable,
    /** stable small id; the export root is 1 (FUSE_ROOT_ID) */
    readonly id: number,
    fd: number,
    readonly dev: bigint,
    readonly ino: bigint,
    readonly mntId: bigint,
    /** S_IFMT bits of the host inode */
    readonly hostKind: number,
    /** the inode number guests see (qid path, st_ino) */
    readonly guestIno: bigint,
  ) {
    this.kind = hostKind;
    this.openFd = fd;
  }

  /** O_PATH | O_NOFOLLOW fd on the host inode (reopened from its handle if it was evicted). */
  get fd(): number {
    if (this.openFd < 0) this.openFd = this.table.reopen(this);
    else this.table.touch(this);
    return this.openFd;
  }

  /** @internal the fd without reopening (-1 when evicted) */
  get rawFd(): number {
    return this.openFd;
  }

  /** @internal */
  dropFd(): void {
    this.openFd = -1;
  }

  get isDir(): boolean {
    return this.kind === 0o040000;
  }

  get isSymlink(): boolean {
    return this.kind === 0o120000;
  }

  /** For log lines and error messages. */
  get label(): string {
    return `inode ${this.guestIno}`;
  }
}

export class InodeTable {
  private readonly byKey = new Map<string, Inode>();
  private readonly byId = new Map<number, Inode>();
  /** inodes holding an fd, least recently used first */
  private readonly lru = new Map<Inode, true>();
  /** one fd per mount, for open_by_handle_at */
  private readonly mountFds = new Map<bigint, number>();
  private nextId = 1;
  private evictScheduled = false;
  evictions = 0;
  /** O_PATH fds the table holds (every entry not traded for a handle) */
  fdsHeld = 0;

  constructor(
    private readonly inoMap: InoMap,
    /** most inode fds kept open; 0 = no limit (no handles) */
    private fdBudget = 0,
    /** most fds the table may hold at all (new inodes past it: ENFILE); 0 = no cap */
    private readonly fdCap = 0,
    /** told once each time the table becomes full */
    private readonly onFull?: (held: number) => void,
  ) {}

  private full = false;
  /** the request being handled; entries it used are never evicted under it */
  private request = 0;

  /**
   * A new request begins (the protocols call this). Evictions normally run
   * after the current batch of requests; only at the hard cap do they run at
   * once, and then never on an entry the current request has used, so no
   * operation sees an fd it just read closed under it.
   */
  beginRequest(): void {
    this.request++;
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Inodes currently holding an fd. */
  get openFds(): number {
    return this.lru.size;
  }

  /**
   * Takes ownership of `fd` (an O_PATH fd whose stat is `st`) and returns the
   * table's inode for it with one more reference. If the inode is already
   * known, `fd` is closed and the existing entry is used.
   */
  intern(fd: number, st: Stat): Inode {
    const key = `${st.dev}:${st.ino}`;
    let inode = this.byKey.get(key);
    if (inode && inode.rawFd < 0 && !this.sameObject(inode, fd)) {
      // An entry traded its fd for a handle, its host file was deleted, and
      // the host gave the number to this new file. The old entry stays with
      // those who hold it (its handle is stale: ESTALE), out of the table.
      this.byKey.delete(key);
      this.lru.delete(inode);
      inode = undefined;
    }
    if (inode) {
      close(fd);
      inode.refs++;
      return inode;
    }
    if (this.fdCap > 0 && this.fdsHeld >= this.fdCap && this.fdBudget > 0) this.evict(true);
    if (this.fdCap > 0 && this.fdsHeld >= this.fdCap) {
      // Only without file handles (or within one large request) does it get
      // here: the rest of the fd limit is the server's reserve.
      close(fd);
      if (!this.full) this.onFull?.(this.fdsHeld);
      this.full = true;
      throw new SysError(Errno.ENFILE, 'lookup', `inode table full (${this.fdsHeld} inodes hold fds)`);
    }
    if (this.full && this.fdsHeld < this.fdCap * 0.9) this.full = false;
    inode = new Inode(this, this.nextId++, fd, st.dev, st.ino, st.mntId, st.mode & S_IFMT, this.inoMap.guestIno(st.dev, st.ino));
    this.byKey.set(key, inode);
    this.byId.set(inode.id, inode);
    inode.refs++;
    this.fdsHeld++;
    this.remember(inode, fd);
    return inode;
  }

  /** Interns an fd whose stat is not yet known. */
  internFd(fd: number, what: string): { inode: Inode; stat: Stat } {
    let st: Stat;
    try {
      st = fstat(fd, what);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { inode: this.intern(fd, st), stat: st };
  }

  /**
   * Whether an evicted entry's handle names the object behind `fd`. Only an
   * fd can pin a host inode number; a handle carries the generation, so a
   * file that reuses the number has another handle.
   */
  private sameObject(inode: Inode, fd: number): boolean {
    if (!inode.handle) return true;
    try {
      const h = nameToHandle(fd, inode.label);
      return h.mountId === inode.handle.mountId && h.raw.equals(inode.handle.raw);
    } catch {
      return false;
    }
  }

  /**
   * Migration: node ids up to `max` are the guest's (loaded from a state
   * blob); new inodes get ids above them.
   */
  reserveIds(max: number): void {
    if (max >= this.nextId) this.nextId = max + 1;
  }

  /**
   * Migration: takes ownership of `fd` (stat `st`) as the inode with node id
   * `id` and `refs` references. An inode already known under that id gains
   * the references; the host inode known under another id, or the id taken
   * by another inode, is EEXIST (the destination already serves someone
   * else there). `fd` is closed on every path but the new entry's.
   */
  adopt(id: number, fd: number, st: Stat, refs: number): Inode {
    const key = `${st.dev}:${st.ino}`;
    const known = this.byKey.get(key);
    const taken = this.byId.get(id);
    if (known || taken) {
      close(fd);
      if (known && known === taken) {
        known.refs += refs;
        return known;
      }
      throw new SysError(
        Errno.EEXIST,
        'migration: restore',
        known ? `node ${id}: this server already has the file as node ${known.id}` : `node ${id}: the id is taken by ${taken!.label}`,
      );
    }
    const inode = new Inode(this, id, fd, st.dev, st.ino, st.mntId, st.mode & S_IFMT, this.inoMap.guestIno(st.dev, st.ino));
    this.reserveIds(id);
    this.byKey.set(key, inode);
    this.byId.set(id, inode);
    inode.refs = refs;
    this.fdsHeld++;
    this.remember(inode, fd);
    return inode;
  }

  /** The live entry for a host (dev, ino), if any. */
  find(dev: bigint, ino: bigint): Inode | undefined {
    return this.byKey.get(`${dev}:${ino}`);
  }

  get(id: number): Inode | undefined {
    return this.byId.get(id);
  }

  ref(inode: Inode, n = 1): void {
    inode.refs += n;
  }

  /** Drops `n` references; at zero the entry is removed and its fd closed. */
  unref(inode: Inode, n = 1): void {
    inode.refs -= n;
    if (inode.refs > 0) return;
    inode.refs = 0;
    if (this.byId.get(inode.id) !== inode) return;
    this.byId.delete(inode.id);
    const key = `${inode.dev}:${inode.ino}`;
    if (this.byKey.get(key) === inode) this.byKey.delete(key); // else a new file has the number now
    this.lru.delete(inode);
    if (inode.rawFd >= 0) {
      this.fdsHeld--;
      close(inode.rawFd);
    }
    inode.dropFd();
    const parent = inode.loc?.parent;
    inode.loc = undefined;
    if (parent) this.unref(parent);
  }

  /**
   * Checks that an evicted entry could be reopened: open_by_handle_at needs
   * CAP_DAC_READ_SEARCH (or, since Linux 6.10, CAP_SYS_ADMIN over the
   * filesystem's user namespace), which a uid 0 in a user namespace may
   * lack. If it cannot, the budget is switched off (entries keep their fds)
   * and the error is returned.
   */
  probeHandles(root: Inode): SysError | undefined {
    const mountFd = this.mountFds.get(root.mntId);
    if (this.fdBudget <= 0 || mountFd === undefined) return undefined;
    try {
      close(openByHandle(mountFd, nameToHandle(root.rawFd, root.label), O_PATH | O_NOFOLLOW, root.label));
      return undefined;
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      this.fdBudget = 0;
      this.lru.clear();
      for (const fd of this.mountFds.values()) close(fd);
      this.mountFds.clear();
      return e;
    }
  }

  /** Closes every fd the table holds (the server is stopping: no inode is used again). */
  closeAll(): void {
    for (const inode of this.byId.values()) {
      if (inode.rawFd >= 0) close(inode.rawFd);
      inode.dropFd();
      inode.handle = undefined;
    }
    for (const fd of this.mountFds.values()) close(fd);
    this.mountFds.clear();
    this.byId.clear();
    this.byKey.clear();
    this.lru.clear();
  }

  /** Keeps the root (and so every mount's anchor) from ever being evicted. */
  pin(inode: Inode): void {
    inode.pinned = true;
    this.lru.delete(inode);
  }

  // ---- fd budget -----------------------------------------------------------

  private remember(inode: Inode, fd: number): void {
    if (this.fdBudget <= 0) return;
    // open_by_handle_at wants a real (not O_PATH) fd on the same mount: the
    // first directory seen on each mount (its root, when a lookup crosses in).
    if (!this.mountFds.has(inode.mntId) && inode.hostKind === S_IFDIR) {
      this.mountFds.set(inode.mntId, reopenFd(fd, O_RDONLY | O_DIRECTORY, inode.label));
    }
    inode.usedIn = this.request;
    if (!inode.pinned) this.lru.set(inode, true);
    // The budget counts every fd the table holds, those of open inodes
    // (which cannot be evicted) included, so they leave room for others.
    if (this.fdsHeld > this.fdBudget) this.scheduleEviction();
  }

  /** @internal an entry was used: it becomes the most recently used. */
  touch(inode: Inode): void {
    if (this.fdBudget <= 0 || inode.pinned) return;
    inode.usedIn = this.request;
    this.lru.delete(inode);
    this.lru.set(inode, true);
  }

  /** @internal the last open file or directory stream on `inode` closed: it may be evicted again. */
  closedHandle(inode: Inode): void {
    if (this.fdBudget <= 0 || inode.pinned || inode.rawFd < 0 || this.byId.get(inode.id) !== inode) return;
    this.lru.set(inode, true);
    if (this.fdsHeld > this.fdBudget) this.scheduleEviction();
  }

  /** @internal reopens an evicted entry from its file handle. */
  reopen(inode: Inode): number {
    const mountFd = this.mountFds.get(inode.mntId);
    if (!inode.handle || mountFd === undefined)
      throw new SysError(Errno.ESTALE, 'reopen', `${inode.label}: neither fd nor handle (the export is closed)`);
    const fd = openByHandle(mountFd, inode.handle, O_PATH | O_NOFOLLOW, inode.label);
    this.fdsHeld++;
    this.remember(inode, fd);
    return fd;
  }

  /**
   * Evictions run after the current request, never inside it, so no
   * operation ever sees an fd it just read closed under it.
   */
  private scheduleEviction(): void {
    if (this.evictScheduled) return;
    this.evictScheduled = true;
    setImmediate(() => {
      this.evictScheduled = false;
      this.evict();
    });
  }

  /** `now`: at the hard cap, inside a request: stop at the entries it has used. */
  private evict(now = false): void {
    // Go down to 90% of the budget so evictions come in batches.
    const target = Math.floor(this.fdBudget * 0.9);
    for (const inode of this.lru.keys()) {
      if (this.fdsHeld <= target) break;
      // Least recently used first: from here on, the current request used them all.
      if (now && inode.usedIn === this.request) break;
      // An open inode leaves the list until its last handle closes (closedHandle).
      this.lru.delete(inode);
      const fd = inode.rawFd;
      if (fd < 0 || inode.openCount > 0 || !this.mountFds.has(inode.mntId)) continue;
      if (!inode.handle) {
        try {
          inode.handle = nameToHandle(fd, inode.label);
        } catch {
          inode.pinned = true; // no handles on this filesystem: keep the fd
          continue;
        }
      }
      close(fd);
      inode.dropFd();
      this.fdsHeld--;
      this.evictions++;
    }
  }
}
