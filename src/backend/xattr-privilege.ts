// Which extended-attribute namespaces need privilege, as the kernel judges
// it (fs/xattr.c xattr_permission, security/commoncap.c): the server holds
// CAP_SYS_ADMIN and CAP_SETFCAP, so it must refuse on behalf of a caller
// that does not, or any guest user could plant a file capability or a
// trusted.* attribute on the host.
import { Errno } from '../sys/index.js';

const TRUSTED = Buffer.from('trusted.');
const SECURITY = Buffer.from('security.');

export type XattrAccess = 'read' | 'write';

/**
 * The errno the kernel gives an unprivileged caller for `access` to `name`,
 * or undefined if the caller's ordinary permissions decide. trusted.*:
 * unreadable (ENODATA) and unwritable (EPERM) without CAP_SYS_ADMIN;
 * security.*: readable, writable only with CAP_SYS_ADMIN (security.capability
 * with CAP_SETFCAP).
 */
export function unprivilegedRefusal(name: Buffer, access: XattrAccess): number | undefined {
  if (startsWith(name, TRUSTED)) return access === 'read' ? Errno.ENODATA : Errno.EPERM;
  if (startsWith(name, SECURITY) && access === 'write') return Errno.EPERM;
  return undefined;
}

/** Whether an unprivileged caller's listxattr shows `name` (trusted.* is hidden). */
export function listedUnprivileged(name: Buffer): boolean {
  return !startsWith(name, TRUSTED);
}

const startsWith = (b: Buffer, prefix: Buffer): boolean => b.length >= prefix.length && b.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
