// Capabilities (capabilities(7)) of the calling thread: capget/capset
// through the raw syscall (version 3, two 32-bit words per set), the bounding
// and ambient sets and no_new_privs through prctl. Linux keeps all of these
// per thread: a call changes only the thread that makes it, so each comes
// inline and as a call on libuv's pool (koffi's async calls), for the
// sandbox to run on every pool thread (src/sandbox/every-thread.ts).
// (No PR_SET_KEEPCAPS: duofs never changes its uids, only fsuid/fsgid,
// which leave the permitted set alone.)
import koffi from 'koffi';
import { errno } from './libc.js';
import { SysError } from './errno.js';

const lib = koffi.load('libc.so.6');
const sysCap = lib.func('syscall', 'long', ['long', 'void *', 'void *']);
const prctl = lib.func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)');

const SYS_capget = 125;
const SYS_capset = 126;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

const PR_CAPBSET_READ = 23;
const PR_CAPBSET_DROP = 24;
const PR_GET_SECUREBITS = 27;
const PR_SET_NO_NEW_PRIVS = 38;
const PR_GET_NO_NEW_PRIVS = 39;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;

/**
 * Capability names by number, lower case and without `cap_`, as libcap-ng
 * (and so virtiofsd's --modcaps) spells them; CAP_CHECKPOINT_RESTORE (40)
 * is the last one Linux 6.x knows.
 */
export const CAP_NAMES = [
  'chown',
  'dac_override',
  'dac_read_search',
  'fowner',
  'fsetid',
  'kill',
  'setgid',
  'setuid',
  'setpcap',
  'linux_immutable',
  'net_bind_service',
  'net_broadcast',
  'net_admin',
  'net_raw',
  'ipc_lock',
  'ipc_owner',
  'sys_module',
  'sys_rawio',
  'sys_chroot',
  'sys_ptrace',
  'sys_pacct',
  'sys_admin',
  'sys_boot',
  'sys_nice',
  'sys_resource',
  'sys_time',
  'sys_tty_config',
  'mknod',
  'lease',
  'audit_write',
  'audit_control',
  'setfcap',
  'mac_override',
  'mac_admin',
  'syslog',
  'wake_alarm',
  'block_suspend',
  'audit_read',
  'perfmon',
  'bpf',
  'checkpoint_restore',
] as const;

export type CapName = (typeof CAP_NAMES)[number];

/** The number of a capability name (any case, no `cap_` prefix), or undefined. */
export function capNumber(name: string): number | undefined {
  const i = (CAP_NAMES as readonly string[]).indexOf(name.toLowerCase());
  return i < 0 ? undefined : i;
}

/** A set of capabilities as the kernel's bit mask (bit n = capability n). */
export function capMask(names: readonly CapName[]): bigint {
  let m = 0n;
  for (const n of names) m |= 1n << BigInt(capNumber(n)!);
  return m;
}

/** The names of the capabilities in a mask (unknown bits as `cap_N`). */
export function capNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) if ((mask >> BigInt(i)) & 1n) out.push(CAP_NAMES[i] ?? `cap_${i}`);
  return out;
}

export interface CapSets {
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
}

/** capget(2) on the calling thread. */
export function capget(): CapSets {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  const data = Buffer.alloc(24);
  if (Number(sysCap(SYS_capget, hdr, data)) < 0) throw new SysError(errno(), 'capget');
  const word = (set: number): bigint => BigInt(data.readUInt32LE(set)) | (BigInt(data.readUInt32LE(12 + set)) << 32n);
  return { effective: word(0), permitted: word(4), inheritable: word(8) };
}

/** The arguments of one capset(2), prepared once (and kept referenced while a pool call runs). */
export interface CapsetCall {
  readonly hdr: Buffer;
  readonly data: Buffer;
}

export function capsetCall(s: CapSets): CapsetCall {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0); // pid 0: the calling thread
  const data = Buffer.alloc(24);
  const put = (set: number, v: bigint): void => {
    data.writeUInt32LE(Number(v & 0xffffffffn), set);
    data.writeUInt32LE(Number((v >> 32n) & 0xffffffffn), 12 + set);
  };
  put(0, s.effective);
  put(4, s.permitted);
  put(8, s.inheritable);
  return { hdr, data };
}

/** capset(2) on the calling thread. */
export function capset(call: CapsetCall): void {
  if (Number(sysCap(SYS_capset, call.hdr, call.data)) < 0) throw new SysError(errno(), 'capset');
}

type Done = (r: number) => void;
const settle =
  (done: Done) =>
  (err: unknown, r: number | bigint): void => {
    if (err)
      done(-5); // koffi itself failed: EIO
    else done(Number(r) < 0 ? -errno() : Number(r));
  };

/** capset(2) on whichever pool thread runs it; `done` gets 0 or -errno. */
export function capsetOnPool(call: CapsetCall, done: Done): void {
  sysCap.async(SYS_capset, call.hdr, call.data, settle(done));
}

/** Whether `cap` is in the calling thread's bounding set; undefined past the kernel's last capability. */
export function capbsetRead(cap: number): boolean | undefined {
  const r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
  if (r < 0) {
    const e = errno();
    if (e === 22 /* EINVAL */) return undefined;
    throw new SysError(e, 'prctl(PR_CAPBSET_READ)', String(cap));
  }
  return r === 1;
}

/** The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap, without /proc). */
export function lastCap(): number {
  let n = 0;
  while (n < 63 && capbsetRead(n + 1) !== undefined) n++;
  return n;
}

/** Removes `cap` from the calling thread's bounding set (needs CAP_SETPCAP). */
export function capbsetDrop(cap: number): void {
  if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) throw new SysError(errno(), 'prctl(PR_CAPBSET_DROP)', CAP_NAMES[cap] ?? String(cap));
}

export function capbsetDropOnPool(cap: number, done: Done): void {
  prctl.async(PR_CAPBSET_DROP, cap, 0, 0, 0, settle(done));
}

/** Empties the calling thread's ambient set (EINVAL before Linux 4.3: there is none). */
export function ambientClearAll(): void {
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno() !== 22) {
    throw new SysError(errno(), 'prctl(PR_CAP_AMBIENT_CLEAR_ALL)');
  }
}

/** The calling thread's securebits (SECBIT_*), for logging. */
export function securebits(): number {
  const r = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
  if (r < 0) throw new SysError(errno(), 'prctl(PR_GET_SECUREBITS)');
  return r;
}

/** PR_SET_NO_NEW_PRIVS on the calling thread: no execve may ever grant privileges again. */
export function setNoNewPrivs(): void {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw new SysError(errno(), 'prctl(PR_SET_NO_NEW_PRIVS)');
}

export function setNoNewPrivsOnPool(done: Done): void {
  prctl.async(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, settle(done));
}

export function noNewPrivs(): boolean {
  return prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) === 1;
}
