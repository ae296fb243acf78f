// Tlopen, Tlcreate, Tread, Twrite, Tfsync: flags, clamps, EOF, errors.
import { expect, jest, test, describe } from '@jest/globals';
import fs from 'node:fs';
import { useServer, walkTo, openAt, uniq } from './fixture.js';
import { IOHDRSZ_READ, IOHDRSZ_WRITE, O, QTFILE, T, Writer } from './proto.js';
import { bigContent } from '../support/tree.js';
import { spawnSync } from 'node:child_process';
import { unblockFifoAfter } from './host.js';

jest.setTimeout(30_000);
const ctx = useServer();

describe('Tread', () => {
  test('reads the host content at any offset; at and past EOF returns 0 bytes', async () => {
    const { c, root } = await ctx.session();
    const f = await openAt(c, root, 'hello.txt', O.RDONLY);
    expect((await c.read(f, 0, 5)).toString()).toBe('hello');
    expect((await c.read(f, 7, 100)).toString()).toBe('world\n');
    const size = fs.statSync(ctx.tree.p('hello.txt')).size;
    expect((await c.read(f, size, 100)).length).toBe(0);
    expect((await c.read(f, size + 1000, 100)).length).toBe(0);
    expect((await c.read(f, 2n ** 62n, 100)).length).toBe(0);
    expect((await c.read(f, 0, 0)).length).toBe(0);
  });

  test('count is clamped to msize - 11', async () => {
    for (const msize of [4096, 65536]) {
      const { c, root } = await ctx.session({ msize });
      const f = await openAt(c, root, 'big.bin', O.RDONLY);
      const want = bigContent();
      const got = await c.read(f, 100, 0xffffffff);
      expect(got.length).toBe(c.msize - IOHDRSZ_READ);
      expect(got.equals(want.subarray(100, 100 + got.length))).toBe(true);
      // The client checks each reply against msize; a violation fails the test.
      expect(c.violations).toEqual([]);
    }
  });

  test('a 1 MiB file reads back intact with many reads in flight', async () => {
    const { c, root } = await ctx.session({ msize: 1 << 20 });
    const f = await openAt(c, root, 'big.bin', O.RDONLY);
    const want = bigContent();
    const chunk = 65536;
    const parts = await Promise.all(Array.from({ length: Math.ceil(want.length / chunk) }, (_, i) => c.read(f, i * chunk, chunk)));
    expect(Buffer.concat(parts).equals(want)).toBe(true);
    expect((await c.readAll(f)).equals(want)).toBe(true);
  });

  test('read on a fid that is not open, or opened write-only, fails', async () => {
    const { c, root } = await ctx.session();
    const f = await walkTo(c, root, 'hello.txt');
    await expect(c.read(f, 0, 10)).rejects.toMatchObject({ code: 'EBADF' });
    const w = await openAt(c, root, 'hello.txt', O.WRONLY);
    await expect(c.read(w, 0, 10)).rejects.toMatchObject({ code: 'EBADF' });
  });

  test('read on a directory opened with Tlopen is EISDIR (directories are read with Treaddir)', async () => {
    const { c, root } = await ctx.session();
    const d = await openAt(c, root, 'sub', O.RDONLY | O.DIRECTORY);
    await expect(c.read(d, 0, 100)).rejects.toMatchObject({ code: 'EISDIR' });
  });
});

describe('Twrite', () => {
  test('writes land on the host at the given offsets', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    const name = uniq('w');
    await c.lcreate(d, name, O.RDWR | O.CREAT, 0o644, 0);
    expect(await c.write(d, 0, Buffer.from('0123456789'))).toBe(10);
    expect(await c.write(d, 3, Buffer.from('abc'))).toBe(3);
    expect(await c.write(d, 20, Buffer.from('z'))).toBe(1);
    const host = fs.readFileSync(ctx.tree.p('scratch', name));
    expect(host.equals(Buffer.concat([Buffer.from('012abc6789'), Buffer.alloc(10), Buffer.from('z')]))).toBe(true);
    expect((await c.read(d, 0, 100)).equals(host)).toBe(true);
  });

  test('the largest write that fits msize is accepted whole', async () => {
    const { c, root } = await ctx.session({ msize: 8192 });
    const d = await walkTo(c, root, 'scratch');
    const name = uniq('wmax');
    await c.lcreate(d, name, O.RDWR | O.CREAT, 0o644, 0);
    const data = Buffer.alloc(c.msize - IOHDRSZ_WRITE, 0x61);
    expect(await c.write(d, 0, data)).toBe(data.length);
    expect(fs.statSync(ctx.tree.p('scratch', name)).size).toBe(data.length);
  });

  test('a Twrite that arrives in pieces (its header split, its data over many reads) lands whole', async () => {
    const { c, root } = await ctx.session({ msize: 1 << 20 });
    const d = await walkTo(c, root, 'scratch');
    const name = uniq('wpieces');
    await c.lcreate(d, name, O.RDWR | O.CREAT, 0o644, 0);
    const data = Buffer.alloc(300_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
    const frameOf = (tag: number, body: Buffer): Buffer => {
      const h = Buffer.alloc(7);
      h.writeUInt32LE(7 + body.length, 0);
      h.writeUInt8(T.write, 4);
      h.writeUInt16LE(tag, 5);
      return Buffer.concat([h, body]);
    };
    const pieces = async (frame: Buffer, cuts: number[]): Promise<void> => {
      let at = 0;
      for (const cut of [...cuts, frame.length]) {
        c.sendRaw(frame.subarray(at, cut));
        at = cut;
        await new Promise((r) => setTimeout(r, 2)); // each piece its own read on the server
      }
    };
    // At 0: the fixed part (23 bytes) arrives split, at its count field; at 300000: whole, then the data in pieces.
    for (const [offset, cuts] of [
      [0, [21, 5000, 70_000, 200_000]],
      [data.length, [23, 24, 131_072]],
    ] as const) {
      const tag = c.freeTag();
      const frame = frameOf(tag, new Writer().u32(d).u64(offset).u32(data.length).bytes(data).done());
      // The first 7 bytes (they name the tag) go at once; the rest in pieces.
      const reply = c.rawRequest(frame.subarray(0, 7), { timeoutMs: 10_000 });
      await pieces(
        frame.subarray(7),
        cuts.map((x) => x - 7).filter((x) => x > 0),
      );
      const r = await reply;
      expect(r.type).toBe(T.write + 1);
      expect(r.body.readUInt32LE(0)).toBe(data.length);
    }
    const host = fs.readFileSync(ctx.tree.p('scratch', name));
    expect(host.equals(Buffer.concat([data, data]))).toBe(true);
    // Back to back: each frame ends inside a socket read that holds the start of the next.
    const odd = data.subarray(0, 100_003);
    const at = (i: number) => 2 * data.length + i * odd.length;
    expect(await Promise.all(Array.from({ length: 8 }, (_, i) => c.write(d, at(i), odd)))).toEqual(Array(8).fill(odd.length));
    const after = fs.readFileSync(ctx.tree.p('scratch', name));
    for (let i = 0; i < 8; i++) expect(after.subarray(at(i), at(i) + odd.length).equals(odd)).toBe(true);
    // A count beyond the frame's data is refused, and the connection goes on.
    const tag = c.freeTag();
    const bad = frameOf(tag, new Writer().u32(d).u64(0).u32(1000).bytes(Buffer.alloc(10)).done());
    await expect(c.rawRequest(bad)).rejects.toMatchObject({ code: 'EPROTO' });
    expect((await c.read(d, 0, 4)).equals(data.subarray(0, 4))).toBe(true);
  });

  test('a zero-length write succeeds and writes nothing', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    const name = uniq('w0');
    await c.lcreate(d, name, O.RDWR | O.CREAT, 0o644, 0);
    expect(await c.write(d, 0, Buffer.alloc(0))).toBe(0);
    expect(fs.statSync(ctx.tree.p('scratch', name)).size).toBe(0);
  });

  test('write on a read-only fid is EBADF, on an unopened fid EBADF', async () => {
    const { c, root } = await ctx.session();
    const before = fs.readFileSync(ctx.tree.p('hello.txt'));
    const r = await openAt(c, root, 'hello.txt', O.RDONLY);
    await expect(c.write(r, 0, Buffer.from('X'))).rejects.toMatchObject({ code: 'EBADF' });
    const u = await walkTo(c, root, 'hello.txt');
    await expect(c.write(u, 0, Buffer.from('X'))).rejects.toMatchObject({ code: 'EBADF' });
    expect(fs.readFileSync(ctx.tree.p('hello.txt')).equals(before)).toBe(true);
  });

  test('O_APPEND writes go to the end whatever the offset', async () => {
    const { c, root } = await ctx.session();
    const name = uniq('app');
    fs.writeFileSync(ctx.tree.p('scratch', name), 'start');
    const f = await openAt(c, root, `scratch/${name}`, O.WRONLY | O.APPEND);
    await c.write(f, 0, Buffer.from('-end'));
    expect(fs.readFileSync(ctx.tree.p('scratch', name), 'utf8')).toBe('start-end');
  });
});

describe('Tlopen', () => {
  test('O_TRUNC truncates; the qid matches the host inode', async () => {
    const { c, root } = await ctx.session();
    const name = uniq('tr');
    fs.writeFileSync(ctx.tree.p('scratch', name), 'data');
    const f = await walkTo(c, root, `scratch/${name}`);
    const r = await c.lopen(f, O.WRONLY | O.TRUNC);
    expect(r.qid.type).toBe(QTFILE);
    expect(r.qid.path).toBe(fs.statSync(ctx.tree.p('scratch', name), { bigint: true }).ino);
    expect(fs.statSync(ctx.tree.p('scratch', name)).size).toBe(0);
  });

  test('opening a directory for writing is EISDIR; O_DIRECTORY on a file is ENOTDIR', async () => {
    const { c, root } = await ctx.session();
    await expect(c.lopen(await walkTo(c, root, 'sub'), O.RDWR)).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(c.lopen(await walkTo(c, root, 'hello.txt'), O.RDONLY | O.DIRECTORY)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  test('O_CREAT|O_EXCL through Tlopen on an existing file cannot create or clobber anything', async () => {
    const { c, root } = await ctx.session();
    const before = fs.readFileSync(ctx.tree.p('hello.txt'));
    const f = await walkTo(c, root, 'hello.txt');
    try {
      await c.lopen(f, O.RDWR | O.CREAT | O.EXCL);
    } catch {
      /* an error is fine */
    }
    expect(fs.readFileSync(ctx.tree.p('hello.txt')).equals(before)).toBe(true);
  });
});

describe('special files', () => {
  test('Tlopen of a FIFO with no peer does not stall other clients', async () => {
    const name = uniq('fifo');
    const host = ctx.tree.p('scratch', name);
    expect(spawnSync('mkfifo', ['-m', '0666', host]).status).toBe(0);
    // A server that opens the FIFO synchronously on its event loop stalls
    // until this host process opens the other end, 3 s from now.
    const unblock = unblockFifoAfter(host, 3000);
    try {
      const a = await ctx.session();
      const b = await ctx.session();
      const f = await walkTo(a.c, a.root, `scratch/${name}`);
      // The server runs in this process: a stall shows as time passed since the request went out.
      const t0 = Date.now();
      const opening = a.c.lopen(f, O.RDONLY).then(
        () => 'opened',
        (e: Error) => e.message,
      );
      await new Promise((r) => setTimeout(r, 100));
      await b.c.getattr(b.root);
      const stalled = Date.now() - t0;
      expect(stalled).toBeLessThan(1000);
      await opening;
    } finally {
      unblock.stop();
    }
  });

  // Tlcreate without O_EXCL on a name that exists opens it: the create path
  // must be as careful as Tlopen (a FIFO never blocks, a device is refused).
  test.each([
    ['O_WRONLY', O.WRONLY],
    ['O_WRONLY|O_APPEND', O.WRONLY | O.APPEND],
    ['O_RDONLY', O.RDONLY],
  ])('Tlcreate %s on an existing FIFO made by Tmknod does not stall the server', async (_label, flags) => {
    const name = uniq('lcfifo');
    const host = ctx.tree.p('scratch', name);
    const a = await ctx.session();
    const b = await ctx.session();
    const d = await walkTo(a.c, a.root, 'scratch');
    await a.c.mknod(d, name, 0o010666, 0, 0, 0);
    // A server stuck in the kernel's FIFO open answers nobody until this
    // host process opens the other end, 3 s from now.
    const unblock = unblockFifoAfter(host, 3000);
    try {
      // The server runs in this process: a stall shows as time passed since the request went out.
      const t0 = Date.now();
      const creating = a.c.lcreate(d, name, flags | O.CREAT, 0o644, 0).then(
        () => 'opened',
        (e: Error) => e.message,
      );
      await new Promise((r) => setTimeout(r, 100));
      await b.c.getattr(b.root);
      expect(Date.now() - t0).toBeLessThan(1000);
      await creating;
      // ...and a brand-new connection is served too.
      const fresh = await ctx.session();
      await fresh.c.getattr(fresh.root);
    } finally {
      unblock.stop();
    }
    expect(fs.lstatSync(host).isFIFO()).toBe(true);
  });

  test('Tlcreate on an existing device node never opens the host device', async () => {
    const name = uniq('lcdev');
    const host = ctx.tree.p('scratch', name);
    expect(spawnSync('mknod', ['-m', '0666', host, 'c', '1', '5']).status).toBe(0); // /dev/zero's numbers
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    await expect(c.lcreate(d, name, O.RDWR | O.CREAT, 0o644, 0)).rejects.toMatchObject({ code: 'EACCES' });
    expect(fs.lstatSync(host).isCharacterDevice()).toBe(true);
  });

  test('Tlcreate without O_EXCL on an existing file opens it (O_TRUNC truncates), and on a directory is EISDIR', async () => {
    const { c, root } = await ctx.session();
    const name = uniq('lcold');
    fs.writeFileSync(ctx.tree.p('scratch', name), 'old content');
    const d = await walkTo(c, root, 'scratch');
    await c.lcreate(d, name, O.RDWR | O.CREAT, 0o600, 0);
    expect((await c.read(d, 0, 100)).toString()).toBe('old content');
    const d2 = await walkTo(c, root, 'scratch');
    await c.lcreate(d2, name, O.WRONLY | O.CREAT | O.TRUNC, 0o600, 0);
    expect(fs.readFileSync(ctx.tree.p('scratch', name)).length).toBe(0);
    const d3 = await walkTo(c, root, 'scratch');
    await expect(c.lcreate(d3, '.', O.RDONLY | O.CREAT, 0o600, 0)).rejects.toBeDefined();
    fs.mkdirSync(ctx.tree.p('scratch', `${name}.d`));
    await expect(c.lcreate(d3, `${name}.d`, O.RDONLY | O.CREAT, 0o600, 0)).rejects.toMatchObject({ code: 'EISDIR' });
  });
});

describe('Tlcreate', () => {
  test('creates the file with the given mode and gid; the fid becomes the open new file', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    const name = uniq('lc');
    const r = await c.lcreate(d, name, O.RDWR | O.CREAT, 0o640, 4321);
    expect(r.qid.type).toBe(QTFILE);
    const st = fs.statSync(ctx.tree.p('scratch', name), { bigint: true });
    expect(r.qid.path).toBe(st.ino);
    expect(Number(st.mode)).toBe(0o100640);
    expect(Number(st.gid)).toBe(4321);
    // The fid is now the file, open for read and write.
    await c.write(d, 0, Buffer.from('via created fid'));
    expect((await c.read(d, 0, 100)).toString()).toBe('via created fid');
    expect((await c.getattr(d)).qid.path).toBe(st.ino);
  });

  test('O_EXCL on an existing name is EEXIST and leaves it alone', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, '');
    const before = fs.readFileSync(ctx.tree.p('hello.txt'));
    await expect(c.lcreate(d, 'hello.txt', O.RDWR | O.CREAT | O.EXCL, 0o600, 0)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(fs.readFileSync(ctx.tree.p('hello.txt')).equals(before)).toBe(true);
    // The fid is still the directory.
    expect(await c.walk(d, c.newFid(), ['sub'])).toHaveLength(1);
  });

  test('invalid names are refused: /, NUL, empty, . and ..', async () => {
    const { c, root } = await ctx.session();
    for (const bad of ['a/b', Buffer.from('a\0b'), '', '.', '..']) {
      const d = await walkTo(c, root, 'scratch');
      await expect(c.lcreate(d, bad, O.RDWR | O.CREAT, 0o644, 0)).rejects.toMatchObject({ code: expect.stringMatching(/^(EINVAL|EEXIST|EISDIR)$/) });
    }
    expect(fs.existsSync(ctx.tree.p('scratch/a'))).toBe(false);
  });

  test('Tlcreate on a file fid is ENOTDIR', async () => {
    const { c, root } = await ctx.session();
    await expect(c.lcreate(await walkTo(c, root, 'hello.txt'), 'x', O.RDWR | O.CREAT, 0o644, 0)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  test('a write-only create refuses reads', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    await c.lcreate(d, uniq('wo'), O.WRONLY | O.CREAT, 0o644, 0);
    await expect(c.read(d, 0, 10)).rejects.toMatchObject({ code: 'EBADF' });
  });
});

describe('Tfsync', () => {
  test('fsync and fdatasync succeed on an open file', async () => {
    const { c, root } = await ctx.session();
    const d = await walkTo(c, root, 'scratch');
    await c.lcreate(d, uniq('fs'), O.RDWR | O.CREAT, 0o644, 0);
    await c.write(d, 0, Buffer.from('x'));
    await c.fsync(d, 0);
    await c.fsync(d, 1);
  });

  test('fsync of an open directory succeeds', async () => {
    const { c, root } = await ctx.session();
    await c.fsync(await openAt(c, root, 'scratch', O.RDONLY | O.DIRECTORY), 0);
  });

  test('fsync body without the datasync word (older clients) is EPROTO or accepted, never a hang', async () => {
    const { c, root } = await ctx.session();
    const f = await openAt(c, root, 'hello.txt', O.RDONLY);
    try {
      await c.request(T.fsync, new Writer().u32(f).done(), { timeoutMs: 5000 });
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EPROTO');
    }
  });
});
