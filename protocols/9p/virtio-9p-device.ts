// A virtio-9p device (virtio id 9) served over vhost-user, for QEMU's
// vhost-user-test-device-pci: one request queue; each chain carries one 9P
// request in its readable part and receives the reply in its writable part.
// The config space is le16 tag length + tag (VIRTIO_9P_MOUNT_TAG).
//
// Requests are copied out of guest memory before parsing (the guest may
// rewrite them under us), except Twrite data, which is written to the file
// from guest memory; Rread data is read straight into the guest's buffers.
// File data never passes through a JS buffer.
import type { DescriptorChain, VhostUserDevice } from '../vhost-user/index.js';
import { VIRTIO_ID_9P, gather, scatter } from '../vhost-user/index.js';
import { Errno, SysError } from '../../src/sys/index.js';
import { viewsOf } from '../../src/sys/vectored.js';
import { HEADER_SIZE, IOHDRSZ, T } from './constants.js';
import { encodeRlerror } from './wire.js';
import { Session, type SessionContext } from './session.js';
import { PeerLog } from '../../src/log-limit.js';
import { after, type Awaitable } from '../../src/backend/api.js';

const VIRTIO_9P_MOUNT_TAG = 1n << 0n;
/** Twrite up to its data: size[4] type[1] tag[2] fid[4] offset[8] count[4] */
const TWRITE_FIXED = HEADER_SIZE + 4 + 8 + 4;
/** Linux limits the mount tag to this many bytes. */
const MAX_TAG = 255;

export class Virtio9pDevice implements VhostUserDevice {
  readonly virtioId = VIRTIO_ID_9P;
  readonly numQueues = 1;
  readonly deviceFeatures = VIRTIO_9P_MOUNT_TAG;
  private session: Session;
  /** chains waiting for their reply, by 9P tag */
  private readonly pending = new Map<number, DescriptorChain>();
  private generation = 0;
  /** One allowance for the device, whichever guest session: a reset buys no fresh one. */
  private readonly logs: PeerLog;

  constructor(
    private readonly ctx: SessionContext,
    private readonly tag: string,
    private readonly peer: string,
  ) {
    if (Buffer.byteLength(tag) === 0 || Buffer.byteLength(tag) > MAX_TAG) {
      throw new SysError(Errno.EINVAL, 'virtio-9p tag', `${JSON.stringify(tag)} must be 1..${MAX_TAG} bytes`);
    }
    this.logs = new PeerLog(ctx.log, peer, ctx.logLimits);
    this.session = this.newSession();
  }

  private newSession(): Session {
    return new Session(
      this.ctx,
      `${this.peer}#${++this.generation}`,
      (frame) => this.deliver(frame),
      (tag, count, fill) => this.directRead(tag, count, fill),
      this.logs,
    );
  }

  config(): Buffer {
    const t = Buffer.from(this.tag);
    const b = Buffer.alloc(2 + t.length);
    b.writeUInt16LE(t.length, 0);
    t.copy(b, 2);
    return b;
  }

  reset(): void {
    const old = this.session;
    old.close();
    // A chain whose request still runs (a read filling it, a write taking
    // its data from it) is returned only when that I/O has ended: until
    // then its guest memory stays pinned, so nothing can be unmapped under it.
    for (const [tag, c] of this.pending) {
      const running = old.running(tag);
      if (running) void running.finally(() => c.complete(0));
      else c.complete(0);
    }
    this.pending.clear();
    this.session = this.newSession();
  }

  onRequest(_queue: number, chain: DescriptorChain): void {
    const max = this.session.maxFrame;
    if (chain.readableLength < HEADER_SIZE) return this.broken(chain, `request of ${chain.readableLength} bytes`);
    const head = gather(chain.readable, 0, HEADER_SIZE);
    const size = head.readUInt32LE(0);
    const tag = head.readUInt16LE(5);
    // The size field must agree with the descriptors and the negotiated msize.
    if (size < HEADER_SIZE || size > chain.readableLength || size > max) {
      this.logs.warn(
        'virtio-9p.chain',
        { peer: this.peer, size, readable: chain.readableLength, max },
        'virtio-9p frame size disagrees with its descriptors',
      );
      return this.replyError(chain, tag, Errno.EPROTO);
    }
    if (this.pending.has(tag)) {
      this.logs.warn('virtio-9p.chain', { peer: this.peer, tag }, 'virtio-9p: tag already in flight');
      return this.replyError(chain, tag, Errno.EPROTO);
    }
    this.pending.set(tag, chain);
    if (head[4] === T.write && size > TWRITE_FIXED) {
      // Only the fixed part is copied; the data is written from guest memory.
      this.session.handle(gather(chain.readable, 0, TWRITE_FIXED), viewsOf(chain.readable, TWRITE_FIXED, size - TWRITE_FIXED));
    } else {
      this.session.handle(gather(chain.readable, 0, size));
    }
  }

  /** A reply from the session goes into the chain its request came in. */
  private deliver(frame: Buffer): void {
    const tag = frame.readUInt16LE(5);
    const chain = this.pending.get(tag);
    if (!chain) {
      this.logs.warn('virtio-9p.reply', { peer: this.peer, tag }, 'virtio-9p: reply for a tag with no chain');
      return;
    }
    this.pending.delete(tag);
    if (frame.length > chain.writableLength) {
      // The reply would not fit: answer with an Rlerror that does, if possible.
      this.logs.warn(
        'virtio-9p.reply',
        { peer: this.peer, tag, need: frame.length, writable: chain.writableLength },
        'virtio-9p reply does not fit the guest buffers',
      );
      return this.replyError(chain, tag, Errno.ENOBUFS);
    }
    scatter(chain.writable, frame);
    chain.complete(frame.length);
  }

  private directRead(tag: number, count: number, fill: (dst: readonly Buffer[], skip: number, max: number) => Awaitable<number>): Awaitable<void> {
    const chain = this.pending.get(tag);
    if (!chain) throw new SysError(Errno.EPROTO, 'Tread', `no chain for tag ${tag}`);
    const want = Math.min(count, chain.writableLength - IOHDRSZ);
    if (want < 0) throw new SysError(Errno.ENOBUFS, 'Tread', 'reply buffers smaller than an Rread header');
    return after(fill(chain.writable, IOHDRSZ, want), (got) => this.readDone(tag, chain, got));
  }

  private readDone(tag: number, chain: DescriptorChain, got: number): void {
    // A reset meanwhile handed the chain back already (after this read ended).
    if (this.pending.get(tag) !== chain) return;
    const h = Buffer.alloc(IOHDRSZ);
    h.writeUInt32LE(IOHDRSZ + got, 0);
    h[4] = T.read + 1;
    h.writeUInt16LE(tag, 5);
    h.writeUInt32LE(got, 7);
    scatter(chain.writable, h);
    this.pending.delete(tag);
    chain.complete(IOHDRSZ + got);
  }

  private replyError(chain: DescriptorChain, tag: number, errno: number): void {
    if (chain.writableLength < 11) return this.broken(chain, 'no room for an Rlerror');
    scatter(chain.writable, encodeRlerror(tag, errno));
    chain.complete(11);
  }

  private broken(chain: DescriptorChain, why: string): void {
    this.logs.warn('virtio-9p.chain', { peer: this.peer, why }, 'virtio-9p chain cannot carry a 9P exchange; returned empty');
    chain.complete(0);
  }
}
