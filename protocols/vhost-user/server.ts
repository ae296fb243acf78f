// The vhost-user listener: a unix socket (created owner-only, stale socket
// files replaced) or an inherited listening fd (--fd, libvirt, socket
// activation). One frontend at a time; when it goes (guest shutdown, QEMU
// killed or restarted), the device is reset and the next connection is
// accepted, so QEMU's `reconnect` chardev option finds us serving on.
import { EventEmitter } from 'node:events';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import type { Logger } from '../../src/log.js';
import { PeerLog, type LogLimits } from '../../src/log-limit.js';
import { StartupError } from '../../src/listeners.js';
import type { VhostUserDevice } from './device.js';
import type { CloseReason } from './message-socket.js';
import { Session } from './session.js';
import { acceptConnection, connectUnixSocket, isListeningUnixSocket, listenUnixSocket, peerCredentials } from '../../src/sys/sockets.js';
import { closeFd, setNonBlocking } from '../../src/sys/fd.js';
import { pollFd, type FdPoll } from '../../src/sys/poll.js';
import { umask } from '../../src/sys/index.js';
import { MAX_QUEUE_SIZE } from '../virtqueue/split-queue.js';

export interface VhostUserServerOptions {
  device: VhostUserDevice;
  logger: Logger;
  /** Create and listen on a unix socket here (mode 0600), or ... */
  socketPath?: string;
  /** ... serve an inherited, already listening unix socket. */
  listenFd?: number;
  /** Largest queue size accepted (default 32768, the split-ring maximum). */
  maxQueueSize?: number;
  /** GET_VRING_BASE waits this long for outstanding requests (default 3000 ms). */
  drainTimeoutMs?: number;
  /** Offer VHOST_USER_PROTOCOL_F_BACKEND_REQ (default false; the fd is accepted either way). */
  offerBackendChannel?: boolean;
  /** GET_MAX_MEM_SLOTS answer (default 509, as rust-vmm). */
  maxMemSlots?: number;
  /** rate limit of the log lines the frontends of this socket can cause (false: none); default DEFAULT_LOG_LIMITS */
  logLimits?: LogLimits | false;
  /** listen, but accept no frontend until start() (the server confines itself in between) */
  deferAccept?: boolean;
}

export interface ConnectionInfo {
  /** 1, 2, ... in accept order. */
  serial: number;
  peer: string;
}

export interface VhostUserServerEvents {
  connect: [ConnectionInfo];
  disconnect: [ConnectionInfo, CloseReason];
}

export class VhostUserServer extends EventEmitter<VhostUserServerEvents> {
  private listenPoll: FdPoll | null = null;
  private session: Session | null = null;
  private current: ConnectionInfo | null = null;
  private serial = 0;
  private closed = false;
  /** the pause before the next accept after a failed one (0: the last accept worked) */
  private acceptRetry = 0;
  private acceptTimer: NodeJS.Timeout | undefined;
  private ownsSocketFile: boolean;
  /** One allowance for everything that connects here: reconnecting buys no fresh one. */
  private readonly logs: PeerLog;

  private constructor(
    private readonly listenFd: number,
    readonly socketPath: string | undefined,
    private readonly o: VhostUserServerOptions,
  ) {
    super();
    this.ownsSocketFile = socketPath !== undefined;
    this.logs = new PeerLog(o.logger, `vhost-user:${socketPath ?? `fd ${listenFd}`}`, o.logLimits);
  }

  /** Starts listening; throws StartupError for problems an operator can fix. */
  static listen(o: VhostUserServerOptions): VhostUserServer {
    if ((o.socketPath === undefined) === (o.listenFd === undefined))
      throw new StartupError('vhost-user: give exactly one of a socket path and a listening fd');
    let fd: number;
    if (o.socketPath !== undefined) {
      fd = listenAt(o.socketPath);
    } else {
      fd = o.listenFd!;
      if (!isListeningUnixSocket(fd)) throw new StartupError(`fd ${fd} is not a listening unix socket`);
      setNonBlocking(fd);
    }
    const server = new VhostUserServer(fd, o.socketPath, o);
    if (!o.deferAccept) server.acceptNext();
    o.logger.info({ socket: o.socketPath ?? `fd ${fd}`, virtioId: o.device.virtioId, queues: o.device.numQueues }, 'vhost-user: listening');
    return server;
  }

  /** Starts accepting frontends (after deferAccept). */
  start(): void {
    if (!this.listenPoll) this.acceptNext();
  }

  /** close() leaves the socket file alone: someone else removes it (the sandbox supervisor). */
  forgetSocketFile(): void {
    this.ownsSocketFile = false;
  }

  get connection(): ConnectionInfo | null {
    return this.current;
  }

  /** Stops listening, drops the frontend if any, removes the socket file we created. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.acceptTimer);
    this.listenPoll?.close();
    this.listenPoll = null;
    this.session?.close();
    closeFd(this.listenFd);
    if (this.socketPath !== undefined && this.ownsSocketFile) {
      try {
        unlinkSync(this.socketPath);
      } catch {
        // already gone
      }
    }
  }

  /** Polls the listening socket only while no frontend is connected: one at a time. */
  private acceptNext(): void {
    if (this.closed) return;
    if (!this.listenPoll) {
      this.listenPoll = pollFd(this.listenFd, { readable: true }, () => this.onAcceptable());
    } else {
      this.listenPoll.start({ readable: true }, () => this.onAcceptable());
    }
    // A frontend may already be waiting in the backlog (reconnect raced our teardown).
    this.onAcceptable();
  }

  private onAcceptable(): void {
    if (this.closed || this.session) return;
    let fd: number;
    try {
      fd = acceptConnection(this.listenFd);
    } catch (e) {
      this.acceptFailed(e);
      return;
    }
    if (fd < 0) return;
    this.acceptRetry = 0;
    this.listenPoll?.stop();
    const cred = peerCredentials(fd);
    const info: ConnectionInfo = {
      serial: ++this.serial,
      peer: cred ? `#${this.serial} pid ${cred.pid} uid ${cred.uid}` : `#${this.serial}`,
    };
    this.logs.info('vhost-user.connection', { peer: info.peer }, 'vhost-user: frontend connected');
    this.current = info;
    this.session = new Session(
      fd,
      {
        device: this.o.device,
        log: this.logs,
        peer: info.peer,
        maxQueueSize: Math.min(this.o.maxQueueSize ?? MAX_QUEUE_SIZE, MAX_QUEUE_SIZE),
        drainTimeoutMs: this.o.drainTimeoutMs ?? 3000,
        offerBackendChannel: this.o.offerBackendChannel ?? false,
        maxMemSlots: this.o.maxMemSlots ?? 509,
      },
      (reason) => this.onSessionEnd(info, reason),
    );
    this.emit('connect', info);
    this.session.start();
  }

  /**
   * accept(2) failed, most likely EMFILE/ENFILE: the frontend stays in the
   * backlog, and the listening socket stays readable, so polling on would
   * spin. Stop polling, say so once, and try again after a pause that grows
   * to a second, until fds are free again.
   */
  private acceptFailed(e: unknown): void {
    this.listenPoll?.stop();
    const wait = Math.min(1000, this.acceptRetry ? this.acceptRetry * 2 : 50);
    if (!this.acceptRetry)
      this.o.logger.error(
        { err: e },
        `vhost-user: accept failed (${e instanceof Error ? e.message : String(e)}); the frontend waits in the backlog, retrying`,
      );
    this.acceptRetry = wait;
    this.acceptTimer = setTimeout(() => {
      this.acceptTimer = undefined;
      this.acceptNext();
    }, wait);
  }

  private onSessionEnd(info: ConnectionInfo, reason: CloseReason): void {
    this.session = null;
    this.current = null;
    const peer = info.peer;
    if (reason.kind === 'error')
      this.logs.warn('vhost-user.connection', { peer, fault: reason.message }, 'vhost-user: frontend connection ended; device reset');
    else
      this.logs.info(
        'vhost-user.connection',
        { peer, reason: reason.kind === 'eof' ? 'closed by the frontend' : reason.message },
        'vhost-user: frontend disconnected; device reset',
      );
    this.logs.flush();
    this.emit('disconnect', info, reason);
    // Not from inside the session's own teardown stack: accept on the next turn.
    if (!this.closed) setImmediate(() => this.acceptNext());
  }
}

/** Convenience: VhostUserServer.listen(). */
export function listenVhostUser(o: VhostUserServerOptions): VhostUserServer {
  return VhostUserServer.listen(o);
}

/**
 * Binds `path` owner-only. A socket file nobody listens on (a server that
 * died) is replaced; a live socket, or a file that is not a socket, is an error.
 */
function listenAt(path: string): number {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    st = undefined;
  }
  if (st) {
    if (!st.isSocket()) throw new StartupError(`${path} exists and is not a socket; remove it or choose another path`);
    let live = false;
    try {
      closeFd(connectUnixSocket(path));
      live = true;
    } catch {
      // ECONNREFUSED: stale
    }
    if (live) throw new StartupError(`${path}: address in use (another server is listening there)`);
    unlinkSync(path);
  }
  const old = umask(0o177);
  try {
    return listenUnixSocket(path);
  } catch (e) {
    throw new StartupError(`cannot listen on ${path}: ${(e as Error).message}`);
  } finally {
    umask(old);
    try {
      chmodSync(path, 0o600);
    } catch {
      // bind failed; reported above
    }
  }
}
