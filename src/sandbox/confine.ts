// Entering the sandbox, in the serving process, at the one moment the
// server asks for it (ServeOptions.confine): every listener, device, mount,
// the I/O engine and the log exist; no peer has been served. In order:
//   1. tell the supervisor which socket files are its to remove;
//   2. change the root (namespace: pivot_root; chroot: chroot);
//   3. keep only the capabilities the server needs (NO_NEW_PRIVS first);
//   4. Landlock, where the kernel has it;
//   5. the seccomp allow-list, on every thread;
//   6. the test-only escape probe, if the environment asks for it.
// Nothing may be loaded from disk after step 2: every module is imported
// statically before the server starts.
import type { Logger } from '../log.js';
import { changeRoot } from './root.js';
import { exitWithSupervisor, reportToSupervisor } from './supervisor.js';
import { runEscapeProbe } from './escape-probe.js';
import { inUserNamespace, type SandboxMode, type SeccompMode } from './mode.js';

export interface SandboxPlan {
  mode: SandboxMode;
  seccomp: SeccompMode;
  exportPath: string;
  log: Logger;
}

export function confine(plan: SandboxPlan, made: { socketPaths: readonly string[] }): void {
  const { log } = plan;
  reportToSupervisor({ sockets: made.socketPaths });
  exitWithSupervisor(log);
  changeRoot(plan.mode, plan.exportPath);
  log.info({ sandbox: plan.mode, seccomp: plan.seccomp, userNamespace: inUserNamespace() || undefined },
    plan.mode === 'none' ? 'sandbox: none (the host root stays visible)' : `sandbox: ${plan.mode}, the export is the root`);
  runEscapeProbe(log);
}
