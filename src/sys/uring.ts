// io_uring, raw: the three syscalls, the mapped rings and the eventfd the
// kernel signals when it posts a completion. The rings are shared memory:
// the kernel writes the SQ head and the CQ tail, we write the SQ tail and
// the CQ head. We read the kernel's indexes with Atomics.load and publish
// ours with Atomics.store, which V8 neither reorders nor caches (on x86-64
// that is all the ordering the protocol needs). Nothing here knows what a
// request means; src/io/uring.ts does.
//
// Layouts from <linux/io_uring.h>: io_uring_params 120 bytes (sq_off at 40,
// cq_off at 80), SQE 64 bytes, CQE 16 bytes.
import koffi from 'koffi';
import { SysError } from './errno.js';
import { c, errno } from './libc.js';

const lib = koffi.load('libc.so.6');

// Fixed-arity views of syscall(2): glibc has no io_uring wrappers.
const sysSetup = lib.func('syscall', 'long', ['long', 'uint32_t', 'void *']);
const sysEnter = lib.func('syscall', 'long', ['long', 'int', 'uint32_t', 'uint32_t', 'uint32_t', 'void *', 'size_t']);
const sysRegister = lib.func('syscall', 'long', ['long', 'int', 'uint32_t', 'void *', 'uint32_t']);
const mmap = lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
const munmap = lib.func('int munmap(void *addr, size_t length)');
const eventfd = lib.func('int eventfd(unsigned int initval, int flags)');

const SYS_io_uring_setup = 425;
const SYS_io_uring_enter = 426;
const SYS_io_uring_register = 427;

const IORING_OFF_SQ_RING = 0;
const IORING_OFF_CQ_RING = 0x8000000;
const IORING_OFF_SQES = 0x10000000;
const IORING_FEAT_SINGLE_MMAP = 1;
const IORING_REGISTER_EVENTFD = 4;
const IORING_UNREGISTER_EVENTFD = 5;
const IORING_REGISTER_RESTRICTIONS = 11;
const IORING_REGISTER_ENABLE_RINGS = 12;
const IORING_SETUP_R_DISABLED = 1 << 6;
const IORING_RESTRICTION_REGISTER_OP = 0;
const IORING_RESTRICTION_SQE_OP = 1;
const IORING_RESTRICTION_SQE_FLAGS_ALLOWED = 2;

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_POPULATE = 0x8000;
const MAP_FAILED = 0xffffffffffffffffn;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EINTR = 4;

export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_FALLOCATE = 17;
export const IORING_FSYNC_DATASYNC = 1;
/** Opcodes the ring refuses (-EACCES): everything but the four above. For tests. */
export const IORING_OP_OPENAT = 18;

/**
 * The only operations this ring will ever run, fixed before it is enabled
 * (IORING_REGISTER_RESTRICTIONS). Requests on a ring are not system calls, so
 * the sandbox's seccomp filter never sees them: without this, code that took
 * the server over could open files or sockets through the ring.
 */
const ALLOWED_SQE_OPS = [IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE];
const ALLOWED_REGISTER_OPS = [IORING_UNREGISTER_EVENTFD];

function restrictions(): Buffer {
  const entries: [number, number][] = [
    ...ALLOWED_REGISTER_OPS.map((op): [number, number] => [IORING_RESTRICTION_REGISTER_OP, op]),
    ...ALLOWED_SQE_OPS.map((op): [number, number] => [IORING_RESTRICTION_SQE_OP, op]),
    [IORING_RESTRICTION_SQE_FLAGS_ALLOWED, 0], // no SQE flags (no fixed files, links, or drains)
  ];
  const b = Buffer.alloc(16 * entries.length); // struct io_uring_restriction
  entries.forEach(([opcode, arg], i) => {
    b.writeUInt16LE(opcode, i * 16);
    b.writeUInt8(arg, i * 16 + 2);
  });
  return b;
}

const SQE_SIZE = 64;
const CQE_SIZE = 16;
const TWO32 = 4294967296;

type Ptr = bigint;

function mapRing(fd: number, length: number, offset: number, what: string): Ptr {
  const p = mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset) as bigint | null;
  if (p === null || BigInt(p) === MAP_FAILED) throw new SysError(errno(), 'mmap', `io_uring ${what}`);
  return BigInt(p);
}

/** Writes a u64 (a non-negative number below 2^53, or a bigint) as two u32 words at `w[at]`, `w[at+1]`. */
function put64(w: Uint32Array, at: number, v: number | bigint): void {
  if (typeof v === 'bigint') {
    w[at] = Number(v & 0xffffffffn);
    w[at + 1] = Number((v >> 32n) & 0xffffffffn);
  } else {
    w[at] = v >>> 0;
    w[at + 1] = Math.floor(v / TWO32);
  }
}

/** One completion as `reap` hands it over. */
export type CompletionHandler = (userData: number, res: number) => void;

/**
 * A ring set up with io_uring_setup, its mappings and a registered
 * eventfd. Single-threaded: only the event loop thread touches it.
 */
export class IoUring {
  readonly fd: number;
  readonly eventFd: number;
  readonly sqEntries: number;
  readonly cqEntries: number;
  readonly features: number;

  private readonly maps: { ptr: Ptr; len: number }[] = [];
  private readonly sqRing: Uint32Array;
  private readonly cqRing: Uint32Array;
  private readonly cqRingI32: Int32Array;
  private readonly sqes: Uint32Array;
  private readonly sqHeadAt: number;
  private readonly sqTailAt: number;
  private readonly sqMask: number;
  private readonly cqHeadAt: number;
  private readonly cqTailAt: number;
  private readonly cqMask: number;
  private readonly cqesAt: number;
  /** our SQ tail, published to the kernel on submit */
  private sqTail: number;
  private cqHead: number;
  private poller: ReturnType<typeof koffi.node.poll> | null = null;
  private readonly drainBuf = Buffer.alloc(8);
  private closed = false;
  /** only READV, WRITEV, FSYNC and FALLOCATE can run on this ring */
  readonly restricted: boolean = false;

  /** Throws SysError('io_uring_setup', errno) when the kernel refuses a ring (ENOSYS, EPERM, EINVAL...). */
  constructor(entries: number) {
    let p = Buffer.alloc(120);
    p.writeUInt32LE(IORING_SETUP_R_DISABLED, 8);
    let fd = Number(sysSetup(SYS_io_uring_setup, entries >>> 0, p));
    if (fd < 0 && errno() === 22 /* EINVAL: before Linux 5.10, no disabled rings */) {
      p = Buffer.alloc(120);
      fd = Number(sysSetup(SYS_io_uring_setup, entries >>> 0, p));
    }
    if (fd < 0) throw new SysError(errno(), 'io_uring_setup', `${entries} entries`);
    this.fd = fd;
    const disabled = (p.readUInt32LE(8) & IORING_SETUP_R_DISABLED) !== 0;
    let efd = -1;
    try {
      this.sqEntries = p.readUInt32LE(0);
      this.cqEntries = p.readUInt32LE(4);
      this.features = p.readUInt32LE(20);
      const sq = (k: number): number => p.readUInt32LE(40 + k * 4); // head tail ring_mask ring_entries flags dropped array
      const cq = (k: number): number => p.readUInt32LE(80 + k * 4); // head tail ring_mask ring_entries overflow cqes flags
      const sqLen = sq(6) + this.sqEntries * 4;
      const cqLen = cq(5) + this.cqEntries * CQE_SIZE;
      let sqPtr: Ptr;
      let cqPtr: Ptr;
      if (this.features & IORING_FEAT_SINGLE_MMAP) {
        const len = Math.max(sqLen, cqLen);
        sqPtr = cqPtr = this.map(len, IORING_OFF_SQ_RING, 'rings');
        this.sqRing = new Uint32Array(koffi.view(sqPtr, len));
        this.cqRing = this.sqRing;
        this.cqRingI32 = new Int32Array(this.sqRing.buffer);
      } else {
        sqPtr = this.map(sqLen, IORING_OFF_SQ_RING, 'SQ ring');
        cqPtr = this.map(cqLen, IORING_OFF_CQ_RING, 'CQ ring');
        this.sqRing = new Uint32Array(koffi.view(sqPtr, sqLen));
        this.cqRing = new Uint32Array(koffi.view(cqPtr, cqLen));
        this.cqRingI32 = new Int32Array(this.cqRing.buffer);
      }
      const sqesLen = this.sqEntries * SQE_SIZE;
      this.sqes = new Uint32Array(koffi.view(this.map(sqesLen, IORING_OFF_SQES, 'SQEs'), sqesLen));
      this.sqHeadAt = sq(0) / 4;
      this.sqTailAt = sq(1) / 4;
      this.sqMask = this.sqRing[sq(2) / 4]!;
      this.cqHeadAt = cq(0) / 4;
      this.cqTailAt = cq(1) / 4;
      this.cqMask = this.cqRing[cq(2) / 4]!;
      this.cqesAt = cq(5) / 4;
      // SQE i always sits in array slot i: the array never changes again.
      const arrayAt = sq(6) / 4;
      for (let i = 0; i < this.sqEntries; i++) this.sqRing[arrayAt + i] = i;
      this.sqTail = Atomics.load(this.sqRing, this.sqTailAt);
      this.cqHead = Atomics.load(this.cqRing, this.cqHeadAt);

      efd = Number(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (efd < 0) throw new SysError(errno(), 'eventfd', 'for io_uring completions');
      const arg = Buffer.alloc(4);
      arg.writeInt32LE(efd, 0);
      if (Number(sysRegister(SYS_io_uring_register, fd, IORING_REGISTER_EVENTFD, arg, 1)) < 0) {
        throw new SysError(errno(), 'io_uring_register', 'IORING_REGISTER_EVENTFD');
      }
      this.eventFd = efd;
      if (disabled) {
        const r = restrictions();
        if (Number(sysRegister(SYS_io_uring_register, fd, IORING_REGISTER_RESTRICTIONS, r, r.length / 16)) < 0) {
          throw new SysError(errno(), 'io_uring_register', 'IORING_REGISTER_RESTRICTIONS');
        }
        if (Number(sysRegister(SYS_io_uring_register, fd, IORING_REGISTER_ENABLE_RINGS, null, 0)) < 0) {
          throw new SysError(errno(), 'io_uring_register', 'IORING_REGISTER_ENABLE_RINGS');
        }
        this.restricted = true;
      }
    } catch (e) {
      this.unmapAll();
      if (efd >= 0) c.close(efd);
      c.close(fd);
      throw e;
    }
  }

  private map(len: number, offset: number, what: string): Ptr {
    const ptr = mapRing(this.fd, len, offset, what);
    this.maps.push({ ptr, len });
    return ptr;
  }

  private unmapAll(): void {
    for (const m of this.maps.splice(0)) munmap(m.ptr, m.len);
  }

  /** Free SQEs (written but unsubmitted ones count as used). */
  sqSpace(): number {
    return this.sqEntries - ((this.sqTail - Atomics.load(this.sqRing, this.sqHeadAt)) >>> 0);
  }

  /** SQEs written and not yet taken by the kernel. */
  unsubmitted(): number {
    return (this.sqTail - Atomics.load(this.sqRing, this.sqHeadAt)) >>> 0;
  }

  /**
   * Fills the next SQE (the caller has checked sqSpace()). `off` and `addr`
   * are u64 fields, `len` and `opFlags` (rw_flags, fsync_flags) u32.
   * Invisible to the kernel until submit().
   */
  prep(opcode: number, fd: number, off: number | bigint, addr: number | bigint, len: number, opFlags: number, userData: number): void {
    const w = this.sqes;
    const at = ((this.sqTail & this.sqMask) * SQE_SIZE) / 4;
    w.fill(0, at, at + SQE_SIZE / 4);
    w[at] = opcode; // opcode u8, flags u8, ioprio u16 = 0
    w[at + 1] = fd >>> 0;
    put64(w, at + 2, off);
    put64(w, at + 4, addr);
    w[at + 6] = len >>> 0;
    w[at + 7] = opFlags >>> 0;
    w[at + 8] = userData >>> 0;
    this.sqTail = (this.sqTail + 1) >>> 0;
  }

  /**
   * Publishes the SQ tail and hands the kernel every SQE not yet taken
   * (io_uring_enter, no waiting). Returns how many it took, or -errno.
   */
  submit(): number {
    Atomics.store(this.sqRing, this.sqTailAt, this.sqTail);
    const n = this.unsubmitted();
    if (n === 0) return 0;
    for (;;) {
      const r = Number(sysEnter(SYS_io_uring_enter, this.fd, n, 0, 0, null, 0));
      if (r >= 0) return r;
      const e = errno();
      if (e !== EINTR) return -e;
    }
  }

  /**
   * Takes back SQEs the kernel refused to take (submit failed): resets the
   * tail to the head and returns their user_data, oldest first.
   */
  unprep(): number[] {
    const head = Atomics.load(this.sqRing, this.sqHeadAt);
    const out: number[] = [];
    for (let t = head; t !== this.sqTail; t = (t + 1) >>> 0) out.push(this.sqes[((t & this.sqMask) * SQE_SIZE) / 4 + 8]!);
    this.sqTail = head;
    Atomics.store(this.sqRing, this.sqTailAt, head);
    return out;
  }

  /** Hands every posted CQE to `on` (user_data's low 32 bits, res) and frees its slot; returns the count. */
  reap(on: CompletionHandler): number {
    let n = 0;
    for (;;) {
      const tail = Atomics.load(this.cqRing, this.cqTailAt);
      if (this.cqHead === tail) return n;
      const at = this.cqesAt + (this.cqHead & this.cqMask) * (CQE_SIZE / 4);
      const userData = this.cqRing[at]!;
      const res = this.cqRingI32[at + 2]!;
      this.cqHead = (this.cqHead + 1) >>> 0;
      Atomics.store(this.cqRing, this.cqHeadAt, this.cqHead);
      n++;
      on(userData, res);
    }
  }

  /**
   * Calls `onReady` on the event loop each time the kernel signals the
   * eventfd (after clearing it). The poll keeps the process alive only
   * while `hold(true)`: an idle ring must not stop the daemon exiting.
   */
  watch(onReady: () => void): void {
    if (this.poller) return;
    this.poller = koffi.node.poll(this.eventFd, { readable: true }, () => {
      c.read(this.eventFd, this.drainBuf, 8);
      onReady();
    });
    this.poller.unref();
  }

  /** Whether the eventfd poll keeps the event loop alive (while calls are in flight). */
  hold(on: boolean): void {
    if (on) this.poller?.ref();
    else this.poller?.unref();
  }

  /** Stops the poll, unregisters the eventfd, unmaps the rings, closes both fds. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poller?.close(); // before closing the fd: libuv must not poll a closed fd
    this.poller = null;
    sysRegister(SYS_io_uring_register, this.fd, IORING_UNREGISTER_EVENTFD, null, 0);
    this.unmapAll();
    c.close(this.eventFd);
    c.close(this.fd);
  }
}
