// 9P over a byte stream (unix socket, TCP, an inherited fd): splits the
// stream into frames by their size field and feeds a Session. A frame
// shorter than a header or longer than the negotiated msize means the
// framing is lost: the connection is closed with a log line.
import type { Socket } from 'node:net';
import { viewsOf } from '../../src/sys/vectored.js';
import { HEADER_SIZE, T } from './constants.js';

/** A Twrite up to its data: size[4] type[1] tag[2] fid[4] offset[8] count[4]. */
const TWRITE_FIXED = HEADER_SIZE + 4 + 8 + 4;
import { Session, type SessionContext } from './session.js';
import type { PeerLog } from '../../src/log-limit.js';

/**
 * Requests one connection hands to its session per turn of the event loop;
 * the rest wait for a setImmediate, so a client pipelining thousands of
 * requests cannot hold up other connections, transports or completions.
 */
export const MESSAGES_PER_TURN = 32;

export class StreamConnection {
  readonly session: Session;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private closed = false;
  private corked = false;
  private awaitingDrain = false;
  /** A continuation that parses frames left over from the last batch. */
  private resume: NodeJS.Immediate | null = null;
  /** Paused because complete frames wait to be parsed (the buffer must not grow meanwhile). */
  private backlogPaused = false;
  /** shutdown(): no more requests are taken. */
  private stopping = false;

  /** lines about the connection itself: limited per origin, not per connection (reconnecting buys nothing) */
  private readonly origin: PeerLog;

  constructor(
    private readonly socket: Socket,
    ctx: SessionContext,
    readonly peer: string,
    /** the origin's log (the remote address, the listener); default: the session's own */
    origin?: PeerLog,
  ) {
    this.session = new Session(ctx, peer, (frame) => {
      // Stop reading while the client is not reading its replies, so a
      // client cannot make the server buffer without bound. One drain
      // listener per episode, not one per reply: a batch of replies past
      // the high-water mark would otherwise pile up listeners (and Node
      // would print a MaxListenersExceededWarning on stderr per batch).
      if (!this.socket.write(frame) && !this.awaitingDrain) {
        this.awaitingDrain = true;
        this.socket.pause();
        this.socket.once('drain', () => {
          this.awaitingDrain = false;
          if (this.closed || this.stopping) return;
          if (this.backlogPaused)
            this.continueLater(); // it resumes the socket once caught up
          else this.socket.resume();
        });
      }
    });
    this.origin = origin ?? this.session.logs;
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('error', (e) => this.origin.debug('9p.stream', { peer, err: e.message }, '9p connection error'));
    socket.on('close', () => this.teardown());
  }

  private onData(b: Buffer): void {
    this.chunks.push(b);
    this.buffered += b.length;
    // Frames wait for a continuation: it takes these bytes in order, after them.
    if (!this.backlogPaused && !this.stopping) this.parse();
  }

  /**
   * Hands complete frames to the session, at most MESSAGES_PER_TURN; frames
   * left over wait for a setImmediate with the socket paused, so the
   * buffer does not grow while we catch up.
   */
  private parse(): void {
    if (this.closed || this.stopping) return;
    // Replies to everything in this batch leave in one writev, not one write
    // each. Uncorked on setImmediate, not nextTick: replies come from promise
    // continuations, which run after nextTick callbacks, so a nextTick uncork
    // would let every reply go out in a write of its own. A request that
    // waits for the pool replies on a later turn, uncorked.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    let budget = MESSAGES_PER_TURN;
    while (!this.closed && this.buffered >= 4) {
      const head = this.chunks[0]!.length >= 4 ? this.chunks[0]! : this.flatten();
      const size = head.readUInt32LE(0);
      if (size < HEADER_SIZE || size > this.session.maxFrame) {
        this.origin.warn('9p.frame', { peer: this.peer, size, max: this.session.maxFrame }, '9p frame size out of range; closing the connection');
        this.destroy();
        return;
      }
      if (this.buffered < size) break;
      if (budget-- === 0) {
        if (!this.backlogPaused) {
          this.backlogPaused = true;
          this.socket.pause();
        }
        this.continueLater();
        return;
      }
      const first = this.chunks[0]!;
      if (first.length >= size) {
        const frame = first.subarray(0, size);
        this.consume(size);
        this.session.handle(frame);
      } else if (first.length >= TWRITE_FIXED && first[4] === T.write) {
        // A Twrite spread over several socket reads: its data goes on as
        // views of them, as the virtio transport hands on guest memory. Not
        // one new buffer of the whole frame per request: besides the copy,
        // V8 counts every fresh ArrayBuffer towards its old-generation limit
        // until the next mark-compact, and 1 MiB writes then cost a full GC
        // every few requests (docs/architecture.md, "Large frames").
        const frame = first.subarray(0, TWRITE_FIXED);
        const payload = viewsOf(this.chunks, TWRITE_FIXED, size - TWRITE_FIXED);
        this.consume(size);
        this.session.handle(frame, payload);
      } else {
        const all = this.flatten();
        const frame = all.subarray(0, size);
        this.consume(size);
        this.session.handle(frame);
      }
    }
    // Caught up: read on, unless the client is not reading its replies (then 'drain' resumes).
    if (this.backlogPaused && !this.closed) {
      this.backlogPaused = false;
      if (!this.awaitingDrain) this.socket.resume();
    }
  }

  /** Parses what is buffered on a later turn (never while the client is not reading replies). */
  private continueLater(): void {
    if (this.resume !== null || this.closed) return;
    this.resume = setImmediate(() => {
      this.resume = null;
      if (this.awaitingDrain) return; // the 'drain' listener continues
      this.parse();
    });
  }

  /** Drops the first `n` buffered bytes (socket read buffers are never reused: views of them stay valid). */
  private consume(n: number): void {
    this.buffered -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      if (c.length <= n) {
        this.chunks.shift();
        n -= c.length;
      } else {
        this.chunks[0] = c.subarray(n);
        n = 0;
      }
    }
  }

  private flatten(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
    return this.chunks[0]!;
  }

  /** Stops taking requests; lets running ones finish (bounded), then closes. */
  async shutdown(graceMs = 5000): Promise<void> {
    this.stopping = true;
    if (this.resume !== null) clearImmediate(this.resume);
    this.resume = null;
    this.socket.pause();
    await Promise.race([this.session.drain(), new Promise((r) => setTimeout(r, graceMs).unref())]);
    this.socket.end();
    this.teardown();
  }

  destroy(): void {
    this.socket.destroy();
    this.teardown();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.resume !== null) clearImmediate(this.resume);
    this.resume = null;
    this.chunks = [];
    this.session.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
