// mapped-xattr and mapped-file: the daemon owns every host object; the
// guest's owners, modes, file types and device numbers live in metadata
// (where, is the subclass's business). Special files and symlinks are
// regular host files; owners and modes change in metadata only.
import {
  Errno,
  O_CREAT,
  O_EXCL,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  close,
  fail,
  fstat,
  getxattr,
  isSysError,
  mkdirat,
  openat,
  pread,
  pwrite,
  readlinkFd,
  removexattr,
  reopen,
  setxattr,
  unlinkat,
  type Credentials,
  type Stat,
} from '../src/sys/index.js';
import { aclMode, createMasq, formatAcl, parseAcl } from './acl.js';
import type { GuestMeta } from './formats/mapped-file.js';
import { ACL_ACCESS_GUEST, ACL_DEFAULT_GUEST } from './formats/mapped-xattr.js';
import {
  applyMeta,
  SYMLINK_MAX,
  type Creation,
  type Location,
  type ModelInode,
  type ModelServices,
  type NewNode,
  type OwnerMode,
  type ReaddirPolicy,
  type SecurityModel,
  type SecurityModelName,
} from './model.js';

export abstract class MappedModel implements SecurityModel {
  abstract readonly name: Extract<SecurityModelName, 'mapped-xattr' | 'mapped-file'>;
  readonly callerCredentials = false;
  /** the host keeps an ACL that says no more than the mode (mapped-file: ACLs are the host file's own) */
  protected abstract readonly keepsEquivalentAcl: boolean;

  constructor(protected readonly svc: ModelServices) {}

  /** The guest's metadata for an inode, or {} where the host's values show. */
  abstract readMeta(inode: ModelInode): GuestMeta;
  /** Merges `meta` into the stored metadata. */
  abstract writeMeta(inode: ModelInode, meta: GuestMeta): void;
  abstract isReservedName(name: Buffer): boolean;
  abstract hostXattrName(name: Buffer): Buffer | undefined;
  abstract guestXattrName(name: Buffer): Buffer | undefined;

  setRoot(_root: ModelInode): void {}

  hostCredentials(): undefined {
    return undefined;
  }

  /** The daemon owns the files: a guest caller is privileged when it is root in the guest's view. */
  privileged(caller: Credentials): boolean {
    return caller.uid === 0;
  }

  view(inode: ModelInode, st: Stat): Stat {
    const v = applyMeta(st, this.readMeta(inode));
    inode.kind = v.mode & S_IFMT;
    return v;
  }

  private getattr(inode: ModelInode): Stat {
    return this.view(inode, fstat(inode.fd, inode.label));
  }

  reached(_inode: ModelInode, _loc: Location): void {}

  /** The host's d_type may not be the guest's (QEMU reports DT_UNKNOWN too). */
  readdirPolicy(): ReaddirPolicy {
    return { hide: (n) => this.isReservedName(n), unknownTypes: true };
  }

  /** A mapped symlink is a regular file holding the target; a host symlink (made outside the model) is itself. */
  readlink(inode: ModelInode): Buffer {
    if (inode.hostKind === S_IFLNK) return readlinkFd(inode.fd, inode.label);
    const fd = reopen(inode.fd, O_RDONLY | O_NONBLOCK, inode.label);
    try {
      const buf = Buffer.alloc(SYMLINK_MAX + 1);
      const n = pread(fd, buf, 0, inode.label);
      if (n > SYMLINK_MAX) fail(Errno.ENAMETOOLONG, 'readlink', `${inode.label}: mapped symlink file too large`);
      return Buffer.from(buf.subarray(0, n));
    } finally {
      close(fd);
    }
  }

  /** Owners and modes change in metadata only, never on the host. */
  setOwnerMode(inode: ModelInode, a: OwnerMode): void {
    const m: GuestMeta = {};
    if (a.uid !== undefined && a.uid !== 0xffffffff) m.uid = a.uid;
    if (a.gid !== undefined && a.gid !== 0xffffffff) m.gid = a.gid;
    if (a.mode !== undefined) {
      if (inode.kind === S_IFLNK) fail(Errno.EOPNOTSUPP, 'chmod', inode.label);
      m.mode = inode.kind | (a.mode & 0o7777);
    } else if (m.uid !== undefined || m.gid !== undefined) {
      // chown by the guest clears setuid/setgid like a real chown would.
      const cur = this.getattr(inode);
      if (cur.mode & 0o6000 && inode.kind === S_IFREG) m.mode = cur.mode & ~0o6000;
    }
    if (Object.keys(m).length) this.writeMeta(inode, m);
  }

  hostMode(type: number): number {
    return type === S_IFDIR ? this.svc.dmode : this.svc.fmode;
  }

  /** The daemon's credentials; the umask is applied to the guest's mode in recordNew. */
  creating<T>(_cr: Credentials | undefined, _umask: number | undefined, fn: () => T): T {
    return fn();
  }

  makeNode(_cr: Credentials | undefined, parent: ModelInode, name: Buffer, node: NewNode): void {
    const what = JSON.stringify(name.toString('utf8')); // as the backend prints names
    if ('target' in node) {
      // A regular file whose content is the target (no NUL), as QEMU stores it.
      const fd = openat(parent.fd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, this.svc.fmode);
      try {
        pwrite(fd, node.target, 0, what);
      } catch (e) {
        close(fd);
        unlinkat(parent.fd, name, 0);
        throw e;
      }
      close(fd);
    } else if (node.type === S_IFDIR) {
      mkdirat(parent.fd, name, this.svc.dmode);
    } else {
      // An empty regular host file; the type and device number live in metadata.
      close(openat(parent.fd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, this.svc.fmode));
    }
  }

  beforeTmpfile(_parent: ModelInode): void {}

  /** The guest's view goes into metadata. */
  recordNew(cr: Credentials | undefined, parent: ModelInode, inode: ModelInode, _st: Stat, mode: number, how: Creation): Stat {
    // A FUSE client with POSIX ACLs leaves umask and default-ACL
    // inheritance to the server; in the mapped models that is duofs.
    let acls: { access?: Buffer; default?: Buffer } = {};
    if (how.umask !== undefined) ({ mode, acls } = this.inherit(parent, mode, how.umask));
    const meta: GuestMeta = { uid: cr?.uid ?? 0, gid: cr?.gid ?? 0, mode };
    // A setgid directory gives its group (and, to directories, its setgid
    // bit), as the kernel does on a real filesystem. 9P clients already
    // send it so; FUSE clients leave it to the server.
    const p = this.getattr(parent);
    if (p.mode & 0o2000) {
      meta.gid = p.gid;
      if ((mode & S_IFMT) === S_IFDIR) meta.mode = mode | 0o2000;
    }
    if (how.rdev !== undefined) meta.rdev = how.rdev;
    this.writeMeta(inode, meta);
    if (acls.access) setxattr(inode.fd, this.hostXattrName(ACL_ACCESS_GUEST)!, acls.access, 0, inode.label);
    if (acls.default) setxattr(inode.fd, this.hostXattrName(ACL_DEFAULT_GUEST)!, acls.default, 0, inode.label);
    return this.getattr(inode);
  }

  /** posix_acl_create: the parent's default ACL, else the umask. */
  private inherit(parent: ModelInode, mode: number, umask: number): { mode: number; acls: { access?: Buffer; default?: Buffer } } {
    let def: Buffer | undefined;
    try {
      def = getxattr(parent.fd, this.hostXattrName(ACL_DEFAULT_GUEST)!, parent.label);
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
   * An access ACL also sets the guest's permission bits (the FUSE client
   * leaves that to the server; a host kernel would do it), and one that
   * says no more than the mode is not kept.
   */
  setAcl(inode: ModelInode, name: Buffer, host: Buffer, value: Buffer, flags: number): boolean {
    if (!name.equals(ACL_ACCESS_GUEST)) return false;
    const entries = parseAcl(value);
    if (!entries) fail(Errno.EINVAL, 'setxattr', `${inode.label}: malformed POSIX ACL`);
    const { perms, equivalent } = aclMode(entries);
    const cur = this.getattr(inode);
    this.writeMeta(inode, { mode: (cur.mode & ~0o777) | perms });
    // mapped-file keeps ACLs on the host file itself: the host kernel drops
    // an equivalent one and sets the host mode, exactly as under QEMU.
    if (!equivalent || this.keepsEquivalentAcl) {
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

  linked(_from: Location, _to: Location): void {}
  renamed(_from: Location, _to: Location, _exchange: boolean): void {}
  beforeRemove(_parent: ModelInode, _name: Buffer, _removeDir: boolean): void {}
  removed(_loc: Location, _wasDir: boolean): void {}
}
