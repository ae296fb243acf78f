// Per-thread filesystem credentials. setfsuid/setfsgid only ever affect the
// calling thread; setgroups goes through the raw syscall because glibc's
// wrapper would broadcast it to every thread of the process.
import { c, setgroupsRaw, errno } from './libc.js';
import { SysError } from './errno.js';

export interface Credentials {
  uid: number;
  gid: number;
  groups: readonly number[];
  /**
   * The client's kernel has checked this caller's permissions already (9P
   * with --9p-permissions guest, as under QEMU): the backend runs the host
   * calls with the daemon's own credentials, not these.
   */
  clientChecked?: boolean;
}

// What the process starts with, so a request whose ids equal the daemon's
// (every request of a root attach, typically) costs no syscall at all.
let current: Credentials = { uid: c.geteuid(), gid: c.getegid(), groups: process.getgroups?.() ?? [] };
let groupsKey = current.groups.join(',');
const keys = new WeakMap<readonly number[], string>();

function keyOf(groups: readonly number[]): string {
  let k = keys.get(groups);
  if (k === undefined) {
    k = groups.join(',');
    keys.set(groups, k);
  }
  return k;
}

function setGroups(groups: readonly number[]): void {
  const key = keyOf(groups);
  if (key === groupsKey) return;
  const b = Buffer.alloc(Math.max(4, groups.length * 4));
  groups.forEach((g, i) => b.writeUInt32LE(g >>> 0, i * 4));
  if (setgroupsRaw(groups.length, b) < 0) throw new SysError(errno(), 'setgroups', key);
  groupsKey = key;
}

const own = { ...current, key: groupsKey };

/**
 * Whether host calls as `cr` are host calls as the process itself, so any
 * thread may make them (libuv's pool threads keep the process's ids; only
 * the calling thread's fs ids are ever switched).
 */
export function asProcess(cr: Credentials | undefined): boolean {
  return cr === undefined || (cr.uid === own.uid && cr.gid === own.gid && keyOf(cr.groups) === own.key);
}

/** Switches this thread's fs credentials; a no-op when they are unchanged. */
export function switchCredentials(cr: Credentials): void {
  if (cr === current) return;
  // Same ids under another object: nothing to tell the kernel (the common
  // case: every request of a root attach).
  if (cr.uid === current.uid && cr.gid === current.gid && keyOf(cr.groups) === groupsKey) {
    current = cr;
    return;
  }
  // Order matters: groups and gid while fsuid may still be 0 (privileged).
  if (current.uid !== 0) c.setfsuid(0);
  setGroups(cr.groups);
  c.setfsgid(cr.gid >>> 0);
  c.setfsuid(cr.uid >>> 0);
  current = cr;
}

/** Runs `fn` with `cr` as the fs credentials, restoring the previous ones after. */
export function withCredentials<T>(cr: Credentials | undefined, fn: () => T): T {
  if (cr === undefined) return fn();
  const prev = current;
  switchCredentials(cr);
  try {
    return fn();
  } finally {
    switchCredentials(prev);
  }
}

export const processCredentials = (): Credentials => ({ uid: c.geteuid(), gid: c.getegid(), groups: [] });
