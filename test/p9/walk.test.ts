// Fids and Twalk: fid table rules, partial walks, '..' at the root, bad
// names, symlinks planted in the export, qid types and paths, submounts.
import { expect, jest, test, describe, afterAll } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { useServer, walkTo, uniq } from './fixture.js';
import { O, QTDIR, QTFILE, QTSYMLINK, type Qid, SETATTR } from './proto.js';
import { hostGetxattr, hostSetxattr } from './host.js';

jest.setTimeout(60_000);
const ctx = useServer();

describe('fid table', () => {
  test('an unknown fid is EBADF for every fid-taking message', async () => {
    const { c } = await ctx.session();
    const bad = 0x12345;
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['walk', () => c.walk(bad, c.newFid(), [])],
      ['lopen', () => c.lopen(bad, O.RDONLY)],
      ['lcreate', () => c.lcreate(bad, 'x', O.RDWR, 0o644, 0)],
      ['getattr', () => c.getattr(bad)],
      ['setattr', () => c.setattr(bad, { valid: 1, mode: 0o644 })],
      ['readdir', () => c.readdir(bad, 0, 4096)],
      ['read', () => c.read(bad, 0, 10)],
      ['write', () => c.write(bad, 0, Buffer.from('x'))],
      ['clunk', () => c.clunk(bad)],
      ['remove', () => c.remove(bad)],
      ['statfs', () => c.statfs(bad)],
      ['fsync', () => c.fsync(bad, 0)],
      ['lock', () => c.lock(bad, { type: 1 })],
      ['getlock', () => c.getlock(bad, { type: 1 })],
      ['xattrwalk', () => c.xattrwalk(bad, c.newFid(), '')],
      ['xattrcreate', () => c.xattrcreate(bad, 'user.x', 1, 0)],
      ['readlink', () => c.readlink(bad)],
      ['symlink', () => c.symlink(bad, 'x', 'y', 0)],
      ['mknod', () => c.mknod(bad, 'x', 0o010644, 0, 0, 0)],
      ['link', () => c.link(bad, bad, 'x')],
      ['mkdir', () => c.mkdir(bad, 'x', 0o755, 0)],
      ['rename', () => c.rename(bad, bad, 'x')],
      ['renameat', () => c.renameat(bad, 'x', bad, 'y')],
      ['unlinkat', () => c.unlinkat(bad, 'x', 0)],
    ];
    const wrong: string[] = [];
    for (const [name, f] of calls) {
      try {
        await f();
        wrong.push(`${name}: succeeded`);
      } catch (e) {
        if ((e as { code?: string }).code !== 'EBADF') wrong.push(`${name}: ${(e as Error).message}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  test('walk to a newfid already in use is EBADF; walk with newfid == fid moves the fid', async () => {
    const { c, root } = await ctx.session();
    const a = await walkTo(c, root, 'sub');
    await expect(c.walk(root, a, ['hello.txt'])).rejects.toMatchObject({ code: 'EBADF' });
    // a still points at sub
    expect((await c.getattr(a)).qid.path).toBe(fs.statSync(ctx.tree.p('sub'), { bigint: true }).ino);
    // in-place walk
    const q = await c.walk(a, a, ['deeper']);
    expect(q).toHaveLength(1);
    expect((await c.getattr(a)).qid.path).toBe(fs.statSync(ctx.tree.p('sub/deeper'), { bigint: true }).ino);
  });

  test('Txattrwalk to a newfid in use is EBADF', async () => {
    const { c, root } = await ctx.session();
    const a = await walkTo(c, root, 'hello.txt');
    await expect(c.xattrwalk(root, a, '')).rejects.toMatchObject({ code: 'EBADF' });
  });

  // Walking an open fid in place would turn an open file into another
  // object: refused. A walk from an open fid into a *new* fid is allowed, as
  // QEMU allows it: Linux v9fs can clone a fid it found in the inode's list
  // of open fids (v9fs_fid_find_inode, e.g. after the file was unlinked), so
  // refusing it would break guests. The new fid is not open.
  test('walking an open fid in place is EBADF; a walk from it to a new fid gives an unopened fid', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'sub');
    await c.lopen(d, O.RDONLY | O.DIRECTORY);
    await expect(c.walk(d, d, ['deeper'])).rejects.toMatchObject({ code: 'EBADF' });
    await expect(c.walk(d, d, [])).rejects.toMatchObject({ code: 'EBADF' });
    // d is still the open directory
    expect((await c.readdir(d, 0, 4096)).length).toBeGreaterThan(0);
    const clone = c.newFid();
    expect(await c.walk(d, clone, [])).toEqual([]);
    await expect(c.read(clone, 0, 10)).rejects.toMatchObject({ code: 'EBADF' });
    await c.lopen(clone, O.RDONLY | O.DIRECTORY);
    const below = c.newFid();
    expect(await c.walk(d, below, ['deeper'])).toHaveLength(1);
    expect((await c.getattr(below)).qid.path).toBe(fs.statSync(ctx.tree.p('sub/deeper'), { bigint: true }).ino);
  });

  test('Tlopen on an already open fid is EBADF', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'sub');
    await c.lopen(d, O.RDONLY | O.DIRECTORY);
    await expect(c.lopen(d, O.RDONLY)).rejects.toMatchObject({ code: 'EBADF' });
    const f = await walkTo(c, root, 'hello.txt');
    await c.lopen(f, O.RDONLY);
    await expect(c.lopen(f, O.RDONLY)).rejects.toMatchObject({ code: 'EBADF' });
  });

  test('clunk frees the fid number for reuse; double clunk is EBADF', async () => {
    const { c, root } = await ctx.session();
    const f = await walkTo(c, root, 'hello.txt');
    await c.clunk(f);
    await expect(c.clunk(f)).rejects.toMatchObject({ code: 'EBADF' });
    await c.walk(root, f, ['sub']);
    expect((await c.getattr(f)).qid.type).toBe(QTDIR);
  });
});

describe('Twalk', () => {
  test('nwname 0 clones the fid', async () => {
    const { c, root } = await ctx.session();
    const f = c.newFid();
    expect(await c.walk(root, f, [])).toEqual([]);
    expect((await c.getattr(f)).qid).toEqual((await c.getattr(root)).qid);
    await c.clunk(f);
    expect((await c.getattr(root)).qid.type).toBe(QTDIR);
  });

  test('16 names are allowed, 17 are EINVAL', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'sub/deeper');
    const up16 = Array.from({ length: 16 }, () => '..');
    const f = c.newFid();
    const qids = await c.walk(d, f, up16);
    expect(qids).toHaveLength(16);
    expect(qids[15]!.path).toBe(ctx.rootQid.path);
    await expect(c.walk(d, c.newFid(), [...up16, '..'])).rejects.toMatchObject({ code: 'EINVAL' });
  });

  test('a partial walk returns the qids so far and leaves newfid unbound', async () => {
    const { c, root } = await ctx.session();
    const nf = c.newFid();
    const qids = await c.walk(root, nf, ['sub', 'deeper', 'nope', 'more']);
    expect(qids).toHaveLength(2);
    expect(qids.map((q) => q.type)).toEqual([QTDIR, QTDIR]);
    await expect(c.getattr(nf)).rejects.toMatchObject({ code: 'EBADF' });
    // newfid is still free
    await c.walk(root, nf, ['sub']);
  });

  test('a walk whose first name fails is an Rlerror with that errno', async () => {
    const { c, root } = await ctx.session();
    const nf = c.newFid();
    await expect(c.walk(root, nf, ['nope'])).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(c.walk(root, nf, ['nope', 'sub'])).rejects.toMatchObject({ code: 'ENOENT' });
    const file = await walkTo(c, root, 'hello.txt');
    await expect(c.walk(file, nf, ['x'])).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(c.getattr(nf)).rejects.toMatchObject({ code: 'EBADF' });
  });

  test('.. at the export root stays at the root', async () => {
    const { c, root } = await ctx.session();
    const q = await c.walk(root, c.newFid(), ['..']);
    expect(q).toHaveLength(1);
    expect(q[0]).toEqual(ctx.rootQid);
    const q2 = await c.walk(root, c.newFid(), ['..', '..', '..', 'hello.txt']);
    expect(q2.map((x) => x.path)).toEqual([
      ctx.rootQid.path,
      ctx.rootQid.path,
      ctx.rootQid.path,
      fs.statSync(ctx.tree.p('hello.txt'), { bigint: true }).ino,
    ]);
    const q3 = await c.walk(root, c.newFid(), ['sub', '..', '..', 'outside']);
    // 'outside' is a sibling of the export on the host: it must not be found.
    expect(q3).toHaveLength(3);
    expect(q3[2]).toEqual(ctx.rootQid);
  });

  test('.. from a subdirectory goes to its parent', async () => {
    const { c, root } = await ctx.session();
    const q = await c.walk(root, c.newFid(), ['sub', 'deeper', '..']);
    expect(q[2]!.path).toBe(fs.statSync(ctx.tree.p('sub'), { bigint: true }).ino);
  });

  test('names containing / or NUL, and empty names, are EINVAL', async () => {
    const { c, root } = await ctx.session();
    for (const bad of ['sub/deeper', '/', '../outside', Buffer.from('hello.txt\0'), Buffer.from('a\0b'), '']) {
      await expect(c.walk(root, c.newFid(), [bad])).rejects.toMatchObject({ code: 'EINVAL' });
    }
  });

  test('non-UTF-8 names are carried as bytes', async () => {
    const { c, root } = await ctx.session();
    const name = Buffer.from([0x66, 0xff, 0xfe, 0x80, 0x67]);
    fs.writeFileSync(Buffer.concat([Buffer.from(ctx.tree.p('scratch') + '/'), name]), 'bytes');
    const f = c.newFid();
    const q = await c.walk(root, f, ['scratch', name]);
    expect(q).toHaveLength(2);
    expect(q[1]!.type).toBe(QTFILE);
    await c.lopen(f, O.RDONLY);
    expect((await c.read(f, 0, 100)).toString()).toBe('bytes');
  });
});

describe('symlinks planted in the export', () => {
  const before = new Map<string, string[]>();
  const outside = () => path.join(ctx.tree.base, 'outside');

  test("walking a symlink gives the symlink's own qid and does not follow it", async () => {
    before.set('outside', fs.readdirSync(outside()));
    const { c, root } = await ctx.session();
    for (const name of ['escape', 'escape-rel', 'link-in']) {
      const f = c.newFid();
      const q = await c.walk(root, f, [name]);
      expect(q[0]!.type).toBe(QTSYMLINK);
      expect(q[0]!.path).toBe(fs.lstatSync(ctx.tree.p(name), { bigint: true }).ino);
      const a = await c.getattr(f);
      expect(a.mode & 0o170000).toBe(0o120000);
    }
  });

  test('walking below a symlink stops there: partial from the root, ENOTDIR from the link', async () => {
    const { c, root } = await ctx.session();
    const q = await c.walk(root, c.newFid(), ['escape', 'passwd']);
    expect(q).toHaveLength(1);
    expect(q[0]!.type).toBe(QTSYMLINK);
    const l = await walkTo(c, root, 'escape');
    await expect(c.walk(l, c.newFid(), ['passwd'])).rejects.toMatchObject({ code: 'ENOTDIR' });
    const r = await walkTo(c, root, 'escape-rel');
    await expect(c.walk(r, c.newFid(), ['secret'])).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  test('Tlopen on a symlink is ELOOP (ENOTDIR with O_DIRECTORY)', async () => {
    const { c, root } = await ctx.session();
    for (const name of ['escape', 'escape-rel', 'link-in']) {
      const l = await walkTo(c, root, name);
      await expect(c.lopen(l, O.RDONLY)).rejects.toMatchObject({ code: 'ELOOP' });
      const l2 = await walkTo(c, root, name);
      // With O_DIRECTORY the host kernel itself answers ENOTDIR for a symlink
      // opened O_NOFOLLOW (the directory check comes first); either is a refusal.
      await expect(c.lopen(l2, O.RDONLY | O.DIRECTORY)).rejects.toMatchObject({ code: expect.stringMatching(/^(ELOOP|ENOTDIR)$/) });
    }
  });

  test('a symlink as the directory fid of create/mkdir/symlink/mknod/link/renameat is ENOTDIR', async () => {
    const { c, root } = await ctx.session();
    const n = uniq('pwn');
    // Only the link to ../outside is used here: a server that wrongly follows
    // it damages a scratch sibling of the export, not the host's /etc.
    for (const name of ['escape-rel']) {
      const mk = async () => walkTo(c, root, name);
      fs.writeFileSync(ctx.tree.p('victim'), 'v');
      const file = await walkTo(c, root, 'victim');
      const wrong: string[] = [];
      const expectNotDir = async (what: string, p: Promise<unknown>) => {
        try {
          await p;
          wrong.push(`${what}: succeeded`);
        } catch (e) {
          if ((e as { code?: string }).code !== 'ENOTDIR') wrong.push(`${what}: ${(e as Error).message}`);
        }
      };
      await expectNotDir('lcreate', c.lcreate(await mk(), n, O.RDWR | O.CREAT, 0o644, 0));
      await expectNotDir('mkdir', c.mkdir(await mk(), n, 0o755, 0));
      await expectNotDir('symlink', c.symlink(await mk(), n, '/', 0));
      await expectNotDir('mknod', c.mknod(await mk(), n, 0o010644, 0, 0, 0));
      await expectNotDir('link', c.link(await mk(), file, n));
      await expectNotDir('renameat(new dir)', c.renameat(root, 'victim', await mk(), n));
      await expectNotDir('renameat(old dir)', c.renameat(await mk(), 'secret', root, n));
      await expectNotDir('rename', c.rename(file, await mk(), n));
      await expectNotDir('unlinkat', c.unlinkat(await mk(), 'secret', 0));
      expect(wrong).toEqual([]);
    }
    // Nothing appeared or vanished outside the export, and the victim is still in place.
    expect(fs.readdirSync(outside()).sort()).toEqual(['secret']);
    expect(fs.existsSync(ctx.tree.p('victim'))).toBe(true);
  });

  test('setattr and xattrs through a symlink fid act on the link, never on what it points to', async () => {
    const out = outside();
    fs.chmodSync(out, 0o755);
    fs.utimesSync(out, 1_000_000, 1_000_000);
    hostSetxattr(out, 'user.mark', Buffer.from('outside'));
    const before = fs.statSync(out, { bigint: true });
    const { c, root } = await ctx.session();
    const link = () => walkTo(c, root, 'escape-rel');
    const tries: Array<[string, () => Promise<unknown>]> = [
      ['mode', async () => c.setattr(await link(), { valid: SETATTR.MODE, mode: 0o777 })],
      ['uid/gid', async () => c.setattr(await link(), { valid: SETATTR.UID | SETATTR.GID, uid: 4242, gid: 4242 })],
      [
        'times',
        async () =>
          c.setattr(await link(), { valid: SETATTR.ATIME | SETATTR.MTIME | SETATTR.ATIME_SET | SETATTR.MTIME_SET, atimeSec: 5, mtimeSec: 5 }),
      ],
      ['size', async () => c.setattr(await link(), { valid: SETATTR.SIZE, size: 0 })],
      [
        'xattrcreate',
        async () => {
          const x = await link();
          await c.xattrcreate(x, 'user.pwn', 3, 0);
          await c.write(x, 0, Buffer.from('pwn'));
          await c.clunk(x);
        },
      ],
    ];
    for (const [, f] of tries) {
      try {
        await f();
      } catch {
        /* refusals are fine */
      }
    }
    const after = fs.statSync(out, { bigint: true });
    expect({ mode: after.mode, uid: after.uid, gid: after.gid, mtime: after.mtimeNs }).toEqual({
      mode: before.mode,
      uid: before.uid,
      gid: before.gid,
      mtime: before.mtimeNs,
    });
    expect(hostGetxattr(out, 'user.pwn')).toBeNull();
    // The xattr list through the link is the link's own, not the directory's.
    const l = await link();
    const x = c.newFid();
    try {
      const n = await c.xattrwalk(l, x, '');
      const names = (await c.read(x, 0, Math.max(1, Number(n)))).toString().split('\0');
      expect(names).not.toContain('user.mark');
    } catch {
      /* refusing is fine */
    }
    try {
      await c.xattrwalk(await link(), c.newFid(), 'user.mark');
      throw new Error("read the outside directory's xattr through the link");
    } catch (e) {
      expect((e as { code?: string }).code).toBeDefined();
    }
  });

  test('a symlink to a directory inside the export is not followed either', async () => {
    fs.symlinkSync('sub', ctx.tree.p('sublink'));
    const { c, root } = await ctx.session();
    const q = await c.walk(root, c.newFid(), ['sublink', 'deeper']);
    expect(q).toHaveLength(1);
    expect(q[0]!.type).toBe(QTSYMLINK);
  });

  test('the outside tree is untouched', () => {
    expect(fs.readFileSync(path.join(outside(), 'secret'), 'utf8')).toBe('outside-secret\n');
    expect(fs.readdirSync(outside()).sort()).toEqual(['secret']);
  });
});

describe('qids', () => {
  test('qid types: 0x80 directory, 0x02 symlink, 0 regular and special files', async () => {
    spawnSync('mkfifo', [ctx.tree.p('scratch/fifo-q')]);
    const { c, root } = await ctx.session();
    const expectType = async (p: string, t: number) => {
      const q = await c.walk(root, c.newFid(), p.split('/'));
      expect({ p, t: q[q.length - 1]!.type }).toEqual({ p, t });
    };
    await expectType('sub', QTDIR);
    await expectType('link-in', QTSYMLINK);
    await expectType('hello.txt', QTFILE);
    await expectType('scratch/fifo-q', QTFILE);
  });

  test("qid.path equals the host inode number on the export's filesystem", async () => {
    const { c, root } = await ctx.session();
    for (const p of ['sub', 'sub/deeper', 'sub/deeper/leaf.bin', 'hello.txt', 'big.bin', 'escape']) {
      const q = await c.walk(root, c.newFid(), p.split('/'));
      expect(q[q.length - 1]!.path).toBe(fs.lstatSync(ctx.tree.p(p), { bigint: true }).ino);
    }
    expect(ctx.rootQid.path).toBe(fs.statSync(ctx.tree.dir, { bigint: true }).ino);
  });

  test('the same file reached by two paths (hard links) has one qid.path', async () => {
    fs.writeFileSync(ctx.tree.p('scratch/h1'), 'x');
    fs.linkSync(ctx.tree.p('scratch/h1'), ctx.tree.p('scratch/h2'));
    const { c, root } = await ctx.session();
    const a = await c.walk(root, c.newFid(), ['scratch', 'h1']);
    const b = await c.walk(root, c.newFid(), ['scratch', 'h2']);
    expect(a[1]!.path).toBe(b[1]!.path);
  });
});

describe('other filesystems mounted inside the export', () => {
  const mounts: string[] = [];
  afterAll(() => {
    for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
  });

  test('files on two tmpfs mounts and on the export get distinct qid paths', async () => {
    const m1 = ctx.tree.p('mnt1');
    const m2 = ctx.tree.p('mnt2');
    for (const m of [m1, m2]) {
      fs.mkdirSync(m);
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', m]);
      if (r.status !== 0) throw new Error(`mount tmpfs failed: ${r.stderr}`);
      mounts.push(m);
      for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(m, `f${i}`), String(i));
      fs.mkdirSync(path.join(m, 'd'));
    }
    // Same-named files in the two tmpfs instances normally have equal inode
    // numbers on the host; that is what makes this test able to fail.
    const hostInos = new Set([m1, m2].flatMap((m) => fs.readdirSync(m).map((n) => fs.lstatSync(path.join(m, n)).ino)));
    const { c, root } = await ctx.session();
    const seen = new Map<bigint, string>();
    const clash: string[] = [];
    const add = (q: Qid, what: string) => {
      const prev = seen.get(q.path);
      if (prev !== undefined && prev !== what) clash.push(`${what} and ${prev} share qid.path ${q.path}`);
      seen.set(q.path, what);
    };
    add(ctx.rootQid, '/');
    for (const p of ['sub', 'sub/deeper', 'sub/deeper/leaf.bin', 'hello.txt', 'big.bin', 'scratch']) {
      const q = await c.walk(root, c.newFid(), p.split('/'));
      add(q[q.length - 1]!, p);
    }
    for (const m of ['mnt1', 'mnt2']) {
      const q = await c.walk(root, c.newFid(), [m]);
      expect(q[0]!.type).toBe(QTDIR);
      add(q[0]!, m);
      for (const n of [...Array.from({ length: 20 }, (_, i) => `f${i}`), 'd']) {
        const q2 = await c.walk(root, c.newFid(), [m, n]);
        expect(q2).toHaveLength(2);
        add(q2[1]!, `${m}/${n}`);
      }
    }
    expect(clash).toEqual([]);
    expect(hostInos.size).toBeGreaterThan(0);
    // Reading through the mount works and '..' from the mount root returns to the export.
    const f = c.newFid();
    await c.walk(root, f, ['mnt1', 'f7']);
    await c.lopen(f, O.RDONLY);
    expect((await c.read(f, 0, 10)).toString()).toBe('7');
    const up = await c.walk(root, c.newFid(), ['mnt2', '..']);
    expect(up[1]!.path).toBe(ctx.rootQid.path);
    // A mount point's qid is stable across walks.
    const again = await c.walk(root, c.newFid(), ['mnt1', 'f3']);
    const again2 = await c.walk(root, c.newFid(), ['mnt1', 'f3']);
    expect(again[1]!.path).toBe(again2[1]!.path);
  });
});
