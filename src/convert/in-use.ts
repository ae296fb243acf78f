// When is an export "in use", so that `duofs convert` must not rewrite it?
//
// 1. A duofs server serves it. Every duofs server holds the *serve lock* from
//    start to exit: an open-file-description (OFD) read lock on one byte at
//    offset SERVE_LOCK_OFFSET (2^62) of the export root directory, taken on
//    its own O_RDONLY|O_DIRECTORY fd of the root. Read locks do not conflict,
//    so any number of servers (duofs-9p, duofs-virtiofsd) share an export.
//    `duofs convert` holds the *convert lock*: a read lock on the byte at
//    CONVERT_LOCK_OFFSET (2^62 + 1024). Each side takes its own lock first
//    and then asks (F_OFD_GETLK for a write lock) whether the other side's
//    byte is held; since both take before they look, at least one of two
//    racing processes sees the other and backs off. Two converts see each
//    other the same way. The locks live on the root directory itself, so
//    nothing is created in the export and nothing outside it is needed; they
//    sit far beyond any offset a guest would lock, and the kernel drops them
//    when the process dies, so there is no stale lock to clean up.
// 2. Any other process has the export root or anything beneath it open (an
//    fd), as its working directory, or as its root directory. This catches
//    QEMU's -fsdev local (it keeps an fd on the export root for its
//    lifetime), virtiofsd (its root is the export in its sandbox; it holds
//    fds), diod, and a shell or editor inside the tree. Only processes whose
//    /proc entries we may read are checked (all of them as root); memory
//    mappings of files whose fd was closed are not seen.
import { readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { AT_FDCWD, O_DIRECTORY, O_RDONLY, F_RDLCK, F_UNLCK, F_WRLCK } from '../sys/constants.js';
import { close, openat } from '../sys/fs.js';
import { ofdGetLock, ofdSetLock } from '../sys/locks.js';
import { fstat } from '../sys/stat.js';

/** The byte every duofs server read-locks on the export root. */
export const SERVE_LOCK_OFFSET = 2 ** 62;
/** The byte `duofs convert` read-locks on the export root. */
export const CONVERT_LOCK_OFFSET = 2 ** 62 + 1024;

export interface ExportLock {
  /** the O_RDONLY|O_DIRECTORY fd on the export root that carries the lock */
  readonly fd: number;
  /** Drops the lock (closing the fd); idempotent. */
  release(): void;
}

export interface InUseHolder {
  pid: number;
  command: string;
  how: 'fd' | 'cwd' | 'root';
  /** what the process has open, as /proc shows it */
  target: string;
}

export class ExportInUseError extends Error {
  override name = 'ExportInUseError';
  constructor(
    message: string,
    readonly holders: InUseHolder[] = [],
  ) {
    super(message);
  }
}

function lockByte(exportDir: string, mine: number, theirs: number, what: string, theirWhat: string): ExportLock {
  const fd = openat(AT_FDCWD, exportDir, O_RDONLY | O_DIRECTORY);
  let released = false;
  const lock: ExportLock = {
    fd,
    release: () => {
      if (released) return;
      released = true;
      close(fd);
    },
  };
  try {
    if (!ofdSetLock(fd, { type: F_RDLCK, start: mine, len: 1 }, what)) {
      // Only a write lock conflicts with a read lock; nobody takes one here.
      throw new ExportInUseError(`${exportDir}: cannot take the ${what} lock (an unexpected write lock is held on the export root)`);
    }
    const other = ofdGetLock(fd, { type: F_WRLCK, start: theirs, len: 1 }, what);
    if (other.type !== F_UNLCK) {
      throw new ExportInUseError(`${exportDir}: ${theirWhat}`);
    }
    return lock;
  } catch (e) {
    lock.release();
    throw e;
  }
}

/**
 * The server side: take this once per export before serving it, keep the
 * returned lock until exit (or release it at close). Throws
 * ExportInUseError while `duofs convert` is rewriting the export.
 */
export function acquireServeLock(exportDir: string): ExportLock {
  return lockByte(
    exportDir,
    SERVE_LOCK_OFFSET,
    CONVERT_LOCK_OFFSET,
    'serve',
    '`duofs convert` is rewriting this export; serve it when the conversion has finished',
  );
}

/**
 * The convert side: takes the convert lock, then refuses when a duofs server
 * or another convert holds the export.
 */
export function acquireConvertLock(exportDir: string): ExportLock {
  const lock = lockByte(exportDir, CONVERT_LOCK_OFFSET, SERVE_LOCK_OFFSET, 'convert', 'in use: a duofs server is serving this export; stop it first');
  try {
    const other = ofdGetLock(lock.fd, { type: F_WRLCK, start: CONVERT_LOCK_OFFSET, len: 1 }, 'convert');
    if (other.type !== F_UNLCK) throw new ExportInUseError(`${exportDir}: another \`duofs convert\` is rewriting this export`);
  } catch (e) {
    lock.release();
    throw e;
  }
  return lock;
}

/** Whether a duofs server holds the serve lock (a probe; takes nothing). */
export function serveLockHeld(exportDir: string): boolean {
  const fd = openat(AT_FDCWD, exportDir, O_RDONLY | O_DIRECTORY);
  try {
    return ofdGetLock(fd, { type: F_WRLCK, start: SERVE_LOCK_OFFSET, len: 1 }, 'serve').type !== F_UNLCK;
  } finally {
    close(fd);
  }
}

export interface ProcScan {
  holders: InUseHolder[];
  /** processes whose fds we could not read (not root) */
  uninspectable: number;
}

/**
 * Processes (other than this one) that have the export root or anything
 * beneath it open, as cwd, or as root.
 */
export function findProcessesUsing(exportDir: string): ProcScan {
  const real = realpathSync(exportDir);
  const rootFd = openat(AT_FDCWD, real, O_RDONLY | O_DIRECTORY);
  let rootId: { dev: bigint; ino: bigint };
  try {
    const st = fstat(rootFd, real);
    rootId = { dev: st.dev, ino: st.ino };
  } finally {
    close(rootFd);
  }
  const prefix = real === '/' ? '/' : real + '/';
  const inside = (p: string): boolean => p === real || p.startsWith(prefix);
  const isRoot = (p: string): boolean => {
    try {
      const st = statSync(p, { bigint: true });
      // libuv fills st_dev with glibc's makedev(), the encoding sys/stat uses too.
      return st.ino === rootId.ino && st.dev === rootId.dev;
    } catch {
      return false;
    }
  };
  const holders: InUseHolder[] = [];
  let uninspectable = 0;
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    if (pid === process.pid) continue;
    let command = '?';
    try {
      command = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      continue; // gone
    }
    const found: InUseHolder[] = [];
    for (const how of ['cwd', 'root'] as const) {
      try {
        const t = readlinkSync(`/proc/${pid}/${how}`);
        // A process in its own mount namespace (virtiofsd's sandbox) shows paths relative to its root.
        if ((how === 'root' && t !== '/' && inside(t)) || (how === 'cwd' && inside(t)) || isRoot(`/proc/${pid}/${how}`)) {
          found.push({ pid, command, how, target: t });
        }
      } catch {
        // not ours to read
      }
    }
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      uninspectable++;
      continue;
    }
    for (const fd of fds) {
      let t: string;
      try {
        t = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!t.startsWith('/')) continue; // socket:[..], pipe:[..], anon_inode:...
      const target = t.endsWith(' (deleted)') ? t.slice(0, -10) : t;
      if (inside(target) || isRoot(`/proc/${pid}/fd/${fd}`)) found.push({ pid, command, how: 'fd', target: t });
    }
    holders.push(...found);
  }
  return { holders, uninspectable };
}
