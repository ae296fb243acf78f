// mapped-file: the guest's owner, mode and rdev of <dir>/<name> in the text
// file <dir>/.virtfs_metadata/<name> (the root's: <root>/.virtfs_metadata_root),
// kept in step through link, rename and unlink as QEMU does.
import {
  AT_REMOVEDIR,
  Errno,
  fail,
  O_CREAT,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_PATH,
  O_RDONLY,
  O_WRONLY,
  S_IFMT,
  S_IFREG,
  close,
  fstat,
  isSysError,
  linkat,
  mkdirat,
  openat,
  pread,
  pwrite,
  renameat2,
  unlinkat,
  ftruncate,
} from '../src/sys/index.js';
import type { Logger } from '../src/log.js';
import {
  METADATA_DIR,
  METADATA_DIR_MODE,
  METADATA_FILE_MODE,
  METADATA_MAX_BYTES,
  METADATA_ROOT,
  formatMetadata,
  isMetadataName,
  parseMetadata,
  type GuestMeta,
} from './formats/mapped-file.js';
import type { Location, ModelInode, ModelServices } from './model.js';
import { BadMetadataLog } from './bad-metadata.js';
import { metadataMisfit } from './agree.js';
import { MappedModel } from './mapped.js';

const ignore = (errno: number, fn: () => void): void => {
  try {
    fn();
  } catch (e) {
    if (!isSysError(e, errno)) throw e;
  }
};

export class MappedFileModel extends MappedModel {
  readonly name = 'mapped-file' as const;
  /** ACLs stay on the host file, where the host kernel judges them */
  protected readonly keepsEquivalentAcl = true;
  private readonly bad: BadMetadataLog;
  /** the export root, whose metadata is .virtfs_metadata_root */
  private root: ModelInode | undefined;

  constructor(svc: ModelServices, log: Logger) {
    super(svc);
    this.bad = new BadMetadataLog(log, 'mapped-file');
  }

  override setRoot(root: ModelInode): void {
    this.root = root;
  }

  /** Metadata lives beside the name: every inode remembers where it was last reached. */
  override reached(inode: ModelInode, loc: Location): void {
    const old = inode.loc?.parent;
    inode.loc = { parent: this.svc.ref(loc.parent), name: Buffer.from(loc.name) };
    if (old) this.svc.release(old);
  }

  /** An unnamed file would have no metadata file. */
  override beforeTmpfile(parent: ModelInode): void {
    fail(Errno.EOPNOTSUPP, 'tmpfile', `${parent.label}: no metadata file for an unnamed file (mapped-file)`);
  }

  /** (directory fd, file name) of the metadata for `inode`, or undefined if unknown. */
  private where(inode: ModelInode, loc: Location | undefined): { dirFd: number; name: Buffer; ownsDir: boolean } | undefined {
    if (inode === this.root) return { dirFd: inode.fd, name: METADATA_ROOT, ownsDir: false };
    if (!loc) return undefined;
    let dirFd: number;
    try {
      dirFd = openat(loc.parent.fd, METADATA_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW);
    } catch (e) {
      if (isSysError(e, Errno.ENOENT)) return undefined;
      if (isSysError(e, Errno.ELOOP) || isSysError(e, Errno.ENOTDIR)) {
        this.bad.report(inode, `${METADATA_DIR} in ${loc.parent.label} is not a directory`);
        return undefined;
      }
      throw e;
    }
    return { dirFd, name: loc.name, ownsDir: true };
  }

  readMeta(inode: ModelInode): GuestMeta {
    const w = this.where(inode, inode.loc);
    if (!w) return {};
    try {
      let fd: number;
      try {
        fd = openat(w.dirFd, w.name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
      } catch (e) {
        if (isSysError(e, Errno.ENOENT)) return {};
        if (isSysError(e, Errno.ELOOP)) {
          this.bad.report(inode, 'its metadata entry is a symlink', w.name.toString());
          return {};
        }
        throw e;
      }
      try {
        if ((fstat(fd).mode & S_IFMT) !== S_IFREG) {
          this.bad.report(inode, 'its metadata entry is not a regular file', w.name.toString());
          return {};
        }
        const buf = Buffer.alloc(METADATA_MAX_BYTES + 1);
        const n = pread(fd, buf, 0);
        const { meta, problems } = parseMetadata(buf.subarray(0, n));
        if (problems.length) this.bad.report(inode, problems.join('; '), w.name.toString());
        const misfit = meta.mode === undefined ? undefined : metadataMisfit(inode.hostKind, meta.mode);
        if (misfit !== undefined) {
          this.bad.report(inode, misfit, w.name.toString());
          delete meta.mode;
        }
        return meta;
      } finally {
        close(fd);
      }
    } finally {
      if (w.ownsDir) close(w.dirFd);
    }
  }

  writeMeta(inode: ModelInode, meta: GuestMeta): void {
    const loc = inode.loc;
    if (inode !== this.root && !loc) return; // an unnamed (O_TMPFILE) inode has no metadata file
    if (inode !== this.root) ignore(Errno.EEXIST, () => mkdirat(loc!.parent.fd, METADATA_DIR, METADATA_DIR_MODE));
    const merged = { ...this.readMeta(inode), ...meta };
    const w = this.where(inode, loc);
    if (!w) return;
    try {
      const fd = openat(w.dirFd, w.name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, METADATA_FILE_MODE);
      try {
        const text = formatMetadata(merged);
        ftruncate(fd, 0);
        pwrite(fd, text, 0);
      } finally {
        close(fd);
      }
    } finally {
      if (w.ownsDir) close(w.dirFd);
    }
  }

  isReservedName(name: Buffer): boolean {
    return isMetadataName(name);
  }

  hostXattrName(name: Buffer): Buffer {
    return name;
  }

  guestXattrName(name: Buffer): Buffer {
    return name;
  }

  private metaDir(parent: ModelInode, create: boolean): number | undefined {
    if (create) ignore(Errno.EEXIST, () => mkdirat(parent.fd, METADATA_DIR, METADATA_DIR_MODE));
    try {
      return openat(parent.fd, METADATA_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW);
    } catch (e) {
      if (isSysError(e, Errno.ENOENT) || isSysError(e, Errno.ELOOP) || isSysError(e, Errno.ENOTDIR)) return undefined;
      throw e;
    }
  }

  override linked(from: Location, to: Location): void {
    const src = this.metaDir(from.parent, false);
    if (src === undefined) return;
    try {
      const dst = this.metaDir(to.parent, true);
      if (dst === undefined) return;
      try {
        ignore(Errno.ENOENT, () => linkat(src, from.name, dst, to.name));
      } finally {
        close(dst);
      }
    } finally {
      close(src);
    }
  }

  /** The metadata moves with the name, and live inodes learn where they now are. */
  override renamed(from: Location, to: Location, exchange: boolean): void {
    this.moveMeta(from, to, exchange);
    this.relocate(to);
    if (exchange) this.relocate(from);
  }

  private relocate(loc: Location): void {
    const inode = this.svc.liveAt(loc.parent, loc.name);
    if (inode) this.reached(inode, loc);
  }

  private moveMeta(from: Location, to: Location, exchange: boolean): void {
    const dst = this.metaDir(to.parent, true);
    if (dst === undefined) return;
    try {
      const src = this.metaDir(from.parent, true);
      if (src === undefined) return;
      try {
        try {
          renameat2(src, from.name, dst, to.name, exchange ? 2 : 0);
        } catch (e) {
          if (!isSysError(e, Errno.ENOENT)) throw e;
          // No metadata moved along: what described the replaced file is stale.
          if (!exchange) ignore(Errno.ENOENT, () => unlinkat(dst, to.name, 0));
        }
      } finally {
        close(src);
      }
    } finally {
      close(dst);
    }
  }

  /** Before rmdir: the directory's own .virtfs_metadata must go first. */
  override beforeRemove(parent: ModelInode, name: Buffer, removeDir: boolean): void {
    if (!removeDir) return;
    let dirFd: number;
    try {
      dirFd = openat(parent.fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
    } catch {
      return; // not a directory (or gone): rmdir says so
    }
    try {
      ignore(Errno.ENOENT, () => unlinkat(dirFd, METADATA_DIR, AT_REMOVEDIR));
    } catch (e) {
      if (!isSysError(e, Errno.ENOTEMPTY)) throw e;
    } finally {
      close(dirFd);
    }
  }

  override removed(loc: Location): void {
    const md = this.metaDir(loc.parent, false);
    if (md === undefined) return;
    try {
      ignore(Errno.ENOENT, () => unlinkat(md, loc.name, 0));
    } finally {
      close(md);
    }
  }
}
