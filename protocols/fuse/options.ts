// FUSE session options as operators give them (virtiofsd's names).
import type { XattrMap } from './xattr-map.js';

export type CacheMode = 'auto' | 'always' | 'metadata' | 'never';

/**
 * virtiofsd's --posix-acl negotiation modes: never (no FUSE_POSIX_ACL, and
 * system.posix_acl_* names refused with ENOTSUP), auto (on when the kernel
 * offers it), always (INIT fails with EPROTO when the kernel does not).
 */
export type NegotiationMode = 'never' | 'auto' | 'always';

export interface FuseOptions {
  cache: CacheMode;
  /** let the guest kernel cache writes (FUSE_WRITEBACK_CACHE) */
  writeback: boolean;
  /** pass extended attributes through; off = ENOSYS like virtiofsd without --xattr */
  xattr: boolean;
  /** a distinct st_dev per host filesystem inside the export (FUSE_SUBMOUNTS) */
  announceSubmounts: boolean;
  /** largest WRITE/READ payload */
  maxWrite: number;
  /** offer FUSE_POSIX_LOCKS and serve POSIX lock requests (off = ENOSYS: the guest kernel keeps its locks to itself) */
  posixLocks: boolean;
  /** offer FUSE_FLOCK_LOCKS and serve flock() requests (off = ENOSYS, as above) */
  flockLocks: boolean;
  /** offer READDIRPLUS (virtiofsd's --no-readdirplus turns it off) */
  readdirplus: boolean;
  /** FUSE_DIRECT_IO_ALLOW_MMAP: shared mmap of files opened for direct I/O (--cache=never|metadata) */
  allowMmap: boolean;
  /**
   * virtiofsd's --allow-direct-io: a guest's O_DIRECT open keeps O_DIRECT on
   * the host fd (bypassing the host page cache too); off, it is dropped
   */
  allowDirectIo: boolean;
  /** POSIX ACLs; undefined = duofs's own default: offered with xattrs, nothing refused */
  posixAcl?: NegotiationMode;
  /**
   * virtiofsd's --security-label: FUSE_SECURITY_CTX, so a new file,
   * directory, node or symlink gets the security context (an SELinux label)
   * the guest's LSM chose, set as that xattr (through --xattrmap) before the
   * entry is answered; a context that cannot be set removes the new object
   * again and fails the request. never (default), auto, always.
   */
  securityLabel?: NegotiationMode;
  /** virtiofsd's --xattrmap rules, applied to every xattr name in both directions */
  xattrMap?: XattrMap;
  /**
   * virtiofsd's --migration-on-error: `abort` (default) fails a migration
   * whose inode cannot be found or is not the same file; `guest-error`
   * migrates on and the guest gets EIO on those nodes and handles
   */
  migrationOnError?: 'abort' | 'guest-error';
}

export const defaultFuseOptions: FuseOptions = {
  cache: 'auto',
  writeback: false,
  xattr: false,
  announceSubmounts: false,
  maxWrite: 1024 * 1024,
  posixLocks: true,
  flockLocks: true,
  readdirplus: true,
  allowMmap: false,
  allowDirectIo: false,
};

/** Entry/attribute timeouts in seconds for a cache mode, as virtiofsd sets them. */
export function timeouts(mode: CacheMode): { entry: number; attr: number } {
  switch (mode) {
    case 'never':
      return { entry: 0, attr: 0 };
    case 'auto':
      return { entry: 1, attr: 1 };
    case 'metadata':
    case 'always':
      return { entry: 86400, attr: 86400 };
  }
}
