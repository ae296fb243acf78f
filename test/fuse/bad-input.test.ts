// Every byte from a guest is hostile. Malformed FUSE requests on virtio-fs
// get a FUSE error reply where FUSE can carry one (otherwise the chain comes
// back empty and the daemon says why in its log); nothing is written outside
// the guest's buffers (guard bytes around them stay intact), nothing outside
// the export is read or written, and the daemon keeps serving: each group
// ends with a fresh well-formed request, and the suite with a new connection.
import { afterEach, describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import {
  ENTRY_OUT,
  FATTR,
  IN_HEADER,
  OP,
  OUT_HEADER,
  ROOT,
  S_IFLNK,
  S_IFMT,
  cstr,
  errnoOf,
  inHeader,
  replyErrno,
  type FuseClient,
} from './client.js';
import { lstat, useFuse, type Guest } from './fixture.js';
import { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../vhost/driver.js';
import { O } from '../p9/proto.js';

const ctx = useFuse({ ninep: true, checkCrashes: false });
const GUARD = 0xa5;

/** After each test: the session still answers a well-formed request. */
afterEach(async () => {
  const r = await ctx.c.getattr(ROOT);
  expect(r.attr.mode & S_IFMT).toBe(0o040000);
});

const u32 = (...v: number[]): Buffer => {
  const b = Buffer.alloc(4 * v.length);
  v.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i));
  return b;
};
const u64 = (...v: bigint[]): Buffer => {
  const b = Buffer.alloc(8 * v.length);
  v.forEach((x, i) => b.writeBigUInt64LE(BigInt.asUintN(64, x), 8 * i));
  return b;
};

interface RawResult {
  /** length in the used ring */
  used: number;
  /** the first `used` bytes of the writable buffers */
  reply: Buffer;
  /** every guard byte before and after every writable buffer still holds its pattern */
  guardsIntact: boolean;
}

/**
 * Writes a chain by hand: readable buffers, then writable buffers each
 * surrounded by `guard` bytes of a pattern, in descriptors taken from the
 * top of the table (the driver's own requests use the bottom).
 */
async function rawChain(g: Guest, queue: number, readable: Buffer[], writable: number[], guard = 256): Promise<RawResult> {
  const q = g.fe.queue(queue);
  const ram = g.fe.ram;
  const allocs: [number, number][] = [];
  const segs: { addr: number; len: number; flags: number }[] = [];
  for (const r of readable) {
    const a = ram.alloc(Math.max(r.length, 1), 8);
    allocs.push([a, Math.max(r.length, 1)]);
    ram.write(a, r);
    segs.push({ addr: a, len: r.length, flags: 0 });
  }
  const areas: [number, number][] = [];
  for (const n of writable) {
    const size = n + 2 * guard;
    const a = ram.alloc(size, 8);
    allocs.push([a, size]);
    ram.fill(a, size, GUARD);
    areas.push([a + guard, n]);
    segs.push({ addr: a + guard, len: n, flags: VRING_DESC_F_WRITE });
  }
  const idx = segs.map((_, i) => q.size - 1 - i);
  segs.forEach((s, i) => {
    const last = i === segs.length - 1;
    q.writeDescriptor(idx[i]!, { ...s, flags: s.flags | (last ? 0 : VRING_DESC_F_NEXT), next: last ? 0 : idx[i + 1]! });
  });
  const done = q.awaitUsed(idx[0]!);
  q.publish(idx[0]!);
  let t: NodeJS.Timeout | undefined;
  const c = await Promise.race([
    done,
    new Promise<never>((_, rej) => {
      t = setTimeout(() => rej(new Error('hand-written chain never returned')), 3000);
    }),
  ]);
  clearTimeout(t);
  const parts: Buffer[] = [];
  let left = c.len;
  for (const [a, n] of areas) {
    if (left <= 0) break;
    parts.push(ram.read(a, Math.min(n, left)));
    left -= n;
  }
  let guardsIntact = true;
  for (const [a, n] of areas) {
    const before = ram.read(a - guard, guard);
    const after = ram.read(a + n, guard);
    if (!before.every((b) => b === GUARD) || !after.every((b) => b === GUARD)) guardsIntact = false;
  }
  for (const [a, n] of allocs) ram.release(a, n);
  return { used: c.len, reply: Buffer.concat(parts), guardsIntact };
}

/** A request's bytes: header (len = everything unless given) then arguments. */
function req(opcode: number, nodeid: bigint, args: Buffer[], o: { unique?: bigint; len?: number } = {}): Buffer {
  const body = Buffer.concat(args);
  return Buffer.concat([inHeader(o.len ?? IN_HEADER + body.length, opcode, o.unique ?? 0x5151n, nodeid), body]);
}

const outError = (b: Buffer): { len: number; error: number; unique: bigint } => ({
  len: b.readUInt32LE(0),
  error: b.readInt32LE(4),
  unique: b.readBigUInt64LE(8),
});

async function file(name: string, data: string | Buffer = 'data'): Promise<bigint> {
  fs.writeFileSync(ctx.fx.p(name), data);
  return (await ctx.c.lookup(ROOT, name)).nodeid;
}

describe('requests the server does not know or cannot take yet', () => {
  test('unknown and unimplemented opcodes are ENOSYS', async () => {
    const { c } = ctx;
    for (const op of [0, 7, 19, OP.BMAP, OP.IOCTL, OP.POLL, 41, OP.SETUPMAPPING, OP.REMOVEMAPPING, 53, 4096, 0xffffffff]) {
      expect(`${op}: ${await errnoOf(c.call(op, [Buffer.alloc(64)], { nodeid: ROOT }))}`).toBe(`${op}: ENOSYS`);
    }
  });

  test('a node id never looked up is ESTALE, including 0, huge ids and one only a 9P fid holds', async () => {
    const { c, fx } = ctx;
    for (const n of [0n, 999_999n, 1n << 53n, (1n << 64n) - 1n]) {
      expect(`${n}: ${await errnoOf(c.getattr(n))}`).toBe(`${n}: ESTALE`);
    }
    expect(await errnoOf(c.lookup(777_777n, 'x'))).toBe('ESTALE');
    expect(await errnoOf(c.mkdir(777_777n, 'x'))).toBe('ESTALE');
    expect(await errnoOf(c.rename(ROOT, 'x', 777_777n, 'y'))).toBe('ESTALE');
    // An inode the 9P side holds is still not this session's to use.
    fs.writeFileSync(fx.p('p9-only'), 'nine');
    const { c: p9, root } = await fx.ninep();
    const fid = p9.newFid();
    await p9.walkPath(root, fid, 'p9-only');
    const st = lstat(fx.p('p9-only'));
    const inode = fx.duofs.backend.inodes.find(st.dev, st.ino);
    expect(inode).toBeDefined();
    expect(await errnoOf(c.getattr(BigInt(inode!.id)))).toBe('ESTALE');
    expect(await errnoOf(c.open(BigInt(inode!.id), 0))).toBe('ESTALE');
  });

  test('a file handle never opened is EBADF for every handle operation', async () => {
    const { c } = ctx;
    const n = await file('fh-test');
    const bad = 31337n;
    const ops: [string, Promise<unknown>][] = [
      ['READ', c.read(bad, 0n, 10)],
      ['WRITE', c.write(bad, 0n, Buffer.from('x'))],
      ['RELEASE', c.release(bad)],
      ['FLUSH', c.flush(bad, 1n)],
      ['FSYNC', c.fsync(bad)],
      ['FSYNCDIR', c.fsyncdir(bad)],
      ['READDIR', c.readdir(bad, 0n)],
      ['READDIRPLUS', c.readdirplus(bad, 0n)],
      ['RELEASEDIR', c.releasedir(bad)],
      ['LSEEK', c.lseek(bad, 0n, 3)],
      ['FALLOCATE', c.fallocate(bad, 0n, 10n)],
      ['COPY_FILE_RANGE', c.copyFileRange(bad, 0n, n, bad, 0n, 10n)],
      ['GETLK', c.getlk(n, bad, 1n, { type: 1 })],
      ['SETLK', c.setlk(n, bad, 1n, { type: 1 })],
    ];
    for (const [name, p] of ops) expect(`${name}: ${await errnoOf(p)}`).toBe(`${name}: EBADF`);
  });
});

describe('FORGET beyond what was looked up', () => {
  test('a 9P fid survives the FUSE session forgetting the same inode 1000 times', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('shared-inode'), 'still here');
    const { c: p9, root } = await fx.ninep();
    const fid = p9.newFid();
    await p9.walkPath(root, fid, 'shared-inode');
    const e = await c.lookup(ROOT, 'shared-inode');
    for (let i = 0; i < 1000; i++) await c.forget(e.nodeid, 1n);
    await c.forget(e.nodeid, (1n << 64n) - 1n);
    await c.batchForget(Array.from({ length: 100 }, () => [e.nodeid, 1000n] as [bigint, bigint]));
    expect(await errnoOf(c.getattr(e.nodeid))).toBe('ESTALE'); // gone for FUSE...
    const st = lstat(fx.p('shared-inode'));
    expect(fx.duofs.backend.inodes.find(st.dev, st.ino)).toBeDefined(); // ...but not for 9P
    const a = await p9.getattr(fid);
    expect(a.size).toBe(10n);
    await p9.lopen(fid, O.RDONLY);
    expect((await p9.read(fid, 0, 100)).toString()).toBe('still here');
    // and FUSE can look it up again
    expect((await c.lookup(ROOT, 'shared-inode')).attr.ino).toBe(st.ino);
  });

  test('forgetting the root any number of times leaves the root usable', async () => {
    const { c } = ctx;
    await c.lookup(ROOT, '.');
    await c.forget(ROOT, 1000n);
    await c.batchForget([
      [ROOT, (1n << 64n) - 1n],
      [ROOT, 5n],
    ]);
    expect((await c.getattr(ROOT)).attr.nlink).toBeGreaterThan(1);
    expect((await c.lookup(ROOT, 'shared-inode')).attr.size).toBe(10n);
  });

  test('FORGET of a node never looked up, and a FORGET without its argument, are ignored', async () => {
    const { c, fx } = ctx;
    const base = fx.inodeCount;
    expect(await c.forget(123_456n, 1n)).toBe(0);
    expect(await c.noReply(OP.FORGET, [], { nodeid: ROOT })).toBe(0);
    expect(fx.inodeCount).toBe(base);
  });

  test('BATCH_FORGET whose count runs past the request: the entries present are applied, the rest ignored, logged', async () => {
    const { c, fx } = ctx;
    await file('bf1');
    await file('bf2');
    const base = fx.inodeCount;
    const a = await c.lookup(ROOT, 'bf1');
    const b = await c.lookup(ROOT, 'bf2');
    expect(fx.inodeCount).toBe(base); // file() looked them up already
    await c.forget(a.nodeid, 1n);
    await c.forget(b.nodeid, 1n);
    expect(
      await c.batchForget(
        [
          [a.nodeid, 1n],
          [b.nodeid, 1n],
        ],
        { count: 1000 },
      ),
    ).toBe(0);
    expect(await c.batchForget([], { count: 0xffffffff })).toBe(0);
    expect(fx.inodeCount).toBe(base - 2);
    expect(fx.warnings().some((l) => /BATCH_FORGET count exceeds/.test(l.msg))).toBe(true);
  });
});

describe('lengths that lie', () => {
  test('header len larger than the chain is EINVAL; the request is not executed', async () => {
    const { g, fx } = ctx;
    const r = await rawChain(g, 1, [req(OP.MKDIR, ROOT, [u32(0o755, 0), cstr('lie-long')], { len: 4096 })], [OUT_HEADER, ENTRY_OUT]);
    expect(outError(r.reply)).toEqual({ len: 16, error: -22, unique: 0x5151n });
    expect(r.used).toBe(16);
    expect(fs.existsSync(fx.p('lie-long'))).toBe(false);
    const huge = await rawChain(g, 1, [req(OP.GETATTR, ROOT, [Buffer.alloc(16)], { len: 0xffffffff })], [OUT_HEADER, 200]);
    expect(outError(huge.reply).error).toBe(-22);
  });

  test('header len smaller than the chain (or zero) still gets exactly one well-formed reply', async () => {
    const { g } = ctx;
    for (const len of [0, 8, IN_HEADER, IN_HEADER + 4]) {
      const r = await rawChain(g, 1, [req(OP.GETATTR, ROOT, [Buffer.alloc(16)], { len, unique: 0x77n })], [OUT_HEADER, 200]);
      const h = outError(r.reply);
      expect(h.unique).toBe(0x77n);
      expect(h.len).toBe(r.used);
      expect(r.guardsIntact).toBe(true);
    }
  });

  test('a chain shorter than a FUSE header gets EINVAL (unique unknown: 0) and a log line', async () => {
    const { g, fx } = ctx;
    const r = await rawChain(g, 1, [Buffer.alloc(20, 1)], [OUT_HEADER]);
    expect(outError(r.reply)).toEqual({ len: 16, error: -22, unique: 0n });
    const empty = await rawChain(g, 1, [], [OUT_HEADER]);
    expect(outError(empty.reply).error).toBe(-22);
    expect(fx.warnings().some((l) => /shorter than a FUSE header/.test(l.msg))).toBe(true);
  });

  test("arguments shorter than the opcode's struct are EINVAL", async () => {
    const { c } = ctx;
    const n = await file('short-args');
    const cases: [string, number, bigint, Buffer][] = [
      ['SETATTR', OP.SETATTR, n, Buffer.alloc(10)],
      ['READ', OP.READ, 0n, Buffer.alloc(8)],
      ['WRITE', OP.WRITE, 0n, Buffer.alloc(12)],
      ['OPEN', OP.OPEN, n, Buffer.alloc(3)],
      ['LK', OP.SETLK, n, Buffer.alloc(20)],
      ['COPY_FILE_RANGE', OP.COPY_FILE_RANGE, 0n, Buffer.alloc(40)],
      ['RENAME2', OP.RENAME2, ROOT, Buffer.alloc(6)],
      ['LINK', OP.LINK, ROOT, Buffer.alloc(4)],
      ['RENAME', OP.RENAME, ROOT, Buffer.alloc(7)],
      ['MKNOD', OP.MKNOD, ROOT, Buffer.alloc(5)],
      ['MKDIR', OP.MKDIR, ROOT, Buffer.alloc(3)],
      ['CREATE', OP.CREATE, ROOT, Buffer.alloc(9)],
      ['TMPFILE', OP.TMPFILE, ROOT, Buffer.alloc(5)],
      ['SETXATTR', OP.SETXATTR, n, Buffer.alloc(5)],
      ['GETXATTR', OP.GETXATTR, n, Buffer.alloc(3)],
      ['LISTXATTR', OP.LISTXATTR, n, Buffer.alloc(3)],
      ['ACCESS', OP.ACCESS, n, Buffer.alloc(2)],
      ['LSEEK', OP.LSEEK, 0n, Buffer.alloc(7)],
      ['FALLOCATE', OP.FALLOCATE, 0n, Buffer.alloc(7)],
      ['RELEASE', OP.RELEASE, 0n, Buffer.alloc(7)],
      ['FLUSH', OP.FLUSH, 0n, Buffer.alloc(7)],
      ['FSYNC', OP.FSYNC, 0n, Buffer.alloc(7)],
      ['READDIR', OP.READDIR, 0n, Buffer.alloc(7)],
      ['STATX', OP.STATX, n, Buffer.alloc(4)],
      ['INIT', OP.INIT, 0n, Buffer.alloc(0)],
    ];
    const got: Record<string, string> = {};
    for (const [name, op, nodeid, args] of cases) got[name] = await errnoOf(c.call(op, [args], { nodeid }));
    expect(got).toEqual(Object.fromEntries(cases.map(([name]) => [name, 'EINVAL'])));
  });

  test('READ or WRITE above max_write (1 MiB) is EINVAL; WRITE claiming more than it carries is EINVAL', async () => {
    const { c, fx } = ctx;
    const n = await file('huge-io', 'abc');
    const o = await c.open(n, 2);
    expect(await errnoOf(c.read(o.fh, 0n, (1 << 20) + 1, { in: [OUT_HEADER, 4096] }))).toBe('EINVAL');
    expect(await errnoOf(c.read(o.fh, 0n, 0xffffffff, { in: [OUT_HEADER, 4096] }))).toBe('EINVAL');
    expect(await errnoOf(c.write(o.fh, 0n, Buffer.alloc((1 << 20) + 4096, 1), { split: [IN_HEADER + 40, 1 << 19, 1 << 19, 4096] }))).toBe('EINVAL');
    expect(await errnoOf(c.write(o.fh, 0n, Buffer.from('tiny'), { size: 100_000 }))).toBe('EINVAL');
    expect(await errnoOf(c.write(o.fh, 0n, Buffer.from('tiny'), { size: 0xffffffff }))).toBe('EINVAL');
    expect(fs.readFileSync(fx.p('huge-io'), 'utf8')).toBe('abc');
    await c.release(o.fh);
  });

  test('a non-WRITE request far larger than any argument is EINVAL, not a huge copy', async () => {
    const { c } = ctx;
    const big = Buffer.alloc(512 * 1024, 0x61);
    expect(await errnoOf(c.call(OP.LOOKUP, [big], { nodeid: ROOT, split: [IN_HEADER, 1 << 18, 1 << 18] }))).toBe('EINVAL');
  });
});

describe('buffers too short for the reply', () => {
  test('an entry reply that does not fit is EOVERFLOW in the header; guard bytes stay intact', async () => {
    const { g, fx } = ctx;
    fs.writeFileSync(fx.p('fits-not'), 'x'); // never looked up: no inode in the table yet
    const base = fx.inodeCount;
    const r = await rawChain(g, 1, [req(OP.LOOKUP, ROOT, [cstr('fits-not')])], [OUT_HEADER, 50]);
    expect(r.guardsIntact).toBe(true);
    expect(outError(r.reply)).toMatchObject({ len: 16, error: -75 });
    expect(r.used).toBe(16);
    // The failed reply handed no reference to the guest.
    expect(fx.inodeCount).toBe(base);
    const split = await rawChain(g, 1, [req(OP.GETATTR, ROOT, [Buffer.alloc(16)])], [7, 9, 40, 40]); // 96 < 104
    expect(split.guardsIntact).toBe(true);
    expect(outError(split.reply).error).toBe(-75);
  });

  test('a CREATE whose reply does not fit leaves no handle or reference behind', async () => {
    const { g, c, fx } = ctx;
    const base = fx.inodeCount;
    const r = await rawChain(g, 1, [req(OP.CREATE, ROOT, [u32(0o102, 0o644, 0, 0), cstr('created-small')])], [OUT_HEADER, 100]);
    expect(r.guardsIntact).toBe(true);
    expect(outError(r.reply).error).toBe(-75);
    expect(fx.inodeCount).toBe(base);
    await c.unlink(ROOT, 'created-small');
  });

  test('a READDIRPLUS reply that does not fit hands out no references', async () => {
    const { g, c, fx } = ctx;
    fs.mkdirSync(fx.p('rdp-small'));
    for (let i = 0; i < 20; i++) fs.writeFileSync(fx.p('rdp-small', `e${i}`), '');
    const d = await c.lookup(ROOT, 'rdp-small');
    const h = await c.opendir(d.nodeid);
    const base = fx.inodeCount;
    const r = await rawChain(
      g,
      1,
      [req(OP.READDIRPLUS, d.nodeid, [Buffer.concat([u64(h.fh, 0n), u32(4096, 0), u64(0n), u32(0, 0)])])],
      [OUT_HEADER, 300],
    );
    expect(r.guardsIntact).toBe(true);
    expect(outError(r.reply).error).toBe(-75);
    expect(fx.inodeCount).toBe(base); // 20 entries were looked up for a reply the guest never got
    await c.releasedir(h.fh);
  });

  test('no room even for the out header: the chain comes back empty, with a log line; guards intact', async () => {
    const { g, fx } = ctx;
    const r = await rawChain(g, 1, [req(OP.GETATTR, ROOT, [Buffer.alloc(16)])], [8]);
    expect(r.used).toBe(0);
    expect(r.guardsIntact).toBe(true);
    const none = await rawChain(g, 1, [req(OP.GETATTR, ROOT, [Buffer.alloc(16)])], []);
    expect(none.used).toBe(0);
    expect(fx.warnings().some((l) => /no room for a reply header/.test(l.msg))).toBe(true);
  });

  test('READ into buffers smaller than asked: never past them (guards intact), data correct', async () => {
    const { g, c } = ctx;
    const data = Buffer.alloc(100_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const n = await file('read-small', data);
    const o = await c.open(n, 0);
    const readIn = Buffer.concat([u64(o.fh, 0n), u32(65536, 0), u64(0n), u32(0, 0)]);
    const r = await rawChain(g, 1, [req(OP.READ, 0n, [readIn])], [OUT_HEADER + 3, 100, 1]);
    expect(r.guardsIntact).toBe(true);
    expect(outError(r.reply)).toMatchObject({ error: 0, len: r.used });
    expect(r.used).toBe(OUT_HEADER + 104);
    expect(r.reply.subarray(OUT_HEADER).equals(data.subarray(0, 104))).toBe(true);
    // Only the header fits: an empty read, not an overflow.
    const h = await rawChain(g, 1, [req(OP.READ, 0n, [readIn])], [OUT_HEADER]);
    expect(h.guardsIntact).toBe(true);
    expect(h.used).toBe(OUT_HEADER);
    await c.release(o.fh);
  });

  test('READDIR, READDIRPLUS, GETXATTR, LISTXATTR and READLINK asking more than the buffers hold: guards intact', async () => {
    const { g, c, fx } = ctx;
    fs.mkdirSync(fx.p('rd-small'));
    for (let i = 0; i < 50; i++) fs.writeFileSync(fx.p('rd-small', `entry-${i}`), '');
    const d = await c.lookup(ROOT, 'rd-small');
    const h = await c.opendir(d.nodeid);
    const n = await file('xa-small');
    await c.setxattr(n, 'user.long', Buffer.alloc(3000, 0x41));
    const ln = await c.symlink(ROOT, 'long-link', 'T'.repeat(1000));
    const reqs: [string, Buffer][] = [
      ['READDIR', req(OP.READDIR, d.nodeid, [Buffer.concat([u64(h.fh, 0n), u32(4096, 0), u64(0n), u32(0, 0)])])],
      ['READDIRPLUS', req(OP.READDIRPLUS, d.nodeid, [Buffer.concat([u64(h.fh, 0n), u32(4096, 0), u64(0n), u32(0, 0)])])],
      ['GETXATTR', req(OP.GETXATTR, n, [u32(4096, 0), cstr('user.long')])],
      ['LISTXATTR', req(OP.LISTXATTR, n, [u32(4096, 0)])],
      ['READLINK', req(OP.READLINK, ln.nodeid, [])],
    ];
    for (const [name, bytes] of reqs) {
      const r = await rawChain(g, 1, [bytes], [OUT_HEADER, 200]);
      expect(`${name}: guards ${r.guardsIntact}`).toBe(`${name}: guards true`);
      const e = outError(r.reply);
      expect(e.len).toBe(r.used);
      if (e.error === 0) expect(r.used).toBeLessThanOrEqual(OUT_HEADER + 200);
      else expect(`${name}: ${e.error}`).toBe(`${name}: -75`);
    }
    await c.releasedir(h.fh);
  });
});

describe('names', () => {
  test('names without a terminating NUL are EINVAL and create nothing', async () => {
    const { c, fx } = ctx;
    const before = fs.readdirSync(fx.dir).sort();
    const cases: [string, number, Buffer[]][] = [
      ['LOOKUP', OP.LOOKUP, [Buffer.from('hello.txt')]],
      ['MKDIR', OP.MKDIR, [u32(0o755, 0), Buffer.from('nonul-dir')]],
      ['MKNOD', OP.MKNOD, [u32(0o100644, 0, 0, 0), Buffer.from('nonul-node')]],
      ['CREATE', OP.CREATE, [u32(0o102, 0o644, 0, 0), Buffer.from('nonul-file')]],
      ['SYMLINK one name', OP.SYMLINK, [cstr('nonul-link'), Buffer.from('target')]],
      ['SYMLINK no names', OP.SYMLINK, [Buffer.from('nonul-link')]],
      ['UNLINK', OP.UNLINK, [Buffer.from('hello.txt')]],
      ['RENAME', OP.RENAME, [u64(ROOT), cstr('shared-inode'), Buffer.from('renamed')]],
      ['RENAME2', OP.RENAME2, [u64(ROOT), u32(0, 0), cstr('shared-inode'), Buffer.from('renamed')]],
      ['LINK', OP.LINK, [u64(ROOT), Buffer.from('linked')]],
      ['SETXATTR', OP.SETXATTR, [u32(1, 0), Buffer.from('user.nonul')]],
      ['GETXATTR', OP.GETXATTR, [u32(10, 0), Buffer.from('user.nonul')]],
      ['REMOVEXATTR', OP.REMOVEXATTR, [Buffer.from('user.nonul')]],
      ['LOOKUP empty', OP.LOOKUP, []],
    ];
    for (const [name, op, args] of cases) {
      expect(`${name}: ${await errnoOf(c.call(op, args, { nodeid: ROOT }))}`).toBe(`${name}: EINVAL`);
    }
    expect(fs.readdirSync(fx.dir).sort()).toEqual(before);
  });

  test('"/" in a name is refused by every operation; nothing appears outside the export', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('sub'), { recursive: true });
    const outsideBefore = fs.readdirSync(fx.outside).sort();
    const baseBefore = fs.readdirSync(fx.base).sort();
    const n = await file('slash-src');
    const cases: [string, Promise<unknown>][] = [
      ['LOOKUP', c.lookup(ROOT, '../outside')],
      ['LOOKUP sub/x', c.lookup(ROOT, 'sub/..')],
      ['LOOKUP /', c.lookup(ROOT, '/')],
      ['MKDIR', c.mkdir(ROOT, '../outside/evil-dir')],
      ['CREATE', c.create(ROOT, '../outside/evil-file', 0o102)],
      ['MKNOD', c.mknod(ROOT, '../evil-node', 0o100644)],
      ['SYMLINK', c.symlink(ROOT, '../evil-link', 'x')],
      ['LINK', c.link(n, ROOT, '../outside/evil-link')],
      ['RENAME to', c.rename(ROOT, 'slash-src', ROOT, '../outside/moved')],
      ['RENAME from', c.rename(ROOT, '../outside/secret', ROOT, 'stolen')],
      ['UNLINK', c.unlink(ROOT, '../outside/secret')],
      ['RMDIR', c.rmdir(ROOT, '../outside')],
    ];
    // Every refusal is caught at once: the replies may come back in any order.
    const refused = cases.map(([name, p]) => [name, errnoOf(p)] as const);
    for (const [name, errno] of refused) expect(`${name}: ${await errno}`).toBe(`${name}: EINVAL`);
    expect(fs.readdirSync(fx.outside).sort()).toEqual(outsideBefore);
    expect(fs.readdirSync(fx.base).sort()).toEqual(baseBefore);
    expect(fs.readFileSync(`${fx.outside}/secret`, 'utf8')).toBe('outside-secret\n');
  });

  test('"." and ".." cannot be created, removed or renamed; ".." never climbs above the export root', async () => {
    const { c, fx } = ctx;
    const sub = await c.lookup(ROOT, 'sub');
    const up = await c.lookup(sub.nodeid, '..');
    expect(up.attr.ino).toBe(lstat(fx.dir).ino);
    const top = await c.lookup(ROOT, '..');
    expect(top.attr.ino).toBe(lstat(fx.dir).ino); // not the parent of the export
    const upUp = await c.lookup(top.nodeid, '..');
    expect(upUp.attr.ino).toBe(lstat(fx.dir).ino);
    for (const nm of ['.', '..']) {
      expect(await errnoOf(c.mkdir(sub.nodeid, nm))).not.toBe('OK');
      expect(await errnoOf(c.create(sub.nodeid, nm, 0o102))).not.toBe('OK');
      expect(await errnoOf(c.symlink(sub.nodeid, nm, 'x'))).not.toBe('OK');
      expect(await errnoOf(c.unlink(sub.nodeid, nm))).not.toBe('OK');
      expect(await errnoOf(c.rmdir(sub.nodeid, nm))).not.toBe('OK');
      expect(await errnoOf(c.rename(ROOT, 'sub', ROOT, nm))).not.toBe('OK');
      expect(await errnoOf(c.rename(sub.nodeid, nm, ROOT, 'gone'))).not.toBe('OK');
    }
    expect(fs.existsSync(fx.p('sub'))).toBe(true);
    expect(fs.existsSync(fx.p('gone'))).toBe(false);
  });

  test('a name longer than 255 bytes is ENAMETOOLONG', async () => {
    const { c } = ctx;
    expect(await errnoOf(c.lookup(ROOT, 'n'.repeat(256)))).toBe('ENAMETOOLONG');
    expect(await errnoOf(c.mkdir(ROOT, 'n'.repeat(300)))).toBe('ENAMETOOLONG');
  });

  test("bytes after the terminating NUL are ignored, as in the kernel's encoding", async () => {
    const { c } = ctx;
    await file('nul-trail');
    const e = await c.lookup(ROOT, Buffer.from('nul-trail\0garbage/../../x'));
    expect(e.attr.size).toBe(4n);
  });
});

describe('symlinks planted in the export pointing outside', () => {
  test('LOOKUP gives the symlink itself; nothing outside is read or written through it', async () => {
    const { c, fx } = ctx;
    const secret = `${fx.outside}/secret`;
    fs.symlinkSync(fx.outside, fx.p('evil-dir'));
    fs.symlinkSync(secret, fx.p('evil-file'));
    fs.symlinkSync('../outside/secret', fx.p('evil-rel'));
    const secretStat = lstat(secret);
    const outsideList = fs.readdirSync(fx.outside).sort();
    const d = await c.lookup(ROOT, 'evil-dir');
    const f = await c.lookup(ROOT, 'evil-file');
    const r = await c.lookup(ROOT, 'evil-rel');
    for (const e of [d, f, r]) expect(e.attr.mode & S_IFMT).toBe(S_IFLNK);
    expect(f.attr.ino).not.toBe(secretStat.ino);
    expect(f.attr.size).toBe(BigInt(secret.length));
    expect((await c.readlink(f.nodeid)).toString()).toBe(secret); // the link's text only
    // Through the directory symlink: not a directory.
    expect(await errnoOf(c.lookup(d.nodeid, 'secret'))).toBe('ENOTDIR');
    expect(await errnoOf(c.create(d.nodeid, 'planted', 0o102))).toBe('ENOTDIR');
    expect(await errnoOf(c.mkdir(d.nodeid, 'planted'))).toBe('ENOTDIR');
    expect(await errnoOf(c.opendir(d.nodeid))).toBe('ENOTDIR');
    // The file symlinks: no open, no truncate, no xattr, no chmod that reaches the target.
    for (const e of [f, r]) {
      expect(await errnoOf(c.open(e.nodeid, 0))).toBe('ELOOP');
      expect(await errnoOf(c.open(e.nodeid, 0o1001))).toBe('ELOOP');
      expect(await errnoOf(c.setattr(e.nodeid, { valid: FATTR.SIZE, size: 0n }))).not.toBe('OK');
      expect(await errnoOf(c.setattr(e.nodeid, { valid: FATTR.MODE, mode: 0o777 }))).not.toBe('OK');
      expect(await errnoOf(c.setxattr(e.nodeid, 'user.evil', Buffer.from('x')))).not.toBe('OK');
      expect(await errnoOf(c.getxattr(e.nodeid, 'user.any', 100))).toBe('ENODATA');
      await c.setattr(e.nodeid, { valid: FATTR.UID | FATTR.GID, uid: 4321, gid: 4321 }); // lchown: the link only
    }
    // CREATE over the symlink name: the existing entry, not the target, is what counts.
    expect(await errnoOf(c.create(ROOT, 'evil-file', 0o302 /* O_CREAT|O_EXCL|O_RDWR */))).toBe('EEXIST');
    expect(await errnoOf(c.mknod(ROOT, 'evil-file', 0o100644))).toBe('EEXIST');
    const st = lstat(secret);
    expect(fs.readFileSync(secret, 'utf8')).toBe('outside-secret\n');
    expect([st.mode, st.uid, st.gid, st.size, st.mtimeNs]).toEqual([
      secretStat.mode,
      secretStat.uid,
      secretStat.gid,
      secretStat.size,
      secretStat.mtimeNs,
    ]);
    expect(fs.readdirSync(fx.outside).sort()).toEqual(outsideList);
    expect(lstat(fx.p('evil-file')).uid).toBe(4321n);
  });

  test('CREATE with O_CREAT (no O_EXCL) on a planted symlink does not create or open the target', async () => {
    const { c, fx } = ctx;
    fs.symlinkSync(`${fx.outside}/created-through-link`, fx.p('dangling'));
    expect(await errnoOf(c.create(ROOT, 'dangling', 0o102 /* O_CREAT|O_RDWR */))).not.toBe('OK');
    expect(fs.existsSync(`${fx.outside}/created-through-link`)).toBe(false);
    const before = fs.readFileSync(`${fx.outside}/secret`);
    expect(await errnoOf(c.create(ROOT, 'evil-file', 0o1102 /* O_CREAT|O_TRUNC|O_RDWR */))).not.toBe('OK');
    expect(fs.readFileSync(`${fx.outside}/secret`)).toEqual(before);
  });

  test('a directory the guest holds, swapped for a symlink on the host, still means the original directory', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('swap'));
    const d = await c.lookup(ROOT, 'swap');
    fs.renameSync(fx.p('swap'), fx.p('swap.orig'));
    fs.symlinkSync(fx.outside, fx.p('swap'));
    const r = await c.create(d.nodeid, 'inside', 0o102);
    await c.release(r.open.fh);
    expect(fs.existsSync(fx.p('swap.orig', 'inside'))).toBe(true);
    expect(fs.existsSync(`${fx.outside}/inside`)).toBe(false);
    expect(await errnoOf(c.lookup(d.nodeid, 'secret'))).toBe('ENOENT');
    // A fresh LOOKUP of the name gives the symlink.
    expect((await c.lookup(ROOT, 'swap')).attr.mode & S_IFMT).toBe(S_IFLNK);
  });
});

describe('the hiprio queue', () => {
  test('a regular request that arrives on it is still answered', async () => {
    const { c } = ctx;
    expect((await c.getattr(ROOT, undefined, { queue: 0 })).attr.ino).toBeGreaterThan(0n);
  });

  test('INTERRUPT of a unique that is not outstanding, and one with a short argument, are ignored', async () => {
    const { c } = ctx;
    expect(await c.interrupt(0xdeadn)).toBe(0);
    expect(await c.noReply(OP.INTERRUPT, [Buffer.alloc(3)])).toBe(0);
  });
});

describe('the daemon itself', () => {
  test('no request made the server fail with an unexpected exception (every error is a typed errno)', () => {
    const crashes = ctx.fx.crashes().map((l) => {
      const err = l.err as { message?: string; stack?: string } | undefined;
      const where = /at FuseSession\.\S+ \[as (\w+)\]/.exec(err?.stack ?? '')?.[1] ?? '?';
      return `opcode ${String(l.opcode)} (${where}): ${err?.message ?? l.msg}`;
    });
    expect([...new Set(crashes)]).toEqual([]);
  });
});

describe('a new connection after all this', () => {
  test('a request before INIT is EIO; INIT, LOOKUP and READ work', async () => {
    const { fx, g } = ctx;
    g.fe.close();
    const g2 = await fx.guest({ init: false });
    const c2: FuseClient = g2.c;
    expect(await errnoOf(c2.getattr(ROOT))).toBe('EIO');
    expect(await errnoOf(c2.lookup(ROOT, 'nul-trail'))).toBe('EIO');
    expect(await replyErrno(c2.send(OP.DESTROY, []).reply)).toBe('EIO');
    await c2.doInit();
    const e = await c2.lookup(ROOT, 'nul-trail');
    const o = await c2.open(e.nodeid, 0);
    expect((await c2.read(o.fh, 0n, 10)).toString()).toBe('data');
    await c2.release(o.fh);
    ctx.g = g2;
    ctx.c = c2;
  });
});
