// Names and inodes through virtio-fs: LOOKUP and its reference counting
// (FORGET and BATCH_FORGET on the hiprio queue), MKDIR, MKNOD, SYMLINK,
// READLINK, LINK, UNLINK, RMDIR, RENAME and RENAME2; every result is checked
// on the host.
import { describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, ROOT, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, errnoOf } from './client.js';
import { lstat, useFuse } from './fixture.js';

const ctx = useFuse();

/** The kernel's new_encode_dev (what fuse_attr.rdev and fuse_mknod_in.rdev carry). */
const encodeDev = (ma: number, mi: number): number => ((mi & 0xff) | (ma << 8) | ((mi & ~0xff) << 12)) >>> 0;
/** st_rdev as glibc's makedev builds it. */
const makedev = (ma: number, mi: number): bigint =>
  (BigInt(ma & 0xfffff000) << 32n) | (BigInt(ma & 0xfff) << 8n) | (BigInt(mi & 0xffffff00) << 12n) | BigInt(mi & 0xff);

describe('LOOKUP and FORGET', () => {
  test('LOOKUP returns the host inode, attributes and a node id; ENOENT for a missing name', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('hello.txt'), 'hello world\n');
    const st = lstat(fx.p('hello.txt'));
    const e = await c.lookup(ROOT, 'hello.txt');
    expect(e.nodeid).toBeGreaterThan(1n);
    expect(e.attr.ino).toBe(st.ino);
    expect(e.attr.size).toBe(12n);
    expect(e.attr.mode).toBe(Number(st.mode));
    expect(e.attr.nlink).toBe(1);
    expect(e.attr.mtime).toBe(st.mtimeNs / 1_000_000_000n);
    expect(e.attr.mtimensec).toBe(Number(st.mtimeNs % 1_000_000_000n));
    expect(await errnoOf(c.lookup(ROOT, 'no-such-file'))).toBe('ENOENT');
    // The same name again: the same node id (one inode, two references).
    expect((await c.lookup(ROOT, 'hello.txt')).nodeid).toBe(e.nodeid);
    await c.forget(e.nodeid, 2n);
  });

  test('LOOKUP of "." and ".." at the root gives the root itself', async () => {
    const { c } = ctx;
    const root = await c.getattr(ROOT);
    for (const n of ['.', '..']) {
      const e = await c.lookup(ROOT, n);
      expect(e.attr.ino).toBe(root.attr.ino);
      await c.forget(e.nodeid, 1n);
    }
  });

  test('each reply adds one lookup reference; FORGET on the hiprio queue gives them back', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('counted'), 'x');
    const base = fx.inodeCount;
    const e = await c.lookup(ROOT, 'counted');
    await c.lookup(ROOT, 'counted');
    await c.lookup(ROOT, 'counted');
    expect(fx.inodeCount).toBe(base + 1);
    expect(await c.forget(e.nodeid, 2n, { in: [16, 64] })).toBe(0); // no reply: the chain comes back with 0 bytes written
    expect((await c.getattr(e.nodeid)).attr.size).toBe(1n); // one reference left
    await c.forget(e.nodeid, 1n);
    expect(fx.inodeCount).toBe(base);
    expect(await errnoOf(c.getattr(e.nodeid))).toBe('ESTALE');
    // A fresh lookup works again.
    const again = await c.lookup(ROOT, 'counted');
    expect(again.attr.ino).toBe(e.attr.ino);
    await c.forget(again.nodeid, 1n);
  });

  test('BATCH_FORGET drops many nodes at once', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('batch'));
    for (let i = 0; i < 20; i++) fs.writeFileSync(fx.p('batch', `f${i}`), String(i));
    const base = fx.inodeCount;
    const d = await c.lookup(ROOT, 'batch');
    const items: [bigint, bigint][] = [[d.nodeid, 1n]];
    for (let i = 0; i < 20; i++) {
      const e = await c.lookup(d.nodeid, `f${i}`);
      await c.lookup(d.nodeid, `f${i}`);
      items.push([e.nodeid, 2n]);
    }
    expect(fx.inodeCount).toBe(base + 21);
    expect(await c.batchForget(items, { in: [16, 64] })).toBe(0);
    expect(fx.inodeCount).toBe(base);
  });

  test('FORGET may also arrive on a request queue', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('forget-rq'), 'x');
    const base = fx.inodeCount;
    const e = await c.lookup(ROOT, 'forget-rq');
    expect(await c.forget(e.nodeid, 1n, { queue: 1, in: [16, 64] })).toBe(0);
    expect(fx.inodeCount).toBe(base);
  });
});

describe('creating and removing', () => {
  test('MKDIR creates a directory with the mode asked for (no daemon umask)', async () => {
    const { c, fx } = ctx;
    const e = await c.mkdir(ROOT, 'newdir', 0o777);
    expect(e.attr.mode).toBe(S_IFDIR | 0o777);
    const st = lstat(fx.p('newdir'));
    expect(Number(st.mode)).toBe(S_IFDIR | 0o777);
    expect(e.attr.ino).toBe(st.ino);
    expect(e.attr.nlink).toBe(2);
    expect(await errnoOf(c.mkdir(ROOT, 'newdir'))).toBe('EEXIST');
    await c.forget(e.nodeid, 1n);
  });

  test('creations run as the caller: owner from the header; EACCES where the caller may not write', async () => {
    const { c, fx } = ctx;
    const shared = await c.mkdir(ROOT, 'shared', 0o777);
    const e = await c.mkdir(shared.nodeid, 'mine', 0o750, { uid: 1000, gid: 1001 });
    expect([e.attr.uid, e.attr.gid]).toEqual([1000, 1001]);
    const st = lstat(fx.p('shared', 'mine'));
    expect([st.uid, st.gid]).toEqual([1000n, 1001n]);
    expect(await errnoOf(c.mkdir(ROOT, 'not-mine', 0o755, { uid: 1000, gid: 1000 }))).toBe('EACCES');
    expect(fs.existsSync(fx.p('not-mine'))).toBe(false);
  });

  test('MKNOD makes a FIFO and a regular file', async () => {
    const { c, fx } = ctx;
    const fifo = await c.mknod(ROOT, 'fifo', S_IFIFO | 0o640);
    expect(fifo.attr.mode).toBe(S_IFIFO | 0o640);
    expect(lstat(fx.p('fifo')).isFIFO()).toBe(true);
    const reg = await c.mknod(ROOT, 'mknod-reg', S_IFREG | 0o600);
    expect(lstat(fx.p('mknod-reg')).isFile()).toBe(true);
    expect(reg.attr.size).toBe(0n);
  });

  (process.getuid?.() === 0 ? test : test.skip)('MKNOD of character devices as root: rdev in the kernel encoding both ways', async () => {
    const { c, fx } = ctx;
    const e = await c.mknod(ROOT, 'null2', S_IFCHR | 0o666, encodeDev(1, 3));
    expect(e.attr.mode).toBe(S_IFCHR | 0o666);
    expect(e.attr.rdev).toBe(encodeDev(1, 3));
    expect(lstat(fx.p('null2')).rdev).toBe(makedev(1, 3));
    // A minor above 255 uses the split encoding.
    const big = await c.mknod(ROOT, 'bigminor', S_IFCHR | 0o600, encodeDev(240, 70000));
    expect(lstat(fx.p('bigminor')).rdev).toBe(makedev(240, 70000));
    expect(big.attr.rdev).toBe(encodeDev(240, 70000));
  });

  test('MKNOD of an unknown file type is EINVAL', async () => {
    expect(await errnoOf(ctx.c.mknod(ROOT, 'weird', 0o070000 | 0o644))).toBe('EINVAL');
    expect(fs.existsSync(ctx.fx.p('weird'))).toBe(false);
  });

  test('SYMLINK and READLINK (the target is stored as given, never resolved)', async () => {
    const { c, fx } = ctx;
    const e = await c.symlink(ROOT, 'ln', '../../etc/passwd');
    expect(e.attr.mode & S_IFMT).toBe(S_IFLNK);
    expect(e.attr.size).toBe(16n);
    expect(fs.readlinkSync(fx.p('ln'))).toBe('../../etc/passwd');
    expect((await c.readlink(e.nodeid)).toString()).toBe('../../etc/passwd');
    // non-UTF-8 bytes round-trip
    const raw = Buffer.from([0x66, 0xff, 0xfe, 0x2f, 0x78]);
    const e2 = await c.symlink(ROOT, 'ln-bytes', raw);
    expect(await c.readlink(e2.nodeid)).toEqual(raw);
    // READLINK of something that is not a symlink
    expect(await errnoOf(c.readlink(ROOT))).toBe('EINVAL');
    expect(await errnoOf(c.symlink(ROOT, 'ln', 'x'))).toBe('EEXIST');
  });

  test('LINK adds a name to the same inode (nlink 2); a directory is EPERM, onto an existing name EEXIST', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('orig'), 'linked');
    const o = await c.lookup(ROOT, 'orig');
    const l = await c.link(o.nodeid, ROOT, 'hardlink');
    expect(l.nodeid).toBe(o.nodeid);
    expect(l.attr.nlink).toBe(2);
    expect(lstat(fx.p('hardlink')).ino).toBe(lstat(fx.p('orig')).ino);
    const d = await c.mkdir(ROOT, 'linkdir');
    expect(await errnoOf(c.link(d.nodeid, ROOT, 'dirlink'))).toBe('EPERM');
    expect(await errnoOf(c.link(d.nodeid, ROOT, 'orig'))).toBe('EEXIST'); // link(2) looks at the new name first
    expect(await errnoOf(c.link(o.nodeid, ROOT, 'hardlink'))).toBe('EEXIST');
  });

  test('UNLINK and RMDIR; ENOTEMPTY, ENOTDIR, EISDIR as the host says', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('rm'));
    fs.writeFileSync(fx.p('rm', 'file'), 'x');
    const d = await c.lookup(ROOT, 'rm');
    expect(await errnoOf(c.rmdir(ROOT, 'rm'))).toBe('ENOTEMPTY');
    expect(await errnoOf(c.rmdir(d.nodeid, 'file'))).toBe('ENOTDIR');
    expect(await errnoOf(c.unlink(ROOT, 'rm'))).toBe('EISDIR');
    await c.unlink(d.nodeid, 'file');
    expect(fs.existsSync(fx.p('rm', 'file'))).toBe(false);
    expect(await errnoOf(c.unlink(d.nodeid, 'file'))).toBe('ENOENT');
    await c.rmdir(ROOT, 'rm');
    expect(fs.existsSync(fx.p('rm'))).toBe(false);
    // The node id stays valid (the guest still holds it) and reports nlink 0.
    expect((await c.getattr(d.nodeid)).attr.nlink).toBe(0);
  });

  test('an unlinked but looked-up file keeps its node id (stat works, nlink 0)', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('doomed'), 'abc');
    const e = await c.lookup(ROOT, 'doomed');
    await c.unlink(ROOT, 'doomed');
    const a = await c.getattr(e.nodeid);
    expect(a.attr.nlink).toBe(0);
    expect(a.attr.size).toBe(3n);
  });
});

describe('RENAME and RENAME2', () => {
  test('RENAME moves a file between directories and replaces a target', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('ra'));
    fs.mkdirSync(fx.p('rb'));
    fs.writeFileSync(fx.p('ra', 'x'), 'x-data');
    fs.writeFileSync(fx.p('rb', 'y'), 'y-data');
    const a = await c.lookup(ROOT, 'ra');
    const b = await c.lookup(ROOT, 'rb');
    const x = await c.lookup(a.nodeid, 'x');
    await c.rename(a.nodeid, 'x', b.nodeid, 'y');
    expect(fs.existsSync(fx.p('ra', 'x'))).toBe(false);
    expect(fs.readFileSync(fx.p('rb', 'y'), 'utf8')).toBe('x-data');
    // The node id follows the inode, not the name.
    expect((await c.getattr(x.nodeid)).attr.size).toBe(6n);
    expect((await c.lookup(b.nodeid, 'y')).nodeid).toBe(x.nodeid);
    expect(await errnoOf(c.rename(a.nodeid, 'x', b.nodeid, 'z'))).toBe('ENOENT');
  });

  test('RENAME2 NOREPLACE refuses an existing target; EXCHANGE swaps two names', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('n1'), 'one');
    fs.writeFileSync(fx.p('n2'), 'two');
    expect(await errnoOf(c.rename2(ROOT, 'n1', ROOT, 'n2', RENAME_NOREPLACE))).toBe('EEXIST');
    expect(fs.readFileSync(fx.p('n2'), 'utf8')).toBe('two');
    await c.rename2(ROOT, 'n1', ROOT, 'n3', RENAME_NOREPLACE);
    expect(fs.readFileSync(fx.p('n3'), 'utf8')).toBe('one');
    await c.rename2(ROOT, 'n3', ROOT, 'n2', RENAME_EXCHANGE);
    expect(fs.readFileSync(fx.p('n3'), 'utf8')).toBe('two');
    expect(fs.readFileSync(fx.p('n2'), 'utf8')).toBe('one');
    expect(await errnoOf(c.rename2(ROOT, 'n2', ROOT, 'absent', RENAME_EXCHANGE))).toBe('ENOENT');
    expect(await errnoOf(c.rename2(ROOT, 'n2', ROOT, 'n3', RENAME_EXCHANGE | RENAME_NOREPLACE))).toBe('EINVAL');
    expect(await errnoOf(c.rename2(ROOT, 'n2', ROOT, 'n9', 0x80))).toBe('EINVAL');
  });

  (process.getuid?.() === 0 ? test : test.skip)('RENAME2 WHITEOUT leaves a 0/0 character device behind (as root on ext4)', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('wo'), 'w');
    await c.rename2(ROOT, 'wo', ROOT, 'wo-moved', RENAME_WHITEOUT);
    const st = lstat(fx.p('wo'));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe(0n);
    expect(fs.readFileSync(fx.p('wo-moved'), 'utf8')).toBe('w');
  });

  test('RENAME of a directory into itself is EINVAL; over a non-empty directory ENOTEMPTY', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('rd', 'sub'), { recursive: true });
    fs.mkdirSync(fx.p('rd2', 'full'), { recursive: true });
    fs.writeFileSync(fx.p('rd2', 'full', 'f'), 'x');
    const rd = await c.lookup(ROOT, 'rd');
    const rd2 = await c.lookup(ROOT, 'rd2');
    expect(await errnoOf(c.rename(ROOT, 'rd', rd.nodeid, 'inside'))).toBe('EINVAL');
    expect(await errnoOf(c.rename(rd.nodeid, 'sub', rd2.nodeid, 'full'))).toBe('ENOTEMPTY');
  });
});
