// One 9P2000.L session: the state of one client connection (negotiated
// msize, fid table) and the request handlers, on the shared backend.
// Transport-neutral: a transport hands in complete frames and gets reply
// frames through `send`. A request whose backend call waits on storage (the
// data path, fsync, and any call the backend had to run on its engine) is
// answered when that call ends and never holds up the others; after such a
// wait a handler checks that its fids are still what they were.
import {
  after,
  printable,
  type Awaitable,
  type Backend,
  type Caller,
  type DirStream,
  type Entry,
  type FdAccount,
  type Inode,
  type OpenFile,
  type SetAttr,
} from '../../src/backend/api.js';
import {
  DT_DIR,
  DT_LNK,
  Errno,
  F_RDLCK,
  F_UNLCK,
  F_WRLCK,
  O_SYNC,
  SysError,
  XATTR_CREATE,
  XATTR_REPLACE,
  XATTR_SIZE_MAX,
  errnoName,
  O_ACCMODE,
  O_DIRECTORY,
  O_RDONLY,
  fail,
  makedev,
  type Credentials,
  type Stat,
  type TimeArg,
} from '../../src/sys/index.js';
import type { Logger } from '../../src/log.js';
import { PeerLog, type LogLimits } from '../../src/log-limit.js';
import {
  AT_REMOVEDIR,
  ATTR,
  DOTL_SYNC,
  GETATTR,
  HEADER_SIZE,
  IOHDRSZ,
  LOCK_STATUS,
  LOCK_TYPE,
  MAX_WALK_NAMES,
  MIN_MSIZE,
  NOFID,
  NONUNAME,
  QTDIR,
  QTFILE,
  QTSYMLINK,
  T,
  VERSION_9P2000_L,
} from './constants.js';
import { Fid } from './fid.js';
import { qidOf } from './qid.js';
import { ProtocolError, QID_SIZE, Reader, Writer, encodeRlerror, type Qid } from './wire.js';

/**
 * Who a Tattach names, as the host knows them: uid, primary gid and
 * supplementary groups. The app hands one in (security/host-users.ts reads
 * /etc/passwd and /etc/group); the session only asks.
 */
export interface UserLookup {
  /** a numeric uid (n_uname); a uid the host does not know may still get credentials */
  byUid(uid: number): Credentials | undefined;
  /** a user name (uname, when n_uname is NONUNAME) */
  byName(name: string): Credentials | undefined;
}

export interface SessionContext {
  backend: Backend;
  users: UserLookup;
  log: Logger;
  /** the largest msize this server agrees to */
  maxMsize: number;
  /** attach names accepted besides the empty one (the export path) */
  exportPath: string;
  /**
   * Most fids one session may hold. A fid costs memory, not an fd of its own
   * (walk-only fids share the inode table's fds; open ones are charged to the
   * session's fd budget, backend.fds), so this bounds memory only.
   */
  maxFids: number;
  /** per-peer rate limit of the log lines a client can cause (false: none); default DEFAULT_LOG_LIMITS */
  logLimits?: LogLimits | false;
  /** who decides permissions in passthrough (default 'host'); see NinepPermissions */
  permissions?: NinepPermissions;
}

/**
 * 'guest': the client's kernel has checked permissions (QEMU's 9p): requests
 * run with the server's own privileges, new objects get the ids the request
 * names. 'host': requests run as the attached uid with the host's groups of
 * that uid, and the host kernel checks (diod's).
 */
export type NinepPermissions = 'guest' | 'host';

/** Bytes of xattr values (Txattrwalk results, pending Txattrcreate values) one session's fids may hold. */
const MAX_PENDING_XATTR_BYTES = 8 * 1024 * 1024;

/** A handler's result when the transport has already sent the reply itself. */
const SENT = Symbol('reply already sent');

type Result = Buffer | typeof SENT;
const noTrace = (_errno: number): void => {};
type Handler = (r: Reader, tag: number) => Awaitable<Result>;

/**
 * An Rread the transport builds in place: `fill` reads up to `max` bytes into
 * the transport's segments from `skip` on (guest memory on virtio-9p), and
 * the transport sends the Rread once it resolves. On failure it rejects,
 * before sending anything, and the session answers Rlerror.
 */
export type DirectRead = (
  tag: number,
  count: number,
  fill: (dst: readonly Buffer[], skip: number, max: number) => Awaitable<number>,
) => Awaitable<void>;

/** Linux errno from whatever a handler threw; unknown errors become EIO. */
function errnoOf(e: unknown): number {
  return e instanceof SysError ? e.errno : Errno.EIO;
}

export class Session {
  /** 0 until Tversion succeeds */
  msize = 0;
  private readonly fids = new Map<number, Fid>();
  /** requests still running (tag -> completion), for Tflush ordering */
  private readonly inflight = new Map<number, Promise<void>>();
  private readonly handlers: Map<number, Handler>;
  private closed = false;
  /** the log lines this client causes, rate-limited per kind */
  readonly logs: PeerLog;
  /** this session's share of the open-fd pool */
  private readonly fds: FdAccount;
  /** bytes of xattr values its fids hold (kept as a sum: fids are many) */
  private xattrBytes = 0;
  /** refusing new fids (for one log line per episode) */
  private atFidLimit = false;

  constructor(
    private readonly ctx: SessionContext,
    /** who is on the other end, for log lines */
    readonly peer: string,
    private readonly send: (frame: Buffer) => void,
    private readonly directRead?: DirectRead,
    /** shared with the transport (a virtio-9p device keeps one across resets); default: the session's own */
    logs?: PeerLog,
  ) {
    this.logs = logs ?? new PeerLog(ctx.log, peer, ctx.logLimits);
    this.fds = ctx.backend.fds.account(peer);
    this.handlers = new Map<number, Handler>([
      [T.auth, this.auth],
      [T.attach, this.attach],
      [T.walk, this.walk],
      [T.lopen, this.lopen],
      [T.lcreate, this.lcreate],
      [T.getattr, this.getattr],
      [T.setattr, this.setattr],
      [T.readdir, this.readdir],
      [T.read, this.read],
      [T.write, this.write],
      [T.clunk, this.clunk],
      [T.remove, this.remove],
      [T.statfs, this.statfs],
      [T.fsync, this.fsync],
      [T.lock, this.lock],
      [T.getlock, this.getlock],
      [T.xattrwalk, this.xattrwalk],
      [T.xattrcreate, this.xattrcreate],
      [T.readlink, this.readlink],
      [T.symlink, this.symlink],
      [T.mknod, this.mknod],
      [T.mkdir, this.mkdir],
      [T.link, this.link],
      [T.rename, this.rename],
      [T.renameat, this.renameat],
      [T.unlinkat, this.unlinkat],
      [T.flush, this.flush],
    ]);
  }

  /** The largest frame the transport should accept right now. */
  get maxFrame(): number {
    return this.msize || this.ctx.maxMsize;
  }

  get fidCount(): number {
    return this.fids.size;
  }

  get pending(): number {
    return this.inflight.size;
  }

  /** Handles one complete frame (size field already checked by the transport). */
  /**
   * Handles one frame. `payload`: a Twrite's data left in guest memory by
   * the virtio transport (the frame then ends at the count field).
   */
  handle(frame: Buffer, payload?: readonly Buffer[]): void {
    this.ctx.backend.beginRequest();
    const type = frame[4]!;
    const tag = frame.readUInt16LE(5);
    // No clock read and no closure per request unless requests are traced.
    const started = this.ctx.log.isLevelEnabled('trace') ? process.hrtime.bigint() : undefined;
    const trace =
      started === undefined
        ? noTrace
        : (errno: number): void => {
            this.ctx.log.trace({ peer: this.peer, op: type, tag, errno, us: Number(process.hrtime.bigint() - started) / 1000 }, '9p request');
          };
    let result: Result | Promise<Result>;
    try {
      if (type === T.version) {
        result = this.version(new Reader(frame), tag);
      } else if (this.msize === 0) {
        throw new SysError(Errno.EPROTO, 'request before Tversion', `type ${type}`);
      } else {
        const h = this.handlers.get(type);
        if (!h) throw new SysError(Errno.EOPNOTSUPP, 'unknown message type', String(type));
        result = h.call(this, new Reader(frame, undefined, undefined, payload), tag);
      }
    } catch (e) {
      this.fail(type, tag, e);
      trace(errnoOf(e));
      return;
    }
    if (result === SENT) {
      trace(0);
    } else if (result instanceof Promise) {
      const done = result
        .then(
          (reply) => {
            if (reply !== SENT) this.reply(reply);
            trace(0);
          },
          (e) => {
            this.fail(type, tag, e);
            trace(errnoOf(e));
          },
        )
        .finally(() => {
          if (this.inflight.get(tag) === done) this.inflight.delete(tag);
        });
      this.inflight.set(tag, done);
    } else {
      this.reply(result);
      trace(0);
    }
  }

  private reply(frame: Buffer): void {
    if (!this.closed) this.send(frame);
  }

  private fail(type: number, tag: number, e: unknown): void {
    const errno = errnoOf(e);
    if (!(e instanceof SysError)) {
      this.logs.error('9p.unexpected', { peer: this.peer, type, tag, err: e }, '9p request failed unexpectedly');
    } else if (e instanceof ProtocolError || errno === Errno.EPROTO || errno === Errno.EBADF || errno === Errno.EOPNOTSUPP) {
      if (this.logs.wants('warn'))
        this.logs.warn('9p.bad-request', { peer: this.peer, type, tag, errno: errnoName(errno) }, `bad 9p request: ${e.message}`);
    } else if (this.logs.wants('debug')) {
      this.logs.debug('9p.failed', { peer: this.peer, type, tag, errno: errnoName(errno) }, e.message);
    }
    this.reply(encodeRlerror(tag, errno));
  }

  /** Ends the session: every fid is clunked, open files closed, suppressed log counts reported. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clunkAll();
    this.logs.flush();
    this.fds.close();
  }

  /** The settling of request `tag` if it is still running (its reply sent or dropped by then). */
  running(tag: number): Promise<void> | undefined {
    return this.inflight.get(tag);
  }

  /** Waits for requests still running (used on shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inflight.values()]);
  }

  private clunkAll(): void {
    for (const fid of this.fids.values()) this.dropFid(fid);
    this.fids.clear();
  }

  // ---- fid helpers ---------------------------------------------------------

  private fid(n: number): Fid {
    const f = this.fids.get(n);
    if (!f) fail(Errno.EBADF, 'fid', `${n} is not in use`);
    return f;
  }

  private checkNewFid(n: number): void {
    if (n === NOFID) fail(Errno.EBADF, 'fid', 'NOFID cannot be bound');
    if (this.fids.has(n)) fail(Errno.EBADF, 'fid', `${n} is already in use`);
    if (this.fids.size >= this.ctx.maxFids) {
      // One line per episode: it ends when the client has clunked a quarter of them.
      if (!this.atFidLimit)
        this.ctx.log.warn(
          { peer: this.peer, fids: this.fids.size },
          `${this.peer} holds ${this.fids.size} fids, its limit (--9p-max-fids): new fids get EMFILE`,
        );
      this.atFidLimit = true;
      fail(Errno.EMFILE, 'fid', `${n}: ${this.peer} holds ${this.fids.size} fids (the per-session limit)`);
    }
    if (this.atFidLimit && this.fids.size <= this.ctx.maxFids * 0.75) this.atFidLimit = false;
  }

  /** A fid that names a directory and has not been opened (create/mkdir parent). */
  private dirFid(n: number): Fid {
    const f = this.fid(n);
    if (f.isOpen && !f.dir) fail(Errno.EBADF, 'fid', `${n} is open`);
    if (!f.inode.isDir) fail(Errno.ENOTDIR, 'fid', `${n} (${f.inode.label}) is not a directory`);
    return f;
  }

  private dropFid(f: Fid): void {
    const { backend } = this.ctx;
    if (f.file) backend.closeFile(f.file);
    if (f.dir) backend.closeDir(f.dir);
    f.file = undefined;
    f.dir = undefined;
    this.xattrBytes -= (f.xattrRead?.length ?? 0) + (f.xattrWrite?.value.length ?? 0);
    f.xattrRead = undefined;
    f.xattrWrite = undefined;
    if (f.parent) backend.release(f.parent);
    f.parent = undefined;
    backend.release(f.inode);
  }

  private qid(inode: Inode, st: Stat): Qid {
    return qidOf(inode, st);
  }

  /** Whether fid `n` is still `f` (a wait may have let a Tclunk or a new session through). */
  private still(n: number, f: Fid): boolean {
    return !this.closed && this.fids.get(n) === f;
  }

  /** Credentials for a create: the fid's user, with the gid the client chose. */
  private static createCr(f: Fid, gid: number): Caller {
    return gid === f.cr.gid || gid === NOFID ? f.cr : { ...f.cr, gid };
  }

  // ---- session -------------------------------------------------------------

  private version(r: Reader, tag: number): Buffer {
    const msize = r.u32();
    const version = r.str().toString('latin1');
    if (msize < MIN_MSIZE) fail(Errno.EINVAL, 'Tversion', `msize ${msize} is below ${MIN_MSIZE}`);
    // A new version exchange aborts everything the session had.
    this.clunkAll();
    if (version !== VERSION_9P2000_L) {
      this.msize = 0;
      this.logs.info('9p.version', { peer: this.peer, version }, 'client asked for an unsupported 9P version');
      return new Writer(32)
        .u32(Math.min(msize, this.ctx.maxMsize))
        .str('unknown')
        .finish(T.version + 1, tag);
    }
    this.msize = Math.min(msize, this.ctx.maxMsize);
    if (this.logs.wants('debug')) this.logs.debug('9p.version', { peer: this.peer, msize: this.msize }, '9p session started');
    return new Writer(32)
      .u32(this.msize)
      .str(VERSION_9P2000_L)
      .finish(T.version + 1, tag);
  }

  /** No authentication: Rlerror(ENOENT) is how diod says so, and its tools expect it. */
  private auth(r: Reader): Buffer {
    r.u32();
    fail(Errno.ENOENT, 'Tauth', 'no authentication is needed');
  }

  private attach(r: Reader, tag: number): Awaitable<Buffer> {
    const fidNo = r.u32();
    const afid = r.u32();
    const uname = r.str().toString('utf8');
    const aname = r.str().toString('utf8');
    const nUname = r.u32();
    this.checkNewFid(fidNo);
    if (afid !== NOFID) fail(Errno.EBADF, 'Tattach', `afid ${afid}: no authentication fids exist`);
    const path = aname.replace(/\/+$/, '');
    if (path !== '' && path !== this.ctx.exportPath.replace(/\/+$/, '')) {
      fail(Errno.ENOENT, 'Tattach', `aname ${JSON.stringify(aname)} is not this export`);
    }
    // Guest ids: the backend applies --translate-uid/--translate-gid to host calls.
    const user = nUname !== NONUNAME ? this.ctx.users.byUid(nUname) : this.ctx.users.byName(uname);
    if (!user) fail(Errno.EACCES, 'Tattach', `unknown user ${JSON.stringify(uname)}`);
    // 9P names no process. With --9p-permissions guest the client's kernel
    // checks permissions: the host calls run as the server (QEMU's 9p).
    const cr: Caller = { ...user, pid: 0, clientChecked: this.ctx.permissions === 'guest' };
    const { backend } = this.ctx;
    return after(backend.getattr(backend.root), (st) => {
      if (this.closed) return encodeRlerror(tag, Errno.EBADF);
      this.checkNewFid(fidNo);
      const root = backend.ref(backend.root);
      this.fids.set(fidNo, new Fid(root, cr, undefined, undefined));
      if (this.logs.wants('debug')) this.logs.debug('9p.attach', { peer: this.peer, uid: cr.uid, fid: fidNo }, '9p attach');
      return new Writer(32).qid(this.qid(root, st)).finish(T.attach + 1, tag);
    });
  }

  private flush(r: Reader, tag: number): Buffer | Promise<Buffer> {
    const oldtag = r.u16();
    const reply = new Writer(8).finish(T.flush + 1, tag);
    const running = this.inflight.get(oldtag);
    // Host calls cannot be aborted half-way: the old request finishes and is
    // answered first, then Rflush (the order 9P requires).
    return running ? running.then(() => reply) : reply;
  }

  // ---- walking -------------------------------------------------------------

  private walk(r: Reader, tag: number): Awaitable<Buffer> {
    const fidNo = r.u32();
    const newNo = r.u32();
    const n = r.u16();
    if (n > MAX_WALK_NAMES) fail(Errno.EINVAL, 'Twalk', `${n} names (at most ${MAX_WALK_NAMES})`);
    const names: Buffer[] = [];
    for (let i = 0; i < n; i++) names.push(r.str());
    const f = this.fid(fidNo);
    // Walking *from* an open fid into a new fid is harmless and diod's own
    // tools (diodls) rely on it; moving an open fid itself is refused.
    if (newNo === fidNo && f.isOpen) fail(Errno.EBADF, 'Twalk', `fid ${fidNo} is open and cannot be moved`);
    if (newNo !== fidNo) this.checkNewFid(newNo);
    const { backend } = this.ctx;
    const qids: Qid[] = [];
    let cur = backend.ref(f.inode);
    let parent: Inode | undefined = f.parent ? backend.ref(f.parent) : undefined;
    let name = f.name;
    const drop = (): void => {
      backend.release(cur);
      if (parent) backend.release(parent);
    };
    const advance = (i: number, next: Entry): void => {
      if (parent) backend.release(parent);
      parent = cur;
      name = Buffer.from(names[i]!);
      cur = next.inode;
      qids.push(this.qid(cur, next.stat));
    };
    const failed = (i: number, e: unknown): Buffer => {
      drop();
      if (i === 0) throw e;
      return this.walkReply(qids, tag); // partial walk: newfid stays unbound
    };
    const bind = (): Buffer => {
      const moved = newNo === fidNo;
      if (!this.still(fidNo, f) || (moved ? f.isOpen : this.fids.has(newNo))) {
        drop();
        fail(Errno.EBADF, 'Twalk', `fid ${moved ? fidNo : newNo} changed while the walk waited`);
      }
      if (moved) {
        if (f.parent) backend.release(f.parent);
        backend.release(f.inode);
        f.inode = cur;
        f.parent = parent;
        f.name = name;
      } else {
        this.fids.set(newNo, new Fid(cur, f.cr, parent, name));
      }
      return this.walkReply(qids, tag);
    };
    const step = (from: number): Awaitable<Buffer> => {
      for (let i = from; i < names.length; i++) {
        let next: Awaitable<Entry>;
        try {
          next = backend.lookup(f.cr, cur, names[i]!);
        } catch (e) {
          return failed(i, e);
        }
        if (next instanceof Promise)
          return next.then(
            (e) => (advance(i, e), step(i + 1)),
            (e: unknown) => failed(i, e),
          );
        advance(i, next);
      }
      return bind();
    };
    return step(0);
  }

  private walkReply(qids: Qid[], tag: number): Buffer {
    const w = new Writer(9 + qids.length * QID_SIZE).u16(qids.length);
    for (const q of qids) w.qid(q);
    return w.finish(T.walk + 1, tag);
  }

  // ---- opening and creating ---------------------------------------------------

  private lopen(r: Reader, tag: number): Awaitable<Buffer> {
    const fidNo = r.u32();
    const f = this.fid(fidNo);
    const flags = dotlFlags(r.u32());
    if (f.isOpen) fail(Errno.EBADF, 'Tlopen', `${f.inode.label} is already open`);
    const { backend } = this.ctx;
    if (f.inode.isDir && (flags & O_ACCMODE) !== O_RDONLY) fail(Errno.EISDIR, 'Tlopen', f.inode.label);
    if (!f.inode.isDir && flags & O_DIRECTORY) fail(Errno.ENOTDIR, 'Tlopen', f.inode.label);
    const opened: Awaitable<OpenFile | DirStream> = f.inode.isDir
      ? this.fds.open('Tlopen', f.inode.label, () => backend.opendir(f.cr, f.inode))
      : this.fds.open('Tlopen', f.inode.label, () => backend.open(f.cr, f.inode, flags));
    return after(opened, (h) => {
      if (!this.still(fidNo, f) || f.isOpen) {
        this.closeHandle(h);
        fail(Errno.EBADF, 'Tlopen', `fid ${fidNo} changed while the open waited`);
      }
      if (h.inode.isDir) f.dir = h as DirStream;
      else f.file = h as OpenFile;
      return after(backend.getattrOpen(h), (st) =>
        new Writer(32)
          .qid(this.qid(f.inode, st))
          .u32(this.iounit())
          .finish(T.lopen + 1, tag),
      );
    });
  }

  private closeHandle(h: OpenFile | DirStream): void {
    if (h.inode.isDir) this.ctx.backend.closeDir(h as DirStream);
    else this.ctx.backend.closeFile(h as OpenFile);
  }

  private iounit(): number {
    return this.msize - IOHDRSZ;
  }

  private lcreate(r: Reader, tag: number): Awaitable<Buffer> {
    const fidNo = r.u32();
    const f = this.dirFid(fidNo);
    const name = r.str();
    const flags = dotlFlags(r.u32());
    const mode = r.u32();
    const gid = r.u32();
    if (f.isOpen) fail(Errno.EBADF, 'Tlcreate', `${f.inode.label} is open`);
    const { backend } = this.ctx;
    const made = this.fds.openWith<{ entry: Entry; file: OpenFile }>(
      'Tlcreate',
      printable(name),
      () => backend.create(Session.createCr(f, gid), f.inode, name, flags, mode),
      (c) => c.file,
    );
    return after(made, ({ entry, file }) => {
      if (!this.still(fidNo, f) || f.isOpen) {
        backend.closeFile(file);
        backend.release(entry.inode);
        fail(Errno.EBADF, 'Tlcreate', `fid ${fidNo} changed while the create waited (${printable(name)} was created)`);
      }
      // The fid now stands for the new, open file.
      if (f.parent) backend.release(f.parent);
      f.parent = f.inode;
      f.name = Buffer.from(name);
      f.inode = entry.inode;
      f.file = file;
      return new Writer(32)
        .qid(this.qid(entry.inode, entry.stat))
        .u32(this.iounit())
        .finish(T.lcreate + 1, tag);
    });
  }

  private symlink(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.dirFid(r.u32());
    const name = r.str();
    const target = r.str();
    const gid = r.u32();
    return after(this.ctx.backend.symlink(Session.createCr(f, gid), f.inode, name, target), (e) => this.entryReply(e.inode, e.stat, T.symlink, tag));
  }

  private mknod(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.dirFid(r.u32());
    const name = r.str();
    const mode = r.u32();
    const major = r.u32();
    const minor = r.u32();
    const gid = r.u32();
    return after(this.ctx.backend.mknod(Session.createCr(f, gid), f.inode, name, mode, makedev(major, minor)), (e) =>
      this.entryReply(e.inode, e.stat, T.mknod, tag),
    );
  }

  private mkdir(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.dirFid(r.u32());
    const name = r.str();
    const mode = r.u32();
    const gid = r.u32();
    return after(this.ctx.backend.mkdir(Session.createCr(f, gid), f.inode, name, mode), (e) => this.entryReply(e.inode, e.stat, T.mkdir, tag));
  }

  /** Replies with the qid of a new entry and drops the lookup reference. */
  private entryReply(inode: Inode, st: Stat, type: number, tag: number): Buffer {
    const reply = new Writer(32).qid(this.qid(inode, st)).finish(type + 1, tag);
    this.ctx.backend.release(inode);
    return reply;
  }

  private link(r: Reader, tag: number): Awaitable<Buffer> {
    const dir = this.dirFid(r.u32());
    const f = this.fid(r.u32());
    const name = r.str();
    return after(this.ctx.backend.link(dir.cr, f.inode, dir.inode, name), (e) => {
      this.ctx.backend.release(e.inode);
      return new Writer(8).finish(T.link + 1, tag);
    });
  }

  // ---- attributes ------------------------------------------------------------

  private getattr(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.fid(r.u32());
    r.u64(); // request_mask: everything is cheap to return at once
    return after(this.ctx.backend.getattr(f.inode), (st) => this.getattrReply(f.inode, st, tag));
  }

  private getattrReply(inode: Inode, st: Stat, tag: number): Buffer {
    const w = new Writer(160);
    w.u64(GETATTR.BASIC | (st.btime ? GETATTR.BTIME : 0))
      .qid(this.qid(inode, st))
      .u32(st.mode)
      .u32(st.uid)
      .u32(st.gid)
      .u64(st.nlink)
      .u64(st.rdev)
      .u64(st.size)
      .u64(st.blksize)
      .u64(st.blocks)
      .u64(st.atime.sec)
      .u64(st.atime.nsec)
      .u64(st.mtime.sec)
      .u64(st.mtime.nsec)
      .u64(st.ctime.sec)
      .u64(st.ctime.nsec)
      .u64(st.btime?.sec ?? 0)
      .u64(st.btime?.nsec ?? 0)
      .u64(0)
      .u64(0); // gen, data_version: not provided (not in valid)
    return w.finish(T.getattr + 1, tag);
  }

  private setattr(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.fid(r.u32());
    const valid = r.u32();
    const mode = r.u32();
    const uid = r.u32();
    const gid = r.u32();
    const size = r.offset();
    const atime = { sec: r.i64n(), nsec: Number(r.u64()) };
    const mtime = { sec: r.i64n(), nsec: Number(r.u64()) };
    const a: SetAttr = {};
    if (valid & ATTR.MODE) a.mode = mode;
    if (valid & ATTR.UID && uid !== NOFID) a.uid = uid;
    if (valid & ATTR.GID && gid !== NOFID) a.gid = gid;
    if (valid & ATTR.SIZE) a.size = size;
    if (valid & ATTR.ATIME) a.atime = valid & ATTR.ATIME_SET ? checkTime(atime) : 'now';
    if (valid & ATTR.MTIME) a.mtime = valid & ATTR.MTIME_SET ? checkTime(mtime) : 'now';
    if (valid & ATTR.CTIME) a.ctime = true;
    return after(this.ctx.backend.setattr(f.cr, f.inode, a, f.file), () => new Writer(8).finish(T.setattr + 1, tag));
  }

  private readlink(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.fid(r.u32());
    return after(this.ctx.backend.readlink(f.inode), (target) => new Writer(16 + target.length).str(target).finish(T.readlink + 1, tag));
  }

  private statfs(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.fid(r.u32());
    return after(this.ctx.backend.statfs(f.inode), (s) =>
      new Writer(72)
        .u32(s.type)
        .u32(s.bsize)
        .u64(s.blocks)
        .u64(s.bfree)
        .u64(s.bavail)
        .u64(s.files)
        .u64(s.ffree)
        .u64(s.fsid)
        .u32(s.namelen)
        .finish(T.statfs + 1, tag),
    );
  }

  // ---- data ------------------------------------------------------------------

  private read(r: Reader, tag: number): Awaitable<Result> {
    const f = this.fid(r.u32());
    const offset = r.offset();
    const count = Math.min(r.u32(), this.msize - IOHDRSZ);
    if (f.file && this.directRead) {
      const file = f.file;
      return after(
        this.directRead(tag, count, (dst, skip, max) => this.ctx.backend.read(file, offset, dst, skip, max)),
        () => SENT,
      );
    }
    const w = new Writer(IOHDRSZ + count);
    const countAt = w.length;
    w.u32(0);
    const finish = (n: number): Buffer => {
      const frame = w.finish(T.read + 1, tag);
      frame.writeUInt32LE(n, countAt);
      return frame;
    };
    if (f.xattrRead) {
      const at = typeof offset === 'bigint' ? f.xattrRead.length : Math.min(offset, f.xattrRead.length);
      const data = f.xattrRead.subarray(at, Math.min(at + count, f.xattrRead.length));
      w.bytes(data);
      return finish(data.length);
    }
    if (f.file) {
      const dst = w.reserve(count);
      return after(this.ctx.backend.read(f.file, offset, [dst], 0, count), (n) => {
        w.unreserve(count - n);
        return finish(n);
      });
    }
    if (f.dir) fail(Errno.EISDIR, 'Tread', f.inode.label);
    fail(Errno.EBADF, 'Tread', `${f.inode.label} is not open`);
  }

  private write(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.fid(r.u32());
    const offset = r.offset();
    const count = r.u32();
    const data = r.data(count);
    const written = (n: number): Buffer => new Writer(12).u32(n).finish(T.write + 1, tag);
    if (f.xattrWrite) {
      const x = f.xattrWrite;
      if (typeof offset === 'bigint' || offset !== x.written || offset + count > x.value.length) {
        fail(Errno.EINVAL, 'Twrite', `xattr ${printable(x.name)} at ${offset}+${count} beyond its declared size ${x.value.length}`);
      }
      let at = offset;
      for (const d of data) at += d.copy(x.value, at);
      x.written += count;
      return written(count);
    }
    if (f.file) return after(this.ctx.backend.write(f.file, offset, data, { partial: true }), written); // 9P clients retry a short count
    fail(Errno.EBADF, 'Twrite', `${f.inode.label} is not open for writing`);
  }

  private readdir(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.fid(r.u32());
    const offset = r.u64();
    const count = Math.min(r.u32(), this.msize - IOHDRSZ);
    if (!f.dir) fail(f.inode.isDir ? Errno.EBADF : Errno.ENOTDIR, 'Treaddir', `${f.inode.label} is not an open directory`);
    const { backend } = this.ctx;
    const w = new Writer(IOHDRSZ + Math.min(count, 64 * 1024));
    w.u32(0);
    let used = 0;
    const dir = f.dir;
    const listed = backend.readdir(dir, offset, (d) => {
      const size = QID_SIZE + 8 + 1 + 2 + d.name.length;
      if (used + size > count) return false;
      used += size;
      w.u8(dtypeToQidType(d.type)).u32(0).u64(d.guestIno).u64(d.off).u8(d.type).str(d.name);
      return true;
    });
    return after(listed, () => {
      const frame = w.finish(T.readdir + 1, tag);
      frame.writeUInt32LE(used, HEADER_SIZE);
      return frame;
    });
  }

  private fsync(r: Reader, tag: number): Promise<Buffer> {
    const f = this.fid(r.u32());
    const datasync = r.u32();
    const file = f.file;
    const reply = new Writer(8).finish(T.fsync + 1, tag);
    if (f.dir) {
      // A directory fid is not open as a file: an fd for the call, charged to this session.
      const { backend } = this.ctx;
      const opened = this.fds.open('Tfsync', f.inode.label, () => backend.open(f.cr, f.inode, O_RDONLY));
      return Promise.resolve(opened).then((d) =>
        backend
          .fsync(d, false)
          .then(() => reply)
          .finally(() => backend.closeFile(d)),
      );
    }
    if (!file) fail(Errno.EBADF, 'Tfsync', `${f.inode.label} is not open`);
    return this.ctx.backend.fsync(file, datasync !== 0).then(() => reply);
  }

  // ---- locks -------------------------------------------------------------------

  private lock(r: Reader, tag: number): Buffer {
    const f = this.fid(r.u32());
    const type = r.u8();
    r.u32(); // flags: BLOCK is honoured by answering BLOCKED; the client retries
    const start = lockNumber(r.u64());
    const length = lockNumber(r.u64());
    const procId = r.u32();
    const clientId = r.str();
    if (!f.file) fail(Errno.EBADF, 'Tlock', `${f.inode.label} is not an open file`);
    const owner = this.lockOwner(procId, clientId);
    // flock() arrives as a whole-file lock: it also takes the host flock(2) (see src/backend/locks.ts).
    const ok = this.ctx.backend.setlk(f.file, owner, { type: lockType(type), start, len: length }, { pid: procId, flockWholeFile: true });
    return new Writer(9).u8(ok ? LOCK_STATUS.SUCCESS : LOCK_STATUS.BLOCKED).finish(T.lock + 1, tag);
  }

  private getlock(r: Reader, tag: number): Buffer {
    const f = this.fid(r.u32());
    const type = r.u8();
    const start = lockNumber(r.u64());
    const length = lockNumber(r.u64());
    const procId = r.u32();
    const clientId = r.str();
    if (!f.file) fail(Errno.EBADF, 'Tgetlock', `${f.inode.label} is not an open file`);
    // The Linux client sends Tgetlock with type UNLCK once it has checked its
    // own locks: treat any probe without a lock type as a write-lock probe.
    const asked = lockType(type);
    const t = asked === F_UNLCK ? F_WRLCK : asked;
    const l = this.ctx.backend.getlk(f.file, this.lockOwner(procId, clientId), { type: t, start, len: length }, { flockWholeFile: true });
    const free = l.type === F_UNLCK;
    return new Writer(40 + clientId.length)
      .u8(free ? LOCK_TYPE.UNLCK : l.type === F_WRLCK ? LOCK_TYPE.WRLCK : LOCK_TYPE.RDLCK)
      .u64(free ? start : l.start)
      .u64(free ? length : l.len)
      .u32(free ? procId : l.pid)
      .str(free ? clientId : '')
      .finish(T.getlock + 1, tag);
  }

  private lockOwner(procId: number, clientId: Buffer): string {
    return `9p:${this.peer}:${clientId.toString('latin1')}:${procId}`;
  }

  // ---- xattrs -------------------------------------------------------------------

  private xattrwalk(r: Reader, tag: number): Awaitable<Buffer> {
    const f = this.fid(r.u32());
    const newNo = r.u32();
    const name = r.str();
    this.checkNewFid(newNo);
    const { backend } = this.ctx;
    const inode = backend.ref(f.inode); // the new fid's, taken now: f may be clunked while the call waits
    let read: Awaitable<Buffer>;
    try {
      read =
        name.length === 0
          ? after(backend.listxattr(f.cr, inode), (names) => Buffer.concat(names.flatMap((n) => [n, Buffer.from([0])])))
          : backend.getxattr(f.cr, inode, name);
    } catch (e) {
      backend.release(inode);
      throw e;
    }
    const bind = (data: Buffer): Buffer => {
      if (this.closed || this.fids.has(newNo)) fail(Errno.EBADF, 'Txattrwalk', `fid ${newNo} was bound while the call waited`);
      if (this.xattrBytes + data.length > MAX_PENDING_XATTR_BYTES) {
        fail(Errno.ENOMEM, 'Txattrwalk', `${printable(name)}: ${this.peer}'s fids hold ${this.xattrBytes} bytes of xattr values (the limit)`);
      }
      const x = new Fid(inode, f.cr, undefined, undefined);
      x.xattrRead = data;
      this.xattrBytes += data.length;
      this.fids.set(newNo, x);
      return new Writer(16).u64(data.length).finish(T.xattrwalk + 1, tag);
    };
    const bound = (data: Buffer): Buffer => {
      try {
        return bind(data);
      } catch (e) {
        backend.release(inode);
        throw e;
      }
    };
    if (read instanceof Promise)
      return read.then(bound, (e: unknown) => {
        backend.release(inode);
        throw e;
      });
    return bound(read);
  }

  private xattrcreate(r: Reader, tag: number): Buffer {
    const f = this.fid(r.u32());
    const name = r.str();
    const size = r.u64();
    const flags = r.u32();
    if (f.isOpen) fail(Errno.EBADF, 'Txattrcreate', `${f.inode.label} is open`);
    if (size > BigInt(XATTR_SIZE_MAX)) fail(Errno.E2BIG, 'Txattrcreate', `${printable(name)} size ${size}`);
    if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) fail(Errno.EINVAL, 'Txattrcreate', `flags ${flags}`);
    if (name.length === 0 || name.length > 255 || name.includes(0)) fail(Errno.EINVAL, 'Txattrcreate', printable(name));
    this.ctx.backend.checkSetxattr(f.cr, f.inode, name);
    if (this.xattrBytes + Number(size) > MAX_PENDING_XATTR_BYTES) {
      fail(Errno.ENOSPC, 'Txattrcreate', `${printable(name)}: too many unfinished xattr writes on this session`);
    }
    f.xattrWrite = { name: Buffer.from(name), value: Buffer.alloc(Number(size)), written: 0, flags };
    this.xattrBytes += Number(size);
    return new Writer(8).finish(T.xattrcreate + 1, tag);
  }

  /** Applies a Txattrcreate at clunk, as QEMU does: size 0 removes. */
  private commitXattr(f: Fid): Awaitable<void> {
    const x = f.xattrWrite!;
    if (x.written !== x.value.length) {
      fail(Errno.EINVAL, 'Tclunk', `xattr ${printable(x.name)}: ${x.written} of ${x.value.length} bytes written`);
    }
    const { backend } = this.ctx;
    return x.value.length === 0 ? backend.removexattr(f.cr, f.inode, x.name) : backend.setxattr(f.cr, f.inode, x.name, x.value, x.flags);
  }

  // ---- ending, removing, renaming ------------------------------------------------

  private clunk(r: Reader, tag: number): Awaitable<Buffer> {
    const n = r.u32();
    const f = this.fid(n);
    this.fids.delete(n);
    return this.thenDrop(f, f.xattrWrite ? () => this.commitXattr(f) : undefined, () => new Writer(8).finish(T.clunk + 1, tag));
  }

  /** Runs `work` for a fid already out of the table, drops the fid when it ends (however it ends), then replies. */
  private thenDrop(f: Fid, work: (() => Awaitable<unknown>) | undefined, reply: () => Buffer): Awaitable<Buffer> {
    let done: Awaitable<unknown>;
    try {
      done = work?.();
    } catch (e) {
      this.dropFid(f);
      throw e;
    }
    if (done instanceof Promise) return done.finally(() => this.dropFid(f)).then(reply);
    this.dropFid(f);
    return reply();
  }

  /**
   * The (parent, name) a fid was walked through, checked to still name the
   * fid's inode: nothing else may be removed or renamed by a stale name.
   */
  private verifiedName(f: Fid, op: string): Awaitable<{ parent: Inode; name: Buffer }> {
    const { parent, name } = f;
    if (!parent || !name || f.inode === this.ctx.backend.root) fail(Errno.EBUSY, op, f.inode.label);
    const { backend } = this.ctx;
    const stale = (): never => fail(Errno.ESTALE, op, `${f.inode.label} was renamed or removed`);
    const check = (e: Entry): { parent: Inode; name: Buffer } => {
      backend.release(e.inode);
      if (e.inode !== f.inode) stale();
      return { parent, name };
    };
    let found: Awaitable<Entry>;
    try {
      found = backend.lookup(f.cr, parent, name);
    } catch {
      return stale();
    }
    return found instanceof Promise ? found.then(check, stale) : check(found);
  }

  private remove(r: Reader, tag: number): Awaitable<Buffer> {
    const n = r.u32();
    const f = this.fid(n);
    // Tremove clunks the fid whatever the outcome.
    this.fids.delete(n);
    const unlink = (): Awaitable<void> =>
      after(this.verifiedName(f, 'Tremove'), ({ parent, name }) => this.ctx.backend.unlink(f.cr, parent, name, f.inode.isDir ? AT_REMOVEDIR : 0));
    return this.thenDrop(f, unlink, () => new Writer(8).finish(T.remove + 1, tag));
  }

  private rename(r: Reader, tag: number): Awaitable<Buffer> {
    const fidNo = r.u32();
    const f = this.fid(fidNo);
    const dir = this.dirFid(r.u32());
    const newName = r.str();
    const { backend } = this.ctx;
    const to = dir.inode;
    return after(this.verifiedName(f, 'Trename'), ({ parent, name }) =>
      after(backend.rename(f.cr, parent, name, to, newName), () => {
        // The fid follows its file, unless it was clunked or moved meanwhile.
        if (this.still(fidNo, f) && f.parent === parent) {
          f.parent = backend.ref(to);
          backend.release(parent);
          f.name = Buffer.from(newName);
        }
        return new Writer(8).finish(T.rename + 1, tag);
      }),
    );
  }

  private renameat(r: Reader, tag: number): Awaitable<Buffer> {
    const oldDir = this.dirFid(r.u32());
    const oldName = r.str();
    const newDir = this.dirFid(r.u32());
    const newName = r.str();
    return after(this.ctx.backend.rename(oldDir.cr, oldDir.inode, oldName, newDir.inode, newName), () => new Writer(8).finish(T.renameat + 1, tag));
  }

  private unlinkat(r: Reader, tag: number): Awaitable<Buffer> {
    const dir = this.dirFid(r.u32());
    const name = r.str();
    const flags = r.u32();
    if (flags & ~AT_REMOVEDIR) fail(Errno.EINVAL, 'Tunlinkat', `flags ${flags}`);
    return after(this.ctx.backend.unlink(dir.cr, dir.inode, name, flags), () => new Writer(8).finish(T.unlinkat + 1, tag));
  }
}

/** 9P2000.L open flags to host flags: only SYNC differs on x86 Linux. */
function dotlFlags(f: number): number {
  return f & DOTL_SYNC ? (f & ~DOTL_SYNC) | O_SYNC : f;
}

function lockType(t: number): number {
  switch (t) {
    case LOCK_TYPE.RDLCK:
      return F_RDLCK;
    case LOCK_TYPE.WRLCK:
      return F_WRLCK;
    case LOCK_TYPE.UNLCK:
      return F_UNLCK;
    default:
      fail(Errno.EINVAL, 'lock', `type ${t}`);
  }
}

/** Lock ranges are off_t; values past 2^53 are clamped (still "to the end"). */
function lockNumber(v: bigint): number {
  if (v > 0x7fffffffffffffffn) fail(Errno.EINVAL, 'lock', `range value ${v}`);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

function checkTime(t: { sec: number; nsec: number }): TimeArg {
  if (t.nsec >= 1e9) fail(Errno.EINVAL, 'Tsetattr', `nsec ${t.nsec}`);
  return t;
}

function dtypeToQidType(dt: number): number {
  return dt === DT_DIR ? QTDIR : dt === DT_LNK ? QTSYMLINK : QTFILE;
}
