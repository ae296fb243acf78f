// `duofs convert`: rewrite an export's metadata offline from one QEMU security
// model to another, in QEMU's on-disk formats (security/formats/):
//
//   mapped-xattr -> mapped-file    user.virtfs.{uid,gid,mode,rdev} become
//                                  .virtfs_metadata/<name> files; guest ACLs
//                                  (user.virtfs.system.posix_acl_*) become real
//                                  system.posix_acl_* (mapped-file keeps ACLs as
//                                  passthrough does)
//   mapped-file  -> mapped-xattr   the reverse
//   passthrough (or none) -> mapped-xattr | mapped-file
//                                  import: each host inode's owner, mode (with its
//                                  type) and device number become the metadata;
//                                  symlinks become regular files holding the
//                                  target, device nodes / FIFOs / sockets become
//                                  empty regular files, exactly as QEMU stores
//                                  what a guest creates in a mapped model
//
// What the mapped models expect of the host files (hw/9pfs/9p-local.c): the
// guest's view comes from the metadata wherever it is present (a missing
// field shows the host's value); QEMU never switches credentials in these
// models, so every host file must be readable and writable by the user the
// server runs as; files and device stand-ins QEMU creates are regular files
// of host mode fmode (default 0600), directories dmode (default 0700), the
// .virtfs_metadata directory 0700 and its files 0600. `convert` keeps host
// modes and owners as they are unless --fmode/--dmode are given (then regular
// files get fmode and directories dmode, as if QEMU had created them);
// files it creates (stand-ins for specials) get fmode (default 0600) and the
// replaced node's host owner; metadata files and directories get the owner
// of the directory they describe. If the mapped server will run as an
// ordinary user, `chown -R` the export to that user afterwards.
//
// Safety: the walk never follows a symlink (every step is openat/O_NOFOLLOW
// from the parent), never crosses into another filesystem mounted inside the
// export (reported), and never writes outside it. Metadata that is
// truncated, oversized, non-numeric, disagrees with the host file type, or is
// itself a symlink/directory is reported with its path and left alone, as is
// everything else about that entry. Names the target model reserves (a
// `.virtfs_metadata` in a tree becoming mapped-file) stop the conversion
// before anything is written. A dry run does the same walk and checks and
// reports the same summary, writing nothing.
import type { SecurityModelName as SecurityModel } from '../../security/model.js';
import { metadataMisfit } from '../../security/agree.js';
import {
  AT_FDCWD,
  AT_REMOVEDIR,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from '../sys/constants.js';
import { Errno, SysError, isSysError } from '../sys/errno.js';
import {
  close,
  fchmodPathFd,
  fchownFd,
  linkat,
  mkdirat,
  openPath,
  openat,
  pread,
  pwrite,
  readlinkat,
  renameat2,
  unlinkat,
  utimensat,
} from '../sys/fs.js';
import { fstat, fstatat, type Stat } from '../sys/stat.js';
import { getdents } from '../sys/dirents.js';
import { getxattr, removexattr, setxattr } from '../sys/xattr.js';
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
} from '../../security/formats/mapped-xattr.js';
import {
  METADATA_DIR,
  METADATA_DIR_MODE,
  METADATA_FILE_MODE,
  METADATA_MAX_BYTES,
  METADATA_ROOT,
  formatMetadata,
  parseMetadata,
  type GuestMeta,
} from '../../security/formats/mapped-file.js';
import { acquireConvertLock, findProcessesUsing, ExportInUseError } from './in-use.js';

export type ConvertFrom = SecurityModel;
export type ConvertTo = 'mapped-xattr' | 'mapped-file';

export interface ConvertOptions {
  /** the export root */
  dir: string;
  from: ConvertFrom;
  to: ConvertTo;
  /** walk and check everything, write nothing; same summary */
  dryRun?: boolean;
  /** host mode for regular files (QEMU's fmode); applied to every regular file when given */
  fmode?: number;
  /** host mode for directories (QEMU's dmode); applied to every directory when given */
  dmode?: number;
  /** how many paths the summary lists per category (default 20) */
  maxPaths?: number;
  /** skip the /proc scan for other processes using the export (the duofs lock is still checked) */
  skipProcessScan?: boolean;
}

export type Kind = 'directory' | 'regular' | 'symlink' | 'char-device' | 'block-device' | 'fifo' | 'socket';

export interface Problem {
  path: string;
  problem: string;
}

export interface ConvertSummary {
  dir: string;
  from: ConvertFrom;
  to: ConvertTo;
  dryRun: boolean;
  /** entries looked at, the export root included */
  entries: number;
  /** entries whose metadata was (or, dry run, would be) written in the target format */
  converted: number;
  /** converted entries by the file type the guest sees */
  kinds: Record<Kind, number>;
  /** entries with no metadata to carry (the guest sees the host's values before and after) */
  unchanged: number;
  /** host symlinks/devices/FIFOs/sockets replaced by regular stand-ins (import) */
  replaced: number;
  /** guest POSIX ACLs moved between their two storage forms */
  acls: number;
  /** host modes changed to fmode/dmode */
  modesSet: number;
  /** entries left alone because of a problem */
  problemCount: number;
  problems: Problem[];
  /** the first changed paths */
  changed: string[];
  /** directories where another filesystem is mounted (not entered) */
  mountPoints: string[];
}

export class ConvertError extends Error {
  override name = 'ConvertError';
  constructor(
    message: string,
    readonly problems: Problem[] = [],
  ) {
    super(message);
  }
}

// ---- planning ---------------------------------------------------------------------------------

interface Acls {
  access?: Buffer;
  default?: Buffer;
}

interface Action {
  /** path components of the parent directory, from the export root */
  dir: Buffer[];
  /** undefined for the export root itself */
  name: Buffer | undefined;
  path: string;
  dev: bigint;
  ino: bigint;
  hostType: number;
  hostUid: number;
  hostGid: number;
  /** owner of the directory that holds this entry's metadata (mapped-file target) */
  parentUid: number;
  parentGid: number;
  nlink: number;
  meta: GuestMeta;
  acls: Acls;
  /** which source metadata to remove once the target is written */
  removeXattrs: Buffer[];
  removeMdFile: boolean;
  removeRealAcls: Buffer[];
  /** import of a host special: the stand-in's content (symlink target) */
  replace?: { content: Buffer; atime: Stat['atime']; mtime: Stat['mtime'] };
  setMode?: number;
}

interface CleanupMdDir {
  cleanup: true;
  dir: Buffer[];
  path: string;
}

type Step = Action | CleanupMdDir;

const KIND_BY_TYPE: Record<number, Kind> = {
  [S_IFDIR]: 'directory',
  [S_IFREG]: 'regular',
  [S_IFLNK]: 'symlink',
  [S_IFCHR]: 'char-device',
  [S_IFBLK]: 'block-device',
  [S_IFIFO]: 'fifo',
  [S_IFSOCK]: 'socket',
};

const DIRENT_BUF = Buffer.alloc(64 * 1024);

function show(dir: Buffer[], name?: Buffer): string {
  const parts = name ? [...dir, name] : dir;
  return '/' + parts.map((p) => p.toString('utf8')).join('/');
}

function listDir(fd: number, what: string): Buffer[] {
  const names: Buffer[] = [];
  for (;;) {
    const batch = getdents(fd, DIRENT_BUF, what);
    if (batch.length === 0) break;
    for (const d of batch) {
      if (d.name.length === 1 && d.name[0] === 0x2e) continue;
      if (d.name.length === 2 && d.name[0] === 0x2e && d.name[1] === 0x2e) continue;
      names.push(d.name);
    }
  }
  return names;
}

function readXattr(fd: number, name: Buffer, what: string): Buffer | undefined {
  try {
    return getxattr(fd, name, what);
  } catch (e) {
    if (isSysError(e, Errno.ENODATA) || isSysError(e, Errno.EOPNOTSUPP)) return undefined;
    throw e;
  }
}

function typeOf(mode: number): number {
  return mode & S_IFMT;
}

/**
 * Why `meta` cannot be carried: it disagrees with the host object (the rule
 * the server applies too), or it sits on a host special file, which
 * mapped-xattr cannot hold (user.* xattrs live on files and directories only).
 */
function metaFitsHost(meta: GuestMeta, hostType: number): string | undefined {
  if (meta.mode === undefined) return undefined;
  const misfit = metadataMisfit(hostType, meta.mode);
  if (misfit !== undefined) return misfit;
  if (hostType !== S_IFDIR && hostType !== S_IFREG)
    return `metadata on a host ${KIND_BY_TYPE[hostType] ?? 'special file'}, which a mapped model cannot hold`;
  return undefined;
}

function sameMeta(a: GuestMeta, b: GuestMeta): boolean {
  return a.uid === b.uid && a.gid === b.gid && a.mode === b.mode && a.rdev === b.rdev;
}

function isEmptyMeta(m: GuestMeta): boolean {
  return m.uid === undefined && m.gid === undefined && m.mode === undefined && m.rdev === undefined;
}

class Planner {
  readonly steps: Step[] = [];
  readonly problems: Problem[] = [];
  readonly fatal: Problem[] = [];
  readonly mountPoints: string[] = [];
  entries = 0;
  unchanged = 0;
  private readonly seen = new Map<string, { meta: GuestMeta; path: string }>();

  constructor(private readonly o: Required<Pick<ConvertOptions, 'from' | 'to'>> & ConvertOptions) {}

  private problem(path: string, problem: string): void {
    this.problems.push({ path, problem });
  }

  /** Walks the tree from the open root fd. */
  plan(rootFd: number): void {
    const rootSt = fstat(rootFd, 'export root');
    this.entry(rootFd, [], undefined, rootSt, rootSt, undefined);
    const stack: { fd: number; dir: Buffer[]; st: Stat }[] = [{ fd: rootFd, dir: [], st: rootSt }];
    while (stack.length) {
      const { fd, dir, st: dirSt } = stack.pop()!;
      try {
        this.directory(fd, dir, dirSt, rootSt.dev, stack);
      } finally {
        if (fd !== rootFd) close(fd);
      }
    }
  }

  private directory(fd: number, dir: Buffer[], dirSt: Stat, rootDev: bigint, stack: { fd: number; dir: Buffer[]; st: Stat }[]): void {
    const where = show(dir);
    let names: Buffer[];
    try {
      names = listDir(fd, where);
    } catch (e) {
      this.problem(where, `cannot list: ${(e as Error).message}`);
      return;
    }
    const fromFile = this.o.from === 'mapped-file';
    const toFile = this.o.to === 'mapped-file';
    const isMdName = (n: Buffer): boolean => n.equals(METADATA_DIR) || (dir.length === 0 && n.equals(METADATA_ROOT));

    // The metadata directory of a mapped-file source.
    let mdFd: number | undefined;
    let mdBroken: string | undefined;
    if (fromFile && names.some((n) => n.equals(METADATA_DIR))) {
      try {
        const mst = fstatat(fd, METADATA_DIR);
        if (typeOf(mst.mode) !== S_IFDIR)
          mdBroken = `${show(dir, METADATA_DIR)} is a ${KIND_BY_TYPE[typeOf(mst.mode)] ?? 'special file'}, not a directory`;
        else mdFd = openat(fd, METADATA_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      } catch (e) {
        mdBroken = `${show(dir, METADATA_DIR)}: ${(e as Error).message}`;
      }
      if (mdBroken) this.problem(show(dir, METADATA_DIR), `${mdBroken}; metadata of this directory's entries left alone`);
    }
    try {
      for (const name of names) {
        if (isMdName(name)) {
          if (fromFile) continue;
          if (toFile)
            this.fatal.push({
              path: show(dir, name),
              problem: `the name ${name.toString()} is reserved by mapped-file (QEMU would read it as metadata); rename it first`,
            });
          continue;
        }
        let st: Stat;
        try {
          st = fstatat(fd, name);
        } catch (e) {
          this.problem(show(dir, name), `cannot stat: ${(e as Error).message}`);
          continue;
        }
        this.entry(fd, dir, name, st, dirSt, mdBroken ? null : mdFd);
        if (typeOf(st.mode) === S_IFDIR) {
          if (st.dev !== rootDev) {
            this.mountPoints.push(show(dir, name));
            continue;
          }
          try {
            const sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            stack.push({ fd: sub, dir: [...dir, name], st });
          } catch (e) {
            this.problem(show(dir, name), `cannot open directory: ${(e as Error).message}`);
          }
        }
      }
    } finally {
      if (mdFd !== undefined) close(mdFd);
    }
    if (fromFile && mdFd !== undefined) this.steps.push({ cleanup: true, dir, path: show(dir, METADATA_DIR) });
  }

  /**
   * One entry. `md`: the open .virtfs_metadata of its directory (mapped-file
   * source), null when that directory is unusable, undefined when absent.
   */
  private entry(dirFd: number, dir: Buffer[], name: Buffer | undefined, st: Stat, parentSt: Stat, md: number | null | undefined): void {
    this.entries++;
    const path = show(dir, name);
    const hostType = typeOf(st.mode);
    const base: Action = {
      dir,
      name,
      path,
      dev: st.dev,
      ino: st.ino,
      hostType,
      hostUid: st.uid,
      hostGid: st.gid,
      parentUid: parentSt.uid,
      parentGid: parentSt.gid,
      nlink: st.nlink,
      meta: {},
      acls: {},
      removeXattrs: [],
      removeMdFile: false,
      removeRealAcls: [],
    };
    const canHoldXattrs = hostType === S_IFDIR || hostType === S_IFREG;
    let pathFd: number | undefined;
    try {
      if (canHoldXattrs) pathFd = name ? openPath(dirFd, name) : openPath(dirFd, '.');
      switch (this.o.from) {
        case 'mapped-xattr':
          if (!this.fromXattr(base, pathFd)) return;
          break;
        case 'mapped-file':
          if (!this.fromFile(base, dirFd, md, pathFd)) return;
          break;
        default:
          if (!this.fromHost(base, dirFd, st, pathFd)) return;
      }
    } catch (e) {
      this.problem(path, (e as Error).message);
      return;
    } finally {
      if (pathFd !== undefined) close(pathFd);
    }
    if (this.o.fmode !== undefined && (hostType === S_IFREG || base.replace) && (st.mode & 0o777) !== this.o.fmode) base.setMode = this.o.fmode;
    if (this.o.dmode !== undefined && hostType === S_IFDIR && (st.mode & 0o777) !== this.o.dmode) base.setMode = this.o.dmode;
    if (
      isEmptyMeta(base.meta) &&
      !base.acls.access &&
      !base.acls.default &&
      !base.replace &&
      base.setMode === undefined &&
      base.removeXattrs.length === 0 &&
      !base.removeMdFile &&
      base.removeRealAcls.length === 0
    ) {
      this.unchanged++;
      return;
    }
    this.steps.push(base);
  }

  private checkLinks(a: Action): boolean {
    if (a.nlink < 2 || a.hostType === S_IFDIR) return true;
    const key = `${a.dev}:${a.ino}`;
    const first = this.seen.get(key);
    if (!first) {
      this.seen.set(key, { meta: a.meta, path: a.path });
      return true;
    }
    if (!sameMeta(first.meta, a.meta)) {
      this.problem(a.path, `hard link of ${first.path} with different metadata; kept ${first.path}'s, left this one alone`);
      return false;
    }
    return true;
  }

  private fromXattr(a: Action, fd: number | undefined): boolean {
    if (fd === undefined) return this.hostSpecial();
    const raw = {
      uid: readXattr(fd, XATTR_UID, a.path),
      gid: readXattr(fd, XATTR_GID, a.path),
      mode: readXattr(fd, XATTR_MODE, a.path),
      rdev: readXattr(fd, XATTR_RDEV, a.path),
    };
    const bad: string[] = [];
    const meta: GuestMeta = {};
    for (const k of ['uid', 'gid', 'mode'] as const) {
      const v = raw[k];
      if (v === undefined) continue;
      const n = decodeU32(v);
      if (n === undefined) bad.push(`user.virtfs.${k} is ${v.length} bytes, not 4`);
      else meta[k] = n;
    }
    if (raw.rdev !== undefined) {
      const r = decodeRdev(raw.rdev);
      if (r === undefined) bad.push(`user.virtfs.rdev is ${raw.rdev.length} bytes, not 8`);
      else meta.rdev = r;
    }
    if (bad.length) {
      this.problem(a.path, bad.join('; '));
      return false;
    }
    const misfit = metaFitsHost(meta, a.hostType);
    if (misfit) {
      this.problem(a.path, misfit);
      return false;
    }
    a.meta = meta;
    for (const k of ['uid', 'gid', 'mode', 'rdev'] as const)
      if (raw[k] !== undefined) a.removeXattrs.push([XATTR_UID, XATTR_GID, XATTR_MODE, XATTR_RDEV][['uid', 'gid', 'mode', 'rdev'].indexOf(k)]!);
    const acc = readXattr(fd, ACL_ACCESS_HOST, a.path);
    const def = readXattr(fd, ACL_DEFAULT_HOST, a.path);
    if (acc) {
      a.acls.access = acc;
      a.removeXattrs.push(ACL_ACCESS_HOST);
    }
    if (def) {
      a.acls.default = def;
      a.removeXattrs.push(ACL_DEFAULT_HOST);
    }
    return this.checkLinks(a);
  }

  private fromFile(a: Action, dirFd: number, md: number | null | undefined, fd: number | undefined): boolean {
    let text: Buffer | undefined;
    const mdPath = a.name ? show(a.dir, METADATA_DIR) + '/' + a.name.toString() : show([], METADATA_ROOT);
    const holder = a.name ? md : dirFd;
    const mdName = a.name ?? METADATA_ROOT;
    if (holder === null) return false; // its directory's .virtfs_metadata is unusable (reported once)
    if (holder !== undefined) {
      let mst: Stat | undefined;
      try {
        mst = fstatat(holder, mdName);
      } catch (e) {
        if (!isSysError(e, Errno.ENOENT)) throw e;
      }
      if (mst) {
        if (typeOf(mst.mode) !== S_IFREG) {
          this.problem(mdPath, `metadata entry is a ${KIND_BY_TYPE[typeOf(mst.mode)] ?? 'special file'}, not a regular file; left alone`);
          return false;
        }
        if (mst.size > METADATA_MAX_BYTES) {
          this.problem(mdPath, `metadata file is ${mst.size} bytes (QEMU writes under 100); left alone`);
          return false;
        }
        const f = openat(holder, mdName, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
        try {
          const buf = Buffer.alloc(METADATA_MAX_BYTES + 1);
          const n = pread(f, buf, 0, mdPath);
          text = buf.subarray(0, n);
        } finally {
          close(f);
        }
      }
    }
    if (text !== undefined) {
      const parsed = parseMetadata(text);
      if (parsed.problems.length) {
        this.problem(mdPath, parsed.problems.join('; '));
        return false;
      }
      const misfit = metaFitsHost(parsed.meta, a.hostType);
      if (misfit) {
        this.problem(a.path, misfit);
        return false;
      }
      a.meta = parsed.meta;
      a.removeMdFile = true;
    }
    if (fd === undefined) return text === undefined ? this.hostSpecial() : false;
    if (this.hasModelXattrs(a, fd)) return false;
    const acc = readXattr(fd, ACL_ACCESS_GUEST, a.path);
    const def = readXattr(fd, ACL_DEFAULT_GUEST, a.path);
    if (acc) {
      a.acls.access = acc;
      a.removeRealAcls.push(ACL_ACCESS_GUEST);
    }
    if (def) {
      a.acls.default = def;
      a.removeRealAcls.push(ACL_DEFAULT_GUEST);
    }
    return this.checkLinks(a);
  }

  private hasModelXattrs(a: Action, fd: number): boolean {
    for (const n of [XATTR_UID, XATTR_GID, XATTR_MODE, XATTR_RDEV]) {
      if (readXattr(fd, n, a.path) !== undefined) {
        this.problem(a.path, `has ${n.toString()} (mapped-xattr metadata) although the export is said to be ${this.o.from}; left alone`);
        return true;
      }
    }
    return false;
  }

  /** A host symlink/device/fifo/socket in a mapped export: nothing to carry. */
  private hostSpecial(): boolean {
    this.unchanged++;
    return false;
  }

  private fromHost(a: Action, dirFd: number, st: Stat, fd: number | undefined): boolean {
    const meta: GuestMeta = { uid: st.uid, gid: st.gid, mode: st.mode };
    const t = a.hostType;
    if (t === S_IFCHR || t === S_IFBLK || t === S_IFIFO || t === S_IFSOCK) meta.rdev = st.rdev;
    a.meta = meta;
    if (fd !== undefined) {
      if (this.hasModelXattrs(a, fd)) return false;
      if (this.o.to === 'mapped-xattr') {
        const acc = readXattr(fd, ACL_ACCESS_GUEST, a.path);
        const def = readXattr(fd, ACL_DEFAULT_GUEST, a.path);
        if (acc) {
          a.acls.access = acc;
          a.removeRealAcls.push(ACL_ACCESS_GUEST);
        }
        if (def) {
          a.acls.default = def;
          a.removeRealAcls.push(ACL_DEFAULT_GUEST);
        }
      }
    } else {
      if (!a.name) {
        this.problem(a.path, 'the export root is not a directory');
        return false;
      }
      a.replace = {
        content: t === S_IFLNK ? readlinkat(dirFd, a.name) : Buffer.alloc(0),
        atime: st.atime,
        mtime: st.mtime,
      };
    }
    return true;
  }
}

// ---- applying ---------------------------------------------------------------------------------

class Applier {
  private readonly standIns = new Map<string, { dir: Buffer[]; name: Buffer }>();
  private readonly mdFirst = new Map<string, { dir: Buffer[]; name: Buffer }>();
  private tmpSerial = 0;
  converted = 0;
  replaced = 0;
  acls = 0;
  modesSet = 0;
  readonly kinds: Record<Kind, number> = {
    directory: 0,
    regular: 0,
    symlink: 0,
    'char-device': 0,
    'block-device': 0,
    fifo: 0,
    socket: 0,
  };
  readonly changed: string[] = [];

  constructor(
    private readonly rootFd: number,
    private readonly o: ConvertOptions,
    private readonly problems: Problem[],
    private readonly dryRun: boolean,
  ) {}

  /** Runs fn with an fd on the directory at `dir`, walked from the root with O_NOFOLLOW at every step. */
  private inDir<T>(dir: Buffer[], fn: (fd: number) => T): T {
    let fd = this.rootFd;
    try {
      for (const part of dir) {
        const next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (fd !== this.rootFd) close(fd);
        fd = next;
      }
      return fn(fd);
    } finally {
      if (fd !== this.rootFd) close(fd);
    }
  }

  /** Runs fn with the .virtfs_metadata directory of `dirFd` (created 0700, owned like its directory, when asked). */
  private inMdDir<T>(dirFd: number, create: boolean, fn: (fd: number) => T): T {
    if (create) {
      try {
        mkdirat(dirFd, METADATA_DIR, METADATA_DIR_MODE);
        const fd = openat(dirFd, METADATA_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        try {
          const dst = fstat(dirFd, 'directory');
          fchownFd(fd, dst.uid, dst.gid, '.virtfs_metadata');
          fchmodPathFd(fd, METADATA_DIR_MODE, '.virtfs_metadata');
        } finally {
          close(fd);
        }
      } catch (e) {
        if (!isSysError(e, Errno.EEXIST)) throw e;
      }
    }
    const md = openat(dirFd, METADATA_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    try {
      return fn(md);
    } finally {
      close(md);
    }
  }

  private tmpName(): Buffer {
    return Buffer.from(`.duofs-convert.${process.pid}.${++this.tmpSerial}.tmp`);
  }

  run(steps: Step[], maxPaths: number): void {
    for (const s of steps) {
      if ('cleanup' in s) {
        if (!this.dryRun) this.cleanupMd(s);
        continue;
      }
      try {
        if (!this.dryRun) this.apply(s);
        const t = s.meta.mode !== undefined ? typeOf(s.meta.mode) : s.hostType;
        const kind = KIND_BY_TYPE[t];
        if (kind) this.kinds[kind]++;
        this.converted++;
        if (s.replace) this.replaced++;
        if (s.acls.access || s.acls.default) this.acls++;
        if (s.setMode !== undefined) this.modesSet++;
        if (this.changed.length < maxPaths) this.changed.push(s.path);
      } catch (e) {
        this.problems.push({ path: s.path, problem: `not converted: ${(e as Error).message}` });
      }
    }
  }

  private cleanupMd(s: CleanupMdDir): void {
    try {
      this.inDir(s.dir, (fd) => unlinkat(fd, METADATA_DIR, AT_REMOVEDIR));
    } catch (e) {
      if (isSysError(e, Errno.ENOTEMPTY) || isSysError(e, Errno.EEXIST)) {
        this.problems.push({
          path: s.path,
          problem: 'kept: it still holds metadata that was not converted (see the other problems) or files for names that do not exist',
        });
      } else if (!isSysError(e, Errno.ENOENT)) {
        this.problems.push({ path: s.path, problem: `cannot remove: ${(e as Error).message}` });
      }
    }
  }

  private apply(a: Action): void {
    // The entry must still be what was planned (offline, but cheap to check).
    this.inDir(a.dir, (dirFd) => {
      const st = a.name ? fstatat(dirFd, a.name) : fstat(dirFd, a.path);
      if (st.ino !== a.ino || st.dev !== a.dev) throw new SysError(Errno.ESTALE, 'convert', `${a.path} changed during the conversion`);
    });
    if (a.replace && a.name) this.replaceSpecial(a);
    if (this.o.to === 'mapped-xattr') this.writeXattrs(a);
    else this.writeMdFile(a);

    // Source metadata goes only after the target is in place.
    this.inDir(a.dir, (dirFd) => {
      if (a.removeXattrs.length || a.removeRealAcls.length || (a.setMode !== undefined && !a.replace)) {
        const fd = a.name ? openPath(dirFd, a.name) : openPath(dirFd, '.');
        try {
          for (const n of [...a.removeXattrs, ...a.removeRealAcls]) {
            try {
              removexattr(fd, n, a.path);
            } catch (e) {
              if (!isSysError(e, Errno.ENODATA)) throw e;
            }
          }
          if (a.setMode !== undefined && !a.replace) fchmodPathFd(fd, a.setMode, a.path);
        } finally {
          close(fd);
        }
      }
      if (a.removeMdFile) {
        try {
          if (a.name) this.inMdDir(dirFd, false, (md) => unlinkat(md, a.name!, 0));
          else unlinkat(dirFd, METADATA_ROOT, 0);
        } catch (e) {
          if (!isSysError(e, Errno.ENOENT)) throw e;
        }
      }
    });
  }

  /** Writes `content` as `name` in `dir` through a temporary file and a rename. */
  private writeFileAtomic(dir: number, name: Buffer, content: Buffer, mode: number, uid: number, gid: number): void {
    const tmp = this.tmpName();
    const fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
    try {
      let off = 0;
      while (off < content.length) off += pwrite(fd, content.subarray(off), off, 'metadata');
      fchownFd(fd, uid, gid, 'metadata');
      fchmodPathFd(fd, mode, 'metadata');
    } catch (e) {
      close(fd);
      unlinkat(dir, tmp, 0);
      throw e;
    }
    close(fd);
    renameat2(dir, tmp, dir, name, 0);
  }

  private writeMdFile(a: Action): void {
    if (!isEmptyMeta(a.meta)) {
      const key = `${a.dev}:${a.ino}`;
      const linkable = a.nlink > 1 && a.hostType !== S_IFDIR && a.name !== undefined;
      const first = linkable ? this.mdFirst.get(key) : undefined;
      let linked = false;
      if (first) {
        // QEMU keeps the metadata files of hard links hard-linked too (local_link).
        try {
          this.inDir(first.dir, (fdir) =>
            this.inMdDir(fdir, false, (fmd) =>
              this.inDir(a.dir, (d) =>
                this.inMdDir(d, true, (md) => {
                  const tmp = this.tmpName();
                  linkat(fmd, first.name, md, tmp);
                  renameat2(md, tmp, md, a.name!, 0);
                }),
              ),
            ),
          );
          linked = true;
        } catch {
          // fall back to a separate file with the same content
        }
      }
      if (!linked) {
        this.inDir(a.dir, (d) => {
          if (a.name)
            this.inMdDir(d, true, (md) => this.writeFileAtomic(md, a.name!, formatMetadata(a.meta), METADATA_FILE_MODE, a.parentUid, a.parentGid));
          else this.writeFileAtomic(d, METADATA_ROOT, formatMetadata(a.meta), METADATA_FILE_MODE, a.parentUid, a.parentGid);
        });
        if (linkable && !this.mdFirst.has(key)) this.mdFirst.set(key, { dir: a.dir, name: a.name! });
      }
    }
    if (a.acls.access || a.acls.default) {
      this.inDir(a.dir, (d) => {
        const fd = a.name ? openPath(d, a.name) : openPath(d, '.');
        try {
          if (a.acls.access) setxattr(fd, ACL_ACCESS_GUEST, a.acls.access, 0, a.path);
          if (a.acls.default) setxattr(fd, ACL_DEFAULT_GUEST, a.acls.default, 0, a.path);
        } finally {
          close(fd);
        }
      });
    }
  }

  private writeXattrs(a: Action): void {
    this.inDir(a.dir, (dirFd) => {
      const fd = a.name ? openPath(dirFd, a.name) : openPath(dirFd, '.');
      try {
        const m = a.meta;
        if (m.uid !== undefined) setxattr(fd, XATTR_UID, encodeU32(m.uid), 0, a.path);
        if (m.gid !== undefined) setxattr(fd, XATTR_GID, encodeU32(m.gid), 0, a.path);
        if (m.mode !== undefined) setxattr(fd, XATTR_MODE, encodeU32(m.mode), 0, a.path);
        if (m.rdev !== undefined) setxattr(fd, XATTR_RDEV, encodeRdev(m.rdev), 0, a.path);
        if (a.acls.access) setxattr(fd, ACL_ACCESS_HOST, a.acls.access, 0, a.path);
        if (a.acls.default) setxattr(fd, ACL_DEFAULT_HOST, a.acls.default, 0, a.path);
      } finally {
        close(fd);
      }
    });
  }

  /** Import: a host symlink/device/fifo/socket becomes a regular stand-in, as QEMU's mapped models store them. */
  private replaceSpecial(a: Action): void {
    const name = a.name!;
    const r = a.replace!;
    const key = `${a.dev}:${a.ino}`;
    const first = a.nlink > 1 ? this.standIns.get(key) : undefined;
    if (first) {
      // Another name of the same special: link to its stand-in, keeping the link count.
      this.inDir(first.dir, (fdir) =>
        this.inDir(a.dir, (d) => {
          const tmp = this.tmpName();
          linkat(fdir, first.name, d, tmp);
          renameat2(d, tmp, d, name, 0);
        }),
      );
      return;
    }
    const mode = this.o.fmode ?? 0o600;
    this.inDir(a.dir, (dirFd) => {
      const tmp = this.tmpName();
      const fd = openat(dirFd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
      try {
        let off = 0;
        while (off < r.content.length) off += pwrite(fd, r.content.subarray(off), off, a.path);
        fchownFd(fd, a.hostUid, a.hostGid, a.path);
        fchmodPathFd(fd, mode, a.path);
      } catch (e) {
        close(fd);
        unlinkat(dirFd, tmp, 0);
        throw e;
      }
      close(fd);
      utimensat(dirFd, tmp, r.atime, r.mtime);
      renameat2(dirFd, tmp, dirFd, name, 0);
    });
    if (a.nlink > 1) this.standIns.set(key, { dir: a.dir, name });
  }
}

// ---- entry point ------------------------------------------------------------------------------

const SOURCES: readonly ConvertFrom[] = ['mapped-xattr', 'mapped-file', 'passthrough', 'none'];
const TARGETS: readonly string[] = ['mapped-xattr', 'mapped-file'];

/**
 * Rewrites the export's metadata from `from` to `to`. Refuses (ExportInUseError)
 * while the export is in use; refuses (ConvertError) impossible pairs and
 * trees with names the target reserves. Problems with single entries are
 * reported in the summary and those entries left alone.
 */
export async function convertExport(o: ConvertOptions): Promise<ConvertSummary> {
  if (!SOURCES.includes(o.from)) throw new ConvertError(`--from ${o.from}: unknown model (${SOURCES.join(', ')})`);
  if (!TARGETS.includes(o.to)) {
    throw new ConvertError(
      `--to ${o.to}: duofs converts into mapped-xattr or mapped-file only (into passthrough would mean chowning to guest ids and creating real device nodes)`,
    );
  }
  if (o.from === o.to) throw new ConvertError(`--from and --to are both ${o.to}: nothing to convert`);
  for (const [k, v] of [
    ['fmode', o.fmode],
    ['dmode', o.dmode],
  ] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0o777)) throw new ConvertError(`--${k} ${v}: expected permission bits (0 to 0777)`);
  }
  const maxPaths = o.maxPaths ?? 20;
  const dryRun = o.dryRun ?? false;

  let rootFd: number;
  try {
    rootFd = openat(AT_FDCWD, o.dir, O_RDONLY | O_DIRECTORY);
  } catch (e) {
    throw new ConvertError(`${o.dir}: ${(e as Error).message}`);
  }
  let lock;
  try {
    lock = acquireConvertLock(o.dir);
    if (!o.skipProcessScan) {
      const scan = findProcessesUsing(o.dir);
      if (scan.holders.length) {
        const h = scan.holders[0]!;
        const more = scan.holders.length > 1 ? ` (and ${scan.holders.length - 1} more)` : '';
        throw new ExportInUseError(
          `${o.dir}: in use: process ${h.pid} (${h.command}) has ${h.how === 'fd' ? 'open' : `as its ${h.how}`} ${h.target}${more}; stop it first`,
          scan.holders,
        );
      }
    }
  } catch (e) {
    close(rootFd);
    throw e;
  }
  try {
    const planner = new Planner({ ...o, from: o.from, to: o.to });
    planner.plan(rootFd);
    if (planner.fatal.length) {
      const f = planner.fatal[0]!;
      throw new ConvertError(
        `${f.path}: ${f.problem}${planner.fatal.length > 1 ? ` (and ${planner.fatal.length - 1} more)` : ''}; nothing was changed`,
        planner.fatal,
      );
    }
    const applier = new Applier(rootFd, o, planner.problems, dryRun);
    applier.run(planner.steps, maxPaths);
    return {
      dir: o.dir,
      from: o.from,
      to: o.to,
      dryRun,
      entries: planner.entries,
      converted: applier.converted,
      kinds: applier.kinds,
      unchanged: planner.unchanged,
      replaced: applier.replaced,
      acls: applier.acls,
      modesSet: applier.modesSet,
      problemCount: planner.problems.length,
      problems: planner.problems.slice(0, maxPaths),
      changed: applier.changed,
      mountPoints: planner.mountPoints.slice(0, maxPaths),
    };
  } finally {
    lock.release();
    close(rootFd);
  }
}

/** The summary as lines for a terminal. */
export function formatSummary(s: ConvertSummary): string {
  const lines: string[] = [];
  const verb = s.dryRun ? 'would convert' : 'converted';
  lines.push(`${s.dir}: ${s.from} -> ${s.to}${s.dryRun ? ' (dry run: nothing written)' : ''}`);
  lines.push(`  ${s.entries} entries looked at; ${verb} ${s.converted}; ${s.unchanged} had no metadata to carry`);
  const kinds = Object.entries(s.kinds)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  if (kinds) lines.push(`  by guest file type: ${kinds}`);
  if (s.replaced) lines.push(`  ${s.replaced} symlinks/devices/fifos/sockets ${s.dryRun ? 'would become' : 'became'} regular stand-ins`);
  if (s.acls) lines.push(`  ${s.acls} entries with POSIX ACLs moved`);
  if (s.modesSet) lines.push(`  ${s.modesSet} host modes set to fmode/dmode`);
  for (const p of s.changed) lines.push(`  changed: ${p}`);
  if (s.converted > s.changed.length) lines.push(`  ... and ${s.converted - s.changed.length} more`);
  for (const m of s.mountPoints) lines.push(`  not entered (another filesystem is mounted there): ${m}`);
  if (s.problemCount) {
    lines.push(`  ${s.problemCount} problems (those entries were left alone):`);
    for (const p of s.problems) lines.push(`    ${p.path}: ${p.problem}`);
    if (s.problemCount > s.problems.length) lines.push(`    ... and ${s.problemCount - s.problems.length} more`);
  }
  return lines.join('\n') + '\n';
}
