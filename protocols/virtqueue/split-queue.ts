// The device side of a virtio 1.x split virtqueue over shared guest memory.
//
// Every descriptor is read once into locals (the guest may rewrite the table
// while we look), checked, and turned into views through GuestMemory. A chain
// the device cannot trust (a loop, an address outside guest memory, a
// writable descriptor before a readable one, a bad indirect table) marks the
// queue broken: it is then ignored until the frontend sets it up again, and
// the fault is reported once through onFault. Nothing here throws on guest
// input.
//
// Memory ordering: rings are read and written through typed arrays on the
// mapping. Atomics.load/store (sequentially consistent) order the avail index
// read before the descriptor reads, the used entries before the used index,
// and the used index (or avail_event) store before the event/flags reads that
// decide about notifications.
import { endianness } from 'node:os';
import { DescriptorChain, type ChainOwner } from './chain.js';
import type { GuestMemory, MappedRegion } from './guest-memory.js';

if (endianness() !== 'LE') throw new Error('virtqueues are little-endian; typed-array ring access assumes a little-endian host');

export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const VRING_USED_F_NO_NOTIFY = 1;
export const MAX_QUEUE_SIZE = 32768;

/** Bytes each ring occupies for a queue of `size` entries (event fields included). */
export const ringBytes = (size: number) => ({ desc: 16 * size, avail: 6 + 2 * size, used: 6 + 8 * size });
export const RING_ALIGN = { desc: 16, avail: 2, used: 4 } as const;

export interface RingView {
  buf: Buffer;
  region: MappedRegion;
}

export interface QueueRings {
  desc: RingView;
  avail: RingView;
  used: RingView;
}

export interface SplitQueueOptions {
  index: number;
  size: number;
  memory: GuestMemory;
  eventIdx: boolean;
  indirect: boolean;
  /** First avail index to consume (SET_VRING_BASE). */
  lastAvail: number;
  /** Signal the driver (write the call eventfd). */
  notify: () => void;
  /** The queue just broke; `fault` says why (for a log line naming the peer). */
  onFault: (fault: string) => void;
  /**
   * Guest physical address of the used ring when the frontend asked for
   * used-ring logging (SET_VRING_ADDR with VRING_F_LOG); null: not logged.
   */
  usedLogGpa?: number | null;
}

// Indirect tables are bounded by the descriptor count a 16-bit `next` can reach.
const MAX_INDIRECT = 65536;
const TWO32 = 2 ** 32;
const resolved = Promise.resolve();

export class SplitQueue implements ChainOwner {
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  private readonly memory: GuestMemory;
  private readonly notifyDriver: () => void;
  private readonly onFault: (fault: string) => void;
  private desc32!: Uint32Array;
  private avail16!: Uint16Array;
  private used16!: Uint16Array;
  private used32!: Uint32Array;
  private ringPins: MappedRegion[] = [];
  private lastAvailIdx: number;
  private nextUsed: number;
  private publishedUsed: number;
  private signalledUsed = 0;
  private signalledValid = false;
  private flushScheduled = false;
  private draining = false;
  private brokenBy: string | undefined;
  private gen = 0;
  private inflightCount = 0;
  private idleWaiters: (() => void)[] = [];
  private retired = false;
  /** See SplitQueueOptions.usedLogGpa; set again by setUsedLog when the frontend changes it. */
  private usedLogGpa: number | null;

  constructor(o: SplitQueueOptions, rings: QueueRings) {
    this.index = o.index;
    this.size = o.size;
    this.memory = o.memory;
    this.eventIdx = o.eventIdx;
    this.indirect = o.indirect;
    this.notifyDriver = o.notify;
    this.onFault = o.onFault;
    this.lastAvailIdx = o.lastAvail & 0xffff;
    this.usedLogGpa = o.usedLogGpa ?? null;
    this.setRings(rings);
    // The used index continues from what the ring holds (a restarted queue).
    this.nextUsed = this.publishedUsed = Atomics.load(this.used16, 1);
  }

  /** Points the queue at (possibly re-mapped) ring views; pins their regions. */
  setRings(r: QueueRings): void {
    const n = this.size;
    const old = this.ringPins;
    this.desc32 = new Uint32Array(r.desc.buf.buffer, r.desc.buf.byteOffset, 4 * n);
    this.avail16 = new Uint16Array(r.avail.buf.buffer, r.avail.buf.byteOffset, 3 + n);
    this.used16 = new Uint16Array(r.used.buf.buffer, r.used.buf.byteOffset, 3 + 4 * n);
    this.used32 = new Uint32Array(r.used.buf.buffer, r.used.buf.byteOffset, 1 + 2 * n);
    this.ringPins = [r.desc.region, r.avail.region, r.used.region];
    for (const p of this.ringPins) p.pin();
    for (const p of old) p.unpin();
  }

  /** Used-ring logging on (the used ring's guest physical address) or off (null). */
  setUsedLog(gpa: number | null): void {
    this.usedLogGpa = gpa;
  }

  /** Marks bytes [offset, offset+len) of the used ring in the dirty log (when both are on). */
  private logUsed(offset: number, len: number): void {
    if (this.usedLogGpa !== null) this.memory.logWrite(this.usedLogGpa + offset, len);
  }

  get lastAvail(): number {
    return this.lastAvailIdx;
  }

  get broken(): string | undefined {
    return this.brokenBy;
  }

  /** Chains popped and not yet completed (in this generation). */
  get inflight(): number {
    return this.inflightCount;
  }

  /**
   * Pops available chains and hands them to `dispatch`, at most `budget` of
   * them (so one queue cannot hold the event loop while its guest keeps
   * adding work). Returns true when it stopped at the budget: entries may
   * still be available, and the caller must call drain again soon (the
   * guest need not kick for them). Otherwise the ring was found empty, and
   * avail_event (EVENT_IDX) was re-armed and rechecked. Chains completed
   * synchronously by `dispatch` are published together, with one
   * interrupt, at the end.
   */
  drain(dispatch: (chain: DescriptorChain) => void, budget = Infinity): boolean {
    this.draining = true;
    try {
      for (;;) {
        let chain: DescriptorChain | null;
        while ((chain = this.pop()) !== null) {
          dispatch(chain);
          if (--budget <= 0) return this.brokenBy === undefined && !this.retired;
        }
        if (this.brokenBy !== undefined || this.retired || !this.eventIdx) return false;
        // Ask for a kick at the next new entry, then close the race with a driver
        // that added one before seeing our avail_event.
        Atomics.store(this.used16, 2 + 4 * this.size, this.lastAvailIdx);
        this.logUsed(4 + 8 * this.size, 2);
        if (Atomics.load(this.avail16, 1) === this.lastAvailIdx) return false;
      }
    } finally {
      this.draining = false;
      this.flush();
    }
  }

  /** The next available chain, or null (nothing available, or the queue is broken). */
  pop(): DescriptorChain | null {
    if (this.brokenBy !== undefined || this.retired) return null;
    const availIdx = Atomics.load(this.avail16, 1);
    const pending = (availIdx - this.lastAvailIdx) & 0xffff;
    if (pending === 0) return null;
    if (pending > this.size) return this.fail(`avail index jumped by ${pending}, more than the queue size ${this.size}`);
    const head = this.avail16[2 + (this.lastAvailIdx & (this.size - 1))]!;
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    if (head >= this.size) return this.fail(`head descriptor ${head} outside a queue of ${this.size}`);
    const chain = this.walk(head);
    if (chain !== null) this.inflightCount++;
    return chain;
  }

  private walk(head: number): DescriptorChain | null {
    const readable: Buffer[] = [];
    const writable: Buffer[] = [];
    const writableGpa: number[] = [];
    const pins: MappedRegion[] = [];
    let table = this.desc32;
    let tableLen = this.size;
    let inIndirect = false;
    let i = head;
    let budget = this.size; // descriptors left before we call it a loop
    for (;;) {
      if (budget-- === 0)
        return this.failChain(pins, `descriptor chain from head ${head} is longer than ${inIndirect ? 'its indirect table' : 'the queue'} (a loop?)`);
      const b = i * 4;
      const lo = table[b]!;
      const hi = table[b + 1]!;
      const len = table[b + 2]!;
      const fn = table[b + 3]!;
      const flags = fn & 0xffff;
      const next = fn >>> 16;
      if (hi >= 0x200000)
        return this.failChain(pins, `descriptor ${i} address 0x${((BigInt(hi) << 32n) | BigInt(lo)).toString(16)} is beyond guest memory`);
      const addr = hi * TWO32 + lo;
      if (flags & VRING_DESC_F_INDIRECT) {
        if (!this.indirect) return this.failChain(pins, `descriptor ${i} is indirect but INDIRECT_DESC was not negotiated`);
        if (inIndirect) return this.failChain(pins, `indirect descriptor ${i} inside an indirect table`);
        if (flags & VRING_DESC_F_NEXT) return this.failChain(pins, `indirect descriptor ${i} also has NEXT set`);
        if (len === 0 || len % 16 !== 0 || len / 16 > MAX_INDIRECT)
          return this.failChain(pins, `indirect table length ${len} is not a multiple of 16 between 16 and ${16 * MAX_INDIRECT}`);
        const t = this.indirectTable(addr, len);
        if (t === undefined) return this.failChain(pins, `indirect table [0x${addr.toString(16)}, +${len}) is outside guest memory`);
        table = t;
        tableLen = len / 16;
        budget = tableLen;
        inIndirect = true;
        i = 0;
        continue;
      }
      if (len !== 0) {
        const out = flags & VRING_DESC_F_WRITE ? writable : readable;
        if (out === readable && writable.length !== 0) return this.failChain(pins, `device-readable descriptor ${i} after a device-writable one`);
        if (!this.memory.translate(addr, len, out, pins))
          return this.failChain(pins, `descriptor ${i} [0x${addr.toString(16)}, +${len}) is outside guest memory`);
        if (out === writable) writableGpa.push(addr, len);
      }
      if (!(flags & VRING_DESC_F_NEXT)) break;
      if (next >= tableLen) return this.failChain(pins, `descriptor ${i} links to ${next}, outside its table of ${tableLen}`);
      i = next;
    }
    return new DescriptorChain(this.index, head, readable, writable, pins, this.gen, this, writableGpa);
  }

  /** The indirect table as u32 words; copied when it is split across views or unaligned. */
  private indirectTable(addr: number, len: number): Uint32Array | undefined {
    const views: Buffer[] = [];
    const pins: MappedRegion[] = [];
    const ok = this.memory.translate(addr, len, views, pins);
    for (const p of pins) p.unpin(); // read synchronously below; no need to keep it pinned
    if (!ok) return undefined;
    const v = views[0]!;
    if (views.length === 1 && v.byteOffset % 4 === 0) return new Uint32Array(v.buffer, v.byteOffset, len / 4);
    const copy = new Uint32Array(len / 4);
    const bytes = Buffer.from(copy.buffer);
    let at = 0;
    for (const s of views) at += s.copy(bytes, at);
    return copy;
  }

  private failChain(pins: MappedRegion[], fault: string): null {
    for (const p of pins) p.unpin();
    return this.fail(fault);
  }

  private fail(fault: string): null {
    if (this.brokenBy === undefined) {
      this.brokenBy = fault;
      this.onFault(fault);
    }
    return null;
  }

  /** Marks the queue broken from outside (e.g. the device found the request unusable). */
  markBroken(fault: string): void {
    this.fail(fault);
  }

  completeChain(chain: DescriptorChain, bytesWritten: number): void {
    const len = bytesWritten > 0 ? Math.min(Math.floor(bytesWritten), chain.writableLength) : 0;
    // Logged while the regions are still pinned, and even for a chain of an
    // abandoned generation: its bytes are in guest memory all the same.
    this.memory.logChainWrite(chain.writableGpa, len);
    for (const p of chain.pins) p.unpin();
    if (chain.generation !== this.gen || this.retired) return; // the queue was reset meanwhile
    const slot = this.nextUsed & (this.size - 1);
    this.used32[1 + 2 * slot] = chain.head;
    this.used32[2 + 2 * slot] = len;
    this.logUsed(4 + 8 * slot, 8);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    if (--this.inflightCount === 0) this.wakeIdle();
    if (!this.draining && !this.flushScheduled) {
      // Completions in one turn of the event loop share one index update and
      // one interrupt. (A resolved promise's then() is cheaper than queueMicrotask.)
      this.flushScheduled = true;
      void resolved.then(this.flush);
    }
  }

  /** Publishes the used index and signals the driver unless it asked not to be. */
  readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.retired) return;
    const now = this.nextUsed;
    if (now === this.publishedUsed) return;
    Atomics.store(this.used16, 1, now);
    this.logUsed(2, 2);
    this.publishedUsed = now;
    if (this.shouldNotify(now)) this.notifyDriver();
  };

  private shouldNotify(now: number): boolean {
    if (this.eventIdx) {
      const usedEvent = Atomics.load(this.avail16, 2 + this.size);
      const valid = this.signalledValid;
      const old = this.signalledUsed;
      this.signalledValid = true;
      this.signalledUsed = now;
      if (!valid) return true;
      // vring_need_event(): did `now` step past used_event since the last check?
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.avail16, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Resolves when no chain is outstanding, or after `timeoutMs` (false then). */
  whenIdle(timeoutMs: number): Promise<boolean> {
    if (this.inflightCount === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = () => {
        clearTimeout(t);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /** Forgets outstanding chains: their later completions only release memory. */
  abandonInflight(): number {
    const n = this.inflightCount;
    this.gen++;
    this.inflightCount = 0;
    this.wakeIdle();
    return n;
  }

  /** The queue is gone (stopped, reset, disconnected): stop touching its rings. */
  retire(): void {
    if (this.retired) return;
    this.flush();
    this.retired = true;
    this.abandonInflight();
    for (const p of this.ringPins) p.unpin();
    this.ringPins = [];
  }
}
