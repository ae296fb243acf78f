// Stateful random testing against a model: random sequences of file
// operations, each sent through 9P or FUSE (virtio-fs) — both protocols at
// once, on one export and one backend — checked against an in-memory model
// of the expected tree after every step: the errno each operation gets, the
// bytes and names read back, and what the host holds (the tree, contents,
// link counts, modes, owners, times set by utimes, and in /proc/locks the
// host locks each file carries). fast-check generates the sequences and
// shrinks a failing one to a minimal sequence. Used by
// test/model/stateful.test.ts (bounded) and by `npm run soak`.
//
// The tree: files and directories at a..d, and x, y inside those that are
// directories (a directory moved inside another takes its children along,
// deeper than the generator names: the host check still covers them).
// Locks are whole-file and non-blocking, held on handles kept open for the
// run: one 9P owner (Tlock, which duofs also holds as a flock(2), the way
// the guest's flock() reaches it), one FUSE POSIX owner and one FUSE flock
// owner; a lock through one protocol must exclude the other's.
// A pair step starts two operations together; what they return and leave
// must be what one of the two serial orders would have.
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import os from 'node:os';
import { startDuofs, type Duofs } from '../../src/server.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { FATTR, FUSE_LK_FLOCK, FuseClient, OFFSET_MAX, ROOT } from '../fuse/client.js';
import { LOCK_TYPE, O, SETATTR } from '../p9/proto.js';
import { P9Client } from '../p9/client.js';

export type Proto = '9p' | 'fuse';
const TOP = ['a', 'b', 'c'] as const;
const SUB = ['x', 'y'] as const;
const AT_REMOVEDIR = 0x200;
const root = process.getuid?.() === 0;

/** 0: none, 1: read (shared), 2: write (exclusive). */
type LockType = 0 | 1 | 2;
interface Locks {
  p9: LockType;
  posix: LockType;
  flock: LockType;
}
interface Common {
  id: number;
  mode: number;
  uid: number;
  gid: number;
  xattrs: Map<string, Buffer>;
  /** ns since the epoch, while known (set by utimes, not yet changed by the kernel) */
  atime?: bigint;
  mtime?: bigint;
  locks: Locks;
}
interface FileNode extends Common {
  kind: 'file';
  data: Buffer;
}
interface DirNode extends Common {
  kind: 'dir';
  entries: Map<string, Node>;
}
type Node = FileNode | DirNode;
export interface Model {
  root: DirNode;
  nextId: number;
}

const noLocks = (): Locks => ({ p9: 0, posix: 0, flock: 0 });
const emptyModel = (): Model => ({
  root: { kind: 'dir', id: 0, mode: 0o755, uid: 0, gid: 0, xattrs: new Map(), locks: noLocks(), entries: new Map() },
  nextId: 1,
});

/** A deep copy that keeps hard links shared. */
function cloneModel(m: Model): Model {
  const seen = new Map<Node, Node>();
  const copy = (n: Node): Node => {
    const had = seen.get(n);
    if (had) return had;
    const base = {
      id: n.id,
      mode: n.mode,
      uid: n.uid,
      gid: n.gid,
      xattrs: new Map(n.xattrs),
      locks: { ...n.locks },
      ...(n.atime !== undefined ? { atime: n.atime } : {}),
      ...(n.mtime !== undefined ? { mtime: n.mtime } : {}),
    };
    if (n.kind === 'file') {
      const c: FileNode = { ...base, kind: 'file', data: Buffer.from(n.data) };
      seen.set(n, c);
      return c;
    }
    const c: DirNode = { ...base, kind: 'dir', entries: new Map() };
    seen.set(n, c);
    for (const [k, v] of n.entries) c.entries.set(k, copy(v));
    return c;
  };
  return { root: copy(m.root) as DirNode, nextId: m.nextId };
}

export interface Real {
  dir: string; // host path of this run's directory
  runName: string;
  p9: P9Client;
  p9dir: number;
  fuse: FuseClient;
  fuseDir: bigint;
  /** handles kept open for locks: 9P fids by qid path, FUSE file handles by node id (one lookup each) */
  p9Locks: Map<bigint, Promise<number>>;
  fuseLocks: Map<bigint, Promise<bigint>>;
}

const errCode = (e: unknown): string => {
  const c = (e as { code?: unknown }).code;
  if (typeof c === 'string' && /^E[A-Z0-9]+$/.test(c)) return c;
  throw e; // not an errno: a protocol violation or a broken connection
};

type Res = { ok: unknown } | { err: string };
async function outcome<T>(p: Promise<T>): Promise<Res> {
  try {
    return { ok: await p };
  } catch (e) {
    return { err: errCode(e) };
  }
}
const errno = (code: string): Error => Object.assign(new Error(code), { code });

// ---- one protocol's way of reaching a path ----------------------------------------------

const comps = (p: string): string[] => p.split('/');
const parentComps = (p: string): string[] => comps(p).slice(0, -1);
const leafOf = (p: string): string => comps(p).at(-1)!;

/** A fid walked to `names` from the run directory; a walk that stops short is ENOENT, as v9fs makes it. */
async function p9Walk(r: Real, names: string[]): Promise<{ fid: number; qid: bigint }> {
  const fid = r.p9.newFid();
  const qids = await r.p9.walk(r.p9dir, fid, names);
  if (qids.length !== names.length) throw errno('ENOENT');
  return { fid, qid: qids.at(-1)?.path ?? 0n };
}

async function p9At<T>(r: Real, names: string[], flags: number | null, f: (fid: number) => Promise<T>): Promise<T> {
  const { fid } = await p9Walk(r, names);
  try {
    if (flags !== null) await r.p9.lopen(fid, flags);
    return await f(fid);
  } finally {
    await r.p9.clunk(fid).catch(() => {});
  }
}

/** Looks each name up from the run directory, runs f on the last node, and forgets them all (the soak counts fds). */
async function fuseAt<T>(r: Real, names: string[], f: (node: bigint) => Promise<T>): Promise<T> {
  const looked: bigint[] = [];
  try {
    let node = r.fuseDir;
    for (const n of names) {
      node = (await r.fuse.lookup(node, n)).nodeid;
      looked.push(node);
    }
    return await f(node);
  } finally {
    for (const n of looked) await r.fuse.forget(n, 1n);
  }
}

async function fuseOpen<T>(r: Real, names: string[], flags: number, f: (node: bigint, fh: bigint) => Promise<T>): Promise<T> {
  return fuseAt(r, names, async (node) => {
    const { fh } = await r.fuse.open(node, flags);
    try {
      return await f(node, fh);
    } finally {
      await r.fuse.release(fh).catch(() => {});
    }
  });
}

export type Op =
  | { op: 'create'; path: string }
  | { op: 'mkdir'; path: string }
  | { op: 'rmdir'; path: string }
  | { op: 'write'; path: string; offset: number; data: Buffer }
  | { op: 'read'; path: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'link'; from: string; to: string }
  | { op: 'unlink'; path: string }
  | { op: 'truncate'; path: string; size: number }
  | { op: 'chmod'; path: string; mode: number }
  | { op: 'chown'; path: string; uid: number; gid: number }
  | { op: 'utimes'; path: string; atime: bigint; mtime: bigint }
  | { op: 'setxattr'; path: string; key: string; value: Buffer }
  | { op: 'getxattr'; path: string; key: string }
  | { op: 'listxattr'; path: string }
  | { op: 'removexattr'; path: string; key: string }
  | { op: 'lock'; path: string; kind: 'posix' | 'flock'; type: LockType }
  | { op: 'fsync'; path: string };

export type Step = Op & { via: Proto };

const v = (p: Promise<unknown>): Promise<void> => p.then(() => undefined);
const secs = (ns: bigint): bigint => ns / 1_000_000_000n;
const nsecs = (ns: bigint): number => Number(ns % 1_000_000_000n);
const userNames = (list: Buffer): string =>
  list
    .toString('latin1')
    .split('\0')
    .filter((n) => n.startsWith('user.'))
    .sort()
    .join(',');
const FUSE_POSIX_OWNER = 0x9999n;
const FUSE_FLOCK_OWNER = 0x7777n;

/** The gid and setgid bit a 9P client sends for a new entry, as v9fs works them out from the parent. */
async function p9CreateCreds(r: Real, dirFid: number): Promise<{ gid: number; sgid: boolean }> {
  const a = await r.p9.getattr(dirFid);
  return a.mode & 0o2000 ? { gid: a.gid, sgid: true } : { gid: 0, sgid: false };
}

async function p9Parent<T>(r: Real, p: string, f: (dirFid: number, leaf: string) => Promise<T>): Promise<T> {
  const names = parentComps(p);
  if (names.length === 0) return f(r.p9dir, leafOf(p));
  return p9At(r, names, null, (fid) => f(fid, leafOf(p)));
}

/** The handle a lock call uses: opened once per inode and kept (two calls at once share the one being opened). */
async function lockHandle<K, H>(map: Map<K, Promise<H>>, key: K, open: () => Promise<H>, spare: () => Promise<void>): Promise<H> {
  const had = map.get(key);
  if (had) {
    await spare();
    return had;
  }
  const h = open();
  map.set(key, h);
  h.catch(() => map.delete(key));
  return h;
}

async function lockReal(r: Real, s: Extract<Step, { op: 'lock' }>): Promise<void> {
  if (s.via === '9p') {
    const w = await p9Walk(r, comps(s.path));
    const fid = await lockHandle(
      r.p9Locks,
      w.qid,
      async () => {
        try {
          await r.p9.lopen(w.fid, O.RDWR);
        } catch (e) {
          await r.p9.clunk(w.fid).catch(() => {});
          throw e;
        }
        return w.fid;
      },
      () => r.p9.clunk(w.fid),
    );
    const type = s.type === 0 ? LOCK_TYPE.UNLCK : s.type === 1 ? LOCK_TYPE.RDLCK : LOCK_TYPE.WRLCK;
    const status = await r.p9.lock(fid, { type, start: 0, length: 0, procId: 1, clientId: 'model' });
    if (status === 1) throw errno('EAGAIN'); // BLOCKED
    if (status !== 0) throw new Error(`Rlock status ${status}`);
    return;
  }
  const node = await fuseAt(r, parentComps(s.path), async (dir) => (await r.fuse.lookup(dir, leafOf(s.path))).nodeid);
  const fh = await lockHandle(
    r.fuseLocks,
    node,
    async () => {
      try {
        return (await r.fuse.open(node, O.RDWR)).fh; // keeps this lookup
      } catch (e) {
        await r.fuse.forget(node, 1n);
        throw e;
      }
    },
    () => v(r.fuse.forget(node, 1n)),
  );
  const type = s.type === 0 ? 2 : s.type === 1 ? 0 : 1; // F_UNLCK, F_RDLCK, F_WRLCK
  const flock = s.kind === 'flock';
  await r.fuse.setlk(node, fh, flock ? FUSE_FLOCK_OWNER : FUSE_POSIX_OWNER, { type, start: 0n, end: OFFSET_MAX }, flock ? FUSE_LK_FLOCK : 0);
}

async function runReal(r: Real, s: Step): Promise<Res> {
  const nine = s.via === '9p';
  switch (s.op) {
    case 'create':
      return outcome(
        nine
          ? p9Parent(r, s.path, async (dir, leaf) => {
              const { gid } = await p9CreateCreds(r, dir);
              const f = r.p9.newFid();
              await r.p9.walk(dir, f, []);
              try {
                await r.p9.lcreate(f, leaf, O.RDWR | O.CREAT | O.EXCL, 0o644, gid);
              } finally {
                await r.p9.clunk(f).catch(() => {});
              }
            })
          : fuseAt(r, parentComps(s.path), async (dir) => {
              const c = await r.fuse.create(dir, leafOf(s.path), O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 });
              await r.fuse.release(c.open.fh);
              await r.fuse.forget(c.entry.nodeid, 1n);
            }),
      );
    case 'mkdir':
      return outcome(
        nine
          ? p9Parent(r, s.path, async (dir, leaf) => {
              const { gid, sgid } = await p9CreateCreds(r, dir);
              await r.p9.mkdir(dir, leaf, 0o755 | (sgid ? 0o2000 : 0), gid);
            })
          : fuseAt(r, parentComps(s.path), async (dir) => {
              const e = await r.fuse.mkdir(dir, leafOf(s.path), 0o755, { umask: 0 });
              await r.fuse.forget(e.nodeid, 1n);
            }),
      );
    case 'rmdir':
      return outcome(
        nine
          ? p9Parent(r, s.path, (dir, leaf) => r.p9.unlinkat(dir, leaf, AT_REMOVEDIR))
          : fuseAt(r, parentComps(s.path), (dir) => r.fuse.rmdir(dir, leafOf(s.path))),
      );
    case 'unlink':
      return outcome(
        nine
          ? p9Parent(r, s.path, (dir, leaf) => r.p9.unlinkat(dir, leaf, 0))
          : fuseAt(r, parentComps(s.path), (dir) => r.fuse.unlink(dir, leafOf(s.path))),
      );
    case 'write':
      return outcome(
        nine
          ? p9At(r, comps(s.path), O.RDWR, (fid) => r.p9.write(fid, s.offset, s.data))
          : fuseOpen(r, comps(s.path), O.RDWR, (_n, fh) => r.fuse.write(fh, BigInt(s.offset), s.data)),
      );
    case 'read':
      return outcome(
        nine
          ? p9At(r, comps(s.path), O.RDONLY, (fid) => r.p9.readAll(fid))
          : fuseOpen(r, comps(s.path), O.RDONLY, async (_n, fh) => {
              const parts: Buffer[] = [];
              for (let off = 0n; ; ) {
                const b = await r.fuse.read(fh, off, 65536);
                if (!b.length) break;
                parts.push(b);
                off += BigInt(b.length);
              }
              return Buffer.concat(parts);
            }),
      );
    case 'rename':
      return outcome(
        nine
          ? p9Parent(r, s.from, (fromDir, fromLeaf) => p9Parent(r, s.to, (toDir, toLeaf) => r.p9.renameat(fromDir, fromLeaf, toDir, toLeaf)))
          : fuseAt(r, parentComps(s.from), (fromDir) =>
              fuseAt(r, parentComps(s.to), (toDir) => r.fuse.rename(fromDir, leafOf(s.from), toDir, leafOf(s.to))),
            ),
      );
    case 'link':
      return outcome(
        nine
          ? p9At(r, comps(s.from), null, (fid) => p9Parent(r, s.to, (dir, leaf) => r.p9.link(dir, fid, leaf)))
          : fuseAt(r, comps(s.from), (node) =>
              fuseAt(r, parentComps(s.to), async (dir) => {
                const e = await r.fuse.link(node, dir, leafOf(s.to));
                await r.fuse.forget(e.nodeid, 1n);
              }),
            ),
      );
    case 'truncate':
      return outcome(
        nine
          ? p9At(r, comps(s.path), null, (fid) => r.p9.setattr(fid, { valid: SETATTR.SIZE, size: s.size }))
          : fuseAt(r, comps(s.path), (node) => v(r.fuse.setattr(node, { valid: FATTR.SIZE, size: BigInt(s.size) }))),
      );
    case 'chmod':
      return outcome(
        nine
          ? p9At(r, comps(s.path), null, (fid) => r.p9.setattr(fid, { valid: SETATTR.MODE, mode: s.mode }))
          : fuseAt(r, comps(s.path), async (node) => {
              const type = Number((await r.fuse.getattr(node)).attr.mode) & 0o170000;
              await r.fuse.setattr(node, { valid: FATTR.MODE, mode: type | s.mode });
            }),
      );
    case 'chown':
      return outcome(
        nine
          ? p9At(r, comps(s.path), null, (fid) => r.p9.setattr(fid, { valid: SETATTR.UID | SETATTR.GID, uid: s.uid, gid: s.gid }))
          : fuseAt(r, comps(s.path), (node) => v(r.fuse.setattr(node, { valid: FATTR.UID | FATTR.GID, uid: s.uid, gid: s.gid }))),
      );
    case 'utimes':
      return outcome(
        nine
          ? p9At(r, comps(s.path), null, (fid) =>
              r.p9.setattr(fid, {
                valid: SETATTR.ATIME | SETATTR.MTIME | SETATTR.ATIME_SET | SETATTR.MTIME_SET,
                atimeSec: secs(s.atime),
                atimeNsec: nsecs(s.atime),
                mtimeSec: secs(s.mtime),
                mtimeNsec: nsecs(s.mtime),
              }),
            )
          : fuseAt(r, comps(s.path), (node) =>
              v(
                r.fuse.setattr(node, {
                  valid: FATTR.ATIME | FATTR.MTIME,
                  atime: secs(s.atime),
                  atimensec: nsecs(s.atime),
                  mtime: secs(s.mtime),
                  mtimensec: nsecs(s.mtime),
                }),
              ),
            ),
      );
    case 'setxattr':
      return outcome(
        nine
          ? p9At(r, comps(s.path), null, async (fid) => {
              await r.p9.xattrcreate(fid, s.key, s.value.length, 0);
              if (s.value.length) await r.p9.write(fid, 0, s.value);
            })
          : fuseAt(r, comps(s.path), (node) => r.fuse.setxattr(node, s.key, s.value)),
      );
    case 'getxattr':
      return outcome(
        nine
          ? p9At(r, comps(s.path), null, async (fid) => {
              const x = r.p9.newFid();
              const size = await r.p9.xattrwalk(fid, x, s.key);
              try {
                return size ? await r.p9.read(x, 0, Number(size)) : Buffer.alloc(0);
              } finally {
                await r.p9.clunk(x).catch(() => {});
              }
            })
          : fuseAt(r, comps(s.path), async (node) => r.fuse.getxattr(node, s.key, 4096)),
      );
    case 'listxattr':
      return outcome(
        nine
          ? p9At(r, comps(s.path), null, async (fid) => {
              const x = r.p9.newFid();
              const size = await r.p9.xattrwalk(fid, x, '');
              try {
                return userNames(size ? await r.p9.read(x, 0, Number(size)) : Buffer.alloc(0));
              } finally {
                await r.p9.clunk(x).catch(() => {});
              }
            })
          : fuseAt(r, comps(s.path), async (node) => {
              const b = await r.fuse.listxattr(node, 4096);
              return userNames(typeof b === 'number' ? Buffer.alloc(0) : b);
            }),
      );
    case 'removexattr':
      // 9P2000.L has no remove: v9fs sends Txattrcreate of size 0, applied (and answered) at Tclunk.
      return outcome(
        nine
          ? (async () => {
              const { fid } = await p9Walk(r, comps(s.path));
              try {
                await r.p9.xattrcreate(fid, s.key, 0, 0);
              } catch (e) {
                await r.p9.clunk(fid).catch(() => {});
                throw e;
              }
              await r.p9.clunk(fid);
            })()
          : fuseAt(r, comps(s.path), (node) => r.fuse.removexattr(node, s.key)),
      );
    case 'lock':
      return outcome(lockReal(r, s));
    case 'fsync':
      return outcome(
        nine ? p9At(r, comps(s.path), O.RDWR, (fid) => r.p9.fsync(fid)) : fuseOpen(r, comps(s.path), O.RDWR, (_n, fh) => r.fuse.fsync(fh)),
      );
  }
}

// ---- the model ------------------------------------------------------------------------------

/** The node at `p`, or the errno reaching it gets: a 9P walk that stops short is ENOENT, a FUSE lookup under a file ENOTDIR. */
function walk(m: Model, p: string, via: Proto): Node | string {
  let cur: Node = m.root;
  for (const c of comps(p)) {
    if (cur.kind !== 'dir') return via === '9p' ? 'ENOENT' : 'ENOTDIR';
    const next: Node | undefined = cur.entries.get(c);
    if (!next) return 'ENOENT';
    cur = next;
  }
  return cur;
}

/**
 * The parent of `p`, as reaching it goes (it may be a file: both protocols
 * walk or look the parent up first, and only the call made on it finds it
 * is not a directory).
 */
function parentNode(m: Model, p: string, via: Proto): Node | string {
  const names = parentComps(p);
  return names.length ? walk(m, names.join('/'), via) : m.root;
}

/** The call on a parent that is not a directory fails with ENOTDIR. */
function asDir(n: Node, p: string): { dir: DirNode; leaf: string } | string {
  return n.kind === 'dir' ? { dir: n, leaf: leafOf(p) } : 'ENOTDIR';
}

/** The directory `p` is to be made or removed in. */
function parentOf(m: Model, p: string, via: Proto): { dir: DirNode; leaf: string } | string {
  const n = parentNode(m, p, via);
  return typeof n === 'string' ? n : asDir(n, p);
}

/** Whether `d` is `a` or lies inside it. */
function within(a: Node, d: Node): boolean {
  if (a === d) return true;
  return a.kind === 'dir' && [...a.entries.values()].some((c) => within(c, d));
}

const conflicts = (want: LockType, held: LockType): boolean => want !== 0 && held !== 0 && (want === 2 || held === 2);

function lockModel(n: FileNode, s: Extract<Step, { op: 'lock' }>): Res {
  const l = n.locks;
  if (s.via === '9p') {
    // Tlock over the whole file: a POSIX lock and, as duofs holds it, a flock(2) too.
    if (s.type !== 0 && (conflicts(s.type, l.posix) || conflicts(s.type, l.flock))) return { err: 'EAGAIN' };
    l.p9 = s.type;
    return { ok: undefined };
  }
  if (s.kind === 'posix') {
    if (conflicts(s.type, l.p9)) return { err: 'EAGAIN' };
    l.posix = s.type;
    return { ok: undefined };
  }
  if (s.type === l.flock) return { ok: undefined };
  if (conflicts(s.type, l.p9)) {
    l.flock = 0; // flock(2) converts by dropping the old lock first
    return { err: 'EAGAIN' };
  }
  l.flock = s.type;
  return { ok: undefined };
}

function newNode(m: Model, dir: DirNode, kind: 'file' | 'dir'): Node {
  // A setgid directory gives new entries its group, and new directories its setgid bit.
  const sgid = (dir.mode & 0o2000) !== 0;
  const base = { id: m.nextId++, uid: 0, gid: sgid ? dir.gid : 0, xattrs: new Map<string, Buffer>(), locks: noLocks() };
  return kind === 'file'
    ? { ...base, kind, mode: 0o644, data: Buffer.alloc(0) }
    : { ...base, kind, mode: 0o755 | (sgid ? 0o2000 : 0), entries: new Map() };
}

/** What the model says a step returns, and the model after it. */
function runModel(m: Model, s: Step): Res {
  const ok = (v?: unknown): Res => ({ ok: v });
  switch (s.op) {
    case 'create':
    case 'mkdir': {
      const p = parentOf(m, s.path, s.via);
      if (typeof p === 'string') return { err: p };
      if (p.dir.entries.has(p.leaf)) return { err: 'EEXIST' };
      p.dir.entries.set(p.leaf, newNode(m, p.dir, s.op === 'create' ? 'file' : 'dir'));
      delete p.dir.mtime;
      return ok();
    }
    case 'rmdir':
    case 'unlink': {
      const p = parentOf(m, s.path, s.via);
      if (typeof p === 'string') return { err: p };
      const n = p.dir.entries.get(p.leaf);
      if (!n) return { err: 'ENOENT' };
      if (s.op === 'rmdir' && n.kind !== 'dir') return { err: 'ENOTDIR' };
      if (s.op === 'rmdir' && n.kind === 'dir' && n.entries.size) return { err: 'ENOTEMPTY' };
      if (s.op === 'unlink' && n.kind === 'dir') return { err: 'EISDIR' };
      p.dir.entries.delete(p.leaf);
      delete p.dir.mtime;
      return ok();
    }
    case 'rename': {
      const nf = parentNode(m, s.from, s.via);
      if (typeof nf === 'string') return { err: nf };
      const nt = parentNode(m, s.to, s.via);
      if (typeof nt === 'string') return { err: nt };
      const pf = asDir(nf, s.from);
      if (typeof pf === 'string') return { err: pf };
      const pt = asDir(nt, s.to);
      if (typeof pt === 'string') return { err: pt };
      const src = pf.dir.entries.get(pf.leaf);
      if (!src) return { err: 'ENOENT' };
      const tgt = pt.dir.entries.get(pt.leaf);
      if (within(src, pt.dir)) return { err: 'EINVAL' }; // into itself
      if (tgt && within(tgt, pf.dir)) return { err: 'ENOTEMPTY' }; // over one of its own ancestors
      if (tgt === src) return ok(); // the same file (or a hard link to it): nothing happens
      if (tgt && src.kind === 'dir' && tgt.kind !== 'dir') return { err: 'ENOTDIR' };
      if (tgt && src.kind !== 'dir' && tgt.kind === 'dir') return { err: 'EISDIR' };
      if (tgt && tgt.kind === 'dir' && tgt.entries.size) return { err: 'ENOTEMPTY' };
      pf.dir.entries.delete(pf.leaf);
      pt.dir.entries.set(pt.leaf, src);
      delete pf.dir.mtime;
      delete pt.dir.mtime;
      if (src.kind === 'dir' && pf.dir !== pt.dir) delete src.mtime; // its ".." changed
      return ok();
    }
    case 'link': {
      const f = walk(m, s.from, s.via);
      if (typeof f === 'string') return { err: f };
      const p = parentOf(m, s.to, s.via);
      if (typeof p === 'string') return { err: p };
      if (p.dir.entries.has(p.leaf)) return { err: 'EEXIST' };
      if (f.kind === 'dir') return { err: 'EPERM' };
      p.dir.entries.set(p.leaf, f);
      delete p.dir.mtime;
      return ok();
    }
    default:
      break;
  }
  const n = walk(m, s.path, s.via);
  if (typeof n === 'string') return { err: n };
  switch (s.op) {
    case 'write': {
      if (n.kind === 'dir') return { err: 'EISDIR' };
      const end = s.offset + s.data.length;
      if (n.data.length < end) n.data = Buffer.concat([n.data, Buffer.alloc(end - n.data.length)]);
      s.data.copy(n.data, s.offset);
      delete n.mtime;
      return ok(s.data.length);
    }
    case 'read':
      if (n.kind === 'dir') return { err: 'EISDIR' };
      delete n.atime;
      return ok(Buffer.from(n.data));
    case 'truncate':
      if (n.kind === 'dir') return { err: 'EISDIR' };
      n.data = n.data.length >= s.size ? Buffer.from(n.data.subarray(0, s.size)) : Buffer.concat([n.data, Buffer.alloc(s.size - n.data.length)]);
      delete n.mtime;
      return ok();
    case 'chmod':
      n.mode = s.mode;
      return ok();
    case 'chown':
      n.uid = s.uid;
      n.gid = s.gid;
      // chown(2) drops setuid from a non-directory, and setgid with group-execute (without it, it marks mandatory locking).
      if (n.kind === 'file') n.mode &= ~(0o4000 | (n.mode & 0o010 ? 0o2000 : 0));
      return ok();
    case 'utimes':
      n.atime = s.atime;
      n.mtime = s.mtime;
      return ok();
    case 'setxattr':
      n.xattrs.set(s.key, s.value);
      return ok();
    case 'getxattr': {
      const x = n.xattrs.get(s.key);
      return x ? ok(x) : { err: 'ENODATA' };
    }
    case 'listxattr':
      return ok([...n.xattrs.keys()].sort().join(','));
    case 'removexattr':
      if (!n.xattrs.delete(s.key)) return { err: 'ENODATA' };
      return ok();
    case 'lock':
      if (n.kind === 'dir') return { err: 'EISDIR' }; // the handle is opened O_RDWR
      return lockModel(n, s);
    case 'fsync':
      return n.kind === 'dir' ? { err: 'EISDIR' } : ok();
  }
}

const show = (o: Res): string =>
  'err' in o ? o.err : Buffer.isBuffer(o.ok) ? `${o.ok.length} bytes ${o.ok.toString('hex').slice(0, 40)}` : `ok ${String(o.ok ?? '')}`;

// ---- the host against the model -----------------------------------------------------------

/** Host locks per inode ("dev:ino" as /proc/locks writes it): OFDLCK/FLOCK READ/WRITE entries, sorted. */
function hostLocks(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[1] === '->') continue;
    const key = f[5]!;
    const list = out.get(key) ?? [];
    list.push(`${f[1]} ${f[3]}`);
    out.set(key, list);
  }
  for (const l of out.values()) l.sort();
  return out;
}

const lockKey = (st: fs.BigIntStats): string => {
  const dev = Number(st.dev);
  const major = (dev >>> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >>> 12) & 0xfff00);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
};

function expectedLocks(l: Locks): string[] {
  const t = (x: LockType) => (x === 1 ? 'READ' : 'WRITE');
  const out: string[] = [];
  if (l.p9) out.push(`OFDLCK ${t(l.p9)}`, `FLOCK ${t(l.p9)}`);
  if (l.posix) out.push(`OFDLCK ${t(l.posix)}`);
  if (l.flock) out.push(`FLOCK ${t(l.flock)}`);
  return out.sort();
}

/** Reads a host file without touching its atime (the model checks times utimes set). */
function readQuietly(p: string): Buffer {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOATIME | fs.constants.O_NOFOLLOW);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The host tree against the model: names, types, contents, link counts, modes, owners, known times, locks. */
function checkHost(r: Real, m: Model): void {
  const refs = new Map<Node, number>();
  const count = (d: DirNode): void => {
    for (const n of d.entries.values()) {
      refs.set(n, (refs.get(n) ?? 0) + 1);
      if (n.kind === 'dir') count(n);
    }
  };
  count(m.root);
  const locks = hostLocks();
  const visit = (hostDir: string, d: DirNode, rel: string): void => {
    const names = fs.readdirSync(hostDir).sort();
    const want = [...d.entries.keys()].sort();
    if (names.join(',') !== want.join(',')) throw new Error(`host ${rel || '.'} holds [${names}], the model [${want}]`);
    for (const [name, n] of d.entries) {
      const p = path.join(hostDir, name);
      const at = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(p, { bigint: true });
      if (st.isDirectory() !== (n.kind === 'dir'))
        throw new Error(`host ${at}: ${st.isDirectory() ? 'a directory' : 'not a directory'}, the model's is ${n.kind === 'dir' ? '' : 'not '}one`);
      const mode = Number(st.mode & 0o7777n);
      if (mode !== n.mode) throw new Error(`host ${at}: mode ${mode.toString(8)}, the model ${n.mode.toString(8)}`);
      if (Number(st.uid) !== n.uid || Number(st.gid) !== n.gid) throw new Error(`host ${at}: owner ${st.uid}:${st.gid}, the model ${n.uid}:${n.gid}`);
      if (n.mtime !== undefined && st.mtimeNs !== n.mtime) throw new Error(`host ${at}: mtime ${st.mtimeNs}, the model ${n.mtime}`);
      if (n.kind === 'file') {
        if (n.atime !== undefined && st.atimeNs !== n.atime) throw new Error(`host ${at}: atime ${st.atimeNs}, the model ${n.atime}`);
        const data = readQuietly(p);
        if (!data.equals(n.data)) throw new Error(`host ${at}: ${data.length} bytes differ from the model's ${n.data.length}`);
        if (Number(st.nlink) !== refs.get(n)) throw new Error(`host ${at}: nlink ${st.nlink}, the model ${refs.get(n)}`);
        const got = (locks.get(lockKey(st)) ?? []).join(', ');
        const wantLocks = expectedLocks(n.locks).join(', ');
        if (got !== wantLocks) throw new Error(`host ${at}: locks [${got}], the model [${wantLocks}]`);
      } else {
        const subdirs = [...n.entries.values()].filter((c) => c.kind === 'dir').length;
        if (Number(st.nlink) !== 2 + subdirs) throw new Error(`host ${at}: nlink ${st.nlink}, the model ${2 + subdirs}`);
        visit(p, n, at);
      }
    }
  };
  visit(r.dir, m.root, '');
}

const describe = (s: Step): string => {
  const { via, ...rest } = s;
  return `${via} ${JSON.stringify(rest, (_k, v) => (v && v.type === 'Buffer' ? `<${v.data.length} bytes>` : typeof v === 'bigint' ? `${v}n` : v))}`;
};

class StepCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly s: Step) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    const expected = runModel(m, this.s);
    const got = await runReal(r, this.s);
    if (show(got) !== show(expected)) throw new Error(`${this.toString()}: got ${show(got)}, the model says ${show(expected)}`);
    checkHost(r, m);
  }
  toString(): string {
    return describe(this.s);
  }
}

/** Two steps started together: the results and the tree must be those of one serial order. */
class PairCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly a: Step,
    readonly b: Step,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    const orders = [
      [this.a, this.b],
      [this.b, this.a],
    ].map(([first, second]) => {
      const model = cloneModel(m);
      const r1 = runModel(model, first!);
      const r2 = runModel(model, second!);
      return { model, want: first === this.a ? [r1, r2] : [r2, r1] };
    });
    const got = await Promise.all([runReal(r, this.a), runReal(r, this.b)]);
    const why: string[] = [];
    for (const o of orders) {
      if (show(got[0]!) !== show(o.want[0]!) || show(got[1]!) !== show(o.want[1]!)) {
        why.push(`got ${show(got[0]!)} | ${show(got[1]!)}, that order ${show(o.want[0]!)} | ${show(o.want[1]!)}`);
        continue;
      }
      try {
        checkHost(r, o.model);
      } catch (e) {
        why.push((e as Error).message);
        continue;
      }
      m.root = o.model.root;
      m.nextId = o.model.nextId;
      return;
    }
    throw new Error(`${this.toString()}: matches neither serial order (a then b: ${why[0]}; b then a: ${why[1]})`);
  }
  toString(): string {
    return `together(${describe(this.a)}, ${describe(this.b)})`;
  }
}

const top = fc.constantFrom(...TOP);
const pathArb = fc.oneof(
  { weight: 3, arbitrary: top },
  { weight: 1, arbitrary: fc.tuple(top, fc.constantFrom(...SUB)).map(([a, b]) => `${a}/${b}`) },
);
const via = fc.constantFrom<Proto>('9p', 'fuse');
const data = fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((a) => Buffer.from(a));
const key = fc.constantFrom('user.k1', 'user.k2');
const TIMES = [1_000_000_000_123_456_789n, 1_234_567_890_987_654_321n, 1_500_000_000_000_000_001n];
const lockStep = fc
  .record({ via, kind: fc.constantFrom<'posix' | 'flock'>('posix', 'flock') })
  .map(({ via, kind }) => ({ via, kind: via === '9p' ? ('posix' as const) : kind })); // 9P has one lock call
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('create' as const), path: pathArb, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('mkdir' as const), path: pathArb, via }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('rmdir' as const), path: pathArb, via }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('write' as const), path: pathArb, offset: fc.nat({ max: 9000 }), data, via }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('read' as const), path: pathArb, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('rename' as const), from: pathArb, to: pathArb, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('link' as const), from: pathArb, to: pathArb, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('unlink' as const), path: pathArb, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), path: pathArb, size: fc.nat({ max: 12000 }), via }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('chmod' as const),
      path: pathArb,
      mode: fc.constantFrom(0o600, 0o644, 0o640, 0o755, 0o700, 0o4755, 0o2755, 0o2644),
      via,
    }),
  },
  ...(root
    ? [
        {
          weight: 1,
          arbitrary: fc.record({
            op: fc.constant('chown' as const),
            path: pathArb,
            uid: fc.constantFrom(0, 1000, 65534),
            gid: fc.constantFrom(0, 100, 65534),
            via,
          }),
        },
      ]
    : []),
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('utimes' as const),
      path: pathArb,
      atime: fc.constantFrom(...TIMES),
      mtime: fc.constantFrom(...TIMES),
      via,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('setxattr' as const),
      path: pathArb,
      key,
      value: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.from(a)),
      via,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('getxattr' as const), path: pathArb, key, via }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('listxattr' as const), path: pathArb, via }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('removexattr' as const), path: pathArb, key, via }) },
  {
    weight: 5,
    arbitrary: fc
      .record({ l: lockStep, path: fc.constantFrom(...TOP), type: fc.constantFrom<LockType>(0, 1, 2) })
      .map(({ l, path, type }) => ({ op: 'lock' as const, path, type, ...l })),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fsync' as const), path: pathArb, via }) },
);

/**
 * Pairs whose outcome need not be one of the two serial orders, left out:
 * a read beside a write or truncate (a buffered read may see part of a
 * write); a 9P create or mkdir beside a chmod or chown (the client reads
 * the parent's setgid and group first, as v9fs does, then creates); and a
 * call that removes or moves names beside one whose effect depends on
 * where the object it looked up sits in the tree (every call here looks up
 * first and acts second: a link of a directory looked up just before
 * another client removed it gets EPERM, which neither order gives).
 * Calls on a looked-up file's contents, attributes, xattrs and locks act on
 * the inode and stay in the pairs beside removals.
 */
function racy(a: Step, b: Step): boolean {
  const is = (s: Step, ...ops: Op['op'][]) => ops.includes(s.op);
  const one = (x: Step, y: Step) =>
    (is(x, 'read') && is(y, 'write', 'truncate')) ||
    (x.via === '9p' && is(x, 'create', 'mkdir') && is(y, 'chmod', 'chown')) ||
    (is(x, 'rmdir', 'unlink', 'rename') && is(y, 'create', 'mkdir', 'rmdir', 'unlink', 'rename', 'link'));
  return one(a, b) || one(b, a);
}

const pairArb = fc
  .tuple(stepArb, stepArb)
  .filter(([a, b]) => !racy(a, b))
  .map(([a, b]) => new PairCommand(a, b));

export const commandsArb = (maxCommands: number) =>
  fc.commands(
    // One pair step in five.
    [...Array.from({ length: 4 }, () => stepArb.map((s) => new StepCommand(s))), pairArb],
    // 'medium': sequences of about half maxCommands on average (fast-check's default size keeps them under ten).
    { maxCommands, size: 'medium' },
  );

/**
 * One server (9P and virtio-fs on one backend, in this process), a FUSE
 * guest on a test frontend and a 9P client; each run gets its own directory.
 * (Not test/fuse/fixture.ts: that one wires jest hooks, and npm run soak runs outside jest.)
 */
export class ModelServer {
  base!: string;
  dir!: string;
  duofs!: Duofs;
  fe!: VhostUserFrontend;
  fuse!: FuseClient;
  p9!: P9Client;
  p9root!: number;
  private runs = 0;

  async start(): Promise<this> {
    // Not tmpfs: user.* xattrs need a real filesystem (/tmp is ext4 here).
    this.base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-model-')));
    this.dir = path.join(this.base, 'export');
    fs.mkdirSync(this.dir);
    this.duofs = await startDuofs({
      sharedDir: this.dir,
      virtiofsSocket: path.join(this.base, 'vfs.sock'),
      ninepSocket: path.join(this.base, '9p.sock'),
      tag: 'model',
      fuse: { cache: 'never', xattr: true },
      logLevel: 'silent',
    });
    this.fe = await VhostUserFrontend.connect({ socketPath: path.join(this.base, 'vfs.sock') });
    this.fuse = new FuseClient(this.fe);
    await this.fuse.doInit();
    const s = await P9Client.session({ path: path.join(this.base, '9p.sock') }, { aname: this.dir });
    this.p9 = s.c;
    this.p9root = s.root;
    return this;
  }

  async fresh(): Promise<{ model: Model; real: Real }> {
    const runName = `run-${++this.runs}`;
    const dir = path.join(this.dir, runName);
    fs.mkdirSync(dir);
    const p9dir = this.p9.newFid();
    await this.p9.walk(this.p9root, p9dir, [runName]);
    const e = await this.fuse.lookup(ROOT, runName);
    return {
      model: emptyModel(),
      real: { dir, runName, p9: this.p9, p9dir, fuse: this.fuse, fuseDir: e.nodeid, p9Locks: new Map(), fuseLocks: new Map() },
    };
  }

  async cleanup(real: Real): Promise<void> {
    for (const fid of real.p9Locks.values()) await this.p9.clunk(await fid).catch(() => {});
    for (const [node, fh] of real.fuseLocks) {
      await this.fuse.release(await fh).catch(() => {});
      await this.fuse.forget(node, 1n);
    }
    await this.p9.clunk(real.p9dir).catch(() => {});
    await this.fuse.forget(real.fuseDir, 1n);
    fs.rmSync(real.dir, { recursive: true, force: true });
  }

  async close(): Promise<void> {
    await this.p9?.close();
    this.fe?.close();
    await this.duofs?.close();
    fs.rmSync(this.base, { recursive: true, force: true });
  }
}

/** Runs `runs` random sequences; throws (after shrinking) with the minimal failing sequence. */
export async function runStateful(srv: ModelServer, o: { runs: number; maxCommands: number; seed?: number }): Promise<void> {
  await fc.assert(
    fc.asyncProperty(commandsArb(o.maxCommands), async (cmds) => {
      const { model, real } = await srv.fresh();
      try {
        await fc.asyncModelRun(() => ({ model, real }), cmds);
      } finally {
        await srv.cleanup(real);
      }
    }),
    { numRuns: o.runs, ...(o.seed !== undefined ? { seed: o.seed } : {}) },
  );
}
