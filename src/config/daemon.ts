// `duofs serve --config FILE`: one process, many devices. Each device is a
// front-end of its own (a vhost-user socket for one guest, or a 9P listener
// for any number of clients) rooted at a directory of an export; the
// protocol stacks, listeners, backend and I/O engine are the ones
// startDuofs() (src/server.ts) wires for the single-export command line.
//
// Devices rooted at the same directory (same export, dir, readonly) share
// one backend, so they see each other's locks and inodes; each device has
// its own counting view of it (per-operation counts, requests in flight,
// open files) for `duofs status`.
//
// reload() replaces the running set by a new config's: a device whose
// settings (and its export's) are unchanged is not touched, its guests and
// clients keep their connections; a removed one stops listening, its
// sessions are ended (9P: the requests running finish, then the socket is
// closed; vhost-user: the frontend is disconnected) and its socket file is
// removed.
import { dirname, join } from 'node:path';
import { mkdirSync, readdirSync, readlinkSync, unlinkSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { LocalBackend } from '../backend/backend.js';
import type { Backend, FdAccount, FdBudget } from '../backend/api.js';
import { defaultFdLimits, type FdBudgetLimits } from '../backend/fd-budget.js';
import { acquireServeLock, type ExportLock } from '../convert/in-use.js';
import type { IoEngine } from '../io/engine.js';
import type { Logger } from '../log.js';
import { DEFAULT_LOG_LIMITS, PeerLog, type LogLimits } from '../log-limit.js';
import { listenTcp, listenUnix, parseHostPort, StartupError } from '../listeners.js';
import { HostUsers } from '../../security/host-users.js';
import { StreamConnection } from '../../protocols/9p/stream.js';
import type { SessionContext } from '../../protocols/9p/session.js';
import { VirtioFsDevice } from '../../protocols/fuse/virtio-fs-device.js';
import { defaultFuseOptions, type FuseOptions } from '../../protocols/fuse/options.js';
import { Virtio9pDevice } from '../../protocols/9p/virtio-9p-device.js';
import { listenVhostUser, type VhostUserServer } from '../../protocols/vhost-user/index.js';
import { AT_FDCWD, O_DIRECTORY, O_PATH, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS } from '../sys/constants.js';
import { close, fchmodPathFd, fchownFd, mkdirat, openat, openat2, procPath } from '../sys/fs.js';
import { SysError } from '../sys/index.js';
import { Errno } from '../sys/errno.js';
import { deviceIdentity, type DeviceConfig, type DuofsConfig } from './config.js';

export interface ConfigDaemonOptions {
  log: Logger;
  engine: IoEngine;
  /** RLIMIT_NOFILE in force; the open-file budget of each device root is cut from it */
  nofile: number;
  sessionMaxOpen?: number;
  ninepMaxMsize: number;
  ninepMaxFids: number;
  fuse?: Partial<FuseOptions>;
  logLimits?: LogLimits | false;
}

/** Per-operation counts and requests in flight of one device. */
export interface OpStats {
  ops: Record<string, number>;
  inFlight: number;
}

export interface ClientStatus {
  peer: string;
  /** 9P: requests the session is running */
  pending?: number;
}

export interface DeviceStatus {
  name: string;
  type: DeviceConfig['type'];
  /** unix:/path or tcp:host:port */
  address: string;
  export: string;
  dir: string;
  /** the host directory it serves */
  root: string;
  readonly: boolean;
  tag?: string;
  /** vhost-user devices: virtqueues (virtio-fs: hiprio + request queues) */
  queues?: number;
  clients: ClientStatus[];
  requestsInFlight: number;
  /** files and directories the device's sessions hold open */
  openFiles: number;
  ops: Record<string, number>;
}

export interface DaemonStatus {
  pid: number;
  config: string;
  uptimeSeconds: number;
  rssBytes: number;
  /** every fd of the process (/proc/self/fd) */
  openFds: number;
  devices: DeviceStatus[];
  lastReload?: ReloadResult & { at: string };
}

export interface ReloadResult {
  added: string[];
  removed: string[];
  kept: string[];
  /** devices of the new file that could not be set up: name -> why */
  failed: Record<string, string>;
}

/** How long a removed device's running requests may take before its root is closed under them. */
const REMOVE_GRACE_MS = 5000;

/** Backend methods that are bookkeeping, not operations a guest asked for. */
const NOT_COUNTED = new Set(['constructor', 'beginRequest', 'inodeById', 'ref', 'release', 'isSubmountRoot', 'locate']);

/**
 * A view of `inner` for one device: every call counted by name, promises
 * counted while they run, and the fd accounts its sessions open recorded.
 * Plain bound functions, not a Proxy: this sits on every request's path.
 */
function countingBackend(inner: LocalBackend, stats: OpStats, accounts: Set<FdAccount>): Backend {
  const view: Record<string, unknown> = {};
  const names = new Set<string>();
  for (let p: object | null = inner; p && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null)
    for (const n of Object.getOwnPropertyNames(p)) names.add(n);
  const settle = (): void => {
    stats.inFlight--;
  };
  for (const name of names) {
    if (name === 'constructor' || name === 'fds') continue;
    const v = (inner as unknown as Record<string, unknown>)[name];
    if (typeof v !== 'function') {
      Object.defineProperty(view, name, { get: () => (inner as unknown as Record<string, unknown>)[name], enumerable: true });
      continue;
    }
    const f = v as (...a: unknown[]) => unknown;
    if (NOT_COUNTED.has(name)) {
      view[name] = f.bind(inner);
      continue;
    }
    stats.ops[name] ??= 0;
    view[name] = (...a: unknown[]): unknown => {
      stats.ops[name]!++;
      const r = f.apply(inner, a);
      if (r instanceof Promise) {
        stats.inFlight++;
        r.then(settle, settle);
      }
      return r;
    };
  }
  // The sessions' fd accounts, so that status can add up what this device holds.
  const budget = inner.fds;
  const fds = Object.create(budget) as FdBudget;
  fds.account = (label: string): FdAccount => {
    const a = budget.account(label);
    accounts.add(a);
    return a;
  };
  Object.defineProperty(view, 'fds', { get: () => fds });
  return view as unknown as Backend;
}

interface Root {
  key: string;
  path: string;
  backend: LocalBackend;
  lock: ExportLock;
  refs: number;
}

interface Running {
  cfg: DeviceConfig;
  identity: string;
  root: Root;
  address: string;
  stats: OpStats;
  accounts: Set<FdAccount>;
  clients(): ClientStatus[];
  queues?: number;
  stop(): Promise<void>;
}

/** The host path of what an fd is open on, as the kernel resolved it. */
function realPathOf(fd: number): string {
  return readlinkSync(procPath(fd));
}

export class ConfigDaemon {
  private readonly devices = new Map<string, Running>();
  private readonly roots = new Map<string, Root>();
  private readonly users = new HostUsers();
  private readonly fdLimits: FdBudgetLimits;
  private readonly fuseOptions: FuseOptions;
  private readonly logLimits: LogLimits | false;
  private readonly started = Date.now();
  private lastReload?: ReloadResult & { at: string };
  private busy: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    private cfg: DuofsConfig,
    private readonly o: ConfigDaemonOptions,
  ) {
    this.fdLimits = defaultFdLimits(o.nofile, o.sessionMaxOpen);
    this.fuseOptions = { ...defaultFuseOptions, ...o.fuse };
    this.logLimits = o.logLimits ?? DEFAULT_LOG_LIMITS;
  }

  /** Sets up every device of `cfg`; any that cannot be is a StartupError (nothing is left running). */
  static async start(cfg: DuofsConfig, o: ConfigDaemonOptions): Promise<ConfigDaemon> {
    const d = new ConfigDaemon(cfg, o);
    try {
      for (const dev of cfg.devices.values()) await d.add(dev);
    } catch (e) {
      await d.close();
      throw e;
    }
    return d;
  }

  get config(): DuofsConfig {
    return this.cfg;
  }

  /** every device serving, for people and systemd's STATUS= */
  get frontEnds(): string[] {
    return [...this.devices.values()].map((d) => `${d.cfg.name} ${d.cfg.type} ${d.address}`);
  }

  /**
   * Moves to `next`: removes the devices it no longer has (or has changed),
   * then sets up the new ones; devices unchanged are not touched. A device
   * that cannot be set up is logged and left out; the others go ahead.
   * Reloads run one at a time.
   */
  reload(next: DuofsConfig): Promise<ReloadResult> {
    const run = async (): Promise<ReloadResult> => {
      if (this.closed) throw new Error('duofs is stopping');
      const { log } = this.o;
      if (next.controlSocket !== this.cfg.controlSocket)
        log.warn(
          { controlSocket: this.cfg.controlSocket, asked: next.controlSocket },
          'reload: control-socket changed; it takes effect on restart, the old one stays',
        );
      const result: ReloadResult = { added: [], removed: [], kept: [], failed: {} };
      for (const [name, running] of [...this.devices]) {
        const want = next.devices.get(name);
        if (want && deviceIdentity(next, want) === running.identity) {
          result.kept.push(name);
          continue;
        }
        await this.remove(name);
        result.removed.push(name);
      }
      this.cfg = next;
      for (const dev of next.devices.values()) {
        if (this.devices.has(dev.name)) continue;
        try {
          await this.add(dev);
          result.added.push(dev.name);
        } catch (e) {
          const why = e instanceof Error ? e.message : String(e);
          result.failed[dev.name] = why;
          log.error({ device: dev.name, err: why }, `reload: device ${dev.name} not set up: ${why}`);
        }
      }
      this.lastReload = { ...result, at: new Date().toISOString() };
      log.info(result, `reload: ${result.added.length} added, ${result.removed.length} removed, ${result.kept.length} kept`);
      return result;
    };
    const p = this.busy.then(run, run);
    this.busy = p.catch(() => undefined);
    return p;
  }

  status(): DaemonStatus {
    const devices: DeviceStatus[] = [...this.devices.values()].map((d) => {
      let openFiles = 0;
      for (const a of d.accounts) openFiles += a.held;
      return {
        name: d.cfg.name,
        type: d.cfg.type,
        address: d.address,
        export: d.cfg.export,
        dir: d.cfg.dir,
        root: d.root.path,
        readonly: d.root.backend.readonly,
        tag: d.cfg.tag,
        queues: d.queues,
        clients: d.clients(),
        requestsInFlight: d.stats.inFlight,
        openFiles,
        ops: Object.fromEntries(Object.entries(d.stats.ops).filter(([, n]) => n > 0)),
      };
    });
    let openFds = 0;
    try {
      openFds = readdirSync('/proc/self/fd').length - 1; // less the one readdir itself holds
    } catch {
      // no /proc
    }
    return {
      pid: process.pid,
      config: this.cfg.file,
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      rssBytes: process.memoryUsage.rss(),
      openFds,
      devices,
      lastReload: this.lastReload,
    };
  }

  /** Stops every device, closes the backends (not the engine: the caller's). */
  async close(): Promise<void> {
    this.closed = true;
    await this.busy;
    for (const name of [...this.devices.keys()]) await this.remove(name);
  }

  /**
   * The device's root: its dir opened beneath the export root (no symlink,
   * `..` or magic link may lead out), made first if missing and asked for.
   * Returns the resolved host path.
   */
  private resolveRoot(dev: DeviceConfig): { path: string; fd: number } {
    const exp = this.cfg.exports.get(dev.export)!;
    const what = `devices.${dev.name}`;
    let expFd: number;
    try {
      expFd = openat(AT_FDCWD, exp.path, O_PATH | O_DIRECTORY);
    } catch (e) {
      throw new StartupError(`${what}: export ${dev.export} (${exp.path}): ${e instanceof SysError ? e.code : String(e)}`);
    }
    try {
      if (dev.dir === '.') return { path: realPathOf(expFd), fd: openat(expFd, '.', O_PATH | O_DIRECTORY) };
      const beneath = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
      let fd: number;
      try {
        fd = openat2(expFd, dev.dir, O_PATH | O_DIRECTORY, 0, beneath);
      } catch (e) {
        if (!(e instanceof SysError)) throw e;
        if (e.errno === Errno.EXDEV)
          throw new StartupError(`${what}.dir: ${dev.dir} leads out of export ${dev.export} (${exp.path}) through a symlink; refused`);
        if (e.errno !== Errno.ENOENT || !dev.create)
          throw new StartupError(
            `${what}.dir: ${join(exp.path, dev.dir)}: ${e.code}${e.errno === Errno.ENOENT ? ' (give create = { uid, gid, mode } to have it made)' : ''}`,
          );
        fd = this.create(dev, expFd, exp.path);
      }
      try {
        return { path: realPathOf(fd), fd }; // the backend takes the fd over: no second lookup by path
      } catch (e) {
        close(fd);
        throw e;
      }
    } finally {
      close(expFd);
    }
  }

  /** mkdir of dev.dir's last component (its parent must exist, beneath the export), then owner and mode. */
  private create(dev: DeviceConfig, expFd: number, expPath: string): number {
    const what = `devices.${dev.name}.dir`;
    const c = dev.create!;
    const parent = dirname(dev.dir);
    const name = Buffer.from(dev.dir.slice(parent === '.' ? 0 : parent.length + 1));
    const beneath = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    let pfd: number;
    try {
      pfd = parent === '.' ? openat(expFd, '.', O_PATH | O_DIRECTORY) : openat2(expFd, parent, O_PATH | O_DIRECTORY, 0, beneath);
    } catch (e) {
      if (e instanceof SysError && e.errno === Errno.EXDEV)
        throw new StartupError(`${what}: ${parent} leads out of the export through a symlink; refused`);
      throw new StartupError(`${what}: cannot create ${join(expPath, dev.dir)}: its parent: ${e instanceof SysError ? e.code : String(e)}`);
    }
    try {
      // O_PATH fds cannot be mkdirat's dirfd on every kernel: go through /proc.
      const dfd = openat(AT_FDCWD, procPath(pfd), O_DIRECTORY | 0 /* O_RDONLY */);
      try {
        let made = false;
        try {
          mkdirat(dfd, name, 0o700);
          made = true;
        } catch (e) {
          if (!(e instanceof SysError && e.errno === Errno.EEXIST)) throw e;
        }
        const fd = openat2(dfd, name, O_PATH | O_DIRECTORY, 0, beneath);
        try {
          // Only what this call made gets the owner and mode; a directory
          // that raced into existence keeps its own. Made 0700 first: nobody
          // else can use it before it has its owner.
          if (made) {
            fchownFd(fd, c.uid, c.gid, what);
            fchmodPathFd(fd, c.mode, what);
          }
          this.o.log.info(
            { device: dev.name, dir: join(expPath, dev.dir), uid: c.uid, gid: c.gid, mode: `0${c.mode.toString(8)}` },
            'created the device root',
          );
          return fd;
        } catch (e) {
          close(fd);
          throw e;
        }
      } finally {
        close(dfd);
      }
    } catch (e) {
      if (e instanceof StartupError) throw e;
      throw new StartupError(`${what}: cannot create ${join(expPath, dev.dir)}: ${e instanceof SysError ? e.message : String(e)}`);
    } finally {
      close(pfd);
    }
  }

  private rootFor(dev: DeviceConfig): Root {
    const exp = this.cfg.exports.get(dev.export)!;
    const { path, fd } = this.resolveRoot(dev);
    const readonly = exp.readonly || dev.readonly;
    const key = JSON.stringify([path, readonly, exp.securityModel, exp.fmode, exp.dmode]);
    const had = this.roots.get(key);
    if (had) {
      close(fd);
      had.refs++;
      return had;
    }
    let lock: ExportLock;
    try {
      lock = acquireServeLock(path);
    } catch (e) {
      close(fd);
      throw new StartupError(`devices.${dev.name}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const { fdLimits, o } = this;
    let backend: LocalBackend;
    try {
      backend = new LocalBackend({
        engine: o.engine,
        sharedDir: path,
        rootFd: fd,
        readonly,
        securityModel: exp.securityModel,
        fmode: exp.fmode,
        dmode: exp.dmode,
        inodeFdBudget: process.geteuid?.() === 0 ? fdLimits.inodeShare : 0,
        inodeFdCap: Math.max(1, fdLimits.limit - fdLimits.reserve),
        fdLimits,
        log: o.log,
      });
    } catch (e) {
      lock.release();
      throw e;
    }
    const root: Root = { key, path, backend, lock, refs: 1 };
    this.roots.set(key, root);
    o.log.info({ root: path, export: dev.export, securityModel: exp.securityModel, readonly }, 'device root opened');
    return root;
  }

  private dropRoot(root: Root): void {
    if (--root.refs > 0) return;
    this.roots.delete(root.key);
    root.backend.close();
    root.lock.release();
  }

  private async add(dev: DeviceConfig): Promise<void> {
    const { log } = this.o;
    const root = this.rootFor(dev);
    const stats: OpStats = { ops: {}, inFlight: 0 };
    const accounts = new Set<FdAccount>();
    const api = countingBackend(root.backend, stats, accounts);
    const base = { cfg: dev, identity: deviceIdentity(this.cfg, dev), root, stats, accounts };
    const peer = `${dev.name}:${dev.socket ?? dev.listen}`;
    let running: Running;
    try {
      if (dev.type === '9p-unix' || dev.type === '9p-tcp') {
        running = await this.streamDevice(dev, api, root.path, base);
      } else {
        const device =
          dev.type === 'virtiofs'
            ? new VirtioFsDevice(
                { backend: api, log, options: this.fuseOptions, logLimits: this.logLimits },
                { tag: dev.tag!, numRequestQueues: dev.queues ?? 1 },
                `virtiofs:${peer}`,
              )
            : new Virtio9pDevice(this.ninepContext(api, root.path, dev.permissions ?? 'guest'), dev.tag!, `virtio-9p:${peer}`);
        const v: VhostUserServer = listenVhostUser({ device, logger: log, logLimits: this.logLimits, socketPath: dev.socket! });
        running = {
          ...base,
          address: `unix:${dev.socket}`,
          queues: device.numQueues,
          clients: () => (v.connection ? [{ peer: v.connection.peer }] : []),
          stop: async () => v.close(),
        };
      }
    } catch (e) {
      this.dropRoot(root);
      throw e;
    }
    this.devices.set(dev.name, running);
    log.info({ device: dev.name, type: dev.type, address: running.address, root: root.path, tag: dev.tag }, `device ${dev.name} serving`);
  }

  private ninepContext(api: Backend, path: string, permissions: 'guest' | 'host'): SessionContext {
    return {
      backend: api,
      users: this.users,
      log: this.o.log,
      maxMsize: this.o.ninepMaxMsize,
      exportPath: path,
      maxFids: this.o.ninepMaxFids,
      logLimits: this.logLimits,
      permissions,
    };
  }

  private async streamDevice(dev: DeviceConfig, api: Backend, path: string, base: Omit<Running, 'address' | 'clients' | 'stop'>): Promise<Running> {
    const { log } = this.o;
    const ctx = this.ninepContext(api, path, dev.permissions ?? 'host');
    const connections = new Set<StreamConnection>();
    const origin = new PeerLog(log, `${dev.name}`, this.logLimits);
    let serial = 0;
    const accept = (sock: Socket): void => {
      const peer = sock.remoteAddress ? `tcp:${sock.remoteAddress}:${sock.remotePort}` : `${dev.name}#${++serial}`;
      const conn = new StreamConnection(sock, ctx, peer, origin);
      connections.add(conn);
      origin.info('9p.stream', { device: dev.name, peer }, '9p client connected');
      sock.once('close', () => {
        connections.delete(conn);
        origin.info('9p.stream', { device: dev.name, peer }, '9p client disconnected');
      });
    };
    let server: Server;
    let address: string;
    if (dev.type === '9p-unix') {
      server = await listenUnix(dev.socket!, accept, log);
      address = `unix:${dev.socket}`;
    } else {
      const r = await listenTcp(parseHostPort(dev.listen!), accept, log);
      server = r.server;
      address = `tcp:${r.address.host}:${r.address.port}`;
    }
    // Accepted sockets are fds from the reserve: bound them per listener.
    server.maxConnections = Math.max(8, Math.floor(this.fdLimits.reserve / 2));
    return {
      ...base,
      address,
      clients: () => [...connections].map((c) => ({ peer: c.peer, pending: c.session.pending })),
      stop: async () => {
        const stopped = new Promise<void>((r) => server.close(() => r()));
        await Promise.all([...connections].map((c) => c.shutdown()));
        await stopped;
        origin.flush();
        if (dev.socket) {
          try {
            unlinkSync(dev.socket);
          } catch {
            // already gone
          }
        }
      },
    };
  }

  private async remove(name: string): Promise<void> {
    const d = this.devices.get(name);
    if (!d) return;
    this.devices.delete(name);
    await d.stop();
    // A vhost-user session's requests may still be running on the engine:
    // the root's fds stay until they have ended (or a grace period passed),
    // and close() of the backend makes any later use fail with ESTALE.
    for (const until = Date.now() + REMOVE_GRACE_MS; d.stats.inFlight > 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
    this.dropRoot(d.root);
    this.o.log.info({ device: name, address: d.address }, `device ${name} removed`);
  }
}

/** The control socket's directory (/run/duofs), made if it is missing. */
export function ensureControlDir(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
}
