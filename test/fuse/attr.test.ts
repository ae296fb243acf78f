// Attributes through virtio-fs: GETATTR (with and without a file handle),
// SETATTR (every valid bit, including the *_NOW times, FH and the
// KILL_SUIDGID rules of HANDLE_KILLPRIV_V2), STATX, ACCESS and STATFS,
// each compared with what the host says.
import { describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { FATTR, FUSE_OPEN_KILL_SUIDGID, ROOT, S_IFCHR, S_IFDIR, S_IFMT, S_IFREG, errnoOf } from './client.js';
import { lstat, sleep, useFuse } from './fixture.js';

const ctx = useFuse();
const NS = 1_000_000_000n;

async function file(name: string, data = 'data', mode = 0o644): Promise<bigint> {
  fs.writeFileSync(ctx.fx.p(name), data);
  fs.chmodSync(ctx.fx.p(name), mode);
  return (await ctx.c.lookup(ROOT, name)).nodeid;
}

describe('GETATTR', () => {
  test('matches the host stat of the root and of a file', async () => {
    const { c, fx } = ctx;
    const r = await c.getattr(ROOT);
    const st = lstat(fx.dir);
    expect(r.attr.mode).toBe(Number(st.mode));
    expect(r.attr.ino).toBe(st.ino);
    expect(r.attr.nlink).toBe(Number(st.nlink));
    expect(r.attrValid).toBe(1n);
    const n = await file('ga', 'x'.repeat(5000));
    const a = (await c.getattr(n)).attr;
    const fst = lstat(fx.p('ga'));
    expect(a).toMatchObject({
      ino: fst.ino,
      size: 5000n,
      blocks: fst.blocks,
      mode: Number(fst.mode),
      uid: 0,
      gid: 0,
      blksize: Number(fst.blksize),
      atime: fst.atimeNs / NS,
      mtime: fst.mtimeNs / NS,
      ctime: fst.ctimeNs / NS,
      atimensec: Number(fst.atimeNs % NS),
      mtimensec: Number(fst.mtimeNs % NS),
      ctimensec: Number(fst.ctimeNs % NS),
    });
  });

  test('with GETATTR_FH the open file is asked (same inode, same answer)', async () => {
    const { c } = ctx;
    const n = await file('ga-fh', 'abc');
    const o = await c.open(n, 2);
    const viaFh = await c.getattr(n, o.fh);
    const plain = await c.getattr(n);
    expect(viaFh.attr).toEqual(plain.attr);
    await c.write(o.fh, 3n, Buffer.from('def'));
    expect((await c.getattr(n, o.fh)).attr.size).toBe(6n);
    await c.release(o.fh);
  });
});

describe('SETATTR', () => {
  test('MODE, UID and GID', async () => {
    const { c, fx } = ctx;
    const n = await file('sa-own');
    const r = await c.setattr(n, { valid: FATTR.MODE | FATTR.UID | FATTR.GID, mode: S_IFREG | 0o4751, uid: 1234, gid: 5678 });
    const st = lstat(fx.p('sa-own'));
    expect([st.uid, st.gid]).toEqual([1234n, 5678n]);
    expect(Number(st.mode) & 0o7777).toBe(0o4751);
    expect(r.attr).toMatchObject({ uid: 1234, gid: 5678, mode: S_IFREG | 0o4751 });
    // UID alone leaves the group alone
    await c.setattr(n, { valid: FATTR.UID, uid: 42 });
    expect([lstat(fx.p('sa-own')).uid, lstat(fx.p('sa-own')).gid]).toEqual([42n, 5678n]);
  });

  test('SIZE truncates and extends; on a directory EISDIR', async () => {
    const { c, fx } = ctx;
    const n = await file('sa-size', '0123456789');
    expect((await c.setattr(n, { valid: FATTR.SIZE, size: 4n })).attr.size).toBe(4n);
    expect(fs.readFileSync(fx.p('sa-size'), 'utf8')).toBe('0123');
    await c.setattr(n, { valid: FATTR.SIZE | FATTR.LOCKOWNER, size: 1n << 20n, lockOwner: 0x1234n }); // lock_owner: informational
    expect(lstat(fx.p('sa-size')).size).toBe(1n << 20n);
    expect(await errnoOf(c.setattr(ROOT, { valid: FATTR.SIZE, size: 0n }))).toBe('EISDIR');
  });

  test('SIZE with FH truncates through the open handle', async () => {
    const { c, fx } = ctx;
    const n = await file('sa-fh', 'abcdef');
    const o = await c.open(n, 1);
    await c.setattr(n, { valid: FATTR.SIZE | FATTR.FH, fh: o.fh, size: 2n });
    expect(fs.readFileSync(fx.p('sa-fh'), 'utf8')).toBe('ab');
    await c.release(o.fh);
  });

  test('ATIME and MTIME with nanoseconds, also before 1970', async () => {
    const { c, fx } = ctx;
    const n = await file('sa-times');
    const r = await c.setattr(n, {
      valid: FATTR.ATIME | FATTR.MTIME,
      atime: 1_000_000_000n,
      atimensec: 123_456_789,
      mtime: 1_234_567_890n,
      mtimensec: 987_654_321,
    });
    const st = lstat(fx.p('sa-times'));
    expect(st.atimeNs).toBe(1_000_000_000n * NS + 123_456_789n);
    expect(st.mtimeNs).toBe(1_234_567_890n * NS + 987_654_321n);
    expect([r.attr.mtime, r.attr.mtimensec]).toEqual([1_234_567_890n, 987_654_321]);
    await c.setattr(n, { valid: FATTR.MTIME, mtime: -86400n, mtimensec: 5 });
    expect(lstat(fx.p('sa-times')).mtimeNs).toBe(-86400n * NS + 5n);
    expect(lstat(fx.p('sa-times')).atimeNs).toBe(1_000_000_000n * NS + 123_456_789n); // untouched
    expect(await errnoOf(c.setattr(n, { valid: FATTR.MTIME, mtime: 1n, mtimensec: 1_000_000_000 }))).toBe('EINVAL');
  });

  test("ATIME_NOW and MTIME_NOW set the server clock's now", async () => {
    const { c, fx } = ctx;
    const n = await file('sa-now');
    await c.setattr(n, { valid: FATTR.ATIME | FATTR.MTIME, atime: 1n, mtime: 1n });
    const before = BigInt(Date.now() - 2000) * 1_000_000n;
    await c.setattr(n, { valid: FATTR.ATIME | FATTR.ATIME_NOW, atime: 5n });
    let st = lstat(fx.p('sa-now'));
    expect(st.atimeNs).toBeGreaterThan(before);
    expect(st.mtimeNs).toBe(1n * NS);
    await c.setattr(n, { valid: FATTR.MTIME | FATTR.MTIME_NOW, mtime: 5n });
    st = lstat(fx.p('sa-now'));
    expect(st.mtimeNs).toBeGreaterThan(before);
  });

  test('CTIME alone bumps the change time and nothing else', async () => {
    const { c, fx } = ctx;
    const n = await file('sa-ctime', 'keep');
    const st0 = lstat(fx.p('sa-ctime'));
    await sleep(15);
    const r = await c.setattr(n, { valid: FATTR.CTIME, ctime: 1n });
    const st = lstat(fx.p('sa-ctime'));
    expect(st.ctimeNs).toBeGreaterThan(st0.ctimeNs);
    expect(st.mtimeNs).toBe(st0.mtimeNs);
    expect(st.size).toBe(4n);
    expect(r.attr.ctime * NS + BigInt(r.attr.ctimensec)).toBe(st.ctimeNs);
  });

  test('MODE on a symlink is EOPNOTSUPP (Linux has no lchmod)', async () => {
    const { c, fx } = ctx;
    fs.symlinkSync('target', fx.p('sa-ln'));
    const l = await c.lookup(ROOT, 'sa-ln');
    expect(await errnoOf(c.setattr(l.nodeid, { valid: FATTR.MODE, mode: 0o600 }))).toBe('EOPNOTSUPP');
  });

  describe('KILL_SUIDGID (HANDLE_KILLPRIV_V2: the server kills, as the Linux VFS would)', () => {
    test('truncate by a caller without CAP_FSETID (KILL_SUIDGID) drops setuid, and setgid of a group-executable file', async () => {
      const { c, fx } = ctx;
      const n = await file('k1', 'data', 0o6755);
      const r = await c.setattr(n, { valid: FATTR.SIZE | FATTR.KILL_SUIDGID, size: 1n }, { uid: 1000, gid: 1000 });
      expect(Number(lstat(fx.p('k1')).mode) & 0o7777).toBe(0o755);
      expect(r.attr.mode & 0o7777).toBe(0o755);
      expect(lstat(fx.p('k1')).size).toBe(1n);
    });

    test('setgid without group execute is not a privilege and stays (Linux VFS rule)', async () => {
      const { c, fx } = ctx;
      const n = await file('k2', 'data', 0o6744);
      await c.setattr(n, { valid: FATTR.SIZE | FATTR.KILL_SUIDGID, size: 0n }, { uid: 1000, gid: 1000 });
      expect(Number(lstat(fx.p('k2')).mode) & 0o7777).toBe(0o2744);
    });

    test('KILL_SUIDGID is honoured whoever the caller is (the kernel sends it only when the caller lacks CAP_FSETID)', async () => {
      const { c, fx } = ctx;
      const n = await file('k3', 'data', 0o4755);
      await c.setattr(n, { valid: FATTR.SIZE | FATTR.KILL_SUIDGID, size: 0n }, { uid: 0, gid: 0 });
      expect(Number(lstat(fx.p('k3')).mode) & 0o7777).toBe(0o755);
    });

    test('without KILL_SUIDGID a truncate keeps setuid (the caller has CAP_FSETID)', async () => {
      const { c, fx } = ctx;
      const n = await file('k4', 'data', 0o4755);
      await c.setattr(n, { valid: FATTR.SIZE, size: 0n }, { uid: 0, gid: 0 });
      expect(Number(lstat(fx.p('k4')).mode) & 0o7777).toBe(0o4755);
      const n2 = await file('k5', 'data', 0o4755);
      await c.setattr(n2, { valid: FATTR.SIZE, size: 0n }, { uid: 1000, gid: 1000 });
      expect(Number(lstat(fx.p('k5')).mode) & 0o7777).toBe(0o4755);
    });

    test('WRITE with FUSE_WRITE_KILL_SUIDGID drops setuid/setgid', async () => {
      const { c, fx } = ctx;
      const n = await file('k6', 'data', 0o6775);
      const o = await c.open(n, 1);
      await c.write(o.fh, 0n, Buffer.from('x'), { writeFlags: 4, uid: 1000, gid: 1000 });
      expect(Number(lstat(fx.p('k6')).mode) & 0o7777).toBe(0o775);
      await c.release(o.fh);
    });

    test('WRITE with FUSE_WRITE_KILL_SUIDGID: also for uid 0 (flag, not uid, decides); setgid without g+x stays', async () => {
      const { c, fx } = ctx;
      const n = await file('k8', 'data', 0o4755);
      const o = await c.open(n, 1);
      await c.write(o.fh, 0n, Buffer.from('x'), { writeFlags: 4, uid: 0, gid: 0 });
      expect(Number(lstat(fx.p('k8')).mode) & 0o7777).toBe(0o755);
      await c.release(o.fh);
      const n2 = await file('k9', 'data', 0o2744);
      const o2 = await c.open(n2, 1);
      await c.write(o2.fh, 0n, Buffer.from('x'), { writeFlags: 4, uid: 1000, gid: 1000 });
      expect(Number(lstat(fx.p('k9')).mode) & 0o7777).toBe(0o2744);
      await c.release(o2.fh);
    });

    test('OPEN with O_TRUNC and FUSE_OPEN_KILL_SUIDGID drops setuid/setgid', async () => {
      const { c, fx } = ctx;
      const n = await file('k10', 'data', 0o6755);
      const o = await c.open(n, 0o1001 /* O_WRONLY|O_TRUNC */, { openFlags: FUSE_OPEN_KILL_SUIDGID, uid: 1000, gid: 1000 });
      expect(lstat(fx.p('k10')).size).toBe(0n);
      expect(Number(lstat(fx.p('k10')).mode) & 0o7777).toBe(0o755);
      await c.release(o.fh);
    });

    test('chown drops setuid (the host kernel does it)', async () => {
      const { c, fx } = ctx;
      const n = await file('k7', 'data', 0o4755);
      await c.setattr(n, { valid: FATTR.UID, uid: 77 });
      expect(Number(lstat(fx.p('k7')).mode) & 0o7777).toBe(0o755);
    });
  });
});

describe('STATX', () => {
  test('basic stats and the birth time, as statx(2) on the host reports them', async () => {
    const { c, fx } = ctx;
    const n = await file('sx', 'statx!');
    const x = await c.statx(n);
    const st = fs.statSync(fx.p('sx'), { bigint: true });
    expect(x.mask & 0x7ff).toBe(0x7ff);
    expect(x).toMatchObject({
      ino: st.ino,
      size: 6n,
      nlink: 1,
      uid: 0,
      gid: 0,
      mode: Number(st.mode),
      blocks: st.blocks,
      blksize: Number(st.blksize),
    });
    expect(x.mtime.sec * NS + BigInt(x.mtime.nsec)).toBe(st.mtimeNs);
    expect(x.ctime.sec * NS + BigInt(x.ctime.nsec)).toBe(st.ctimeNs);
    if (st.birthtimeNs > 0n) {
      expect(x.mask & 0x800).toBe(0x800);
      expect(x.btime.sec * NS + BigInt(x.btime.nsec)).toBe(st.birthtimeNs);
    }
    const o = await c.open(n, 0);
    expect((await c.statx(n, o.fh)).size).toBe(6n);
    await c.release(o.fh);
  });

  (process.getuid?.() === 0 ? test : test.skip)('device numbers as major/minor', async () => {
    const { c } = ctx;
    const e = await c.mknod(ROOT, 'sx-dev', S_IFCHR | 0o600, (7 << 8) | 9);
    const x = await c.statx(e.nodeid);
    expect([x.rdevMajor, x.rdevMinor]).toEqual([7, 9]);
    expect(x.mode & S_IFMT).toBe(S_IFCHR);
  });

  test('of a directory', async () => {
    expect((await ctx.c.statx(ROOT)).mode & S_IFMT).toBe(S_IFDIR);
  });
});

describe('ACCESS', () => {
  test('checks run as the caller', async () => {
    const { c } = ctx;
    const n = await file('acc', 'secret', 0o600);
    await c.access(n, 0); // F_OK
    await c.access(n, 4 | 2); // root: R_OK|W_OK
    expect(await errnoOf(c.access(n, 1))).toBe('EACCES'); // no x bit at all: even root may not execute
    expect(await errnoOf(c.access(n, 4, { uid: 1000, gid: 1000 }))).toBe('EACCES');
    await c.access(ROOT, 4 | 1, { uid: 1000, gid: 1000 }); // 0755 directory
    expect(await errnoOf(c.access(ROOT, 2, { uid: 1000, gid: 1000 }))).toBe('EACCES');
  });
});

describe('STATFS', () => {
  test('matches statfs(2) of the export', async () => {
    const { c, fx } = ctx;
    const s = await c.statfs(ROOT);
    const h = fs.statfsSync(fx.dir, { bigint: true });
    expect(BigInt(s.bsize)).toBe(h.bsize);
    expect(s.blocks).toBe(h.blocks);
    expect(s.files).toBe(h.files);
    expect(s.namelen).toBe(255);
    expect(s.frsize).toBeGreaterThan(0);
    const slack = h.blocks / 100n;
    expect(s.bfree >= h.bfree - slack && s.bfree <= h.bfree + slack).toBe(true);
    // Any node of the export answers for the same filesystem.
    const n = await file('sfs');
    expect((await c.statfs(n)).blocks).toBe(s.blocks);
  });
});
