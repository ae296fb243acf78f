// Which filesystems can block a call, told from statfs(2)'s f_type: memory
// filesystems never wait, local disk filesystems take buffered writes into
// the page cache, and everything else (NFS, CIFS, FUSE — virtiofs and
// sshfs included —, 9p, Ceph, an unknown type) is treated as slow.
import { fstatfs } from '../sys/index.js';
import type { FsSpeed } from './engine.js';

const MEMORY = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);
const LOCAL = new Set([
  0xef53 /* ext2/3/4 */, 0x58465342 /* xfs */, 0x9123683e /* btrfs */, 0xf2f52010 /* f2fs */, 0x794c7630 /* overlayfs */, 0x2fc12fc1 /* zfs */,
  0xca451a4e /* bcachefs */, 0x4244 /* hfs */, 0x3153464a /* jfs */,
]);

/** The speed class of a filesystem type (statfs f_type). */
export function speedOfType(type: number): FsSpeed {
  const t = type >>> 0;
  if (MEMORY.has(t)) return 'memory';
  if (LOCAL.has(t)) return 'local';
  return 'remote';
}

/** The speed class of the filesystem `fd` lives on ('remote' if it cannot be told). */
export function speedOfFd(fd: number): FsSpeed {
  try {
    return speedOfType(fstatfs(fd).type);
  } catch {
    return 'remote';
  }
}
