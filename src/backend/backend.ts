// The shared backend: every filesystem operation both protocols need,
// expressed on inodes and single names. Front-ends translate their wire
// messages into these calls and map SysError.errno back onto the wire.
//
// Confinement: the export root is opened once; every other inode is reached
// by openat(parent, one name, O_PATH|O_NOFOLLOW), so a client can only name
// things inside the export. '..' at the root stays at the root; symlinks
// are never followed on the server (the guest kernel resolves them).
import {
  AT_FDCWD, AT_REMOVEDIR, Errno, O_CREAT, O_DIRECTORY, O_NONBLOCK, O_PATH, O_RDONLY, O_TRUNC,
  S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, SysError, XATTR_SIZE_MAX,
  fail, fchmodPathFd, fchownFd, fstat, fstatfs, ftruncate, getxattr, linkFd, listxattr, mkdirat, mknodat,
  openPath, openat, readlinkFd, removexattr, renameat2, reopen, setxattr, symlinkat, truncatePathFd,
  unlinkat, utimensFd, withCredentials, close, type Credentials, type Stat, type StatFs, type TimeArg,
  umask, procPath, accessPathFd, syncfs, O_TMPFILE, O_ACCMODE,
} from '../sys/index.js';
import { InoMap } from './ino-map.js';
import { Inode, InodeTable } from './inode-table.js';
import { DirStream, OpenFile } from './files.js';
import { LockTable } from './locks.js';
import { checkEntryName, checkLookupName, isDot, isDotDot, printable } from './names.js';
import { createFlags, openFlags } from './open-flags.js';

export interface BackendOptions {
  sharedDir: string;
  readonly?: boolean;
}

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
  /** only the change time: touch ctime without changing anything else */
  ctime?: boolean;
  mtime?: TimeArg;
}

const MUTATING = 'read-only export';

export class Backend {
  readonly inodes: InodeTable;
  /** host (dev, ino) -> guest inode numbers, shared by both protocols */
  readonly inoMap: InoMap;
  readonly locks = new LockTable();
  readonly root: Inode;
  readonly readonly: boolean;
  readonly sharedDir: string;

  constructor(opts: BackendOptions) {
    this.sharedDir = opts.sharedDir;
    this.readonly = opts.readonly ?? false;
    // Guests send modes with their own umask already applied.
    umask(0);
    const fd = openat(AT_FDCWD, opts.sharedDir, O_PATH | O_DIRECTORY);
    const st = fstat(fd, opts.sharedDir);
    this.inoMap = new InoMap(st.dev);
    this.inodes = new InodeTable(this.inoMap);
    this.root = this.inodes.intern(fd, st); // the root's reference is never dropped
  }

  /** Refuses a change to a read-only export with EROFS. */
  checkWritable(op: string, what: string): void {
    if (this.readonly) fail(Errno.EROFS, op, `${what} (${MUTATING})`);
  }

  // ---- names and inodes ----------------------------------------------------

  /** Resolves one name in `parent`; the returned inode carries one new reference. */
  lookup(cr: Credentials | undefined, parent: Inode, name: Buffer): Entry {
    checkLookupName('lookup', name);
    if (!parent.isDir) fail(Errno.ENOTDIR, 'lookup', `${printable(name)} in ${parent.label}`);
    if (isDot(name) || (isDotDot(name) && parent === this.root)) {
      this.inodes.ref(parent);
      return { inode: parent, stat: fstat(parent.fd, parent.label) };
    }
    const fd = withCredentials(cr, () => openPath(parent.fd, name));
    return this.inodes.internFd(fd, printable(name));
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

  getattr(inode: Inode): Stat {
    return fstat(inode.fd, inode.label);
  }

  /** Changes attributes; `file` (an open handle) is used for size when given. */
  setattr(cr: Credentials | undefined, inode: Inode, a: SetAttr, file?: OpenFile): Stat {
    this.checkWritable('setattr', inode.label);
    withCredentials(cr, () => {
      if (a.size !== undefined) {
        if (inode.isDir) fail(Errno.EISDIR, 'truncate', inode.label);
        if (file && (file.flags & 3) !== O_RDONLY) ftruncate(file.fd, a.size, inode.label);
        else truncatePathFd(inode.fd, a.size, inode.label);
      }
      if (a.uid !== undefined || a.gid !== undefined) {
        fchownFd(inode.fd, a.uid ?? -1, a.gid ?? -1, inode.label);
      }
      if (a.mode !== undefined) {
        if (inode.isSymlink) fail(Errno.EOPNOTSUPP, 'chmod', inode.label);
        fchmodPathFd(inode.fd, a.mode & 0o7777, inode.label);
      }
      if (a.atime !== undefined || a.mtime !== undefined) {
        utimensFd(inode.fd, a.atime ?? 'omit', a.mtime ?? 'omit', inode.label);
      } else if (a.ctime && a.size === undefined && a.uid === undefined && a.gid === undefined && a.mode === undefined) {
        fchownFd(inode.fd, -1, -1, inode.label); // a no-op chown updates ctime only
      }
    });
    return fstat(inode.fd, inode.label);
  }

  readlink(inode: Inode): Buffer {
    if (!inode.isSymlink) fail(Errno.EINVAL, 'readlink', inode.label);
    return readlinkFd(inode.fd, inode.label);
  }

  statfs(inode: Inode): StatFs {
    // fstatfs refuses O_PATH fds on some kernels; the /proc path never does.
    const fd = openat(AT_FDCWD, procPath(inode.fd), O_PATH);
    try {
      return fstatfs(fd, inode.label);
    } finally {
      close(fd);
    }
  }

  /** syncfs(2) on the export's filesystem. */
  syncfs(): void {
    const d = this.opendir(undefined, this.root); // syncfs needs a real fd, not O_PATH
    try {
      syncfs(d.fd, this.sharedDir);
    } finally {
      this.closeDir(d);
    }
  }

  // ---- opening -------------------------------------------------------------

  /** Opens an inode for I/O. Special files never block and devices are refused. */
  open(cr: Credentials | undefined, inode: Inode, flags: number): OpenFile {
    let f = openFlags(flags);
    switch (inode.kind) {
      case S_IFLNK:
        fail(Errno.ELOOP, 'open', inode.label);
      case S_IFDIR:
        if ((f & 3) !== O_RDONLY) fail(Errno.EISDIR, 'open', inode.label);
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
    if ((f & 3) !== O_RDONLY) this.checkWritable('open for write', inode.label);
    const fd = withCredentials(cr, () => reopen(inode.fd, f, inode.label));
    return new OpenFile(this.ref(inode), fd, f);
  }

  opendir(cr: Credentials | undefined, inode: Inode): DirStream {
    if (!inode.isDir) fail(Errno.ENOTDIR, 'opendir', inode.label);
    const fd = withCredentials(cr, () => reopen(inode.fd, O_RDONLY | O_DIRECTORY, inode.label));
    return new DirStream(this.ref(inode), fd);
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

  /**
   * Creates and opens a regular file. The new inode carries one reference
   * (besides the open file's own).
   */
  create(cr: Credentials | undefined, parent: Inode, name: Buffer, flags: number, mode: number): { entry: Entry; file: OpenFile } {
    checkEntryName('create', name, Errno.EEXIST);
    this.checkWritable('create', printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, 'create', printable(name));
    const f = createFlags(flags) & ~O_DIRECTORY;
    const fd = withCredentials(cr, () => openat(parent.fd, name, f, mode & 0o7777));
    let entry: Entry;
    try {
      // The inode's O_PATH handle comes from the open fd itself: no second
      // name lookup that a concurrent rename could redirect.
      const pfd = openat(AT_FDCWD, procPath(fd), O_PATH);
      entry = this.inodes.internFd(pfd, printable(name));
    } catch (e) {
      close(fd);
      throw e;
    }
    return { entry, file: new OpenFile(this.ref(entry.inode), fd, f & ~(O_CREAT | O_TRUNC)) };
  }

  private created(parent: Inode, name: Buffer): Entry {
    return this.inodes.internFd(openPath(parent.fd, name), printable(name));
  }

  mkdir(cr: Credentials | undefined, parent: Inode, name: Buffer, mode: number): Entry {
    checkEntryName('mkdir', name, Errno.EEXIST);
    this.checkWritable('mkdir', printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, 'mkdir', printable(name));
    withCredentials(cr, () => mkdirat(parent.fd, name, mode & 0o7777));
    return this.created(parent, name);
  }

  /** mknod of a regular file, device, FIFO or socket (`mode` includes S_IFMT). */
  mknod(cr: Credentials | undefined, parent: Inode, name: Buffer, mode: number, rdev: bigint): Entry {
    checkEntryName('mknod', name, Errno.EEXIST);
    this.checkWritable('mknod', printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, 'mknod', printable(name));
    const type = mode & S_IFMT;
    if (![S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, 0].includes(type)) fail(Errno.EINVAL, 'mknod', printable(name));
    withCredentials(cr, () => mknodat(parent.fd, name, (type || S_IFREG) | (mode & 0o7777), rdev));
    return this.created(parent, name);
  }

  symlink(cr: Credentials | undefined, parent: Inode, name: Buffer, target: Buffer): Entry {
    checkEntryName('symlink', name, Errno.EEXIST);
    this.checkWritable('symlink', printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, 'symlink', printable(name));
    if (target.length === 0 || target.includes(0)) fail(Errno.EINVAL, 'symlink', `${printable(name)} target`);
    if (target.length >= 4096) fail(Errno.ENAMETOOLONG, 'symlink', `${printable(name)} target`);
    withCredentials(cr, () => symlinkat(target, parent.fd, name));
    return this.created(parent, name);
  }

  link(cr: Credentials | undefined, inode: Inode, newParent: Inode, name: Buffer): Entry {
    checkEntryName('link', name, Errno.EEXIST);
    this.checkWritable('link', printable(name));
    if (!newParent.isDir) fail(Errno.ENOTDIR, 'link', printable(name));
    if (inode.isDir) fail(Errno.EPERM, 'link', inode.label);
    withCredentials(cr, () => linkFd(inode.fd, newParent.fd, name));
    return this.created(newParent, name);
  }

  unlink(cr: Credentials | undefined, parent: Inode, name: Buffer, flags: number): void {
    checkLookupName('unlink', name);
    if (isDot(name)) fail(Errno.EINVAL, 'unlink', printable(name));
    if (isDotDot(name)) fail(Errno.ENOTEMPTY, 'unlink', printable(name));
    this.checkWritable('unlink', printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, 'unlink', printable(name));
    withCredentials(cr, () => unlinkat(parent.fd, name, flags & AT_REMOVEDIR));
  }

  rename(cr: Credentials | undefined, oldParent: Inode, oldName: Buffer, newParent: Inode, newName: Buffer, flags = 0): void {
    checkLookupName('rename', oldName);
    checkLookupName('rename', newName);
    for (const n of [oldName, newName]) {
      if (isDot(n) || isDotDot(n)) fail(Errno.EBUSY, 'rename', printable(n));
    }
    this.checkWritable('rename', printable(oldName));
    if (!oldParent.isDir || !newParent.isDir) fail(Errno.ENOTDIR, 'rename', printable(oldName));
    if (flags & ~7) fail(Errno.EINVAL, 'rename', `${printable(oldName)} flags ${flags}`);
    withCredentials(cr, () => renameat2(oldParent.fd, oldName, newParent.fd, newName, flags));
  }

  /** access(2) as the caller; F_OK/R_OK/W_OK/X_OK in `mask`. */
  access(cr: Credentials | undefined, inode: Inode, mask: number): void {
    if (mask & 2) this.checkWritable('access(W_OK)', inode.label);
    withCredentials(cr, () => accessPathFd(inode.fd, mask & 7, inode.label));
  }

  /** An unnamed file in `parent` (O_TMPFILE), open and with one reference. */
  tmpfile(cr: Credentials | undefined, parent: Inode, flags: number, mode: number): { entry: Entry; file: OpenFile } {
    this.checkWritable('tmpfile', parent.label);
    if (!parent.isDir) fail(Errno.ENOTDIR, 'tmpfile', parent.label);
    const f = (openFlags(flags) & ~(O_CREAT | O_TRUNC | O_DIRECTORY)) | O_TMPFILE;
    if ((f & O_ACCMODE) === O_RDONLY) fail(Errno.EINVAL, 'tmpfile', `${parent.label}: O_TMPFILE needs write access`);
    const fd = withCredentials(cr, () => openat(parent.fd, '.', f, mode & 0o7777));
    let entry: Entry;
    try {
      entry = this.inodes.internFd(openat(AT_FDCWD, procPath(fd), O_PATH), `tmpfile in ${parent.label}`);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { entry, file: new OpenFile(this.ref(entry.inode), fd, f & ~O_TMPFILE) };
  }

  // ---- xattrs --------------------------------------------------------------

  getxattr(cr: Credentials | undefined, inode: Inode, name: Buffer): Buffer {
    checkXattrName('getxattr', name);
    if (inode.isSymlink) fail(Errno.ENODATA, 'getxattr', `${inode.label} ${printable(name)}`);
    return withCredentials(cr, () => getxattr(inode.fd, name, inode.label));
  }

  listxattr(cr: Credentials | undefined, inode: Inode): Buffer[] {
    if (inode.isSymlink) return [];
    return withCredentials(cr, () => listxattr(inode.fd, inode.label));
  }

  setxattr(cr: Credentials | undefined, inode: Inode, name: Buffer, value: Buffer, flags: number): void {
    checkXattrName('setxattr', name);
    this.checkWritable('setxattr', inode.label);
    if (value.length > XATTR_SIZE_MAX) fail(Errno.E2BIG, 'setxattr', `${inode.label} ${printable(name)}`);
    if (inode.isSymlink) fail(Errno.EPERM, 'setxattr', `${inode.label} ${printable(name)}`);
    withCredentials(cr, () => setxattr(inode.fd, name, value, flags, inode.label));
  }

  removexattr(cr: Credentials | undefined, inode: Inode, name: Buffer): void {
    checkXattrName('removexattr', name);
    this.checkWritable('removexattr', inode.label);
    if (inode.isSymlink) fail(Errno.ENODATA, 'removexattr', `${inode.label} ${printable(name)}`);
    withCredentials(cr, () => removexattr(inode.fd, name, inode.label));
  }
}

function checkXattrName(op: string, name: Buffer): void {
  if (name.length === 0 || name.length > 255) fail(name.length ? Errno.ERANGE : Errno.EINVAL, op, printable(name));
  if (name.includes(0)) fail(Errno.EINVAL, op, printable(name));
}

export { SysError, Inode, OpenFile, DirStream };
