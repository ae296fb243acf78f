// POSIX ACL xattr values (system.posix_acl_*: le32 version 2, then
// entries of le16 tag, le16 perm, le32 id) and the kernel's rule for a new
// file under a default ACL (posix_acl_create_masq), for the models where
// duofs, not the host kernel, keeps the guest's ACLs.

const VERSION = 2;
export const ACL_USER_OBJ = 0x01;
export const ACL_USER = 0x02;
export const ACL_GROUP_OBJ = 0x04;
export const ACL_GROUP = 0x08;
export const ACL_MASK = 0x10;
export const ACL_OTHER = 0x20;

export interface AclEntry {
  tag: number;
  perm: number;
  id: number;
}

export function parseAcl(b: Buffer): AclEntry[] | undefined {
  if (b.length < 4 || (b.length - 4) % 8 !== 0 || b.readUInt32LE(0) !== VERSION) return undefined;
  const out: AclEntry[] = [];
  for (let at = 4; at < b.length; at += 8) out.push({ tag: b.readUInt16LE(at), perm: b.readUInt16LE(at + 2), id: b.readUInt32LE(at + 4) });
  return out;
}

export function formatAcl(entries: AclEntry[]): Buffer {
  const b = Buffer.alloc(4 + entries.length * 8);
  b.writeUInt32LE(VERSION, 0);
  entries.forEach((e, i) => {
    b.writeUInt16LE(e.tag, 4 + i * 8);
    b.writeUInt16LE(e.perm, 6 + i * 8);
    b.writeUInt32LE(e.id >>> 0, 8 + i * 8);
  });
  return b;
}

/**
 * A new object's access ACL from its parent's default ACL and the mode the
 * creator asked for (posix_acl_create_masq): returns the ACL and the
 * resulting permission bits; `acl` is undefined when it says no more than
 * the mode does (then none is stored).
 */
export function createMasq(def: AclEntry[], mode: number): { acl: AclEntry[] | undefined; mode: number } {
  const acl = def.map((e) => ({ ...e }));
  let m = mode & 0o777;
  let groupObj: AclEntry | undefined;
  let maskObj: AclEntry | undefined;
  let notEquiv = false;
  for (const e of acl) {
    switch (e.tag) {
      case ACL_USER_OBJ:
        e.perm &= (m >> 6) & 7;
        m &= (e.perm << 6) | ~0o700;
        break;
      case ACL_USER:
      case ACL_GROUP:
        notEquiv = true;
        break;
      case ACL_GROUP_OBJ:
        groupObj = e;
        break;
      case ACL_OTHER:
        e.perm &= m & 7;
        m &= e.perm | ~0o7;
        break;
      case ACL_MASK:
        maskObj = e;
        notEquiv = true;
        break;
    }
  }
  const g = maskObj ?? groupObj;
  if (g) {
    g.perm &= (m >> 3) & 7;
    m &= (g.perm << 3) | ~0o70;
  }
  return { acl: notEquiv ? acl : undefined, mode: (mode & ~0o777) | (m & 0o777) };
}

/**
 * The permission bits an access ACL implies (posix_acl_equiv_mode): owner,
 * group (the mask when there is one) and other. `equivalent` is true when
 * the ACL says nothing beyond them, so it need not be stored.
 */
export function aclMode(entries: AclEntry[]): { perms: number; equivalent: boolean } {
  let perms = 0;
  let equivalent = true;
  let group = 0;
  let mask: number | undefined;
  for (const e of entries) {
    switch (e.tag) {
      case ACL_USER_OBJ:
        perms |= (e.perm & 7) << 6;
        break;
      case ACL_GROUP_OBJ:
        group = e.perm & 7;
        break;
      case ACL_OTHER:
        perms |= e.perm & 7;
        break;
      case ACL_MASK:
        mask = e.perm & 7;
        equivalent = false;
        break;
      default:
        equivalent = false;
    }
  }
  return { perms: perms | ((mask ?? group) << 3), equivalent };
}
