// One frontend connection: the vhost-user conversation, guest memory, the
// virtqueues and their kick/call fds. The session ends with the connection;
// everything it holds (fds, mappings, device state) is released then.
//
// Faults: a message the backend cannot honour is answered with a nonzero
// REPLY_ACK when the frontend asked for one, with an empty GET_CONFIG reply
// (the protocol's error form), and otherwise ends the connection: vhost-user
// has no other way to say no. Either way a log line names the peer and the
// fault, and the server goes on accepting connections.
import { readlinkSync } from 'node:fs';
import type { PeerLog } from '../../src/log-limit.js';
import { GuestMemory, GuestMemoryError, type RegionSpec } from '../virtqueue/guest-memory.js';
import { SplitQueue, ringBytes, RING_ALIGN, type QueueRings } from '../virtqueue/split-queue.js';
import type { DescriptorChain } from '../virtqueue/chain.js';
import { DirtyLog, DirtyLogError } from '../virtqueue/dirty-log.js';
import { StateTransfer, TransferError } from './state-transfer.js';
import type { VhostUserDevice } from './device.js';
import { MessageSocket, type CloseReason } from './message-socket.js';
import {
  CONFIG_HEADER_SIZE,
  DEVICE_STATE_FAILED,
  DEVICE_STATE_NO_FD,
  encodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  FLAG_VERSION_MASK,
  MAX_CONFIG_SIZE,
  MAX_TABLE_REGIONS,
  MEMORY_REGION_SIZE,
  ProtocolFeature,
  Req,
  requestName,
  TRANSFER_PHASE_STOPPED,
  TransferDirection,
  u64Payload,
  VirtioFeature,
  VRING_F_LOG,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
  vringStatePayload,
  type Message,
} from './protocol.js';
import { closeFd, setNonBlocking } from '../../src/sys/fd.js';
import { drainEventFd, signalEventFd } from '../../src/sys/eventfd.js';
import { pollFd, type FdPoll } from '../../src/sys/poll.js';
import { procPath } from '../../src/sys/fs.js';

export interface SessionOptions {
  device: VhostUserDevice;
  /** the server's rate-limited log, shared by its connections */
  log: PeerLog;
  /** Names the frontend in log lines (connection number, pid, uid). */
  peer: string;
  /** Largest queue size accepted in SET_VRING_NUM. */
  maxQueueSize: number;
  /** How long GET_VRING_BASE waits for outstanding chains before abandoning them. */
  drainTimeoutMs: number;
  offerBackendChannel: boolean;
  maxMemSlots: number;
  /** Device state transfer limits (DEVICE_STATE); defaults: 64 MiB, 60 s. */
  stateTransfer?: { maxBytes?: number; timeoutMs?: number };
}

/** A request the backend refuses; `message` is the log line's fault. */
class Fault extends Error {}

/**
 * Chains one queue hands to its device per turn of the event loop; then the
 * rest wait for a setImmediate, so other queues, sockets and completions get
 * their turn while a guest keeps its ring full.
 */
export const CHAINS_PER_TURN = 32;

const TRANSPORT_FEATURES =
  VirtioFeature.VERSION_1 | VirtioFeature.INDIRECT_DESC | VirtioFeature.EVENT_IDX | VirtioFeature.PROTOCOL_FEATURES | VirtioFeature.LOG_ALL;

/** Per-queue state as the frontend configured it. */
class QueueSlot {
  size = 0;
  base = 0;
  addr: { desc: number; used: number; avail: number } | null = null;
  /** SET_VRING_ADDR's log_guest_addr when it had VRING_F_LOG: the used ring's gpa for the dirty log. */
  usedLogGpa: number | null = null;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  kickPoll: FdPoll | null = null;
  /** An interrupt was due while there was no call fd: sent when one arrives. */
  missedInterrupt = false;
  enabled = false;
  /** Started by SET_VRING_KICK, stopped by GET_VRING_BASE. */
  started = false;
  queue: SplitQueue | null = null;
  /** A drain stopped at its budget and continues here; while set, kicks do not start another. */
  resume: NodeJS.Immediate | null = null;
  constructor(readonly index: number) {}
}

export class Session {
  readonly memory: GuestMemory;
  private readonly device: VhostUserDevice;
  private readonly log: PeerLog;
  private readonly socket: MessageSocket;
  private readonly slots: QueueSlot[];
  private readonly dispatchers: ((chain: DescriptorChain) => void)[];
  private readonly offeredFeatures: bigint;
  private readonly offeredProtocol: bigint;
  private ackedFeatures = 0n;
  private ackedProtocol = 0n;
  private status = 0;
  private backendChannelFd = -1;
  private ended = false;
  /** The migration dirty log the frontend gave (SET_LOG_BASE); written only while LOG_ALL is on. */
  private log_: DirtyLog | null = null;
  /** The last SET_DEVICE_STATE_FD's transfer; CHECK_DEVICE_STATE reports on it. */
  private transfer: StateTransfer | null = null;

  constructor(
    fd: number,
    private readonly o: SessionOptions,
    private readonly onEnd: (reason: CloseReason) => void,
  ) {
    this.device = o.device;
    this.log = o.log;
    this.memory = new GuestMemory(o.maxMemSlots);
    this.offeredFeatures = TRANSPORT_FEATURES | o.device.deviceFeatures;
    this.offeredProtocol =
      ProtocolFeature.MQ |
      ProtocolFeature.REPLY_ACK |
      ProtocolFeature.CONFIGURE_MEM_SLOTS |
      ProtocolFeature.RESET_DEVICE |
      ProtocolFeature.CONFIG |
      ProtocolFeature.LOG_SHMFD |
      (o.offerBackendChannel ? ProtocolFeature.BACKEND_REQ : 0n) |
      (o.device.saveState && o.device.loadState ? ProtocolFeature.DEVICE_STATE : 0n);
    this.slots = Array.from({ length: o.device.numQueues }, (_, i) => new QueueSlot(i));
    this.dispatchers = this.slots.map((s) => (chain: DescriptorChain) => this.dispatch(s.index, chain));
    this.socket = new MessageSocket(fd, {
      onMessage: (m) => this.onMessage(m),
      onClose: (reason) => this.teardown(reason),
    });
  }

  start(): void {
    this.socket.start();
  }

  /** Ends the session from our side (server shutdown). */
  close(message = 'server closing'): void {
    this.socket.close({ kind: 'local', message });
  }

  // ---------------------------------------------------------------- messages

  private onMessage(m: Message): void | Promise<void> {
    const name = requestName(m.request);
    if ((m.flags & FLAG_VERSION_MASK) !== FLAG_VERSION || (m.flags & FLAG_REPLY) !== 0) {
      this.closeFds(m);
      this.drop(`${name} with bad flags 0x${m.flags.toString(16)} (version must be 1, no REPLY bit)`);
      return;
    }
    if (this.log.log.isLevelEnabled('trace'))
      this.log.log.trace({ peer: this.peer, req: name, size: m.size, fds: m.fds.length, flags: m.flags }, 'vhost-user message');
    try {
      const r = this.handle(m);
      if (r instanceof Promise) {
        return r.then(
          (payload) => this.finish(m, payload),
          (e: unknown) => this.refuse(m, e),
        );
      }
      this.finish(m, r);
    } catch (e) {
      this.refuse(m, e);
    }
  }

  /** After a handler succeeded: its reply, or the REPLY_ACK the frontend asked for. */
  private finish(m: Message, reply: Buffer | undefined): void {
    this.closeFds(m);
    if (reply !== undefined) this.reply(m, reply);
    else if (this.wantsAck(m)) this.reply(m, u64Payload(0));
  }

  private refuse(m: Message, e: unknown): void {
    this.closeFds(m);
    if (!(e instanceof Fault) && !(e instanceof GuestMemoryError)) {
      this.log.error('vhost-user.unexpected', { peer: this.peer, req: requestName(m.request), err: e }, 'vhost-user: handler failed');
    }
    const fault = `${requestName(m.request)}: ${(e as Error).message}`;
    if (m.request === Req.GET_CONFIG) {
      this.log.warn('vhost-user.refused', { peer: this.peer, fault }, 'vhost-user: request refused (empty GET_CONFIG reply)');
      this.reply(m, Buffer.alloc(0));
    } else if (this.wantsAck(m) && !hasOwnReply(m.request, this.ackedProtocol)) {
      this.log.warn('vhost-user.refused', { peer: this.peer, fault }, 'vhost-user: request refused (nonzero REPLY_ACK)');
      this.reply(m, u64Payload(1));
    } else {
      this.drop(fault);
    }
  }

  private wantsAck(m: Message): boolean {
    return (m.flags & FLAG_NEED_REPLY) !== 0 && (this.ackedProtocol & ProtocolFeature.REPLY_ACK) !== 0n;
  }

  private reply(m: Message, payload: Buffer): void {
    this.socket.send(encodeMessage(m.request, FLAG_VERSION | FLAG_REPLY, payload));
  }

  private drop(fault: string): void {
    this.log.warn('vhost-user.dropped', { peer: this.peer, fault }, 'vhost-user: dropping the connection');
    this.socket.close({ kind: 'error', message: fault });
  }

  private closeFds(m: Message): void {
    for (const f of m.fds.splice(0)) closeFd(f);
  }

  /** Returns the reply payload for requests that have one. */
  private handle(m: Message): Buffer | undefined | Promise<Buffer | undefined> {
    const p = m.payload;
    switch (m.request) {
      case Req.GET_FEATURES:
        expectSize(m, 0);
        return u64Payload(this.offeredFeatures);
      case Req.SET_FEATURES:
        expectSize(m, 8);
        return this.setFeatures(p.readBigUInt64LE(0));
      case Req.GET_PROTOCOL_FEATURES:
        expectSize(m, 0);
        return u64Payload(this.offeredProtocol);
      case Req.SET_PROTOCOL_FEATURES: {
        expectSize(m, 8);
        const f = p.readBigUInt64LE(0);
        if (f & ~this.offeredProtocol) throw new Fault(`protocol features 0x${(f & ~this.offeredProtocol).toString(16)} were not offered`);
        this.ackedProtocol = f;
        return undefined;
      }
      case Req.SET_OWNER:
      case Req.RESET_OWNER:
        expectSize(m, 0);
        // RESET_OWNER is deprecated; the spec advises ignoring it or disabling rings.
        if (m.request === Req.RESET_OWNER) for (const s of this.slots) s.enabled = false;
        return undefined;
      case Req.RESET_DEVICE:
        expectSize(m, 0);
        this.resetDevice('RESET_DEVICE');
        return undefined;
      case Req.GET_QUEUE_NUM:
        expectSize(m, 0);
        return u64Payload(this.slots.length);
      case Req.GET_MAX_MEM_SLOTS:
        expectSize(m, 0);
        return u64Payload(this.o.maxMemSlots);
      case Req.SET_MEM_TABLE:
        return this.setMemTable(m);
      case Req.ADD_MEM_REG:
        return this.addMemReg(m);
      case Req.REM_MEM_REG:
        return this.remMemReg(m);
      case Req.SET_VRING_NUM:
        return this.setVringNum(m);
      case Req.SET_VRING_ADDR:
        return this.setVringAddr(m);
      case Req.SET_VRING_BASE:
        return this.setVringBase(m);
      case Req.GET_VRING_BASE:
        return this.getVringBase(m);
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        return this.setVringFd(m);
      case Req.SET_VRING_ENABLE:
        return this.setVringEnable(m);
      case Req.GET_CONFIG:
        return this.getConfig(m);
      case Req.SET_CONFIG:
        return this.setConfig(m);
      case Req.SET_BACKEND_REQ_FD: {
        expectSize(m, 0);
        const fd = takeFds(m, 1)[0]!;
        closeFd(this.backendChannelFd);
        this.backendChannelFd = fd; // kept (QEMU listens on it); we send nothing yet
        return undefined;
      }
      case Req.SET_STATUS:
        expectSize(m, 8);
        this.status = Number(p.readBigUInt64LE(0) & 0xffn);
        return undefined;
      case Req.GET_STATUS:
        expectSize(m, 0);
        return u64Payload(this.status);
      case Req.SET_LOG_BASE:
        return this.setLogBase(m);
      case Req.SET_DEVICE_STATE_FD:
        return this.setDeviceStateFd(m);
      case Req.CHECK_DEVICE_STATE:
        return this.checkDeviceState(m);
      case Req.SET_LOG_FD:
        // vhost-kernel's log eventfd; nothing in vhost-user uses it. Accepted and closed.
        if (!(this.ackedProtocol & ProtocolFeature.LOG_SHMFD)) throw new Fault('LOG_SHMFD was not negotiated');
        expectSize(m, 0);
        takeFds(m, 1).forEach(closeFd);
        return undefined;
      default:
        throw new Fault(reqNames(m.request));
    }
  }

  private setFeatures(f: bigint): undefined {
    const extra = f & ~this.offeredFeatures;
    if (extra) throw new Fault(`features 0x${extra.toString(16)} were not offered`);
    this.ackedFeatures = f;
    this.updateLogging();
    // Without VHOST_USER_F_PROTOCOL_FEATURES, rings start enabled (there is no SET_VRING_ENABLE).
    if (!(f & VirtioFeature.PROTOCOL_FEATURES)) for (const s of this.slots) s.enabled = true;
    this.device.onFeatures?.(f);
    for (const s of this.slots) this.process(s);
    return undefined;
  }

  // ---------------------------------------------------------------- memory

  private setMemTable(m: Message): undefined {
    if (m.size < 8) throw new Fault(`payload of ${m.size} bytes, expected at least 8`);
    const n = m.payload.readUInt32LE(0);
    if (n > MAX_TABLE_REGIONS) throw new Fault(`${n} regions, at most ${MAX_TABLE_REGIONS}`);
    expectSize(m, 8 + n * MEMORY_REGION_SIZE);
    const specs = Array.from({ length: n }, (_, i) => readRegion(m.payload, 8 + i * MEMORY_REGION_SIZE));
    const fds = takeFds(m, n);
    this.memory.replaceAll(specs.map((spec, i) => ({ spec, fd: fds[i]! })));
    for (const r of this.memory.list()) this.noteUnsealed(r.sealedAgainstShrink, r.guestAddr);
    this.afterMemoryChange();
    return undefined;
  }

  private addMemReg(m: Message): undefined {
    expectSize(m, 8 + MEMORY_REGION_SIZE);
    const spec = readRegion(m.payload, 8);
    const [fd] = takeFds(m, 1);
    const r = this.memory.add(spec, fd!);
    this.noteUnsealed(r.sealedAgainstShrink, r.guestAddr);
    return undefined;
  }

  private noteUnsealed(sealed: boolean, gpa: number): void {
    if (!sealed && this.log.wants('debug'))
      this.log.debug(
        'vhost-user.memory',
        { peer: this.peer, gpa },
        'vhost-user: memory region fd is not sealed against shrinking (a SIGBUS risk if the frontend shrinks it)',
      );
  }

  private remMemReg(m: Message): undefined {
    expectSize(m, 8 + MEMORY_REGION_SIZE);
    if (m.fds.length > 1) throw new Fault(`${m.fds.length} fds, expected none`);
    this.closeFds(m); // the spec tolerates (and says to close) one stray fd here
    const spec = readRegion(m.payload, 8);
    if (!this.memory.remove(spec)) throw new Fault(`no region at gpa 0x${spec.guestAddr.toString(16)} of ${spec.size} bytes`);
    this.afterMemoryChange();
    return undefined;
  }

  /** Rings follow their memory: re-resolve the views of every configured queue. */
  private afterMemoryChange(): void {
    for (const s of this.slots) {
      if (!s.queue) continue;
      const rings = s.addr && this.resolveRings(s.size, s.addr);
      if (rings) s.queue.setRings(rings);
      else s.queue.markBroken('its rings are no longer in guest memory');
    }
  }

  // ---------------------------------------------------------------- vrings

  private slot(index: number): QueueSlot {
    const s = this.slots[index];
    if (!s) throw new Fault(`queue ${index} does not exist (the device has ${this.slots.length})`);
    return s;
  }

  private vringState(m: Message): { s: QueueSlot; num: number } {
    expectSize(m, 8);
    return { s: this.slot(m.payload.readUInt32LE(0)), num: m.payload.readUInt32LE(4) };
  }

  private setVringNum(m: Message): undefined {
    const { s, num } = this.vringState(m);
    if (s.started) throw new Fault(`queue ${s.index} is running`);
    if (num === 0 || num > this.o.maxQueueSize || (num & (num - 1)) !== 0) {
      throw new Fault(`queue size ${num} is not a power of 2 between 1 and ${this.o.maxQueueSize}`);
    }
    this.dropQueue(s);
    s.size = num;
    return undefined;
  }

  private setVringBase(m: Message): undefined {
    const { s, num } = this.vringState(m);
    if (s.started) throw new Fault(`queue ${s.index} is running`);
    if (num > 0xffff) throw new Fault(`base ${num} does not fit a 16-bit ring index`);
    this.dropQueue(s);
    s.base = num;
    return undefined;
  }

  private setVringAddr(m: Message): undefined {
    expectSize(m, 40);
    const p = m.payload;
    const s = this.slot(p.readUInt32LE(0));
    const flags = p.readUInt32LE(4);
    if (flags & ~VRING_F_LOG) throw new Fault(`flags 0x${flags.toString(16)} have unknown bits`);
    const usedLogGpa = flags & VRING_F_LOG ? safe(p.readBigUInt64LE(32), 'used-ring log address') : null;
    if (s.size === 0) throw new Fault(`queue ${s.index} has no size yet (SET_VRING_NUM first)`);
    const addr = {
      desc: safe(p.readBigUInt64LE(8), 'descriptor address'),
      used: safe(p.readBigUInt64LE(16), 'used address'),
      avail: safe(p.readBigUInt64LE(24), 'available address'),
    };
    const rings = this.resolveRings(s.size, addr);
    if (!rings)
      throw new Fault(
        `queue ${s.index} rings (desc 0x${addr.desc.toString(16)}, avail 0x${addr.avail.toString(16)}, used 0x${addr.used.toString(16)}, size ${s.size}) are not inside guest memory`,
      );
    s.addr = addr;
    s.usedLogGpa = usedLogGpa;
    s.queue?.setRings(rings); // a running queue moves to the new rings; otherwise they are used at the kick
    s.queue?.setUsedLog(usedLogGpa); // QEMU turns logging on while the queue runs
    return undefined;
  }

  // ---------------------------------------------------------------- dirty log

  /**
   * SET_LOG_BASE (LOG_SHMFD): u64 mmap_size, u64 mmap_offset and the log's
   * fd. The reply (QEMU waits for one) is a u64 0; a log we cannot map
   * fails the request, which QEMU treats as a failed migration.
   */
  private setLogBase(m: Message): Buffer {
    if (!(this.ackedProtocol & ProtocolFeature.LOG_SHMFD)) throw new Fault('LOG_SHMFD was not negotiated');
    expectSize(m, 16);
    const size = safe(m.payload.readBigUInt64LE(0), 'log size');
    const offset = safe(m.payload.readBigUInt64LE(8), 'log offset');
    const [fd] = takeFds(m, 1);
    let log: DirtyLog;
    try {
      log = new DirtyLog(fd!, size, offset);
    } catch (e) {
      throw e instanceof DirtyLogError ? new Fault(e.message) : e;
    }
    this.closeLog();
    this.log_ = log;
    this.updateLogging();
    if (this.log.wants('debug')) this.log.debug('vhost-user.migration', { peer: this.peer, size, offset }, 'vhost-user: dirty log mapped');
    return u64Payload(0);
  }

  // ---------------------------------------------------------------- device state

  /**
   * SET_DEVICE_STATE_FD (DEVICE_STATE): direction, phase (only "stopped":
   * every ring stopped) and a pipe. Answered at once with "no fd of ours"
   * (0x100), or 0x101 when the transfer cannot start; the stream runs on,
   * and CHECK_DEVICE_STATE says how it ended.
   */
  private setDeviceStateFd(m: Message): Buffer {
    if (!(this.ackedProtocol & ProtocolFeature.DEVICE_STATE)) throw new Fault('DEVICE_STATE was not negotiated');
    expectSize(m, 8);
    const [fd] = takeFds(m, 1);
    const direction = m.payload.readUInt32LE(0);
    const phase = m.payload.readUInt32LE(4);
    const { device } = this;
    this.transfer?.abort('replaced by a new SET_DEVICE_STATE_FD');
    this.transfer = null;
    let fdOwned = true; // until StateTransfer takes it (it closes it on its own failure)
    try {
      if (direction !== TransferDirection.SAVE && direction !== TransferDirection.LOAD) throw new Fault(`transfer direction ${direction} is unknown`);
      if (phase !== TRANSFER_PHASE_STOPPED) throw new Fault(`transfer phase ${phase} is not supported (only 0, stopped)`);
      const running = this.slots.filter((s) => s.started).map((s) => s.index);
      if (running.length) throw new Fault(`queues ${running.join(', ')} are running (the stopped phase needs every ring stopped)`);
      const limits = { maxBytes: this.o.stateTransfer?.maxBytes ?? 64 * 1024 * 1024, timeoutMs: this.o.stateTransfer?.timeoutMs ?? 60_000 };
      fdOwned = false;
      try {
        this.transfer =
          direction === TransferDirection.SAVE
            ? StateTransfer.save(fd!, () => device.saveState!(), limits)
            : StateTransfer.load(fd!, (state) => device.loadState!(state), limits);
      } catch (e) {
        throw e instanceof TransferError ? new Fault(e.message) : e;
      }
    } catch (e) {
      if (fdOwned) closeFd(fd!);
      if (!(e instanceof Fault)) throw e;
      this.log.warn(
        'vhost-user.migration',
        { peer: this.peer, fault: `SET_DEVICE_STATE_FD: ${e.message}` },
        'vhost-user: device state transfer refused',
      );
      return u64Payload(DEVICE_STATE_NO_FD | DEVICE_STATE_FAILED);
    }
    this.log.info(
      'vhost-user.migration',
      { peer: this.peer, direction: direction === 0 ? 'save' : 'load' },
      'vhost-user: device state transfer started',
    );
    return u64Payload(DEVICE_STATE_NO_FD);
  }

  /** CHECK_DEVICE_STATE: waits for the transfer to end; 0 when it succeeded, 1 (and a log line saying why) otherwise. */
  private async checkDeviceState(m: Message): Promise<Buffer> {
    if (!(this.ackedProtocol & ProtocolFeature.DEVICE_STATE)) throw new Fault('DEVICE_STATE was not negotiated');
    expectSize(m, 0);
    const t = this.transfer;
    if (!t) {
      this.log.warn('vhost-user.migration', { peer: this.peer, fault: 'CHECK_DEVICE_STATE: no transfer' }, 'vhost-user: device state check failed');
      return u64Payload(1);
    }
    try {
      await t.done;
      this.log.info('vhost-user.migration', { peer: this.peer, direction: t.direction }, 'vhost-user: device state transfer succeeded');
      return u64Payload(0);
    } catch (e) {
      this.log.warn(
        'vhost-user.migration',
        { peer: this.peer, direction: t.direction, fault: `CHECK_DEVICE_STATE: ${(e as Error).message}` },
        'vhost-user: device state transfer failed',
      );
      return u64Payload(1);
    }
  }

  /** Logging is on while the driver has LOG_ALL and a log is mapped. */
  private updateLogging(): void {
    this.memory.dirtyLog = this.ackedFeatures & VirtioFeature.LOG_ALL ? this.log_ : null;
  }

  private closeLog(): void {
    const log = this.log_;
    if (!log) return;
    this.log_ = null;
    this.updateLogging();
    if (log.outOfRange > 0)
      this.log.warn(
        'vhost-user.migration',
        { peer: this.peer, pages: log.outOfRange, logBytes: log.size },
        'vhost-user: pages written beyond the end of the dirty log were not logged (the frontend sized it too small)',
      );
    log.close();
  }

  /** Views of the three rings, or undefined when one is outside memory or misaligned. */
  private resolveRings(size: number, a: { desc: number; used: number; avail: number }): QueueRings | undefined {
    const bytes = ringBytes(size);
    if (a.desc % RING_ALIGN.desc || a.avail % RING_ALIGN.avail || a.used % RING_ALIGN.used) return undefined;
    const desc = this.memory.viewUserRange(a.desc, bytes.desc);
    const avail = this.memory.viewUserRange(a.avail, bytes.avail);
    const used = this.memory.viewUserRange(a.used, bytes.used);
    return desc && avail && used ? { desc, avail, used } : undefined;
  }

  private getVringBase(m: Message): Promise<Buffer> {
    const { s } = this.vringState(m);
    return this.stopQueue(s).then((base) => vringStatePayload(s.index, base));
  }

  /** Stops a ring: no more kicks, outstanding chains finished (or abandoned), returns last_avail_idx. */
  private async stopQueue(s: QueueSlot): Promise<number> {
    s.started = false;
    this.stopKick(s);
    const q = s.queue;
    if (q) {
      try {
        this.device.onQueueStop?.(s.index);
      } catch (e) {
        this.log.error('vhost-user.unexpected', { peer: this.peer, queue: s.index, err: e }, 'vhost-user: device onQueueStop failed');
      }
      if (q.inflight > 0) {
        if (!(await q.whenIdle(this.o.drainTimeoutMs))) {
          const n = q.abandonInflight();
          this.log.warn(
            'vhost-user.queue',
            { peer: this.peer, queue: s.index, abandoned: n },
            'vhost-user: queue stopped with requests still outstanding; their replies will be dropped',
          );
        }
      }
      s.base = q.lastAvail;
      this.dropQueue(s);
    }
    closeFd(s.callFd);
    s.callFd = -1;
    return s.base;
  }

  private setVringFd(m: Message): undefined {
    expectSize(m, 8);
    const v = m.payload.readBigUInt64LE(0);
    if (v & ~(VRING_INDEX_MASK | VRING_NOFD_MASK)) throw new Fault(`payload 0x${v.toString(16)} has unknown bits`);
    const s = this.slot(Number(v & VRING_INDEX_MASK));
    const noFd = (v & VRING_NOFD_MASK) !== 0n;
    const fd = noFd ? (expectNoFds(m), -1) : takeEventFd(m);
    switch (m.request) {
      case Req.SET_VRING_KICK:
        if (fd < 0) throw new Fault(`queue ${s.index}: polling mode (no kick fd) is not supported`);
        this.stopKick(s);
        s.kickFd = fd;
        return this.startQueue(s);
      case Req.SET_VRING_CALL:
        closeFd(s.callFd);
        s.callFd = fd;
        // QEMU sets the call fd after the kick fd; entries used in between must still be signalled.
        if (fd >= 0 && s.missedInterrupt) this.interrupt(s);
        return undefined;
      default:
        closeFd(s.errFd);
        s.errFd = fd;
        return undefined;
    }
  }

  private startQueue(s: QueueSlot): undefined {
    if (!s.addr || s.size === 0) {
      this.stopKick(s);
      throw new Fault(`queue ${s.index} kicked before its size and addresses were set`);
    }
    if (!s.queue) {
      const rings = this.resolveRings(s.size, s.addr);
      if (!rings) {
        this.stopKick(s);
        throw new Fault(`queue ${s.index} rings are not inside guest memory`);
      }
      s.queue = new SplitQueue(
        {
          index: s.index,
          size: s.size,
          memory: this.memory,
          eventIdx: (this.ackedFeatures & VirtioFeature.EVENT_IDX) !== 0n,
          indirect: (this.ackedFeatures & VirtioFeature.INDIRECT_DESC) !== 0n,
          lastAvail: s.base,
          usedLogGpa: s.usedLogGpa,
          notify: () => this.interrupt(s),
          onFault: (fault) => this.queueFault(s, fault),
        },
        rings,
      );
    }
    s.started = true;
    const kickFd = s.kickFd;
    s.kickPoll = pollFd(kickFd, { readable: true }, (status: unknown) => {
      if (typeof status === 'number' && status < 0) {
        this.log.warn('vhost-user.queue', { peer: this.peer, queue: s.index, status }, 'vhost-user: kick fd poll failed; queue stopped');
        this.stopKick(s);
        return;
      }
      drainEventFd(kickFd);
      this.process(s);
    });
    // Entries made available while the ring was stopped would otherwise wait for the next kick.
    this.process(s);
    return undefined;
  }

  private setVringEnable(m: Message): undefined {
    const { s, num } = this.vringState(m);
    if (num > 1) throw new Fault(`enable value ${num} is not 0 or 1`);
    s.enabled = num === 1;
    this.process(s);
    return undefined;
  }

  private stopKick(s: QueueSlot): void {
    s.kickPoll?.close(); // before closing the fd: libuv must not poll a closed fd
    s.kickPoll = null;
    closeFd(s.kickFd);
    s.kickFd = -1;
  }

  private dropQueue(s: QueueSlot): void {
    this.cancelResume(s); // a continuation must not touch the old ring
    s.queue?.retire();
    s.queue = null;
  }

  /**
   * Hands the queue's available chains to the device, a bounded batch per
   * turn. One drain per queue at a time: a kick while a continuation is due
   * only lets the continuation find the new entries (chains reach the
   * device in ring order, as the devices assume).
   */
  private process(s: QueueSlot): void {
    if (s.resume || !(s.started && s.enabled && s.queue)) return;
    const q = s.queue;
    if (!q.drain(this.dispatchers[s.index]!, CHAINS_PER_TURN)) return;
    // Stopped at the budget: more may be available and the guest need not kick again.
    s.resume = setImmediate(() => {
      s.resume = null;
      if (s.queue === q && !this.ended) this.process(s);
    });
  }

  private cancelResume(s: QueueSlot): void {
    if (s.resume) clearImmediate(s.resume);
    s.resume = null;
  }

  private dispatch(q: number, chain: DescriptorChain): void {
    try {
      this.device.onRequest(q, chain);
    } catch (e) {
      this.log.error('vhost-user.unexpected', { peer: this.peer, queue: q, err: e }, 'vhost-user: device failed on a request; completing it empty');
      if (!chain.completed) chain.complete(0);
    }
  }

  private interrupt(s: QueueSlot): void {
    s.missedInterrupt = s.callFd < 0;
    if (s.callFd >= 0) signalEventFd(s.callFd);
  }

  private queueFault(s: QueueSlot, fault: string): void {
    this.log.warn(
      'vhost-user.queue',
      { peer: this.peer, queue: s.index, fault },
      'virtqueue broken by the guest; ignored until the frontend resets it',
    );
    if (s.errFd >= 0) signalEventFd(s.errFd);
  }

  // ---------------------------------------------------------------- config

  private getConfig(m: Message): Buffer {
    const { offset, size } = configHeader(m);
    if (m.size !== CONFIG_HEADER_SIZE + size) throw new Fault(`payload of ${m.size} bytes for a ${size}-byte config read`);
    const cfg = this.device.config();
    const out = Buffer.alloc(CONFIG_HEADER_SIZE + size);
    m.payload.copy(out, 0, 0, CONFIG_HEADER_SIZE);
    if (offset < cfg.length) cfg.copy(out, CONFIG_HEADER_SIZE, offset, Math.min(cfg.length, offset + size));
    return out;
  }

  private setConfig(m: Message): undefined {
    const { offset, size } = configHeader(m);
    if (m.size !== CONFIG_HEADER_SIZE + size) throw new Fault(`payload of ${m.size} bytes for a ${size}-byte config write`);
    const ok = this.device.setConfig?.(offset, m.payload.subarray(CONFIG_HEADER_SIZE)) ?? false;
    if (!ok) throw new Fault(`config space [${offset}, +${size}) is read-only`);
    return undefined;
  }

  // ---------------------------------------------------------------- lifetime

  get peer(): string {
    return this.o.peer;
  }

  /** RESET_DEVICE: every ring stopped, outstanding chains abandoned, the device reset. */
  private resetDevice(why: string): void {
    for (const s of this.slots) {
      this.stopKick(s);
      this.dropQueue(s);
      closeFd(s.callFd);
      closeFd(s.errFd);
      Object.assign(s, {
        size: 0,
        base: 0,
        addr: null,
        usedLogGpa: null,
        callFd: -1,
        errFd: -1,
        enabled: false,
        started: false,
        missedInterrupt: false,
      });
    }
    this.ackedFeatures = 0n;
    this.closeLog();
    this.status = 0;
    this.resetDeviceModel(why);
  }

  private resetDeviceModel(why: string): void {
    try {
      this.device.reset();
    } catch (e) {
      this.log.error('vhost-user.unexpected', { peer: this.peer, err: e, why }, 'vhost-user: device reset failed');
    }
  }

  private teardown(reason: CloseReason): void {
    if (this.ended) return;
    this.ended = true;
    for (const s of this.slots) {
      this.stopKick(s);
      this.dropQueue(s);
      closeFd(s.callFd);
      closeFd(s.errFd);
      s.callFd = s.errFd = -1;
    }
    closeFd(this.backendChannelFd);
    this.backendChannelFd = -1;
    this.closeLog();
    this.transfer?.abort('the frontend disconnected');
    this.transfer = null;
    this.memory.clear();
    this.resetDeviceModel('frontend disconnected');
    this.onEnd(reason);
  }
}

/** Requests answered by a reply of their own (not a REPLY_ACK), given the negotiated protocol features. */
function hasOwnReply(request: number, protocol: bigint): boolean {
  // SET_LOG_BASE has its reply only with LOG_SHMFD (it carries the fd then).
  if (request === Req.SET_LOG_BASE) return (protocol & ProtocolFeature.LOG_SHMFD) !== 0n;
  return (
    request === Req.GET_FEATURES ||
    request === Req.GET_PROTOCOL_FEATURES ||
    request === Req.GET_VRING_BASE ||
    request === Req.GET_QUEUE_NUM ||
    request === Req.GET_MAX_MEM_SLOTS ||
    request === Req.GET_CONFIG ||
    request === Req.GET_STATUS ||
    request === Req.SET_DEVICE_STATE_FD ||
    request === Req.CHECK_DEVICE_STATE
  );
}

function reqNames(request: number): string {
  const name = requestName(request);
  return name.startsWith('request ') ? `unknown ${name}` : `${name} is not supported`;
}

function expectSize(m: Message, size: number): void {
  if (m.size !== size) throw new Fault(`payload of ${m.size} bytes, expected ${size}`);
}

function expectNoFds(m: Message): void {
  if (m.fds.length) throw new Fault(`${m.fds.length} unexpected fds`);
}

/** Exactly `n` fds, removed from the message (so they are not closed with the rest). */
function takeFds(m: Message, n: number): number[] {
  if (m.fds.length !== n) throw new Fault(`${m.fds.length} fds, expected ${n}`);
  return m.fds.splice(0);
}

/**
 * The one fd of a KICK/CALL/ERR message, which must be an eventfd: anything
 * else could block the main thread (a full pipe) or spin it (a pipe at EOF).
 * Made non-blocking (QEMU's already are) so a full counter cannot block us.
 */
function takeEventFd(m: Message): number {
  const [fd] = takeFds(m, 1);
  let target = '';
  try {
    target = readlinkSync(procPath(fd!));
  } catch {
    // reported below
  }
  if (target !== 'anon_inode:[eventfd]') {
    closeFd(fd!);
    throw new Fault(`fd is not an eventfd (${target || 'unknown'})`);
  }
  setNonBlocking(fd!);
  return fd!;
}

function safe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Fault(`${what} 0x${v.toString(16)} is beyond 2^53`);
  return Number(v);
}

function readRegion(p: Buffer, at: number): RegionSpec {
  return {
    guestAddr: safe(p.readBigUInt64LE(at), 'region guest address'),
    size: safe(p.readBigUInt64LE(at + 8), 'region size'),
    userAddr: safe(p.readBigUInt64LE(at + 16), 'region user address'),
    mmapOffset: safe(p.readBigUInt64LE(at + 24), 'region mmap offset'),
  };
}

function configHeader(m: Message): { offset: number; size: number } {
  if (m.size < CONFIG_HEADER_SIZE) throw new Fault(`payload of ${m.size} bytes, expected at least ${CONFIG_HEADER_SIZE}`);
  const offset = m.payload.readUInt32LE(0);
  const size = m.payload.readUInt32LE(4);
  if (size > MAX_CONFIG_SIZE || offset > MAX_CONFIG_SIZE || offset + size > MAX_CONFIG_SIZE)
    throw new Fault(`config range [${offset}, +${size}) beyond ${MAX_CONFIG_SIZE} bytes`);
  return { offset, size };
}
