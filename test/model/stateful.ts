// Stateful random testing against a model: random sequences of file
// operations, each sent through 9P or FUSE (virtio-fs) — both protocols at
// once, on one export and one backend — checked against an in-memory model
// of the expected tree after every step: the errno each operation gets, the
// bytes read back, and what the host directory holds (names, contents,
// link counts, modes). fast-check generates the sequences and shrinks a
// failing one to a minimal sequence. Used by test/model/stateful.test.ts
// (bounded) and by `npm run soak`.
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import os from 'node:os';
import { startDuofs, type Duofs } from '../../src/server.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { FATTR, FuseClient, ROOT } from '../fuse/client.js';
import { O, SETATTR, type Name } from '../p9/proto.js';
import { P9Client } from '../p9/client.js';

export type Proto = '9p' | 'fuse';
const NAMES = ['a', 'b', 'c', 'd'] as const;
type FileName = (typeof NAMES)[number];

interface Inode { data: Buffer; mode: number; xattrs: Map<string, Buffer> }
export interface Model { names: Map<FileName, Inode> }

export interface Real {
  dir: string; // host path of this run's directory
  runName: string;
  p9: P9Client;
  p9dir: number;
  fuse: FuseClient;
  fuseDir: bigint;
}

const errCode = (e: unknown): string => {
  const c = (e as { code?: unknown }).code;
  if (typeof c === 'string' && /^E[A-Z0-9]+$/.test(c)) return c;
  throw e; // not an errno: a protocol violation or a broken connection
};

async function outcome<T>(p: Promise<T>): Promise<{ ok: T } | { err: string }> {
  try { return { ok: await p }; } catch (e) { return { err: errCode(e) }; }
}

// ---- one protocol's way of doing each operation -------------------------------------------

async function p9File<T>(r: Real, name: Name, flags: number | null, f: (fid: number) => Promise<T>): Promise<T> {
  const fid = r.p9.newFid();
  await r.p9.walk(r.p9dir, fid, [name]);
  try {
    if (flags !== null) await r.p9.lopen(fid, flags);
    return await f(fid);
  } finally {
    await r.p9.clunk(fid).catch(() => {});
  }
}

/** Looks `name` up, runs f, and forgets the node again as a kernel evicting it would (the soak counts fds). */
async function fuseFile<T>(r: Real, name: Name, flags: number | null, f: (node: bigint, fh: bigint) => Promise<T>): Promise<T> {
  const e = await r.fuse.lookup(r.fuseDir, name);
  try {
    if (flags === null) return await f(e.nodeid, 0n);
    const { fh } = await r.fuse.open(e.nodeid, flags);
    try {
      return await f(e.nodeid, fh);
    } finally {
      await r.fuse.release(fh).catch(() => {});
    }
  } finally {
    await r.fuse.forget(e.nodeid, 1n);
  }
}

export type Op =
  | { op: 'create'; name: FileName }
  | { op: 'write'; name: FileName; offset: number; data: Buffer }
  | { op: 'read'; name: FileName }
  | { op: 'rename'; from: FileName; to: FileName }
  | { op: 'link'; from: FileName; to: FileName }
  | { op: 'unlink'; name: FileName }
  | { op: 'truncate'; name: FileName; size: number }
  | { op: 'chmod'; name: FileName; mode: number }
  | { op: 'setxattr'; name: FileName; key: string; value: Buffer }
  | { op: 'getxattr'; name: FileName; key: string }
  | { op: 'fsync'; name: FileName };

export type Step = Op & { via: Proto };

const v = (p: Promise<unknown>): Promise<void> => p.then(() => undefined);

async function runReal(r: Real, s: Step): Promise<{ ok: unknown } | { err: string }> {
  const nine = s.via === '9p';
  switch (s.op) {
    case 'create':
      return outcome(nine
        ? (async () => { const f = r.p9.newFid(); await r.p9.walk(r.p9dir, f, []); try { await r.p9.lcreate(f, s.name, O.RDWR | O.CREAT | O.EXCL, 0o644, 0); } finally { await r.p9.clunk(f).catch(() => {}); } })()
        : (async () => { const c = await r.fuse.create(r.fuseDir, s.name, O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 }); await r.fuse.release(c.open.fh); await r.fuse.forget(c.entry.nodeid, 1n); })());
    case 'write':
      return outcome(nine
        ? p9File(r, s.name, O.RDWR, (fid) => r.p9.write(fid, s.offset, s.data))
        : fuseFile(r, s.name, O.RDWR, (_n, fh) => r.fuse.write(fh, BigInt(s.offset), s.data)));
    case 'read':
      return outcome(nine
        ? p9File(r, s.name, O.RDONLY, (fid) => r.p9.readAll(fid))
        : fuseFile(r, s.name, O.RDONLY, async (_n, fh) => {
          const parts: Buffer[] = [];
          for (let off = 0n; ;) { const b = await r.fuse.read(fh, off, 65536); if (!b.length) break; parts.push(b); off += BigInt(b.length); }
          return Buffer.concat(parts);
        }));
    case 'rename':
      return outcome(nine ? r.p9.renameat(r.p9dir, s.from, r.p9dir, s.to) : r.fuse.rename(r.fuseDir, s.from, r.fuseDir, s.to));
    case 'link':
      return outcome(nine
        ? p9File(r, s.from, null, (fid) => r.p9.link(r.p9dir, fid, s.to))
        : fuseFile(r, s.from, null, async (node) => { const e = await r.fuse.link(node, r.fuseDir, s.to); await r.fuse.forget(e.nodeid, 1n); }));
    case 'unlink':
      return outcome(nine ? r.p9.unlinkat(r.p9dir, s.name, 0) : r.fuse.unlink(r.fuseDir, s.name));
    case 'truncate':
      return outcome(nine
        ? p9File(r, s.name, null, (fid) => r.p9.setattr(fid, { valid: SETATTR.SIZE, size: s.size }))
        : fuseFile(r, s.name, null, (node) => v(r.fuse.setattr(node, { valid: FATTR.SIZE, size: BigInt(s.size) }))));
    case 'chmod':
      return outcome(nine
        ? p9File(r, s.name, null, (fid) => r.p9.setattr(fid, { valid: SETATTR.MODE, mode: s.mode }))
        : fuseFile(r, s.name, null, (node) => v(r.fuse.setattr(node, { valid: FATTR.MODE, mode: 0o100000 | s.mode }))));
    case 'setxattr':
      return outcome(nine
        ? p9File(r, s.name, null, async (fid) => { await r.p9.xattrcreate(fid, s.key, s.value.length, 0); if (s.value.length) await r.p9.write(fid, 0, s.value); })
        : fuseFile(r, s.name, null, (node) => r.fuse.setxattr(node, s.key, s.value)));
    case 'getxattr':
      return outcome(nine
        ? p9File(r, s.name, null, async (fid) => {
          const x = r.p9.newFid();
          const size = await r.p9.xattrwalk(fid, x, s.key);
          try { return size ? await r.p9.read(x, 0, Number(size)) : Buffer.alloc(0); } finally { await r.p9.clunk(x).catch(() => {}); }
        })
        : fuseFile(r, s.name, null, async (node) => r.fuse.getxattr(node, s.key, 4096)));
    case 'fsync':
      return outcome(nine
        ? p9File(r, s.name, O.RDWR, (fid) => r.p9.fsync(fid))
        : fuseFile(r, s.name, O.RDWR, (_n, fh) => r.fuse.fsync(fh)));
  }
}

/** What the model says a step returns, and the model after it. */
function runModel(m: Model, s: Step): { ok: unknown } | { err: string } {
  const get = (n: FileName) => m.names.get(n);
  switch (s.op) {
    case 'create':
      if (get(s.name)) return { err: 'EEXIST' };
      m.names.set(s.name, { data: Buffer.alloc(0), mode: 0o644, xattrs: new Map() });
      return { ok: undefined };
    case 'write': {
      const f = get(s.name);
      if (!f) return { err: 'ENOENT' };
      const end = s.offset + s.data.length;
      if (f.data.length < end) f.data = Buffer.concat([f.data, Buffer.alloc(end - f.data.length)]);
      s.data.copy(f.data, s.offset);
      return { ok: s.data.length };
    }
    case 'read': {
      const f = get(s.name);
      return f ? { ok: Buffer.from(f.data) } : { err: 'ENOENT' };
    }
    case 'rename': {
      const f = get(s.from);
      if (!f) return { err: 'ENOENT' };
      if (get(s.to) === f) return { ok: undefined }; // the same file (or a hard link to it): nothing happens
      m.names.delete(s.from);
      m.names.set(s.to, f);
      return { ok: undefined };
    }
    case 'link': {
      const f = get(s.from);
      if (!f) return { err: 'ENOENT' };
      if (get(s.to)) return { err: 'EEXIST' };
      m.names.set(s.to, f);
      return { ok: undefined };
    }
    case 'unlink':
      if (!get(s.name)) return { err: 'ENOENT' };
      m.names.delete(s.name);
      return { ok: undefined };
    case 'truncate': {
      const f = get(s.name);
      if (!f) return { err: 'ENOENT' };
      f.data = f.data.length >= s.size ? Buffer.from(f.data.subarray(0, s.size)) : Buffer.concat([f.data, Buffer.alloc(s.size - f.data.length)]);
      return { ok: undefined };
    }
    case 'chmod': {
      const f = get(s.name);
      if (!f) return { err: 'ENOENT' };
      f.mode = s.mode;
      return { ok: undefined };
    }
    case 'setxattr': {
      const f = get(s.name);
      if (!f) return { err: 'ENOENT' };
      f.xattrs.set(s.key, s.value);
      return { ok: undefined };
    }
    case 'getxattr': {
      const f = get(s.name);
      if (!f) return { err: 'ENOENT' };
      const v = f.xattrs.get(s.key);
      return v ? { ok: v } : { err: 'ENODATA' };
    }
    case 'fsync':
      return get(s.name) ? { ok: undefined } : { err: 'ENOENT' };
  }
}

const show = (o: { ok: unknown } | { err: string }): string => ('err' in o ? o.err : Buffer.isBuffer(o.ok) ? `${o.ok.length} bytes ${o.ok.toString('hex').slice(0, 40)}` : `ok ${String(o.ok ?? '')}`);

/** The host directory against the model: names, contents, link counts, permission bits. */
function checkHost(r: Real, m: Model): void {
  const names = fs.readdirSync(r.dir).sort();
  const want = [...m.names.keys()].sort();
  if (names.join(',') !== want.join(',')) throw new Error(`host holds [${names}], the model [${want}]`);
  const links = new Map<Inode, number>();
  for (const f of m.names.values()) links.set(f, (links.get(f) ?? 0) + 1);
  for (const [n, f] of m.names) {
    const p = path.join(r.dir, n);
    const st = fs.lstatSync(p);
    const data = fs.readFileSync(p);
    if (!data.equals(f.data)) throw new Error(`host ${n}: ${data.length} bytes differ from the model's ${f.data.length}`);
    if (st.nlink !== links.get(f)) throw new Error(`host ${n}: nlink ${st.nlink}, the model ${links.get(f)}`);
    if ((st.mode & 0o7777) !== f.mode) throw new Error(`host ${n}: mode ${(st.mode & 0o7777).toString(8)}, the model ${f.mode.toString(8)}`);
  }
}

class StepCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly s: Step) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const expected = runModel(m, this.s);
    const got = await runReal(r, this.s);
    if (show(got) !== show(expected)) throw new Error(`${this.toString()}: got ${show(got)}, the model says ${show(expected)}`);
    checkHost(r, m);
  }
  toString(): string {
    const { via, ...rest } = this.s;
    return `${via} ${JSON.stringify(rest, (_k, v) => (v && v.type === 'Buffer' ? `<${v.data.length} bytes>` : v))}`;
  }
}

const name = fc.constantFrom(...NAMES);
const via = fc.constantFrom<Proto>('9p', 'fuse');
const data = fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((a) => Buffer.from(a));
const key = fc.constantFrom('user.k1', 'user.k2');
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('create' as const), name, via }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('write' as const), name, offset: fc.nat({ max: 9000 }), data, via }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('read' as const), name, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('rename' as const), from: name, to: name, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('link' as const), from: name, to: name, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('unlink' as const), name, via }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), name, size: fc.nat({ max: 12000 }), via }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('chmod' as const), name, mode: fc.constantFrom(0o600, 0o644, 0o640, 0o755, 0o700), via }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('setxattr' as const), name, key, value: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.from(a)), via }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('getxattr' as const), name, key, via }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fsync' as const), name, via }) },
);

export const commandsArb = (maxCommands: number) => fc.commands([stepArb.map((s) => new StepCommand(s))], { maxCommands });

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
      sharedDir: this.dir, virtiofsSocket: path.join(this.base, 'vfs.sock'), ninepSocket: path.join(this.base, '9p.sock'),
      tag: 'model', fuse: { cache: 'never', xattr: true }, logLevel: 'silent',
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
    return { model: { names: new Map() }, real: { dir, runName, p9: this.p9, p9dir, fuse: this.fuse, fuseDir: e.nodeid } };
  }

  async cleanup(real: Real): Promise<void> {
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
