// The capabilities a serving process keeps, and the drop itself.
//
// What duofs does as root after start-up, and what each needs:
//   passthrough  requests run with the caller's fsuid/fsgid/groups
//                (SETUID, SETGID), create and chown for them (CHOWN, MKNOD),
//                keep setuid bits on the daemon's writes and chmods (FSETID),
//                act as the owner for a guest root (FOWNER: chmod, utimes,
//                O_NOATIME, ACLs), bypass permissions for a guest root
//                (DAC_OVERRIDE), set security.capability (SETFCAP); as
//                virtiofsd keeps. Plus DAC_READ_SEARCH for open_by_handle_at
//                (inode-table.ts reopens evicted inodes from file handles).
//   none         the daemon's own ids (no SETUID/SETGID); otherwise as
//                passthrough: it chowns new files to their creator.
//   mapped-*     the daemon owns every host file and keeps the guest's view
//                in metadata: never chowns, never makes a device, never sets
//                a file capability (a guest's security.capability must not
//                become a real one on the host). It still reads, writes and
//                sets user.virtfs.* on files other host users own, and walks
//                their 0700 directories: DAC_OVERRIDE, FOWNER (utimes and
//                xattrs on files it does not own), DAC_READ_SEARCH (handles).
//   not root     nothing: a non-root daemon has no capabilities to keep
//                (virtiofsd leaves them alone; duofs clears them anyway).
// Not kept, and why that is right: SYS_ADMIN (trusted.* and security.*
// xattrs other than security.capability, mount/umount: a FUSE umount at
// close must be done outside the sandbox), SYS_RESOURCE (the rlimit is
// raised before the drop), SETPCAP (the bounding set is final), everything
// else. --modcaps adds or removes on top (src/sandbox/modcaps.ts).
//
// The drop (virtiofsd: capng_apply(CAPNG_SELECT_BOTH)): the bounding set
// down to the kept set first (PR_CAPBSET_DROP needs CAP_SETPCAP, which the
// capset then removes), the ambient set cleared, then permitted and
// effective set to the kept set and inheritable emptied (as capng_clear +
// updatev(PERMITTED|EFFECTIVE) leaves it). Capabilities are per thread: the
// same calls run on the main thread and, through every-thread.ts, on every
// libuv pool thread. Threads created afterwards inherit from their creator.
import type { Logger } from '../log.js';
import type { SecurityModelName } from '../../security/model.js';
import {
  CAP_NAMES,
  ambientClearAll,
  capMask,
  capNames,
  capbsetDrop,
  capbsetDropOnPool,
  capbsetRead,
  capget,
  capset,
  capsetCall,
  capsetOnPool,
  lastCap,
  type CapName,
} from '../sys/caps.js';
import { gettid, listTasks, type TaskStatus } from '../sys/tasks.js';
import { errnoName } from '../sys/errno.js';
import { threadPoolSize } from '../io/select.js';
import { onEveryPoolThread, type PoolStep } from './every-thread.js';
import { applyModcaps, ModcapsError } from './modcaps.js';

/** virtiofsd's default set (drop_capabilities in its main.rs), before DAC_READ_SEARCH. */
export const VIRTIOFSD_CAPS: readonly CapName[] = ['chown', 'dac_override', 'fowner', 'fsetid', 'setgid', 'setuid', 'mknod', 'setfcap'];

/** The set a security model needs as root (see the top of this file). */
export function modelCaps(model: SecurityModelName, fileHandles = true): CapName[] {
  let caps: CapName[];
  if (model === 'passthrough') caps = [...VIRTIOFSD_CAPS];
  else if (model === 'none') caps = VIRTIOFSD_CAPS.filter((c) => c !== 'setuid' && c !== 'setgid');
  else caps = ['dac_override', 'fowner'];
  if (fileHandles) caps.push('dac_read_search');
  return CAP_NAMES.filter((c) => caps.includes(c));
}

export interface KeptOptions {
  model: SecurityModelName;
  /** the daemon's effective uid (0 in its user namespace counts as root) */
  euid: number;
  /** inodes may be reopened from file handles (the inode fd budget is on): DAC_READ_SEARCH is needed */
  fileHandles?: boolean;
  /** the --modcaps value, if given */
  modcaps?: string;
}

/**
 * The capabilities the serving process keeps. Throws ModcapsError for a bad
 * --modcaps, and for -dac_read_search while file handles are in use (as
 * virtiofsd refuses it with --inode-file-handles).
 */
export function keptCapabilities(o: KeptOptions): CapName[] {
  const fileHandles = o.fileHandles ?? true;
  const { kept, disabled } = applyModcaps(o.euid === 0 ? modelCaps(o.model, false) : [], o.modcaps);
  if (o.euid !== 0) return []; // --modcaps is still checked, but a non-root daemon keeps nothing
  if (fileHandles) {
    if (disabled.includes('dac_read_search')) {
      throw new ModcapsError("can't disable DAC_READ_SEARCH: duofs reopens inodes from file handles (open_by_handle_at needs it)");
    }
    if (!kept.includes('dac_read_search')) kept.push('dac_read_search');
  }
  return CAP_NAMES.filter((c) => kept.includes(c));
}

export interface ThreadCaps {
  tid: number;
  comm: string;
  /** main: the JS thread; pool: a libuv pool thread we reached; other: V8's platform workers and the like */
  role: 'main' | 'pool' | 'other';
  capEff: string;
  capPrm: string;
  capBnd: string;
  /** permitted capabilities beyond the kept set */
  extra: string[];
}

export interface CapsReport {
  /** what the process keeps (the wanted set, less what it never had) */
  kept: string[];
  /** wanted but not held when the drop began (so not kept) */
  missing: string[];
  /** the bounding set was reduced (needs CAP_SETPCAP) */
  bounding: boolean;
  pool: { threads: number; complete: boolean; reason?: string };
  /** every thread as /proc shows it after the drop (empty if /proc could not be read) */
  threads: ThreadCaps[];
}

export interface DropOptions {
  log?: Logger;
  /** threads in libuv's pool; default threadPoolSize() */
  poolSize?: number;
  /** an fd on a procfs root, where /proc is not reachable by name (after pivot_root) */
  procFd?: number;
  /** how long to wait for busy pool threads (default 2000 ms) */
  timeoutMs?: number;
}

const hex = (m: bigint): string => m.toString(16).padStart(16, '0');

function dropOnThisThread(
  keep: bigint,
  toDrop: readonly number[],
  bounding: boolean,
  call = capsetCall({ effective: keep, permitted: keep, inheritable: 0n }),
): void {
  if (bounding) for (const i of toDrop) if (capbsetRead(i)) capbsetDrop(i);
  ambientClearAll();
  capset(call);
}

/**
 * The same drop on the calling thread only, for a JS thread of our own that
 * exists before the drop (a worker_threads Worker: it shares libuv's pool,
 * which dropCapabilities covers, but not its own thread). Returns what it kept.
 */
export function dropCapabilitiesOfThisThread(kept: readonly CapName[]): string[] {
  const before = capget();
  const keep = capMask(kept) & before.permitted;
  const toDrop: number[] = [];
  for (let i = 0; i <= lastCap(); i++) if (!((keep >> BigInt(i)) & 1n)) toDrop.push(i);
  dropOnThisThread(keep, toDrop, ((before.effective >> 8n) & 1n) === 1n);
  return capNames(keep);
}

/** Drops every capability but `kept`, on the main thread and every libuv pool thread; then reports each thread. */
export async function dropCapabilities(kept: readonly CapName[], o: DropOptions = {}): Promise<CapsReport> {
  const want = capMask(kept);
  const before = capget();
  const keep = want & before.permitted;
  const bounding = ((before.effective >> 8n) & 1n) === 1n; // CAP_SETPCAP
  const last = lastCap();
  const toDrop: number[] = [];
  for (let i = 0; i <= last; i++) if (!((keep >> BigInt(i)) & 1n)) toDrop.push(i);
  const call = capsetCall({ effective: keep, permitted: keep, inheritable: 0n });

  // Every pool thread first: the same calls as below (capset with an empty
  // inheritable set clears the ambient set). If the pool has not started
  // yet, our jobs start it, and its threads are born with the main thread's
  // capabilities, CAP_SETPCAP included, which the bounding drops need.
  const steps: PoolStep[] = [];
  if (bounding) for (const i of toDrop) steps.push({ what: `PR_CAPBSET_DROP ${CAP_NAMES[i] ?? i}`, run: (d) => capbsetDropOnPool(i, d) });
  steps.push({ what: 'capset', run: (d) => capsetOnPool(call, d) });
  const run = await onEveryPoolThread(steps, { poolSize: o.poolSize ?? threadPoolSize(), ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) });

  // Then the main thread.
  dropOnThisThread(keep, toDrop, bounding, call);

  const report: CapsReport = {
    kept: capNames(keep),
    missing: capNames(want & ~before.permitted),
    bounding,
    pool: { threads: run.tids.length, complete: run.complete && run.failures.length === 0, ...(run.reason ? { reason: run.reason } : {}) },
    threads: [],
  };
  if (run.failures.length) {
    const f = run.failures[0]!;
    report.pool.reason ??=
      `${f.what} failed on pool thread ${f.tid}: ${errnoName(f.errno)}` + (run.failures.length > 1 ? ` (and ${run.failures.length - 1} more)` : '');
  }
  let tasks: TaskStatus[] = [];
  try {
    tasks = listTasks('self', o.procFd);
  } catch (e) {
    o.log?.warn({ err: (e as Error).message }, 'capabilities: /proc unreadable, threads not verified');
  }
  const main = gettid();
  const pool = new Set(run.tids);
  report.threads = tasks.map((t) => ({
    tid: t.tid,
    comm: t.comm,
    role: t.tid === main ? 'main' : pool.has(t.tid) ? 'pool' : 'other',
    capEff: hex(t.capEff),
    capPrm: hex(t.capPrm),
    capBnd: hex(t.capBnd),
    extra: capNames(t.capPrm & ~keep),
  }));
  for (const t of tasks) {
    if (t.tid !== main && !pool.has(t.tid)) continue;
    const extra = (t.capPrm | t.capEff | t.capInh | t.capAmb | (bounding ? t.capBnd : 0n)) & ~keep;
    if (extra) {
      report.pool.complete = false;
      report.pool.reason ??= `thread ${t.tid} (${t.tid === main ? 'main' : 'pool'}) still holds ${capNames(extra).join(',')}`;
    }
  }
  if (o.log) {
    const others = report.threads.filter((t) => t.role === 'other' && t.extra.length);
    const fields = { kept: report.kept.join(','), poolThreads: report.pool.threads, outOfReach: others.map((t) => t.tid).join(',') || undefined };
    o.log.debug({ threads: report.threads }, 'capabilities of every thread');
    if (report.missing.length) o.log.warn({ missing: report.missing }, `capabilities wanted but never held: ${report.missing.join(',')}`);
    if (!report.pool.complete) o.log.error(fields, `capabilities not dropped everywhere: ${report.pool.reason}`);
    else {
      o.log.info(
        fields,
        `capabilities: kept ${report.kept.join(',') || 'none'} on the main thread and ${report.pool.threads} pool threads` +
          (others.length ? `; ${others.length} threads out of reach (V8 platform workers) keep theirs` : ''),
      );
    }
  }
  return report;
}
