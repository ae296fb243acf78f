// A promise-based 9P2000.L client for tests and benchmarks.
//
// Talks over a unix socket or TCP, allocates tags, keeps any number of
// requests in flight, and offers escape hatches for hostile frames:
// `request(type, body)` sends an arbitrary message type with an arbitrary
// body and `sendRaw(buf)` / `rawRequest(buf)` put bytes on the wire as they
// are. Rlerror surfaces as a P9Error carrying the errno and its name.
import net from 'node:net';
import {
  type Attr,
  type DirEntry,
  HEADER_SIZE,
  IOHDRSZ,
  type LockArgs,
  type LockInfo,
  NOFID,
  NOTAG,
  type Name,
  type Qid,
  Reader,
  type SetattrArgs,
  type Statfs,
  T,
  Writer,
  errnoName,
  frame,
  parseAttr,
  parseDirents,
  typeName,
  GETATTR,
} from './p9-proto.js';

export class P9Error extends Error {
  readonly code: string;
  constructor(
    readonly errno: number,
    readonly op: string,
  ) {
    super(`${op}: ${errnoName(errno)} (${errno})`);
    this.name = 'P9Error';
    this.code = errnoName(errno);
  }
}
/** The connection closed while the request was outstanding. */
export class P9ClosedError extends Error {
  constructor(op: string) {
    super(`${op}: connection closed`);
    this.name = 'P9ClosedError';
  }
}
export class P9TimeoutError extends Error {
  constructor(op: string, ms: number) {
    super(`${op}: no reply within ${ms} ms`);
    this.name = 'P9TimeoutError';
  }
}
/** The request was flushed (Rflush arrived before its reply). */
export class P9FlushedError extends Error {
  constructor(op: string) {
    super(`${op}: flushed`);
    this.name = 'P9FlushedError';
  }
}
/** The server answered with a type that does not match the request. */
export class P9ProtocolError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'P9ProtocolError';
  }
}

export interface Reply {
  type: number;
  tag: number;
  body: Buffer;
  raw: Buffer;
}

export type Address = string | { path: string } | { host: string; port: number };

export interface ClientOptions {
  /** Per-request timeout; 0 disables. Default 20 s. */
  timeoutMs?: number;
}

interface Pending {
  op: string;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

function parseAddress(a: Address): net.NetConnectOpts {
  if (typeof a === 'string') {
    const m = /^(\[[^\]]+\]|[^/:]+):(\d+)$/.exec(a);
    if (m) return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
    return { path: a };
  }
  if ('path' in a) return { path: a.path };
  return { host: a.host, port: a.port };
}

export class P9Client {
  /** Negotiated msize (the client's proposal until Rversion arrives). */
  msize = 8192;
  negotiatedVersion = '';
  /** Replies whose tag matched nothing outstanding. */
  readonly strays: Reply[] = [];
  /** Protocol violations seen from the server (oversized frames, wrong reply types...). */
  readonly violations: string[] = [];
  readonly closed: Promise<void>;
  isClosed = false;
  private pending = new Map<number, Pending>();
  private nextTag = 0;
  private fidCounter = 1;
  private rx: Buffer[] = [];
  private rxLen = 0;
  private timeoutMs: number;

  private constructor(
    readonly sock: net.Socket,
    opts: ClientOptions,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 20_000;
    sock.setNoDelay?.(true);
    let resolveClosed!: () => void;
    this.closed = new Promise((r) => {
      resolveClosed = r;
    });
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => {
      /* surfaced through close */
    });
    sock.on('close', () => {
      this.isClosed = true;
      for (const [tag, p] of this.pending) {
        if (p.timer) clearTimeout(p.timer);
        p.reject(new P9ClosedError(p.op));
        this.pending.delete(tag);
      }
      resolveClosed();
    });
  }

  static connect(addr: Address, opts: ClientOptions = {}): Promise<P9Client> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(parseAddress(addr));
      const onErr = (e: Error) => reject(e);
      sock.once('error', onErr);
      sock.once('connect', () => {
        sock.off('error', onErr);
        resolve(new P9Client(sock, opts));
      });
    });
  }

  /** Connects, negotiates the version and attaches; returns the client and its root fid. */
  static async session(
    addr: Address,
    o: { msize?: number; uid?: number; aname?: string; uname?: string; timeoutMs?: number } = {},
  ): Promise<{ c: P9Client; root: number; qid: Qid }> {
    const c = await P9Client.connect(addr, o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {});
    await c.version(o.msize ?? 65536);
    const root = c.newFid();
    const qid = await c.attach(root, NOFID, o.uname ?? '', o.aname ?? '', o.uid ?? 0);
    return { c, root, qid };
  }

  /** A fid number not yet handed out by this client. */
  newFid(): number {
    return this.fidCounter++;
  }

  close(): Promise<void> {
    if (!this.isClosed) this.sock.destroy();
    return this.closed;
  }

  /** Resolves true if the server closes the connection within ms. */
  async waitClosed(ms: number): Promise<boolean> {
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((res) => {
        t = setTimeout(() => res(false), ms);
      }),
    ]);
    if (t) clearTimeout(t);
    return r;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private onData(d: Buffer): void {
    this.rx.push(d);
    this.rxLen += d.length;
    for (;;) {
      if (this.rxLen < 4) return;
      if (this.rx.length > 1) {
        this.rx = [Buffer.concat(this.rx)];
      }
      const buf = this.rx[0]!;
      const size = buf.readUInt32LE(0);
      if (size < HEADER_SIZE) {
        this.violations.push(`frame size ${size} < 7`);
        this.sock.destroy();
        return;
      }
      if (this.negotiatedVersion && size > this.msize) this.violations.push(`reply of ${size} bytes exceeds msize ${this.msize}`);
      if (this.rxLen < size) return;
      const raw = buf.subarray(0, size);
      const rest = buf.subarray(size);
      this.rx = rest.length ? [rest] : [];
      this.rxLen = rest.length;
      this.dispatch({ type: raw.readUInt8(4), tag: raw.readUInt16LE(5), body: raw.subarray(HEADER_SIZE), raw });
    }
  }

  private dispatch(r: Reply): void {
    const p = this.pending.get(r.tag);
    if (!p) {
      this.strays.push(r);
      this.violations.push(`reply ${typeName(r.type)} for unknown tag ${r.tag}`);
      return;
    }
    this.pending.delete(r.tag);
    if (p.timer) clearTimeout(p.timer);
    if (r.type === T.Rlerror) {
      let errno = -1;
      try {
        errno = new Reader(r.body).u32();
      } catch {
        /* malformed */
      }
      p.reject(new P9Error(errno, p.op));
      return;
    }
    p.resolve(r);
  }

  private allocTag(): number {
    for (let i = 0; i < 0xffff; i++) {
      const t = this.nextTag;
      this.nextTag = (this.nextTag + 1) % 0xffff; // never NOTAG
      if (!this.pending.has(t)) return t;
    }
    throw new Error('no free tag');
  }

  private register(tag: number, op: string, timeoutMs?: number): Promise<Reply> {
    if (this.isClosed) return Promise.reject(new P9ClosedError(op));
    if (this.pending.has(tag)) return Promise.reject(new Error(`tag ${tag} already in flight`));
    return new Promise<Reply>((resolve, reject) => {
      const ms = timeoutMs ?? this.timeoutMs;
      const p: Pending = { op, resolve, reject, timer: undefined };
      if (ms > 0) {
        p.timer = setTimeout(() => {
          if (this.pending.get(tag) === p) this.pending.delete(tag);
          reject(new P9TimeoutError(op, ms));
        }, ms);
      }
      this.pending.set(tag, p);
    });
  }

  /** Sends a message with any type and body; resolves with the reply, rejects with P9Error on Rlerror. */
  request(type: number, body: Uint8Array, o: { tag?: number; timeoutMs?: number } = {}): Promise<Reply> {
    const tag = o.tag ?? (type === T.version ? NOTAG : this.allocTag());
    const pr = this.register(tag, typeName(type), o.timeoutMs);
    if (!this.isClosed) this.sock.write(frame(type, tag, body));
    return pr;
  }

  /** Like request but also returns the tag used (for Tflush tests). */
  requestWithTag(type: number, body: Uint8Array, o: { timeoutMs?: number } = {}): { tag: number; reply: Promise<Reply> } {
    const tag = this.allocTag();
    return { tag, reply: this.request(type, body, { tag, ...o }) };
  }

  /** Runs `send` with the socket corked: what it sends leaves in one write (a pipelining client). */
  batch<X>(send: () => X): X {
    this.sock.cork();
    try {
      return send();
    } finally {
      this.sock.uncork();
    }
  }

  /** Writes bytes as they are. No reply is awaited. */
  sendRaw(buf: Uint8Array): void {
    if (!this.isClosed) this.sock.write(buf);
  }

  /** Writes bytes as they are and awaits the reply carrying the tag at offset 5 of buf. */
  rawRequest(buf: Buffer, o: { timeoutMs?: number } = {}): Promise<Reply> {
    if (buf.length < HEADER_SIZE) throw new Error('rawRequest needs at least a header to find the tag');
    const tag = buf.readUInt16LE(5);
    const pr = this.register(tag, `raw(${typeName(buf.readUInt8(4))})`, o.timeoutMs);
    this.sendRaw(buf);
    return pr;
  }

  /** A tag that is free right now (for hand-built frames). */
  freeTag(): number {
    return this.allocTag();
  }

  private async call(type: number, w: Writer, o: { timeoutMs?: number } = {}): Promise<Reader> {
    const r = await this.request(type, w.done(), o);
    if (r.type !== type + 1) {
      const msg = `${typeName(type)} answered with ${typeName(r.type)}`;
      this.violations.push(msg);
      throw new P9ProtocolError(msg);
    }
    return new Reader(r.body);
  }

  private static strict<X>(r: Reader, v: X): X {
    r.end();
    return v;
  }

  // ---- typed helpers, one per message ------------------------------------

  async version(msize = 65536, version = '9P2000.L'): Promise<{ msize: number; version: string }> {
    const r = await this.call(T.version, new Writer().u32(msize).str(version));
    const out = P9Client.strict(r, { msize: r.u32(), version: r.str() });
    this.msize = out.msize;
    this.negotiatedVersion = out.version;
    return out;
  }

  async auth(afid: number, uname: Name, aname: Name, nUname: number): Promise<Qid> {
    const r = await this.call(T.auth, new Writer().u32(afid).str(uname).str(aname).u32(nUname));
    return P9Client.strict(r, r.qid());
  }

  async attach(fid: number, afid = NOFID, uname: Name = '', aname: Name = '', nUname = 0): Promise<Qid> {
    const r = await this.call(T.attach, new Writer().u32(fid).u32(afid).str(uname).str(aname).u32(nUname));
    return P9Client.strict(r, r.qid());
  }

  async walk(fid: number, newfid: number, names: Name[]): Promise<Qid[]> {
    const w = new Writer().u32(fid).u32(newfid).u16(names.length);
    for (const n of names) w.str(n);
    const r = await this.call(T.walk, w);
    const n = r.u16();
    const qids: Qid[] = [];
    for (let i = 0; i < n; i++) qids.push(r.qid());
    return P9Client.strict(r, qids);
  }

  /** Walks a slash-separated path (empty = clone) and throws ENOENT-like errors on partial walks. */
  async walkPath(fid: number, newfid: number, path: string): Promise<Qid[]> {
    const names = path.split('/').filter((s) => s.length > 0);
    const qids = await this.walk(fid, newfid, names);
    if (qids.length !== names.length) throw new P9Error(2, `Twalk ${path} (partial: ${qids.length}/${names.length})`);
    return qids;
  }

  async lopen(fid: number, flags: number): Promise<{ qid: Qid; iounit: number }> {
    const r = await this.call(T.lopen, new Writer().u32(fid).u32(flags));
    return P9Client.strict(r, { qid: r.qid(), iounit: r.u32() });
  }

  async lcreate(fid: number, name: Name, flags: number, mode: number, gid: number): Promise<{ qid: Qid; iounit: number }> {
    const r = await this.call(T.lcreate, new Writer().u32(fid).str(name).u32(flags).u32(mode).u32(gid));
    return P9Client.strict(r, { qid: r.qid(), iounit: r.u32() });
  }

  async getattr(fid: number, mask: bigint = GETATTR.ALL): Promise<Attr> {
    const r = await this.call(T.getattr, new Writer().u32(fid).u64(mask));
    return P9Client.strict(r, parseAttr(r));
  }

  async setattr(fid: number, a: SetattrArgs): Promise<void> {
    const w = new Writer()
      .u32(fid)
      .u32(a.valid)
      .u32(a.mode ?? 0)
      .u32(a.uid ?? 0)
      .u32(a.gid ?? 0)
      .u64(a.size ?? 0)
      .u64(a.atimeSec ?? 0)
      .u64(a.atimeNsec ?? 0)
      .u64(a.mtimeSec ?? 0)
      .u64(a.mtimeNsec ?? 0);
    P9Client.strict(await this.call(T.setattr, w), undefined);
  }

  async readdirRaw(fid: number, offset: bigint | number, count: number): Promise<Buffer> {
    const r = await this.call(T.readdir, new Writer().u32(fid).u64(offset).u32(count));
    const n = r.u32();
    return P9Client.strict(r, Buffer.from(r.bytes(n)));
  }

  async readdir(fid: number, offset: bigint | number, count: number): Promise<DirEntry[]> {
    return parseDirents(await this.readdirRaw(fid, offset, count));
  }

  /** Reads a directory from offset start (default 0) to its end (the fid must be open). */
  async readdirAll(fid: number, count = this.msize - IOHDRSZ, start: bigint = 0n): Promise<DirEntry[]> {
    const all: DirEntry[] = [];
    let off = start;
    for (;;) {
      const ents = await this.readdir(fid, off, count);
      if (ents.length === 0) return all;
      all.push(...ents);
      off = ents[ents.length - 1]!.offset;
    }
  }

  async read(fid: number, offset: bigint | number, count: number): Promise<Buffer> {
    const r = await this.call(T.read, new Writer().u32(fid).u64(offset).u32(count));
    const n = r.u32();
    return P9Client.strict(r, Buffer.from(r.bytes(n)));
  }

  /** Reads until a 0-byte reply. */
  async readAll(fid: number, chunk = this.msize - IOHDRSZ): Promise<Buffer> {
    const parts: Buffer[] = [];
    let off = 0;
    for (;;) {
      const b = await this.read(fid, off, chunk);
      if (b.length === 0) return Buffer.concat(parts);
      parts.push(b);
      off += b.length;
    }
  }

  async write(fid: number, offset: bigint | number, data: Uint8Array): Promise<number> {
    const r = await this.call(T.write, new Writer().u32(fid).u64(offset).u32(data.length).bytes(data));
    return P9Client.strict(r, r.u32());
  }

  /** Writes all of data in msize-sized chunks. */
  async writeAll(fid: number, offset: number, data: Uint8Array): Promise<void> {
    const max = this.msize - IOHDRSZ;
    let done = 0;
    while (done < data.length) {
      const n = await this.write(fid, offset + done, data.subarray(done, done + max));
      if (n <= 0) throw new Error('short write of 0');
      done += n;
    }
  }

  async clunk(fid: number): Promise<void> {
    P9Client.strict(await this.call(T.clunk, new Writer().u32(fid)), undefined);
  }

  async remove(fid: number): Promise<void> {
    P9Client.strict(await this.call(T.remove, new Writer().u32(fid)), undefined);
  }

  async statfs(fid: number): Promise<Statfs> {
    const r = await this.call(T.statfs, new Writer().u32(fid));
    return P9Client.strict(r, {
      type: r.u32(),
      bsize: r.u32(),
      blocks: r.u64(),
      bfree: r.u64(),
      bavail: r.u64(),
      files: r.u64(),
      ffree: r.u64(),
      fsid: r.u64(),
      namelen: r.u32(),
    });
  }

  async fsync(fid: number, datasync = 0): Promise<void> {
    P9Client.strict(await this.call(T.fsync, new Writer().u32(fid).u32(datasync)), undefined);
  }

  async lock(fid: number, a: LockArgs): Promise<number> {
    const w = new Writer()
      .u32(fid)
      .u8(a.type)
      .u32(a.flags ?? 0)
      .u64(a.start ?? 0)
      .u64(a.length ?? 0)
      .u32(a.procId ?? 0)
      .str(a.clientId ?? '');
    const r = await this.call(T.lock, w);
    return P9Client.strict(r, r.u8());
  }

  async getlock(fid: number, a: LockArgs): Promise<LockInfo> {
    const w = new Writer()
      .u32(fid)
      .u8(a.type)
      .u64(a.start ?? 0)
      .u64(a.length ?? 0)
      .u32(a.procId ?? 0)
      .str(a.clientId ?? '');
    const r = await this.call(T.getlock, w);
    return P9Client.strict(r, { type: r.u8(), start: r.u64(), length: r.u64(), procId: r.u32(), clientId: r.str() });
  }

  async xattrwalk(fid: number, newfid: number, name: Name): Promise<bigint> {
    const r = await this.call(T.xattrwalk, new Writer().u32(fid).u32(newfid).str(name));
    return P9Client.strict(r, r.u64());
  }

  async xattrcreate(fid: number, name: Name, size: bigint | number, flags: number): Promise<void> {
    P9Client.strict(await this.call(T.xattrcreate, new Writer().u32(fid).str(name).u64(size).u32(flags)), undefined);
  }

  async readlink(fid: number): Promise<string> {
    return (await this.readlinkBuf(fid)).toString('utf8');
  }

  async readlinkBuf(fid: number): Promise<Buffer> {
    const r = await this.call(T.readlink, new Writer().u32(fid));
    return P9Client.strict(r, Buffer.from(r.strBuf()));
  }

  async symlink(dfid: number, name: Name, target: Name, gid: number): Promise<Qid> {
    const r = await this.call(T.symlink, new Writer().u32(dfid).str(name).str(target).u32(gid));
    return P9Client.strict(r, r.qid());
  }

  async mknod(dfid: number, name: Name, mode: number, major: number, minor: number, gid: number): Promise<Qid> {
    const r = await this.call(T.mknod, new Writer().u32(dfid).str(name).u32(mode).u32(major).u32(minor).u32(gid));
    return P9Client.strict(r, r.qid());
  }

  async link(dfid: number, fid: number, name: Name): Promise<void> {
    P9Client.strict(await this.call(T.link, new Writer().u32(dfid).u32(fid).str(name)), undefined);
  }

  async mkdir(dfid: number, name: Name, mode: number, gid: number): Promise<Qid> {
    const r = await this.call(T.mkdir, new Writer().u32(dfid).str(name).u32(mode).u32(gid));
    return P9Client.strict(r, r.qid());
  }

  async rename(fid: number, dfid: number, name: Name): Promise<void> {
    P9Client.strict(await this.call(T.rename, new Writer().u32(fid).u32(dfid).str(name)), undefined);
  }

  async renameat(olddirfid: number, oldname: Name, newdirfid: number, newname: Name): Promise<void> {
    P9Client.strict(await this.call(T.renameat, new Writer().u32(olddirfid).str(oldname).u32(newdirfid).str(newname)), undefined);
  }

  async unlinkat(dirfid: number, name: Name, flags: number): Promise<void> {
    P9Client.strict(await this.call(T.unlinkat, new Writer().u32(dirfid).str(name).u32(flags)), undefined);
  }

  /**
   * Sends Tflush for oldtag. When Rflush arrives and the old request is still
   * outstanding, that request is rejected with P9FlushedError (the server
   * promised not to answer it any more).
   */
  async flush(oldtag: number): Promise<void> {
    await this.call(T.flush, new Writer().u16(oldtag));
    const p = this.pending.get(oldtag);
    if (p) {
      this.pending.delete(oldtag);
      if (p.timer) clearTimeout(p.timer);
      p.reject(new P9FlushedError(p.op));
    }
  }
}
