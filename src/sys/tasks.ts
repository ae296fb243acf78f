// The threads of this process as Linux sees them (tasks): thread ids, what
// /proc says of each one's credentials, and the primitives the sandbox uses
// to reach every libuv pool thread: gettid on the pool, and a pipe whose
// blocking write occupies one pool thread until the main thread drains it
// (and shows, through FIONREAD, that it has started).
import koffi from 'koffi';
import { c, cstr, errno } from './libc.js';
import { SysError } from './errno.js';
import { AT_FDCWD, O_CLOEXEC, O_DIRECTORY, O_NONBLOCK, O_RDONLY } from './constants.js';
import { getdents } from './dirents.js';

const lib = koffi.load('libc.so.6');
const sys0 = lib.func('syscall', 'long', ['long']);
const pipe2 = lib.func('int pipe2(_Out_ void *fds, int flags)');
const ioctlInt = lib.func('ioctl', 'int', ['int', 'unsigned long', '_Out_ void *']);

const SYS_gettid = 186;
const FIONREAD = 0x541b;
const F_SETFL = 4;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;

type Done = (r: number) => void;

/** The calling thread's id. */
export const gettid = (): number => Number(sys0(SYS_gettid));

/** The id of whichever pool thread runs this call. */
export function gettidOnPool(done: Done): void {
  sys0.async(SYS_gettid, (err: unknown, r: number | bigint) => done(err ? -5 : Number(r)));
}

/** A pipe: [read end, write end], both close-on-exec, the read end non-blocking. */
export function pipe(): [number, number] {
  const fds = Buffer.alloc(8);
  if (pipe2(fds, O_CLOEXEC) < 0) throw new SysError(errno(), 'pipe2');
  const r = fds.readInt32LE(0);
  const w = fds.readInt32LE(4);
  if (c.fcntlInt(r, F_SETFL, O_NONBLOCK) < 0) {
    const e = errno();
    c.close(r);
    c.close(w);
    throw new SysError(e, 'fcntl(F_SETFL)', 'pipe');
  }
  return [r, w];
}

/** Sets a pipe's capacity (the kernel rounds up to pages); returns the capacity it has now. */
export function setPipeSize(fd: number, bytes: number): number {
  if (c.fcntlInt(fd, F_SETPIPE_SZ, bytes) < 0) throw new SysError(errno(), 'fcntl(F_SETPIPE_SZ)', String(bytes));
  const n = c.fcntlInt(fd, F_GETPIPE_SZ, 0);
  if (n < 0) throw new SysError(errno(), 'fcntl(F_GETPIPE_SZ)');
  return n;
}

/** Bytes waiting in a pipe (FIONREAD), without reading them. */
export function pendingBytes(fd: number): number {
  const n = Buffer.alloc(4);
  if (ioctlInt(fd, FIONREAD, n) < 0) throw new SysError(errno(), 'ioctl(FIONREAD)');
  return n.readInt32LE(0);
}

/** write(2) of all of `buf` on a pool thread; `done` gets the count or -errno. `buf` must stay referenced. */
export function writeOnPool(fd: number, buf: Buffer, done: Done): void {
  c.write.async(fd, buf, buf.length, (err: unknown, r: number | bigint) => done(err ? -5 : Number(r) < 0 ? -errno() : Number(r)));
}

/** What /proc/<pid>/task/<tid>/status says of one thread. */
export interface TaskStatus {
  tid: number;
  comm: string;
  capInh: bigint;
  capPrm: bigint;
  capEff: bigint;
  capBnd: bigint;
  capAmb: bigint;
  noNewPrivs: boolean;
  /** 0 none, 1 strict, 2 filter */
  seccomp: number;
}

const readBuf = Buffer.alloc(8192);

/** The whole content of a small file (a /proc one), read through openat(dirfd, path). */
function readSmall(dirfd: number, path: string): string {
  const fd = c.openat(dirfd, cstr(path), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) throw new SysError(errno(), 'open', path);
  try {
    let out = '';
    for (;;) {
      const n = Number(c.read(fd, readBuf, readBuf.length));
      if (n < 0) throw new SysError(errno(), 'read', path);
      if (n === 0) return out;
      out += readBuf.toString('latin1', 0, n);
    }
  } finally {
    c.close(fd);
  }
}

function parseStatus(tid: number, comm: string, text: string): TaskStatus {
  const field = (k: string): string => {
    const m = new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(text);
    return m?.[1] ?? '0';
  };
  const hex = (k: string): bigint => BigInt('0x' + field(k));
  return {
    tid,
    comm,
    capInh: hex('CapInh'),
    capPrm: hex('CapPrm'),
    capEff: hex('CapEff'),
    capBnd: hex('CapBnd'),
    capAmb: hex('CapAmb'),
    noNewPrivs: field('NoNewPrivs') === '1',
    seccomp: Number(field('Seccomp')),
  };
}

/**
 * Every thread of process `pid` ('self' by default) with its capability
 * sets, as /proc shows them. `procFd` is an fd on a procfs root, for use
 * after pivot_root/chroot left no /proc by name; by default /proc is used.
 */
export function listTasks(pid: number | 'self' = 'self', procFd?: number): TaskStatus[] {
  const dirfd = procFd ?? AT_FDCWD;
  const base = procFd === undefined ? `/proc/${pid}/task` : `${pid}/task`;
  const d = c.openat(dirfd, cstr(base), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (d < 0) throw new SysError(errno(), 'open', base);
  const tids: number[] = [];
  try {
    const buf = Buffer.alloc(16384);
    for (;;) {
      const batch = getdents(d, buf, base);
      if (batch.length === 0) break;
      for (const e of batch) {
        const t = Number(e.name.toString('latin1'));
        if (Number.isInteger(t) && t > 0) tids.push(t);
      }
    }
  } finally {
    c.close(d);
  }
  const out: TaskStatus[] = [];
  for (const tid of tids.sort((a, b) => a - b)) {
    try {
      const comm = readSmall(dirfd, `${base}/${tid}/comm`).trim();
      out.push(parseStatus(tid, comm, readSmall(dirfd, `${base}/${tid}/status`)));
    } catch (e) {
      if (!((e instanceof SysError && e.errno === 2) /* ENOENT: the thread ended */)) throw e;
    }
  }
  return out;
}
