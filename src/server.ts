// Wires one export's backend to every front-end asked for, and shuts them
// all down cleanly. The CLI is a thin layer over startDuofs().
import { Socket, type Server } from 'node:net';
import { realpathSync, statSync, unlinkSync } from 'node:fs';
import { relative, isAbsolute } from 'node:path';
import type { LevelWithSilent } from 'pino';
import { LocalBackend } from './backend/backend.js';
import type { Backend } from './backend/api.js';
import { deferredBackend } from './backend/deferred.js';
import { SysError, raiseNofileLimit, setNofileLimit } from './sys/index.js';
import { defaultFdLimits } from './backend/fd-budget.js';
import { acquireServeLock, ExportInUseError } from './convert/in-use.js';
import { IdMap } from '../security/id-map.js';
import { createLogger, type Logger } from './log.js';
import { DEFAULT_LOG_LIMITS, PeerLog, type LogLimits } from './log-limit.js';
import { listenInherited, listenTcp, listenUnix, parseHostPort, StartupError, type HostPort } from './listeners.js';
import type { ActivatedSocket } from './systemd/activation.js';
import { HostUsers } from '../security/host-users.js';
import { StreamConnection } from '../protocols/9p/stream.js';
import type { NinepPermissions, SessionContext } from '../protocols/9p/session.js';
import { FuseSession } from '../protocols/fuse/session.js';
import { DevFuseMount } from '../protocols/fuse/dev-fuse.js';
import { defaultFuseOptions, type FuseOptions } from '../protocols/fuse/options.js';
import { createEngine, defaultEngineChoice, threadPoolSize, type EngineChoice } from './io/select.js';
import { LatencyEngine } from './io/latency.js';
import type { IoEngine } from './io/engine.js';
import { VirtioFsDevice } from '../protocols/fuse/virtio-fs-device.js';
import { listenVhostUser, type VhostUserServer } from '../protocols/vhost-user/index.js';
import { Virtio9pDevice } from '../protocols/9p/virtio-9p-device.js';

export type { SecurityModelName as SecurityModel } from '../security/model.js';
import type { SecurityModelName as SecurityModel } from '../security/model.js';

export type { IdTranslation } from '../security/id-map.js';
import type { IdTranslation } from '../security/id-map.js';

export interface ServeOptions {
  sharedDir: string;
  /** how guest owners/modes map onto the host (QEMU -fsdev local security_model) */
  securityModel?: SecurityModel;
  /** host mode of files created in the mapped models (QEMU fmode, default 0600) */
  fmode?: number;
  /** host mode of directories created in the mapped models (QEMU dmode, default 0700) */
  dmode?: number;
  translateUid?: IdTranslation[];
  translateGid?: IdTranslation[];
  /** virtio-fs: a vhost-user-fs device on this unix socket (several: one device, one guest, each) */
  virtiofsSocket?: string | string[];
  /** virtio-fs: an inherited listening socket fd (libvirt, socket activation) */
  virtiofsFd?: number;
  /** virtio-fs mount tag advertised in the device's config space */
  tag?: string;
  /** virtio-fs request queues (queue 0 is hiprio) */
  numRequestQueues?: number;
  /** virtio-9p: a vhost-user device for QEMU's vhost-user-test-device-pci */
  ninepVhostSocket?: string | string[];
  ninepTag?: string;
  /** 9P over a unix socket at this path */
  ninepSocket?: string;
  /** 9P over TCP, "HOST:PORT" or "PORT" (loopback) */
  ninepTcp?: string;
  /** 9P over an inherited, already connected stream fd */
  ninepFd?: number;
  /**
   * Listening sockets systemd made (socket activation, src/systemd/activation.ts),
   * each assigned to a front-end. Served as they are and never unlinked: the
   * socket unit owns them.
   */
  activated?: readonly ActivatedSocket[];
  /** the largest msize offered to 9P clients */
  ninepMaxMsize?: number;
  /**
   * passthrough: who decides a 9P request's permissions (docs/operator-guide.md).
   * 'guest': the client's kernel, as QEMU's 9p (default for the virtio-9p device);
   * 'host': the host kernel, as the attached uid with its host groups, as diod
   * (default for the stream transports). Given, it applies to every 9P transport.
   */
  ninepPermissions?: NinepPermissions;
  /** most fids one 9P session may hold (memory; fids hold no fd of their own) */
  ninepMaxFids?: number;
  /** set RLIMIT_NOFILE (soft and hard) to this first, as virtiofsd's --rlimit-nofile; default: raise soft to hard */
  rlimitNofile?: number;
  /** most files and directories one session may hold open (default: half the pool, see fd-budget.ts) */
  sessionMaxOpen?: number;
  /** attach a FUSE session to the host at this directory (/dev/fuse) */
  fuseMount?: string;
  /** fuseMount was already mounted on this /dev/fuse fd (by the sandbox supervisor, which also unmounts it) */
  fuseFd?: number;
  /**
   * Called once when every listener, device and mount exists and before any
   * peer is served (9P clients and vhost-user frontends wait until it ends): the sandbox is entered here
   * (src/sandbox). From then on the server opens no path of the host: the
   * socket files are left to whoever made the sandbox (unless it returns
   * false: the root did not change, the names still mean the host's files),
   * and the host's users and groups are read from a copy made just before.
   */
  confine?: (made: { socketPaths: readonly string[] }) => boolean | undefined | Promise<boolean | undefined>;
  /** FUSE (virtio-fs and /dev/fuse) session options */
  fuse?: Partial<FuseOptions>;
  readonly?: boolean;
  /** where blocking I/O runs: auto (io_uring, else the thread pool), io_uring, threads or sync (all inline); default auto */
  ioEngine?: EngineChoice;
  /** the thread pool size asked for (--thread-pool-size); the pool itself is sized by bin/thread-pool.js before it starts */
  threadPoolSize?: number;
  /** an engine already made (tests, embedders), closed with the server; overrides ioEngine */
  engine?: IoEngine;
  /** tests and the bench: start every read, write and fsync this many ms late (a slow disk) */
  ioLatencyMs?: number;
  logLevel?: LevelWithSilent;
  log?: Logger;
  /** rate limit of the log lines each peer can cause, per kind (false: none); default DEFAULT_LOG_LIMITS */
  logLimits?: LogLimits | false;
}

export interface Duofs {
  readonly backend: LocalBackend;
  readonly log: Logger;
  readonly ninepTcpAddress: HostPort | undefined;
  /** live 9P connections */
  readonly connections: ReadonlySet<StreamConnection>;
  /** every front-end serving, for people: "virtio-fs unix:/run/x.sock", "9P tcp:127.0.0.1:564", ... (systemd's STATUS=) */
  readonly frontEnds: readonly string[];
  /** Stops listening, lets running requests finish, closes everything. */
  close(): Promise<void>;
}

export const DEFAULT_9P_MAX_MSIZE = 4 * 1024 * 1024;
/** Fids per 9P session: a walk-only fid costs memory only (see docs/operator-guide.md). */
export const DEFAULT_9P_MAX_FIDS = 65536;

/** Stream-client origins (remote addresses) whose connection lines are limited together; the oldest goes first. */
const MAX_ORIGINS = 1024;

export async function startDuofs(opts: ServeOptions): Promise<Duofs> {
  const log = opts.log ?? createLogger(opts.logLevel ?? 'info');
  const logLimits = opts.logLimits ?? DEFAULT_LOG_LIMITS;
  let st;
  try {
    st = statSync(opts.sharedDir);
  } catch {
    throw new StartupError(`export ${opts.sharedDir} does not exist`);
  }
  if (!st.isDirectory()) throw new StartupError(`export ${opts.sharedDir} is not a directory`);

  let exportLock;
  try {
    exportLock = acquireServeLock(opts.sharedDir);
  } catch (e) {
    if (e instanceof ExportInUseError) throw new StartupError(e.message);
    throw e;
  }
  let nofile: number;
  if (opts.rlimitNofile !== undefined) {
    try {
      nofile = setNofileLimit(opts.rlimitNofile);
    } catch (e) {
      exportLock.release();
      throw new StartupError(`--rlimit-nofile ${opts.rlimitNofile}: cannot set the open-file limit (${e instanceof SysError ? e.code : String(e)})`);
    }
  } else {
    nofile = raiseNofileLimit();
  }
  const fdLimits = defaultFdLimits(nofile, opts.sessionMaxOpen);
  let engine: IoEngine;
  try {
    engine = await openEngine(opts, log);
  } catch (e) {
    exportLock.release();
    throw e instanceof SysError ? new StartupError(e.message) : e;
  }
  const backend = new LocalBackend({
    engine,
    sharedDir: opts.sharedDir,
    readonly: opts.readonly ?? false,
    securityModel: opts.securityModel ?? 'passthrough',
    fmode: opts.fmode,
    dmode: opts.dmode,
    // Root can reopen inodes from file handles, so keep at most the inode
    // share of the fd limit in inode fds; an unprivileged daemon cannot, and
    // keeps them all (the sessions' pool shrinks as the table grows past it).
    inodeFdBudget: process.geteuid?.() === 0 ? fdLimits.inodeShare : 0,
    // Whatever happens, the inode table leaves the reserve alone.
    inodeFdCap: Math.max(1, fdLimits.limit - fdLimits.reserve),
    fdLimits,
    uidMap: opts.translateUid?.length ? new IdMap(opts.translateUid) : undefined,
    gidMap: opts.translateGid?.length ? new IdMap(opts.translateGid) : undefined,
    log,
  });
  log.info({ export: opts.sharedDir, securityModel: backend.model.name, readonly: backend.readonly }, 'export opened');
  // Tests only: every metadata result a turn later, to exercise the protocols' waits.
  const deferred = /^(1|(\d+)ms)$/.exec(process.env.DUOFS_TEST_DEFERRED_BACKEND ?? '');
  const api: Backend = deferred ? deferredBackend(backend, deferred[2] ? Number(deferred[2]) : undefined) : backend;
  const users = new HostUsers();
  const ctx: SessionContext = {
    backend: api,
    users,
    log,
    maxMsize: opts.ninepMaxMsize ?? DEFAULT_9P_MAX_MSIZE,
    exportPath: opts.sharedDir,
    maxFids: opts.ninepMaxFids ?? DEFAULT_9P_MAX_FIDS,
    logLimits,
  };
  const pool = backend.fds.pool;
  log.info(
    {
      nofile,
      reserve: fdLimits.reserve,
      inodeFds: fdLimits.inodeShare,
      pool,
      openPerSession: fdLimits.perSession,
      floorPerSession: fdLimits.floor,
      fidsPer9pSession: ctx.maxFids,
    },
    'file descriptor budget',
  );
  // Accepted sockets are fds too: they come out of the reserve, so bound them.
  const maxConnections = Math.max(8, Math.floor(fdLimits.reserve / 2));
  // Each 9P transport defaults to the server it replaces: the stream sockets
  // to diod (the host checks, as the attached uid with its host groups: any
  // process that can reach the socket speaks raw 9P), the virtio-9p device
  // to QEMU's 9p (the guest kernel checks: a guest moved from QEMU relies on
  // groups only it knows). See docs/operator-guide.md.
  const streamCtx: SessionContext = { ...ctx, permissions: opts.ninepPermissions ?? 'host' };
  const deviceCtx: SessionContext = { ...ctx, permissions: opts.ninepPermissions ?? 'guest' };
  const activated = opts.activated ?? [];
  const frontEnds: string[] = [];
  if (backend.model.callerCredentials) {
    const on = (c: SessionContext, any: boolean) => (any ? c.permissions : undefined);
    log.info(
      {
        streams: on(streamCtx, !!(opts.ninepSocket || opts.ninepTcp || opts.ninepFd !== undefined || activated.some((a) => a.frontEnd === '9p'))),
        virtio9p: on(deviceCtx, list(opts.ninepVhostSocket).length > 0 || activated.some((a) => a.frontEnd === '9p-vhost')),
      },
      '9p permissions: guest = the client kernel decides (QEMU), host = the host decides as the attached uid (diod)',
    );
  }
  const servers: Server[] = [];
  const socketPaths: string[] = [];
  const connections = new Set<StreamConnection>();
  let serial = 0;

  // Each connection has its own allowance for the lines its requests cause;
  // the lines about connections themselves (connected, disconnected, lost
  // framing) are limited per origin, so reconnecting buys no fresh allowance.
  const origins = new Map<string, PeerLog>();
  const originLog = (origin: string): PeerLog => {
    let l = origins.get(origin);
    if (l) {
      origins.delete(origin); // most recently used last
    } else {
      if (origins.size >= MAX_ORIGINS) {
        const [oldest, old] = origins.entries().next().value as [string, PeerLog];
        old.flush();
        origins.delete(oldest);
      }
      l = new PeerLog(log, origin, logLimits);
    }
    origins.set(origin, l);
    return l;
  };
  // A 9P client that connects while the other listeners are still being
  // made waits, unread, until the server is confined.
  let confined = opts.confine === undefined;
  const early: (() => void)[] = [];
  const accept =
    (label: string) =>
    (sock: Socket): void => {
      if (!confined) {
        sock.pause();
        early.push(() => {
          accept(label)(sock);
          sock.resume();
        });
        return;
      }
      const peer = sock.remoteAddress ? `tcp:${sock.remoteAddress}:${sock.remotePort}` : `${label}#${++serial}`;
      const origin = originLog(sock.remoteAddress ? `tcp:${sock.remoteAddress}` : label);
      const conn = new StreamConnection(sock, streamCtx, peer, origin);
      connections.add(conn);
      origin.info('9p.stream', { peer }, '9p client connected');
      sock.once('close', () => {
        connections.delete(conn);
        origin.info('9p.stream', { peer }, '9p client disconnected');
      });
    };

  const fuseOptions: FuseOptions = { ...defaultFuseOptions, ...opts.fuse };
  const fuseMounts: DevFuseMount[] = [];
  const vhostServers: VhostUserServer[] = [];
  let ninepTcpAddress: HostPort | undefined;
  try {
    if (opts.ninepSocket) {
      servers.push(await listenUnix(opts.ninepSocket, accept(`unix:${opts.ninepSocket}`), log));
      socketPaths.push(opts.ninepSocket);
      frontEnds.push(`9P unix:${opts.ninepSocket}`);
      log.info({ socket: opts.ninepSocket, export: opts.sharedDir }, 'serving 9P2000.L on a unix socket');
    }
    if (opts.ninepTcp) {
      const { server, address } = await listenTcp(parseHostPort(opts.ninepTcp), accept('tcp'), log);
      servers.push(server);
      ninepTcpAddress = address;
      frontEnds.push(`9P tcp:${address.host}:${address.port}`);
      log.info({ tcp: `${address.host}:${address.port}`, export: opts.sharedDir }, 'serving 9P2000.L over TCP');
    }
    if (opts.ninepFd !== undefined) {
      accept(`fd:${opts.ninepFd}`)(new Socket({ fd: opts.ninepFd, readable: true, writable: true }));
      frontEnds.push(`9P fd ${opts.ninepFd}`);
      log.info({ fd: opts.ninepFd, export: opts.sharedDir }, 'serving 9P2000.L on an inherited fd');
    }
    // Socket activation: one listener per inherited 9P socket, many clients each.
    for (const a of activated.filter((x) => x.frontEnd === '9p')) {
      servers.push(await listenInherited(a.fd, a.where, accept(a.where.replace(/ \(fd \d+\)$/, '')), log));
      frontEnds.push(`9P ${a.where}`);
      log.info({ socket: a.where, export: opts.sharedDir }, 'serving 9P2000.L on a socket-activated listener');
    }
    // One vhost-user device per socket: each serves one guest at a time, all on this backend.
    type Target = ({ socketPath: string } | { listenFd: number }) & { where: string };
    const vfsTargets: Target[] = [
      ...list(opts.virtiofsSocket).map((socketPath) => ({ socketPath, where: socketPath })),
      ...(opts.virtiofsFd !== undefined ? [{ listenFd: opts.virtiofsFd, where: `fd ${opts.virtiofsFd}` }] : []),
      ...activated.filter((a) => a.frontEnd === 'virtiofs').map((a) => ({ listenFd: a.fd, where: a.where })),
    ];
    for (const { where, ...target } of vfsTargets) {
      const tag = opts.tag ?? 'duofs';
      const device = new VirtioFsDevice(
        { backend: api, log, options: fuseOptions, logLimits },
        {
          tag,
          numRequestQueues: opts.numRequestQueues ?? 1,
        },
        `virtiofs:${where}`,
      );
      vhostServers.push(listenVhostUser({ device, logger: log, logLimits, ...target, deferAccept: opts.confine !== undefined }));
      if ('socketPath' in target) socketPaths.push(target.socketPath);
      frontEnds.push(`virtio-fs ${'socketPath' in target ? `unix:${where}` : where}`);
      log.info({ socket: where, tag, export: opts.sharedDir }, 'serving virtio-fs (vhost-user-fs)');
    }
    const ninepTargets: Target[] = [
      ...list(opts.ninepVhostSocket).map((socketPath) => ({ socketPath, where: socketPath })),
      ...activated.filter((a) => a.frontEnd === '9p-vhost').map((a) => ({ listenFd: a.fd, where: a.where })),
    ];
    for (const { where, ...target } of ninepTargets) {
      const tag = opts.ninepTag ?? 'duofs9p';
      const device = new Virtio9pDevice(deviceCtx, tag, `virtio-9p:${where}`);
      vhostServers.push(listenVhostUser({ device, logger: log, logLimits, ...target, deferAccept: opts.confine !== undefined }));
      if ('socketPath' in target) socketPaths.push(target.socketPath);
      frontEnds.push(`virtio-9p ${'socketPath' in target ? `unix:${where}` : where}`);
      log.info({ socket: where, tag, export: opts.sharedDir }, 'serving virtio-9p (vhost-user)');
    }
    if (opts.fuseMount && opts.fuseFd !== undefined) {
      // Mounted and checked by the supervisor; looking at it from here would
      // send a request to this very server, which is not serving yet.
      const session = new FuseSession({ backend: api, log, options: fuseOptions, logLimits }, `fuse:${opts.fuseMount}`);
      fuseMounts.push(DevFuseMount.adopt(opts.fuseFd, opts.fuseMount, session, log, fuseOptions.maxWrite));
      frontEnds.push(`FUSE ${opts.fuseMount}`);
    } else if (opts.fuseMount) {
      const mp = checkMountpoint(opts.fuseMount, opts.sharedDir);
      const session = new FuseSession({ backend: api, log, options: fuseOptions, logLimits }, `fuse:${mp}`);
      fuseMounts.push(DevFuseMount.attach(mp, session, log, fuseOptions.maxWrite));
      frontEnds.push(`FUSE ${mp}`);
    }
    for (const s of servers) {
      s.maxConnections = maxConnections;
      let dropped = 0;
      s.on('drop', () => {
        // One line for the first, then one per 1000: a flood must not flood the log.
        if (dropped++ % 1000 === 0)
          log.warn({ maxConnections, dropped }, '9P connection refused: too many connections (each needs an fd from the reserve)');
      });
    }
    if (opts.confine) {
      users.freeze();
      const rootChanged = await opts.confine({ socketPaths });
      if (rootChanged !== false) {
        socketPaths.length = 0; // no longer ours to unlink: in the sandbox these names mean files of the export
        for (const v of vhostServers) v.forgetSocketFile();
      }
      confined = true;
      for (const go of early.splice(0)) go();
      for (const v of vhostServers) v.start();
    }
  } catch (e) {
    for (const s of servers) s.close();
    for (const m of fuseMounts) m.close();
    for (const v of vhostServers) v.close();
    void engine.close();
    exportLock.release();
    throw e;
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      // server.close() only calls back once every connection is gone, so
      // stop accepting first, then wind the connections down, then wait.
      const stopped = Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      await Promise.all([...connections].map((c) => c.shutdown()));
      await stopped;
      for (const v of vhostServers) v.close();
      for (const m of fuseMounts) m.close();
      await engine.close(); // calls still running end first: their fds and buffers stay valid until then
      backend.close();
      for (const o of origins.values()) o.flush();
      for (const p of socketPaths) {
        try {
          unlinkSync(p);
        } catch {
          // already gone
        }
      }
      exportLock.release();
      log.info('duofs stopped');
    })();
    return closing;
  };

  return { backend, log, ninepTcpAddress, connections, frontEnds, close };
}

/** The engine --io-engine asks for, logged once with what it runs on. */
export async function openEngine(opts: Pick<ServeOptions, 'threadPoolSize' | 'engine' | 'ioEngine' | 'ioLatencyMs'>, log: Logger): Promise<IoEngine> {
  const pool = threadPoolSize();
  if (opts.threadPoolSize !== undefined && opts.threadPoolSize !== pool) {
    log.warn(
      { asked: opts.threadPoolSize, pool },
      `thread pool size ${opts.threadPoolSize} asked for, but the pool has ${pool} threads: it was sized before the option was read (start duofs through bin/, or set UV_THREADPOOL_SIZE)`,
    );
  }
  if (opts.engine) return opts.engine;
  let engine = await createEngine({ choice: opts.ioEngine ?? defaultEngineChoice(), threadPoolSize: pool, log });
  const latency = opts.ioLatencyMs ?? 0;
  if (latency > 0) {
    engine = new LatencyEngine(engine, latency);
    log.warn({ latencyMs: latency }, 'debug: every read, write and fsync starts late (a simulated slow disk)');
  }
  log.info({ ioEngine: engine.kind, threadPool: engine.kind === 'sync' ? undefined : pool }, `I/O engine: ${engine.kind}`);
  return engine;
}

/** The FUSE mountpoint must exist and lie outside the export (the server would serve itself). */
export function checkMountpoint(mountpoint: string, sharedDir: string): string {
  let mp: string;
  try {
    mp = realpathSync(mountpoint);
  } catch {
    throw new StartupError(`FUSE mountpoint ${mountpoint} does not exist`);
  }
  if (!statSync(mp).isDirectory()) throw new StartupError(`FUSE mountpoint ${mountpoint} is not a directory`);
  const rel = relative(realpathSync(sharedDir), mp);
  if (rel === '' || (!rel.startsWith('..') && !isAbsolute(rel))) {
    throw new StartupError(`FUSE mountpoint ${mountpoint} is inside the export ${sharedDir}; choose a directory outside it`);
  }
  return mp;
}

const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
