// Reading the kernel's seccomp records (audit type 1326, AUDIT_SECCOMP):
// for the tests, and for a supervisor that wants to say which syscall
// killed its server.
//
// Where they are (measured on kernel 6.18, no auditd): the kernel emits one
// record per SECCOMP_RET_LOG call and per SECCOMP_RET_KILL_* (the actions
// listed in /proc/sys/kernel/seccomp/actions_logged; TRAP and ERRNO only
// with SECCOMP_FILTER_FLAG_LOG, which duofs does not set). With no audit
// daemon connected, kauditd prints them to the kernel log, so they are in
// /dev/kmsg (what `dmesg` shows):
//   audit: type=1326 audit(1796346349.822:3): auid=4294967295 uid=0 gid=0
//   ses=4294967295 pid=4474 comm="t" exe="/tmp/sc/t" sig=31 arch=c000003e
//   syscall=110 compat=0 ip=0x7f7e1f5f3829 code=0x80000000
// sig=31 (SIGSYS) and code=0x80000000 for KILL_PROCESS; sig=0 and
// code=0x7ffc0000 for LOG. They arrive a little after the call (kauditd is
// a kernel thread), and printing is rate-limited (printk_ratelimit: 10 per
// 5 s, shared with the rest of the kernel), so a flood of log-mode records
// loses some. With auditd running they go to its log instead
// (/var/log/audit/audit.log, `type=SECCOMP msg=audit(...): ...`, same
// fields), which is read too. Reading /dev/kmsg needs root when
// kernel.dmesg_restrict is 1 (the default here): unprivileged readers get
// nothing, and say so.
//
// Both of those are after the fact and lossy. SeccompWatch is not: a
// socket on the audit's read-only multicast group (NETLINK_AUDIT,
// AUDIT_NLGRP_READLOG; needs CAP_AUDIT_READ) receives every record made
// while it is open, auditd or not, unthrottled. A supervisor opens one
// before it starts the server; the tests use one.
import { closeSync, openSync, readSync, readFileSync, constants } from 'node:fs';
import { closeAuditReadlog, openAuditReadlog, readAuditRecords } from '../sys/seccomp.js';
import { SYSCALLS_AARCH64, SYSCALLS_X86_64 } from './seccomp-syscalls.js';

export interface SeccompRecord {
  pid: number;
  comm: string;
  exe: string;
  /** the signal the action sent: 31 (SIGSYS) for KILL_*, 0 for LOG */
  sig: number;
  /** AUDIT_ARCH_*: 0xc000003e x86_64, 0xc00000b7 aarch64 */
  arch: number;
  syscall: number;
  /** the syscall's name on `arch`, or `syscall N` */
  name: string;
  /** the SECCOMP_RET_* action */
  code: number;
  action: 'kill_process' | 'kill_thread' | 'trap' | 'errno' | 'log' | 'other';
  /** audit serial, or the kmsg sequence: records of one source in order */
  seq: number;
  source: 'kmsg' | 'audit.log' | 'netlink';
}

const AUDIT_LOG = '/var/log/audit/audit.log';

const byNumber = (t: Readonly<Record<string, number>>): Map<number, string> => new Map(Object.entries(t).map(([k, v]) => [v, k]));
const NAMES = new Map<number, Map<number, string>>([
  [0xc000003e, byNumber(SYSCALLS_X86_64)],
  [0xc00000b7, byNumber(SYSCALLS_AARCH64)],
]);

/** The name of syscall `nr` on an AUDIT_ARCH_* architecture (x86_64 when not given). */
export function syscallName(nr: number, arch = 0xc000003e): string {
  return NAMES.get(arch)?.get(nr) ?? `syscall ${nr}`;
}

function actionOf(code: number): SeccompRecord['action'] {
  const a = ((code >>> 0) & 0xffff0000) >>> 0;
  if (a === 0x80000000) return 'kill_process';
  if (a === 0) return 'kill_thread';
  if (a === 0x00030000) return 'trap';
  if (a === 0x00050000) return 'errno';
  if (a === 0x7ffc0000) return 'log';
  return 'other';
}

/** One record's text (`... pid=1 comm="x" ... code=0x...`) -> a record, or undefined if it is no seccomp record. */
export function parseSeccompRecord(text: string, seq: number, source: SeccompRecord['source']): SeccompRecord | undefined {
  if (!/type=(1326|SECCOMP)\b/.test(text)) return undefined;
  const f = new Map<string, string>();
  for (const m of text.matchAll(/(\w+)=("([^"]*)"|\S+)/g)) f.set(m[1]!, m[3] ?? m[2]!);
  const num = (k: string, radix = 10): number | undefined => {
    const v = f.get(k);
    return v === undefined ? undefined : parseInt(v.replace(/^0x/, ''), radix);
  };
  const pid = num('pid');
  const syscall = num('syscall');
  const arch = num('arch', 16);
  const code = num('code', 16);
  if (pid === undefined || syscall === undefined || arch === undefined || code === undefined) return undefined;
  const serial = /audit\([\d.]+:(\d+)\)/.exec(text);
  return {
    pid,
    comm: f.get('comm') ?? '',
    exe: f.get('exe') ?? '',
    sig: num('sig') ?? 0,
    arch,
    syscall,
    name: syscallName(syscall, arch),
    code,
    action: actionOf(code),
    seq: source !== 'kmsg' && serial ? Number(serial[1]) : seq,
    source,
  };
}

/** Every record /dev/kmsg still holds, as (kmsg sequence, text); [] when it cannot be read. */
function kmsgLines(): { seq: number; text: string }[] | undefined {
  let fd: number;
  try {
    fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined; // EPERM (dmesg_restrict) or no /dev/kmsg (a container)
  }
  const out: { seq: number; text: string }[] = [];
  const buf = Buffer.alloc(8192); // one record per read; a record is at most ~1 KiB plus its dictionary
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // the ring overwrote records we had not read: go on with the next
        break; // EAGAIN: the end
      }
      if (n <= 0) break;
      const line = buf.toString('utf8', 0, n);
      const semi = line.indexOf(';');
      const seq = Number(line.slice(0, semi).split(',')[1]);
      out.push({ seq, text: line.slice(semi + 1).split('\n')[0]! });
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

export interface RecordQuery {
  /** only this process's records */
  pid?: number;
  /** only records after this cursor (see seccompLogCursor) */
  after?: SeccompLogCursor;
}

/** Where the logs end now: read with `after` to get only what comes later. */
export interface SeccompLogCursor {
  kmsg: number;
  audit: number;
}

/** Whether the kernel's seccomp records can be read here (root, or dmesg_restrict 0; or a readable audit log). */
export function seccompLogReadable(): boolean {
  return kmsgLines() !== undefined || auditLogLines() !== undefined;
}

function auditLogLines(): string[] | undefined {
  try {
    const text = readFileSync(AUDIT_LOG, 'utf8');
    return text.slice(-(4 << 20)).split('\n'); // the recent part is enough
  } catch {
    return undefined;
  }
}

/** The seccomp records the kernel has (kmsg, else audit.log), oldest first. */
export function readSeccompRecords(q: RecordQuery = {}): SeccompRecord[] {
  const out: SeccompRecord[] = [];
  for (const l of kmsgLines() ?? []) {
    if (q.after && l.seq <= q.after.kmsg) continue;
    const r = parseSeccompRecord(l.text, l.seq, 'kmsg');
    if (r && (q.pid === undefined || r.pid === q.pid)) out.push(r);
  }
  for (const l of auditLogLines() ?? []) {
    const r = parseSeccompRecord(l, 0, 'audit.log');
    if (!r || (q.after && r.seq <= q.after.audit)) continue;
    if (q.pid === undefined || r.pid === q.pid) out.push(r);
  }
  return out;
}

export function seccompLogCursor(): SeccompLogCursor {
  const k = kmsgLines() ?? [];
  const a = readSeccompRecords({}).filter((r) => r.source === 'audit.log');
  return { kmsg: k.length ? k[k.length - 1]!.seq : -1, audit: a.length ? a[a.length - 1]!.seq : -1 };
}

/**
 * Every seccomp record the kernel makes from now on (until close), as the
 * audit multicast group delivers them: complete and unthrottled, unlike the
 * kernel log. open() answers undefined without CAP_AUDIT_READ or audit.
 */
export class SeccompWatch {
  private readonly seen: SeccompRecord[] = [];
  private closed = false;

  private constructor(private readonly fd: number) {}

  static open(): SeccompWatch | undefined {
    try {
      return new SeccompWatch(openAuditReadlog());
    } catch {
      return undefined;
    }
  }

  /** The records so far (of `pid`, if given), oldest first. */
  records(pid?: number): SeccompRecord[] {
    if (!this.closed) {
      for (const m of readAuditRecords(this.fd)) {
        if (m.type !== 1326) continue;
        const r = parseSeccompRecord(`type=1326 ${m.text}`, 0, 'netlink');
        if (r) this.seen.push(r);
      }
    }
    return pid === undefined ? [...this.seen] : this.seen.filter((r) => r.pid === pid);
  }

  /** Waits up to `timeoutMs` for `n` records of `pid` (kauditd delivers them a little after the call). */
  async wait(pid: number, n = 1, timeoutMs = 1000): Promise<SeccompRecord[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.records(pid);
      if (r.length >= n || Date.now() >= deadline) return r;
      await new Promise((res) => setTimeout(res, 10));
    }
  }

  close(): void {
    if (this.closed) return;
    this.records();
    this.closed = true;
    closeAuditReadlog(this.fd);
  }
}

/**
 * Waits (up to `timeoutMs`) for the kernel's record of the call that killed
 * process `pid`, for a supervisor's "killed by seccomp" line. Undefined when
 * no record comes: not readable here, rate-limited away, or not seccomp.
 */
export async function waitForKillRecord(pid: number, o: DeathOptions = {}): Promise<SeccompRecord | undefined> {
  const deadline = Date.now() + (o.timeoutMs ?? 1000);
  const kill = (x: SeccompRecord): boolean => x.action === 'kill_process' || x.action === 'kill_thread';
  for (;;) {
    const r = (o.watch ? o.watch.records(pid) : readSeccompRecords({ pid, after: o.after })).find(kill);
    if (r || Date.now() >= deadline) return r;
    await new Promise((res) => setTimeout(res, 20));
  }
}

export interface DeathOptions {
  timeoutMs?: number;
  /** a watch opened before the server started: the complete record (else the kernel log is searched) */
  watch?: SeccompWatch | undefined;
  /** kernel log: only records after this cursor */
  after?: SeccompLogCursor;
}

/**
 * One line for a supervisor whose server died of SIGSYS: names the syscall
 * when the kernel's record can be found.
 */
export async function describeSeccompDeath(pid: number, o: DeathOptions = {}): Promise<string> {
  const r = (await waitForKillRecord(pid, o)) ?? (o.watch ? await waitForKillRecord(pid, { ...o, watch: undefined, timeoutMs: 100 }) : undefined);
  if (r)
    return `the server (pid ${pid}) was killed by seccomp: it made the forbidden system call ${r.name} (${r.syscall}); run with --seccomp log to find every missing call`;
  const where = o.watch || seccompLogReadable() ? 'no kernel record was found' : 'the kernel log cannot be read here (dmesg_restrict)';
  return `the server (pid ${pid}) died of SIGSYS: a forbidden system call under seccomp; ${where} (look for "type=1326" in dmesg or the audit log)`;
}
