// Treaddir, and the namespace messages: Tmkdir, Tsymlink, Treadlink, Tmknod,
// Tlink, Trename, Trenameat, Tunlinkat, Tremove.
import { expect, jest, test, describe } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import { useServer, walkTo, openAt, uniq } from './fixture.js';
import { AT_REMOVEDIR, type DirEntry, O, QTDIR, QTFILE, QTSYMLINK, IOHDRSZ_READ } from './proto.js';

jest.setTimeout(120_000);
const ctx = useServer();

const DT = { FIFO: 1, CHR: 2, DIR: 4, BLK: 6, REG: 8, LNK: 10, SOCK: 12 };
const names = (es: DirEntry[]) => es.map((e) => e.name.toString('latin1'));

describe('Treaddir', () => {
  test('lists . and .. and every entry with type and qid matching the host', async () => {
    const { c, root } = await ctx.session();
    const d = await openAt(c, root, '', O.RDONLY | O.DIRECTORY);
    const es = await c.readdirAll(d);
    const host = fs.readdirSync(ctx.tree.dir);
    expect(names(es).sort()).toEqual(['.', '..', ...host].sort());
    for (const e of es) {
      const n = e.name.toString();
      if (n === '.' || n === '..') continue;
      const st = fs.lstatSync(path.join(ctx.tree.dir, n), { bigint: true });
      const dt = st.isDirectory() ? DT.DIR : st.isSymbolicLink() ? DT.LNK : st.isFile() ? DT.REG : -1;
      const qt = st.isDirectory() ? QTDIR : st.isSymbolicLink() ? QTSYMLINK : QTFILE;
      expect({ n, type: e.type, qtype: e.qid.type, ino: e.qid.path }).toEqual({ n, type: dt, qtype: qt, ino: st.ino });
    }
    const dot = es.find((e) => e.name.toString() === '.')!;
    expect(dot.qid.path).toBe(ctx.rootQid.path);
  });

  test('offsets are stable: resuming from any returned offset gives exactly the rest', async () => {
    const dir = ctx.tree.p('scratch', uniq('resume'));
    fs.mkdirSync(dir);
    for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(dir, `n${i}-${'x'.repeat(i % 37)}`), '');
    const { c, root } = await ctx.session();
    const d = await openAt(c, root, path.relative(ctx.tree.dir, dir), O.RDONLY | O.DIRECTORY);
    // Small counts force many round trips.
    const all = await c.readdirAll(d, 300);
    expect(all).toHaveLength(202);
    expect(new Set(names(all)).size).toBe(202);
    for (const i of [0, 1, 2, 50, 99, 150, 199, 200]) {
      const rest = await c.readdirAll(d, 300, all[i]!.offset);
      expect(names(rest)).toEqual(names(all.slice(i + 1)));
    }
    expect(await c.readdir(d, all[all.length - 1]!.offset, 4096)).toEqual([]);
    // Offset 0 rewinds.
    expect(names(await c.readdirAll(d))).toEqual(names(all));
  });

  test('a reply never exceeds count nor msize - 11', async () => {
    const { c, root } = await ctx.session({ msize: 4096 });
    const d = await openAt(c, root, 'scratch', O.RDONLY | O.DIRECTORY);
    for (const count of [64, 100, 1000, 4096 - IOHDRSZ_READ, 100000]) {
      const raw = await c.readdirRaw(d, 0, count);
      expect(raw.length).toBeLessThanOrEqual(Math.min(count, c.msize - IOHDRSZ_READ));
    }
    expect(c.violations).toEqual([]);
  });

  test('Treaddir on an open regular file is ENOTDIR', async () => {
    const { c, root } = await ctx.session();
    const f = await openAt(c, root, 'hello.txt', O.RDONLY);
    await expect(c.readdir(f, 0, 4096)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  test('a directory of 100 000 entries returns every name exactly once', async () => {
    const dir = ctx.tree.p('huge');
    fs.mkdirSync(dir);
    const N = 100_000;
    for (let i = 0; i < N; i++) fs.closeSync(fs.openSync(path.join(dir, `entry-${i}`), 'w'));
    const { c, root } = await ctx.session({ msize: 1 << 20 });
    const d = await openAt(c, root, 'huge', O.RDONLY | O.DIRECTORY);
    const all = await c.readdirAll(d);
    const seen = new Set<string>();
    const dup: string[] = [];
    for (const n of names(all)) {
      if (seen.has(n)) dup.push(n);
      seen.add(n);
    }
    expect(dup.slice(0, 10)).toEqual([]);
    expect(seen.size).toBe(N + 2);
    for (let i = 0; i < N; i += 997) expect(seen.has(`entry-${i}`)).toBe(true);
    fs.rmSync(dir, { recursive: true });
  });
});

describe('Tmkdir', () => {
  test('creates a directory with mode and gid; EEXIST on an existing name', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    const name = uniq('md');
    const q = await c.mkdir(d, name, 0o750, 777);
    const st = fs.statSync(ctx.tree.p('scratch', name), { bigint: true });
    expect(q.type).toBe(QTDIR);
    expect(q.path).toBe(st.ino);
    expect(Number(st.mode)).toBe(0o40750);
    expect(Number(st.gid)).toBe(777);
    await expect(c.mkdir(d, name, 0o750, 0)).rejects.toMatchObject({ code: 'EEXIST' });
    // The dir fid is not consumed.
    expect((await c.getattr(d)).qid.type).toBe(QTDIR);
  });

  test('bad names and non-directory fids are refused', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    for (const bad of ['a/b', '', Buffer.from('x\0y')]) {
      await expect(c.mkdir(d, bad, 0o755, 0)).rejects.toMatchObject({ code: 'EINVAL' });
    }
    await expect(c.mkdir(await walkTo(c, root, 'hello.txt'), 'x', 0o755, 0)).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(c.mkdir(d, 'nope/..', 0o755, 0)).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('Tsymlink and Treadlink', () => {
  test('creates a symlink whose target is stored as given; readlink returns it', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    for (const target of ['plain', '../../../../../etc/shadow', '/absolute/path', Buffer.from([0x61, 0xff, 0x62])]) {
      const name = uniq('sl');
      const q = await c.symlink(d, name, target, 55);
      expect(q.type).toBe(QTSYMLINK);
      const st = fs.lstatSync(ctx.tree.p('scratch', name), { bigint: true });
      expect(st.isSymbolicLink()).toBe(true);
      expect(q.path).toBe(st.ino);
      expect(Number(st.gid)).toBe(55);
      const tb = typeof target === 'string' ? Buffer.from(target) : target;
      expect(fs.readlinkSync(ctx.tree.p('scratch', name), { encoding: 'buffer' }).equals(tb)).toBe(true);
      const l = await walkTo(c, d, name);
      expect((await c.readlinkBuf(l)).equals(tb)).toBe(true);
    }
  });

  test('EEXIST on an existing name; readlink of a non-symlink is EINVAL', async () => {
    const { c, root } = await ctx.session();
    await expect(c.symlink(root, 'hello.txt', 'x', 0)).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(c.readlink(await walkTo(c, root, 'hello.txt'))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(c.readlink(await walkTo(c, root, 'sub'))).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('Tmknod', () => {
  test('fifo, character device, socket and regular file', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    const fifo = uniq('fifo');
    const q1 = await c.mknod(d, fifo, 0o010640, 0, 0, 0);
    expect(q1.type).toBe(QTFILE);
    const s1 = fs.lstatSync(ctx.tree.p('scratch', fifo));
    expect(s1.isFIFO()).toBe(true);
    expect(s1.mode & 0o7777).toBe(0o640);
    const chr = uniq('chr');
    await c.mknod(d, chr, 0o020600, 1, 3, 42);
    const s2 = fs.lstatSync(ctx.tree.p('scratch', chr));
    expect(s2.isCharacterDevice()).toBe(true);
    expect(s2.rdev).toBe((1 << 8) | 3);
    expect(s2.gid).toBe(42);
    const big = uniq('chr-big');
    await c.mknod(d, big, 0o020600, 300, 70000, 0);
    // glibc makedev(300, 70000)
    const mk = (ma: number, mi: number) =>
      BigInt(mi & 0xff) | (BigInt(ma & 0xfff) << 8n) | (BigInt(mi & ~0xff) << 12n) | (BigInt(ma & ~0xfff) << 32n);
    expect(fs.lstatSync(ctx.tree.p('scratch', big), { bigint: true }).rdev).toBe(mk(300, 70000));
    const sock = uniq('sock');
    await c.mknod(d, sock, 0o140644, 0, 0, 0);
    expect(fs.lstatSync(ctx.tree.p('scratch', sock)).isSocket()).toBe(true);
    const reg = uniq('reg');
    await c.mknod(d, reg, 0o100600, 0, 0, 0);
    expect(fs.lstatSync(ctx.tree.p('scratch', reg)).isFile()).toBe(true);
    // The device node reports its rdev through getattr.
    const f = await walkTo(c, d, chr);
    expect((await c.getattr(f)).rdev).toBe(BigInt((1 << 8) | 3));
  });

  test('EEXIST; bad names', async () => {
    const { c, root } = await ctx.session();
    await expect(c.mknod(root, 'hello.txt', 0o010644, 0, 0, 0)).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(c.mknod(root, 'scratch/x', 0o010644, 0, 0, 0)).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('Tlink', () => {
  test('creates a hard link', async () => {
    const { c, root } = await ctx.session();
    const name = uniq('lsrc');
    fs.writeFileSync(ctx.tree.p('scratch', name), 'linked');
    const d = await walkTo(c, root, 'scratch');
    const f = await walkTo(c, d, name);
    await c.link(d, f, `${name}-2`);
    expect(fs.statSync(ctx.tree.p('scratch', `${name}-2`)).ino).toBe(fs.statSync(ctx.tree.p('scratch', name)).ino);
    expect(fs.statSync(ctx.tree.p('scratch', name)).nlink).toBe(2);
    await expect(c.link(d, f, `${name}-2`)).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(c.link(d, f, 'a/b')).rejects.toMatchObject({ code: 'EINVAL' });
  });

  test('linking a directory is EPERM, onto an existing name EEXIST (as link(2) orders them); a file dfid is ENOTDIR', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    await expect(c.link(d, await walkTo(c, root, 'sub'), uniq('dl'))).rejects.toMatchObject({ code: 'EPERM' });
    await expect(c.link(root, await walkTo(c, root, 'sub'), 'hello.txt')).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(c.link(await walkTo(c, root, 'hello.txt'), await walkTo(c, root, 'big.bin'), 'x')).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});

describe('Trename and Trenameat', () => {
  test("Trename moves the fid's file; the fid keeps pointing at it", async () => {
    const { c, root } = await ctx.session();
    const name = uniq('rn');
    fs.writeFileSync(ctx.tree.p('scratch', name), 'moving');
    const f = await walkTo(c, root, `scratch/${name}`);
    const ino = fs.statSync(ctx.tree.p('scratch', name), { bigint: true }).ino;
    const sub = await walkTo(c, root, 'sub');
    await c.rename(f, sub, `${name}-moved`);
    expect(fs.existsSync(ctx.tree.p('scratch', name))).toBe(false);
    expect(fs.readFileSync(ctx.tree.p('sub', `${name}-moved`), 'utf8')).toBe('moving');
    expect((await c.getattr(f)).qid.path).toBe(ino);
    await c.lopen(f, O.RDONLY);
    expect((await c.read(f, 0, 100)).toString()).toBe('moving');
    fs.rmSync(ctx.tree.p('sub', `${name}-moved`));
  });

  test('Trenameat renames across directories and replaces an existing target', async () => {
    const { c, root } = await ctx.session();
    const a = uniq('ra');
    fs.writeFileSync(ctx.tree.p('scratch', a), 'A');
    fs.writeFileSync(ctx.tree.p('scratch', `${a}-victim`), 'B');
    const s = await walkTo(c, root, 'scratch');
    await c.renameat(s, a, s, `${a}-victim`);
    expect(fs.readFileSync(ctx.tree.p('scratch', `${a}-victim`), 'utf8')).toBe('A');
    expect(fs.existsSync(ctx.tree.p('scratch', a))).toBe(false);
    const sub = await walkTo(c, root, 'sub');
    await c.renameat(s, `${a}-victim`, sub, a);
    expect(fs.readFileSync(ctx.tree.p('sub', a), 'utf8')).toBe('A');
    await c.renameat(sub, a, s, a);
  });

  test('Trenameat errors: missing source ENOENT, dir into itself EINVAL, bad names EINVAL', async () => {
    const { c, root } = await ctx.session();
    const s = await walkTo(c, root, 'scratch');
    await expect(c.renameat(s, uniq('missing'), s, 'x')).rejects.toMatchObject({ code: 'ENOENT' });
    const dname = uniq('rd');
    fs.mkdirSync(ctx.tree.p('scratch', dname));
    const inner = await walkTo(c, s, dname);
    await expect(c.renameat(s, dname, inner, 'self')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(c.renameat(s, dname, s, 'a/b')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(c.renameat(s, 'a/b', s, 'c')).rejects.toMatchObject({ code: 'EINVAL' });
    for (const bad of ['.', '..']) {
      try {
        await c.renameat(inner, bad, s, uniq('dot'));
        throw new Error(`renameat of ${bad} succeeded`);
      } catch (e) {
        expect((e as { code?: string }).code).toMatch(/^(EINVAL|EBUSY|ENOTEMPTY|EEXIST)$/);
      }
    }
    expect(fs.existsSync(ctx.tree.p('scratch', dname))).toBe(true);
    expect(fs.existsSync(ctx.tree.p('scratch'))).toBe(true);
  });
});

describe('Tunlinkat', () => {
  test('removes files and (with AT_REMOVEDIR) directories; wrong flag gives EISDIR/ENOTDIR', async () => {
    const { c, root } = await ctx.session();
    const s = await walkTo(c, root, 'scratch');
    const f = uniq('uf');
    const d = uniq('ud');
    fs.writeFileSync(ctx.tree.p('scratch', f), '');
    fs.mkdirSync(ctx.tree.p('scratch', d));
    await expect(c.unlinkat(s, d, 0)).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(c.unlinkat(s, f, AT_REMOVEDIR)).rejects.toMatchObject({ code: 'ENOTDIR' });
    await c.unlinkat(s, f, 0);
    await c.unlinkat(s, d, AT_REMOVEDIR);
    expect(fs.existsSync(ctx.tree.p('scratch', f))).toBe(false);
    expect(fs.existsSync(ctx.tree.p('scratch', d))).toBe(false);
    await expect(c.unlinkat(s, f, 0)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('a non-empty directory is ENOTEMPTY', async () => {
    const { c, root } = await ctx.session();
    await expect(c.unlinkat(root, 'sub', AT_REMOVEDIR)).rejects.toMatchObject({ code: 'ENOTEMPTY' });
  });

  test('. and .. and names with / cannot remove anything above', async () => {
    const { c, root } = await ctx.session();
    const dname = uniq('dotdot');
    fs.mkdirSync(ctx.tree.p('scratch', dname));
    const inner = await walkTo(c, root, `scratch/${dname}`);
    for (const bad of ['.', '..']) {
      try {
        await c.unlinkat(inner, bad, AT_REMOVEDIR);
        throw new Error(`unlinkat ${bad} succeeded`);
      } catch (e) {
        expect((e as { code?: string }).code).toMatch(/^(EINVAL|EBUSY|ENOTEMPTY)$/);
      }
    }
    await expect(c.unlinkat(root, `scratch/${dname}`, AT_REMOVEDIR)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(fs.existsSync(ctx.tree.p('scratch', dname))).toBe(true);
  });
});

describe('Tremove', () => {
  test('removes the file and clunks the fid', async () => {
    const { c, root } = await ctx.session();
    const n = uniq('rm');
    fs.writeFileSync(ctx.tree.p('scratch', n), '');
    const f = await walkTo(c, root, `scratch/${n}`);
    await c.remove(f);
    expect(fs.existsSync(ctx.tree.p('scratch', n))).toBe(false);
    await expect(c.getattr(f)).rejects.toMatchObject({ code: 'EBADF' });
  });

  test('clunks the fid even when the remove fails', async () => {
    const { c, root } = await ctx.session();
    const f = await walkTo(c, root, 'sub');
    await expect(c.remove(f)).rejects.toMatchObject({ code: 'ENOTEMPTY' });
    await expect(c.getattr(f)).rejects.toMatchObject({ code: 'EBADF' });
    expect(fs.existsSync(ctx.tree.p('sub'))).toBe(true);
  });

  test('removes empty directories', async () => {
    const { c, root } = await ctx.session();
    const n = uniq('rmd');
    fs.mkdirSync(ctx.tree.p('scratch', n));
    await c.remove(await walkTo(c, root, `scratch/${n}`));
    expect(fs.existsSync(ctx.tree.p('scratch', n))).toBe(false);
  });

  test('removing the export root fails and leaves it in place', async () => {
    const base = path.join(ctx.tree.base, 'emptyexp');
    // Use a second, empty export so that a wrongful rmdir would succeed.
    fs.mkdirSync(base);
    const { startTarget } = await import('./fixture.js');
    const srv = await startTarget(base);
    try {
      const { P9Client } = await import('./client.js');
      const { c, root } = await P9Client.session(srv.address, { aname: base });
      await expect(c.remove(root)).rejects.toHaveProperty('code');
      expect(fs.existsSync(base)).toBe(true);
      await c.close();
    } finally {
      await srv.close();
    }
  });
});
