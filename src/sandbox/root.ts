// Changing the server's root to the export, from inside the serving process,
// once everything it needs from the host's tree is loaded and open.
//
// namespace: the supervisor started this process in new mount and pid
// namespaces (with a fresh /proc), so every thread of it shares the mount
// namespace and pivot_root moves them all. As virtiofsd: bind the export on
// itself, pivot_root(".", "."), detach the old root stacked underneath.
// chroot: chroot(2) on the fs_struct all threads share.
// Both keep /proc only as an fd: the working directory becomes
// /proc/self/fd (opened first), so reopening fd N through the path "N"
// still works, and nothing else of /proc is reachable by name.
import { realpathSync } from 'node:fs';
import { AT_FDCWD, MNT_DETACH, O_DIRECTORY, O_RDONLY, close, openat } from '../sys/index.js';
import { useProcFdWorkingDirectory } from '../sys/fs.js';
import { MS_BIND, MS_REC, MS_SLAVE, chdir, chroot, fchdir, mountAt, pivotRoot, unmount } from '../sys/root.js';
import type { SandboxMode } from './mode.js';
import { insideNamespaces } from './mode.js';

export class SandboxError extends Error {}

/**
 * namespace, before the server opens anything of the export: binds the
 * export on itself (with everything mounted beneath it), so that the fds the
 * backend opens belong to the mount that becomes "/". Opened on the old
 * tree, they would lose the submounts when pivot_root's old root is
 * detached: a filesystem mounted inside the export would vanish behind them.
 */
export function prepareRoot(mode: SandboxMode, exportPath: string): void {
  if (mode !== 'namespace') return;
  if (!insideNamespaces()) {
    throw new SandboxError(
      '--sandbox namespace: this process was not started inside new namespaces (the supervisor does that; run duofs through its bin)',
    );
  }
  let real: string;
  try {
    real = realpathSync(exportPath);
  } catch {
    return; // the server's own start-up check says the export does not exist
  }
  // Nothing mounted here may reach the host's namespace, nor the reverse.
  mountAt(null, '/', null, MS_REC | MS_SLAVE);
  mountAt(real, real, null, MS_BIND | MS_REC);
}

/**
 * Makes `exportPath` this process's "/" (namespace, chroot); none does
 * nothing. Returns an fd on the procfs root for the capability report that
 * follows (the caller closes it), or undefined with none.
 */
export function changeRoot(mode: SandboxMode, exportPath: string): number | undefined {
  if (mode === 'none') return undefined;
  if (mode === 'namespace' && !insideNamespaces()) {
    throw new SandboxError(
      '--sandbox namespace: this process was not started inside new namespaces (the supervisor does that; run duofs through its bin)',
    );
  }
  const procFd = openat(AT_FDCWD, '/proc/self/fd', O_RDONLY | O_DIRECTORY);
  const procRoot = openat(AT_FDCWD, '/proc', O_RDONLY | O_DIRECTORY);
  if (mode === 'namespace') {
    // prepareRoot made the export a mount of its own.
    chdir(exportPath);
    pivotRoot('.', '.');
    unmount('.', MNT_DETACH);
  } else {
    chroot(exportPath);
  }
  chdir('/');
  fchdir(procFd, '/proc/self/fd');
  close(procFd); // the working directory holds it now
  useProcFdWorkingDirectory();
  return procRoot;
}
