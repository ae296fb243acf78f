// The shared backend: every filesystem operation both protocols need,
// expressed on inodes and single names. Front-ends translate their wire
// messages into these calls and map SysError.errno back onto the wire.
//
// Confinement: the export root is opened once; every other inode is reached
// by openat(parent, one name, O_PATH|O_NOFOLLOW), so a client can only name
// things inside the export. '..' at the root stays at the root; symlinks
// are never followed on the server (the guest kernel resolves them).
//
// The security model (security/) decides whose credentials host calls run
// with and where the guest's owners, modes and file types live.
import {
  AT_FDCWD,
  AT_REMOVEDIR,
  Errno,
  O_ACCMODE,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NONBLOCK,
  O_PATH,
  O_RDONLY,
  O_TMPFILE,
  O_TRUNC,
  RENAME_EXCHANGE,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  SysError,
  XATTR_SIZE_MAX,
  O_NOFOLLOW,
  accessPathFd,
  asProcess,
  fstatfsOnPool,
  getxattrOnPool,
  listxattrOnPool,
  openatOnPool,
  removexattrOnPool,
  renameat2OnPool,
  reopenOnPool,
  setxattrOnPool,
  statxOnPool,
  unlinkatOnPool,
  close,
  fail,
  lseek,
  fchownFd,
  fstat,
  fstatfs,
  ftruncate,
  getxattr,
  fstatat,
  isSysError,
  linkFd,
  F_UNLCK,
  listxattr,
  openPath,
  openat,
  procPath,
  removexattr,
  renameat2,
  reopen,
  setxattr,
  syncfs,
  truncatePathFd,
  umask,
  unlinkat,
  utimensFd,
  withCredentials,
  type Credentials,
  type Dirent,
  type LockRange,
  type Stat,
  type StatFs,
} from '../sys/index.js';
import { DAEMON, type Awaitable, type Backend, type Caller, type Entry, type GuestDirent, type OpenOptions, type SetAttr } from './api.js';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import { createSecurityModel } from '../../security/create-model.js';
import { SYMLINK_MAX, type Location, type ModelInode, type SecurityModel, type SecurityModelName } from '../../security/model.js';
import { HostIds } from '../../security/host-ids.js';
import type { IdMap } from '../../security/id-map.js';
import { InoMap } from './ino-map.js';
import { Inode, InodeTable } from './inode-table.js';
import { DirStream, OpenFile } from './files.js';
import { FdAccount, FdBudget, type FdBudgetLimits } from './fd-budget.js';
import { LockTable, type LockOptions, type LockRequest, type SetLockOptions, type WaitLockOptions } from './locks.js';
import { checkEntryName, checkLookupName, isDot, isDotDot, printable } from './names.js';
import { createFlags, openFlags } from './open-flags.js';
import type { WriteOptions } from '../sys/vectored.js';
import type { FsSpeed, IoEngine } from '../io/engine.js';
import { speedOfFd } from '../io/fs-speed.js';
import { SyncEngine } from '../io/sync.js';
import { readInto, writeFrom } from '../io/transfer.js';
import { listedUnprivileged, unprivilegedRefusal, type XattrAccess } from './xattr-privilege.js';
import { locate, restore, type InodeLocation, type MigrationDeps, type RestoreRequest } from './migration.js';

export interface BackendOptions {
  sharedDir: string;
  /**
   * The export's root, already open (O_PATH): the backend takes it over
   * instead of opening sharedDir by path, so a root found beneath another
   * directory (RESOLVE_BENEATH) cannot be swapped for a symlink meanwhile.
   */
  rootFd?: number;
  readonly?: boolean;
  securityModel?: SecurityModelName;
  /** host mode of files created in the mapped models (QEMU fmode) */
  fmode?: number;
  /** host mode of directories created in the mapped models (QEMU dmode) */
  dmode?: number;
  /** virtiofsd-style id translation between guest and host ids (host-truth models) */
  uidMap?: IdMap;
  gidMap?: IdMap;
  /** most O_PATH inode fds kept open before the least used become file handles; 0 = no limit */
  inodeFdBudget?: number;
  /** most fds the inode table may hold at all, whatever it can evict (ENFILE past it); 0 = no cap */
  inodeFdCap?: number;
  /** how RLIMIT_NOFILE is shared between sessions (see fd-budget.ts); default: no limit */
  fdLimits?: FdBudgetLimits;
  /** where the data path's blocking calls run (default: inline, the sync engine) */
  engine?: IoEngine;
  /** lookup and getattr on a 'remote' filesystem run on libuv's pool (default: unless the engine is sync) */
  metadataOnPool?: boolean;
  /** tests: the speed class of the filesystem an fd is on (default: from fstatfs) */
  fsSpeed?: (fd: number) => FsSpeed;
  log?: Logger;
}

export class LocalBackend implements Backend {
  readonly inodes: InodeTable;
  /** host (dev, ino) -> guest inode numbers, shared by both protocols */
  readonly inoMap: InoMap;
  /** record and flock locks, and the requests waiting for them (see locks.ts) */
  private readonly locks = new LockTable();
  /** the open-fd budgets of the sessions on this backend */
  readonly fds: FdBudget;
  readonly root: Inode;
  readonly readonly: boolean;
  readonly sharedDir: string;
  readonly model: SecurityModel;
  private readonly modelName: SecurityModelName;
  private readonly ids: HostIds;
  /** the I/O engine the data path runs on */
  readonly engine: IoEngine;
  /** speed class per host device (a filesystem mounted under the export has its own) */
  private readonly speeds = new Map<bigint, FsSpeed>();
  private readonly metadataOnPool: boolean;
  private readonly fsSpeed: (fd: number) => FsSpeed;

  constructor(opts: BackendOptions) {
    this.sharedDir = opts.sharedDir;
    this.engine = opts.engine ?? new SyncEngine();
    this.metadataOnPool = opts.metadataOnPool ?? this.engine.kind !== 'sync';
    this.fsSpeed = opts.fsSpeed ?? speedOfFd;
    this.readonly = opts.readonly ?? false;
    this.ids = new HostIds(opts.uidMap, opts.gidMap);
    this.modelName = opts.securityModel ?? 'passthrough';
    this.model = createSecurityModel(
      this.modelName,
      {
        ids: this.ids,
        fmode: (opts.fmode ?? 0o600) & 0o777,
        dmode: (opts.dmode ?? 0o700) & 0o777,
        ref: (i) => this.ref(i as Inode),
        release: (i) => this.release(i as Inode),
        liveAt: (parent, name) => this.liveAt(parent as Inode, name),
      },
      opts.log ?? silentLogger(),
    );
    // Guests send modes with their own umask already applied.
    umask(0);
    const fd = opts.rootFd ?? openat(AT_FDCWD, opts.sharedDir, O_PATH | O_DIRECTORY);
    const st = fstat(fd, opts.sharedDir);
    this.inoMap = new InoMap(st.dev);
    const log = opts.log ?? silentLogger();
    this.inodes = new InodeTable(this.inoMap, opts.inodeFdBudget ?? 0, opts.inodeFdCap ?? 0, (held) =>
      log.warn(
        { held, cap: opts.inodeFdCap },
        `inode table full: ${held} inodes hold fds and cannot trade them for file handles; new lookups get ENFILE`,
      ),
    );
    const n = Number.MAX_SAFE_INTEGER;
    this.fds = new FdBudget(opts.fdLimits ?? { limit: n, reserve: 0, inodeShare: 0, perSession: n, floor: 0 }, log, () => this.inodes.fdsHeld);
    this.root = this.inodes.intern(fd, st); // the root's reference is never dropped
    this.inodes.pin(this.root);
    const noHandles = this.inodes.probeHandles(this.root);
    if (noHandles) {
      log.info(
        { errno: noHandles.code },
        `inode fds cannot be traded for file handles here (${noHandles.message}): every live inode keeps its O_PATH fd`,
      );
    }
    this.model.setRoot(this.root);
  }

  /** A protocol starts handling one request (see InodeTable.beginRequest). */
  beginRequest(): void {
    this.inodes.beginRequest();
  }

  /** Refuses a change to a read-only export with EROFS. */
  checkWritable(op: string, what: string): void {
    if (this.readonly) fail(Errno.EROFS, op, `${what} (read-only export)`);
  }

  /**
   * The credentials host calls run with for a caller: the daemon's own
   * (undefined) for a FUSE caller, whose kernel checked; else the model's
   * choice.
   */
  private host(c: Caller | undefined): Credentials | undefined {
    return !c || c.createsAsCaller ? undefined : this.model.hostCredentials(c);
  }

  /**
   * The credentials a creation runs with and hands to the model: a FUSE
   * caller's own (new objects are born with its owner, as under virtiofsd).
   */
  private creator(c: Caller): Caller {
    return c.createsAsCaller ? { uid: c.uid, gid: c.gid, groups: c.groups, pid: c.pid, umask: c.umask } : c;
  }

  /** A guest uid/gid as the host's, through --translate-uid/--translate-gid (EPERM if forbidden). */
  hostUid(id: number): number {
    return this.ids.hostUid(id);
  }

  hostGid(id: number): number {
    return this.ids.hostGid(id);
  }

  private checkName(op: string, name: Buffer, dotErrno?: number): void {
    if (dotErrno === undefined) checkLookupName(op, name);
    else checkEntryName(op, name, dotErrno);
    if (this.model.isReservedName(name)) fail(Errno.EINVAL, op, `${printable(name)} is reserved by the ${this.modelName} model`);
  }

  // ---- the guest's view --------------------------------------------------------

  /** Interns a looked-up fd; new inodes learn their location and guest type. */
  private intern(fd: number, what: string, loc: Location | undefined): Entry {
    const { inode, stat } = this.inodes.internFd(fd, what);
    if (loc && inode !== this.root) this.model.reached(inode, loc);
    return { inode, stat: this.view(inode, stat) };
  }

  /** The guest's attributes: the host's, as the model shows them. */
  private view(inode: Inode, st: Stat): Stat {
    return this.model.view(inode, st);
  }

  // ---- names and inodes ----------------------------------------------------

  /**
   * Resolves one name in `parent`; the returned inode carries one new
   * reference. On a filesystem that can wait on a server the host calls run
   * on the pool (see offloads), and the entry comes later.
   */
  lookup(c: Caller, parent: Inode, name: Buffer): Awaitable<Entry> {
    this.checkName('lookup', name);
    if (!parent.isDir) fail(Errno.ENOTDIR, 'lookup', `${printable(name)} in ${parent.label}`);
    if (!isDot(name) && !(isDotDot(name) && parent === this.root) && this.offloads(c, parent)) {
      return this.lookupOnPool(parent, name, isDotDot(name) ? undefined : { parent, name });
    }
    return this.lookupNow(c, parent, name);
  }

  /** lookup() inline, for the backend's own use. */
  private lookupNow(c: Caller, parent: Inode, name: Buffer): Entry {
    if (isDot(name) || (isDotDot(name) && parent === this.root)) {
      this.inodes.ref(parent);
      return { inode: parent, stat: this.statNow(parent) };
    }
    const loc = isDotDot(name) ? undefined : { parent, name };
    const known = this.knownEntry(c, parent, name, loc);
    if (known) return known;
    const fd = withCredentials(this.host(c), () => openPath(parent.fd, name));
    return this.intern(fd, printable(name), loc);
  }

  /**
   * A name whose inode the table holds open already (a guest revalidating a
   * dentry whose timeout ran out: most LOOKUPs of a running guest) costs one
   * statx instead of openat + statx + close. The statx decides only which
   * inode the name meant at that moment, as the openat would have; the entry
   * keeps its own fd. Inodes without an fd (traded for a file handle) take
   * the full path: their host inode number may since have been reused.
   */
  private knownEntry(c: Caller, parent: Inode, name: Buffer, loc: Location | undefined): Entry | undefined {
    const st = withCredentials(this.host(c), () => fstatat(parent.fd, name));
    const inode = this.inodes.find(st.dev, st.ino);
    if (!inode || inode.rawFd < 0) return undefined;
    this.inodes.ref(inode);
    this.inodes.touch(inode);
    if (loc && inode !== this.root) this.model.reached(inode, loc);
    return { inode, stat: this.view(inode, st) };
  }

  /** The live inode with this id (a FUSE node id), or undefined. */
  inodeById(id: number | bigint): Inode | undefined {
    return id <= BigInt(Number.MAX_SAFE_INTEGER) && id >= 0 ? this.inodes.get(Number(id)) : undefined;
  }

  /** One more reference on an inode (a cloned fid, a FUSE lookup reply). */
  ref(inode: Inode): Inode {
    this.inodes.ref(inode);
    return inode;
  }

  release(inode: Inode, n = 1): void {
    if (inode === this.root && inode.refs - n < 1) {
      inode.refs = 1;
      return;
    }
    this.inodes.unref(inode, n);
  }

  getattr(inode: Inode): Awaitable<Stat> {
    if (this.offloads(undefined, inode))
      return this.holding(inode, (fd) => statxOnPool(fd, undefined, inode.label)).then((st) => this.view(inode, st));
    return this.statNow(inode);
  }

  private statNow(inode: Inode): Stat {
    return this.view(inode, fstat(inode.fd, inode.label));
  }

  /** The guest's attributes of an open handle's file (fstat on its fd). */
  getattrOpen(h: OpenFile | DirStream): Awaitable<Stat> {
    if (h instanceof OpenFile && this.offloads(undefined, h.inode)) {
      return h.use((fd) => statxOnPool(fd, undefined, h.inode.label)).then((st) => this.view(h.inode, st));
    }
    return this.view(h.inode, fstat(h.fd, h.inode.label));
  }

  // ---- metadata calls on the pool ------------------------------------------------
  // Where a stat or an open can wait on a server (FUSE, NFS, CIFS: FsSpeed
  // 'remote'), lookup, getattr, open, opendir, readdir, unlink, rename, statfs
  // and the xattr calls run their host calls on libuv's pool, so
  // one slow name never holds up every other request. Only with the
  // process's own credentials: a pool thread carries those, not a caller's
  // (a 9P --9p-permissions host caller other than the daemon's user stays
  // inline). On local and memory
  // filesystems a statx costs ~1 µs inline against ~30 µs for the hop, so
  // they stay inline; so does the sync engine (--io-engine sync: as before).

  private offloads(c: Caller | undefined, inode: Inode): boolean {
    return this.metadataOnPool && this.speedOf(inode) === 'remote' && asProcess(this.host(c));
  }

  private speedOf(inode: Inode): FsSpeed {
    let speed = this.speeds.get(inode.dev);
    if (speed === undefined) {
      speed = this.fsSpeed(inode.fd);
      this.speeds.set(inode.dev, speed);
    }
    return speed;
  }

  /**
   * Runs `fn` on the inode's fd, holding the inode while it waits: a
   * reference (it is not closed) and an open count (its fd is not traded
   * for a file handle).
   */
  private async holding<T>(inode: Inode, fn: (fd: number) => Promise<T>): Promise<T> {
    this.inodes.ref(inode);
    inode.openCount++;
    try {
      return await fn(inode.fd);
    } finally {
      inode.handleClosed();
      this.release(inode);
    }
  }

  private lookupOnPool(parent: Inode, name: Buffer, loc: Location | undefined): Promise<Entry> {
    const what = printable(name);
    return this.holding(parent, async (dirfd) => {
      const st = await statxOnPool(dirfd, name, what);
      const known = this.inodes.find(st.dev, st.ino);
      if (known && known.rawFd >= 0) {
        this.inodes.ref(known);
        this.inodes.touch(known);
        if (loc && known !== this.root) this.model.reached(known, loc);
        return { inode: known, stat: this.view(known, st) };
      }
      const fd = await openatOnPool(dirfd, name, O_PATH | O_NOFOLLOW, what);
      let fst: Stat;
      try {
        fst = await statxOnPool(fd, undefined, what);
      } catch (e) {
        close(fd);
        throw e;
      }
      const inode = this.inodes.intern(fd, fst);
      if (loc && inode !== this.root) this.model.reached(inode, loc);
      return { inode, stat: this.view(inode, fst) };
    });
  }

  /** Changes attributes; `file` (an open handle) is used for size when given. */
  setattr(c: Caller | undefined, inode: Inode, a: SetAttr, file?: OpenFile): Stat {
    this.checkWritable('setattr', inode.label);
    withCredentials(this.host(c), () => {
      if (a.size !== undefined) {
        if (inode.isDir) fail(Errno.EISDIR, 'truncate', inode.label);
        if (inode.kind !== S_IFREG) fail(Errno.EINVAL, 'truncate', inode.label);
        if (file && (file.flags & O_ACCMODE) !== O_RDONLY) ftruncate(file.fd, a.size, inode.label);
        else truncatePathFd(inode.fd, a.size, inode.label);
      }
      this.model.setOwnerMode(inode, a);
      if (a.atime !== undefined || a.mtime !== undefined) {
        utimensFd(inode.fd, a.atime ?? 'omit', a.mtime ?? 'omit', inode.label);
      } else if (a.ctime && a.size === undefined && a.uid === undefined && a.gid === undefined && a.mode === undefined) {
        fchownFd(inode.fd, -1, -1, inode.label); // a no-op chown updates ctime only
      }
    });
    // HANDLE_KILLPRIV_V2: the kernel asks when the caller lacks CAP_FSETID;
    // this daemon has it, so it must do the killing.
    if (a.killSuidgid && a.mode === undefined) return this.killSuidgid(inode) ?? this.statNow(inode);
    return this.statNow(inode);
  }

  readlink(inode: Inode): Buffer {
    if (!inode.isSymlink) fail(Errno.EINVAL, 'readlink', inode.label);
    return this.model.readlink(inode);
  }

  statfs(inode: Inode): Awaitable<StatFs> {
    // fstatfs refuses O_PATH fds on some kernels; the /proc path never does.
    if (this.offloads(undefined, inode)) {
      return this.holding(inode, async (pfd) => {
        const fd = await reopenOnPool(pfd, O_PATH, inode.label);
        try {
          return await fstatfsOnPool(fd, inode.label);
        } finally {
          close(fd);
        }
      });
    }
    const fd = openat(AT_FDCWD, procPath(inode.fd), O_PATH);
    try {
      return fstatfs(fd, inode.label);
    } finally {
      close(fd);
    }
  }

  isSubmountRoot(inode: Inode): boolean {
    if (!inode.isDir || inode.dev === this.root.dev) return false;
    try {
      const parent = this.lookupNow(DAEMON, inode, Buffer.from('..'));
      this.release(parent.inode);
      return parent.inode.dev !== inode.dev;
    } catch {
      return false;
    }
  }

  /**
   * Closes the export's fds: every inode's and the handle anchors. For the
   * server's last step, once every session has ended and the engine has no
   * call in flight; an inode used after this fails with ESTALE.
   */
  close(): void {
    this.inodes.closeAll();
  }

  /** syncfs(2) on the export's filesystem. */
  syncfs(): void {
    const d = this.opendirAs(undefined, this.root); // syncfs needs a real fd, not O_PATH
    try {
      syncfs(d.fd, this.sharedDir);
    } finally {
      this.closeDir(d);
    }
  }

  /** access(2) as the caller; F_OK/R_OK/W_OK/X_OK in `mask`. */
  access(c: Caller, inode: Inode, mask: number): void {
    if (mask & 2) this.checkWritable('access(W_OK)', inode.label);
    withCredentials(this.host(c), () => accessPathFd(inode.fd, mask & 7, inode.label));
  }

  // ---- opening -------------------------------------------------------------

  /** Opens an inode for I/O. Special files never block and devices are refused. */
  open(c: Caller, inode: Inode, flags: number, o: OpenOptions = {}): Awaitable<OpenFile> {
    return this.openAs(c, inode, flags, o, true);
  }

  /** open(); `mayWait` false: inline whatever the filesystem (the backend's own use). */
  private openAs(c: Caller, inode: Inode, flags: number, o: OpenOptions, mayWait: boolean): Awaitable<OpenFile> {
    let f = openFlags(flags, o.direct);
    if (inode.isSymlink) fail(Errno.ELOOP, 'open', inode.label);
    switch (inode.hostKind) {
      case S_IFDIR:
        if ((f & O_ACCMODE) !== O_RDONLY) fail(Errno.EISDIR, 'open', inode.label);
        break;
      case S_IFCHR:
      case S_IFBLK:
        // A guest opening a host device node through the export would reach
        // the host's hardware; guest kernels handle device nodes themselves.
        fail(Errno.EACCES, 'open (device node)', inode.label);
      case S_IFIFO:
      case S_IFSOCK:
        f |= O_NONBLOCK; // never let a guest park the server on a FIFO
        break;
    }
    if (f & O_TRUNC) this.checkWritable('open(O_TRUNC)', inode.label);
    if ((f & O_ACCMODE) !== O_RDONLY) this.checkWritable('open for write', inode.label);
    const made = (fd: number): OpenFile => {
      const file = this.opened(new OpenFile(this.ref(inode), fd, f));
      if (o.killSuidgid && f & O_TRUNC) this.killSuidgid(inode);
      return file;
    };
    // An open on a server's filesystem waits for the server (FUSE OPEN, NFS): on the pool.
    if (mayWait && this.offloads(c, inode)) return this.holding(inode, (pfd) => reopenOnPool(pfd, f, inode.label)).then(made);
    return made(withCredentials(this.host(c), () => reopen(inode.fd, f, inode.label)));
  }

  opendir(c: Caller, inode: Inode): Awaitable<DirStream> {
    if (inode.isDir && this.offloads(c, inode)) {
      return this.holding(inode, (pfd) => reopenOnPool(pfd, O_RDONLY | O_DIRECTORY, inode.label)).then(
        (fd) => new DirStream(this.ref(inode), fd, this.model.readdirPolicy()),
      );
    }
    return this.opendirAs(c, inode);
  }

  private opendirAs(c: Caller | undefined, inode: Inode): DirStream {
    if (!inode.isDir) fail(Errno.ENOTDIR, 'opendir', inode.label);
    const fd = withCredentials(this.host(c), () => reopen(inode.fd, O_RDONLY | O_DIRECTORY, inode.label));
    return new DirStream(this.ref(inode), fd, this.model.readdirPolicy());
  }

  /**
   * Entries of `dir` from `offset`, with guest inode numbers (host numbers
   * remapped across filesystems; '..' of the root is the root, as lookup
   * says).
   */
  readdir(dir: DirStream, offset: bigint, emit: (d: GuestDirent) => boolean): Awaitable<void> {
    const atRoot = dir.inode === this.root;
    const dev = dir.inode.dev;
    const guest = (d: Dirent): boolean => {
      const dotdotAtRoot = atRoot && d.name.length === 2 && d.name[0] === 0x2e && d.name[1] === 0x2e;
      const guestIno = dotdotAtRoot ? this.root.guestIno : this.inoMap.guestIno(dev, d.ino);
      return emit({ ino: d.ino, off: d.off, type: d.type, name: d.name, guestIno });
    };
    // getdents on a server's directory waits for the server: on the pool.
    if (this.offloads(undefined, dir.inode)) return dir.readOnPool(offset, guest);
    dir.read(offset, guest);
  }

  // ---- live migration ------------------------------------------------------------

  private get migrationDeps(): MigrationDeps {
    return {
      inodes: this.inodes,
      root: this.root,
      lookup: (parent, name) => this.lookup(DAEMON, parent, name),
      release: (inode, n) => this.release(inode, n),
      reached: (inode, parent, name) => this.model.reached(inode, { parent, name }),
    };
  }

  locate(inode: Inode): InodeLocation {
    return locate(this.migrationDeps, inode);
  }

  restore(reqs: readonly RestoreRequest[]): Promise<(Inode | SysError)[]> {
    return restore(this.migrationDeps, reqs);
  }

  closeFile(file: OpenFile): void {
    this.locks.closeFile(file);
    file.close();
    this.release(file.inode);
  }

  closeDir(dir: DirStream): void {
    dir.close();
    this.release(dir.inode);
  }

  // ---- creating --------------------------------------------------------------

  /** After a creation: the model gives the new object the guest's owner, mode and type. */
  private recordNew(e: Entry, parent: Inode, cr: Caller, mode: number, rdev?: bigint, name?: Buffer): Entry {
    return { inode: e.inode, stat: this.model.recordNew(cr, parent, e.inode, e.stat, mode, { rdev, umask: cr.umask, name }) };
  }

  /** Runs a host creation under the credentials and umask the model asks for. */
  private creating<T>(cr: Caller, fn: () => T): T {
    return this.model.creating(cr, cr.umask, fn);
  }

  private beginCreate(op: string, parent: Inode, name: Buffer): void {
    this.checkName(op, name, Errno.EEXIST);
    this.checkWritable(op, printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, op, printable(name));
  }

  private created(parent: Inode, name: Buffer): Entry {
    return this.intern(openPath(parent.fd, name), printable(name), { parent, name });
  }

  /**
   * Creates and opens a regular file. The new inode carries one reference
   * (besides the open file's own). Without O_EXCL an existing name is opened
   * instead, through open(): the host openat(O_CREAT) of an existing FIFO
   * would park the server in the kernel, and of a device node would open the
   * host's device.
   */
  create(c: Caller, parent: Inode, name: Buffer, flags: number, mode: number, o: OpenOptions = {}): { entry: Entry; file: OpenFile } {
    const made = this.createOpen(this.creator(c), parent, name, flags, mode, o.direct);
    if (o.killSuidgid && flags & O_TRUNC) this.killSuidgid(made.entry.inode);
    return made;
  }

  private createOpen(cr: Caller, parent: Inode, name: Buffer, flags: number, mode: number, direct?: boolean): { entry: Entry; file: OpenFile } {
    this.beginCreate('create', parent, name);
    const f = (createFlags(flags, direct) & ~O_DIRECTORY) | O_EXCL;
    const exclusive = (flags & O_EXCL) !== 0;
    if (!exclusive) {
      const existing = this.openExisting(cr, parent, name, flags, direct);
      if (existing) return existing;
    }
    const hostMode = this.model.hostMode(S_IFREG, mode);
    let fd: number;
    try {
      fd = this.creating(cr, () => openat(parent.fd, name, f, hostMode));
    } catch (e) {
      // The name appeared since the lookup: open what is there now.
      const existing = !exclusive && isSysError(e, Errno.EEXIST) ? this.openExisting(cr, parent, name, flags, direct) : undefined;
      if (existing) return existing;
      throw e;
    }
    let entry: Entry;
    try {
      // The inode's O_PATH handle comes from the open fd itself: no second
      // name lookup that a concurrent rename could redirect.
      const pfd = openat(AT_FDCWD, procPath(fd), O_PATH);
      entry = this.intern(pfd, printable(name), { parent, name });
      entry = this.recordNew(entry, parent, cr, S_IFREG | (mode & 0o7777), undefined, name);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { entry, file: this.opened(new OpenFile(this.ref(entry.inode), fd, f & ~(O_CREAT | O_TRUNC | O_EXCL))) };
  }

  /** create() of a name that exists: open(2)'s O_CREAT without O_EXCL. Undefined if the name is absent. */
  private openExisting(cr: Caller, parent: Inode, name: Buffer, flags: number, direct?: boolean): { entry: Entry; file: OpenFile } | undefined {
    let entry: Entry;
    try {
      entry = this.lookupNow(cr, parent, name);
    } catch (e) {
      if (isSysError(e, Errno.ENOENT)) return undefined;
      throw e;
    }
    try {
      if (entry.inode.isDir) fail(Errno.EISDIR, 'create', `${printable(name)} is a directory`);
      return { entry, file: this.openAs(cr, entry.inode, flags & ~(O_CREAT | O_EXCL | O_DIRECTORY), { direct }, false) as OpenFile };
    } catch (e) {
      this.release(entry.inode);
      throw e;
    }
  }

  /** An unnamed file in `parent` (O_TMPFILE), open and with one reference. */
  tmpfile(c: Caller, parent: Inode, flags: number, mode: number, o: OpenOptions = {}): { entry: Entry; file: OpenFile } {
    this.checkWritable('tmpfile', parent.label);
    const cr = this.creator(c);
    if (!parent.isDir) fail(Errno.ENOTDIR, 'tmpfile', parent.label);
    this.model.beforeTmpfile(parent);
    const f = (openFlags(flags, o.direct) & ~(O_CREAT | O_TRUNC | O_DIRECTORY)) | O_TMPFILE;
    if ((f & O_ACCMODE) === O_RDONLY) fail(Errno.EINVAL, 'tmpfile', `${parent.label}: O_TMPFILE needs write access`);
    const hostMode = this.model.hostMode(S_IFREG, mode);
    const fd = this.creating(cr, () => openat(parent.fd, '.', f, hostMode));
    let entry: Entry;
    try {
      entry = this.intern(openat(AT_FDCWD, procPath(fd), O_PATH), `tmpfile in ${parent.label}`, undefined);
      entry = this.recordNew(entry, parent, cr, S_IFREG | (mode & 0o7777));
    } catch (e) {
      close(fd);
      throw e;
    }
    return { entry, file: this.opened(new OpenFile(this.ref(entry.inode), fd, f & ~O_TMPFILE)) };
  }

  mkdir(c: Caller, parent: Inode, name: Buffer, mode: number): Entry {
    this.beginCreate('mkdir', parent, name);
    const cr = this.creator(c);
    this.model.makeNode(cr, parent, name, { type: S_IFDIR, mode }, cr.umask);
    return this.recordNew(this.created(parent, name), parent, cr, S_IFDIR | (mode & 0o7777), undefined, name);
  }

  /** mknod of a regular file, device, FIFO or socket (`mode` includes S_IFMT). */
  mknod(c: Caller, parent: Inode, name: Buffer, mode: number, rdev: bigint): Entry {
    this.beginCreate('mknod', parent, name);
    const cr = this.creator(c);
    const type = mode & S_IFMT || S_IFREG;
    if (![S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK].includes(type)) fail(Errno.EINVAL, 'mknod', printable(name));
    this.model.makeNode(cr, parent, name, { type, mode, rdev }, cr.umask);
    const isDev = type === S_IFCHR || type === S_IFBLK;
    return this.recordNew(this.created(parent, name), parent, cr, type | (mode & 0o7777), isDev ? rdev : 0n, name);
  }

  symlink(c: Caller, parent: Inode, name: Buffer, target: Buffer): Entry {
    this.beginCreate('symlink', parent, name);
    if (target.length === 0 || target.includes(0)) fail(Errno.EINVAL, 'symlink', `${printable(name)} target`);
    if (target.length > SYMLINK_MAX) fail(Errno.ENAMETOOLONG, 'symlink', `${printable(name)} target`);
    const cr = this.creator(c);
    this.model.makeNode(cr, parent, name, { type: S_IFLNK, target }, undefined);
    return this.recordNew(this.created(parent, name), parent, cr, S_IFLNK | 0o777, undefined, name);
  }

  link(c: Caller, inode: Inode, newParent: Inode, name: Buffer): Entry {
    this.beginCreate('link', newParent, name);
    // A directory: the host's linkat says EPERM, after EEXIST for a name that exists (as link(2) orders them).
    withCredentials(this.host(this.creator(c)), () => linkFd(inode.fd, newParent.fd, name));
    if (inode.loc) this.model.linked(inode.loc, { parent: newParent, name });
    return this.created(newParent, name);
  }

  // ---- removing and renaming --------------------------------------------------

  unlink(c: Caller, parent: Inode, name: Buffer, flags: number): Awaitable<void> {
    this.checkName('unlink', name);
    if (isDot(name)) fail(Errno.EINVAL, 'unlink', printable(name));
    if (isDotDot(name)) fail(Errno.ENOTEMPTY, 'unlink', printable(name));
    this.checkWritable('unlink', printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, 'unlink', printable(name));
    const removeDir = (flags & AT_REMOVEDIR) !== 0;
    this.model.beforeRemove(parent, name, removeDir);
    const removed = () => this.model.removed({ parent, name }, removeDir);
    if (this.offloads(c, parent)) {
      return this.holding(parent, (fd) => unlinkatOnPool(fd, name, flags & AT_REMOVEDIR, printable(name))).then(removed);
    }
    withCredentials(this.host(c), () => unlinkat(parent.fd, name, flags & AT_REMOVEDIR));
    removed();
  }

  rename(c: Caller, oldParent: Inode, oldName: Buffer, newParent: Inode, newName: Buffer, flags = 0): Awaitable<void> {
    this.checkName('rename', oldName);
    this.checkName('rename', newName);
    for (const n of [oldName, newName]) {
      if (isDot(n) || isDotDot(n)) fail(Errno.EBUSY, 'rename', printable(n));
    }
    this.checkWritable('rename', printable(oldName));
    if (!oldParent.isDir || !newParent.isDir) fail(Errno.ENOTDIR, 'rename', printable(oldName));
    if (flags & ~7) fail(Errno.EINVAL, 'rename', `${printable(oldName)} flags ${flags}`);
    const exchange = (flags & RENAME_EXCHANGE) !== 0;
    const renamed = () => this.model.renamed({ parent: oldParent, name: oldName }, { parent: newParent, name: newName }, exchange);
    if (this.offloads(c, oldParent) || this.offloads(c, newParent)) {
      const what = printable(oldName);
      return this.holding(oldParent, (from) => this.holding(newParent, (to) => renameat2OnPool(from, oldName, to, newName, flags, what))).then(
        renamed,
      );
    }
    withCredentials(this.host(c), () => renameat2(oldParent.fd, oldName, newParent.fd, newName, flags));
    renamed();
  }

  /** The live inode (not the root) now at (parent, name), if any (after a rename). */
  private liveAt(parent: Inode, name: Buffer): ModelInode | undefined {
    try {
      const fd = openPath(parent.fd, name);
      try {
        const st = fstat(fd);
        const inode = this.inodes.find(st.dev, st.ino);
        return inode && inode !== this.root ? inode : undefined;
      } finally {
        close(fd);
      }
    } catch (e) {
      if (!isSysError(e)) throw e;
      return undefined;
    }
  }

  // ---- the data path -------------------------------------------------------------

  /**
   * Reads up to `max` bytes of `file` at `offset` into `dst` — segments the
   * transport provides (guest memory, or a plain buffer) — starting `skip`
   * bytes in. Returns the bytes read (fewer at end of file).
   */
  read(file: OpenFile, offset: number | bigint, dst: readonly Buffer[], skip: number, max: number): Awaitable<number> {
    return file.useNow((fd) => readInto(this.engine, { fd, speed: file.speed, what: file.inode.label }, offset, dst, skip, max));
  }

  /**
   * Writes all of `src` (a request's payload, left where the transport
   * received it) to `file` at `offset`; see WriteOptions for a failure part
   * way. `killSuidgid`: the caller lacks CAP_FSETID (FUSE's WRITE_KILL_SUIDGID).
   */
  write(file: OpenFile, offset: number | bigint, src: readonly Buffer[], o: WriteOptions & { killSuidgid?: boolean }): Awaitable<number> {
    if (!o.killSuidgid) return file.useNow((fd) => writeFrom(this.engine, { fd, speed: file.speed, what: file.inode.label }, offset, src, o));
    return this.writeKillingSuidgid(file, offset, src, o);
  }

  private async writeKillingSuidgid(file: OpenFile, offset: number | bigint, src: readonly Buffer[], o: WriteOptions): Promise<number> {
    // The setuid/setgid bits go after the write even when the client
    // released the handle meanwhile: the inode stays referenced until then.
    const inode = this.ref(file.inode);
    try {
      const n = await file.use(async (fd) => writeFrom(this.engine, { fd, speed: file.speed, what: inode.label }, offset, src, o));
      this.killSuidgid(inode);
      return n;
    } finally {
      this.release(inode);
    }
  }

  /** Notes which engine policy fits the new file's filesystem. */
  private opened(file: OpenFile): OpenFile {
    file.speed = this.speedOf(file.inode);
    return file;
  }

  /**
   * What the kernel does on write or truncate by a caller without
   * CAP_FSETID: setuid goes; setgid goes only with group-execute (without
   * it, it marks mandatory locking). Returns the new attributes if anything
   * changed.
   */
  private killSuidgid(inode: Inode): Stat | undefined {
    const st = this.statNow(inode);
    let mode = st.mode & 0o7777;
    if (mode & 0o4000) mode &= ~0o4000;
    if (mode & 0o2000 && mode & 0o010) mode &= ~0o2000;
    if (mode === (st.mode & 0o7777)) return undefined;
    return this.setattr(undefined, inode, { mode }); // as the daemon, which holds CAP_FSETID
  }

  // ---- more of the data path ---------------------------------------------------

  /**
   * fsync(2), or fdatasync(2), of an open handle on the engine: a slow disk
   * never holds up other requests, and the fd stays open until the call
   * ends even if the handle is released meanwhile.
   */
  fsync(file: OpenFile, datasync: boolean): Promise<void> {
    const op = datasync ? 'fdatasync' : 'fsync';
    return file
      .use((fd) => this.engine.fsync(fd, datasync, file.speed))
      .then((r) => {
        if (r < 0) throw new SysError(-r, op, file.inode.label);
      });
  }

  fallocate(file: OpenFile, mode: number, offset: number, length: number): Promise<void> {
    this.checkWritable('fallocate', file.inode.label);
    return file
      .use((fd) => this.engine.fallocate(fd, mode, offset, length))
      .then((r) => {
        if (r < 0) throw new SysError(-r, 'fallocate', file.inode.label);
      });
  }

  /** lseek(2) on an open file; SEEK_DATA/SEEK_HOLE are what clients send through. */
  lseek(file: OpenFile, offset: number, whence: number): number {
    return lseek(file.fd, offset, whence, file.inode.label);
  }

  /** copy_file_range(2) between two open files; at most 2^31 - 4096 bytes a call, as the kernel does. */
  copyFileRange(from: OpenFile, fromOffset: number, to: OpenFile, toOffset: number, length: number | bigint): Promise<number> {
    this.checkWritable('copy_file_range', to.inode.label);
    const len = BigInt(length) > 0x7ffff000n ? 0x7ffff000 : Number(length);
    return from
      .use((fdIn) => to.use((fdOut) => this.engine.copyFileRange(fdIn, fromOffset, fdOut, toOffset, len)))
      .then((r) => {
        if (r < 0) throw new SysError(-r, 'copy_file_range', `${from.inode.label} -> ${to.inode.label}`);
        return r;
      });
  }

  // ---- locks -----------------------------------------------------------------
  // As virtiofsd's getlk/setlk/setlkw: a lock `owner` is the protocol's
  // opaque name for a guest process (FUSE lock_owner, 9P client_id+proc_id);
  // the lock table and every waiting request live here.

  /** F_GETLK: the lock that would conflict with `owner` taking `l` through `file`, or one of type F_UNLCK. */
  getlk(file: OpenFile, owner: string, l: LockRequest, o?: LockOptions): LockRange {
    return this.locks.get(owner, file, l, o);
  }

  /** F_SETLK: takes (or, type F_UNLCK, releases) a record lock without waiting; false = another owner holds a conflicting one. */
  setlk(file: OpenFile, owner: string, l: LockRequest, o: SetLockOptions = {}): boolean {
    return this.locks.set(owner, file, l, o.pid ?? 0, o);
  }

  /**
   * F_SETLKW (with `o.flock`, a blocking flock()): resolves once the lock
   * is taken, never holding up other requests. `o.signal` cancels it
   * (EINTR: FUSE INTERRUPT, a session ending); closing the handle ends it
   * with EBADF.
   */
  setlkw(file: OpenFile, owner: string, l: LockRequest, o: WaitLockOptions = {}): Promise<void> {
    return this.locks.wait(owner, file, l, o);
  }

  /** flock(2) without waiting, type F_RDLCK / F_WRLCK / F_UNLCK; false = another owner holds it. */
  flock(file: OpenFile, owner: string, type: number): boolean {
    return this.locks.flock(owner, file, type);
  }

  /** A process closed its descriptor of `file` (FUSE FLUSH): its POSIX locks on the file go, as with close(2). */
  flush(file: OpenFile, owner: string): void {
    this.locks.set(owner, file, { type: F_UNLCK, start: 0, len: 0 }, 0);
  }

  /** Lock requests waiting on this backend, all sessions. */
  get waitingLocks(): number {
    return this.locks.waiting;
  }

  // ---- xattrs --------------------------------------------------------------

  /**
   * Whether `caller` holds the privilege the kernel asks of it for privileged
   * xattr namespaces: a guest caller counts
   * as root when its uid is 0 on the host (passthrough, after --translate-uid)
   * or in the guest's view (mapped models, where the daemon owns the files).
   */
  private privileged(caller: Caller): boolean {
    return this.model.privileged(caller);
  }

  /** Refuses `access` to a privileged namespace for an unprivileged caller. */
  private checkXattrPrivilege(op: string, caller: Caller, inode: Inode, name: Buffer, access: XattrAccess): void {
    if (this.privileged(caller)) return;
    const errno = unprivilegedRefusal(name, access);
    if (errno !== undefined) fail(errno, op, `${inode.label} ${printable(name)}: the caller (uid ${caller.uid}) lacks the privilege`);
  }

  private hostXattr(op: string, inode: Inode, name: Buffer, refusal: number): Buffer {
    checkXattrName(op, name);
    const host = this.model.hostXattrName(name);
    if (!host) fail(refusal, op, `${inode.label} ${printable(name)} belongs to the ${this.modelName} model`);
    return host;
  }

  // Privileged namespaces are judged by the caller even where host calls run
  // as the daemon (FUSE, as virtiofsd does).

  getxattr(c: Caller, inode: Inode, name: Buffer): Awaitable<Buffer> {
    const host = this.hostXattr('getxattr', inode, name, Errno.ENODATA);
    this.checkXattrPrivilege('getxattr', c, inode, name, 'read');
    if (inode.hostKind === S_IFLNK) fail(Errno.ENODATA, 'getxattr', `${inode.label} ${printable(name)}`);
    if (this.offloads(c, inode)) return this.holding(inode, (fd) => getxattrOnPool(fd, host, inode.label));
    return withCredentials(this.host(c), () => getxattr(inode.fd, host, inode.label));
  }

  listxattr(c: Caller, inode: Inode): Awaitable<Buffer[]> {
    if (inode.hostKind === S_IFLNK) return [];
    if (this.offloads(c, inode)) return this.holding(inode, (fd) => listxattrOnPool(fd, inode.label)).then((names) => this.guestXattrNames(c, names));
    return this.guestXattrNames(
      c,
      withCredentials(this.host(c), () => listxattr(inode.fd, inode.label)),
    );
  }

  /** The host's names as this caller may see them: the model's own are hidden, privileged ones too for an unprivileged caller. */
  private guestXattrNames(c: Caller, names: Buffer[]): Buffer[] {
    const everything = this.privileged(c);
    const out: Buffer[] = [];
    for (const n of names) {
      const g = this.model.guestXattrName(n);
      if (g && (everything || listedUnprivileged(g))) out.push(g);
    }
    return out;
  }

  /** Whether `caller` may write `name` at all (9P checks at Txattrcreate, before the value arrives). */
  checkSetxattr(c: Caller, inode: Inode, name: Buffer): void {
    this.hostXattr('setxattr', inode, name, Errno.EACCES);
    this.checkWritable('setxattr', inode.label);
    this.checkXattrPrivilege('setxattr', c, inode, name, 'write');
  }

  setxattr(c: Caller, inode: Inode, name: Buffer, value: Buffer, flags: number): Awaitable<void> {
    const host = this.hostXattr('setxattr', inode, name, Errno.EACCES);
    this.checkWritable('setxattr', inode.label);
    this.checkXattrPrivilege('setxattr', c, inode, name, 'write');
    if (value.length > XATTR_SIZE_MAX) fail(Errno.E2BIG, 'setxattr', `${inode.label} ${printable(name)}`);
    if (inode.hostKind === S_IFLNK) fail(Errno.EPERM, 'setxattr', `${inode.label} ${printable(name)}`);
    if (this.model.setAcl(inode, name, host, value, flags)) return;
    // The value may be a view of guest memory: the pool thread reads a copy, which no device reset can unmap.
    if (this.offloads(c, inode)) return this.holding(inode, (fd) => setxattrOnPool(fd, host, Buffer.from(value), flags, inode.label));
    withCredentials(this.host(c), () => setxattr(inode.fd, host, value, flags, inode.label));
  }

  removexattr(c: Caller, inode: Inode, name: Buffer): Awaitable<void> {
    const host = this.hostXattr('removexattr', inode, name, Errno.EACCES);
    this.checkWritable('removexattr', inode.label);
    this.checkXattrPrivilege('removexattr', c, inode, name, 'write');
    if (inode.hostKind === S_IFLNK) fail(Errno.ENODATA, 'removexattr', `${inode.label} ${printable(name)}`);
    if (this.offloads(c, inode)) return this.holding(inode, (fd) => removexattrOnPool(fd, host, inode.label));
    withCredentials(this.host(c), () => removexattr(inode.fd, host, inode.label));
  }
}

function checkXattrName(op: string, name: Buffer): void {
  if (name.length === 0 || name.length > 255) fail(name.length ? Errno.ERANGE : Errno.EINVAL, op, printable(name));
  if (name.includes(0)) fail(Errno.EINVAL, op, printable(name));
}

export { SysError, Inode, OpenFile, DirStream, FdAccount, FdBudget };
export { DAEMON } from './api.js';
export type { Backend, Caller, Entry, GuestDirent, OpenOptions, SetAttr } from './api.js';
export type { FdBudgetLimits };
