// --seccomp: the filter program (run here on a classic-BPF interpreter), and
// the filter installed in a serving child (test/sandbox/fixtures/
// seccomp-serve.ts, compiled) that serves 9P, virtio-fs and a FUSE mount on
// each I/O engine and then makes forbidden calls in kill, log and trap mode.
//
// To see these tests fail on a broken filter, set DUOFS_SECCOMP_BREAK to a
// JSON object merged into every child's config, e.g. {"allow":["ptrace"]}
// (a forbidden call allowed), {"deny":["futex"]} (a needed call missing) or
// {"noTsync":true} (the filter on the main thread only).
import { afterAll, describe, expect, jest, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ALLOW, ALLOW_IF, ERRNO_CALLS, FORBIDDEN, allowedNames } from '../../src/sandbox/seccomp-policy.js';
import { SYSCALLS_AARCH64, SYSCALLS_X86_64 as NR } from '../../src/sandbox/seccomp-syscalls.js';
import { policyRules, seccompProgram } from '../../src/sandbox/seccomp.js';
import {
  SeccompWatch,
  describeSeccompDeath,
  parseSeccompRecord,
  readSeccompRecords,
  seccompLogCursor,
  seccompLogReadable,
  syscallName,
  type SeccompRecord,
} from '../../src/sandbox/seccomp-log.js';
import {
  AUDIT_ARCH_X86_64,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_KILL_PROCESS,
  SECCOMP_RET_LOG,
  SECCOMP_RET_TRAP,
  encodeProgram,
  handlerCode,
  retErrno,
  type Insn,
} from '../../src/sys/seccomp.js';
import { driveAll, startServe, type ServeConfig } from './harness.js';

jest.setTimeout(120_000);

const BREAK = JSON.parse(process.env.DUOFS_SECCOMP_BREAK ?? '{}') as Partial<ServeConfig>;
const x86 = process.arch === 'x64';
const onX86 = x86 ? describe : describe.skip;
const root = process.getuid?.() === 0;
const fuseOk = root && fs.existsSync('/dev/fuse');
const ringsOk = ((): boolean => {
  try {
    return fs.readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() === '0';
  } catch {
    return true;
  }
})();
/**
 * The kernel's records, complete (the audit multicast group; root): the
 * record checks need it. The kernel log is rate-limited (10 lines per 5 s),
 * so a run of kills loses records there; one test reads it on its own.
 */
const watch = SeccompWatch.open();
const records = watch !== undefined;
afterAll(() => watch?.close());
const EPERM = 1;
const ENOSYS = 38;

// ---- a classic-BPF interpreter for seccomp programs (the subset the builder emits)

interface Data {
  nr: number;
  arch?: number;
  args?: number[];
}

function run(prog: readonly Insn[], d: Data): number {
  const word = (off: number): number => {
    if (off === 0) return d.nr >>> 0;
    if (off === 4) return (d.arch ?? AUDIT_ARCH_X86_64) >>> 0;
    const i = (off - 16) >> 3;
    const v = BigInt.asUintN(64, BigInt(d.args?.[i] ?? 0));
    return Number(off % 8 === 0 ? v & 0xffffffffn : v >> 32n);
  };
  let a = 0;
  for (let pc = 0; pc < prog.length; pc++) {
    const i = prog[pc]!;
    switch (i.code) {
      case 0x20:
        a = word(i.k);
        break;
      case 0x15:
        pc += a === i.k ? i.jt : i.jf;
        break;
      case 0x45:
        pc += (a & i.k) !== 0 ? i.jt : i.jf;
        break;
      case 0x06:
        return i.k >>> 0;
      default:
        throw new Error(`opcode ${i.code}`);
    }
  }
  throw new Error('fell off the program');
}

const CLONE_THREAD_FLAGS = 0x003d0f00; // glibc pthread_create's
const KILL = SECCOMP_RET_KILL_PROCESS >>> 0;

describe('the policy', () => {
  test('nothing forbidden is allowed, and every name is a real x86_64 system call', () => {
    const allowed = new Set([...allowedNames(), ...Object.keys(ERRNO_CALLS)]);
    expect(Object.keys(FORBIDDEN).filter((n) => allowed.has(n))).toEqual([]);
    expect([...allowed, ...Object.keys(FORBIDDEN)].filter((n) => NR[n] === undefined)).toEqual([]);
    for (const n of [
      'execve',
      'execveat',
      'ptrace',
      'mount',
      'umount2',
      'pivot_root',
      'chroot',
      'init_module',
      'finit_module',
      'delete_module',
      'kexec_load',
      'bpf',
      'setns',
      'unshare',
      'reboot',
      'swapon',
      'perf_event_open',
      'io_uring_setup',
      'clone3',
      'connect',
    ]) {
      expect(ALLOW[n]).toBeUndefined();
      expect(ALLOW_IF[n]).toBeUndefined();
    }
  });

  test("the generated tables hold the kernel's numbers", () => {
    expect([NR.read, NR.openat, NR.ptrace, NR.seccomp, NR.clone3, NR.io_uring_setup]).toEqual([0, 257, 101, 317, 435, 425]);
    expect([SYSCALLS_AARCH64.read, SYSCALLS_AARCH64.openat, SYSCALLS_AARCH64.ptrace, SYSCALLS_AARCH64.seccomp]).toEqual([63, 56, 117, 277]);
    expect(SYSCALLS_AARCH64.open).toBeUndefined();
  });

  test('the aarch64 rules map the legacy calls onto the generic ones', () => {
    const rules = policyRules(SYSCALLS_AARCH64, {}, true);
    const names = new Set(rules.map((r) => r.name));
    for (const n of ['openat', 'ppoll', 'epoll_pwait', 'newfstatat', 'faccessat', 'unlinkat', 'readlinkat']) expect(names).toContain(n);
    expect(names).not.toContain('ptrace');
    expect(rules.every((r) => Object.values(SYSCALLS_AARCH64).includes(r.nr))).toBe(true);
  });
});

onX86('the filter program (x86_64)', () => {
  const { program } = seccompProgram('kill');
  const self = process.pid;
  const r = (nr: number, ...args: number[]): number => run(program, { nr, args });

  test("fits the kernel's limits and encodes to 8 bytes per instruction", () => {
    expect(program.length).toBeLessThan(4096);
    expect(encodeProgram(program).length).toBe(program.length * 8);
  });

  test('allowed calls pass; anything else, another ABI and x32 numbers are killed', () => {
    for (const n of ['read', 'write', 'openat', 'futex', 'mmap', 'io_uring_enter', 'epoll_pwait', 'name_to_handle_at', 'setfsuid'])
      expect(r(NR[n]!)).toBe(SECCOMP_RET_ALLOW);
    for (const n of [
      'ptrace',
      'mount',
      'execve',
      'execveat',
      'init_module',
      'finit_module',
      'kexec_load',
      'bpf',
      'setns',
      'unshare',
      'reboot',
      'swapon',
      'perf_event_open',
      'pivot_root',
      'chroot',
      'connect',
      'io_uring_setup',
      'memfd_create',
      'kill',
    ])
      expect(r(NR[n]!)).toBe(KILL);
    expect(r(999)).toBe(KILL);
    expect(run(program, { nr: NR.read! | 0x40000000 })).toBe(KILL); // x32 read
    expect(run(program, { nr: 3, arch: 0x40000003 })).toBe(KILL); // i386 close, int 0x80
  });

  test('socket: AF_UNIX only', () => {
    expect(r(NR.socket!, 1, 1, 0)).toBe(SECCOMP_RET_ALLOW);
    expect(r(NR.socket!, 2, 1, 0)).toBe(KILL); // AF_INET stream
    expect(r(NR.socket!, 2, 3, 1)).toBe(KILL); // AF_INET raw
    expect(r(NR.socket!, 10, 1, 0)).toBe(KILL); // AF_INET6
    expect(r(NR.socket!, 17, 3, 0)).toBe(KILL); // AF_PACKET
    expect(r(NR.socket!, 16, 3, 0)).toBe(KILL); // AF_NETLINK
  });

  test('threads, never processes: clone needs CLONE_THREAD and no namespace; clone3 answers ENOSYS', () => {
    expect(r(NR.clone!, CLONE_THREAD_FLAGS)).toBe(SECCOMP_RET_ALLOW);
    expect(r(NR.clone!, 0x01200011)).toBe(KILL); // fork(): CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID|SIGCHLD
    expect(r(NR.clone!, 0x00004111)).toBe(KILL); // posix_spawn: CLONE_VM|CLONE_VFORK|SIGCHLD
    expect(r(NR.clone!, CLONE_THREAD_FLAGS | 0x00020000)).toBe(KILL); // + CLONE_NEWNS
    expect(r(NR.clone!, CLONE_THREAD_FLAGS | 0x40000000)).toBe(KILL); // + CLONE_NEWNET
    expect(r(NR.clone3!)).toBe(retErrno(ENOSYS));
    expect(r(NR.umount2!)).toBe(retErrno(EPERM));
  });

  test('ioctl, fcntl, prctl, prlimit64, tgkill and io_uring_register only with the arguments duofs uses', () => {
    expect(r(NR.ioctl!, 0, 0x5421)).toBe(SECCOMP_RET_ALLOW); // FIONBIO
    expect(r(NR.ioctl!, 0, 0x5401)).toBe(SECCOMP_RET_ALLOW); // TCGETS
    expect(r(NR.ioctl!, 0, 0x5412)).toBe(KILL); // TIOCSTI
    expect(r(NR.fcntl!, 3, 37)).toBe(SECCOMP_RET_ALLOW); // F_OFD_SETLK
    expect(r(NR.fcntl!, 3, 8)).toBe(KILL); // F_SETOWN
    expect(r(NR.fcntl!, 3, 1024)).toBe(KILL); // F_SETLEASE
    expect(r(NR.prctl!, 15)).toBe(SECCOMP_RET_ALLOW); // PR_SET_NAME
    expect(r(NR.prctl!, 38)).toBe(KILL); // PR_SET_NO_NEW_PRIVS (already set; nothing else needs prctl)
    expect(r(NR.prctl!, 8)).toBe(KILL); // PR_SET_KEEPCAPS
    expect(r(NR.prlimit64!, 0, 7)).toBe(SECCOMP_RET_ALLOW);
    expect(r(NR.prlimit64!, 1, 7)).toBe(KILL); // init's limits
    expect(r(NR.tgkill!, self, self, 6)).toBe(SECCOMP_RET_ALLOW);
    expect(r(NR.tgkill!, 1, 1, 9)).toBe(KILL);
    expect(r(NR.io_uring_register!, 5, 5)).toBe(SECCOMP_RET_ALLOW); // IORING_UNREGISTER_EVENTFD
    expect(r(NR.io_uring_register!, 5, 0)).toBe(KILL); // IORING_REGISTER_BUFFERS
    // the high half of an int argument is not looked at (the kernel does not either)
    expect(run(program, { nr: NR.socket!, args: [2 ** 32 + 1] })).toBe(SECCOMP_RET_ALLOW);
  });

  test('log and trap modes differ only in what a forbidden call gets', () => {
    const log = seccompProgram('log').program;
    const trap = seccompProgram('trap').program;
    expect(run(log, { nr: NR.ptrace! })).toBe(SECCOMP_RET_LOG);
    expect(run(trap, { nr: NR.ptrace! })).toBe(SECCOMP_RET_TRAP);
    expect(run(log, { nr: NR.read! })).toBe(SECCOMP_RET_ALLOW);
    expect(run(log, { nr: NR.clone3! })).toBe(retErrno(ENOSYS));
    expect(run(log, { nr: 3, arch: 0x40000003 })).toBe(KILL); // another ABI is killed even in log mode
    expect(run(trap, { nr: NR.read! | 0x40000000 })).toBe(KILL);
  });

  test("the SIGSYS handler's bytes are what the assembler makes of its source", () => {
    const as = spawnSync('as', ['--version']);
    if (as.status !== 0) return; // no binutils here: nothing to compare with
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-sigsys-'));
    try {
      fs.writeFileSync(
        path.join(dir, 'h.s'),
        `.intel_syntax noprefix
mov eax, [rsi+24]
cmp eax, 0x1d2
jb 1f
mov eax, 0x1d2
1: shl rax, 4
movabs rcx, 0x7f0011223344
mov rsi, [rcx+rax]
mov rdx, [rcx+rax+8]
mov edi, 2
mov eax, 1
syscall
mov eax, 39
syscall
mov edi, eax
mov eax, 186
syscall
mov esi, eax
mov edx, 31
mov eax, 234
syscall
mov edi, 159
mov eax, 231
syscall
ud2
`,
      );
      expect(spawnSync('as', ['-o', path.join(dir, 'h.o'), path.join(dir, 'h.s')]).status).toBe(0);
      expect(spawnSync('objcopy', ['-O', 'binary', '-j', '.text', path.join(dir, 'h.o'), path.join(dir, 'h.bin')]).status).toBe(0);
      expect(handlerCode(0x1d2, 0x7f0011223344n, 2).toString('hex')).toBe(fs.readFileSync(path.join(dir, 'h.bin')).toString('hex'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("reading the kernel's records", () => {
  test('a kmsg audit line becomes a record naming the call and the action', () => {
    const line =
      'audit: type=1326 audit(1796346349.822:3): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=4474 comm="t" exe="/tmp/sc/t" sig=31 arch=c000003e syscall=110 compat=0 ip=0x7f7e1f5f3829 code=0x80000000';
    expect(parseSeccompRecord(line, 7, 'kmsg')).toMatchObject({
      pid: 4474,
      comm: 't',
      sig: 31,
      arch: 0xc000003e,
      syscall: 110,
      name: 'getppid',
      action: 'kill_process',
      seq: 7,
    });
    const auditd =
      'type=SECCOMP msg=audit(1796346349.822:44): auid=0 uid=0 gid=0 ses=1 pid=9 comm="node" exe="/usr/bin/node" sig=0 arch=c00000b7 syscall=117 compat=0 ip=0x1 code=0x7ffc0000';
    expect(parseSeccompRecord(auditd, 0, 'audit.log')).toMatchObject({ pid: 9, name: 'ptrace', action: 'log', seq: 44 });
    expect(parseSeccompRecord('audit: type=1400 apparmor="DENIED"', 1, 'kmsg')).toBeUndefined();
    expect(syscallName(101)).toBe('ptrace');
    expect(syscallName(9999)).toBe('syscall 9999');
  });
});

// ---- in a serving child ------------------------------------------------------

const cfgOf = (c: ServeConfig): ServeConfig => ({ ...c, ...BREAK });

/** The kernel records of `pid`, waiting a little for kauditd (for `want` of them, or 200 ms for none). */
async function recordsOf(pid: number, want = 1): Promise<SeccompRecord[]> {
  return watch ? watch.wait(pid, want, want ? 2000 : 200) : [];
}

/** How the child ended, or TIMEOUT after `ms` (so a test's finally still runs and ends the child). */
async function exitWithin(
  s: { exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> },
  ms = 15_000,
): Promise<{ code: number | null; signal: string | null }> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    s.exited,
    new Promise<{ code: null; signal: 'TIMEOUT' }>((res) => {
      timer = setTimeout(() => res({ code: null, signal: 'TIMEOUT' }), ms);
    }),
  ]);
  clearTimeout(timer);
  return r;
}

const engines = (['io_uring', 'threads', 'sync'] as const).filter((e) => e !== 'io_uring' || ringsOk);

onX86('a serving process under the filter', () => {
  describe.each(engines)('--io-engine %s, kill mode', (ioEngine) => {
    test('serves 9P, virtio-fs (twice: a reconnect) and the FUSE mount, does its own I/O on every engine, starts a thread, and exits 0', async () => {
      const cfg = cfgOf({ mode: 'kill', ioEngine, fuseMount: fuseOk });
      const s = await startServe(cfg);
      try {
        await driveAll(s, cfg);
        s.send('thread');
        expect(await s.line(/^OK thread|^ERROR/)).toBe('OK thread 42');
        s.send('exit');
        expect(await exitWithin(s)).toEqual({ code: 0, signal: null });
        expect(s.stderr()).toMatch(/"seccomp":"kill".*system calls allowed/);
        if (records) expect(await recordsOf(s.pid, 0)).toEqual([]);
      } finally {
        await s.cleanup();
      }
    });
  });

  (records ? test : test.skip)('log mode over the same workloads leaves no kernel record: the list is complete', async () => {
    const cfg = cfgOf({ mode: 'log', ioEngine: engines[0]!, fuseMount: fuseOk });
    const s = await startServe(cfg);
    try {
      await driveAll(s, cfg);
      s.send('thread');
      await s.line(/^OK thread/);
      s.send('exit');
      expect(await exitWithin(s)).toEqual({ code: 0, signal: null });
      expect((await recordsOf(s.pid, 0)).map((r) => r.name)).toEqual([]);
    } finally {
      await s.cleanup();
    }
  });

  const light = (mode: ServeConfig['mode']): ServeConfig => cfgOf({ mode, ninep: false, virtiofs: false, logLevel: 'warn' });

  /** Starts a light server, makes one call, returns how the child ended and the kernel's records of it. */
  async function forbidden(
    mode: ServeConfig['mode'],
    cmd: string,
    waitDone = false,
    want = 1,
  ): Promise<{ exit: { code: number | null; signal: string | null }; reply?: string; records: SeccompRecord[]; stderr: string; pid: number }> {
    const s = await startServe(light(mode));
    try {
      s.send(cmd);
      let reply: string | undefined;
      if (waitDone) {
        reply = await s.line(/^DONE|^ERROR/).catch(() => undefined);
        s.send('exit');
      }
      const exit = await exitWithin(s);
      if (!waitDone)
        reply = s
          .stdout()
          .split('\n')
          .find((l) => l.startsWith('DONE'));
      return { exit, ...(reply ? { reply } : {}), records: await recordsOf(s.pid, want), stderr: s.stderr(), pid: s.pid };
    } finally {
      await s.cleanup();
    }
  }

  describe('kill mode: a forbidden call ends the process by SIGSYS and the kernel names the call', () => {
    const cases: [string, string | undefined][] = [
      ['ptrace', 'ptrace'],
      ['mount', 'mount'],
      ['execve', 'execve'],
      ['socket-raw', 'socket'],
      ['socket-inet', 'socket'],
      ['socket-packet', 'socket'],
      ['init_module', 'init_module'],
      ['kexec_load', 'kexec_load'],
      ['bpf', 'bpf'],
      ['unshare', 'unshare'],
      ['setns', 'setns'],
      ['reboot', 'reboot'],
      ['swapon', 'swapon'],
      ['pivot_root', 'pivot_root'],
      ['chroot', 'chroot'],
      ['perf_event_open', 'perf_event_open'],
      ['fork', 'clone'],
      ['spawn', undefined],
      ['connect', 'connect'],
      ['tiocsti', 'ioctl'],
    ];
    test.each(cases)('call %s', async (cmd, name) => {
      const r = await forbidden('kill', `call ${cmd}`);
      expect(r.reply).toBeUndefined();
      expect(r.exit).toEqual({ code: null, signal: 'SIGSYS' });
      if (records) {
        expect(r.records).toHaveLength(1);
        expect(r.records[0]!.action).toBe('kill_process');
        const got = r.records[0]!.name;
        if (name) expect(got).toBe(name);
        expect(await describeSeccompDeath(r.pid, { watch, timeoutMs: 100 })).toContain(`forbidden system call ${got} (${NR[got]})`);
      }
    });

    test('on a libuv pool thread that existed before the filter (TSYNC)', async () => {
      const r = await forbidden('kill', 'pool ptrace');
      expect(r.reply).toBeUndefined();
      expect(r.exit).toEqual({ code: null, signal: 'SIGSYS' });
      if (records) expect(r.records.map((x) => x.name)).toEqual(['ptrace']);
    });

    test('umount2 and clone3 are refused with an errno and the server lives on', async () => {
      for (const [cmd, errno] of [
        ['umount2', EPERM],
        ['clone3', ENOSYS],
      ] as const) {
        const r = await forbidden('kill', `call ${cmd}`, true, 0);
        expect(r.reply).toBe(`DONE ${cmd} -1 ${errno}`);
        expect(r.exit).toEqual({ code: 0, signal: null });
        expect(r.records).toEqual([]); // an errno action makes no record
      }
    });

    test('socket(AF_UNIX) is allowed', async () => {
      const r = await forbidden('kill', 'call socket-unix', true, 0);
      expect(r.reply).toMatch(/^DONE socket-unix \d+ 0$/);
      expect(r.exit).toEqual({ code: 0, signal: null });
    });
  });

  (seccompLogReadable() ? test : test.skip)('the kernel log has the record too (no watch: what a supervisor started without one finds)', async () => {
    await new Promise((r) => setTimeout(r, 5500)); // printk_ratelimit's interval: the burst is whole again
    const cursor = seccompLogCursor();
    const s = await startServe(light('kill'));
    try {
      s.send('call ptrace');
      expect(await exitWithin(s)).toEqual({ code: null, signal: 'SIGSYS' });
      let got: SeccompRecord[] = [];
      for (let i = 0; i < 100 && !got.length; i++) {
        got = readSeccompRecords({ pid: s.pid, after: cursor });
        if (!got.length) await new Promise((r) => setTimeout(r, 20));
      }
      expect(got.map((x) => [x.name, x.action, x.sig, x.source])).toEqual([['ptrace', 'kill_process', 31, 'kmsg']]);
      expect(await describeSeccompDeath(s.pid, { after: cursor, timeoutMs: 100 })).toBe(
        `the server (pid ${s.pid}) was killed by seccomp: it made the forbidden system call ptrace (101); run with --seccomp log to find every missing call`,
      );
    } finally {
      await s.cleanup();
    }
  });

  describe('log mode: the call runs and the kernel records it', () => {
    (records ? test : test.skip)('ptrace, a raw socket and mount run (and fail or succeed as they would) with one record each', async () => {
      for (const [cmd, name, reply] of [
        ['ptrace', 'ptrace', /^DONE ptrace -1 3$/ /* ESRCH */],
        ['socket-raw', 'socket', /^DONE socket-raw \d+ 0$/],
        ['mount', 'mount', /^DONE mount -1 2$/ /* ENOENT */],
      ] as const) {
        const r = await forbidden('log', `call ${cmd}`, true);
        expect(r.reply).toMatch(reply);
        expect(r.exit).toEqual({ code: 0, signal: null });
        expect(r.records.map((x) => [x.name, x.action, x.sig])).toEqual([[name, 'log', 0]]);
      }
    });

    test('execve of /bin/sh really runs the shell', async () => {
      const r = await forbidden('log', 'call execve');
      expect(r.exit).toEqual({ code: 42, signal: null });
      if (records) expect(r.records[0]).toMatchObject({ name: 'execve', action: 'log' });
    });
  });

  describe('trap mode: the process ends with one fatal line naming the call', () => {
    test.each([
      ['call ptrace', 'ptrace'],
      ['pool ptrace', 'ptrace'],
      ['call socket-raw', 'socket'],
      ['call mount', 'mount'],
    ])('%s', async (cmd, name) => {
      const r = await forbidden('trap', cmd, false, 0);
      expect(r.reply).toBeUndefined();
      expect(r.exit).toEqual({ code: null, signal: 'SIGSYS' });
      const lines = r.stderr.split('\n').filter((l) => l.includes('"seccomp":"trap"'));
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({ level: 60, syscall: name, nr: NR[name], pid: r.pid });
      expect(lines[0]).toContain(`forbidden system call ${name} (${NR[name]}); ending the process`);
    });
  });
});
