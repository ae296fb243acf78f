// seccomp(2) and the pieces a filter needs: PR_SET_NO_NEW_PRIVS, the
// classic-BPF program (struct sock_filter[] in a Buffer, handed over as a
// struct sock_fprog), SECCOMP_GET_ACTION_AVAIL, and a SIGSYS handler for
// SECCOMP_RET_TRAP that is machine code, not JavaScript (see
// installSigsysHandler). Nothing here knows which calls duofs needs:
// src/sandbox/seccomp*.ts decides that.
import koffi from 'koffi';
import { SysError } from './errno.js';
import { c, errno } from './libc.js';
import { SOCK_RAW, SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_DONTWAIT } from './constants.js';

const lib = koffi.load('libc.so.6');
const prctl = lib.func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)');
// syscall(2) with seccomp's fixed arity: glibc has no seccomp() wrapper.
const sysSeccomp = lib.func('syscall', 'long', ['long', 'uint32_t', 'uint32_t', 'void *']);
const mmap = lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
const mprotect = lib.func('int mprotect(void *addr, size_t len, int prot)');
const sigaction = lib.func('int sigaction(int sig, const void *act, _Out_ void *oldact)');

const PR_SET_NO_NEW_PRIVS = 38;
const PR_GET_NO_NEW_PRIVS = 39;
const PR_GET_SECCOMP = 21;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_GET_ACTION_AVAIL = 2;

/** SECCOMP_FILTER_FLAG_*: TSYNC puts the filter on every thread of the process (or fails naming one that cannot take it). */
export const SECCOMP_FILTER_FLAG_TSYNC = 1;
export const SECCOMP_FILTER_FLAG_LOG = 2;

/** SECCOMP_RET_* (the action is the high 16 bits, the low 16 are data: an errno for ERRNO). */
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_KILL_THREAD = 0x00000000;
export const SECCOMP_RET_TRAP = 0x00030000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_LOG = 0x7ffc0000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const retErrno = (e: number): number => (SECCOMP_RET_ERRNO | (e & 0xffff)) >>> 0;

/** AUDIT_ARCH_* as seccomp_data.arch carries them. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_AARCH64 = 0xc00000b7;
/** x86_64: a syscall number with this bit set is an x32-ABI call. */
export const X32_SYSCALL_BIT = 0x40000000;

/** The architecture this process runs on, as seccomp sees it, and its seccomp(2) number. */
export function nativeArch(): { name: 'x86_64' | 'aarch64'; audit: number; seccompNr: number } {
  if (process.arch === 'x64') return { name: 'x86_64', audit: AUDIT_ARCH_X86_64, seccompNr: 317 };
  if (process.arch === 'arm64') return { name: 'aarch64', audit: AUDIT_ARCH_AARCH64, seccompNr: 277 };
  throw new SysError(38 /* ENOSYS */, 'seccomp', `no filter for architecture ${process.arch}`);
}

// ---- classic BPF ---------------------------------------------------------

// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
export const SECCOMP_DATA_NR = 0;
export const SECCOMP_DATA_ARCH = 4;
/** Offset of the low 32 bits of argument i (little-endian: x86_64 and aarch64). */
export const argLow = (i: number): number => 16 + 8 * i;
/** Offset of the high 32 bits of argument i. */
export const argHigh = (i: number): number => 16 + 8 * i + 4;

const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JMP_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K = 0x06; // BPF_RET | BPF_K
const BPF_MAXINSNS = 4096;

export interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

export const bpf = {
  /** A = the 32-bit word at `offset` in seccomp_data */
  load: (offset: number): Insn => ({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: offset }),
  /** pc += (A == k) ? jt : jf */
  jeq: (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JEQ_K, jt, jf, k: k >>> 0 }),
  /** pc += (A & k) ? jt : jf */
  jset: (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JSET_K, jt, jf, k: k >>> 0 }),
  ret: (action: number): Insn => ({ code: BPF_RET_K, jt: 0, jf: 0, k: action >>> 0 }),
};

/** The program as struct sock_filter[] (u16 code, u8 jt, u8 jf, u32 k: 8 bytes each). */
export function encodeProgram(prog: readonly Insn[]): Buffer {
  if (prog.length === 0 || prog.length > BPF_MAXINSNS) throw new SysError(22 /* EINVAL */, 'seccomp', `a program of ${prog.length} instructions`);
  const b = Buffer.alloc(prog.length * 8);
  prog.forEach((i, n) => {
    if (i.jt > 255 || i.jf > 255 || i.jt < 0 || i.jf < 0) throw new SysError(22, 'seccomp', `instruction ${n}: jump out of range`);
    b.writeUInt16LE(i.code, n * 8);
    b.writeUInt8(i.jt, n * 8 + 2);
    b.writeUInt8(i.jf, n * 8 + 3);
    b.writeUInt32LE(i.k >>> 0, n * 8 + 4);
  });
  return b;
}

// ---- the calls -----------------------------------------------------------

/** prctl(PR_SET_NO_NEW_PRIVS, 1): required for an unprivileged filter; TSYNC carries it to every thread. */
export function setNoNewPrivs(): void {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw new SysError(errno(), 'prctl', 'PR_SET_NO_NEW_PRIVS');
}

export function noNewPrivs(): boolean {
  return prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) === 1;
}

/** 0: no filter, 2: filter mode (this thread). */
export function seccompMode(): number {
  return prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
}

/** Whether the kernel knows this SECCOMP_RET_* action (SECCOMP_GET_ACTION_AVAIL). */
export function seccompActionAvailable(action: number): boolean {
  const a = Buffer.alloc(4);
  a.writeUInt32LE(action >>> 0, 0);
  return Number(sysSeccomp(nativeArch().seccompNr, SECCOMP_GET_ACTION_AVAIL, 0, a)) === 0;
}

/**
 * seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog). With TSYNC the kernel
 * answers a positive thread id when one thread cannot take the filter (it
 * has a filter of its own that is not an ancestor of ours): then nothing
 * was installed anywhere.
 */
export function installFilter(program: Buffer, flags: number): void {
  const fprog = Buffer.alloc(16); // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
  fprog.writeUInt16LE(program.length / 8, 0);
  fprog.writeBigUInt64LE(BigInt(c.addressOf(program, program, 0) as number | bigint), 8);
  const r = Number(sysSeccomp(nativeArch().seccompNr, SECCOMP_SET_MODE_FILTER, flags >>> 0, fprog));
  void program; // the kernel copied the program; it had to stay alive until here
  if (r < 0) throw new SysError(errno(), 'seccomp', 'SECCOMP_SET_MODE_FILTER');
  if (r > 0) throw new SysError(16 /* EBUSY */, 'seccomp', `SECCOMP_FILTER_FLAG_TSYNC: thread ${r} cannot take the filter`);
}

// ---- SIGSYS (SECCOMP_RET_TRAP) -------------------------------------------

const SIGSYS = 31;
const SA_SIGINFO = 4;
const SA_NODEFER = 0x40000000;
const SA_RESETHAND = 0x80000000;
const PROT_READ = 1;
const PROT_WRITE = 2;
const PROT_EXEC = 4;
const MAP_PRIVATE = 2;
const MAP_ANONYMOUS = 0x20;
const PAGE = 4096;
const CODE_SIZE = 256;

/*
 * The handler, x86_64 (SysV: rdi = signo, rsi = siginfo_t *, rdx = ucontext):
 *
 *     mov    eax, [rsi+24]        ; si_syscall (siginfo _sigsys: call_addr at 16, syscall at 24, arch at 28)
 *     cmp    eax, N
 *     jb     1f
 *     mov    eax, N               ; unknown number (or an x32 one): the generic line
 *  1: shl    rax, 4               ; 16-byte entries { char *line; size_t len; }
 *     movabs rcx, TABLE
 *     mov    rsi, [rcx+rax]
 *     mov    rdx, [rcx+rax+8]
 *     mov    edi, FD
 *     mov    eax, 1               ; write(FD, line, len)
 *     syscall
 *     mov    eax, 39              ; getpid
 *     syscall
 *     mov    edi, eax
 *     mov    eax, 186             ; gettid
 *     syscall
 *     mov    esi, eax
 *     mov    edx, 31
 *     mov    eax, 234             ; tgkill(pid, tid, SIGSYS): SA_RESETHAND made SIGSYS's action the default
 *     syscall                     ; again and SA_NODEFER leaves it unblocked, so this ends the process here
 *     mov    edi, 159
 *     mov    eax, 231             ; exit_group(128 + SIGSYS) should tgkill ever return
 *     syscall
 *     ud2
 *
 * Why machine code: a trapped call returns to its caller with the syscall
 * number in the result register (the kernel rolls the registers back for
 * the handler), so ptrace "returns" 101 and socket "returns" fd 41. Node's
 * process.on('SIGSYS') only notes the signal in a pipe for the event loop:
 * the trapped thread runs on with the bogus result (a libuv epoll_wait that
 * "returned" 232 events would spin or crash before the loop ever got to the
 * listener), and JavaScript cannot run inside a signal handler. This code
 * is async-signal-safe, runs on the thread that made the call, and ends the
 * process before the call returns. The lines are made in JavaScript at
 * install time, one per syscall number, into the same read-only mapping.
 */
export function handlerCode(n: number, table: bigint, fd: number): Buffer {
  const u32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
  const u64 = (v: bigint): number[] => [...u32(Number(v & 0xffffffffn)), ...u32(Number(v >> 32n))];
  return Buffer.from([
    0x8b,
    0x46,
    0x18, // mov eax, [rsi+24]
    0x3d,
    ...u32(n), // cmp eax, n
    0x72,
    0x05, // jb +5
    0xb8,
    ...u32(n), // mov eax, n
    0x48,
    0xc1,
    0xe0,
    0x04, // shl rax, 4
    0x48,
    0xb9,
    ...u64(table), // movabs rcx, table
    0x48,
    0x8b,
    0x34,
    0x01, // mov rsi, [rcx+rax]
    0x48,
    0x8b,
    0x54,
    0x01,
    0x08, // mov rdx, [rcx+rax+8]
    0xbf,
    ...u32(fd), // mov edi, fd
    0xb8,
    1,
    0,
    0,
    0,
    0x0f,
    0x05, // write
    0xb8,
    39,
    0,
    0,
    0,
    0x0f,
    0x05, // getpid
    0x89,
    0xc7, // mov edi, eax
    0xb8,
    186,
    0,
    0,
    0,
    0x0f,
    0x05, // gettid
    0x89,
    0xc6, // mov esi, eax
    0xba,
    SIGSYS,
    0,
    0,
    0, // mov edx, SIGSYS
    0xb8,
    234,
    0,
    0,
    0,
    0x0f,
    0x05, // tgkill
    0xbf,
    159,
    0,
    0,
    0, // mov edi, 159
    0xb8,
    231,
    0,
    0,
    0,
    0x0f,
    0x05, // exit_group
    0x0f,
    0x0b, // ud2
  ]);
}

/** Whether installSigsysHandler has machine code for this architecture. */
export const sigsysHandlerSupported = (): boolean => process.arch === 'x64';

/**
 * Installs a SIGSYS handler (SA_SIGINFO | SA_RESETHAND | SA_NODEFER) that
 * writes `lines[si_syscall]` (or `fallback` for any other number) to `fd`
 * and then ends the process by SIGSYS, before the trapped call returns.
 * Call before the filter goes in: it maps memory and changes protections.
 * The mapping is never unmapped (the handler must outlive every thread).
 */
export function installSigsysHandler(lines: readonly string[], fallback: string, fd = 2): void {
  if (!sigsysHandlerSupported()) throw new SysError(38 /* ENOSYS */, 'sigaction', `SIGSYS handler on ${process.arch}`);
  const n = lines.length;
  const texts = [...lines, fallback].map((s) => Buffer.from(s));
  const tableAt = CODE_SIZE;
  let stringsAt = tableAt + (n + 1) * 16;
  const size = Math.ceil((stringsAt + texts.reduce((a, t) => a + t.length, 0)) / PAGE) * PAGE;
  const p = mmap(null, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) as unknown;
  const base = BigInt(c.addressOf(p, p, 0) as number | bigint);
  if (base === 0xffffffffffffffffn || base === 0n) throw new SysError(errno(), 'mmap', 'SIGSYS handler');
  const mem = Buffer.from(koffi.view(p, size));
  const code = handlerCode(n, base + BigInt(tableAt), fd);
  if (code.length > CODE_SIZE) throw new Error('SIGSYS handler: code too long');
  code.copy(mem, 0);
  texts.forEach((t, i) => {
    mem.writeBigUInt64LE(base + BigInt(stringsAt), tableAt + i * 16);
    mem.writeBigUInt64LE(BigInt(t.length), tableAt + i * 16 + 8);
    t.copy(mem, stringsAt);
    stringsAt += t.length;
  });
  if (mprotect(p, size, PROT_READ | PROT_EXEC) < 0) throw new SysError(errno(), 'mprotect', 'SIGSYS handler');
  // glibc's struct sigaction (x86_64): handler 8, sa_mask 128, sa_flags 4 (+4 pad), sa_restorer 8.
  // glibc supplies SA_RESTORER and its restorer; sa_mask stays empty.
  const act = Buffer.alloc(152);
  act.writeBigUInt64LE(base, 0);
  act.writeUInt32LE((SA_SIGINFO | SA_NODEFER | SA_RESETHAND) >>> 0, 136);
  if (sigaction(SIGSYS, act, Buffer.alloc(152)) < 0) throw new SysError(errno(), 'sigaction', 'SIGSYS');
}

// ---- the audit records seccomp makes (NETLINK_AUDIT, multicast) ----------

const AF_NETLINK = 16;
const NETLINK_AUDIT = 9;
const AUDIT_NLGRP_READLOG = 1;
const EAGAIN = 11;
const EINTR = 4;
const nl = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  bind: lib.func('int bind(int fd, const void *addr, uint32_t len)'),
  recv: lib.func('int64_t recv(int fd, _Out_ void *buf, size_t len, int flags)'),
  close: lib.func('int close(int fd)'),
};

/**
 * A socket on the kernel audit's read-only multicast group: every audit
 * record (seccomp's are type 1326) made while it is open, whether or not an
 * audit daemon runs, and without the kernel log's rate limit. Needs
 * CAP_AUDIT_READ (root has it): EPERM otherwise; EPROTONOSUPPORT without
 * audit in the kernel.
 */
export function openAuditReadlog(): number {
  const fd = Number(nl.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_AUDIT));
  if (fd < 0) throw new SysError(errno(), 'socket', 'NETLINK_AUDIT');
  const addr = Buffer.alloc(12); // struct sockaddr_nl { u16 family; u16 pad; u32 pid; u32 groups; }
  addr.writeUInt16LE(AF_NETLINK, 0);
  addr.writeUInt32LE(AUDIT_NLGRP_READLOG, 8);
  if (Number(nl.bind(fd, addr, addr.length)) < 0) {
    const e = errno();
    nl.close(fd);
    throw new SysError(e, 'bind', 'NETLINK_AUDIT AUDIT_NLGRP_READLOG');
  }
  return fd;
}

/** The records queued on an openAuditReadlog() socket, without waiting: (type, text) each. */
export function readAuditRecords(fd: number): { type: number; text: string }[] {
  const out: { type: number; text: string }[] = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    const n = Number(nl.recv(fd, buf, buf.length, MSG_DONTWAIT));
    if (n < 0) {
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return out;
      throw new SysError(e, 'recv', 'NETLINK_AUDIT');
    }
    // nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; } then the record's text
    for (let at = 0; at + 16 <= n; ) {
      const len = buf.readUInt32LE(at);
      if (len < 16 || at + len > n) break;
      out.push({ type: buf.readUInt16LE(at + 4), text: buf.toString('utf8', at + 16, at + len).replace(/\0+$/, '') });
      at += (len + 3) & ~3;
    }
  }
}

export function closeAuditReadlog(fd: number): void {
  nl.close(fd);
}
