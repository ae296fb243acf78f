// Tversion, Tauth, Tattach, framing errors, unknown messages, msize edges.
import { expect, jest, test, describe } from '@jest/globals';
import { P9Client, P9Error } from './client.js';
import { useServer } from './fixture.js';
import { HEADER_SIZE, NOFID, NOTAG, O, QTDIR, T, Writer, frame } from './proto.js';

jest.setTimeout(30_000);
const ctx = useServer();

describe('Tversion', () => {
  test("9P2000.L is accepted and msize is at most the client's and at least 4096", async () => {
    for (const want of [4096, 8192, 65536, 1 << 20, 1 << 24, 0x7fffffff]) {
      const c = await ctx.connect();
      const r = await c.version(want, '9P2000.L');
      expect(r.version).toBe('9P2000.L');
      expect(r.msize).toBeLessThanOrEqual(want);
      expect(r.msize).toBeGreaterThanOrEqual(4096);
      await c.close();
    }
  });

  test('msize below 4096 is refused with EINVAL', async () => {
    for (const bad of [0, 7, 4095]) {
      const c = await ctx.connect();
      await expect(c.version(bad)).rejects.toMatchObject({ code: 'EINVAL' });
      await c.close();
    }
  });

  test('an unknown version string is answered with version "unknown"', async () => {
    for (const v of ['9P2000.X', 'xyzzy', '', '9P1999']) {
      const c = await ctx.connect();
      const r = await c.version(65536, v);
      expect(r.version).toBe('unknown');
      // ...and the connection can still negotiate properly afterwards.
      expect((await c.version(65536, '9P2000.L')).version).toBe('9P2000.L');
      await c.close();
    }
  });

  test('after "unknown" no session exists: Tattach is refused', async () => {
    const c = await ctx.connect();
    await c.version(65536, 'nonsense');
    await expect(c.attach(1, NOFID, '', ctx.tree.dir, 0)).rejects.toMatchObject({ code: 'EPROTO' });
    await c.close();
  });

  test('requests before the version exchange get EPROTO', async () => {
    const c = await ctx.connect();
    await expect(c.attach(1, NOFID, '', ctx.tree.dir, 0)).rejects.toMatchObject({ code: 'EPROTO' });
    await expect(c.getattr(1)).rejects.toMatchObject({ code: 'EPROTO' });
    await expect(c.walk(1, 2, [])).rejects.toMatchObject({ code: 'EPROTO' });
    await expect(c.statfs(1)).rejects.toMatchObject({ code: 'EPROTO' });
    // The connection stays usable.
    expect((await c.version(65536)).version).toBe('9P2000.L');
    await c.attach(1, NOFID, '', ctx.tree.dir, 0);
    await c.close();
  });

  test('a second Tversion resets the session: every fid is clunked', async () => {
    const { c, root } = await ctx.session();
    const f = c.newFid();
    await c.walk(root, f, ['hello.txt']);
    await c.lopen(f, O.RDONLY);
    await c.version(32768);
    await expect(c.getattr(root)).rejects.toMatchObject({ code: 'EBADF' });
    await expect(c.read(f, 0, 10)).rejects.toMatchObject({ code: 'EBADF' });
    // The fid numbers are free again.
    await c.attach(root, NOFID, '', ctx.tree.dir, 0);
    await c.walk(root, f, ['hello.txt']);
    expect(c.msize).toBeLessThanOrEqual(32768);
  });
});

describe('Tauth and Tattach', () => {
  // Not EOPNOTSUPP: diod's client library (npc_auth in libnpclient, used by
  // diodls, diodcat and diodmount) treats only ENOENT (or no error) from
  // Tauth as "authentication not required" and aborts on anything else;
  // diod itself answers ENOENT. Linux v9fs does not send Tauth at all.
  test('Tauth answers ENOENT (no authentication needed, as diod says it)', async () => {
    const { c } = await ctx.session();
    await expect(c.auth(c.newFid(), '', ctx.tree.dir, 0)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test("Tattach gives a directory qid equal to the export's inode", async () => {
    const { c, root, qid } = await ctx.session();
    expect(qid.type).toBe(QTDIR);
    const a = await c.getattr(root);
    expect(a.qid.path).toBe(qid.path);
    expect(qid).toEqual(ctx.rootQid);
  });

  test('Tattach with a fid already in use is EBADF', async () => {
    const { c, root } = await ctx.session();
    await expect(c.attach(root, NOFID, '', ctx.tree.dir, 0)).rejects.toMatchObject({ code: 'EBADF' });
    // The original fid still works.
    expect((await c.getattr(root)).qid.type).toBe(QTDIR);
  });
});

describe('malformed and unknown messages', () => {
  test('unknown message types answer EOPNOTSUPP', async () => {
    const { c, root } = await ctx.session();
    // 99 and 255 are unassigned; 112/114/124/126 are legacy 9P2000 Topen/Tcreate/Tstat/Twstat
    // that 9P2000.L does not use; 101 is an R-message sent as a request.
    for (const t of [0, 99, 112, 114, 124, 126, 101, 255]) {
      await expect(c.request(t, new Writer().u32(root).done())).rejects.toMatchObject({ code: 'EOPNOTSUPP' });
    }
    expect((await c.getattr(root)).qid.type).toBe(QTDIR);
  });

  test('a truncated body answers EPROTO and the connection keeps working', async () => {
    const { c, root } = await ctx.session();
    await expect(c.request(T.walk, Buffer.alloc(3))).rejects.toMatchObject({ code: 'EPROTO' });
    await expect(c.request(T.getattr, new Writer().u32(root).u32(0).done())).rejects.toMatchObject({ code: 'EPROTO' });
    await expect(c.request(T.clunk, Buffer.alloc(0))).rejects.toMatchObject({ code: 'EPROTO' });
    await expect(c.request(T.read, new Writer().u32(root).u64(0).done())).rejects.toMatchObject({ code: 'EPROTO' });
    expect((await c.getattr(root)).qid.type).toBe(QTDIR);
  });

  test('a string running past the end of the frame answers EPROTO', async () => {
    const { c, root } = await ctx.session();
    const body = new Writer().u32(root).u32(c.newFid()).u16(1).u16(100).bytes(Buffer.from('abc')).done();
    await expect(c.request(T.walk, body)).rejects.toMatchObject({ code: 'EPROTO' });
    const body2 = new Writer().u32(root).u16(60000).bytes(Buffer.from('x')).done();
    await expect(c.request(T.mkdir, body2)).rejects.toMatchObject({ code: 'EPROTO' });
    expect(await c.walk(root, c.newFid(), ['hello.txt'])).toHaveLength(1);
  });

  test('a Twrite whose count exceeds the bytes in the frame answers EPROTO and writes nothing', async () => {
    const { c, root } = await ctx.session();
    const f = c.newFid();
    await c.walk(root, f, ['scratch']);
    await c.lcreate(f, 'short-write', O.RDWR | O.CREAT, 0o644, 0);
    const body = new Writer().u32(f).u64(0).u32(1000).bytes(Buffer.alloc(10, 1)).done();
    await expect(c.request(T.write, body)).rejects.toMatchObject({ code: 'EPROTO' });
    const fs = await import('node:fs');
    expect(fs.statSync(ctx.tree.p('scratch/short-write')).size).toBe(0);
  });

  test('a frame shorter than 7 bytes closes that connection only', async () => {
    for (const size of [0, 4, 6]) {
      const { c } = await ctx.session();
      const b = Buffer.alloc(Math.max(size, 4) + 3);
      b.writeUInt32LE(size, 0);
      c.sendRaw(b);
      expect(await c.waitClosed(5000)).toBe(true);
    }
    expect((await ctx.c.getattr(ctx.root)).qid.type).toBe(QTDIR);
  });

  test('a size field larger than msize closes that connection only', async () => {
    const { c, root } = await ctx.session({ msize: 8192 });
    const big = Buffer.alloc(c.msize + 1);
    big.writeUInt32LE(big.length, 0);
    big.writeUInt8(T.getattr, 4);
    big.writeUInt16LE(1, 5);
    big.writeUInt32LE(root, 7);
    c.sendRaw(big);
    expect(await c.waitClosed(5000)).toBe(true);
    // Just the header announcing a huge frame: closed without waiting for the body.
    const { c: c2 } = await ctx.session({ msize: 8192 });
    const hdr = Buffer.alloc(HEADER_SIZE);
    hdr.writeUInt32LE(0xffffffff, 0);
    hdr.writeUInt8(T.read, 4);
    c2.sendRaw(hdr);
    expect(await c2.waitClosed(5000)).toBe(true);
    expect((await ctx.c.getattr(ctx.root)).qid.type).toBe(QTDIR);
  });

  test('a frame of exactly msize bytes is accepted', async () => {
    const { c, root } = await ctx.session({ msize: 8192 });
    const f = c.newFid();
    await c.walk(root, f, ['scratch']);
    await c.lcreate(f, 'exact-msize', O.RDWR | O.CREAT, 0o644, 0);
    const data = Buffer.alloc(c.msize - 23, 0x5a);
    const body = new Writer().u32(f).u64(0).u32(data.length).bytes(data).done();
    expect(frame(T.write, 1, body).length).toBe(c.msize);
    const r = await c.request(T.write, body);
    expect(r.body.readUInt32LE(0)).toBe(data.length);
  });

  test('replies carry the request tag, including tag 0 and 0xfffe', async () => {
    const { c, root } = await ctx.session();
    for (const tag of [0, 1, 0x7fff, 0xfffe]) {
      const r = await c.request(T.getattr, new Writer().u32(root).u64(0x7ff).done(), { tag });
      expect(r.tag).toBe(tag);
      expect(r.type).toBe(T.Rgetattr);
    }
  });

  test('Tversion is answered with tag NOTAG', async () => {
    const c = await ctx.connect();
    const r = await c.request(T.version, new Writer().u32(8192).str('9P2000.L').done(), { tag: NOTAG });
    expect(r.tag).toBe(NOTAG);
    expect(r.type).toBe(T.Rversion);
  });

  test('Rlerror is a 4-byte errno after the header', async () => {
    const { c } = await ctx.session();
    const tag = c.freeTag();
    const raw = frame(T.getattr, tag, new Writer().u32(0xdead).u64(0x7ff).done());
    try {
      await c.rawRequest(raw);
      throw new Error('expected an error');
    } catch (e) {
      expect(e).toBeInstanceOf(P9Error);
    }
    // Inspect the raw frame too.
    const tag2 = c.freeTag();
    const p = new Promise<Buffer>((resolve) => {
      c.sock.once('data', (d: Buffer) => resolve(d));
    });
    c.sendRaw(frame(T.getattr, tag2, new Writer().u32(0xdead).u64(0x7ff).done()));
    const d = await p;
    expect(d.length).toBe(11);
    expect(d.readUInt32LE(0)).toBe(11);
    expect(d.readUInt8(4)).toBe(T.Rlerror);
    expect(d.readUInt16LE(5)).toBe(tag2);
    expect(d.readUInt32LE(7)).toBe(9); // EBADF
    await c.close();
  });

  test('well-formed traffic from other clients is unaffected by garbage on one connection', async () => {
    const bad = await ctx.connect();
    bad.sendRaw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    const { c, root } = await ctx.session();
    expect((await c.getattr(root)).qid.type).toBe(QTDIR);
    expect(await bad.waitClosed(5000)).toBe(true);
  });
});

describe('P9Client basics against the server', () => {
  test('client session helper round-trips', async () => {
    const c = await P9Client.connect(ctx.srv.address);
    await c.version(8192);
    await c.attach(7, NOFID, 'ignored-uname', ctx.tree.dir, 0);
    expect((await c.getattr(7)).qid.type).toBe(QTDIR);
    await c.close();
  });
});
