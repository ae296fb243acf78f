// One FUSE session (a virtio-fs device's guest, or a /dev/fuse mount) on
// the shared backend. Node ids are the backend's inode ids (the export root
// is 1); every entry reply adds one lookup reference that FORGET gives back.
// Each session counts its own lookups, so a guest can never forget
// references that 9P fids or other sessions hold.
import {
  DAEMON,
  DirStream,
  OpenFile,
  after,
  printable,
  type Awaitable,
  type Backend,
  type Caller,
  type GuestDirent,
  type Entry,
  type FdAccount,
  type Inode,
  type SetAttr,
} from '../../src/backend/api.js';
import {
  AT_REMOVEDIR,
  Errno,
  F_RDLCK,
  F_UNLCK,
  F_WRLCK,
  O_ACCMODE,
  O_APPEND,
  O_CREAT,
  O_EXCL,
  O_RDONLY,
  O_TRUNC,
  O_RDWR,
  O_WRONLY,
  SEEK_DATA,
  SEEK_HOLE,
  STATX_BASIC_STATS,
  STATX_BTIME,
  SysError,
  errnoName,
  fail,
  major,
  minor,
  type Stat,
  type TimeArg,
} from '../../src/sys/index.js';
import type { Logger } from '../../src/log.js';
import { PeerLog, type LogLimits } from '../../src/log-limit.js';
import {
  ACCESS_IN_SIZE,
  BATCH_FORGET_IN_SIZE,
  COPY_FILE_RANGE_IN_SIZE,
  CREATE_IN_SIZE,
  ENTRY_OUT_SIZE,
  FALLOCATE_IN_SIZE,
  FATTR,
  FLUSH_IN_SIZE,
  FOPEN,
  FORGET_IN_SIZE,
  FORGET_ONE_SIZE,
  FSYNC_IN_SIZE,
  FUSE_ATTR_SUBMOUNT,
  FUSE_COMPAT_22_INIT_OUT_SIZE,
  FUSE_COMPAT_INIT_OUT_SIZE,
  FUSE_COMPAT_SETXATTR_IN_SIZE,
  FUSE_FSYNC_FDATASYNC,
  FUSE_GETATTR_FH,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_LK_FLOCK,
  FUSE_OPEN_KILL_SUIDGID,
  FUSE_RELEASE_FLOCK_UNLOCK,
  FUSE_ROOT_ID,
  FUSE_WRITE_KILL_SUIDGID,
  GETATTR_IN_SIZE,
  GETXATTR_IN_SIZE,
  IN_HEADER_SIZE,
  INIT,
  INIT_IN_SIZE,
  INIT_OUT_FULL_MINOR,
  INTERRUPT_IN_SIZE,
  LK_IN_SIZE,
  LSEEK_IN_SIZE,
  OFFSET_MAX,
  OP,
  OPEN_IN_SIZE,
  READ_IN_SIZE,
  RELEASE_IN_SIZE,
  SETATTR_IN_SIZE,
  SETXATTR_IN_SIZE,
  STATX_IN_SIZE,
  SYNCFS_IN_SIZE,
  WRITE_IN_SIZE,
} from './constants.js';
import { timeouts, type FuseOptions } from './options.js';
import {
  HANDLE_DIR,
  HANDLE_FILE,
  HANDLE_LOST,
  NODE_FOUND,
  NODE_LOST,
  StateError,
  decodeState,
  encodeState,
  type HandleState,
  type NodeState,
} from './migration-state.js';
import { parseExtensions, parseInHeader, RequestBody, type InHeader, type ReplyTo } from './request.js';
import {
  ArgReader,
  attrOut,
  direntplusSize,
  direntSize,
  dtToMode,
  encodeDirent,
  encodeGetxattrOut,
  encodeInitOut,
  encodeLkOut,
  encodeLseekOut,
  encodeStatxOut,
  encodeWriteOut,
  entryOut,
  newDecodeDev,
  newEncodeDev,
  noEntryOut,
  openOut,
  statfsOut,
  type FuseAttr,
} from './wire.js';

export interface FuseSessionContext {
  backend: Backend;
  log: Logger;
  options: FuseOptions;
  /** per-peer rate limit of the log lines a guest can cause (false: none); default DEFAULT_LOG_LIMITS */
  logLimits?: LogLimits | false;
}

/**
 * virtiofsd's --migration-on-error: `abort` fails the migration when a node
 * cannot be found (source) or is not the same file (destination);
 * `guest-error` migrates on, and the guest gets EIO on that node or handle.
 */
export type MigrationOnError = 'abort' | 'guest-error';

/** What CREATE and TMPFILE get from the backend. */
type Made = { entry: Entry; file: OpenFile };

type Handler = (h: InHeader, body: RequestBody, out: ReplyTo) => Awaitable<void>;

/**
 * A request's argument block read through the codec: the first `n` bytes
 * (all of them when omitted). A field that runs short is EINVAL naming the
 * operation and the linux/fuse.h field.
 */
function args(body: RequestBody, op: string, n?: number): ArgReader {
  return new ArgReader(body.head(n === undefined ? body.length : Math.min(n, body.length)), op);
}

/** Who reopens a migrated handle: the daemon, as for a FUSE OPEN (the guest kernel checked when it opened). */
const MIGRATION_CALLER: Caller = { uid: 0, gid: 0, groups: [], pid: 0, createsAsCaller: true };

// What INIT answers besides the negotiated flags and sizes.
/** fuse_init_out.max_background: background requests (readahead, async I/O) the kernel keeps in flight */
const MAX_BACKGROUND = 64;
/** fuse_init_out.congestion_threshold: 3/4 of max_background, the kernel's own default ratio */
const CONGESTION_THRESHOLD = 48;
/** fuse_init_out.time_gran: timestamps are kept to the nanosecond */
const TIME_GRAN_NS = 1;
/** fuse_init_out.max_pages counts pages of this size */
const PAGE_SIZE = 4096;

const entryItself = (e: Entry): Entry => e;
const noDrop = (): void => {};

export class FuseSession {
  private initialized = false;
  private minor = 0;
  private wantFlags = 0n;
  private readonly lookups = new Map<Inode, number>();
  private readonly handles = new Map<bigint, OpenFile | DirStream>();
  private nextFh = 1n;
  /** node ids (with their lookup counts) and handles a migration could not bring along (--migration-on-error=guest-error) */
  private readonly lostNodes = new Map<bigint, bigint>();
  private readonly lostHandles = new Set<bigint>();
  /** SETLKW requests the backend is waiting on (unique -> how to cancel), for INTERRUPT */
  private readonly waiting = new Map<bigint, AbortController>();
  private readonly handlers: Map<number, Handler>;
  /** the log lines this guest causes, rate-limited per kind */
  readonly logs: PeerLog;
  /** this session's share of the open-fd pool */
  private fds: FdAccount;

  constructor(
    private readonly ctx: FuseSessionContext,
    readonly peer: string,
    /** shared with the transport (a virtio-fs device keeps one across resets); default: the session's own */
    logs?: PeerLog,
  ) {
    this.logs = logs ?? new PeerLog(ctx.log, peer, ctx.logLimits);
    this.fds = ctx.backend.fds.account(peer);
    const h: [number, Handler][] = [
      [OP.INIT, this.init],
      [OP.DESTROY, this.destroy],
      [OP.LOOKUP, this.lookup],
      [OP.FORGET, this.forget],
      [OP.BATCH_FORGET, this.batchForget],
      [OP.GETATTR, this.getattr],
      [OP.SETATTR, this.setattr],
      [OP.READLINK, this.readlink],
      [OP.SYMLINK, this.symlink],
      [OP.MKNOD, this.mknod],
      [OP.MKDIR, this.mkdir],
      [OP.UNLINK, this.unlink],
      [OP.RMDIR, this.rmdir],
      [OP.RENAME, this.rename],
      [OP.RENAME2, this.rename2],
      [OP.LINK, this.link],
      [OP.OPEN, this.open],
      [OP.CREATE, this.create],
      [OP.TMPFILE, this.tmpfile],
      [OP.READ, this.read],
      [OP.WRITE, this.write],
      [OP.STATFS, this.statfs],
      [OP.RELEASE, this.release],
      [OP.FLUSH, this.flush],
      [OP.FSYNC, this.fsync],
      [OP.OPENDIR, this.opendir],
      [OP.READDIR, this.readdir],
      [OP.READDIRPLUS, this.readdirplus],
      [OP.RELEASEDIR, this.releasedir],
      [OP.FSYNCDIR, this.fsyncdir],
      [OP.SETXATTR, this.setxattr],
      [OP.GETXATTR, this.getxattr],
      [OP.LISTXATTR, this.listxattr],
      [OP.REMOVEXATTR, this.removexattr],
      [OP.ACCESS, this.access],
      [OP.FALLOCATE, this.fallocate],
      [OP.LSEEK, this.lseek],
      [OP.COPY_FILE_RANGE, this.copyFileRange],
      [OP.SYNCFS, this.syncfs],
      [OP.STATX, this.statx],
      [OP.GETLK, this.getlk],
      [OP.SETLK, this.setlk],
      [OP.SETLKW, this.setlkw],
      [OP.INTERRUPT, this.interrupt],
    ];
    this.handlers = new Map(h);
  }

  /**
   * Handles one request. `request` holds the in-header and the arguments
   * (possibly split over several buffers). Every request gets exactly one
   * call on `out` (send, sendRead or none).
   */
  handle(request: RequestBody, out: ReplyTo): void {
    this.ctx.backend.beginRequest();
    let h: InHeader;
    try {
      h = parseInHeader(request.head(IN_HEADER_SIZE));
    } catch {
      this.logs.warn('fuse.bad-request', { peer: this.peer, bytes: request.length }, 'fuse request shorter than its header');
      out.send(Errno.EINVAL, []);
      return;
    }
    const body = new RequestBody(request.slices(IN_HEADER_SIZE, request.length - IN_HEADER_SIZE));
    if (h.totalExtlen) parseExtensions(h, body);
    if (h.len !== request.length) {
      this.logs.warn(
        'fuse.bad-request',
        { peer: this.peer, opcode: h.opcode, len: h.len, bytes: request.length },
        'fuse header length disagrees with the request',
      );
      if (h.len > request.length)
        return this.replyError(h, out, new SysError(Errno.EINVAL, 'fuse request', `len ${h.len} > ${request.length} bytes`));
    }
    const started = process.hrtime.bigint();
    const traced: ReplyTo = this.ctx.log.isLevelEnabled('trace') ? this.tracing(h, out, started) : out;
    try {
      if (!this.initialized && h.opcode !== OP.INIT) fail(Errno.EIO, 'fuse request before INIT', `opcode ${h.opcode}`);
      const handler = this.handlers.get(h.opcode);
      if (!handler) fail(Errno.ENOSYS, 'fuse', `opcode ${h.opcode} is not implemented`);
      const r = handler.call(this, h, body, traced);
      if (r instanceof Promise) r.catch((e: unknown) => this.replyError(h, traced, e));
    } catch (e) {
      this.replyError(h, traced, e);
    }
  }

  private tracing(h: InHeader, out: ReplyTo, started: bigint): ReplyTo {
    const log = (errno: number): void =>
      this.ctx.log.trace(
        {
          peer: this.peer,
          op: h.opcode,
          unique: h.unique.toString(),
          nodeid: h.nodeid.toString(),
          errno,
          us: Number(process.hrtime.bigint() - started) / 1000,
        },
        'fuse request',
      );
    return {
      send: (e, b) => {
        log(e);
        return out.send(e, b);
      },
      sendRead: (s, fill) => {
        out.sendRead(s, fill);
        log(0);
      },
      none: () => {
        log(0);
        out.none();
      },
    };
  }

  private replyError(h: InHeader, out: ReplyTo, e: unknown): void {
    // A request too short for its opcode is a SysError(EINVAL) from the
    // ArgReader ("FUSE READ size: needs 4 bytes at 16, ..."), logged here.
    const errno = e instanceof SysError ? e.errno : Errno.EIO;
    if (!(e instanceof SysError)) {
      this.logs.error('fuse.unexpected', { peer: this.peer, opcode: h.opcode, err: e }, 'fuse request failed unexpectedly');
    } else if (errno === Errno.EPROTO || errno === Errno.EBADF || (errno === Errno.EINVAL && /^fuse/i.test(e.op))) {
      if (this.logs.wants('warn'))
        this.logs.warn('fuse.bad-request', { peer: this.peer, opcode: h.opcode, errno: errnoName(errno) }, `bad fuse request: ${e.message}`);
    } else if (this.logs.wants('debug')) {
      this.logs.debug('fuse.failed', { peer: this.peer, opcode: h.opcode, errno: errnoName(errno) }, e.message);
    }
    if (h.opcode === OP.FORGET || h.opcode === OP.BATCH_FORGET) out.none();
    else out.send(errno, []);
  }

  /** Answers every waiting SETLKW with EINTR (the queue is stopping). */
  cancelWaits(): void {
    for (const w of [...this.waiting.values()]) w.abort();
    this.waiting.clear();
  }

  /** Drops every reference and handle the session holds (guest gone, DESTROY); reports suppressed log counts. */
  close(): void {
    this.cancelWaits();
    const { backend } = this.ctx;
    for (const f of this.handles.values()) {
      if (f instanceof OpenFile) backend.closeFile(f);
      else backend.closeDir(f);
    }
    this.handles.clear();
    for (const [inode, n] of this.lookups) backend.release(inode, n);
    this.lookups.clear();
    this.lostNodes.clear();
    this.lostHandles.clear();
    this.initialized = false;
    this.logs.flush();
    this.fds.close(); // a new INIT (after DESTROY) opens a fresh one
  }

  // ---- live migration ------------------------------------------------------

  /**
   * The session's state for the migration stream (the device is stopped, so
   * nothing changes meanwhile): INIT parameters, node ids with lookup counts
   * and the path of each (found by the backend), open handles. A node the
   * backend cannot find fails the save under `abort` (SysError naming it),
   * and travels as lost under `guest-error`.
   */
  saveState(onError: MigrationOnError): Buffer {
    const { backend } = this.ctx;
    const nodes = new Map<Inode, NodeState>();
    const add = (inode: Inode, lookups: number): void => {
      const known = nodes.get(inode);
      if (known) return;
      const nodeid = BigInt(inode.id);
      try {
        const loc = backend.locate(inode);
        nodes.set(inode, { nodeid, lookups: BigInt(lookups), status: NODE_FOUND, dev: loc.dev, ino: loc.ino, kind: loc.kind, path: loc.path });
      } catch (e) {
        if (!(e instanceof SysError)) throw e;
        if (onError === 'abort') throw new SysError(e.errno, 'migration: save', `node ${nodeid}, ${e.object ?? e.op}`);
        this.logs.warn(
          'fuse.migration',
          { peer: this.peer, nodeid: nodeid.toString(), err: e.message },
          'fuse: migrating a node the guest will get EIO on',
        );
        nodes.set(inode, { nodeid, lookups: BigInt(lookups), status: NODE_LOST, dev: 0n, ino: 0n, kind: 0, path: [] });
      }
    };
    for (const [inode, n] of this.lookups) add(inode, n);
    const handles: HandleState[] = [];
    for (const [fh, h] of this.handles) {
      // A handle's node may be forgotten already (the guest keeps only the fh): it travels with 0 lookups.
      add(h.inode, 0);
      handles.push({
        fh,
        nodeid: BigInt(h.inode.id),
        type: h instanceof OpenFile ? HANDLE_FILE : HANDLE_DIR,
        flags: h instanceof OpenFile ? h.flags : 0,
      });
    }
    const lostNodes = [...this.lostNodes].map(
      ([nodeid, lookups]): NodeState => ({ nodeid, lookups, status: NODE_LOST, dev: 0n, ino: 0n, kind: 0, path: [] }),
    );
    return encodeState({
      minor: this.initialized ? this.minor : 0,
      initFlags: this.wantFlags,
      nextFh: this.nextFh,
      nodes: [...nodes.values(), ...lostNodes],
      handles: handles.concat([...this.lostHandles].map((fh) => ({ fh, nodeid: BigInt(FUSE_ROOT_ID), type: HANDLE_LOST, flags: 0 }))),
    });
  }

  /**
   * Loads a state saved by saveState (a fresh session, before the queues
   * start): the same node ids, lookup counts and handles, each inode found
   * again by its path and checked to be the same file. Any problem with the
   * blob itself refuses it (StateError); a node or handle that is not the
   * same file fails the load under `abort` and is answered with EIO under
   * `guest-error`.
   */
  async loadState(blob: Buffer, onError: MigrationOnError): Promise<void> {
    const { backend } = this.ctx;
    const state = decodeState(blob, BigInt(FUSE_ROOT_ID));
    if (this.initialized || this.lookups.size || this.handles.size)
      throw new StateError('the destination session is not fresh (the guest already talked to it)');
    const found = state.nodes.filter((n) => n.status === NODE_FOUND);
    // One reference more than the lookups while the handles are opened: a node held only by a handle has 0.
    const results = await backend.restore(
      found.map((n) => ({ id: Number(n.nodeid), path: n.path, dev: n.dev, ino: n.ino, kind: n.kind, refs: Number(n.lookups) + 1 })),
    );
    const inodes = new Map<bigint, Inode>();
    const failures: string[] = [];
    found.forEach((n, i) => {
      const r = results[i]!;
      if (r instanceof SysError) {
        failures.push(r.message);
        this.lostNodes.set(n.nodeid, n.lookups);
      } else inodes.set(n.nodeid, r);
    });
    for (const n of state.nodes) if (n.status === NODE_LOST && n.lookups > 0n) this.lostNodes.set(n.nodeid, n.lookups);
    const opened: [bigint, OpenFile | DirStream][] = [];
    try {
      if (failures.length && onError === 'abort') throw new SysError(Errno.ESTALE, 'migration: load', failures.join('; '));
      for (const h of state.handles) {
        const inode = h.nodeid === BigInt(FUSE_ROOT_ID) ? (inodes.get(h.nodeid) ?? backend.root) : inodes.get(h.nodeid);
        if (!inode || h.type === HANDLE_LOST) {
          this.lostHandles.add(h.fh);
          continue;
        }
        try {
          const what = `fh ${h.fh} (${inode.label})`;
          const flags = h.flags & ~(O_TRUNC | O_CREAT | O_EXCL);
          opened.push([
            h.fh,
            await this.fds.open('migration: reopen', what, () =>
              h.type === HANDLE_DIR ? backend.opendir(MIGRATION_CALLER, inode) : backend.open(MIGRATION_CALLER, inode, flags),
            ),
          ]);
        } catch (e) {
          if (!(e instanceof SysError)) throw e;
          if (onError === 'abort') throw new SysError(e.errno, 'migration: load', `fh ${h.fh}, ${e.op} ${e.object ?? ''}`);
          failures.push(`fh ${h.fh}: ${e.message}`);
          this.lostHandles.add(h.fh);
        }
      }
    } catch (e) {
      for (const [, h] of opened) h instanceof OpenFile ? backend.closeFile(h) : backend.closeDir(h);
      for (const n of found) {
        const inode = inodes.get(n.nodeid);
        if (inode) backend.release(inode, Number(n.lookups) + 1);
      }
      this.lostNodes.clear();
      this.lostHandles.clear();
      throw e;
    }
    for (const [fh, h] of opened) this.handles.set(fh, h);
    for (const n of found) {
      const inode = inodes.get(n.nodeid);
      if (!inode) continue;
      if (n.lookups > 0n) this.lookups.set(inode, (this.lookups.get(inode) ?? 0) + Number(n.lookups));
      backend.release(inode, 1); // the reference held while the handles were opened
    }
    this.minor = state.minor;
    this.wantFlags = state.initFlags;
    this.nextFh = state.nextFh;
    this.initialized = state.minor !== 0;
    if (failures.length)
      this.logs.warn(
        'fuse.migration',
        { peer: this.peer, failures: failures.slice(0, 8) },
        'fuse: migrated with nodes or handles the guest will get EIO on',
      );
  }

  // ---- helpers ---------------------------------------------------------------

  private inode(nodeid: bigint): Inode {
    if (this.lostNodes.has(nodeid)) fail(Errno.EIO, 'fuse', `node id ${nodeid} was lost in the migration`);
    const inode = this.ctx.backend.inodeById(nodeid);
    // Only node ids this session was given (or the root) are valid here.
    if (!inode || (inode.id !== FUSE_ROOT_ID && !this.lookups.has(inode))) {
      fail(Errno.ESTALE, 'fuse', `node id ${nodeid} was never looked up`);
    }
    return inode;
  }

  private file(fh: bigint, op: string): OpenFile {
    if (this.lostHandles.has(fh)) fail(Errno.EIO, op, `file handle ${fh} was lost in the migration`);
    const f = this.handles.get(fh);
    if (!(f instanceof OpenFile)) fail(Errno.EBADF, op, `file handle ${fh}`);
    return f;
  }

  private dir(fh: bigint, op: string): DirStream {
    if (this.lostHandles.has(fh)) fail(Errno.EIO, op, `directory handle ${fh} was lost in the migration`);
    const d = this.handles.get(fh);
    if (!(d instanceof DirStream)) fail(Errno.EBADF, op, `directory handle ${fh}`);
    return d;
  }

  private addHandle(h: OpenFile | DirStream): bigint {
    const fh = this.nextFh++;
    this.handles.set(fh, h);
    return fh;
  }

  /**
   * Creation runs as the caller so new files get the right owner; with
   * CREATE_SUPP_GROUP the kernel adds the supplementary group that lets the
   * caller create in a group-writable directory.
   */
  private static caller(h: InHeader): Caller {
    return { uid: h.uid, gid: h.gid, groups: h.suppGroups.length ? [h.gid, ...h.suppGroups] : [h.gid], pid: h.pid, createsAsCaller: true };
  }

  /** A creating caller, with the umask when the kernel left it to us (POSIX_ACL/DONT_MASK negotiated). */
  private creator(h: InHeader, umask: number): Caller {
    const c = FuseSession.caller(h);
    return this.wantFlags & INIT.DONT_MASK ? { ...c, umask: umask & 0o777 } : c;
  }

  /** Records the lookup reference an entry reply hands to the guest. */
  private remember(inode: Inode): void {
    this.lookups.set(inode, (this.lookups.get(inode) ?? 0) + 1);
  }

  /** The guest's fuse_attr of an inode. */
  private fuseAttr(inode: Inode, st: Stat): FuseAttr {
    const { backend, options } = this.ctx;
    const submount = options.announceSubmounts && backend.isSubmountRoot(inode);
    return {
      ino: inode.guestIno,
      size: st.size,
      blocks: st.blocks,
      atime: st.atime,
      mtime: st.mtime,
      ctime: st.ctime,
      mode: st.mode,
      nlink: st.nlink,
      uid: st.uid,
      gid: st.gid,
      rdev: Number(newEncodeDev(st.rdev)),
      blksize: st.blksize,
      flags: submount ? FUSE_ATTR_SUBMOUNT : 0,
    };
  }

  private entryOut(e: Entry, into?: Buffer, at?: number): Buffer {
    return entryOut(BigInt(e.inode.id), timeouts(this.ctx.options.cache), this.fuseAttr(e.inode, e.stat), into, at);
  }

  private attrOut(inode: Inode, st: Stat): Buffer {
    return attrOut(timeouts(this.ctx.options.cache).attr, this.fuseAttr(inode, st));
  }

  private replyEntry(out: ReplyTo, e: Entry): void {
    this.remember(e.inode);
    if (!out.send(0, [this.entryOut(e)])) this.forgetOne(BigInt(e.inode.id), 1n);
  }

  /** An empty success reply once `work` has ended. */
  private done(out: ReplyTo, work: Awaitable<void>): Awaitable<void> {
    return after(work, () => {
      out.send(0, []);
    });
  }

  /** replyEntry once the backend has the entry. */
  private entryReply(out: ReplyTo, e: Awaitable<Entry>): Awaitable<void> {
    return after(e, (entry) => this.replyEntry(out, entry));
  }

  /** The attributes GETATTR and STATX answer with: of the open handle when the kernel names one. */
  private attrsOf(inode: Inode, flags: number, fh: bigint): Awaitable<Stat> {
    const h = flags & FUSE_GETATTR_FH ? this.handles.get(fh) : undefined;
    return h ? this.ctx.backend.getattrOpen(h) : this.ctx.backend.getattr(inode);
  }

  /** A reply carrying a new handle did not reach the client: close it again. */
  private dropHandle(fh: bigint): void {
    const h = this.handles.get(fh);
    if (!h) return;
    this.handles.delete(fh);
    if (h instanceof OpenFile) this.ctx.backend.closeFile(h);
    else this.ctx.backend.closeDir(h);
  }

  private openOut(fh: bigint, isDir: boolean): Buffer {
    let flags = 0;
    const mode = this.ctx.options.cache;
    // Direct I/O: writes to one file may run side by side (pwritev at their
    // own offsets; the kernel still serializes extending and O_APPEND writes).
    if (!isDir && (mode === 'never' || mode === 'metadata')) flags |= FOPEN.DIRECT_IO | FOPEN.PARALLEL_DIRECT_WRITES;
    if (mode === 'always') flags |= isDir ? FOPEN.CACHE_DIR : FOPEN.KEEP_CACHE;
    return openOut(fh, flags);
  }

  private xattrEnabled(op: string): void {
    if (!this.ctx.options.xattr) fail(Errno.ENOSYS, op, 'extended attributes are off (--xattr)');
  }

  /** ACL names are refused (and hidden) when --posix-acl was given and ACLs are not on, as virtiofsd does. */
  private aclBlocked(name: Buffer): boolean {
    if (this.ctx.options.posixAcl === undefined || this.wantFlags & INIT.POSIX_ACL) return false;
    const s = name.toString('latin1');
    return s === 'system.posix_acl_access' || s === 'system.posix_acl_default';
  }

  /** The host name of a guest's xattr name, through --xattrmap; refused names fail the request. */
  private hostXattrName(op: string, name: Buffer): Buffer {
    if (this.aclBlocked(name)) fail(Errno.EOPNOTSUPP, op, `${name.toString('latin1')}: POSIX ACLs are off (--posix-acl)`);
    const map = this.ctx.options.xattrMap;
    if (!map) return name;
    const m = map.toHost(name);
    if ('errno' in m) fail(m.errno === 'EPERM' ? Errno.EPERM : Errno.EOPNOTSUPP, op, `${name.toString('latin1')}: refused by --xattrmap`);
    return m.name;
  }

  /** Lock requests of a kind that was not offered in INIT (-o no_posix_lock / no_flock) get ENOSYS. */
  private locksEnabled(flock: boolean): void {
    const o = this.ctx.options;
    if (flock ? !o.flockLocks : !o.posixLocks)
      fail(Errno.ENOSYS, flock ? 'FLOCK' : 'LK', `${flock ? 'flock' : 'POSIX'} locks are off (-o ${flock ? 'no_flock' : 'no_posix_lock'})`);
  }

  // ---- session ----------------------------------------------------------------

  private init(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const a = args(body, 'INIT', INIT_IN_SIZE);
    const major = a.u32('major');
    const minor = a.u32('minor');
    const maxReadahead = a.u32('max_readahead');
    const flags = BigInt(a.u32('flags'));
    // flags2 and the rest came with 7.36; an older kernel's fuse_init_in ends at flags.
    const flags2 = a.remaining >= 4 ? BigInt(a.u32('flags2')) : 0n;
    const offered = flags & INIT.INIT_EXT ? flags | (flags2 << 32n) : flags;
    if (major !== FUSE_KERNEL_VERSION) {
      this.logs.error('fuse.init', { peer: this.peer, major, minor }, 'fuse: unsupported kernel protocol major version');
      // Reply with our major only; the kernel then retries or gives up.
      const b = encodeInitOut({ major: FUSE_KERNEL_VERSION, minor: FUSE_KERNEL_MINOR_VERSION }).subarray(0, FUSE_COMPAT_INIT_OUT_SIZE);
      out.send(major > FUSE_KERNEL_VERSION ? 0 : Errno.EPROTO, major > FUSE_KERNEL_VERSION ? [b] : []);
      return;
    }
    if (this.initialized) this.close();
    if (this.fds.isClosed) this.fds = this.ctx.backend.fds.account(this.peer);
    const { options } = this.ctx;
    let want =
      INIT.ASYNC_READ |
      INIT.ATOMIC_O_TRUNC |
      INIT.EXPORT_SUPPORT |
      INIT.BIG_WRITES |
      INIT.AUTO_INVAL_DATA |
      INIT.ASYNC_DIO |
      INIT.PARALLEL_DIROPS |
      INIT.ABORT_ERROR |
      INIT.MAX_PAGES |
      INIT.CACHE_SYMLINKS |
      INIT.HANDLE_KILLPRIV_V2 |
      INIT.INIT_EXT |
      INIT.CREATE_SUPP_GROUP;
    // Without POSIX_LOCKS / FLOCK_LOCKS the guest kernel keeps those locks
    // local to the guest (virtiofsd's -o no_posix_lock / no_flock).
    if (options.posixLocks) want |= INIT.POSIX_LOCKS;
    if (options.flockLocks) want |= INIT.FLOCK_LOCKS;
    if (options.readdirplus) want |= INIT.DO_READDIRPLUS | INIT.READDIRPLUS_AUTO;
    if (options.allowMmap) want |= INIT.DIRECT_IO_ALLOW_MMAP;
    if (options.writeback) want |= INIT.WRITEBACK_CACHE;
    // With POSIX ACLs the kernel leaves umask and default-ACL inheritance to
    // the server (DONT_MASK), as on a local fs. duofs's default: on with
    // xattrs; virtiofsd's --posix-acl modes: never, auto, always.
    const acl = INIT.POSIX_ACL | INIT.DONT_MASK;
    const aclMode = options.posixAcl ?? (options.xattr ? 'auto' : 'never');
    if (aclMode === 'always' && (offered & acl) !== acl) {
      this.logs.error(
        'fuse.init',
        { peer: this.peer, offered: `0x${offered.toString(16)}` },
        'fuse: --posix-acl=always, but the kernel does not offer POSIX_ACL and DONT_MASK',
      );
      out.send(Errno.EPROTO, []);
      return;
    }
    if (aclMode !== 'never' && (offered & acl) === acl) want |= acl;
    // --security-label: the guest's LSM labels what it creates (FUSE_SECURITY_CTX).
    const labelMode = options.securityLabel ?? 'never';
    if (labelMode === 'always' && !(offered & INIT.SECURITY_CTX)) {
      this.logs.error(
        'fuse.init',
        { peer: this.peer, offered: `0x${offered.toString(16)}` },
        'fuse: --security-label=always, but the kernel does not offer FUSE_SECURITY_CTX',
      );
      out.send(Errno.EPROTO, []);
      return;
    }
    if (labelMode !== 'never') want |= INIT.SECURITY_CTX;
    if (options.announceSubmounts) want |= INIT.SUBMOUNTS;
    want &= offered;
    this.wantFlags = want;
    this.minor = Math.min(minor, FUSE_KERNEL_MINOR_VERSION);
    this.initialized = true;
    const maxPages = Math.ceil(options.maxWrite / PAGE_SIZE);
    const b = encodeInitOut({
      major: FUSE_KERNEL_VERSION,
      minor: this.minor,
      maxReadahead,
      flags: want,
      maxBackground: MAX_BACKGROUND,
      congestionThreshold: CONGESTION_THRESHOLD,
      maxWrite: options.maxWrite,
      timeGran: TIME_GRAN_NS,
      maxPages: Math.min(maxPages, 0xffff),
    });
    this.logs.info('fuse.init', { peer: this.peer, minor, flags: `0x${want.toString(16)}` }, 'fuse session initialized');
    // Older kernels (minor < 23) expect a 24-byte reply.
    out.send(0, [minor < INIT_OUT_FULL_MINOR ? b.subarray(0, FUSE_COMPAT_22_INIT_OUT_SIZE) : b]);
  }

  private destroy(_h: InHeader, _b: RequestBody, out: ReplyTo): void {
    this.close();
    out.send(0, []);
  }

  // ---- names and inodes -----------------------------------------------------------

  private lookup(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const parent = this.inode(h.nodeid);
    const name = args(body, 'LOOKUP').name('name');
    return this.entryReply(out, this.ctx.backend.lookup(FuseSession.caller(h), parent, name));
  }

  private forgetOne(nodeid: bigint, n: bigint): void {
    const lost = this.lostNodes.get(nodeid);
    if (lost !== undefined) {
      if (n >= lost) this.lostNodes.delete(nodeid);
      else this.lostNodes.set(nodeid, lost - n);
      return;
    }
    const inode = this.ctx.backend.inodeById(nodeid);
    const held = inode ? this.lookups.get(inode) : undefined;
    if (!inode || held === undefined) {
      if (this.logs.wants('debug'))
        this.logs.debug('fuse.forget', { peer: this.peer, nodeid: nodeid.toString() }, 'fuse: FORGET of a node id this session does not hold');
      return;
    }
    // Never more than this session looked up: other users keep theirs.
    const drop = n >= BigInt(held) ? held : Number(n);
    if (drop === held) this.lookups.delete(inode);
    else this.lookups.set(inode, held - drop);
    this.ctx.backend.release(inode, drop);
  }

  private forget(h: InHeader, body: RequestBody, out: ReplyTo): void {
    this.forgetOne(h.nodeid, args(body, 'FORGET', FORGET_IN_SIZE).u64('fuse_forget_in.nlookup'));
    out.none();
  }

  private batchForget(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const a = args(body, 'BATCH_FORGET');
    const count = a.u32('fuse_batch_forget_in.count');
    a.skip(4, 'fuse_batch_forget_in.dummy');
    if (BATCH_FORGET_IN_SIZE + count * FORGET_ONE_SIZE > body.length) {
      this.logs.warn('fuse.bad-request', { peer: this.peer, count, bytes: body.length }, 'fuse: BATCH_FORGET count exceeds the request');
    }
    const n = Math.min(count, Math.floor((body.length - BATCH_FORGET_IN_SIZE) / FORGET_ONE_SIZE));
    for (let i = 0; i < n; i++) this.forgetOne(a.u64('fuse_forget_one.nodeid'), a.u64('fuse_forget_one.nlookup'));
    out.none();
  }

  private getattr(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const inode = this.inode(h.nodeid);
    // Every kernel since 7.9 sends fuse_getattr_in (as virtiofsd, a shorter body is malformed).
    const a = args(body, 'GETATTR', GETATTR_IN_SIZE);
    const flags = a.u32('fuse_getattr_in.getattr_flags');
    a.skip(4, 'fuse_getattr_in.dummy');
    const st = this.attrsOf(inode, flags, a.u64('fuse_getattr_in.fh'));
    return after(st, (attrs) => {
      out.send(0, [this.attrOut(inode, attrs)]);
    });
  }

  /** STATX (7.39): like GETATTR, plus the birth time when the host has one. */
  private statx(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const inode = this.inode(h.nodeid);
    const a = args(body, 'STATX', STATX_IN_SIZE);
    const flags = a.u32('fuse_statx_in.getattr_flags');
    a.skip(4, 'fuse_statx_in.reserved');
    const fh = a.u64('fuse_statx_in.fh');
    a.u32('fuse_statx_in.sx_flags');
    a.u32('fuse_statx_in.sx_mask');
    return after(this.attrsOf(inode, flags, fh), (st) => {
      out.send(0, [
        encodeStatxOut(timeouts(this.ctx.options.cache).attr, {
          mask: STATX_BASIC_STATS | (st.btime ? STATX_BTIME : 0),
          blksize: st.blksize,
          nlink: st.nlink,
          uid: st.uid,
          gid: st.gid,
          mode: st.mode,
          ino: inode.guestIno,
          size: st.size,
          blocks: st.blocks,
          atime: st.atime,
          btime: st.btime,
          ctime: st.ctime,
          mtime: st.mtime,
          rdevMajor: major(st.rdev),
          rdevMinor: minor(st.rdev),
        }),
      ]);
    });
  }

  private setattr(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const inode = this.inode(h.nodeid);
    const a = args(body, 'SETATTR', SETATTR_IN_SIZE);
    const valid = a.u32('fuse_setattr_in.valid');
    a.skip(4, 'fuse_setattr_in.padding');
    const fh = a.u64('fuse_setattr_in.fh');
    const size = a.offset('fuse_setattr_in.size');
    a.u64('fuse_setattr_in.lock_owner');
    const atime = a.u64('fuse_setattr_in.atime');
    const mtime = a.u64('fuse_setattr_in.mtime');
    a.u64('fuse_setattr_in.ctime');
    const atimensec = a.u32('fuse_setattr_in.atimensec');
    const mtimensec = a.u32('fuse_setattr_in.mtimensec');
    a.u32('fuse_setattr_in.ctimensec');
    const mode = a.u32('fuse_setattr_in.mode');
    a.skip(4, 'fuse_setattr_in.unused4');
    const uid = a.u32('fuse_setattr_in.uid');
    const gid = a.u32('fuse_setattr_in.gid');
    a.skip(4, 'fuse_setattr_in.unused5');
    const s: SetAttr = {};
    if (valid & FATTR.MODE) s.mode = mode;
    if (valid & FATTR.UID) s.uid = uid;
    if (valid & FATTR.GID) s.gid = gid;
    if (valid & FATTR.SIZE) s.size = size;
    if (valid & FATTR.ATIME) s.atime = valid & FATTR.ATIME_NOW ? 'now' : time(atime, atimensec);
    if (valid & FATTR.MTIME) s.mtime = valid & FATTR.MTIME_NOW ? 'now' : time(mtime, mtimensec);
    if (valid & FATTR.CTIME) s.ctime = true;
    const file = valid & FATTR.FH ? this.handles.get(fh) : undefined;
    // HANDLE_KILLPRIV_V2: the kernel asks when the caller lacks CAP_FSETID.
    if (valid & FATTR.KILL_SUIDGID) s.killSuidgid = true;
    const st = this.ctx.backend.setattr(FuseSession.caller(h), inode, s, file instanceof OpenFile ? file : undefined);
    return after(st, (attrs) => {
      out.send(0, [this.attrOut(inode, attrs)]);
    });
  }

  private readlink(h: InHeader, _b: RequestBody, out: ReplyTo): Awaitable<void> {
    return after(this.ctx.backend.readlink(this.inode(h.nodeid)), (target) => {
      out.send(0, [target]);
    });
  }

  /**
   * --security-label: the context the guest's LSM chose for a new object,
   * set (through --xattrmap, as the daemon) before the entry is answered, as
   * virtiofsd does; when it cannot be set the object is removed again and
   * the request fails with that error. `made` is the creation, started
   * only once the context is known to be well formed. It is set as the
   * daemon: the guest's kernel chose it, not the (unprivileged) caller.
   */
  private labelled<T>(
    h: InHeader,
    op: string,
    parent: Inode,
    name: Buffer,
    dir: boolean,
    made: () => Awaitable<T>,
    entryOf: (t: T) => Entry,
    drop: (t: T) => void,
  ): Awaitable<T> {
    const ctx = h.secctx;
    if (ctx === undefined || !(this.wantFlags & INIT.SECURITY_CTX)) return made();
    if (ctx === null) fail(Errno.EINVAL, op, `${printable(name)}: malformed security context (fuse_secctx)`);
    const xattrName = this.hostXattrName(op, ctx.name);
    return after(made(), (t) => {
      const undo = (e: unknown): never => {
        drop(t);
        this.ctx.backend.release(entryOf(t).inode, 1);
        try {
          const gone = this.ctx.backend.unlink(FuseSession.caller(h), parent, name, dir ? AT_REMOVEDIR : 0);
          if (gone instanceof Promise) gone.catch(() => undefined);
        } catch {
          // it stays; the error below is the answer
        }
        const errno = e instanceof SysError ? e.errno : Errno.EIO;
        fail(errno, op, `${printable(name)}: setting its security context ${printable(ctx.name)}: ${errnoName(errno)}`);
      };
      let set: Awaitable<void>;
      try {
        set = this.ctx.backend.setxattr(DAEMON, entryOf(t).inode, xattrName, ctx.value, 0);
      } catch (e) {
        return undo(e);
      }
      return set instanceof Promise ? set.then(() => t, undo) : t;
    });
  }

  private symlink(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const parent = this.inode(h.nodeid);
    const a = args(body, 'SYMLINK');
    const name = a.name('name');
    const target = a.name('target');
    // No label on a symlink: duofs sets xattrs through /proc/self/fd, which
    // would reach the link's target (docs: --security-label).
    return this.entryReply(out, this.ctx.backend.symlink(FuseSession.caller(h), parent, name, target));
  }

  private mknod(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const parent = this.inode(h.nodeid);
    const a = args(body, 'MKNOD');
    const mode = a.u32('fuse_mknod_in.mode');
    const rdev = a.u32('fuse_mknod_in.rdev');
    const umask = a.u32('fuse_mknod_in.umask');
    a.skip(4, 'fuse_mknod_in.padding');
    const name = a.name('name');
    const made = this.labelled(
      h,
      'MKNOD',
      parent,
      name,
      false,
      () => this.ctx.backend.mknod(this.creator(h, umask), parent, name, mode, newDecodeDev(rdev)),
      entryItself,
      noDrop,
    );
    return this.entryReply(out, made);
  }

  private mkdir(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const parent = this.inode(h.nodeid);
    const a = args(body, 'MKDIR');
    const mode = a.u32('fuse_mkdir_in.mode');
    const umask = a.u32('fuse_mkdir_in.umask');
    const name = a.name('name');
    const made = this.labelled(
      h,
      'MKDIR',
      parent,
      name,
      true,
      () => this.ctx.backend.mkdir(this.creator(h, umask), parent, name, mode),
      entryItself,
      noDrop,
    );
    return this.entryReply(out, made);
  }

  private unlink(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const name = args(body, 'UNLINK').name('name');
    return this.done(out, this.ctx.backend.unlink(FuseSession.caller(h), this.inode(h.nodeid), name, 0));
  }

  private rmdir(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const name = args(body, 'RMDIR').name('name');
    return this.done(out, this.ctx.backend.unlink(FuseSession.caller(h), this.inode(h.nodeid), name, AT_REMOVEDIR));
  }

  private rename(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const a = args(body, 'RENAME');
    const newdirId = a.u64('fuse_rename_in.newdir');
    const oldName = a.name('oldname');
    const newName = a.name('newname');
    const newdir = this.inode(newdirId);
    return this.done(out, this.ctx.backend.rename(FuseSession.caller(h), this.inode(h.nodeid), oldName, newdir, newName, 0));
  }

  private rename2(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const a = args(body, 'RENAME2');
    const newdirId = a.u64('fuse_rename2_in.newdir');
    const flags = a.u32('fuse_rename2_in.flags');
    a.skip(4, 'fuse_rename2_in.padding');
    const oldName = a.name('oldname');
    const newName = a.name('newname');
    const newdir = this.inode(newdirId);
    return this.done(out, this.ctx.backend.rename(FuseSession.caller(h), this.inode(h.nodeid), oldName, newdir, newName, flags));
  }

  private link(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const a = args(body, 'LINK');
    const oldId = a.u64('fuse_link_in.oldnodeid');
    const name = a.name('newname');
    const target = this.inode(oldId);
    return this.entryReply(out, this.ctx.backend.link(FuseSession.caller(h), target, this.inode(h.nodeid), name));
  }

  // ---- files ------------------------------------------------------------------------

  private open(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const inode = this.inode(h.nodeid);
    const a = args(body, 'OPEN', OPEN_IN_SIZE);
    const flags = a.u32('fuse_open_in.flags');
    const openFlags = a.u32('fuse_open_in.open_flags');
    const killSuidgid = (openFlags & FUSE_OPEN_KILL_SUIDGID) !== 0;
    const opened = this.fds.open('OPEN', inode.label, () =>
      this.ctx.backend.open(FuseSession.caller(h), inode, this.writebackFlags(flags), { killSuidgid, direct: this.ctx.options.allowDirectIo }),
    );
    return after(opened, (file) => {
      const fh = this.addHandle(file);
      if (!out.send(0, [this.openOut(fh, false)])) this.dropHandle(fh);
    });
  }

  /**
   * With writeback caching the kernel may read pages of a write-only file
   * and handles O_APPEND itself, so the host fd must allow both.
   */
  private writebackFlags(flags: number): number {
    if (!(this.wantFlags & INIT.WRITEBACK_CACHE)) return flags;
    let f = flags & ~O_APPEND;
    if ((f & O_ACCMODE) === O_WRONLY) f = (f & ~O_ACCMODE) | O_RDWR;
    return f;
  }

  private create(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const parent = this.inode(h.nodeid);
    const a = args(body, 'CREATE');
    const flags = a.u32('fuse_create_in.flags');
    const mode = a.u32('fuse_create_in.mode');
    const umask = a.u32('fuse_create_in.umask');
    const killSuidgid = (a.u32('fuse_create_in.open_flags') & FUSE_OPEN_KILL_SUIDGID) !== 0;
    const name = a.name('name');
    const made = this.labelled(
      h,
      'CREATE',
      parent,
      name,
      false,
      () =>
        this.fds.openWith<Made>(
          'CREATE',
          printable(name),
          () =>
            this.ctx.backend.create(this.creator(h, umask), parent, name, this.writebackFlags(flags), mode, {
              killSuidgid,
              direct: this.ctx.options.allowDirectIo,
            }),
          (c) => c.file,
        ),
      (m) => m.entry,
      (m) => this.ctx.backend.closeFile(m.file),
    );
    return after(made, (m) => this.replyCreated(out, m));
  }

  /** CREATE and TMPFILE: the entry and the open handle in one reply, both taken back if it is not delivered. */
  private replyCreated(out: ReplyTo, { entry, file }: Made): void {
    const fh = this.addHandle(file);
    this.remember(entry.inode);
    if (!out.send(0, [this.entryOut(entry), this.openOut(fh, false)])) {
      this.dropHandle(fh);
      this.forgetOne(BigInt(entry.inode.id), 1n);
    }
  }

  private tmpfile(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const parent = this.inode(h.nodeid);
    const a = args(body, 'TMPFILE', CREATE_IN_SIZE);
    const flags = a.u32('fuse_create_in.flags');
    const mode = a.u32('fuse_create_in.mode');
    const umask = a.u32('fuse_create_in.umask');
    a.u32('fuse_create_in.open_flags');
    const made = this.fds.openWith<Made>(
      'TMPFILE',
      parent.label,
      () => this.ctx.backend.tmpfile(this.creator(h, umask), parent, this.writebackFlags(flags), mode, { direct: this.ctx.options.allowDirectIo }),
      (c) => c.file,
    );
    return after(made, (m) => this.replyCreated(out, m));
  }

  private read(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const a = args(body, 'READ', READ_IN_SIZE);
    const fh = a.u64('fuse_read_in.fh');
    const offset = a.offset('fuse_read_in.offset');
    const size = a.u32('fuse_read_in.size');
    a.u32('fuse_read_in.read_flags');
    a.u64('fuse_read_in.lock_owner');
    a.u32('fuse_read_in.flags');
    a.skip(4, 'fuse_read_in.padding');
    const file = this.file(fh, 'READ');
    if (size > this.ctx.options.maxWrite) fail(Errno.EINVAL, 'READ', `size ${size} above max ${this.ctx.options.maxWrite}`);
    out.sendRead(size, (dst, skip, max) => this.ctx.backend.read(file, offset, dst, skip, max));
  }

  private write(_h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const a = args(body, 'WRITE', WRITE_IN_SIZE);
    const fh = a.u64('fuse_write_in.fh');
    const offset = a.offset('fuse_write_in.offset');
    const size = a.u32('fuse_write_in.size');
    const writeFlags = a.u32('fuse_write_in.write_flags');
    a.u64('fuse_write_in.lock_owner');
    a.u32('fuse_write_in.flags');
    a.skip(4, 'fuse_write_in.padding');
    const file = this.file(fh, 'WRITE');
    if (size > this.ctx.options.maxWrite) fail(Errno.EINVAL, 'WRITE', `size ${size} above max_write`);
    const written = this.ctx.backend.write(file, offset, body.slices(a.offsetInBlock, size), {
      // With the writeback cache a short success would lose the rest (see WriteOptions).
      partial: !(this.wantFlags & INIT.WRITEBACK_CACHE),
      killSuidgid: (writeFlags & FUSE_WRITE_KILL_SUIDGID) !== 0,
    });
    return after(written, (done) => {
      out.send(0, [encodeWriteOut(done)]);
    });
  }

  private statfs(h: InHeader, _b: RequestBody, out: ReplyTo): Awaitable<void> {
    const s = this.ctx.backend.statfs(this.inode(h.nodeid === 0n ? BigInt(FUSE_ROOT_ID) : h.nodeid));
    return after(s, (fs) => {
      out.send(0, [statfsOut(fs)]);
    });
  }

  private release(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const a = args(body, 'RELEASE', RELEASE_IN_SIZE);
    const fh = a.u64('fuse_release_in.fh');
    a.u32('fuse_release_in.flags');
    const releaseFlags = a.u32('fuse_release_in.release_flags');
    const owner = a.u64('fuse_release_in.lock_owner');
    if (this.lostHandles.delete(fh)) return void out.send(0, []);
    const file = this.file(fh, 'RELEASE');
    if (releaseFlags & FUSE_RELEASE_FLOCK_UNLOCK) this.ctx.backend.flock(file, this.owner(owner), F_UNLCK);
    this.handles.delete(fh);
    this.ctx.backend.closeFile(file);
    out.send(0, []);
  }

  private flush(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const a = args(body, 'FLUSH', FLUSH_IN_SIZE);
    const fh = a.u64('fuse_flush_in.fh');
    a.u32('fuse_flush_in.unused');
    a.skip(4, 'fuse_flush_in.padding');
    const owner = a.u64('fuse_flush_in.lock_owner');
    const file = this.file(fh, 'FLUSH');
    this.ctx.backend.flush(file, this.owner(owner));
    out.send(0, []);
  }

  private fsync(_h: InHeader, body: RequestBody, out: ReplyTo): Promise<void> {
    const a = args(body, 'FSYNC', FSYNC_IN_SIZE);
    const fh = a.u64('fuse_fsync_in.fh');
    const datasync = a.u32('fuse_fsync_in.fsync_flags') & FUSE_FSYNC_FDATASYNC;
    a.skip(4, 'fuse_fsync_in.padding');
    const file = this.file(fh, 'FSYNC');
    return this.ctx.backend.fsync(file, datasync !== 0).then(() => {
      out.send(0, []);
    });
  }

  private async fallocate(_h: InHeader, body: RequestBody, out: ReplyTo): Promise<void> {
    const a = args(body, 'FALLOCATE', FALLOCATE_IN_SIZE);
    const fh = a.u64('fuse_fallocate_in.fh');
    const offset = a.offset('fuse_fallocate_in.offset');
    const length = a.offset('fuse_fallocate_in.length');
    const mode = a.u32('fuse_fallocate_in.mode');
    a.skip(4, 'fuse_fallocate_in.padding');
    const file = this.file(fh, 'FALLOCATE');
    await this.ctx.backend.fallocate(file, mode, Number(offset), Number(length));
    out.send(0, []);
  }

  private lseek(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const a = args(body, 'LSEEK', LSEEK_IN_SIZE);
    const fh = a.u64('fuse_lseek_in.fh');
    const offset = a.offset('fuse_lseek_in.offset');
    const whence = a.u32('fuse_lseek_in.whence');
    a.skip(4, 'fuse_lseek_in.padding');
    const file = this.file(fh, 'LSEEK');
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) fail(Errno.EINVAL, 'LSEEK', `whence ${whence} (only SEEK_DATA/SEEK_HOLE reach the server)`);
    const r = this.ctx.backend.lseek(file, Number(offset), whence);
    out.send(0, [encodeLseekOut(r)]);
  }

  private async copyFileRange(_h: InHeader, body: RequestBody, out: ReplyTo): Promise<void> {
    const a = args(body, 'COPY_FILE_RANGE', COPY_FILE_RANGE_IN_SIZE);
    const fhIn = a.u64('fuse_copy_file_range_in.fh_in');
    const offIn = a.offset('fuse_copy_file_range_in.off_in');
    a.u64('fuse_copy_file_range_in.nodeid_out'); // the handle identifies the file
    const fhOut = a.u64('fuse_copy_file_range_in.fh_out');
    const offOut = a.offset('fuse_copy_file_range_in.off_out');
    const len = a.u64('fuse_copy_file_range_in.len');
    const flags = a.u64('fuse_copy_file_range_in.flags');
    const fin = this.file(fhIn, 'COPY_FILE_RANGE');
    const fout = this.file(fhOut, 'COPY_FILE_RANGE');
    if (flags !== 0n) fail(Errno.EINVAL, 'COPY_FILE_RANGE', `flags ${flags}`);
    const n = await this.ctx.backend.copyFileRange(fin, Number(offIn), fout, Number(offOut), len);
    out.send(0, [encodeWriteOut(n)]);
  }

  private syncfs(_h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    args(body, 'SYNCFS', SYNCFS_IN_SIZE).u64('fuse_syncfs_in.padding');
    return this.done(out, this.ctx.backend.syncfs());
  }

  // ---- directories --------------------------------------------------------------------

  private opendir(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    // fuse_open_in: read for its length only; a directory stream is opened the same whatever the guest's flags.
    const a = args(body, 'OPENDIR', OPEN_IN_SIZE);
    a.u32('fuse_open_in.flags');
    a.u32('fuse_open_in.open_flags');
    const inode = this.inode(h.nodeid);
    const opened = this.fds.open('OPENDIR', inode.label, () => this.ctx.backend.opendir(FuseSession.caller(h), inode));
    return after(opened, (d) => {
      const fh = this.addHandle(d);
      if (!out.send(0, [this.openOut(fh, true)])) this.dropHandle(fh);
    });
  }

  private releasedir(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const a = args(body, 'RELEASEDIR', RELEASE_IN_SIZE);
    const fh = a.u64('fuse_release_in.fh');
    a.u32('fuse_release_in.flags');
    a.u32('fuse_release_in.release_flags');
    a.u64('fuse_release_in.lock_owner');
    if (this.lostHandles.delete(fh)) return void out.send(0, []);
    const d = this.dir(fh, 'RELEASEDIR');
    this.handles.delete(fh);
    this.ctx.backend.closeDir(d);
    out.send(0, []);
  }

  private fsyncdir(h: InHeader, body: RequestBody, out: ReplyTo): Promise<void> {
    const a = args(body, 'FSYNCDIR', FSYNC_IN_SIZE);
    const fh = a.u64('fuse_fsync_in.fh');
    a.u32('fuse_fsync_in.fsync_flags');
    a.skip(4, 'fuse_fsync_in.padding');
    const d = this.dir(fh, 'FSYNCDIR');
    // Through an fd of its own (RELEASEDIR may close the stream's while the call runs), charged to this session.
    const { backend } = this.ctx;
    const opened = this.fds.open('FSYNCDIR', d.inode.label, () => backend.open(FuseSession.caller(h), d.inode, O_RDONLY));
    return Promise.resolve(opened).then((f) =>
      backend
        .fsync(f, false)
        .then(() => {
          out.send(0, []);
        })
        .finally(() => backend.closeFile(f)),
    );
  }

  private readdir(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    return this.readdirCommon(h, body, out, false);
  }

  private readdirplus(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    return this.readdirCommon(h, body, out, true);
  }

  /**
   * The entries that fit come from the backend first; READDIRPLUS then looks
   * each one up. An entry taken from the stream but not sent (a lookup that
   * failed) comes again: the kernel resumes at the cookie of the last entry
   * it got, and the stream seeks there.
   */
  private readdirCommon(h: InHeader, body: RequestBody, out: ReplyTo, plus: boolean): Awaitable<void> {
    const op = plus ? 'READDIRPLUS' : 'READDIR';
    // The kernel sends a whole fuse_read_in; the first three fields are all this needs.
    const a = args(body, op, READ_IN_SIZE);
    const fh = a.u64('fuse_read_in.fh');
    const offset = a.u64('fuse_read_in.offset');
    const size = Math.min(a.u32('fuse_read_in.size'), this.ctx.options.maxWrite);
    a.u32('fuse_read_in.read_flags');
    a.u64('fuse_read_in.lock_owner');
    a.u32('fuse_read_in.flags');
    a.skip(4, 'fuse_read_in.padding');
    const d = this.dir(fh, op);
    const ents: GuestDirent[] = [];
    let room = size;
    const listed = this.ctx.backend.readdir(d, BigInt.asIntN(64, offset), (ent) => {
      const padded = plus ? direntplusSize(ent.name.length) : direntSize(ent.name.length);
      if (padded > room) return false;
      room -= padded;
      ents.push(ent);
      return true;
    });
    return after(listed, () => (plus ? this.replyDirentsPlus(h, out, d, ents, size) : this.replyDirents(out, ents, size)));
  }

  private replyDirents(out: ReplyTo, ents: readonly GuestDirent[], size: number): void {
    const buf = Buffer.alloc(size);
    let used = 0;
    for (const ent of ents) {
      encodeDirent(buf, used, { ino: ent.guestIno, off: ent.off, type: ent.type, name: ent.name });
      used += direntSize(ent.name.length);
    }
    out.send(0, [buf.subarray(0, used)]);
  }

  private replyDirentsPlus(h: InHeader, out: ReplyTo, d: DirStream, ents: readonly GuestDirent[], size: number): Awaitable<void> {
    const { backend } = this.ctx;
    const caller = FuseSession.caller(h);
    const buf = Buffer.alloc(size);
    let used = 0;
    const handedOut: Inode[] = [];
    const put = (ent: GuestDirent, e: Entry | undefined): void => {
      if (e) {
        this.remember(e.inode);
        handedOut.push(e.inode);
        this.entryOut(e, buf, used);
      } else {
        // No lookup reference for . and ..: node id 0 tells the kernel not to make a dentry.
        noEntryOut(dtToMode(ent.type), buf, used);
      }
      encodeDirent(buf, used + ENTRY_OUT_SIZE, { ino: e ? e.inode.guestIno : ent.guestIno, off: ent.off, type: ent.type, name: ent.name });
      used += direntplusSize(ent.name.length);
    };
    const send = (): void => {
      if (!out.send(0, [buf.subarray(0, used)])) {
        for (const inode of handedOut) this.forgetOne(BigInt(inode.id), 1n);
      }
    };
    // A name that vanished since getdents is skipped; any other failure
    // (EMFILE, EACCES...) ends the reply there, or fails it if nothing is in it yet.
    const failed = (err: unknown): 'skip' | 'stop' => {
      if (err instanceof SysError && err.errno === Errno.ENOENT) return 'skip';
      if (used === 0) throw err;
      return 'stop';
    };
    const step = (from: number): Awaitable<void> => {
      for (let i = from; i < ents.length; i++) {
        const ent = ents[i]!;
        const n = ent.name;
        if ((n.length === 1 && n[0] === 0x2e) || (n.length === 2 && n[0] === 0x2e && n[1] === 0x2e)) {
          put(ent, undefined);
          continue;
        }
        let e: Awaitable<Entry>;
        try {
          e = backend.lookup(caller, d.inode, n);
        } catch (err) {
          if (failed(err) === 'skip') continue;
          break;
        }
        if (e instanceof Promise) {
          return e.then(
            (found) => (put(ent, found), step(i + 1)),
            (err: unknown) => (failed(err) === 'skip' ? step(i + 1) : send()),
          );
        }
        put(ent, e);
      }
      return send();
    };
    return step(0);
  }

  // ---- xattrs --------------------------------------------------------------------------------

  private setxattr(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    this.xattrEnabled('SETXATTR');
    const inode = this.inode(h.nodeid);
    const ext = (this.wantFlags & INIT.SETXATTR_EXT) !== 0n;
    const fixed = ext ? SETXATTR_IN_SIZE : FUSE_COMPAT_SETXATTR_IN_SIZE;
    const a = args(body, 'SETXATTR');
    const size = a.u32('fuse_setxattr_in.size');
    const flags = a.u32('fuse_setxattr_in.flags');
    a.skip(fixed - FUSE_COMPAT_SETXATTR_IN_SIZE, ext ? 'fuse_setxattr_in.setxattr_flags' : 'fuse_setxattr_in');
    const name = a.name('name');
    if (size > a.remaining) fail(Errno.EINVAL, 'SETXATTR', `value size ${size} beyond the request`);
    return this.done(
      out,
      this.ctx.backend.setxattr(FuseSession.caller(h), inode, this.hostXattrName('SETXATTR', name), a.bytes(size, 'value'), flags),
    );
  }

  private getxattr(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    this.xattrEnabled('GETXATTR');
    const inode = this.inode(h.nodeid);
    const a = args(body, 'GETXATTR');
    const size = a.u32('fuse_getxattr_in.size');
    a.skip(4, 'fuse_getxattr_in.padding');
    const name = a.name('name');
    return after(this.ctx.backend.getxattr(FuseSession.caller(h), inode, this.hostXattrName('GETXATTR', name)), (v) => this.sizedReply(out, v, size));
  }

  private listxattr(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    this.xattrEnabled('LISTXATTR');
    const inode = this.inode(h.nodeid);
    const a = args(body, 'LISTXATTR', GETXATTR_IN_SIZE);
    const size = a.u32('fuse_getxattr_in.size');
    a.skip(4, 'fuse_getxattr_in.padding');
    return after(this.ctx.backend.listxattr(FuseSession.caller(h), inode), (listed) => {
      let names = listed;
      if (this.ctx.options.xattrMap) names = this.ctx.options.xattrMap.listToGuest(names);
      names = names.filter((n) => !this.aclBlocked(n));
      this.sizedReply(out, Buffer.concat(names.flatMap((n) => [n, Buffer.from([0])])), size);
    });
  }

  /** getxattr/listxattr: size 0 asks for the length; a too-small buffer is ERANGE. */
  private sizedReply(out: ReplyTo, value: Buffer, size: number): void {
    if (size === 0) {
      out.send(0, [encodeGetxattrOut(value.length)]);
    } else if (value.length > size) {
      out.send(Errno.ERANGE, []);
    } else {
      out.send(0, [value]);
    }
  }

  private removexattr(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    this.xattrEnabled('REMOVEXATTR');
    const name = args(body, 'REMOVEXATTR').name('name');
    return this.done(out, this.ctx.backend.removexattr(FuseSession.caller(h), this.inode(h.nodeid), this.hostXattrName('REMOVEXATTR', name)));
  }

  private access(h: InHeader, body: RequestBody, out: ReplyTo): Awaitable<void> {
    const a = args(body, 'ACCESS', ACCESS_IN_SIZE);
    const mask = a.u32('fuse_access_in.mask');
    a.skip(4, 'fuse_access_in.padding');
    // ACCESS asks whether the caller may: the host kernel answers, as the caller.
    return this.done(out, this.ctx.backend.access({ uid: h.uid, gid: h.gid, groups: [h.gid], pid: h.pid }, this.inode(h.nodeid), mask));
  }

  // ---- locks ------------------------------------------------------------------------------------

  private owner(lockOwner: bigint): string {
    return `fuse:${this.peer}:${lockOwner}`;
  }

  private lkArgs(
    body: RequestBody,
    op: string,
  ): { file: OpenFile; owner: string; start: number; len: number; type: number; flock: boolean; pid: number } {
    const a = args(body, op, LK_IN_SIZE);
    const fh = a.u64('fuse_lk_in.fh');
    const owner = this.owner(a.u64('fuse_lk_in.owner'));
    const start = a.u64('fuse_lk_in.lk.start');
    const end = a.u64('fuse_lk_in.lk.end');
    const type = a.u32('fuse_lk_in.lk.type');
    const pid = a.u32('fuse_lk_in.lk.pid');
    const lkFlags = a.u32('fuse_lk_in.lk_flags');
    a.skip(4, 'fuse_lk_in.padding');
    const file = this.file(fh, 'LK');
    this.locksEnabled((lkFlags & FUSE_LK_FLOCK) !== 0);
    if (type !== F_RDLCK && type !== F_WRLCK && type !== F_UNLCK) fail(Errno.EINVAL, 'LK', `lock type ${type}`);
    if (end < start) fail(Errno.EINVAL, 'LK', `range ${start}..${end}`);
    const toEnd = end >= OFFSET_MAX;
    const s = start > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(start);
    const len = toEnd ? 0 : Number(end - start + 1n);
    return { file, owner, start: s, len, type, flock: (lkFlags & FUSE_LK_FLOCK) !== 0, pid };
  }

  private getlk(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const l = this.lkArgs(body, 'GETLK');
    const r = this.ctx.backend.getlk(l.file, l.owner, { type: l.type, start: l.start, len: l.len });
    out.send(0, [
      encodeLkOut({
        start: BigInt(r.start),
        end: r.len === 0 ? OFFSET_MAX : BigInt(r.start + r.len - 1),
        type: r.type,
        pid: r.type === F_UNLCK ? 0 : Math.max(r.pid, 0),
      }),
    ]);
  }

  private setlk(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const l = this.lkArgs(body, 'SETLK');
    const { backend } = this.ctx;
    const ok = l.flock
      ? backend.flock(l.file, l.owner, l.type)
      : backend.setlk(l.file, l.owner, { type: l.type, start: l.start, len: l.len }, { pid: l.pid });
    out.send(ok ? 0 : Errno.EAGAIN, []);
  }

  /**
   * A blocking lock: the backend waits for it without holding up other
   * requests or clients. INTERRUPT (or the session ending) cancels it: EINTR.
   */
  private setlkw(h: InHeader, body: RequestBody, out: ReplyTo): Promise<void> {
    const l = this.lkArgs(body, 'SETLKW');
    const cancel = new AbortController();
    this.waiting.set(h.unique, cancel);
    return this.ctx.backend
      .setlkw(l.file, l.owner, { type: l.type, start: l.start, len: l.len }, { pid: l.pid, flock: l.flock, signal: cancel.signal })
      .then(() => {
        out.send(0, []);
      })
      .finally(() => {
        if (this.waiting.get(h.unique) === cancel) this.waiting.delete(h.unique);
      });
  }

  private interrupt(_h: InHeader, body: RequestBody, out: ReplyTo): void {
    const target = args(body, 'INTERRUPT', INTERRUPT_IN_SIZE).u64('fuse_interrupt_in.unique');
    this.waiting.get(target)?.abort();
    out.none();
  }

  get stats(): { lookups: number; handles: number; waitingLocks: number } {
    return { lookups: this.lookups.size, handles: this.handles.size, waitingLocks: this.waiting.size };
  }
}

function time(sec: bigint, nsec: number): TimeArg {
  if (nsec >= 1e9) fail(Errno.EINVAL, 'SETATTR', `nsec ${nsec}`);
  return { sec: Number(BigInt.asIntN(64, sec)), nsec };
}
