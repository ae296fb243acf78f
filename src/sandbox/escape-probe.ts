// A test hook that plays a guest which has taken over the server: once the
// sandbox is up, the server itself tries what such a guest would. Only the
// environment can turn it on (DUOFS_TEST_ESCAPE=attempt,...), which no
// guest reaches. Each attempt logs one line, {escapeAttempt, result}, where
// result is "succeeded" or the errno; one the seccomp filter forbids ends
// the process instead (the supervisor says so).
import { writeSync } from 'node:fs';
import { AT_FDCWD, O_APPEND, O_RDONLY, O_WRONLY, SysError, close, openat } from '../sys/index.js';
import { execve, initModule, mountTmpfs, ptraceAttach, rawSocket, setFileCapability } from '../sys/forbidden.js';
import { Errno } from '../sys/errno.js';
import type { Logger } from '../log.js';

export const ESCAPE_ENV = 'DUOFS_TEST_ESCAPE';
/** a file outside the export: read, appended to, given a file capability */
export const ESCAPE_OUTSIDE_ENV = 'DUOFS_TEST_ESCAPE_OUTSIDE';
/** a host process to ptrace */
export const ESCAPE_PID_ENV = 'DUOFS_TEST_ESCAPE_PID';
/** a directory outside the export to mount a tmpfs on */
export const ESCAPE_MOUNT_ENV = 'DUOFS_TEST_ESCAPE_MOUNT';

export const ESCAPE_ATTEMPTS = [
  'read-shadow',
  'write-outside',
  'ptrace',
  'mount',
  'init-module',
  'exec-shell',
  'raw-socket',
  'file-capability',
] as const;
export type EscapeAttempt = (typeof ESCAPE_ATTEMPTS)[number];

const errnoName = (neg: number): string => {
  if (neg === 0) return 'succeeded';
  const name = Object.entries(Errno).find(([, n]) => n === -neg)?.[0];
  return name ?? `errno ${-neg}`;
};

function tryOpen(path: string, flags: number, data?: string): number {
  try {
    const fd = openat(AT_FDCWD, path, flags);
    if (data !== undefined) {
      writeSync(fd, data);
    }
    close(fd);
    return 0;
  } catch (e) {
    return e instanceof SysError ? -e.errno : -Errno.EIO;
  }
}

function attempt(a: EscapeAttempt, env: NodeJS.ProcessEnv): number {
  const outside = env[ESCAPE_OUTSIDE_ENV] ?? '/etc/hostname';
  switch (a) {
    case 'read-shadow':
      return tryOpen('/etc/shadow', O_RDONLY);
    case 'write-outside':
      return tryOpen(outside, O_WRONLY | O_APPEND, 'escaped\n');
    case 'ptrace':
      return ptraceAttach(Number(env[ESCAPE_PID_ENV] ?? 1));
    case 'mount':
      return mountTmpfs(env[ESCAPE_MOUNT_ENV] ?? '/mnt');
    case 'init-module':
      return initModule();
    case 'exec-shell':
      return execve('/bin/sh', ['sh', '-c', `echo escaped >> '${outside}'; exit 97`]);
    case 'raw-socket':
      return rawSocket();
    case 'file-capability':
      return setFileCapability(outside);
  }
}

/** Runs the attempts DUOFS_TEST_ESCAPE names (nothing when it is unset). */
export function runEscapeProbe(log: Logger, env: NodeJS.ProcessEnv = process.env): void {
  const asked = env[ESCAPE_ENV];
  if (!asked) return;
  for (const a of asked.split(',')) {
    if (!(ESCAPE_ATTEMPTS as readonly string[]).includes(a)) {
      log.error({ escapeAttempt: a }, 'escape probe: unknown attempt');
      continue;
    }
    log.warn({ escapeAttempt: a }, 'escape probe: trying');
    const r = attempt(a as EscapeAttempt, env);
    log.warn({ escapeAttempt: a, result: errnoName(r) }, `escape probe: ${a} ${r === 0 ? 'SUCCEEDED' : 'failed'}`);
  }
}
