// mapped-xattr: the guest's owner, mode and rdev in user.virtfs.* xattrs.
import { Errno, getxattr, isSysError, setxattr } from '../src/sys/index.js';
import type { Logger } from '../src/log.js';
import type { GuestMeta } from './formats/mapped-file.js';
import {
  ACL_ACCESS_GUEST,
  ACL_ACCESS_HOST,
  ACL_DEFAULT_GUEST,
  ACL_DEFAULT_HOST,
  XATTR_GID,
  XATTR_MODE,
  XATTR_RDEV,
  XATTR_UID,
  decodeRdev,
  decodeU32,
  encodeRdev,
  encodeU32,
  isModelXattr,
} from './formats/mapped-xattr.js';
import type { ModelInode, ModelServices } from './model.js';
import { BadMetadataLog } from './bad-metadata.js';
import { metadataMisfit } from './agree.js';
import { MappedModel } from './mapped.js';

export class MappedXattrModel extends MappedModel {
  readonly name = 'mapped-xattr' as const;
  protected readonly keepsEquivalentAcl = false;
  private readonly bad: BadMetadataLog;

  constructor(svc: ModelServices, log: Logger) {
    super(svc);
    this.bad = new BadMetadataLog(log, 'mapped-xattr');
  }

  private read(inode: ModelInode, name: Buffer): Buffer | undefined {
    try {
      return getxattr(inode.fd, name, inode.label);
    } catch (e) {
      if (isSysError(e, Errno.ENODATA) || isSysError(e, Errno.EOPNOTSUPP) || isSysError(e, Errno.EPERM)) return undefined;
      if (isSysError(e, Errno.ERANGE)) {
        this.bad.report(inode, `${name} is oversized`);
        return undefined;
      }
      throw e;
    }
  }

  readMeta(inode: ModelInode): GuestMeta {
    // Host symlinks cannot carry user.* xattrs, and reading through one
    // would follow it out of the export.
    if (inode.hostKind === 0o120000) return {};
    const meta: GuestMeta = {};
    const field = (name: Buffer, decode: (b: Buffer | undefined) => number | undefined): number | undefined => {
      const raw = this.read(inode, name);
      const v = decode(raw);
      if (raw && v === undefined) this.bad.report(inode, `${name} has ${raw.length} bytes`);
      return v;
    };
    const uid = field(XATTR_UID, decodeU32);
    const gid = field(XATTR_GID, decodeU32);
    const mode = field(XATTR_MODE, decodeU32);
    const rawRdev = this.read(inode, XATTR_RDEV);
    const rdev = decodeRdev(rawRdev);
    if (rawRdev && rdev === undefined) this.bad.report(inode, `${XATTR_RDEV} has ${rawRdev.length} bytes`);
    if (uid !== undefined) meta.uid = uid;
    if (gid !== undefined) meta.gid = gid;
    if (mode !== undefined) {
      const misfit = metadataMisfit(inode.hostKind, mode);
      if (misfit === undefined) meta.mode = mode;
      else this.bad.report(inode, misfit);
    }
    if (rdev !== undefined) meta.rdev = rdev;
    return meta;
  }

  writeMeta(inode: ModelInode, meta: GuestMeta): void {
    if (meta.uid !== undefined) setxattr(inode.fd, XATTR_UID, encodeU32(meta.uid), 0, inode.label);
    if (meta.gid !== undefined) setxattr(inode.fd, XATTR_GID, encodeU32(meta.gid), 0, inode.label);
    if (meta.mode !== undefined) setxattr(inode.fd, XATTR_MODE, encodeU32(meta.mode), 0, inode.label);
    if (meta.rdev !== undefined) setxattr(inode.fd, XATTR_RDEV, encodeRdev(meta.rdev), 0, inode.label);
  }

  isReservedName(): boolean {
    return false;
  }

  hostXattrName(name: Buffer): Buffer | undefined {
    if (name.equals(ACL_ACCESS_GUEST)) return ACL_ACCESS_HOST;
    if (name.equals(ACL_DEFAULT_GUEST)) return ACL_DEFAULT_HOST;
    return isModelXattr(name) ? undefined : name;
  }

  guestXattrName(name: Buffer): Buffer | undefined {
    if (name.equals(ACL_ACCESS_HOST)) return ACL_ACCESS_GUEST;
    if (name.equals(ACL_DEFAULT_HOST)) return ACL_DEFAULT_GUEST;
    return isModelXattr(name) ? undefined : name;
  }
}
