// A vhost-user message stream on a connected unix socket, driven by
// koffi.node.poll on the main loop. Frames are read header first, then the
// payload, each with recvmsg so the fds that travel with a message's first
// byte are collected. Used by the backend and by the test frontend alike.
import { pollFd, type FdPoll } from '../../src/sys/poll.js';
import { closeFd } from '../../src/sys/fd.js';
import { MsgIo } from '../../src/sys/sockets.js';
import { decodeHeader, HEADER_SIZE, MAX_PAYLOAD, type Message } from './protocol.js';

/** Why a message stream ended. */
export type CloseReason = { kind: 'eof' } | { kind: 'error'; message: string } | { kind: 'local'; message: string };

export interface MessageSocketHandlers {
  /** A complete message. Returning a promise pauses reading until it settles. */
  onMessage(m: Message): void | Promise<void>;
  onClose(reason: CloseReason): void;
}

export class MessageSocket {
  private readonly io = new MsgIo();
  private readonly header = Buffer.alloc(HEADER_SIZE);
  private headerGot = 0;
  private payload: Buffer | null = null;
  private payloadGot = 0;
  private fds: number[] = [];
  private poll: FdPoll | null = null;
  private busy = false;
  private closed = false;

  constructor(
    readonly fd: number,
    private readonly handlers: MessageSocketHandlers,
    private readonly maxPayload = MAX_PAYLOAD,
  ) {}

  get isClosed(): boolean {
    return this.closed;
  }

  start(): void {
    if (this.closed || this.poll) return;
    this.poll = pollFd(this.fd, { readable: true }, (status: unknown) => this.onPoll(status));
  }

  // koffi calls back with (status, events). libuv reports POLLERR (e.g. a
  // peer that reset the connection) as a negative status and stops polling:
  // read once to learn what happened, then give up on the socket.
  private onPoll(status: unknown): void {
    if (typeof status === 'number' && status < 0) {
      if (!this.busy) this.readable();
      this.close({ kind: 'error', message: `socket error (poll status ${status})` });
      return;
    }
    this.readable();
  }

  /** Writes one framed message; false (and the stream closed) if it could not be sent whole. */
  send(frame: Buffer, fds: readonly number[] = []): boolean {
    if (this.closed) return false;
    try {
      // Messages are a few hundred bytes; a socket buffer too full for one means a stuck peer.
      const n = this.io.send(this.fd, frame, fds);
      if (n === frame.length) return true;
      this.close({ kind: 'error', message: n < 0 ? 'socket buffer full' : `short write (${n} of ${frame.length} bytes)` });
    } catch (e) {
      this.close({ kind: 'error', message: (e as Error).message });
    }
    return false;
  }

  close(reason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    this.poll?.close();
    this.poll = null;
    for (const f of this.fds) closeFd(f);
    this.fds = [];
    closeFd(this.fd);
    this.handlers.onClose(reason);
  }

  private readable(): void {
    while (!this.closed && !this.busy) {
      const m = this.readMessage();
      if (m === null) return;
      let r: void | Promise<void>;
      try {
        r = this.handlers.onMessage(m);
      } catch (e) {
        this.close({ kind: 'error', message: `handler failed: ${(e as Error).message}` });
        return;
      }
      if (r instanceof Promise) {
        this.busy = true;
        this.poll?.stop();
        r.then(
          () => this.resume(),
          (e: unknown) => this.close({ kind: 'error', message: `handler failed: ${(e as Error).message}` }),
        );
        return;
      }
    }
  }

  private resume(): void {
    this.busy = false;
    if (this.closed || !this.poll) return;
    this.poll.start({ readable: true }, (status: unknown) => this.onPoll(status));
    this.readable();
  }

  /** The next whole message, or null when more bytes are needed (or the stream closed). */
  private readMessage(): Message | null {
    try {
      while (this.headerGot < HEADER_SIZE) {
        const n = this.io.recv(this.fd, this.header, this.headerGot, HEADER_SIZE - this.headerGot, this.fds);
        if (n < 0) return null;
        if (n === 0) {
          this.close(
            this.headerGot === 0 && this.fds.length === 0 ? { kind: 'eof' } : { kind: 'error', message: 'connection closed inside a message header' },
          );
          return null;
        }
        this.headerGot += n;
      }
      const h = decodeHeader(this.header);
      if (this.payload === null) {
        if (h.size > this.maxPayload) {
          this.close({ kind: 'error', message: `message ${h.request} declares a ${h.size}-byte payload (limit ${this.maxPayload})` });
          return null;
        }
        this.payload = Buffer.alloc(h.size);
        this.payloadGot = 0;
      }
      while (this.payloadGot < this.payload.length) {
        const n = this.io.recv(this.fd, this.payload, this.payloadGot, this.payload.length - this.payloadGot, this.fds);
        if (n < 0) return null;
        if (n === 0) {
          this.close({ kind: 'error', message: `connection closed inside the payload of message ${h.request}` });
          return null;
        }
        this.payloadGot += n;
      }
      const m: Message = { ...h, payload: this.payload, fds: this.fds };
      this.headerGot = 0;
      this.payload = null;
      this.fds = [];
      return m;
    } catch (e) {
      this.close({ kind: 'error', message: (e as Error).message });
      return null;
    }
  }
}
