// Bounded 9P fuzzing: random and mutated frames from several connections at
// a live duofs for a few seconds, then proof that a well-formed client still
// works and that nothing outside the scratch directory changed.
//
// Reproduce a run with DUOFS_FUZZ_SEED=<seed> (printed on failure);
// DUOFS_FUZZ_MS sets the time budget (default 4000 ms).
import { expect, jest, test, beforeAll, afterAll } from '@jest/globals';
import fs from 'node:fs';
import { P9Client } from '../p9/client.js';
import { NOFID, O, QTDIR, T, Writer, frame } from '../p9/proto.js';
import { startInProcess, type Served } from '../p9/harness.js';
import { startFifoUnblocker } from '../p9/host.js';
import { makeTree, populate, snapshot, type TempTree, bigContent } from '../support/tree.js';

jest.setTimeout(120_000);

const seed = Number(process.env.DUOFS_FUZZ_SEED ?? Math.floor(Math.random() * 0xffffffff)) >>> 0;
const BUDGET_MS = Number(process.env.DUOFS_FUZZ_MS ?? 4000);
const MAX_FRAMES = 200_000;
const CONNECTIONS = 4;
const NOBODY = 65534;

/** mulberry32: small, fast, seedable. */
function prng(s: number) {
  let a = s >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <X>(xs: readonly X[]): X => xs[Math.floor(next() * xs.length)]!,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
    chance: (p: number) => next() < p,
  };
}
type Rng = ReturnType<typeof prng>;

let tree: TempTree;
let srv: Served;
let unblocker: { stop(): void };
let before: Map<string, string>;

beforeAll(async () => {
  tree = makeTree('duofs-fuzz-');
  populate(tree.dir);
  // Everything outside scratch is root-owned and not writable by others; the
  // fuzzing connections attach as nobody, so even a perfectly valid request
  // cannot change it unless the server fails to apply the caller's
  // credentials.
  fs.mkdirSync(tree.p('scratch', 'sub'));
  fs.chmodSync(tree.p('scratch', 'sub'), 0o777);
  fs.writeFileSync(tree.p('scratch', 'data'), Buffer.alloc(10_000, 0x33));
  fs.chmodSync(tree.p('scratch', 'data'), 0o666);
  before = snapshot(tree.dir, (rel) => rel === 'scratch' || rel.startsWith('scratch/'));
  srv = await startInProcess(tree.dir);
  unblocker = startFifoUnblocker(tree.p('scratch'));
});

afterAll(async () => {
  unblocker?.stop();
  await srv?.close();
  tree?.cleanup();
});

const NAMES: (string | Buffer)[] = [
  'a',
  'b',
  'data',
  'sub',
  '..',
  '.',
  '',
  'x/y',
  '/',
  'hello.txt',
  'escape',
  'scratch',
  Buffer.from('n\0ul'),
  Buffer.from([0xff, 0xfe]),
  'a'.repeat(255),
  'b'.repeat(300),
];
const U32S = [0, 1, 2, 7, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0xffff, 0x10000, 65536 - 11, 65537, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const U64S: bigint[] = [0n, 1n, 4095n, 4096n, 65536n, 2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 62n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n];

interface Conn {
  c: P9Client;
  root: number;
  scratch: number;
  sent: number;
}

async function setup(c: P9Client, r: Rng): Promise<{ root: number; scratch: number }> {
  await c.version(r.pick([4096, 8192, 65536, 1 << 20]));
  const root = 1;
  await c.attach(root, NOFID, '', tree.dir, NOBODY);
  await c.walk(root, 2, ['scratch']);
  return { root, scratch: 2 };
}

/** A well-formed request body of a random 9P2000.L type, aimed mostly at scratch. */
function genValid(r: Rng, conn: Conn): { type: number; body: Buffer } {
  const fid = () => (r.chance(0.5) ? conn.scratch : r.chance(0.5) ? 3 + r.int(12) : r.pick([conn.root, 0, NOFID, r.int(1 << 30)]));
  const newfid = () => 3 + r.int(12);
  const name = () => (r.chance(0.8) ? r.pick(NAMES) : r.bytes(r.int(20)));
  const u32 = () => (r.chance(0.5) ? r.int(4096) : r.pick(U32S));
  const u64 = () => (r.chance(0.5) ? BigInt(r.int(100_000)) : r.pick(U64S));
  const w = new Writer();
  const t = r.pick([
    T.walk,
    T.walk,
    T.lopen,
    T.lcreate,
    T.getattr,
    T.setattr,
    T.readdir,
    T.read,
    T.read,
    T.write,
    T.clunk,
    T.remove,
    T.statfs,
    T.fsync,
    T.lock,
    T.getlock,
    T.xattrwalk,
    T.xattrcreate,
    T.readlink,
    T.symlink,
    T.mknod,
    T.link,
    T.mkdir,
    T.rename,
    T.renameat,
    T.unlinkat,
    T.flush,
    T.version,
  ]);
  switch (t) {
    case T.walk: {
      w.u32(fid()).u32(newfid());
      const n = r.chance(0.9) ? r.int(4) : r.int(40);
      w.u16(n);
      for (let i = 0; i < n; i++) w.str(name());
      break;
    }
    case T.lopen:
      w.u32(fid()).u32(r.pick([O.RDONLY, O.WRONLY, O.RDWR, O.RDWR | O.TRUNC, O.RDONLY | O.DIRECTORY, u32()]));
      break;
    case T.lcreate:
      w.u32(fid())
        .str(name())
        .u32(r.pick([O.RDWR | O.CREAT, O.WRONLY | O.CREAT | O.EXCL, u32()]))
        .u32(r.pick([0o644, 0o777, u32()]))
        .u32(NOBODY);
      break;
    case T.getattr:
      w.u32(fid()).u64(r.pick([0x3fffn, 0x7ffn, u64()]));
      break;
    case T.setattr:
      w.u32(fid())
        .u32(r.int(0x200))
        .u32(u32())
        .u32(u32())
        .u32(u32())
        .u64(r.chance(0.8) ? BigInt(r.int(100_000)) : u64())
        .u64(u64())
        .u64(u64())
        .u64(u64())
        .u64(u64());
      break;
    case T.readdir:
      w.u32(fid()).u64(u64()).u32(u32());
      break;
    case T.read:
      w.u32(fid()).u64(u64()).u32(u32());
      break;
    case T.write: {
      const d = r.bytes(r.int(r.chance(0.9) ? 200 : 3000));
      w.u32(fid())
        .u64(r.chance(0.9) ? BigInt(r.int(20_000)) : u64())
        .u32(d.length)
        .bytes(d);
      break;
    }
    case T.clunk:
    case T.remove:
    case T.statfs:
    case T.readlink:
      w.u32(fid());
      break;
    case T.fsync:
      w.u32(fid()).u32(r.int(2));
      break;
    case T.lock:
      w.u32(fid()).u8(r.int(4)).u32(r.int(4)).u64(u64()).u64(u64()).u32(u32()).str(name());
      break;
    case T.getlock:
      w.u32(fid()).u8(r.int(4)).u64(u64()).u64(u64()).u32(u32()).str(name());
      break;
    case T.xattrwalk:
      w.u32(fid())
        .u32(newfid())
        .str(r.pick(['', 'user.a', 'user.b', 'trusted.x', 'security.selinux', 'system.posix_acl_access', name()]));
      break;
    case T.xattrcreate:
      w.u32(fid())
        .str(r.pick(['user.a', 'user.b', 'trusted.x', name()]))
        .u64(r.chance(0.8) ? BigInt(r.int(100)) : u64())
        .u32(r.int(4));
      break;
    case T.symlink:
      w.u32(fid()).str(name()).str(name()).u32(NOBODY);
      break;
    case T.mknod:
      w.u32(fid())
        .str(name())
        .u32(r.pick([0o100644, 0o010644, 0o140644, 0o020644, 0o060644, 0o040755, u32()]))
        .u32(r.int(300))
        .u32(r.int(300))
        .u32(NOBODY);
      break;
    case T.link:
      w.u32(fid()).u32(fid()).str(name());
      break;
    case T.mkdir:
      w.u32(fid())
        .str(name())
        .u32(r.pick([0o755, 0o777, u32()]))
        .u32(NOBODY);
      break;
    case T.rename:
      w.u32(fid()).u32(fid()).str(name());
      break;
    case T.renameat:
      w.u32(fid()).str(name()).u32(fid()).str(name());
      break;
    case T.unlinkat:
      w.u32(fid())
        .str(name())
        .u32(r.pick([0, 0x200, u32()]));
      break;
    case T.flush:
      w.u16(r.int(0x10000));
      break;
    case T.version:
      w.u32(r.pick([4096, 8192, 65536, u32()])).str(r.pick(['9P2000.L', '9P2000', 'x', '']));
      break;
  }
  return { type: t, body: w.done() };
}

/** Mutates a body in ways that keep the frame's size field truthful. */
function mutateBody(r: Rng, type: number, body: Buffer): { type: number; body: Buffer } {
  let b = Buffer.from(body);
  switch (r.int(7)) {
    case 0:
      return { type, body: b };
    case 1:
      for (let i = r.int(4) + 1; i > 0 && b.length; i--) b[r.int(b.length)] ^= 1 << r.int(8);
      break;
    case 2:
      type = r.chance(0.5) ? r.int(256) : r.pick([0, 6, 7, 9, 99, 101, 106, 112, 124, 127, 200, 255]);
      break;
    case 3:
      b = b.subarray(0, r.int(b.length + 1));
      break;
    case 4:
      b = Buffer.concat([b, r.bytes(r.int(64))]);
      break;
    case 5:
      if (b.length >= 4) {
        const at = r.int(b.length - 3);
        b.writeUInt32LE(r.pick(U32S), at);
      }
      break;
    case 6:
      b = r.bytes(r.int(100));
      break;
  }
  return { type, body: b };
}

/** Tattach/Tauth with fuzzed bytes could name uid 0: never send them from the fuzzer. */
const forbidden = (type: number) => type === T.attach || type === T.auth;

async function openConn(r: Rng): Promise<Conn> {
  const c = await P9Client.connect(srv.address, { timeoutMs: 15_000 });
  const s = await setup(c, r);
  return { c, ...s, sent: 0 };
}

/** Waits until the server has answered everything sent so far on c (a getattr ping). */
async function ping(conn: Conn): Promise<void> {
  const tag = 0xfffe;
  const raw = frame(T.statfs, tag, new Writer().u32(conn.scratch).done());
  await conn.c.rawRequest(raw, { timeoutMs: 15_000 }).catch((e: Error & { code?: string }) => {
    if (e.code === undefined) throw e; // Rlerror is an answer too; timeouts and closes are not
  });
}

test(`fuzz (seed ${seed})`, async () => {
  const r = prng(seed);
  const stats = { frames: 0, framing: 0, reconnects: 0, closedByServer: 0 };
  try {
    const conns: Conn[] = [];
    for (let i = 0; i < CONNECTIONS; i++) conns.push(await openConn(r));
    const deadline = Date.now() + BUDGET_MS;
    while (Date.now() < deadline && stats.frames < MAX_FRAMES) {
      const i = r.int(CONNECTIONS);
      let conn = conns[i]!;
      if (conn.c.isClosed || conn.sent > 400) {
        if (conn.c.isClosed) stats.closedByServer++;
        await conn.c.close();
        conn = conns[i] = await openConn(r);
        stats.reconnects++;
      }
      if (r.chance(0.03)) {
        // Framing damage on a throwaway connection: a lying size field, a
        // runt frame, a frame over msize, or a stream cut mid-frame.
        stats.framing++;
        const t = await openConn(r);
        const g = genValid(r, t);
        const f = frame(g.type, r.int(0xfff0), g.body);
        switch (r.int(5)) {
          case 0:
            f.writeUInt32LE(r.pick([0, 1, 6]), 0);
            break;
          case 1:
            f.writeUInt32LE(f.length + 1 + r.int(100), 0);
            break;
          case 2:
            f.writeUInt32LE(r.pick([0xffffffff, 0x7fffffff, t.c.msize + 1]), 0);
            break;
          case 3:
            t.c.sendRaw(f.subarray(0, r.int(f.length)));
            break;
          case 4:
            f.writeUInt32LE(Math.max(7, f.length - 1 - r.int(Math.max(1, f.length - 7))), 0);
            break;
        }
        if (!forbidden(f.readUInt8(4))) t.c.sendRaw(f);
        await new Promise((res) => setTimeout(res, r.int(5)));
        await t.c.close();
        continue;
      }
      const g = genValid(r, conn);
      const m = r.chance(0.6) ? mutateBody(r, g.type, g.body) : g;
      if (forbidden(m.type)) continue;
      conn.c.sendRaw(frame(m.type, r.int(0xfff0), m.body));
      conn.c.strays.splice(0);
      conn.c.violations.splice(0);
      conn.sent++;
      stats.frames++;
      if (m.type === T.version) {
        // A (possibly fuzzed) Tversion resets the session: start it again.
        await new Promise((res) => setTimeout(res, 2));
        await conn.c.close();
        conns[i] = await openConn(r);
        continue;
      }
      if (stats.frames % 64 === 0) await Promise.all(conns.filter((x) => !x.c.isClosed).map(ping));
    }
    for (const conn of conns) if (!conn.c.isClosed) await ping(conn);
    for (const conn of conns) await conn.c.close();

    // A well-formed client still works, as root.
    const { c, root, qid } = await P9Client.session(srv.address, { aname: tree.dir });
    expect(qid.type).toBe(QTDIR);
    const f = c.newFid();
    await c.walk(root, f, ['big.bin']);
    await c.lopen(f, O.RDONLY);
    expect((await c.readAll(f)).equals(bigContent())).toBe(true);
    const d = c.newFid();
    await c.walk(root, d, ['sub']);
    await c.lopen(d, O.RDONLY | O.DIRECTORY);
    expect((await c.readdirAll(d)).map((e) => e.name.toString()).sort()).toEqual(['.', '..', 'deeper']);
    await c.close();

    // Nothing outside scratch changed.
    const after = snapshot(tree.dir, (rel) => rel === 'scratch' || rel.startsWith('scratch/'));
    expect(Object.fromEntries(after)).toEqual(Object.fromEntries(before));
    expect(fs.readFileSync(`${tree.base}/outside/secret`, 'utf8')).toBe('outside-secret\n');
    expect(fs.readdirSync(`${tree.base}/outside`)).toEqual(['secret']);
    expect(stats.frames).toBeGreaterThan(100);
    process.stderr.write(`9p fuzz: seed ${seed}: ${JSON.stringify(stats)}\n`);
  } catch (e) {
    const err = e as Error;
    err.message = `9p fuzz failed with DUOFS_FUZZ_SEED=${seed} (${JSON.stringify(stats)}): ${err.message}`;
    throw err;
  }
});
