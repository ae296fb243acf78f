// --seccomp kill|log|trap|none: the allow-list filter of
// seccomp-policy.ts, installed on every thread of the serving process
// (SECCOMP_FILTER_FLAG_TSYNC: V8's platform threads, libuv's pool and
// koffi's threads exist already), once, after the sandbox is set up and
// every socket, listener, FUSE mount and I/O engine exists, right before
// guests are served.
//
// Modes, as virtiofsd's --seccomp:
// * kill (default): SECCOMP_RET_KILL_PROCESS. The process dies of SIGSYS;
//   the kernel writes an audit record (type=1326) naming the syscall to the
//   kernel log (see seccomp-log.ts); a supervisor can print it.
// * log: SECCOMP_RET_LOG. The call runs, the kernel writes the record. For
//   finding what the list lacks; protects nothing.
// * trap: SECCOMP_RET_TRAP. A SIGSYS handler (machine code, sys/seccomp.ts)
//   writes one fatal line naming the syscall to the log's fd and ends the
//   process by SIGSYS before the call returns. Without a handler for this
//   architecture the default action of SIGSYS ends it (a core dump).
// * none: no filter.
// In every mode: a call from another ABI (i386 int 0x80, x32) kills the
// process (Node never makes one; injected code would), clone3 answers
// ENOSYS and umount2 EPERM (seccomp-policy.ts says why).
import type { Logger } from '../log.js';
import {
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_KILL_PROCESS,
  SECCOMP_RET_LOG,
  SECCOMP_RET_TRAP,
  X32_SYSCALL_BIT,
  SECCOMP_DATA_ARCH,
  SECCOMP_DATA_NR,
  argLow,
  bpf,
  encodeProgram,
  installFilter,
  installSigsysHandler,
  nativeArch,
  noNewPrivs,
  retErrno,
  seccompActionAvailable,
  seccompMode,
  setNoNewPrivs,
  sigsysHandlerSupported,
  type Insn,
} from '../sys/seccomp.js';
import { SysError } from '../sys/errno.js';
import { AARCH64_EQUIVALENTS, ALLOW, ALLOW_IF, ERRNO_CALLS, type ArgRule } from './seccomp-policy.js';
import { SYSCALLS_AARCH64, SYSCALLS_X86_64 } from './seccomp-syscalls.js';

import type { SeccompMode } from './mode.js';
export type { SeccompMode } from './mode.js';

export interface SeccompOptions {
  log: Pick<Logger, 'info' | 'warn'>;
  /** trap mode: where the handler writes its line (default 2, stderr) */
  trapFd?: number;
  /** trap mode: the line for a syscall (default: a pino-shaped JSON line at level fatal, no time) */
  trapLine?: (name: string, nr: number) => string;
  /** extra syscalls to allow (tests; an embedder's own needs), by name */
  allow?: readonly string[];
  /** syscalls to take out of the list (tests: prove a test fails without one) */
  deny?: readonly string[];
}

export interface SeccompResult {
  installed: boolean;
  mode: SeccompMode;
  /** syscalls the filter lets through (some only with the arguments ALLOW_IF names) */
  syscalls: number;
  /** BPF instructions */
  instructions: number;
}

type Table = Readonly<Record<string, number>>;

interface Rule {
  nr: number;
  name: string;
  action: number;
  checks?: readonly ArgRule[];
}

/** The rules for one architecture's table: allow, allow-if, errno. Names the table lacks are skipped. */
export function policyRules(table: Table, o: Pick<SeccompOptions, 'allow' | 'deny'> = {}, aarch64 = false): Rule[] {
  const deny = new Set(o.deny ?? []);
  const rules = new Map<number, Rule>();
  const add = (name: string, action: number, checks?: readonly ArgRule[]): void => {
    const real = aarch64 && table[name] === undefined ? AARCH64_EQUIVALENTS[name] : name;
    if (real === undefined || deny.has(name)) return;
    const nr = table[real];
    if (nr === undefined) return;
    // A name and its aarch64 equivalent meet on one number: the unconditional rule wins.
    const had = rules.get(nr);
    if (had && !had.checks) return;
    rules.set(nr, { nr, name: real, action, ...(checks ? { checks } : {}) });
  };
  for (const [name, e] of Object.entries(ERRNO_CALLS)) add(name, retErrno(e.errno));
  for (const [name, r] of Object.entries(ALLOW_IF)) add(name, SECCOMP_RET_ALLOW, r.rules);
  for (const name of [...Object.keys(ALLOW), ...(o.allow ?? [])]) add(name, SECCOMP_RET_ALLOW);
  // Conditional rules first: they are the ones the kernel evaluates on every
  // call (a number whose verdict needs no argument is cached per syscall
  // after the first call, SECCOMP_CACHE), so they should be reached early.
  return [...rules.values()].sort((a, b) => Number(!!b.checks) - Number(!!a.checks));
}

/**
 * The filter program: arch check, x32 check (x86_64), then one block per
 * rule; anything else gets `deny`. Labels are resolved to the short forward
 * jumps classic BPF has (at most 255 instructions ahead), which the block
 * layout never exceeds.
 */
export function buildProgram(o: { arch: number; x32: boolean; rules: readonly Rule[]; deny: number; foreign: number; selfPid: number }): Insn[] {
  const out: Insn[] = [];
  const fixups: { at: number; jt?: string; jf?: string }[] = [];
  const labels = new Map<string, number>();
  let serial = 0;
  const label = (name: string): void => void labels.set(name, out.length);
  const jump = (i: Insn, jt?: string, jf?: string): void => {
    if (jt !== undefined || jf !== undefined) fixups.push({ at: out.length, ...(jt ? { jt } : {}), ...(jf ? { jf } : {}) });
    out.push(i);
  };

  out.push(bpf.load(SECCOMP_DATA_ARCH));
  out.push(bpf.jeq(o.arch, 1, 0));
  out.push(bpf.ret(o.foreign));
  out.push(bpf.load(SECCOMP_DATA_NR));
  if (o.x32) {
    out.push(bpf.jset(X32_SYSCALL_BIT, 0, 1));
    out.push(bpf.ret(o.foreign));
  }
  for (const r of o.rules) {
    if (!r.checks) {
      out.push(bpf.jeq(r.nr, 0, 1));
      out.push(bpf.ret(r.action));
      continue;
    }
    const id = serial++;
    const next = `next${id}`;
    const fail = `fail${id}`;
    jump(bpf.jeq(r.nr, 0, 0), undefined, next);
    r.checks.forEach((c, ci) => {
      out.push(bpf.load(argLow(c.arg)));
      if ('oneOf' in c) {
        const pass = `pass${id}.${ci}`;
        c.oneOf.forEach((v, vi) => jump(bpf.jeq(v, 0, 0), pass, vi === c.oneOf.length - 1 ? fail : undefined));
        label(pass);
      } else if ('allOf' in c) {
        // each bit of allOf must be set, no bit of noneOf
        for (let bit = 1; bit !== 0 && bit <= 0x80000000; bit = (bit << 1) >>> 0) {
          if (c.allOf & bit) jump(bpf.jset(bit, 0, 0), undefined, fail);
        }
        if (c.noneOf) jump(bpf.jset(c.noneOf, 0, 0), fail, undefined);
      } else {
        jump(bpf.jeq(o.selfPid, 0, 0), undefined, fail);
      }
    });
    out.push(bpf.ret(r.action));
    label(fail);
    out.push(bpf.ret(o.deny));
    label(next); // reached only when the number differed: A still holds it
  }
  out.push(bpf.ret(o.deny));

  for (const f of fixups) {
    const i = out[f.at]!;
    const rel = (l: string): number => {
      const to = labels.get(l);
      if (to === undefined) throw new Error(`seccomp: label ${l}`);
      const d = to - (f.at + 1);
      if (d < 0 || d > 255) throw new Error(`seccomp: jump to ${l} out of range (${d})`);
      return d;
    };
    if (f.jt) i.jt = rel(f.jt);
    if (f.jf) i.jf = rel(f.jf);
  }
  return out;
}

/** The table and audit arch of this machine. */
function archTable(): { name: 'x86_64' | 'aarch64'; audit: number; table: Table } {
  const a = nativeArch();
  return { ...a, table: a.name === 'x86_64' ? SYSCALLS_X86_64 : SYSCALLS_AARCH64 };
}

const DENY: Record<Exclude<SeccompMode, 'none'>, number> = { kill: SECCOMP_RET_KILL_PROCESS, log: SECCOMP_RET_LOG, trap: SECCOMP_RET_TRAP };

const defaultTrapLine = (name: string, nr: number): string =>
  JSON.stringify({
    level: 60,
    pid: process.pid,
    seccomp: 'trap',
    syscall: name,
    nr,
    msg: `seccomp: forbidden system call ${name} (${nr}); ending the process (SIGSYS)`,
  }) + '\n';

/** The program installSeccomp would install in `mode` (tests, and `--seccomp` diagnostics). */
export function seccompProgram(
  mode: Exclude<SeccompMode, 'none'>,
  o: Pick<SeccompOptions, 'allow' | 'deny'> = {},
): { program: Insn[]; rules: Rule[] } {
  const a = archTable();
  const rules = policyRules(a.table, o, a.name === 'aarch64');
  const program = buildProgram({
    arch: a.audit,
    x32: a.name === 'x86_64',
    rules,
    deny: DENY[mode],
    // Another ABI is never Node: killed in every mode (letting it run in log
    // mode would open a hole; in trap mode the handler would name an i386
    // number after the x86_64 call that has it).
    foreign: SECCOMP_RET_KILL_PROCESS,
    selfPid: process.pid,
  });
  return { program, rules };
}

let installedMode: SeccompMode | undefined;

/**
 * Installs the filter on every thread of this process (NO_NEW_PRIVS first;
 * TSYNC carries both to every thread). Once per process: a second call
 * throws. Throws SysError when the kernel refuses (no seccomp, a thread that
 * cannot take the filter), so the caller can refuse to serve unconfined.
 */
export function installSeccomp(mode: SeccompMode, o: SeccompOptions): SeccompResult {
  if (installedMode !== undefined) throw new SysError(16 /* EBUSY */, 'seccomp', `a filter is installed already (${installedMode})`);
  if (mode === 'none') {
    o.log.warn({ seccomp: 'none' }, 'seccomp: none (no system call filter)');
    installedMode = mode;
    return { installed: false, mode, syscalls: 0, instructions: 0 };
  }
  const deny = DENY[mode];
  if (!seccompActionAvailable(deny)) throw new SysError(95 /* EOPNOTSUPP */, 'seccomp', `the kernel has no action for --seccomp ${mode}`);
  const { program, rules } = seccompProgram(mode, o);
  const code = encodeProgram(program);
  if (mode === 'trap') {
    if (sigsysHandlerSupported()) {
      const a = archTable();
      const names = new Map(Object.entries(a.table).map(([k, v]) => [v, k]));
      const max = Math.max(...names.keys()) + 1;
      const line = o.trapLine ?? defaultTrapLine;
      installSigsysHandler(
        Array.from({ length: max }, (_, nr) => line(names.get(nr) ?? `syscall ${nr}`, nr)),
        line('unknown (another ABI or number)', -1),
        o.trapFd ?? 2,
      );
    } else {
      o.log.warn(
        { arch: process.arch },
        'seccomp trap: no SIGSYS handler for this architecture; a forbidden call ends the process by SIGSYS without a line',
      );
    }
  }
  if (!noNewPrivs()) setNoNewPrivs();
  installFilter(code, SECCOMP_FILTER_FLAG_TSYNC);
  installedMode = mode;
  const allowed = rules.filter((r) => r.action === SECCOMP_RET_ALLOW).length;
  o.log.info(
    { seccomp: mode, syscalls: allowed, conditional: rules.filter((r) => r.checks).length, instructions: program.length, threads: 'all (TSYNC)' },
    `seccomp: ${mode} mode, ${allowed} system calls allowed`,
  );
  return { installed: true, mode, syscalls: allowed, instructions: program.length };
}

/** Whether this thread runs under a seccomp filter (prctl PR_GET_SECCOMP == 2). */
export const seccompActive = (): boolean => seccompMode() === 2;
