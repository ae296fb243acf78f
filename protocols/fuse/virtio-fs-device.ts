// The virtio-fs device (virtio id 26) a vhost-user frontend (QEMU's
// vhost-user-fs-pci) talks to: queue 0 is hiprio (FORGET, BATCH_FORGET,
// INTERRUPT), queues 1.. carry requests. Each chain holds one FUSE request
// in its readable part and receives the reply in its writable part.
//
// Chains are views on live guest memory that the guest may rewrite at any
// moment, so everything the server parses is copied out first; only WRITE
// payloads and READ destinations stay as views, so file data moves between
// the page cache and guest memory without a copy through JS.
import type { DescriptorChain, VhostUserDevice } from '../vhost-user/index.js';
import { VIRTIO_ID_FS, gather, scatter } from '../vhost-user/index.js';
import { Errno, SysError } from '../../src/sys/index.js';
import { viewsOf } from '../../src/sys/vectored.js';
import { IN_HEADER_SIZE, OP, OUT_HEADER_SIZE } from './constants.js';
import { outHeader } from './wire.js';
import { RequestBody, type ReplyTo } from './request.js';
import { FuseSession, type FuseSessionContext } from './session.js';
import { PeerLog } from '../../src/log-limit.js';

/** virtio_fs_config: tag[36] then le32 num_request_queues. */
const TAG_SIZE = 36;
const WRITE_IN_SIZE = 40;
/** Non-WRITE requests are small: names, xattr values (64 KiB), a little more. */
const MAX_COPIED_REQUEST = 128 * 1024 + IN_HEADER_SIZE;

export interface VirtioFsOptions {
  tag: string;
  numRequestQueues: number;
}

export class VirtioFsDevice implements VhostUserDevice {
  readonly virtioId = VIRTIO_ID_FS;
  readonly numQueues: number;
  readonly deviceFeatures = 0n;
  private session: FuseSession;
  private generation = 0;
  /** One allowance for the device, whichever guest session: a reset buys no fresh one. */
  private readonly log: PeerLog;

  constructor(
    private readonly ctx: FuseSessionContext,
    private readonly opts: VirtioFsOptions,
    private readonly peer: string,
  ) {
    if (Buffer.byteLength(opts.tag) > TAG_SIZE) throw new SysError(Errno.EINVAL, 'virtio-fs tag', `${opts.tag} is longer than ${TAG_SIZE} bytes`);
    this.numQueues = 1 + opts.numRequestQueues;
    this.log = new PeerLog(ctx.log, peer, ctx.logLimits);
    this.session = this.newSession();
  }

  private newSession(): FuseSession {
    return new FuseSession(this.ctx, `${this.peer}#${++this.generation}`, this.log);
  }

  config(): Buffer {
    const b = Buffer.alloc(TAG_SIZE + 4);
    b.write(this.opts.tag, 0, 'utf8');
    b.writeUInt32LE(this.opts.numRequestQueues, TAG_SIZE);
    return b;
  }

  reset(): void {
    // The guest is gone (or reset the device): every reference it held goes.
    this.session.close();
    this.session = this.newSession();
  }

  saveState(): Buffer {
    return this.session.saveState(this.ctx.options.migrationOnError ?? 'abort');
  }

  loadState(state: Buffer): Promise<void> {
    return this.session.loadState(state, this.ctx.options.migrationOnError ?? 'abort');
  }

  onQueueStop(): void {
    this.session.cancelWaits();
  }

  onRequest(queue: number, chain: DescriptorChain): void {
    if (chain.readableLength < IN_HEADER_SIZE) {
      this.log.warn('virtio-fs.chain', { peer: this.peer, queue, bytes: chain.readableLength }, 'virtio-fs chain shorter than a FUSE header');
      this.replyTo(chain).send(Errno.EINVAL, []);
      return;
    }
    const header = gather(chain.readable, 0, IN_HEADER_SIZE);
    const opcode = header.readUInt32LE(4);
    let body: RequestBody;
    if (opcode === OP.WRITE && chain.readableLength >= IN_HEADER_SIZE + WRITE_IN_SIZE) {
      // Copy the header and write_in; the payload stays in guest memory.
      const fixed = gather(chain.readable, 0, IN_HEADER_SIZE + WRITE_IN_SIZE);
      const payload = viewsOf(chain.readable, fixed.length, chain.readableLength - fixed.length);
      body = new RequestBody([fixed, ...payload]);
    } else {
      if (chain.readableLength > MAX_COPIED_REQUEST) {
        this.log.warn('virtio-fs.chain', { peer: this.peer, queue, opcode, bytes: chain.readableLength }, 'virtio-fs request too large');
        this.replyTo(chain, header).send(Errno.EINVAL, []);
        return;
      }
      body = RequestBody.of(gather(chain.readable));
    }
    if (queue === 0 && opcode !== OP.FORGET && opcode !== OP.BATCH_FORGET && opcode !== OP.INTERRUPT && this.log.wants('debug')) {
      this.log.debug('virtio-fs.chain', { peer: this.peer, opcode }, 'virtio-fs: a regular request on the hiprio queue');
    }
    this.session.handle(body, this.replyTo(chain, header));
  }

  private replyTo(chain: DescriptorChain, header?: Buffer): ReplyTo {
    const unique = header ? header.readBigUInt64LE(8) : 0n;
    const out = (len: number, error: number): Buffer => outHeader(len, error, unique);
    const put = (src: Buffer, at: number): number => scatter(chain.writable, src, at);
    const fail = (errno: number): boolean => {
      if (chain.writableLength < OUT_HEADER_SIZE) {
        this.log.warn('virtio-fs.reply', { peer: this.peer, writable: chain.writableLength }, 'virtio-fs chain has no room for a reply header');
        chain.complete(0);
        return false;
      }
      put(out(OUT_HEADER_SIZE, errno), 0);
      chain.complete(OUT_HEADER_SIZE);
      return errno !== Errno.EOVERFLOW;
    };
    return {
      send: (error, body) => {
        if (error) return fail(error);
        const len = OUT_HEADER_SIZE + body.reduce((a, b) => a + b.length, 0);
        if (len > chain.writableLength) {
          this.log.warn(
            'virtio-fs.reply',
            { peer: this.peer, need: len, writable: chain.writableLength },
            'virtio-fs reply does not fit the guest buffers',
          );
          return fail(Errno.EOVERFLOW);
        }
        put(out(len, 0), 0);
        let at = OUT_HEADER_SIZE;
        for (const b of body) at += put(b, at);
        chain.complete(len);
        return true;
      },
      sendRead: (size, fill) => {
        // Read straight into the guest's buffers after the reply header; the
        // chain (and the guest memory it pins) stays ours until complete().
        const want = Math.min(size, chain.writableLength - OUT_HEADER_SIZE);
        if (want < 0) {
          fail(Errno.EINVAL);
          return;
        }
        const done = (got: number): void => {
          put(out(OUT_HEADER_SIZE + got, 0), 0);
          chain.complete(OUT_HEADER_SIZE + got);
        };
        const failed = (e: unknown): void => {
          fail(e instanceof SysError ? e.errno : Errno.EIO);
        };
        try {
          const got = fill(chain.writable, OUT_HEADER_SIZE, want);
          if (typeof got === 'number') done(got);
          else got.then(done, failed);
        } catch (e) {
          failed(e);
        }
      },
      none: () => chain.complete(0),
    };
  }
}
