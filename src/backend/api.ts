// The Backend API: everything the 9P and FUSE protocols ask of the export,
// in the spirit of virtiofsd's FileSystem trait and QEMU's FileOperations.
// Protocols hold nodes (Inode), open files (OpenFile) and directory streams
// (DirStream) as opaque handles: they read the fields that name a node on
// the wire (id, guestIno, label, isDir) and pass the handles back. They
// never touch an fd, the inode table, the ino map or the lock table.
//
// Whose rights a call runs with is the backend's business, decided from the
// Caller: every call that resolves a name or changes the tree takes one.
// Calls on an open handle (read, write, fsync, locks...) do not: as with a
// file descriptor, the rights were checked when it was opened. A call that
// can block on storage returns an Awaitable: a value at once, or a promise
// when the backend had to wait (an engine ran the call), so no protocol
// waits for another's request. Protocols must expect either, and must
// check after a wait that what they act on (a fid, a handle) still exists.
import type { Credentials, Dirent, LockRange, Stat, StatFs, SysError, TimeArg } from '../sys/index.js';
import type { WriteOptions } from '../sys/vectored.js';
import { DirStream, OpenFile } from './files.js';
import type { FdAccount, FdBudget } from './fd-budget.js';
import type { Inode } from './inode-table.js';
import type { LockOptions, LockRequest, SetLockOptions, WaitLockOptions } from './locks.js';
import type { InodeLocation, RestoreRequest } from './migration.js';

/** A result now, or later when the call had to wait for storage (the I/O engine ran it). */
export type Awaitable<T> = T | Promise<T>;

/**
 * `f` of `v`: at once when `v` is a value, when it settles when it is a
 * promise. Protocols chain backend results with it, so the common case (a
 * result at once) costs no microtask and replies go out in the same turn.
 */
export function after<T, R>(v: Awaitable<T>, f: (t: T) => Awaitable<R>): Awaitable<R> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/**
 * Who asks. `clientChecked` (from Credentials): the client's kernel has
 * checked this caller's permissions, so host calls run with the daemon's
 * own credentials and new objects are given to the caller afterwards, as
 * QEMU's 9p does. `createsAsCaller`: the same, except that creations run
 * with the caller's credentials so new objects are born with its owner, as
 * virtiofsd does for FUSE (the guest kernel checks with default_permissions).
 * Neither: host calls run with the caller's credentials and the host kernel
 * checks (9P with --9p-permissions host).
 */
export interface Caller extends Credentials {
  /** the requesting process in the guest (0 when the protocol does not say) */
  readonly pid: number;
  /** the umask the server must apply to a creation (FUSE with DONT_MASK); undefined: the client applied it */
  readonly umask?: number;
  readonly createsAsCaller?: boolean;
}

/**
 * The daemon itself (the backend's own lookups, tools, tests): host calls run
 * with the daemon's credentials and nothing is given to a guest user.
 */
export const DAEMON: Caller = Object.freeze({ uid: 0, gid: 0, groups: [], pid: 0, createsAsCaller: true });

export interface Entry {
  inode: Inode;
  stat: Stat;
}

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number | bigint;
  atime?: TimeArg;
  mtime?: TimeArg;
  /** only the change time: touch ctime without changing anything else */
  ctime?: boolean;
  /**
   * The caller lacks CAP_FSETID (FUSE's FATTR_KILL_SUIDGID): unless the
   * mode is set too, setuid and setgid go as the kernel would take them.
   */
  killSuidgid?: boolean;
}

export interface OpenOptions {
  /** The caller lacks CAP_FSETID (FUSE_OPEN_KILL_SUIDGID): an O_TRUNC open clears setuid/setgid. */
  killSuidgid?: boolean;
  /**
   * Keep the client's O_DIRECT on the host fd (virtiofsd's --allow-direct-io);
   * otherwise it is dropped. With it, a read or write the host filesystem finds
   * misaligned fails with its EINVAL.
   */
  direct?: boolean;
}

/** A directory entry as the guest sees it: `ino` is the guest's inode number. */
export interface GuestDirent extends Dirent {
  readonly guestIno: bigint;
}

export interface Backend {
  /** the export's root; its reference is never dropped */
  readonly root: Inode;
  /** the open-fd budgets of the sessions on this backend */
  readonly fds: FdBudget;
  readonly readonly: boolean;

  /** A protocol starts handling one request (inode fds touched by it stay open until the next). */
  beginRequest(): void;
  /** The live node with this id (a FUSE node id), or undefined. */
  inodeById(id: number | bigint): Inode | undefined;
  /** One more reference on a node (a cloned fid, a FUSE lookup reply). */
  ref(inode: Inode): Inode;
  /** Drops `n` references (FUSE FORGET, a clunked fid). */
  release(inode: Inode, n?: number): void;

  // names and attributes
  lookup(c: Caller, parent: Inode, name: Buffer): Awaitable<Entry>;
  getattr(inode: Inode): Awaitable<Stat>;
  getattrOpen(h: OpenFile | DirStream): Awaitable<Stat>;
  setattr(c: Caller, inode: Inode, a: SetAttr, file?: OpenFile): Awaitable<Stat>;
  readlink(inode: Inode): Awaitable<Buffer>;
  statfs(inode: Inode): Awaitable<StatFs>;
  /** Whether the node is the root of a filesystem mounted under the export (FUSE_ATTR_SUBMOUNT). */
  isSubmountRoot(inode: Inode): boolean;
  syncfs(): Awaitable<void>;
  access(c: Caller, inode: Inode, mask: number): Awaitable<void>;

  // opening and reading directories
  open(c: Caller, inode: Inode, flags: number, o?: OpenOptions): Awaitable<OpenFile>;
  opendir(c: Caller, inode: Inode): Awaitable<DirStream>;
  /** Entries from `offset` until `emit` returns false (that entry comes again next time) or the directory ends. */
  readdir(dir: DirStream, offset: bigint, emit: (d: GuestDirent) => boolean): Awaitable<void>;
  closeFile(file: OpenFile): void;
  closeDir(dir: DirStream): void;

  // creating, removing, renaming
  create(c: Caller, parent: Inode, name: Buffer, flags: number, mode: number, o?: OpenOptions): Awaitable<{ entry: Entry; file: OpenFile }>;
  tmpfile(c: Caller, parent: Inode, flags: number, mode: number, o?: OpenOptions): Awaitable<{ entry: Entry; file: OpenFile }>;
  mkdir(c: Caller, parent: Inode, name: Buffer, mode: number): Awaitable<Entry>;
  mknod(c: Caller, parent: Inode, name: Buffer, mode: number, rdev: bigint): Awaitable<Entry>;
  symlink(c: Caller, parent: Inode, name: Buffer, target: Buffer): Awaitable<Entry>;
  link(c: Caller, inode: Inode, newParent: Inode, name: Buffer): Awaitable<Entry>;
  unlink(c: Caller, parent: Inode, name: Buffer, flags: number): Awaitable<void>;
  rename(c: Caller, oldParent: Inode, oldName: Buffer, newParent: Inode, newName: Buffer, flags?: number): Awaitable<void>;

  // the data path, on open handles
  read(file: OpenFile, offset: number | bigint, dst: readonly Buffer[], skip: number, max: number): Awaitable<number>;
  write(file: OpenFile, offset: number | bigint, src: readonly Buffer[], o: WriteOptions & { killSuidgid?: boolean }): Awaitable<number>;
  fsync(file: OpenFile, datasync: boolean): Promise<void>;
  fallocate(file: OpenFile, mode: number, offset: number, length: number): Promise<void>;
  lseek(file: OpenFile, offset: number, whence: number): number;
  copyFileRange(from: OpenFile, fromOffset: number, to: OpenFile, toOffset: number, length: number | bigint): Promise<number>;

  // locks: `owner` is the protocol's name for a guest process
  getlk(file: OpenFile, owner: string, l: LockRequest, o?: LockOptions): LockRange;
  setlk(file: OpenFile, owner: string, l: LockRequest, o?: SetLockOptions): boolean;
  setlkw(file: OpenFile, owner: string, l: LockRequest, o?: WaitLockOptions): Promise<void>;
  flock(file: OpenFile, owner: string, type: number): boolean;
  flush(file: OpenFile, owner: string): void;

  // xattrs
  // live migration (find-paths; src/backend/migration.ts)
  /** Where `inode` is, relative to the export, checked to name it now; throws SysError (ENOENT, ESTALE) otherwise. */
  locate(inode: Inode): InodeLocation;
  /** Finds the inodes again under their node ids and reference counts; per entry the inode or why it is not the same file. */
  restore(reqs: readonly RestoreRequest[]): Promise<(Inode | SysError)[]>;

  getxattr(c: Caller, inode: Inode, name: Buffer): Awaitable<Buffer>;
  listxattr(c: Caller, inode: Inode): Awaitable<Buffer[]>;
  /** Whether the caller may write `name` at all (9P asks at Txattrcreate, before the value arrives). */
  checkSetxattr(c: Caller, inode: Inode, name: Buffer): void;
  setxattr(c: Caller, inode: Inode, name: Buffer, value: Buffer, flags: number): Awaitable<void>;
  removexattr(c: Caller, inode: Inode, name: Buffer): Awaitable<void>;
}

// The handle classes are values too: a protocol tells a file from a directory by instanceof.
export { OpenFile, DirStream };
/** How a name appears in logs and error messages. */
export { printable } from './names.js';
export type { Inode, Dirent, FdAccount, FdBudget, InodeLocation, RestoreRequest };
