// The sandbox modes, as virtiofsd names them, and how a process learns which
// stage of the sandbox it is (the supervisor sets the environment of the
// confined server; a guest cannot reach the environment).

/**
 * namespace: new mount, pid, ipc and uts namespaces (and net, unless 9P
 * listens on TCP), the export as the root (pivot_root); as a non-root user
 * also a user namespace. chroot: chroot into the export (for containers that
 * made the namespaces already). none: the host's root, as before.
 */
export type SandboxMode = 'namespace' | 'chroot' | 'none';
export const SANDBOX_MODES: readonly SandboxMode[] = ['namespace', 'chroot', 'none'];

/** seccomp as virtiofsd's --seccomp: kill (default), log, trap or none. */
export type SeccompMode = 'kill' | 'log' | 'trap' | 'none';
export const SECCOMP_MODES: readonly SeccompMode[] = ['kill', 'log', 'trap', 'none'];

/** Set by the supervisor in the environment of the server it starts inside the namespaces. */
export const STAGE_ENV = 'DUOFS_SANDBOX_STAGE';
/** The fd (in the server) of the supervisor's channel: one JSON line per event. */
export const CHANNEL_ENV = 'DUOFS_SANDBOX_CHANNEL';
/** The fd (in the server) of a /dev/fuse channel the supervisor mounted for --fuse-mount. */
export const FUSE_FD_ENV = 'DUOFS_SANDBOX_FUSE_FD';
/** The socket-activated listeners (src/systemd/activation.ts) the supervisor hands down, as JSON: LISTEN_PID could not name the server. */
export const LISTEN_ENV = 'DUOFS_SANDBOX_LISTEN';
/** "1" when the supervisor also made a user namespace (it ran as a non-root user). */
export const USERNS_ENV = 'DUOFS_SANDBOX_USERNS';

/** This process is the server the supervisor started inside fresh namespaces. */
export function insideNamespaces(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[STAGE_ENV] === 'namespace';
}

/** This process is a server a supervisor started (in namespaces, or plainly, for --fuse-mount). */
export function supervised(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[STAGE_ENV] === 'namespace' || env[STAGE_ENV] === 'child';
}

/** This process runs in a user namespace the supervisor made: uid 0 here is not the host's root. */
export function inUserNamespace(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[USERNS_ENV] === '1';
}

/** virtiofsd's default: namespace. */
export const DEFAULT_SANDBOX: SandboxMode = 'namespace';
export const DEFAULT_SECCOMP: SeccompMode = 'kill';
