// Entering the sandbox, in the serving process, at the one moment the
// server asks for it (ServeOptions.confine): every listener, device, mount,
// the I/O engine and the log exist; no peer has been served. In order:
//   1. tell the supervisor which socket files are its to remove;
//   2. change the root (namespace: pivot_root; chroot: chroot);
//   3. keep only the capabilities the security model needs, on the main
//      thread and every libuv pool thread (caps.ts says which and why);
//   4. Landlock beneath the export, where the kernel has it (sets
//      NO_NEW_PRIVS);
//   5. the seccomp allow-list, on every thread;
//   6. the test-only escape probe, if the environment asks for it.
// Nothing may be loaded from disk after step 2: every module is imported
// statically before the server starts.
import { preparedLine, type LogFormat, type Logger } from '../log.js';
import type { SecurityModelName } from '../../security/model.js';
import { AT_FDCWD, O_DIRECTORY, O_PATH, close, openat } from '../sys/index.js';
import { changeRoot } from './root.js';
import { exitWithSupervisor, reportToSupervisor } from './supervisor.js';
import { runEscapeProbe } from './escape-probe.js';
import { dropCapabilities, keptCapabilities } from './caps.js';
import { applyLandlock } from './landlock.js';
import { installSeccomp } from './seccomp.js';
import { inUserNamespace, type SandboxMode, type SeccompMode } from './mode.js';

export interface SandboxPlan {
  mode: SandboxMode;
  seccomp: SeccompMode;
  exportPath: string;
  securityModel: SecurityModelName;
  /** --modcaps, virtiofsd's syntax (+cap:-cap) */
  modcaps?: string;
  /** Landlock beneath the export where the kernel has it (default true) */
  landlock?: boolean;
  log: Logger;
  /** trap mode: the log's format, so the SIGSYS handler's line looks like every other (default json) */
  logFormat?: LogFormat;
  /** the name in text lines (default duofs) */
  logTarget?: string;
}

/** Returns whether the root changed (then the socket files' names mean files of the export, no longer ours to unlink). */
export async function confine(plan: SandboxPlan, made: { socketPaths: readonly string[] }): Promise<boolean> {
  const { log } = plan;
  reportToSupervisor({ sockets: made.socketPaths });
  exitWithSupervisor(log);
  // The export root as an fd, before the root changes (Landlock's rule names it).
  const exportFd = openat(AT_FDCWD, plan.exportPath, O_PATH | O_DIRECTORY);
  try {
    const procRoot = changeRoot(plan.mode, plan.exportPath);
    log.info(
      { sandbox: plan.mode, userNamespace: inUserNamespace() || undefined },
      plan.mode === 'none' ? 'sandbox: none (the host root stays visible)' : `sandbox: ${plan.mode}, the export is the root`,
    );
    try {
      const euid = process.geteuid?.() ?? 0;
      // Root can reopen inodes from file handles (src/server.ts), which needs DAC_READ_SEARCH.
      const kept = keptCapabilities({ model: plan.securityModel, euid, fileHandles: euid === 0 && !inUserNamespace(), modcaps: plan.modcaps });
      await dropCapabilities(kept, { log, procFd: procRoot });
    } finally {
      if (procRoot !== undefined) close(procRoot);
    }
    if (plan.landlock !== false && plan.mode !== 'none') await applyLandlock(exportFd, log);
  } finally {
    close(exportFd);
  }
  const trapLine = (name: string, nr: number): string =>
    preparedLine(plan.logFormat, plan.logTarget ?? 'duofs', 60, `seccomp: forbidden system call ${name} (${nr}); ending the process (SIGSYS)`, {
      seccomp: 'trap',
      syscall: name,
      nr,
    });
  installSeccomp(plan.seccomp, { log, trapLine });
  runEscapeProbe(log);
  return plan.mode !== 'none';
}
