// A vhost-user *frontend* for tests and the host-side benchmark: it plays
// the VMM. Guest RAM is a memfd mapped here, vrings are laid out in it,
// kicks and interrupts are eventfds, and the vhost-user conversation runs
// over a unix socket with SCM_RIGHTS (koffi). It can drive duofs's backend
// core or any other vhost-user backend (virtiofsd).
//
// Besides the well-behaved path (connect() negotiates and sets up queues,
// request() puts a chain on a queue and resolves with the used entry), it
// exposes raw knobs for hostile input: descriptors written by hand, indirect
// tables anywhere, raw avail indexes, and raw vhost-user frames.
import { MessageSocket, type CloseReason } from '../../protocols/vhost-user/message-socket.js';
import {
  encodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  MEMORY_REGION_SIZE,
  ProtocolFeature,
  Req,
  requestName,
  u64Payload,
  VirtioFeature,
  vringStatePayload,
  type Message,
} from '../../protocols/vhost-user/protocol.js';
import { closeFd } from '../sys/fd.js';
import { connectUnixSocket } from '../sys/sockets.js';
import { createEventFd, drainEventFd, signalEventFd } from '../sys/eventfd.js';
import { createMemfd, mmapShared, munmap, viewOf } from '../sys/mem.js';
import { pipe } from '../sys/tasks.js';
import net from 'node:net';
import { pollFd, type FdPoll } from '../sys/poll.js';
import {
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
} from '../../protocols/virtqueue/split-queue.js';
import { GuestRam, type RegionLayout } from './guest-ram.js';

export { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE };

export interface FrontendOptions {
  socketPath: string;
  /** Guest RAM regions (default: one 16 MiB region at gpa 1 MiB). */
  regions?: RegionLayout[];
  /** Entries per queue (default 256). */
  queueSize?: number;
  /** Queues to set up (default: GET_QUEUE_NUM, or 1; 0: none, e.g. to load a device state first). */
  queues?: number;
  /** Virtio features we accept (intersected with the offer). */
  features?: bigint;
  /** Protocol features we accept (intersected with the offer). */
  protocolFeatures?: bigint;
  /** ADD_MEM_REG per region instead of SET_MEM_TABLE when CONFIGURE_MEM_SLOTS is negotiated (QEMU does; default true). */
  useMemSlots?: boolean;
  /** Stop after feature negotiation (no memory, no queues). */
  negotiateOnly?: boolean;
  /** Put the avail ring's NO_INTERRUPT flag up (no EVENT_IDX). */
  noInterrupt?: boolean;
}

export const DEFAULT_FEATURES = VirtioFeature.VERSION_1 | VirtioFeature.INDIRECT_DESC | VirtioFeature.EVENT_IDX | VirtioFeature.PROTOCOL_FEATURES;
export const DEFAULT_PROTOCOL_FEATURES =
  ProtocolFeature.MQ | ProtocolFeature.REPLY_ACK | ProtocolFeature.CONFIGURE_MEM_SLOTS | ProtocolFeature.RESET_DEVICE | ProtocolFeature.CONFIG;

export interface RawDescriptor {
  addr: number | bigint;
  len: number;
  flags: number;
  next?: number;
}

export interface RequestSpec {
  /** Device-readable buffers, one descriptor each. */
  out?: Buffer[];
  /** Device-writable buffer sizes, one descriptor each. */
  in?: number[];
  /** Put the chain in an indirect table. */
  indirect?: boolean;
  /** Allocate the buffers in this RAM region. */
  region?: number;
  /** Do not kick (call kick() later). */
  noKick?: boolean;
}

export interface Completion {
  head: number;
  /** Bytes the device reported written. */
  len: number;
  /** The first `len` bytes of the writable buffers, concatenated. */
  data: Buffer;
  /** Guest physical [address, length] of each writable buffer, in chain order (for dirty-log checks). */
  writable: [number, number][];
}

interface Pending {
  resolve: (c: Completion) => void;
  descs: number[];
  allocs: [number, number][];
  ins: [number, number][];
}

export class DriverQueue {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly kickFd = createEventFd();
  readonly callFd = createEventFd();
  private readonly desc32: Uint32Array;
  readonly avail16: Uint16Array;
  readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  private freeDescs: number[];
  private availIdx = 0;
  private lastUsed = 0;
  private readonly pending = new Map<number, Pending>();
  private callPoll: FdPoll | null = null;
  /** Kicks we sent and interrupts we saw (for notification suppression tests). */
  kicks = 0;
  interrupts = 0;
  /** Used entries whose id matched no outstanding chain. */
  readonly strayUsed: { id: number; len: number }[] = [];

  constructor(
    private readonly fe: VhostUserFrontend,
    readonly index: number,
    readonly size: number,
  ) {
    const ram = fe.ram;
    this.descGpa = ram.alloc(16 * size, 4096);
    this.availGpa = ram.alloc(6 + 2 * size, 4096);
    this.usedGpa = ram.alloc(6 + 8 * size, 4096);
    const d = ram.view(this.descGpa, 16 * size);
    this.desc32 = new Uint32Array(d.buffer, d.byteOffset, 4 * size);
    const a = ram.view(this.availGpa, 6 + 2 * size);
    const u = ram.view(this.usedGpa, 6 + 8 * size);
    a.fill(0);
    u.fill(0);
    this.avail16 = new Uint16Array(a.buffer, a.byteOffset, 3 + size);
    this.used16 = new Uint16Array(u.buffer, u.byteOffset, 3 + 4 * size);
    this.used32 = new Uint32Array(u.buffer, u.byteOffset, 1 + 2 * size);
    this.freeDescs = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  get eventIdx(): boolean {
    return (this.fe.features & VirtioFeature.EVENT_IDX) !== 0n;
  }

  get outstanding(): number {
    return this.pending.size;
  }

  /** User (frontend virtual) addresses of the three rings, for SET_VRING_ADDR. */
  get ringUserAddrs(): { desc: number; avail: number; used: number } {
    const ram = this.fe.ram;
    return { desc: ram.userAddrOf(this.descGpa), avail: ram.userAddrOf(this.availGpa), used: ram.userAddrOf(this.usedGpa) };
  }

  listen(): void {
    if (this.callPoll) return;
    this.callPoll = pollFd(this.callFd, { readable: true }, () => {
      drainEventFd(this.callFd);
      this.interrupts++;
      this.reap();
    });
  }

  /** Puts a request on the queue; resolves when the device returns it. */
  request(spec: RequestSpec): Promise<Completion> {
    const ram = this.fe.ram;
    const allocs: [number, number][] = [];
    const ins: [number, number][] = [];
    const segs: RawDescriptor[] = [];
    if (spec.out) {
      for (const o of spec.out) {
        const size = Math.max(o.length, 1);
        const g = ram.alloc(size, 8, spec.region);
        allocs.push([g, size]);
        ram.write(g, o);
        segs.push({ addr: g, len: o.length, flags: 0 });
      }
    }
    if (spec.in) {
      for (const n of spec.in) {
        const size = Math.max(n, 1);
        const g = ram.alloc(size, 8, spec.region);
        allocs.push([g, size]);
        ram.fill(g, n);
        ins.push([g, n]);
        segs.push({ addr: g, len: n, flags: VRING_DESC_F_WRITE });
      }
    }
    const last = segs.length - 1;
    let descs: number[];
    if (spec.indirect) {
      for (let i = 0; i < last; i++) {
        segs[i]!.flags |= VRING_DESC_F_NEXT;
        segs[i]!.next = i + 1;
      }
      const table = this.fe.writeIndirectTable(segs, spec.region);
      allocs.push([table, 16 * segs.length]);
      descs = this.takeDescs(1);
      this.writeDescriptor(descs[0]!, { addr: table, len: 16 * segs.length, flags: VRING_DESC_F_INDIRECT });
    } else {
      descs = this.takeDescs(segs.length);
      for (let i = 0; i <= last; i++) {
        const s = segs[i]!;
        if (i < last) {
          s.flags |= VRING_DESC_F_NEXT;
          s.next = descs[i + 1]!;
        }
        this.writeDescriptor(descs[i]!, s);
      }
    }
    const head = descs[0]!;
    const done = new Promise<Completion>((resolve) => this.pending.set(head, { resolve, descs, allocs, ins }));
    this.publish(head, !spec.noKick);
    return done;
  }

  private takeDescs(n: number): number[] {
    if (n === 0) throw new Error('test frontend: a chain needs at least one descriptor');
    if (this.freeDescs.length < n) throw new Error(`test frontend: queue ${this.index} has ${this.freeDescs.length} free descriptors, need ${n}`);
    return this.freeDescs.splice(this.freeDescs.length - n, n);
  }

  /** Writes descriptor `i` of this queue's table as given (no checks). */
  writeDescriptor(i: number, d: RawDescriptor): void {
    const b = 4 * i;
    const t = this.desc32;
    if (typeof d.addr === 'number') {
      t[b] = d.addr >>> 0;
      t[b + 1] = Math.floor(d.addr / 2 ** 32) >>> 0;
    } else {
      const a = BigInt.asUintN(64, d.addr);
      t[b] = Number(a & 0xffffffffn);
      t[b + 1] = Number(a >> 32n);
    }
    t[b + 2] = d.len >>> 0;
    t[b + 3] = (d.flags & 0xffff) | (((d.next ?? 0) & 0xffff) << 16);
  }

  /** Makes `head` available and (unless told not to) kicks as the notification rules say. */
  publish(head: number, kick = true): void {
    const old = this.availIdx;
    this.avail16[2 + (old % this.size)] = head;
    this.availIdx = (old + 1) & 0xffff;
    Atomics.store(this.avail16, 1, this.availIdx);
    if (kick) this.kickIfNeeded(old);
  }

  /** Sets the avail index to anything (hostile); kicks. */
  setAvailIdxRaw(idx: number): void {
    this.availIdx = idx & 0xffff;
    Atomics.store(this.avail16, 1, this.availIdx);
    this.kick();
  }

  /** Waits for a used entry with this head id (for hand-written chains). */
  awaitUsed(head: number): Promise<Completion> {
    return new Promise((resolve) => this.pending.set(head, { resolve, descs: [], allocs: [], ins: [] }));
  }

  private kickIfNeeded(oldAvail: number): void {
    if (this.eventIdx) {
      const availEvent = Atomics.load(this.used16, 2 + 4 * this.size);
      const now = this.availIdx;
      if (((now - availEvent - 1) & 0xffff) < ((now - oldAvail) & 0xffff)) this.kick();
    } else if (!(Atomics.load(this.used16, 0) & VRING_USED_F_NO_NOTIFY)) {
      this.kick();
    }
  }

  kick(): void {
    this.kicks++;
    signalEventFd(this.kickFd);
  }

  /** Avail flags (NO_INTERRUPT) and used_event, as a driver would set them. */
  setNoInterrupt(on: boolean): void {
    Atomics.store(this.avail16, 0, on ? VRING_AVAIL_F_NO_INTERRUPT : 0);
  }

  setUsedEvent(idx: number): void {
    Atomics.store(this.avail16, 2 + this.size, idx & 0xffff);
  }

  get usedIdx(): number {
    return Atomics.load(this.used16, 1);
  }

  /** Collects used entries (also callable without an interrupt, e.g. with NO_INTERRUPT). */
  reap(): number {
    let n = 0;
    for (;;) {
      const usedIdx = Atomics.load(this.used16, 1);
      while (this.lastUsed !== usedIdx) {
        const slot = this.lastUsed % this.size;
        const id = this.used32[1 + 2 * slot]!;
        const len = this.used32[2 + 2 * slot]!;
        this.lastUsed = (this.lastUsed + 1) & 0xffff;
        n++;
        const p = this.pending.get(id);
        if (!p) {
          this.strayUsed.push({ id, len });
          continue;
        }
        this.pending.delete(id);
        const data = Buffer.allocUnsafe(len);
        let at = 0;
        for (const [g, size] of p.ins) {
          if (at >= len) break;
          const r = this.fe.ram.regionOf(g, size);
          at += r.bytes.copy(data, at, g - r.gpa, g - r.gpa + Math.min(size, len - at));
        }
        for (const [g, size] of p.allocs) this.fe.ram.release(g, size);
        for (const d of p.descs) this.freeDescs.push(d);
        p.resolve({ head: id, len, data, writable: p.ins.map(([g, n]) => [g, n]) });
      }
      if (!this.eventIdx) return n;
      // Ask for an interrupt at the next used entry, then recheck (race with the device).
      this.setUsedEvent(this.lastUsed);
      if (Atomics.load(this.used16, 1) === this.lastUsed) return n;
    }
  }

  private closedFds = false;

  close(): void {
    this.callPoll?.close();
    this.callPoll = null;
    if (this.closedFds) return;
    this.closedFds = true;
    closeFd(this.kickFd);
    closeFd(this.callFd);
  }
}

interface Expect {
  request: number;
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
}

export class VhostUserFrontend {
  readonly ram: GuestRam;
  readonly queues: DriverQueue[] = [];
  features = 0n;
  protocolFeatures = 0n;
  offeredFeatures = 0n;
  offeredProtocolFeatures = 0n;
  queueNum = 0;
  /** Resolves with the reason when the backend side goes away. */
  readonly closed: Promise<CloseReason>;
  private readonly socket: MessageSocket;
  private readonly expects: Expect[] = [];
  private closeReason: CloseReason | null = null;
  private resolveClosed!: (r: CloseReason) => void;

  private constructor(fd: number, regions: RegionLayout[]) {
    this.ram = new GuestRam(regions);
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.socket = new MessageSocket(fd, {
      onMessage: (m) => this.onReply(m),
      onClose: (reason) => {
        this.closeReason = reason;
        for (const e of this.expects.splice(0))
          e.reject(
            new Error(`backend closed the connection before answering ${requestName(e.request)} (${reason.kind === 'eof' ? 'eof' : reason.message})`),
          );
        this.resolveClosed(reason);
      },
    });
    this.socket.start();
  }

  /** Connects and, unless told otherwise, negotiates, maps memory and starts every queue. */
  static async connect(o: FrontendOptions): Promise<VhostUserFrontend> {
    const fe = new VhostUserFrontend(connectUnixSocket(o.socketPath), o.regions ?? [{ gpa: 0x100000, size: 16 << 20 }]);
    try {
      await fe.negotiate(o);
      if (!o.negotiateOnly) await fe.setup(o);
      return fe;
    } catch (e) {
      fe.close();
      throw e;
    }
  }

  get isClosed(): boolean {
    return this.closeReason !== null;
  }

  private get ackNegotiated(): boolean {
    return (this.protocolFeatures & ProtocolFeature.REPLY_ACK) !== 0n;
  }

  async negotiate(o: Pick<FrontendOptions, 'features' | 'protocolFeatures'> = {}): Promise<void> {
    await this.setOwner();
    this.offeredFeatures = await this.getU64(Req.GET_FEATURES);
    if (this.offeredFeatures & (o.features ?? DEFAULT_FEATURES) & VirtioFeature.PROTOCOL_FEATURES) {
      this.offeredProtocolFeatures = await this.getU64(Req.GET_PROTOCOL_FEATURES);
      const pf = this.offeredProtocolFeatures & (o.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES);
      await this.send(Req.SET_PROTOCOL_FEATURES, u64Payload(pf));
      this.protocolFeatures = pf;
      if (pf & ProtocolFeature.MQ) this.queueNum = Number(await this.getU64(Req.GET_QUEUE_NUM));
    }
    this.features = this.offeredFeatures & (o.features ?? DEFAULT_FEATURES);
  }

  async setup(o: Omit<FrontendOptions, 'socketPath'> = {}): Promise<void> {
    await this.setFeatures(this.features);
    if (o.useMemSlots !== false && this.protocolFeatures & ProtocolFeature.CONFIGURE_MEM_SLOTS) {
      for (let i = 0; i < this.ram.regions.length; i++) await this.addMemReg(i);
    } else {
      await this.setMemTable();
    }
    const n = o.queues ?? (this.queueNum || 1);
    for (let i = 0; i < n; i++) await this.startQueue(i, o.queueSize ?? 256, o.noInterrupt);
  }

  /** Lays out queue `index` in guest RAM and sends NUM, BASE, ADDR, KICK, CALL, ENABLE. */
  async startQueue(index: number, size: number, noInterrupt = false): Promise<DriverQueue> {
    const q = new DriverQueue(this, index, size);
    this.queues[index] = q;
    if (noInterrupt) q.setNoInterrupt(true);
    q.listen();
    await this.setVringNum(index, size);
    await this.setVringBase(index, 0);
    await this.setVringAddr(index, q.ringUserAddrs);
    await this.setVringFd(Req.SET_VRING_KICK, index, q.kickFd);
    await this.setVringFd(Req.SET_VRING_CALL, index, q.callFd);
    if (this.features & VirtioFeature.PROTOCOL_FEATURES) await this.setVringEnable(index, true);
    return q;
  }

  queue(i: number): DriverQueue {
    // After close() guest RAM is unmapped: a view into it would crash the process.
    if (this.released) throw new Error('test frontend: closed (guest RAM is unmapped)');
    const q = this.queues[i];
    if (!q) throw new Error(`test frontend: queue ${i} is not set up`);
    return q;
  }

  request(q: number, spec: RequestSpec): Promise<Completion> {
    return this.queue(q).request(spec);
  }

  /** Writes an indirect table (raw descriptors) into guest RAM; returns its gpa. */
  writeIndirectTable(descs: RawDescriptor[], region?: number): number {
    const g = this.ram.alloc(Math.max(16 * descs.length, 16), 16, region);
    const t = this.ram.view(g, 16 * descs.length);
    descs.forEach((d, i) => {
      t.writeBigUInt64LE(BigInt.asUintN(64, BigInt(d.addr)), 16 * i);
      t.writeUInt32LE(d.len >>> 0, 16 * i + 8);
      t.writeUInt16LE(d.flags & 0xffff, 16 * i + 12);
      t.writeUInt16LE((d.next ?? 0) & 0xffff, 16 * i + 14);
    });
    return g;
  }

  // ------------------------------------------------------------ messages

  private onReply(m: Message): void {
    const e = this.expects.shift();
    if (!e) {
      this.socket.close({ kind: 'error', message: `unexpected ${requestName(m.request)} message from the backend` });
      return;
    }
    if (!(m.flags & FLAG_REPLY) || m.request !== e.request) {
      e.reject(new Error(`expected a reply to ${requestName(e.request)}, got ${requestName(m.request)} flags 0x${m.flags.toString(16)}`));
      return;
    }
    for (const f of m.fds) closeFd(f);
    e.resolve(m);
  }

  /**
   * Sends one frame exactly as given; with `expectReply`, resolves with the
   * backend's reply (rejects if the backend hangs up first).
   */
  sendRaw(frame: Buffer, fds: readonly number[] = [], expectReply = false): Promise<Message | undefined> {
    const request = frame.length >= 4 ? frame.readUInt32LE(0) : 0;
    const p = expectReply ? new Promise<Message>((resolve, reject) => this.expects.push({ request, resolve, reject })) : Promise.resolve(undefined);
    if (!this.socket.send(frame, fds)) {
      const e = this.expects.pop();
      e?.reject(new Error(`could not send ${requestName(request)}: connection closed`));
    }
    return p;
  }

  /**
   * Sends a request. With REPLY_ACK negotiated (and `needReply` not false) it
   * asks for an ack and resolves with its value (0 = success); otherwise
   * resolves undefined once sent.
   */
  async send(request: number, payload: Buffer = Buffer.alloc(0), fds: readonly number[] = [], needReply?: boolean): Promise<bigint | undefined> {
    const ask = needReply ?? this.ackNegotiated;
    const m = await this.sendRaw(encodeMessage(request, FLAG_VERSION | (ask ? FLAG_NEED_REPLY : 0), payload), fds, ask);
    if (!m) return undefined;
    if (m.size !== 8) throw new Error(`REPLY_ACK for ${requestName(request)} has ${m.size} bytes`);
    return m.payload.readBigUInt64LE(0);
  }

  /** Like send() but throws when the backend nacks. */
  async sendOk(request: number, payload?: Buffer, fds: readonly number[] = []): Promise<void> {
    const ack = await this.send(request, payload, fds);
    if (ack !== undefined && ack !== 0n) throw new Error(`backend refused ${requestName(request)} (ack ${ack})`);
  }

  /** A request with its own reply (GET_*): resolves with the reply message. */
  async query(request: number, payload: Buffer = Buffer.alloc(0), flags = FLAG_VERSION): Promise<Message> {
    return (await this.sendRaw(encodeMessage(request, flags, payload), [], true))!;
  }

  async getU64(request: number): Promise<bigint> {
    const m = await this.query(request);
    if (m.size !== 8) throw new Error(`${requestName(request)} reply has ${m.size} bytes`);
    return m.payload.readBigUInt64LE(0);
  }

  setOwner(): Promise<void> {
    return this.sendOk(Req.SET_OWNER);
  }

  setFeatures(f: bigint): Promise<void> {
    return this.sendOk(Req.SET_FEATURES, u64Payload(f));
  }

  /** SET_MEM_TABLE with the given regions of our RAM (default all). */
  setMemTable(regionIndexes: number[] = this.ram.regions.map((_, i) => i)): Promise<void> {
    const p = Buffer.alloc(8 + MEMORY_REGION_SIZE * regionIndexes.length);
    p.writeUInt32LE(regionIndexes.length, 0);
    regionIndexes.forEach((ri, i) => this.regionDescriptor(ri).copy(p, 8 + MEMORY_REGION_SIZE * i));
    return this.sendOk(
      Req.SET_MEM_TABLE,
      p,
      regionIndexes.map(() => this.ram.fd),
    );
  }

  /** The 32-byte region description of RAM region `i`. */
  regionDescriptor(i: number): Buffer {
    const r = this.ram.regions[i]!;
    const b = Buffer.alloc(MEMORY_REGION_SIZE);
    b.writeBigUInt64LE(BigInt(r.gpa), 0);
    b.writeBigUInt64LE(BigInt(r.size), 8);
    b.writeBigUInt64LE(BigInt(r.userAddr), 16);
    b.writeBigUInt64LE(BigInt(r.fileOffset), 24);
    return b;
  }

  addMemReg(i: number): Promise<void> {
    return this.sendOk(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), this.regionDescriptor(i)]), [this.ram.fd]);
  }

  remMemReg(i: number): Promise<void> {
    return this.sendOk(Req.REM_MEM_REG, Buffer.concat([Buffer.alloc(8), this.regionDescriptor(i)]));
  }

  setVringNum(q: number, n: number): Promise<void> {
    return this.sendOk(Req.SET_VRING_NUM, vringStatePayload(q, n));
  }

  setVringBase(q: number, n: number): Promise<void> {
    return this.sendOk(Req.SET_VRING_BASE, vringStatePayload(q, n));
  }

  setVringAddr(q: number, a: { desc: number; avail: number; used: number }, flags = 0, logGpa = 0): Promise<void> {
    return this.sendOk(Req.SET_VRING_ADDR, vringAddrPayload(q, a, flags, logGpa));
  }

  /**
   * SET_LOG_BASE with a log fd (LOG_SHMFD): sent without NEED_REPLY, as
   * QEMU does, and resolves with the backend's own reply.
   */
  async setLogBase(fd: number, size: number, offset = 0): Promise<Message> {
    const p = Buffer.alloc(16);
    p.writeBigUInt64LE(BigInt(size), 0);
    p.writeBigUInt64LE(BigInt(offset), 8);
    return (await this.sendRaw(encodeMessage(Req.SET_LOG_BASE, FLAG_VERSION, p), [fd], true))!;
  }

  /**
   * Starts dirty logging as QEMU does when a migration begins: a log
   * covering all guest RAM (SET_LOG_BASE), LOG_ALL in SET_FEATURES, and
   * every queue's SET_VRING_ADDR again with VRING_F_LOG and its used ring's
   * guest address. `usedLog: false` leaves the rings unlogged.
   */
  async startDirtyLog(o: { usedLog?: boolean } = {}): Promise<DirtyBitmap> {
    const end = Math.max(...this.ram.regions.map((r) => r.gpa + r.size));
    const log = new DirtyBitmap(Math.ceil(end / 4096 / 8));
    try {
      const reply = await this.setLogBase(log.fd, log.size);
      if (reply.size !== 8 || reply.payload.readBigUInt64LE(0) !== 0n) throw new Error(`SET_LOG_BASE failed (reply of ${reply.size} bytes)`);
      this.features |= VirtioFeature.LOG_ALL;
      await this.setFeatures(this.features);
      if (o.usedLog !== false) for (const q of this.queues) if (q) await this.setVringAddr(q.index, q.ringUserAddrs, VRING_F_LOG, q.usedGpa);
      return log;
    } catch (e) {
      log.close();
      throw e;
    }
  }

  /**
   * SET_DEVICE_STATE_FD with one end of a new pipe (phase stopped, as
   * QEMU); resolves with the reply's u64 and our end of the pipe.
   */
  async setDeviceStateFd(direction: 0 | 1, phase = 0): Promise<{ reply: bigint; fd: number }> {
    const [r, w] = pipe();
    const theirs = direction === 0 ? w : r;
    const ours = direction === 0 ? r : w;
    const p = Buffer.alloc(8);
    p.writeUInt32LE(direction, 0);
    p.writeUInt32LE(phase, 4);
    try {
      const m = (await this.sendRaw(encodeMessage(Req.SET_DEVICE_STATE_FD, FLAG_VERSION, p), [theirs], true))!;
      if (m.size !== 8) throw new Error(`SET_DEVICE_STATE_FD reply has ${m.size} bytes`);
      return { reply: m.payload.readBigUInt64LE(0), fd: ours };
    } catch (e) {
      closeFd(ours);
      throw e;
    } finally {
      closeFd(theirs);
    }
  }

  /** CHECK_DEVICE_STATE: 0 when the backend's transfer succeeded. */
  async checkDeviceState(): Promise<bigint> {
    return this.getU64(Req.CHECK_DEVICE_STATE);
  }

  /** Saves the device state as QEMU does on the source (rings already stopped): the bytes, and CHECK_DEVICE_STATE's answer. */
  async saveDeviceState(): Promise<{ state: Buffer; check: bigint }> {
    const { reply, fd } = await this.setDeviceStateFd(0);
    if (reply !== 0x100n) {
      closeFd(fd);
      throw new Error(`SET_DEVICE_STATE_FD(save) refused (0x${reply.toString(16)})`);
    }
    const state = await readAll(fd);
    return { state, check: await this.checkDeviceState() };
  }

  /** Loads a device state as QEMU does on the destination; resolves with CHECK_DEVICE_STATE's answer. */
  async loadDeviceState(state: Buffer): Promise<bigint> {
    const { reply, fd } = await this.setDeviceStateFd(1);
    if (reply !== 0x100n) {
      closeFd(fd);
      throw new Error(`SET_DEVICE_STATE_FD(load) refused (0x${reply.toString(16)})`);
    }
    await writeAll(fd, state);
    return this.checkDeviceState();
  }

  /** Turns LOG_ALL off again (the migration ended or was cancelled). */
  async stopDirtyLog(): Promise<void> {
    this.features &= ~VirtioFeature.LOG_ALL;
    await this.setFeatures(this.features);
    for (const q of this.queues) if (q) await this.setVringAddr(q.index, q.ringUserAddrs);
  }

  /** SET_VRING_KICK/CALL/ERR; fd < 0 sends the "no fd" flag. */
  setVringFd(request: number, q: number, fd: number): Promise<void> {
    return this.sendOk(request, u64Payload(BigInt(q) | (fd < 0 ? 0x100n : 0n)), fd < 0 ? [] : [fd]);
  }

  setVringEnable(q: number, on: boolean): Promise<void> {
    return this.sendOk(Req.SET_VRING_ENABLE, vringStatePayload(q, on ? 1 : 0));
  }

  /** GET_VRING_BASE: stops the ring; resolves with last_avail_idx. */
  async getVringBase(q: number): Promise<number> {
    const m = await this.query(Req.GET_VRING_BASE, vringStatePayload(q, 0));
    if (m.size !== 8 || m.payload.readUInt32LE(0) !== q) throw new Error(`bad GET_VRING_BASE reply (${m.size} bytes)`);
    return m.payload.readUInt32LE(4);
  }

  /** GET_CONFIG: resolves with the config bytes (empty when the backend refused). */
  async getConfig(offset: number, size: number): Promise<Buffer> {
    const p = Buffer.alloc(12 + size);
    p.writeUInt32LE(offset, 0);
    p.writeUInt32LE(size, 4);
    const m = await this.query(Req.GET_CONFIG, p);
    return m.payload.subarray(12);
  }

  /** Hangs up (like QEMU being killed) and releases everything the frontend holds. */
  close(): void {
    if (this.released) return;
    this.released = true;
    this.socket.close({ kind: 'local', message: 'frontend closed' });
    for (const q of this.queues) q?.close();
    this.ram.close();
  }

  private released = false;
}

/** The SET_VRING_ADDR payload (ring addresses are frontend virtual addresses). */
export function vringAddrPayload(q: number, a: { desc: number; avail: number; used: number }, flags = 0, logGpa: number | bigint = 0): Buffer {
  const p = Buffer.alloc(40);
  p.writeUInt32LE(q, 0);
  p.writeUInt32LE(flags, 4);
  p.writeBigUInt64LE(BigInt(a.desc), 8);
  p.writeBigUInt64LE(BigInt(a.used), 16);
  p.writeBigUInt64LE(BigInt(a.avail), 24);
  p.writeBigUInt64LE(BigInt(logGpa), 32);
  return p;
}

/** Reads a pipe to EOF (the fd is closed). */
function readAll(fd: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = new net.Socket({ fd, readable: true, writable: false });
    const chunks: Buffer[] = [];
    s.on('data', (b: Buffer) => chunks.push(b));
    s.on('end', () => {
      s.destroy();
      resolve(Buffer.concat(chunks));
    });
    s.on('error', reject);
  });
}

/** Writes all of `data` to a pipe, then closes it. */
function writeAll(fd: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = new net.Socket({ fd, readable: false, writable: true });
    s.on('error', reject);
    s.end(data, () => {
      s.destroy();
      resolve();
    });
  });
}

/** VRING_F_LOG: SET_VRING_ADDR flag asking for used-ring writes to be logged. */
export const VRING_F_LOG = 1;

/**
 * The VMM's side of the migration dirty log: a memfd bitmap, one bit per
 * 4 KiB guest physical page, shared with the backend.
 */
export class DirtyBitmap {
  readonly fd: number;
  private readonly base: bigint;
  private readonly bits: Uint8Array;
  private closed = false;

  constructor(readonly size: number) {
    this.fd = createMemfd('duofs-test-dirty-log', size);
    this.base = mmapShared(this.fd, size, 0);
    this.bits = new Uint8Array(viewOf(this.base, size));
  }

  /** Guest page numbers (gpa / 4096) whose bit is set, ascending. */
  pages(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.bits.length; i++) {
      const b = Atomics.load(this.bits, i);
      if (b) for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
    }
    return out;
  }

  /** Reads and clears the bitmap, as QEMU does between passes; returns the pages that were set. */
  take(): number[] {
    const p = this.pages();
    for (const n of p) Atomics.and(this.bits, Math.floor(n / 8), ~(1 << (n % 8)) & 0xff);
    return p;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    munmap(this.base, this.size);
    closeFd(this.fd);
  }
}

/** A frame with any header values (sizes that lie, unknown requests, bad flags). */
export function rawFrame(request: number, flags: number, payload: Buffer = Buffer.alloc(0), declaredSize = payload.length): Buffer {
  const b = Buffer.alloc(12 + payload.length);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(declaredSize, 8);
  payload.copy(b, 12);
  return b;
}

export const NEED_REPLY = FLAG_VERSION | FLAG_NEED_REPLY;
