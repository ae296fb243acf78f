// Live migration support in the backend ("find-paths", as virtiofsd's
// --migration-mode=find-paths): on the source, the path relative to the
// export of each inode a guest holds, checked to name that inode right now;
// on the destination, the inodes found again at those paths, checked to be
// the same files (st_dev, st_ino, file type) and adopted under the node ids
// the guest knows.
//
// A path comes from the kernel (/proc/self/fd/N of the inode's O_PATH fd,
// which follows renames) and is then resolved again from the export root one
// component at a time, O_NOFOLLOW, exactly as lookups are: a path that does
// not lead back to the same inode (the file was unlinked, or moved out of
// the export) is an error, never a guess.
import { AT_FDCWD, Errno, SysError, S_IFMT, close, fstat, openPath, procPath, readlinkat, type Stat } from '../sys/index.js';
import type { Inode, InodeTable } from './inode-table.js';
import { checkLookupName, isDot, isDotDot, printable } from './names.js';

/** Where an inode is, for the migration stream. */
export interface InodeLocation {
  /** path components from the export root (empty for the root); none is '', '.', '..' or contains '/' */
  path: Buffer[];
  dev: bigint;
  ino: bigint;
  /** S_IFMT bits of the host inode */
  kind: number;
}

/** An inode to find again on the destination, under node id `id`, with `refs` references. */
export interface RestoreRequest extends InodeLocation {
  id: number;
  refs: number;
}

/** What migration needs of the backend's internals. */
export interface MigrationDeps {
  inodes: InodeTable;
  root: Inode;
  /** a lookup as the guest's (one new reference on the entry's inode) */
  lookup(parent: Inode, name: Buffer): { inode: Inode } | Promise<{ inode: Inode }>;
  release(inode: Inode, n?: number): void;
  /** the security model learns where an inode lives (mapped-file keeps its metadata there) */
  reached(inode: Inode, parent: Inode, name: Buffer): void;
}

const SLASH = 0x2f;

export const showPath = (path: readonly Buffer[]): string => (path.length ? path.map((p) => printable(p)).join('/') : '.');

function splitPath(p: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === SLASH) {
      if (i > start) out.push(Buffer.from(p.subarray(start, i)));
      start = i + 1;
    }
  }
  return out;
}

/** The kernel's idea of an fd's path (follows renames). */
function kernelPath(fd: number, what: string): Buffer {
  try {
    return readlinkat(AT_FDCWD, procPath(fd));
  } catch (e) {
    if (e instanceof SysError) throw new SysError(e.errno, 'migration: find path', `${what} (readlink of its fd: ${e.code})`);
    throw e;
  }
}

/**
 * Resolves `path` from the root with O_PATH | O_NOFOLLOW per component
 * (every component a plain name) and stats what it names; the fd is closed.
 */
function statPath(root: Inode, path: readonly Buffer[]): Stat {
  let dir = -1;
  try {
    for (const [i, name] of path.entries()) {
      checkLookupName('migration', name);
      if (isDot(name) || isDotDot(name)) throw new SysError(Errno.EINVAL, 'migration', `path ${showPath(path)} has a '.' or '..' component`);
      const next = openPath(dir < 0 ? root.fd : dir, name);
      if (dir >= 0) close(dir);
      dir = next;
      if (i < path.length - 1 && (fstat(dir, printable(name)).mode & S_IFMT) !== 0o040000)
        throw new SysError(Errno.ENOTDIR, 'migration', `${showPath(path.slice(0, i + 1))} is not a directory`);
    }
    return fstat(dir < 0 ? root.fd : dir, showPath(path));
  } finally {
    if (dir >= 0) close(dir);
  }
}

/**
 * The path of `inode` relative to the export, checked to name that very
 * inode now. Throws SysError (ENOENT: no path leads to it; ESTALE: the path
 * names another inode) naming the inode.
 */
export function locate(d: MigrationDeps, inode: Inode): InodeLocation {
  const where = { dev: inode.dev, ino: inode.ino, kind: inode.hostKind };
  if (inode === d.root) return { path: [], ...where };
  const rootPath = kernelPath(d.root.fd, 'the export root');
  const p = kernelPath(inode.fd, inode.label);
  const prefix = rootPath.length === 1 && rootPath[0] === SLASH ? rootPath : Buffer.concat([rootPath, Buffer.from('/')]);
  if (p.length <= prefix.length || !p.subarray(0, prefix.length).equals(prefix))
    throw new SysError(Errno.ENOENT, 'migration: find path', `${inode.label} is no longer inside the export (unlinked, or moved out)`);
  const path = splitPath(p.subarray(prefix.length));
  let st: Stat;
  try {
    st = statPath(d.root, path);
  } catch (e) {
    // "name (deleted)" for an unlinked file: its old name is gone or names another file.
    if (e instanceof SysError)
      throw new SysError(
        Errno.ENOENT,
        'migration: find path',
        `${inode.label}: its last path ${showPath(path)} leads nowhere now (${e.op} ${e.code})`,
      );
    throw e;
  }
  if (st.dev !== inode.dev || st.ino !== inode.ino)
    throw new SysError(Errno.ESTALE, 'migration: find path', `${inode.label}: ${showPath(path)} names another inode (it was unlinked or replaced)`);
  return { path, ...where };
}

/**
 * Finds every requested inode again and adopts it under its node id with
 * its reference count. Shorter paths go first, so a directory the guest
 * holds gets its own id before a path through it is walked. Each result is
 * the inode or the SysError that says why it is not the same file; ids of
 * failed entries stay reserved (the guest still names them).
 */
export async function restore(d: MigrationDeps, reqs: readonly RestoreRequest[]): Promise<(Inode | SysError)[]> {
  d.inodes.reserveIds(reqs.reduce((m, r) => Math.max(m, r.id), 0));
  const order = reqs.map((_, i) => i).sort((a, b) => reqs[a]!.path.length - reqs[b]!.path.length);
  const out: (Inode | SysError)[] = new Array(reqs.length);
  // Device numbers are the host's own (an NFS mount has another on each host):
  // they must correspond one to one, starting from the roots, not be equal.
  const devices = new DeviceMap();
  const root = reqs.find((r) => r.path.length === 0);
  if (root) devices.pair(root.dev, d.root.dev);
  for (const i of order) {
    try {
      out[i] = await restoreOne(d, reqs[i]!, devices);
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      out[i] = e;
    }
  }
  return out;
}

/**
 * Source device numbers paired with the destination's: each source device
 * stands for one destination device and back (the export's filesystem and
 * each one mounted inside it).
 */
class DeviceMap {
  private readonly there = new Map<bigint, bigint>();
  private readonly back = new Map<bigint, bigint>();

  /** Whether `src` and `dst` correspond (pairing them if neither is paired yet). */
  pair(src: bigint, dst: bigint): boolean {
    const known = this.there.get(src);
    if (known !== undefined || this.back.has(dst)) return known === dst;
    this.there.set(src, dst);
    this.back.set(dst, src);
    return true;
  }
}

async function restoreOne(d: MigrationDeps, r: RestoreRequest, devices: DeviceMap): Promise<Inode> {
  const what = `node ${r.id} (${showPath(r.path)})`;
  // The same file: the same type, the same inode number (shared storage keeps them; the root is the one
  // the destination was given, whatever its number), on the device that corresponds to the source's.
  const same = (st: { dev: bigint; ino: bigint; mode?: number; hostKind?: number }, isRoot = false): void => {
    const kind = st.hostKind ?? (st.mode ?? 0) & S_IFMT;
    if (kind !== r.kind || (!isRoot && (st.ino !== r.ino || !devices.pair(r.dev, st.dev))))
      throw new SysError(
        Errno.ESTALE,
        'migration: restore',
        `${what} is now another file (dev ${st.dev} ino ${st.ino} type 0${kind.toString(8)}, the source had dev ${r.dev} ino ${r.ino} type 0${r.kind.toString(8)})`,
      );
  };
  if (r.path.length === 0) {
    if (r.id !== d.root.id) throw new SysError(Errno.EINVAL, 'migration: restore', `${what}: only node ${d.root.id} is the export root`);
    same(d.root, true);
    d.inodes.ref(d.root, r.refs);
    return d.root;
  }
  // The directories on the way, by lookups as the guest's would be (they get ids past the reserved range and go again after).
  let parent = d.root;
  d.inodes.ref(parent);
  try {
    for (const name of r.path.slice(0, -1)) {
      checkName(what, name);
      const e = await d.lookup(parent, name);
      d.release(parent);
      parent = e.inode;
      if (!parent.isDir) throw new SysError(Errno.ENOTDIR, 'migration: restore', `${what}: ${printable(name)} is not a directory`);
    }
    const name = r.path[r.path.length - 1]!;
    checkName(what, name);
    const fd = openPath(parent.fd, name);
    let st: Stat;
    try {
      st = fstat(fd, what);
      same(st);
    } catch (e) {
      close(fd);
      throw e;
    }
    const inode = d.inodes.adopt(r.id, fd, st, r.refs);
    d.reached(inode, parent, name);
    return inode;
  } finally {
    d.release(parent);
  }
}

function checkName(what: string, name: Buffer): void {
  checkLookupName('migration: restore', name);
  if (isDot(name) || isDotDot(name)) throw new SysError(Errno.EINVAL, 'migration: restore', `${what} has a '.' or '..' component`);
}
