// 9P over a byte stream (unix socket, TCP, an inherited fd): splits the
// stream into frames by their size field and feeds a Session. A frame
// shorter than a header or longer than the negotiated msize means the
// framing is lost: the connection is closed with a log line.
import type { Socket } from 'node:net';
import { HEADER_SIZE } from './constants.js';
import { Session, type SessionContext } from './session.js';
import type { PeerLog } from '../../src/log-limit.js';

/**
 * Frames handled per turn of the event loop. One 64 KiB chunk of small
 * requests holds thousands; past this many the rest wait for the next turn
 * (the socket paused meanwhile), so one pipelining client cannot hold every
 * other connection, guest and new connection back.
 */
export const STREAM_BATCH = 64;

export class StreamConnection {
  readonly session: Session;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private closed = false;
  private corked = false;
  private awaitingDrain = false;
  /** a batch was cut short: the rest is handled on the next turn */
  private yielding = false;
  /** shutdown(): no more requests are taken */
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
          if (!this.closed && !this.yielding && !this.stopping) this.socket.resume();
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
    if (!this.yielding) this.parse();
  }

  /** Replies to everything handled in this turn leave in one writev, not one write each. */
  private corkForTurn(): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
  }

  private parse(): void {
    this.corkForTurn();
    for (let handled = 0; !this.closed && this.buffered >= 4; handled++) {
      if (handled === STREAM_BATCH) {
        this.yieldTurn();
        return;
      }
      const head = this.chunks[0]!.length >= 4 ? this.chunks[0]! : this.flatten();
      const size = head.readUInt32LE(0);
      if (size < HEADER_SIZE || size > this.session.maxFrame) {
        this.origin.warn('9p.frame', { peer: this.peer, size, max: this.session.maxFrame }, '9p frame size out of range; closing the connection');
        this.destroy();
        return;
      }
      if (this.buffered < size) return;
      const all = this.flatten();
      const frame = all.subarray(0, size);
      const rest = all.subarray(size);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
      this.session.handle(frame);
    }
  }

  private yieldTurn(): void {
    this.yielding = true;
    this.socket.pause();
    setImmediate(() => {
      this.yielding = false;
      if (this.closed || this.stopping) return;
      if (!this.awaitingDrain) this.socket.resume();
      this.parse();
    });
  }

  private flatten(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
    return this.chunks[0]!;
  }

  /** Stops taking requests; lets running ones finish (bounded), then closes. */
  async shutdown(graceMs = 5000): Promise<void> {
    this.stopping = true;
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
    this.chunks = [];
    this.session.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
