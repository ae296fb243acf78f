// FUSE_INIT over virtio-fs: version and flag negotiation, max_write, the
// cache options' timeouts and open flags, the config space, and DESTROY.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { ALL_INIT_FLAGS, FOPEN, type FuseClient, INIT_FLAGS as F, OP, ROOT, errnoOf, initIn, parseInit } from './client.js';
import { FuseFixture, type Guest } from './fixture.js';

describe('INIT', () => {
  let fx: FuseFixture;
  let g: Guest;
  beforeAll(async () => {
    fx = await new FuseFixture().start();
    g = await fx.guest({ init: false });
  });
  afterAll(() => fx.close());

  test('the config space carries the tag and the number of request queues', async () => {
    const cfg = await g.fe.getConfig(0, 40);
    expect(cfg.subarray(0, 36).toString().replace(/\0+$/, '')).toBe('fusetest');
    expect(cfg.readUInt32LE(36)).toBe(2);
    expect(g.fe.queueNum).toBe(3); // hiprio + 2 request queues
  });

  test('a 7.39 kernel offering everything: 7.39, max_write 1 MiB, 256 pages, ns timestamps', async () => {
    const r = await g.c.doInit({ minor: 39, flags: ALL_INIT_FLAGS });
    expect(r).toMatchObject({ major: 7, minor: 39, maxWrite: 1 << 20, maxPages: 256, timeGran: 1, maxReadahead: 128 * 1024, size: 64 });
    const want = [
      F.ASYNC_READ,
      F.POSIX_LOCKS,
      F.ATOMIC_O_TRUNC,
      F.EXPORT_SUPPORT,
      F.BIG_WRITES,
      F.FLOCK_LOCKS,
      F.DO_READDIRPLUS,
      F.READDIRPLUS_AUTO,
      F.PARALLEL_DIROPS,
      F.MAX_PAGES,
      F.HANDLE_KILLPRIV_V2,
      F.INIT_EXT,
    ];
    for (const f of want) expect((r.flags & f).toString(16)).toBe(f.toString(16));
    // Not asked for on this daemon (no --writeback, no --announce-submounts), and
    // nothing that needs support duofs does not have (DAX, security contexts).
    for (const f of [F.WRITEBACK_CACHE, F.SUBMOUNTS, F.HAS_INODE_DAX, F.SECURITY_CTX, F.MAP_ALIGNMENT, F.NO_OPEN_SUPPORT, F.NO_OPENDIR_SUPPORT]) {
      expect(r.flags & f).toBe(0n);
    }
  });

  test('never a flag the kernel did not offer', async () => {
    const offered = F.ASYNC_READ | F.DO_READDIRPLUS | F.SPLICE_READ;
    const r = await g.c.doInit({ minor: 38, flags: offered });
    expect(r.minor).toBe(38); // min(kernel, server)
    expect(r.flags & ~offered).toBe(0n);
    expect(r.flags & F.ASYNC_READ).toBe(F.ASYNC_READ);
    expect(r.maxWrite).toBe(1 << 20); // the kernel clamps it to its page limit without MAX_PAGES
  });

  test('flags2 is ignored unless the kernel sets INIT_EXT', async () => {
    const b = initIn({ minor: 38, flags: F.ASYNC_READ | F.POSIX_LOCKS });
    b.writeUInt32LE(0xffffffff, 16); // garbage in flags2
    const r = parseInit(await g.c.call(OP.INIT, [b], { in: [16, 64] }));
    expect(r.flags).toBe(F.ASYNC_READ | F.POSIX_LOCKS);
  });

  test('a newer kernel (7.45) is answered with 7.39', async () => {
    expect((await g.c.doInit({ minor: 45 })).minor).toBe(39);
  });

  test('an old kernel (7.22) gets the 24-byte fuse_init_out', async () => {
    const r = await g.c.doInit({ minor: 22, flags: F.ASYNC_READ });
    expect(r.size).toBe(24);
    expect(r.minor).toBe(22);
  });

  test('major 8 is answered with major 7 (the kernel retries); major 6 is EPROTO', async () => {
    const b = await g.c.call(OP.INIT, [initIn({ major: 8, minor: 0 })], { in: [16, 64] });
    expect(b.readUInt32LE(0)).toBe(7);
    expect(await errnoOf(g.c.doInit({ major: 6, minor: 0 }))).toBe('EPROTO');
  });

  test('a short fuse_init_in (7.5 kernels send 16 bytes) still works', async () => {
    const r = parseInit(await g.c.call(OP.INIT, [initIn({ minor: 38, flags: F.ASYNC_READ }).subarray(0, 16)], { in: [16, 64] }));
    expect(r.major).toBe(7);
    expect(r.flags & ~F.ASYNC_READ).toBe(0n);
  });

  test('a second INIT restarts the session: references of the first are dropped', async () => {
    await g.c.doInit();
    fs.writeFileSync(fx.p('reinit'), 'x');
    const before = fx.inodeCount;
    const e = await g.c.lookup(ROOT, 'reinit');
    expect(fx.inodeCount).toBe(before + 1);
    await g.c.doInit();
    expect(fx.inodeCount).toBe(before);
    expect(await errnoOf(g.c.getattr(e.nodeid))).toBe('ESTALE');
  });

  test('DESTROY drops every reference and handle; requests after it fail; INIT starts again', async () => {
    await g.c.doInit();
    fs.writeFileSync(fx.p('destroy-me'), 'x');
    const base = fx.inodeCount;
    const e = await g.c.lookup(ROOT, 'destroy-me');
    const o = await g.c.open(e.nodeid, 0);
    const d = await g.c.opendir(ROOT);
    expect(fx.inodeCount).toBe(base + 1);
    await g.c.destroy();
    expect(fx.inodeCount).toBe(base);
    expect(await errnoOf(g.c.getattr(ROOT))).toBe('EIO');
    await g.c.doInit();
    expect(await errnoOf(g.c.read(o.fh, 0n, 10))).toBe('EBADF');
    expect(await errnoOf(g.c.readdir(d.fh, 0n))).toBe('EBADF');
    expect((await g.c.getattr(ROOT)).attr.mode & 0o170000).toBe(0o040000);
  });
});

describe('cache and feature options', () => {
  async function withDaemon(fuse: Record<string, unknown>, fn: (c: FuseClient, fx: FuseFixture) => Promise<void>): Promise<void> {
    const fx = await new FuseFixture().start({ fuse });
    try {
      fs.writeFileSync(fx.p('f'), 'data');
      fs.mkdirSync(fx.p('d'));
      const g = await fx.guest();
      await fn(g.c, fx);
    } finally {
      await fx.close();
    }
  }

  test('--writeback and --announce-submounts are negotiated when asked for', async () => {
    await withDaemon({ writeback: true, announceSubmounts: true }, async (c) => {
      const r = await c.doInit();
      expect(r.flags & F.WRITEBACK_CACHE).toBe(F.WRITEBACK_CACHE);
      expect(r.flags & F.SUBMOUNTS).toBe(F.SUBMOUNTS);
      const without = await c.doInit({ flags: ALL_INIT_FLAGS & ~F.WRITEBACK_CACHE });
      expect(without.flags & F.WRITEBACK_CACHE).toBe(0n);
    });
  });

  test('--cache never: zero timeouts and DIRECT_IO opens, with parallel direct writes', async () => {
    await withDaemon({ cache: 'never' }, async (c) => {
      const e = await c.lookup(ROOT, 'f');
      expect([e.entryValid, e.attrValid]).toEqual([0n, 0n]);
      expect((await c.getattr(e.nodeid)).attrValid).toBe(0n);
      expect((await c.open(e.nodeid, 0)).openFlags & (FOPEN.DIRECT_IO | FOPEN.PARALLEL_DIRECT_WRITES)).toBe(
        FOPEN.DIRECT_IO | FOPEN.PARALLEL_DIRECT_WRITES,
      );
    });
  });

  test('--cache auto: 1 s timeouts, page cache allowed', async () => {
    await withDaemon({ cache: 'auto' }, async (c) => {
      const e = await c.lookup(ROOT, 'f');
      expect([e.entryValid, e.attrValid]).toEqual([1n, 1n]);
      expect((await c.open(e.nodeid, 0)).openFlags & (FOPEN.DIRECT_IO | FOPEN.KEEP_CACHE)).toBe(0);
    });
  });

  test('--cache always: long timeouts, KEEP_CACHE files and CACHE_DIR directories', async () => {
    await withDaemon({ cache: 'always' }, async (c) => {
      const e = await c.lookup(ROOT, 'f');
      expect(e.entryValid).toBe(86400n);
      expect((await c.open(e.nodeid, 0)).openFlags & FOPEN.KEEP_CACHE).toBe(FOPEN.KEEP_CACHE);
      const d = await c.lookup(ROOT, 'd');
      expect((await c.opendir(d.nodeid)).openFlags & FOPEN.CACHE_DIR).toBe(FOPEN.CACHE_DIR);
    });
  });

  test('--readonly: reads work, every change is EROFS', async () => {
    const fx = new FuseFixture();
    fs.writeFileSync(fx.p('f'), 'data');
    await fx.start({ readonly: true });
    try {
      const { c } = await fx.guest();
      const e = await c.lookup(ROOT, 'f');
      const o = await c.open(e.nodeid, 0);
      expect((await c.read(o.fh, 0n, 100)).toString()).toBe('data');
      expect(await errnoOf(c.open(e.nodeid, 1))).toBe('EROFS');
      expect(await errnoOf(c.mkdir(ROOT, 'nope'))).toBe('EROFS');
      expect(await errnoOf(c.create(ROOT, 'nope', 0o101))).toBe('EROFS');
      expect(await errnoOf(c.setattr(e.nodeid, { valid: 8, size: 0n }))).toBe('EROFS');
      expect(await errnoOf(c.unlink(ROOT, 'f'))).toBe('EROFS');
      expect(fs.readFileSync(fx.p('f'), 'utf8')).toBe('data');
    } finally {
      await fx.close();
    }
  });
});
