// Tgetattr against the host's statx, Tsetattr for every valid bit, Tstatfs.
import { expect, jest, test, describe } from '@jest/globals';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { useServer, walkTo, openAt, sleep } from './fixture.js';
import { type Attr, GETATTR, O, QTDIR, QTFILE, QTSYMLINK, SETATTR } from './proto.js';

jest.setTimeout(30_000);
const ctx = useServer();

const ns = (sec: bigint, nsec: bigint) => sec * 1_000_000_000n + nsec;

/**
 * Birth time from coreutils stat (statx). Node's own birthtime is not used:
 * once libuv sees statx fail with EPERM in a process (a credentials test in
 * the same jest worker can cause that) it falls back to lstat for good and
 * reports ctime as the birth time.
 */
function hostBtime(p: string): bigint {
  const out = spawnSync('stat', ['-c', '%.9W', p], { encoding: 'utf8' }).stdout.trim();
  const [sec, frac = '0'] = out.split('.');
  return BigInt(sec!) * 1_000_000_000n + BigInt(frac.padEnd(9, '0'));
}

function expectMatchesHost(a: Attr, hostPath: string): void {
  const st = fs.lstatSync(hostPath, { bigint: true });
  // Every basic field plus btime is valid (BASIC|BTIME = 0xfff; duofs may add GEN/DATA_VERSION).
  expect({ valid: a.valid & (GETATTR.BASIC | GETATTR.BTIME) }).toEqual({ valid: GETATTR.BASIC | GETATTR.BTIME });
  expect({
    ino: a.qid.path,
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    nlink: a.nlink,
    rdev: a.rdev,
    size: a.size,
    blksize: a.blksize,
    blocks: a.blocks,
    atime: ns(a.atimeSec, a.atimeNsec),
    mtime: ns(a.mtimeSec, a.mtimeNsec),
    ctime: ns(a.ctimeSec, a.ctimeNsec),
    btime: ns(a.btimeSec, a.btimeNsec),
  }).toEqual({
    ino: st.ino,
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    nlink: st.nlink,
    rdev: st.rdev,
    size: st.size,
    blksize: st.blksize,
    blocks: st.blocks,
    atime: st.atimeNs,
    mtime: st.mtimeNs,
    ctime: st.ctimeNs,
    btime: hostBtime(hostPath),
  });
}

describe('Tgetattr', () => {
  test('a regular file matches the host stat field by field, to the nanosecond', async () => {
    const { c, root } = await ctx.session();
    fs.writeFileSync(ctx.tree.p('scratch/ga'), Buffer.alloc(12345, 1));
    fs.chownSync(ctx.tree.p('scratch/ga'), 1234, 5678);
    fs.chmodSync(ctx.tree.p('scratch/ga'), 0o4751);
    fs.utimesSync(ctx.tree.p('scratch/ga'), new Date(1_111_111_111_123), new Date(1_222_222_222_456));
    const f = await walkTo(c, root, 'scratch/ga');
    const a = await c.getattr(f, GETATTR.ALL);
    expect(a.qid.type).toBe(QTFILE);
    expectMatchesHost(a, ctx.tree.p('scratch/ga'));
  });

  test('a directory, a symlink (not followed), a fifo and a char device match the host', async () => {
    const { c, root } = await ctx.session();
    spawnSync('mkfifo', [ctx.tree.p('scratch/ga-fifo')]);
    const r = spawnSync('mknod', [ctx.tree.p('scratch/ga-null'), 'c', '1', '3']);
    expect(r.status).toBe(0);
    for (const [p, t] of [
      ['sub', QTDIR],
      ['escape', QTSYMLINK],
      ['scratch/ga-fifo', QTFILE],
      ['scratch/ga-null', QTFILE],
    ] as const) {
      const f = await walkTo(c, root, p);
      const a = await c.getattr(f);
      expect(a.qid.type).toBe(t);
      expectMatchesHost(a, ctx.tree.p(p));
    }
  });

  test('the export root matches the host', async () => {
    expectMatchesHost(await ctx.c.getattr(ctx.root), ctx.tree.dir);
  });

  test('getattr through an open fid sees writes made through it', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    await c.lcreate(d, 'ga-open', O.RDWR | O.CREAT | O.EXCL, 0o644, 0);
    await c.write(d, 0, Buffer.alloc(777));
    const a = await c.getattr(d);
    expect(a.size).toBe(777n);
    expectMatchesHost(a, ctx.tree.p('scratch/ga-open'));
  });
});

describe('Tsetattr', () => {
  const mk = async (name: string) => {
    const p = ctx.tree.p('scratch', name);
    fs.writeFileSync(p, 'some content here');
    fs.chmodSync(p, 0o644);
    fs.utimesSync(p, 1_000_000, 1_000_000);
    const { c, root } = await ctx.session();
    return { c, f: await walkTo(c, root, `scratch/${name}`), p };
  };

  test('MODE changes the permission bits (keeping the type)', async () => {
    const { c, f, p } = await mk('sa-mode');
    await c.setattr(f, { valid: SETATTR.MODE, mode: 0o2710 });
    expect(fs.statSync(p).mode).toBe(0o102710);
  });

  test('UID and GID change the owner', async () => {
    const { c, f, p } = await mk('sa-own');
    await c.setattr(f, { valid: SETATTR.UID, uid: 1000 });
    expect([fs.statSync(p).uid, fs.statSync(p).gid]).toEqual([1000, 0]);
    await c.setattr(f, { valid: SETATTR.GID, gid: 2000 });
    expect([fs.statSync(p).uid, fs.statSync(p).gid]).toEqual([1000, 2000]);
    await c.setattr(f, { valid: SETATTR.UID | SETATTR.GID, uid: 3, gid: 4 });
    expect([fs.statSync(p).uid, fs.statSync(p).gid]).toEqual([3, 4]);
  });

  test('SIZE truncates and extends', async () => {
    const { c, f, p } = await mk('sa-size');
    await c.setattr(f, { valid: SETATTR.SIZE, size: 4 });
    expect(fs.readFileSync(p, 'utf8')).toBe('some');
    await c.setattr(f, { valid: SETATTR.SIZE, size: 10n * 1024n * 1024n * 1024n });
    expect(fs.statSync(p).size).toBe(10 * 1024 * 1024 * 1024);
    await c.setattr(f, { valid: SETATTR.SIZE, size: 0 });
    expect(fs.statSync(p).size).toBe(0);
  });

  test('ATIME without ATIME_SET sets the access time to now; MTIME likewise', async () => {
    const { c, f, p } = await mk('sa-now');
    const t0 = BigInt(Date.now() - 2000) * 1_000_000n;
    await c.setattr(f, { valid: SETATTR.ATIME, atimeSec: 5, atimeNsec: 5 });
    let st = fs.statSync(p, { bigint: true });
    expect(st.atimeNs).toBeGreaterThan(t0);
    expect(st.mtimeNs).toBe(1_000_000_000_000_000n);
    await c.setattr(f, { valid: SETATTR.MTIME, mtimeSec: 5, mtimeNsec: 5 });
    st = fs.statSync(p, { bigint: true });
    expect(st.mtimeNs).toBeGreaterThan(t0);
  });

  test('ATIME|ATIME_SET and MTIME|MTIME_SET set the given seconds and nanoseconds', async () => {
    const { c, f, p } = await mk('sa-set');
    await c.setattr(f, { valid: SETATTR.ATIME | SETATTR.ATIME_SET, atimeSec: 1_500_000_000, atimeNsec: 123_456_789 });
    let st = fs.statSync(p, { bigint: true });
    expect(st.atimeNs).toBe(1_500_000_000_123_456_789n);
    expect(st.mtimeNs).toBe(1_000_000_000_000_000n);
    await c.setattr(f, { valid: SETATTR.MTIME | SETATTR.MTIME_SET, mtimeSec: 1_600_000_000, mtimeNsec: 987_654_321 });
    st = fs.statSync(p, { bigint: true });
    expect(st.mtimeNs).toBe(1_600_000_000_987_654_321n);
    expect(st.atimeNs).toBe(1_500_000_000_123_456_789n);
    // A time before the epoch (negative seconds, sent as two's complement).
    await c.setattr(f, { valid: SETATTR.MTIME | SETATTR.MTIME_SET, mtimeSec: -86_400n, mtimeNsec: 0 });
    expect(fs.statSync(p, { bigint: true }).mtimeNs).toBe(-86_400_000_000_000n);
  });

  test('CTIME alone updates the change time', async () => {
    const { c, f, p } = await mk('sa-ctime');
    const before = fs.statSync(p, { bigint: true }).ctimeNs;
    await sleep(30);
    await c.setattr(f, { valid: SETATTR.CTIME });
    expect(fs.statSync(p, { bigint: true }).ctimeNs).toBeGreaterThan(before);
  });

  test('all bits at once', async () => {
    const { c, f, p } = await mk('sa-all');
    await c.setattr(f, {
      valid:
        SETATTR.MODE |
        SETATTR.UID |
        SETATTR.GID |
        SETATTR.SIZE |
        SETATTR.ATIME |
        SETATTR.MTIME |
        SETATTR.ATIME_SET |
        SETATTR.MTIME_SET |
        SETATTR.CTIME,
      mode: 0o600,
      uid: 1001,
      gid: 1002,
      size: 2,
      atimeSec: 1_400_000_000,
      atimeNsec: 1,
      mtimeSec: 1_300_000_000,
      mtimeNsec: 2,
    });
    const st = fs.statSync(p, { bigint: true });
    expect({ mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, atime: st.atimeNs, mtime: st.mtimeNs }).toEqual({
      mode: 0o100600n,
      uid: 1001n,
      gid: 1002n,
      size: 2n,
      atime: 1_400_000_000_000_000_001n,
      mtime: 1_300_000_000_000_000_002n,
    });
  });

  test('valid 0 changes nothing', async () => {
    const { c, f, p } = await mk('sa-none');
    const before = fs.statSync(p, { bigint: true });
    await c.setattr(f, { valid: 0, mode: 0o777, uid: 5, gid: 5, size: 0 });
    const after = fs.statSync(p, { bigint: true });
    expect([after.mode, after.uid, after.gid, after.size, after.mtimeNs]).toEqual([before.mode, before.uid, before.gid, before.size, before.mtimeNs]);
  });

  test('SIZE on a directory is EISDIR', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'sub');
    await expect(c.setattr(d, { valid: SETATTR.SIZE, size: 0 })).rejects.toMatchObject({ code: 'EISDIR' });
  });

  test('setattr works on an open fid too', async () => {
    const { c, root } = await ctx.session();
    fs.writeFileSync(ctx.tree.p('scratch/sa-open'), 'abcdef');
    const f = await openAt(c, root, 'scratch/sa-open', O.RDWR);
    await c.setattr(f, { valid: SETATTR.SIZE, size: 1 });
    expect(fs.readFileSync(ctx.tree.p('scratch/sa-open'), 'utf8')).toBe('a');
  });

  test('mode of a symlink: the link itself is not changed and the target is untouched', async () => {
    const { c, root } = await ctx.session();
    fs.writeFileSync(ctx.tree.p('scratch/sa-target'), 't');
    fs.chmodSync(ctx.tree.p('scratch/sa-target'), 0o644);
    fs.symlinkSync('sa-target', ctx.tree.p('scratch/sa-link'));
    const l = await walkTo(c, root, 'scratch/sa-link');
    try {
      await c.setattr(l, { valid: SETATTR.MODE, mode: 0o600 });
    } catch {
      /* EOPNOTSUPP is fine */
    }
    expect(fs.statSync(ctx.tree.p('scratch/sa-target')).mode & 0o7777).toBe(0o644);
  });
});

describe('Tstatfs', () => {
  test("reports the host filesystem's figures", async () => {
    const { c, root } = await ctx.session();
    const s = await c.statfs(root);
    const h = fs.statfsSync(ctx.tree.dir, { bigint: true });
    // f_type: the host's (QEMU passes it on) or V9FS_MAGIC (diod without -p).
    expect([Number(h.type), 0x01021997]).toContain(s.type);
    expect(BigInt(s.bsize)).toBe(h.bsize);
    expect(s.blocks).toBe(h.blocks);
    expect(s.files).toBe(h.files);
    const slack = 1n << 20n;
    expect(s.bfree > h.bfree - slack && s.bfree < h.bfree + slack).toBe(true);
    expect(s.bavail <= s.bfree).toBe(true);
    expect(s.namelen).toBe(255);
  });

  test('statfs on a file fid works too', async () => {
    const { c, root } = await ctx.session();
    const f = await walkTo(c, root, 'hello.txt');
    expect((await c.statfs(f)).namelen).toBe(255);
  });
});
