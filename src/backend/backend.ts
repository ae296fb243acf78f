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
  AT_FDCWD, AT_REMOVEDIR, Errno, O_ACCMODE, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_PATH, O_RDONLY,
  O_TMPFILE, O_TRUNC, O_WRONLY, RENAME_EXCHANGE, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
  SysError, XATTR_SIZE_MAX, accessPathFd, close, copyFileRange, fail, fallocate, lseek, fchmodPathFd, fchownFd, fstat, fstatfs, ftruncate, getxattr,
  fstatat, isSysError, linkFd, listxattr, mkdirat, mknodat, openPath, openat, pread, procPath, pwrite, readlinkFd, removexattr,
  renameat2, reopen, setxattr, symlinkat, syncfs, truncatePathFd, umask, umask as umaskSet, unlinkat, utimensFd, withCredentials,
  type Credentials, type Stat, type StatFs, type TimeArg,
} from '../sys/index.js';
import { fdatasync as fdatasyncCb, fsync as fsyncCb } from 'node:fs';
import { promisify } from 'node:util';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import { createSecurityModel } from '../../security/create-model.js';
import { applyMeta, type Location, type SecurityModel, type SecurityModelName } from '../../security/model.js';
import { MappedFileModel } from '../../security/mapped-file.js';
import { ACL_ACCESS_GUEST, ACL_DEFAULT_GUEST } from '../../security/formats/mapped-xattr.js';
import { aclMode, createMasq, formatAcl, parseAcl } from '../../security/acl.js';
import type { GuestMeta } from '../../security/formats/mapped-file.js';
import { ForbiddenIdError, type IdMap } from '../../security/id-map.js';
import { InoMap } from './ino-map.js';
import { Inode, InodeTable } from './inode-table.js';
import { DirStream, OpenFile } from './files.js';
import { LockTable } from './locks.js';
import { checkEntryName, checkLookupName, isDot, isDotDot, printable } from './names.js';
import { createFlags, openFlags } from './open-flags.js';
import { preadIntoSegments, pwriteFromSegments, type WriteOptions } from '../sys/vectored.js';

const fsyncAsync = promisify(fsyncCb);
const fdatasyncAsync = promisify(fdatasyncCb);
import { listedUnprivileged, unprivilegedRefusal, type XattrAccess } from './xattr-privilege.js';

export interface BackendOptions {
  sharedDir: string;
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
  log?: Logger;
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
  mtime?: TimeArg;
  /** only the change time: touch ctime without changing anything else */
  ctime?: boolean;
}

/** The longest symlink target a mapped-model symlink file may hold. */
const MAPPED_SYMLINK_MAX = 4095;

export class Backend {
  readonly inodes: InodeTable;
  /** host (dev, ino) -> guest inode numbers, shared by both protocols */
  readonly inoMap: InoMap;
  readonly locks = new LockTable();
  readonly root: Inode;
  readonly readonly: boolean;
  readonly sharedDir: string;
  readonly model: SecurityModel;
  private readonly fmode: number;
  private readonly dmode: number;
  private readonly uidMap: IdMap | undefined;
  private readonly gidMap: IdMap | undefined;

  constructor(opts: BackendOptions) {
    this.sharedDir = opts.sharedDir;
    this.readonly = opts.readonly ?? false;
    this.fmode = (opts.fmode ?? 0o600) & 0o777;
    this.dmode = (opts.dmode ?? 0o700) & 0o777;
    this.uidMap = opts.uidMap;
    this.gidMap = opts.gidMap;
    this.model = createSecurityModel(opts.securityModel ?? 'passthrough', opts.log ?? silentLogger());
    // Guests send modes with their own umask already applied.
    umask(0);
    const fd = openat(AT_FDCWD, opts.sharedDir, O_PATH | O_DIRECTORY);
    const st = fstat(fd, opts.sharedDir);
    this.inoMap = new InoMap(st.dev);
    this.inodes = new InodeTable(this.inoMap, opts.inodeFdBudget ?? 0);
    this.root = this.inodes.intern(fd, st); // the root's reference is never dropped
    this.inodes.pin(this.root);
    if (this.model instanceof MappedFileModel) this.model.root = this.root;
  }

  /** Refuses a change to a read-only export with EROFS. */
  checkWritable(op: string, what: string): void {
    if (this.readonly) fail(Errno.EROFS, op, `${what} (read-only export)`);
  }

  /** The credentials host calls run with: the caller's in passthrough, the daemon's otherwise. */
  private host(cr: Credentials | undefined): Credentials | undefined {
    return this.model.callerCredentials ? this.hostIds(cr) : undefined;
  }

  /** A guest uid/gid as the host's, through --translate-uid/--translate-gid (EPERM if forbidden). */
  hostUid(id: number): number {
    return this.translate(this.uidMap, id, 'uid');
  }

  hostGid(id: number): number {
    return this.translate(this.gidMap, id, 'gid');
  }

  private translate(map: IdMap | undefined, id: number, what: string): number {
    if (!map || id === 0xffffffff) return id;
    try {
      return map.toHost(id);
    } catch (e) {
      if (e instanceof ForbiddenIdError) fail(Errno.EPERM, 'id translation', `guest ${what} ${id} is forbidden`);
      throw e;
    }
  }

  private hostIds(cr: Credentials | undefined): Credentials | undefined {
    if (!cr || (!this.uidMap && !this.gidMap)) return cr;
    return { uid: this.hostUid(cr.uid), gid: this.hostGid(cr.gid), groups: cr.groups.map((g) => this.hostGid(g)) };
  }

  private checkName(op: string, name: Buffer, dotErrno?: number): void {
    if (dotErrno === undefined) checkLookupName(op, name);
    else checkEntryName(op, name, dotErrno);
    if (this.model.isReservedName(name)) fail(Errno.EINVAL, op, `${printable(name)} is reserved by the ${this.model.name} model`);
  }

  // ---- the guest's view --------------------------------------------------------

  /** Interns a looked-up fd; new inodes learn their location and guest type. */
  private intern(fd: number, what: string, loc: Location | undefined): Entry {
    const { inode, stat } = this.inodes.internFd(fd, what);
    if (loc && this.model.tracksLocation && inode !== this.root) this.setLocation(inode, loc);
    return { inode, stat: this.view(inode, stat) };
  }

  private setLocation(inode: Inode, loc: Location): void {
    const old = inode.loc?.parent;
    inode.loc = { parent: this.ref(loc.parent), name: Buffer.from(loc.name) };
    if (old) this.release(old);
  }

  private meta(inode: Inode): GuestMeta {
    return this.model.readMeta(inode, inode.loc);
  }

  /** The guest's attributes: the host's, overlaid with the model's metadata. */
  private view(inode: Inode, st: Stat): Stat {
    if (!this.model.mapsFileTypes) {
      if (!this.uidMap && !this.gidMap) return st;
      return { ...st, uid: this.uidMap?.toGuest(st.uid) ?? st.uid, gid: this.gidMap?.toGuest(st.gid) ?? st.gid };
    }
    const v = applyMeta(st, this.meta(inode));
    inode.kind = v.mode & S_IFMT;
    return v;
  }

  // ---- names and inodes ----------------------------------------------------

  /** Resolves one name in `parent`; the returned inode carries one new reference. */
  lookup(cr: Credentials | undefined, parent: Inode, name: Buffer): Entry {
    this.checkName('lookup', name);
    if (!parent.isDir) fail(Errno.ENOTDIR, 'lookup', `${printable(name)} in ${parent.label}`);
    if (isDot(name) || (isDotDot(name) && parent === this.root)) {
      this.inodes.ref(parent);
      return { inode: parent, stat: this.getattr(parent) };
    }
    const loc = isDotDot(name) ? undefined : { parent, name };
    const known = this.knownEntry(cr, parent, name, loc);
    if (known) return known;
    const fd = withCredentials(this.host(cr), () => openPath(parent.fd, name));
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
  private knownEntry(cr: Credentials | undefined, parent: Inode, name: Buffer, loc: Location | undefined): Entry | undefined {
    const st = withCredentials(this.host(cr), () => fstatat(parent.fd, name));
    const inode = this.inodes.find(st.dev, st.ino);
    if (!inode || inode.rawFd < 0) return undefined;
    this.inodes.ref(inode);
    this.inodes.touch(inode);
    if (loc && this.model.tracksLocation && inode !== this.root) this.setLocation(inode, loc);
    return { inode, stat: this.view(inode, st) };
  }

  /** The live inode with this id (a FUSE node id), or undefined. */
  inodeById(id: number | bigint): Inode | undefined {
    return id <= BigInt(Number.MAX_SAFE_INTEGER) && id >= 0 ? this.inodes.get(Number(id)) : undefined;
  }

  /** The guest inode number of a directory entry of `dir` (host inode numbers remapped across filesystems). */
  entryIno(dir: DirStream, hostIno: bigint): bigint {
    return this.inoMap.guestIno(dir.inode.dev, hostIno);
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
    return this.view(inode, fstat(inode.fd, inode.label));
  }

  /** The guest's attributes of an open handle's file (fstat on its fd). */
  getattrOpen(h: OpenFile | DirStream): Stat {
    return this.view(h.inode, fstat(h.fd, h.inode.label));
  }

  /** Changes attributes; `file` (an open handle) is used for size when given. */
  setattr(cr: Credentials | undefined, inode: Inode, a: SetAttr, file?: OpenFile): Stat {
    this.checkWritable('setattr', inode.label);
    withCredentials(this.host(cr), () => {
      if (a.size !== undefined) {
        if (inode.isDir) fail(Errno.EISDIR, 'truncate', inode.label);
        if (inode.kind !== S_IFREG) fail(Errno.EINVAL, 'truncate', inode.label);
        if (file && (file.flags & O_ACCMODE) !== O_RDONLY) ftruncate(file.fd, a.size, inode.label);
        else truncatePathFd(inode.fd, a.size, inode.label);
      }
      if (this.model.mapsFileTypes) this.setOwnerModeMapped(inode, a);
      else this.setOwnerModeHost(inode, a);
      if (a.atime !== undefined || a.mtime !== undefined) {
        utimensFd(inode.fd, a.atime ?? 'omit', a.mtime ?? 'omit', inode.label);
      } else if (a.ctime && a.size === undefined && a.uid === undefined && a.gid === undefined && a.mode === undefined) {
        fchownFd(inode.fd, -1, -1, inode.label); // a no-op chown updates ctime only
      }
    });
    return this.getattr(inode);
  }

  private setOwnerModeHost(inode: Inode, a: SetAttr): void {
    if (a.uid !== undefined || a.gid !== undefined) {
      fchownFd(inode.fd, a.uid === undefined ? -1 : this.hostUid(a.uid), a.gid === undefined ? -1 : this.hostGid(a.gid), inode.label);
    }
    if (a.mode !== undefined) {
      if (inode.isSymlink) fail(Errno.EOPNOTSUPP, 'chmod', inode.label);
      fchmodPathFd(inode.fd, a.mode & 0o7777, inode.label);
    }
  }

  /** Mapped models: owners and modes change in metadata only, never on the host. */
  private setOwnerModeMapped(inode: Inode, a: SetAttr): void {
    const m: GuestMeta = {};
    if (a.uid !== undefined && a.uid !== 0xffffffff) m.uid = a.uid;
    if (a.gid !== undefined && a.gid !== 0xffffffff) m.gid = a.gid;
    if (a.mode !== undefined) {
      if (inode.isSymlink) fail(Errno.EOPNOTSUPP, 'chmod', inode.label);
      m.mode = inode.kind | (a.mode & 0o7777);
    } else if (m.uid !== undefined || m.gid !== undefined) {
      // chown by the guest clears setuid/setgid like a real chown would.
      const cur = this.getattr(inode);
      if (cur.mode & 0o6000 && inode.kind === S_IFREG) m.mode = cur.mode & ~0o6000;
    }
    if (Object.keys(m).length) this.model.writeMeta(inode, inode.loc, m);
  }

  readlink(inode: Inode): Buffer {
    if (!inode.isSymlink) fail(Errno.EINVAL, 'readlink', inode.label);
    if (inode.hostKind === S_IFLNK) return readlinkFd(inode.fd, inode.label);
    // A mapped-model symlink is a regular file holding the target.
    const fd = reopen(inode.fd, O_RDONLY | O_NONBLOCK, inode.label);
    try {
      const buf = Buffer.alloc(MAPPED_SYMLINK_MAX + 1);
      const n = pread(fd, buf, 0, inode.label);
      if (n > MAPPED_SYMLINK_MAX) fail(Errno.ENAMETOOLONG, 'readlink', `${inode.label}: mapped symlink file too large`);
      return Buffer.from(buf.subarray(0, n));
    } finally {
      close(fd);
    }
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

  /** access(2) as the caller; F_OK/R_OK/W_OK/X_OK in `mask`. */
  access(cr: Credentials | undefined, inode: Inode, mask: number): void {
    if (mask & 2) this.checkWritable('access(W_OK)', inode.label);
    withCredentials(this.host(cr), () => accessPathFd(inode.fd, mask & 7, inode.label));
  }

  // ---- opening -------------------------------------------------------------

  /** Opens an inode for I/O. Special files never block and devices are refused. */
  open(cr: Credentials | undefined, inode: Inode, flags: number): OpenFile {
    let f = openFlags(flags);
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
    const fd = withCredentials(this.host(cr), () => reopen(inode.fd, f, inode.label));
    return new OpenFile(this.ref(inode), fd, f);
  }

  opendir(cr: Credentials | undefined, inode: Inode): DirStream {
    if (!inode.isDir) fail(Errno.ENOTDIR, 'opendir', inode.label);
    const fd = withCredentials(this.host(cr), () => reopen(inode.fd, O_RDONLY | O_DIRECTORY, inode.label));
    // Mapped models: the host's d_type may not be the guest's (QEMU reports DT_UNKNOWN too).
    return new DirStream(this.ref(inode), fd, {
      hide: (n) => this.model.isReservedName(n),
      unknownTypes: this.model.mapsFileTypes,
    });
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

  /** After a mapped-model creation: the guest's view goes into metadata. */
  private recordNew(e: Entry, parent: Inode, cr: Credentials | undefined, mode: number, rdev?: bigint, umask?: number): Entry {
    if (this.model.mapsFileTypes) {
      // A FUSE client with POSIX ACLs leaves umask and default-ACL
      // inheritance to the server; in the mapped models that is duofs.
      let acls: { access?: Buffer; default?: Buffer } = {};
      if (umask !== undefined) ({ mode, acls } = this.inheritMapped(parent, mode, umask));
      const meta: GuestMeta = { uid: cr?.uid ?? 0, gid: cr?.gid ?? 0, mode };
      // A setgid directory gives its group (and, to directories, its setgid
      // bit), as the kernel does on a real filesystem. 9P clients already
      // send it so; FUSE clients leave it to the server.
      const p = this.getattr(parent);
      if (p.mode & 0o2000) {
        meta.gid = p.gid;
        if ((mode & S_IFMT) === S_IFDIR) meta.mode = mode | 0o2000;
      }
      if (rdev !== undefined) meta.rdev = rdev;
      this.model.writeMeta(e.inode, e.inode.loc, meta);
      if (acls.access) setxattr(e.inode.fd, this.model.hostXattrName(ACL_ACCESS_GUEST)!, acls.access, 0, e.inode.label);
      if (acls.default) setxattr(e.inode.fd, this.model.hostXattrName(ACL_DEFAULT_GUEST)!, acls.default, 0, e.inode.label);
      return { inode: e.inode, stat: this.getattr(e.inode) };
    }
    if (this.model.name === 'none' && cr) {
      // QEMU's none model: give the file the caller's ids where the host
      // allows it, and ignore a refusal.
      try {
        fchownFd(e.inode.fd, this.hostUid(cr.uid), this.hostGid(cr.gid), e.inode.label);
        return { inode: e.inode, stat: this.getattr(e.inode) };
      } catch {
        // not permitted: the daemon keeps owning it
      }
    }
    return e;
  }

  /** posix_acl_create for the mapped models: the parent's default ACL, else the umask. */
  private inheritMapped(parent: Inode, mode: number, umask: number): { mode: number; acls: { access?: Buffer; default?: Buffer } } {
    let def: Buffer | undefined;
    try {
      def = getxattr(parent.fd, this.model.hostXattrName(ACL_DEFAULT_GUEST)!, parent.label);
    } catch {
      def = undefined;
    }
    const entries = def ? parseAcl(def) : undefined;
    if (!entries) return { mode: mode & ~(umask & 0o777), acls: {} };
    const r = createMasq(entries, mode);
    return {
      mode: r.mode,
      acls: { access: r.acl ? formatAcl(r.acl) : undefined, default: (mode & S_IFMT) === S_IFDIR ? def : undefined },
    };
  }

  /**
   * Runs a host creation with the client's umask in force when it left the
   * umask to the server (host-truth models: the host kernel then applies a
   * default ACL instead, as it would locally).
   */
  private creating<T>(cr: Credentials | undefined, umask: number | undefined, fn: () => T): T {
    if (umask === undefined || this.model.mapsFileTypes) return withCredentials(this.host(cr), fn);
    const old = umaskSet(umask & 0o777);
    try {
      return withCredentials(this.host(cr), fn);
    } finally {
      umaskSet(old);
    }
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
  create(cr: Credentials | undefined, parent: Inode, name: Buffer, flags: number, mode: number, umask?: number): { entry: Entry; file: OpenFile } {
    this.beginCreate('create', parent, name);
    const f = (createFlags(flags) & ~O_DIRECTORY) | O_EXCL;
    const exclusive = (flags & O_EXCL) !== 0;
    if (!exclusive) {
      const existing = this.openExisting(cr, parent, name, flags);
      if (existing) return existing;
    }
    const hostMode = this.model.mapsFileTypes ? this.fmode : mode & 0o7777;
    let fd: number;
    try {
      fd = this.creating(cr, umask, () => openat(parent.fd, name, f, hostMode));
    } catch (e) {
      // The name appeared since the lookup: open what is there now.
      const existing = !exclusive && isSysError(e, Errno.EEXIST) ? this.openExisting(cr, parent, name, flags) : undefined;
      if (existing) return existing;
      throw e;
    }
    let entry: Entry;
    try {
      // The inode's O_PATH handle comes from the open fd itself: no second
      // name lookup that a concurrent rename could redirect.
      const pfd = openat(AT_FDCWD, procPath(fd), O_PATH);
      entry = this.intern(pfd, printable(name), { parent, name });
      entry = this.recordNew(entry, parent, cr, S_IFREG | (mode & 0o7777), undefined, umask);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { entry, file: new OpenFile(this.ref(entry.inode), fd, f & ~(O_CREAT | O_TRUNC | O_EXCL)) };
  }

  /** create() of a name that exists: open(2)'s O_CREAT without O_EXCL. Undefined if the name is absent. */
  private openExisting(cr: Credentials | undefined, parent: Inode, name: Buffer, flags: number): { entry: Entry; file: OpenFile } | undefined {
    let entry: Entry;
    try {
      entry = this.lookup(cr, parent, name);
    } catch (e) {
      if (isSysError(e, Errno.ENOENT)) return undefined;
      throw e;
    }
    try {
      if (entry.inode.isDir) fail(Errno.EISDIR, 'create', `${printable(name)} is a directory`);
      return { entry, file: this.open(cr, entry.inode, flags & ~(O_CREAT | O_EXCL | O_DIRECTORY)) };
    } catch (e) {
      this.release(entry.inode);
      throw e;
    }
  }

  /** An unnamed file in `parent` (O_TMPFILE), open and with one reference. */
  tmpfile(cr: Credentials | undefined, parent: Inode, flags: number, mode: number, umask?: number): { entry: Entry; file: OpenFile } {
    this.checkWritable('tmpfile', parent.label);
    if (!parent.isDir) fail(Errno.ENOTDIR, 'tmpfile', parent.label);
    if (this.model.tracksLocation) fail(Errno.EOPNOTSUPP, 'tmpfile', `${parent.label}: no metadata file for an unnamed file (mapped-file)`);
    const f = (openFlags(flags) & ~(O_CREAT | O_TRUNC | O_DIRECTORY)) | O_TMPFILE;
    if ((f & O_ACCMODE) === O_RDONLY) fail(Errno.EINVAL, 'tmpfile', `${parent.label}: O_TMPFILE needs write access`);
    const hostMode = this.model.mapsFileTypes ? this.fmode : mode & 0o7777;
    const fd = this.creating(cr, umask, () => openat(parent.fd, '.', f, hostMode));
    let entry: Entry;
    try {
      entry = this.intern(openat(AT_FDCWD, procPath(fd), O_PATH), `tmpfile in ${parent.label}`, undefined);
      entry = this.recordNew(entry, parent, cr, S_IFREG | (mode & 0o7777), undefined, umask);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { entry, file: new OpenFile(this.ref(entry.inode), fd, f & ~O_TMPFILE) };
  }

  mkdir(cr: Credentials | undefined, parent: Inode, name: Buffer, mode: number, umask?: number): Entry {
    this.beginCreate('mkdir', parent, name);
    const hostMode = this.model.mapsFileTypes ? this.dmode : mode & 0o7777;
    this.creating(cr, umask, () => mkdirat(parent.fd, name, hostMode));
    return this.recordNew(this.created(parent, name), parent, cr, S_IFDIR | (mode & 0o7777), undefined, umask);
  }

  /** mknod of a regular file, device, FIFO or socket (`mode` includes S_IFMT). */
  mknod(cr: Credentials | undefined, parent: Inode, name: Buffer, mode: number, rdev: bigint, umask?: number): Entry {
    this.beginCreate('mknod', parent, name);
    const type = (mode & S_IFMT) || S_IFREG;
    if (![S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK].includes(type)) fail(Errno.EINVAL, 'mknod', printable(name));
    if (this.model.mapsFileTypes) {
      // Mapped models: an empty regular host file; the type and device number live in metadata.
      close(openat(parent.fd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, this.fmode));
      const isDev = type === S_IFCHR || type === S_IFBLK;
      return this.recordNew(this.created(parent, name), parent, cr, type | (mode & 0o7777), isDev ? rdev : 0n, umask);
    }
    this.creating(cr, umask, () => mknodat(parent.fd, name, type | (mode & 0o7777), rdev));
    return this.recordNew(this.created(parent, name), parent, cr, type | (mode & 0o7777));
  }

  symlink(cr: Credentials | undefined, parent: Inode, name: Buffer, target: Buffer): Entry {
    this.beginCreate('symlink', parent, name);
    if (target.length === 0 || target.includes(0)) fail(Errno.EINVAL, 'symlink', `${printable(name)} target`);
    if (target.length > MAPPED_SYMLINK_MAX) fail(Errno.ENAMETOOLONG, 'symlink', `${printable(name)} target`);
    if (this.model.mapsFileTypes) {
      // Mapped models: a regular file whose content is the target (no NUL), as QEMU stores it.
      const fd = openat(parent.fd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, this.fmode);
      try {
        pwrite(fd, target, 0, printable(name));
      } catch (e) {
        close(fd);
        unlinkat(parent.fd, name, 0);
        throw e;
      }
      close(fd);
      return this.recordNew(this.created(parent, name), parent, cr, S_IFLNK | 0o777);
    }
    withCredentials(this.host(cr), () => symlinkat(target, parent.fd, name));
    return this.recordNew(this.created(parent, name), parent, cr, S_IFLNK | 0o777);
  }

  link(cr: Credentials | undefined, inode: Inode, newParent: Inode, name: Buffer): Entry {
    this.beginCreate('link', newParent, name);
    if (inode.isDir) fail(Errno.EPERM, 'link', inode.label);
    withCredentials(this.host(cr), () => linkFd(inode.fd, newParent.fd, name));
    if (inode.loc) this.model.linked(inode.loc, { parent: newParent, name });
    return this.created(newParent, name);
  }

  // ---- removing and renaming --------------------------------------------------

  unlink(cr: Credentials | undefined, parent: Inode, name: Buffer, flags: number): void {
    this.checkName('unlink', name);
    if (isDot(name)) fail(Errno.EINVAL, 'unlink', printable(name));
    if (isDotDot(name)) fail(Errno.ENOTEMPTY, 'unlink', printable(name));
    this.checkWritable('unlink', printable(name));
    if (!parent.isDir) fail(Errno.ENOTDIR, 'unlink', printable(name));
    const removeDir = (flags & AT_REMOVEDIR) !== 0;
    if (this.model instanceof MappedFileModel && removeDir) {
      // The directory's own .virtfs_metadata must go before rmdir can succeed.
      let dirFd: number | undefined;
      try {
        dirFd = openat(parent.fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
      } catch {
        dirFd = undefined;
      }
      if (dirFd !== undefined) {
        try {
          const { inode } = this.inodes.internFd(dirFd, printable(name));
          try {
            this.model.beforeRemoveDir(inode);
          } finally {
            this.release(inode);
          }
        } catch (e) {
          if (!isSysError(e, Errno.ENOTEMPTY)) throw e;
        }
      }
    }
    withCredentials(this.host(cr), () => unlinkat(parent.fd, name, flags & AT_REMOVEDIR));
    this.model.removed({ parent, name }, removeDir, undefined);
  }

  rename(cr: Credentials | undefined, oldParent: Inode, oldName: Buffer, newParent: Inode, newName: Buffer, flags = 0): void {
    this.checkName('rename', oldName);
    this.checkName('rename', newName);
    for (const n of [oldName, newName]) {
      if (isDot(n) || isDotDot(n)) fail(Errno.EBUSY, 'rename', printable(n));
    }
    this.checkWritable('rename', printable(oldName));
    if (!oldParent.isDir || !newParent.isDir) fail(Errno.ENOTDIR, 'rename', printable(oldName));
    if (flags & ~7) fail(Errno.EINVAL, 'rename', `${printable(oldName)} flags ${flags}`);
    withCredentials(this.host(cr), () => renameat2(oldParent.fd, oldName, newParent.fd, newName, flags));
    const exchange = (flags & RENAME_EXCHANGE) !== 0;
    this.model.renamed({ parent: oldParent, name: oldName }, { parent: newParent, name: newName }, exchange);
    if (this.model.tracksLocation) {
      this.relocate(newParent, newName);
      if (exchange) this.relocate(oldParent, oldName);
    }
  }

  /** After a rename: a live inode now at (parent, name) learns where it is. */
  private relocate(parent: Inode, name: Buffer): void {
    try {
      const fd = openPath(parent.fd, name);
      try {
        const st = fstat(fd);
        const inode = this.inodes.find(st.dev, st.ino);
        if (inode && inode !== this.root) this.setLocation(inode, { parent, name });
      } finally {
        close(fd);
      }
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
    }
  }

  // ---- the data path -------------------------------------------------------------

  /**
   * Reads up to `max` bytes of `file` at `offset` into `dst` — segments the
   * transport provides (guest memory, or a plain buffer) — starting `skip`
   * bytes in. Returns the bytes read (fewer at end of file).
   */
  read(file: OpenFile, offset: number | bigint, dst: readonly Buffer[], skip: number, max: number): number {
    return preadIntoSegments(dst, skip, file.fd, offset, max, file.inode.label);
  }

  /**
   * Writes all of `src` (a request's payload, left where the transport
   * received it) to `file` at `offset`; see WriteOptions for a failure part
   * way. `killSuidgid`: the caller lacks CAP_FSETID (FUSE's WRITE_KILL_SUIDGID).
   */
  write(file: OpenFile, offset: number | bigint, src: readonly Buffer[], o: WriteOptions & { killSuidgid?: boolean }): number {
    const n = pwriteFromSegments(src, file.fd, offset, file.inode.label, o);
    if (o.killSuidgid) this.killSuidgid(file.inode);
    return n;
  }

  /**
   * What the kernel does on write or truncate by a caller without
   * CAP_FSETID: setuid goes; setgid goes only with group-execute (without
   * it, it marks mandatory locking). Returns the new attributes if anything
   * changed.
   */
  killSuidgid(inode: Inode): Stat | undefined {
    const st = this.getattr(inode);
    let mode = st.mode & 0o7777;
    if (mode & 0o4000) mode &= ~0o4000;
    if (mode & 0o2000 && mode & 0o010) mode &= ~0o2000;
    if (mode === (st.mode & 0o7777)) return undefined;
    return this.setattr(undefined, inode, { mode });
  }

  // ---- more of the data path ---------------------------------------------------

  /**
   * fsync(2), or fdatasync(2), of an open handle, off the event loop (libuv's
   * pool): a slow disk never holds up other requests, and the fd stays open
   * until the call ends even if the handle is released meanwhile.
   */
  fsync(file: OpenFile, datasync: boolean): Promise<void> {
    const op = datasync ? 'fdatasync' : 'fsync';
    return file.use((fd) => (datasync ? fdatasyncAsync(fd) : fsyncAsync(fd))).then(
      () => undefined,
      (e: unknown) => { throw asSysError(e, op, file.inode.label); },
    );
  }

  /**
   * fsync(2) of an inode through an fd of its own, opened read-only for the
   * call: directories (9P Tfsync on a directory fid, FUSE FSYNCDIR — a
   * directory stream's fd may be closed by RELEASEDIR while the call runs).
   */
  async fsyncInode(cr: Credentials | undefined, inode: Inode): Promise<void> {
    const h = this.open(cr, inode, O_RDONLY);
    try {
      await this.fsync(h, false);
    } finally {
      this.closeFile(h);
    }
  }

  fallocate(file: OpenFile, mode: number, offset: number, length: number): void {
    this.checkWritable('fallocate', file.inode.label);
    fallocate(file.fd, mode, offset, length, file.inode.label);
  }

  /** lseek(2) on an open file; SEEK_DATA/SEEK_HOLE are what clients send through. */
  lseek(file: OpenFile, offset: number, whence: number): number {
    return lseek(file.fd, offset, whence, file.inode.label);
  }

  /** copy_file_range(2) between two open files; at most 2^31 - 4096 bytes a call, as the kernel does. */
  copyFileRange(from: OpenFile, fromOffset: number, to: OpenFile, toOffset: number, length: number | bigint): number {
    this.checkWritable('copy_file_range', to.inode.label);
    const len = BigInt(length) > 0x7ffff000n ? 0x7ffff000 : Number(length);
    return copyFileRange(from.fd, fromOffset, to.fd, toOffset, len);
  }

  // ---- xattrs --------------------------------------------------------------

  /**
   * Whether `caller` holds the privilege the kernel asks of it for privileged
   * xattr namespaces: undefined is the daemon itself; a guest caller counts
   * as root when its uid is 0 on the host (passthrough, after --translate-uid)
   * or in the guest's view (mapped models, where the daemon owns the files).
   */
  private privileged(caller: Credentials | undefined): boolean {
    if (!caller) return true;
    if (this.model.mapsFileTypes) return caller.uid === 0;
    try {
      return this.hostUid(caller.uid) === 0;
    } catch {
      return false; // a forbidden id is nobody's root
    }
  }

  /** Refuses `access` to a privileged namespace for an unprivileged caller. */
  private checkXattrPrivilege(op: string, caller: Credentials | undefined, inode: Inode, name: Buffer, access: XattrAccess): void {
    if (this.privileged(caller)) return;
    const errno = unprivilegedRefusal(name, access);
    if (errno !== undefined) fail(errno, op, `${inode.label} ${printable(name)}: the caller (uid ${caller!.uid}) lacks the privilege`);
  }

  private hostXattr(op: string, inode: Inode, name: Buffer, refusal: number): Buffer {
    checkXattrName(op, name);
    const host = this.model.hostXattrName(name);
    if (!host) fail(refusal, op, `${inode.label} ${printable(name)} belongs to the ${this.model.name} model`);
    return host;
  }

  // Each xattr call runs host calls as `cr` and judges privileged namespaces
  // by `caller` (the requester; FUSE runs xattr calls as the daemon, as
  // virtiofsd does, and names its caller separately).

  getxattr(cr: Credentials | undefined, inode: Inode, name: Buffer, caller = cr): Buffer {
    const host = this.hostXattr('getxattr', inode, name, Errno.ENODATA);
    this.checkXattrPrivilege('getxattr', caller, inode, name, 'read');
    if (inode.hostKind === S_IFLNK) fail(Errno.ENODATA, 'getxattr', `${inode.label} ${printable(name)}`);
    return withCredentials(this.host(cr), () => getxattr(inode.fd, host, inode.label));
  }

  listxattr(cr: Credentials | undefined, inode: Inode, caller = cr): Buffer[] {
    if (inode.hostKind === S_IFLNK) return [];
    const names = withCredentials(this.host(cr), () => listxattr(inode.fd, inode.label));
    const everything = this.privileged(caller);
    const out: Buffer[] = [];
    for (const n of names) {
      const g = this.model.guestXattrName(n);
      if (g && (everything || listedUnprivileged(g))) out.push(g);
    }
    return out;
  }

  /** Whether `caller` may write `name` at all (9P checks at Txattrcreate, before the value arrives). */
  checkSetxattr(caller: Credentials | undefined, inode: Inode, name: Buffer): void {
    this.hostXattr('setxattr', inode, name, Errno.EACCES);
    this.checkWritable('setxattr', inode.label);
    this.checkXattrPrivilege('setxattr', caller, inode, name, 'write');
  }

  setxattr(cr: Credentials | undefined, inode: Inode, name: Buffer, value: Buffer, flags: number, caller = cr): void {
    const host = this.hostXattr('setxattr', inode, name, Errno.EACCES);
    this.checkWritable('setxattr', inode.label);
    this.checkXattrPrivilege('setxattr', caller, inode, name, 'write');
    if (value.length > XATTR_SIZE_MAX) fail(Errno.E2BIG, 'setxattr', `${inode.label} ${printable(name)}`);
    if (inode.hostKind === S_IFLNK) fail(Errno.EPERM, 'setxattr', `${inode.label} ${printable(name)}`);
    if (this.model.mapsFileTypes && name.equals(ACL_ACCESS_GUEST) && this.setAccessAclMapped(inode, host, value, flags)) return;
    withCredentials(this.host(cr), () => setxattr(inode.fd, host, value, flags, inode.label));
  }

  /**
   * Mapped models: an access ACL also sets the guest's permission bits (the
   * FUSE client leaves that to the server; a host kernel would do it), and
   * one that says no more than the mode is not kept. True when handled.
   */
  private setAccessAclMapped(inode: Inode, host: Buffer, value: Buffer, flags: number): boolean {
    const entries = parseAcl(value);
    if (!entries) fail(Errno.EINVAL, 'setxattr', `${inode.label}: malformed POSIX ACL`);
    const { perms, equivalent } = aclMode(entries);
    const cur = this.getattr(inode);
    this.model.writeMeta(inode, inode.loc, { mode: (cur.mode & ~0o777) | perms });
    // mapped-file keeps ACLs on the host file itself: the host kernel drops
    // an equivalent one and sets the host mode, exactly as under QEMU.
    if (!equivalent || this.model.name === 'mapped-file') {
      setxattr(inode.fd, host, value, flags, inode.label);
    } else {
      try {
        removexattr(inode.fd, host, inode.label);
      } catch (e) {
        if (!isSysError(e, Errno.ENODATA)) throw e;
      }
    }
    return true;
  }

  removexattr(cr: Credentials | undefined, inode: Inode, name: Buffer, caller = cr): void {
    const host = this.hostXattr('removexattr', inode, name, Errno.EACCES);
    this.checkWritable('removexattr', inode.label);
    this.checkXattrPrivilege('removexattr', caller, inode, name, 'write');
    if (inode.hostKind === S_IFLNK) fail(Errno.ENODATA, 'removexattr', `${inode.label} ${printable(name)}`);
    withCredentials(this.host(cr), () => removexattr(inode.fd, host, inode.label));
  }
}

function checkXattrName(op: string, name: Buffer): void {
  if (name.length === 0 || name.length > 255) fail(name.length ? Errno.ERANGE : Errno.EINVAL, op, printable(name));
  if (name.includes(0)) fail(Errno.EINVAL, op, printable(name));
}

/** A node:fs callback error (fsync on libuv's pool) as the SysError the protocols map. */
function asSysError(e: unknown, op: string, what: string): SysError {
  if (e instanceof SysError) return e;
  const n = (e as NodeJS.ErrnoException).errno;
  return new SysError(typeof n === 'number' ? Math.abs(n) : Errno.EIO, op, what);
}

export { SysError, Inode, OpenFile, DirStream };
