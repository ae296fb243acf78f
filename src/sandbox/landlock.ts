// Landlock as a third wall (after the namespaces/pivot_root and seccomp):
// the serving process may touch the filesystem only beneath the export.
//
// The ruleset handles every filesystem right the kernel's ABI knows and
// allows all of them beneath the export's fd except EXECUTE (duofs never
// executes anything; a planted binary cannot be run even with --seccomp
// none). Nothing else is allowed: an open(2) of any other path fails with
// EACCES, a rename or link out of the export with EXDEV, and mount, umount
// and pivot_root with EPERM. Already-open fds (sockets, /dev/fuse, logs,
// the lock file) keep working: Landlock checks at open time.
//
// What Landlock does not cover (the other walls do): O_PATH opens, stat,
// readlink, chmod, chown, utimes and xattrs by path. /proc/self/fd/N
// reopens are checked against the file they lead to, so reopening an
// export file that way works, and anything else under /proc (task status,
// mountinfo) becomes unreadable: read what you need first.
//
// landlock_restrict_self() restricts the calling thread only until ABI 8
// (LANDLOCK_RESTRICT_SELF_TSYNC); with an older kernel the call runs on
// every libuv pool thread (every-thread.ts) and then on the main thread.
import type { Logger } from '../log.js';
import { close } from '../sys/fs.js';
import { fstat } from '../sys/stat.js';
import { S_IFDIR, S_IFMT } from '../sys/constants.js';
import { errnoName } from '../sys/errno.js';
import { setNoNewPrivs, setNoNewPrivsOnPool } from '../sys/caps.js';
import {
  FILE_ACCESS,
  FS_ACCESS,
  LANDLOCK_RESTRICT_SELF_TSYNC,
  addPathBeneath,
  createRuleset,
  fsAccessForAbi,
  fsAccessNames,
  landlockAbi,
  restrictSelf,
  restrictSelfOnPool,
} from '../sys/landlock.js';
import { threadPoolSize } from '../io/select.js';
import { onEveryPoolThread } from './every-thread.js';

export interface LandlockReport {
  /** the kernel's Landlock ABI (0: none) */
  abi: number;
  applied: boolean;
  /** the rights the ruleset handles (denied outside the export) */
  handled: string[];
  /** the rights allowed beneath the export */
  allowed: string[];
  /** how the threads were covered: 'tsync' (ABI 8), 'per-thread' (main + libuv pool), or undefined when not applied */
  threads?: 'tsync' | 'per-thread';
  /** per-thread mode: pool threads restricted, and whether all were reached */
  pool?: { threads: number; complete: boolean; reason?: string };
  /** why it was not applied */
  reason?: string;
}

export interface LandlockOptions {
  /** threads in libuv's pool; default threadPoolSize() */
  poolSize?: number;
  /** how long to wait for busy pool threads (default 2000 ms) */
  timeoutMs?: number;
}

/**
 * Restricts the serving process to the export behind `exportFd` (an O_PATH
 * fd will do). Sets no_new_privs (which Landlock requires). Without Landlock
 * in the kernel it returns {applied: false} and changes nothing.
 */
export async function applyLandlock(exportFd: number, log?: Logger, o: LandlockOptions = {}): Promise<LandlockReport> {
  const abi = landlockAbi();
  if (abi === 0) {
    const reason = 'the kernel has no Landlock (not built, or not in lsm=)';
    log?.info({ abi }, `landlock: not applied: ${reason}`);
    return { abi, applied: false, handled: [], allowed: [], reason };
  }
  const handled = fsAccessForAbi(abi);
  let allowed = handled & ~FS_ACCESS.execute.bit;
  if ((fstat(exportFd, 'export').mode & S_IFMT) !== S_IFDIR) {
    // A single-file export: directory rights cannot be granted on it.
    let fileRights = 0n;
    for (const r of FILE_ACCESS) fileRights |= FS_ACCESS[r].bit;
    allowed &= fileRights;
  }
  const rs = createRuleset(handled);
  const report: LandlockReport = { abi, applied: false, handled: fsAccessNames(handled), allowed: fsAccessNames(allowed) };
  try {
    addPathBeneath(rs, exportFd, allowed);
    if (abi >= 8) {
      setNoNewPrivs();
      restrictSelf(rs, LANDLOCK_RESTRICT_SELF_TSYNC);
      report.threads = 'tsync';
    } else {
      // Pool threads first: the main thread still reads /proc to corner them.
      const run = await onEveryPoolThread(
        [
          { what: 'PR_SET_NO_NEW_PRIVS', run: (d) => setNoNewPrivsOnPool(d) },
          { what: 'landlock_restrict_self', run: (d) => restrictSelfOnPool(rs, d) },
        ],
        { poolSize: o.poolSize ?? threadPoolSize(), ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) },
      );
      setNoNewPrivs();
      restrictSelf(rs);
      report.threads = 'per-thread';
      const f = run.failures[0];
      report.pool = {
        threads: run.tids.length,
        complete: run.complete && !f,
        ...(run.reason || f ? { reason: run.reason ?? `${f!.what} failed on pool thread ${f!.tid}: ${errnoName(f!.errno)}` } : {}),
      };
    }
    report.applied = true;
  } finally {
    close(rs);
  }
  if (log) {
    const fields = { abi, handled: report.handled, allowed: report.allowed, threads: report.threads, pool: report.pool };
    if (report.pool && !report.pool.complete) log.error(fields, `landlock: not every pool thread restricted: ${report.pool.reason}`);
    else
      log.info(
        fields,
        `landlock: ABI ${abi}, filesystem access limited to the export` +
          (report.threads === 'per-thread'
            ? ` (main thread and ${report.pool!.threads} pool threads; V8's platform threads are out of reach before ABI 8)`
            : ''),
      );
  }
  return report;
}
