// Landlock (landlock(7)): an unprivileged LSM that limits what the calling
// thread (and the threads and processes it later creates) may do to the
// filesystem. The three syscalls through their x86_64 numbers; glibc wraps
// none of them. Until ABI 8 (LANDLOCK_RESTRICT_SELF_TSYNC, Linux 7.0)
// landlock_restrict_self() restricts the calling thread only, so it comes
// inline and as a call on libuv's pool, like capset (see sys/caps.ts).
import koffi from 'koffi';
import { errno } from './libc.js';
import { SysError } from './errno.js';

const lib = koffi.load('libc.so.6');
const sysCreate = lib.func('syscall', 'long', ['long', 'void *', 'size_t', 'uint32_t']);
const sysAddRule = lib.func('syscall', 'long', ['long', 'int', 'int', 'void *', 'uint32_t']);
const sysRestrict = lib.func('syscall', 'long', ['long', 'int', 'uint32_t']);

const SYS_landlock_create_ruleset = 444;
const SYS_landlock_add_rule = 445;
const SYS_landlock_restrict_self = 446;

const LANDLOCK_CREATE_RULESET_VERSION = 1;
const LANDLOCK_RULE_PATH_BENEATH = 1;
/** ABI 8: landlock_restrict_self() applies the domain to every thread of the process. */
export const LANDLOCK_RESTRICT_SELF_TSYNC = 1 << 3;

/** Filesystem access rights (LANDLOCK_ACCESS_FS_*), with the ABI that introduced each. */
export const FS_ACCESS = {
  execute: { bit: 1n << 0n, abi: 1 },
  write_file: { bit: 1n << 1n, abi: 1 },
  read_file: { bit: 1n << 2n, abi: 1 },
  read_dir: { bit: 1n << 3n, abi: 1 },
  remove_dir: { bit: 1n << 4n, abi: 1 },
  remove_file: { bit: 1n << 5n, abi: 1 },
  make_char: { bit: 1n << 6n, abi: 1 },
  make_dir: { bit: 1n << 7n, abi: 1 },
  make_reg: { bit: 1n << 8n, abi: 1 },
  make_sock: { bit: 1n << 9n, abi: 1 },
  make_fifo: { bit: 1n << 10n, abi: 1 },
  make_block: { bit: 1n << 11n, abi: 1 },
  make_sym: { bit: 1n << 12n, abi: 1 },
  refer: { bit: 1n << 13n, abi: 2 },
  truncate: { bit: 1n << 14n, abi: 3 },
  ioctl_dev: { bit: 1n << 15n, abi: 5 },
} as const;

export type FsAccess = keyof typeof FS_ACCESS;

/** The rights that apply to a file (not a directory) in a path-beneath rule. */
export const FILE_ACCESS: readonly FsAccess[] = ['execute', 'write_file', 'read_file', 'truncate', 'ioctl_dev'];

/** Every filesystem access right Landlock ABI `abi` knows. */
export function fsAccessForAbi(abi: number): bigint {
  let m = 0n;
  for (const r of Object.values(FS_ACCESS)) if (r.abi <= abi) m |= r.bit;
  return m;
}

export function fsAccessNames(mask: bigint): FsAccess[] {
  return (Object.keys(FS_ACCESS) as FsAccess[]).filter((k) => (mask & FS_ACCESS[k].bit) !== 0n);
}

/**
 * The highest Landlock ABI the kernel offers, or 0 where it has none
 * (ENOSYS: not built; EOPNOTSUPP: built but not enabled at boot).
 */
export function landlockAbi(): number {
  const r = Number(sysCreate(SYS_landlock_create_ruleset, null, 0, LANDLOCK_CREATE_RULESET_VERSION));
  if (r >= 0) return r;
  const e = errno();
  if (e === 38 /* ENOSYS */ || e === 95 /* EOPNOTSUPP */) return 0;
  throw new SysError(e, 'landlock_create_ruleset', 'version');
}

/** A ruleset fd handling `handledFs` (struct landlock_ruleset_attr; net and scopes left unhandled). */
export function createRuleset(handledFs: bigint): number {
  // handled_access_fs, handled_access_net (ABI 4), scoped (ABI 6): a kernel
  // that knows fewer fields accepts the larger struct as long as they are zero.
  const attr = Buffer.alloc(24);
  attr.writeBigUInt64LE(handledFs, 0);
  const fd = Number(sysCreate(SYS_landlock_create_ruleset, attr, attr.length, 0));
  if (fd < 0) throw new SysError(errno(), 'landlock_create_ruleset', `0x${handledFs.toString(16)}`);
  return fd;
}

/** Allows `allowed` beneath the file or directory `parentFd` (an O_PATH fd will do). */
export function addPathBeneath(rulesetFd: number, parentFd: number, allowed: bigint): void {
  const attr = Buffer.alloc(12); // packed: u64 allowed_access, s32 parent_fd
  attr.writeBigUInt64LE(allowed, 0);
  attr.writeInt32LE(parentFd, 8);
  if (Number(sysAddRule(SYS_landlock_add_rule, rulesetFd, LANDLOCK_RULE_PATH_BENEATH, attr, 0)) < 0) {
    throw new SysError(errno(), 'landlock_add_rule', `fd ${parentFd}`);
  }
}

/** Enforces the ruleset on the calling thread (needs no_new_privs or CAP_SYS_ADMIN). */
export function restrictSelf(rulesetFd: number, flags = 0): void {
  if (Number(sysRestrict(SYS_landlock_restrict_self, rulesetFd, flags)) < 0) {
    throw new SysError(errno(), 'landlock_restrict_self', flags ? `flags 0x${flags.toString(16)}` : undefined);
  }
}

/** The same on whichever pool thread runs it; `done` gets 0 or -errno. */
export function restrictSelfOnPool(rulesetFd: number, done: (r: number) => void): void {
  sysRestrict.async(SYS_landlock_restrict_self, rulesetFd, 0, (err: unknown, r: number | bigint) =>
    done(err ? -5 : Number(r) < 0 ? -errno() : Number(r)),
  );
}
