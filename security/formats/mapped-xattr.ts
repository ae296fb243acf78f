// QEMU's mapped-xattr on-disk format (hw/9pfs/9p-local.c): the guest's view
// of owner, mode and device number lives in user.virtfs.* attributes on
// each host file. uid/gid/mode are little-endian 32-bit (mode includes the
// S_IFMT type bits); rdev is little-endian 64-bit in glibc makedev()
// encoding. A missing attribute leaves the host's value showing.

export const XATTR_UID = Buffer.from('user.virtfs.uid');
export const XATTR_GID = Buffer.from('user.virtfs.gid');
export const XATTR_MODE = Buffer.from('user.virtfs.mode');
export const XATTR_RDEV = Buffer.from('user.virtfs.rdev');

/** Every attribute under this prefix belongs to the model and is hidden from guests. */
export const XATTR_PREFIX = Buffer.from('user.virtfs.');

/** POSIX ACLs are kept under these names and shown to guests as system.posix_acl_*. */
export const ACL_ACCESS_HOST = Buffer.from('user.virtfs.system.posix_acl_access');
export const ACL_DEFAULT_HOST = Buffer.from('user.virtfs.system.posix_acl_default');
export const ACL_ACCESS_GUEST = Buffer.from('system.posix_acl_access');
export const ACL_DEFAULT_GUEST = Buffer.from('system.posix_acl_default');

/** A 32-bit value as QEMU writes it; undefined when the stored bytes are not exactly that. */
export function decodeU32(b: Buffer | undefined): number | undefined {
  return b && b.length === 4 ? b.readUInt32LE(0) : undefined;
}

export function encodeU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

export function decodeRdev(b: Buffer | undefined): bigint | undefined {
  return b && b.length === 8 ? b.readBigUInt64LE(0) : undefined;
}

export function encodeRdev(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v), 0);
  return b;
}

export function isModelXattr(name: Buffer): boolean {
  return name.length >= XATTR_PREFIX.length && name.subarray(0, XATTR_PREFIX.length).equals(XATTR_PREFIX);
}
