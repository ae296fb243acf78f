// File I/O through virtio-fs: OPEN, CREATE, TMPFILE, READ straight into
// several guest descriptors, WRITE from payloads split over descriptors and
// indirect tables, FLUSH, FSYNC, RELEASE, FALLOCATE, LSEEK on sparse files,
// COPY_FILE_RANGE and SYNCFS; data is always compared with the host file.
import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { unblockFifoAfter } from '../p9/host.js';
import { IN_HEADER, OUT_HEADER, ROOT, S_IFREG, SEEK_DATA, SEEK_HOLE, errnoOf } from './client.js';
import { lstat, useFuse } from './fixture.js';

const ctx = useFuse();
const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_TRUNC = 0o1000;
const O_APPEND = 0o2000;

async function hostFile(name: string, data: Buffer | string): Promise<bigint> {
  fs.writeFileSync(ctx.fx.p(name), data);
  return (await ctx.c.lookup(ROOT, name)).nodeid;
}

describe('OPEN, CREATE, TMPFILE, RELEASE', () => {
  test('OPEN gives a handle; RELEASE ends it (EBADF afterwards) and gives back its reference', async () => {
    const { c, fx } = ctx;
    const n = await hostFile('o1', 'open me');
    const base = fx.inodeCount;
    const o = await c.open(n, O_RDONLY);
    expect(o.fh).toBeGreaterThan(0n);
    await c.forget(n, 1n); // the guest forgets the name; the open handle keeps the inode
    expect(fx.inodeCount).toBe(base);
    expect((await c.read(o.fh, 0n, 100)).toString()).toBe('open me');
    await c.release(o.fh);
    expect(fx.inodeCount).toBe(base - 1);
    expect(await errnoOf(c.read(o.fh, 0n, 100))).toBe('EBADF');
    expect(await errnoOf(c.release(o.fh))).toBe('EBADF');
  });

  test('OPEN with O_TRUNC truncates; a directory opened for writing is EISDIR', async () => {
    const { c, fx } = ctx;
    const n = await hostFile('o2', 'xxxxxx');
    const o = await c.open(n, O_WRONLY | O_TRUNC);
    expect(lstat(fx.p('o2')).size).toBe(0n);
    await c.release(o.fh);
    expect(await errnoOf(c.open(ROOT, O_WRONLY))).toBe('EISDIR');
  });

  test('CREATE makes and opens a file with the mode asked for; O_EXCL on an existing name is EEXIST', async () => {
    const { c, fx } = ctx;
    const r = await c.create(ROOT, 'created', O_CREAT | O_EXCL | O_RDWR, 0o640);
    expect(r.entry.attr.mode).toBe(S_IFREG | 0o640);
    expect(Number(lstat(fx.p('created')).mode)).toBe(S_IFREG | 0o640);
    expect(r.entry.attr.ino).toBe(lstat(fx.p('created')).ino);
    expect(await c.write(r.open.fh, 0n, Buffer.from('new file'))).toBe(8);
    expect((await c.read(r.open.fh, 0n, 100)).toString()).toBe('new file');
    await c.release(r.open.fh);
    expect(fs.readFileSync(fx.p('created'), 'utf8')).toBe('new file');
    expect(await errnoOf(c.create(ROOT, 'created', O_CREAT | O_EXCL | O_RDWR))).toBe('EEXIST');
    // Without O_EXCL an existing file is opened (and truncated with O_TRUNC).
    const again = await c.create(ROOT, 'created', O_CREAT | O_TRUNC | O_WRONLY, 0o600);
    expect(again.entry.nodeid).toBe(r.entry.nodeid);
    expect(lstat(fx.p('created')).size).toBe(0n);
    await c.release(again.open.fh);
  });

  test('CREATE as another user: owned by the caller', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('open-dir'), { mode: 0o777 });
    fs.chmodSync(fx.p('open-dir'), 0o777);
    const d = await c.lookup(ROOT, 'open-dir');
    const r = await c.create(d.nodeid, 'users', O_CREAT | O_WRONLY, 0o600, { uid: 2000, gid: 3000 });
    const st = lstat(fx.p('open-dir', 'users'));
    expect([st.uid, st.gid]).toEqual([2000n, 3000n]);
    await c.release(r.open.fh);
  });

  test('TMPFILE: an unnamed open file; LINK gives it a name with its data', async () => {
    const { c, fx } = ctx;
    const before = fs.readdirSync(fx.dir).length;
    const t = await c.tmpfile(ROOT, O_RDWR, 0o600);
    expect(t.entry.attr.nlink).toBe(0);
    expect(t.entry.attr.mode).toBe(S_IFREG | 0o600);
    expect(fs.readdirSync(fx.dir).length).toBe(before);
    await c.write(t.open.fh, 0n, Buffer.from('anonymous'));
    const l = await c.link(t.entry.nodeid, ROOT, 'was-tmp');
    expect(l.attr.nlink).toBe(1);
    expect(fs.readFileSync(fx.p('was-tmp'), 'utf8')).toBe('anonymous');
    await c.release(t.open.fh);
    expect(await errnoOf(c.tmpfile(ROOT, O_RDONLY))).toBe('EINVAL'); // O_TMPFILE needs write access
  });

  // CREATE without O_EXCL on an existing name opens it, as carefully as OPEN:
  // a FIFO must not park the server in the kernel, a device is refused.
  test('CREATE on an existing FIFO does not stall the server; on a device node it is refused', async () => {
    const { c, fx } = ctx;
    const fifo = 'cr-fifo';
    await c.mknod(ROOT, fifo, 0o010666);
    const unblock = unblockFifoAfter(fx.p(fifo), 3000);
    try {
      const t0 = Date.now();
      const r = await c.create(ROOT, fifo, O_WRONLY | O_CREAT, 0o644).then(
        () => 'opened',
        (e: Error) => e.message,
      );
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(r).toBeDefined();
      await c.getattr(ROOT);
    } finally {
      unblock.stop();
    }
    expect(fs.lstatSync(fx.p(fifo)).isFIFO()).toBe(true);
    expect(spawnSync('mknod', ['-m', '0666', fx.p('cr-dev'), 'c', '1', '5']).status).toBe(0);
    expect(await errnoOf(c.create(ROOT, 'cr-dev', O_RDWR | O_CREAT, 0o644))).toBe('EACCES');
  });

  test('CREATE without O_EXCL on an existing file opens it and keeps its content; O_TRUNC empties it', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('cr-old'), 'old content');
    const r = await c.create(ROOT, 'cr-old', O_RDWR | O_CREAT, 0o600);
    expect((await c.read(r.open.fh, 0n, 100)).toString()).toBe('old content');
    await c.release(r.open.fh);
    const t = await c.create(ROOT, 'cr-old', O_WRONLY | O_CREAT | O_TRUNC, 0o600);
    await c.release(t.open.fh);
    expect(fs.readFileSync(fx.p('cr-old')).length).toBe(0);
    expect(await errnoOf(c.create(ROOT, 'cr-old', O_RDWR | O_CREAT | O_EXCL, 0o600))).toBe('EEXIST');
  });
});

describe('READ', () => {
  const data = randomBytes(1536 * 1024 + 333);
  let fh: bigint;

  test('setup', async () => {
    const n = await hostFile('big.bin', data);
    fh = (await ctx.c.open(n, O_RDONLY)).fh;
  });

  test('1 MiB (max_write) into one buffer', async () => {
    expect((await ctx.c.read(fh, 0n, 1 << 20)).equals(data.subarray(0, 1 << 20))).toBe(true);
  });

  test('straight into many descriptors of odd sizes, the reply header sharing the first', async () => {
    const sizes = [OUT_HEADER + 5, 3, 4096, 1, 65536, 70001, 333, 200000];
    const want = sizes.reduce((a, b) => a + b, 0) - OUT_HEADER;
    const b = await ctx.c.read(fh, 12345n, want, { in: sizes });
    expect(b.length).toBe(want);
    expect(b.equals(data.subarray(12345, 12345 + want))).toBe(true);
  });

  test('through an indirect table of 64 descriptors', async () => {
    const sizes = [OUT_HEADER, ...Array.from({ length: 63 }, (_, i) => 1000 + i * 17)];
    const want = sizes.reduce((a, b) => a + b, 0) - OUT_HEADER;
    const b = await ctx.c.read(fh, 777n, want, { in: sizes, indirect: true });
    expect(b.equals(data.subarray(777, 777 + want))).toBe(true);
  });

  test('short read at EOF; nothing at or past EOF', async () => {
    const { c } = ctx;
    const tail = await c.read(fh, BigInt(data.length - 100), 4096, { in: [OUT_HEADER, 1000, 3096] });
    expect(tail.equals(data.subarray(data.length - 100))).toBe(true);
    expect((await c.read(fh, BigInt(data.length), 4096)).length).toBe(0);
    expect((await c.read(fh, 1n << 40n, 4096)).length).toBe(0);
    expect((await c.read(fh, 1n << 62n, 10)).length).toBe(0);
  });

  test('a read larger than the guest buffers fills what there is (never beyond)', async () => {
    const b = await ctx.c.read(fh, 0n, 65536, { in: [OUT_HEADER, 1000] });
    expect(b.equals(data.subarray(0, 1000))).toBe(true);
  });

  test('READ on a write-only handle is EBADF; an offset beyond off_t is EINVAL', async () => {
    const { c } = ctx;
    const n = await hostFile('wo', 'write only');
    const o = await c.open(n, O_WRONLY);
    expect(await errnoOf(c.read(o.fh, 0n, 10))).toBe('EBADF');
    await c.release(o.fh);
    expect(await errnoOf(c.read(fh, 1n << 63n, 10))).toBe('EINVAL');
  });

  test('the data changes when the host changes the file (no stale copy in the server)', async () => {
    const { c, fx } = ctx;
    const n = await hostFile('changing', 'version 1');
    const o = await c.open(n, O_RDONLY);
    expect((await c.read(o.fh, 0n, 100)).toString()).toBe('version 1');
    fs.writeFileSync(fx.p('changing'), 'version 2!');
    expect((await c.read(o.fh, 0n, 100)).toString()).toBe('version 2!');
    await c.release(o.fh);
  });
});

describe('WRITE', () => {
  test('payload split over many descriptors, the header itself cut in pieces', async () => {
    const { c, fx } = ctx;
    const r = await c.create(ROOT, 'w-split', O_CREAT | O_RDWR, 0o644);
    const payload = randomBytes(100_000);
    // header (40) and write_in (40) split at odd places, then the payload in odd pieces
    const split = [7, 33, 1, 39, 5, 4096, 1, 3, 12345, 50_000];
    expect(await c.write(r.open.fh, 10n, payload, { split })).toBe(payload.length);
    const host = fs.readFileSync(fx.p('w-split'));
    expect(host.length).toBe(100_010);
    expect(host.subarray(0, 10).equals(Buffer.alloc(10))).toBe(true);
    expect(host.subarray(10).equals(payload)).toBe(true);
    await c.release(r.open.fh);
  });

  test('1 MiB (max_write) through an indirect table of 130 descriptors', async () => {
    const { c, fx } = ctx;
    const r = await c.create(ROOT, 'w-indirect', O_CREAT | O_RDWR, 0o644);
    const payload = randomBytes(1 << 20);
    const split = [IN_HEADER + 40, ...Array.from({ length: 128 }, () => 8192)];
    expect(await c.write(r.open.fh, 0n, payload, { split, indirect: true })).toBe(1 << 20);
    expect(fs.readFileSync(fx.p('w-indirect')).equals(payload)).toBe(true);
    // and read back through the same path
    expect((await c.read(r.open.fh, 0n, 1 << 20, { in: [OUT_HEADER, 1 << 19, 1 << 19], indirect: true })).equals(payload)).toBe(true);
    await c.release(r.open.fh);
  });

  test('header and payload in one descriptor; a zero-length write', async () => {
    const { c, fx } = ctx;
    const r = await c.create(ROOT, 'w-one', O_CREAT | O_RDWR, 0o644);
    expect(await c.write(r.open.fh, 0n, Buffer.from('together'), { split: [1 << 20] })).toBe(8);
    expect(await c.write(r.open.fh, 3n, Buffer.alloc(0))).toBe(0);
    expect(fs.readFileSync(fx.p('w-one'), 'utf8')).toBe('together');
    await c.release(r.open.fh);
  });

  test('at a large offset (a sparse 1 TiB file) and beyond off_t (EINVAL)', async () => {
    const { c, fx } = ctx;
    const r = await c.create(ROOT, 'w-far', O_CREAT | O_RDWR, 0o644);
    expect(await c.write(r.open.fh, 1n << 40n, Buffer.from('far'))).toBe(3);
    expect(lstat(fx.p('w-far')).size).toBe((1n << 40n) + 3n);
    expect((await c.read(r.open.fh, 1n << 40n, 10)).toString()).toBe('far');
    expect(await errnoOf(c.write(r.open.fh, 1n << 63n, Buffer.from('x')))).toBe('EINVAL');
    await c.release(r.open.fh);
    await c.unlink(ROOT, 'w-far');
  });

  test('WRITE on a read-only handle is EBADF and changes nothing', async () => {
    const { c, fx } = ctx;
    const n = await hostFile('w-ro', 'original');
    const o = await c.open(n, O_RDONLY);
    expect(await errnoOf(c.write(o.fh, 0n, Buffer.from('XX')))).toBe('EBADF');
    expect(fs.readFileSync(fx.p('w-ro'), 'utf8')).toBe('original');
    await c.release(o.fh);
  });

  test('O_APPEND handles append whatever the offset', async () => {
    const { c, fx } = ctx;
    const n = await hostFile('w-app', 'head;');
    const o = await c.open(n, O_WRONLY | O_APPEND);
    await c.write(o.fh, 0n, Buffer.from('tail'));
    expect(fs.readFileSync(fx.p('w-app'), 'utf8')).toBe('head;tail');
    await c.release(o.fh);
  });
});

describe('FLUSH, FSYNC, SYNCFS', () => {
  test('all succeed on an open file; FSYNC of an unknown handle is EBADF', async () => {
    const { c } = ctx;
    const r = await c.create(ROOT, 'syncme', O_CREAT | O_RDWR, 0o644);
    await c.write(r.open.fh, 0n, Buffer.from('durable'));
    await c.flush(r.open.fh, 99n);
    await c.fsync(r.open.fh, false);
    await c.fsync(r.open.fh, true);
    await c.syncfs();
    expect(await errnoOf(c.fsync(987654n))).toBe('EBADF');
    expect(await errnoOf(c.flush(987654n, 1n))).toBe('EBADF');
    await c.release(r.open.fh);
  });
});

describe('FALLOCATE', () => {
  test('allocate, KEEP_SIZE, PUNCH_HOLE', async () => {
    const { c, fx } = ctx;
    const r = await c.create(ROOT, 'falloc', O_CREAT | O_RDWR, 0o644);
    await c.fallocate(r.open.fh, 0n, 1n << 20n);
    let st = lstat(fx.p('falloc'));
    expect(st.size).toBe(1n << 20n);
    expect(st.blocks).toBeGreaterThanOrEqual(2048n);
    await c.fallocate(r.open.fh, 1n << 20n, 1n << 20n, 1 /* KEEP_SIZE */);
    st = lstat(fx.p('falloc'));
    expect(st.size).toBe(1n << 20n);
    expect(st.blocks).toBeGreaterThanOrEqual(4096n);
    await c.write(r.open.fh, 0n, Buffer.alloc(65536, 0x61));
    await c.fallocate(r.open.fh, 4096n, 8192n, 3 /* PUNCH_HOLE|KEEP_SIZE */);
    const host = fs.readFileSync(fx.p('falloc'));
    expect(host.subarray(0, 4096).every((b) => b === 0x61)).toBe(true);
    expect(host.subarray(4096, 12288).every((b) => b === 0)).toBe(true);
    expect(host.subarray(12288, 65536).every((b) => b === 0x61)).toBe(true);
    expect(await errnoOf(c.fallocate(r.open.fh, 0n, 4096n, 2 /* PUNCH_HOLE without KEEP_SIZE */))).toBe('EOPNOTSUPP');
    await c.release(r.open.fh);
    const ro = await c.open(r.entry.nodeid, O_RDONLY);
    expect(await errnoOf(c.fallocate(ro.fh, 0n, 4096n))).toBe('EBADF');
    await c.release(ro.fh);
  });
});

describe('LSEEK', () => {
  test('SEEK_DATA and SEEK_HOLE on a sparse file', async () => {
    const { c, fx } = ctx;
    const r = await c.create(ROOT, 'sparse', O_CREAT | O_RDWR, 0o644);
    const MiB = 1n << 20n;
    await c.write(r.open.fh, 0n, Buffer.alloc(4096, 1));
    await c.write(r.open.fh, MiB, Buffer.alloc(4096, 2));
    expect(lstat(fx.p('sparse')).size).toBe(MiB + 4096n);
    expect(await c.lseek(r.open.fh, 0n, SEEK_DATA)).toBe(0n);
    expect(await c.lseek(r.open.fh, 0n, SEEK_HOLE)).toBe(4096n);
    expect(await c.lseek(r.open.fh, 4096n, SEEK_DATA)).toBe(MiB);
    expect(await c.lseek(r.open.fh, MiB, SEEK_HOLE)).toBe(MiB + 4096n);
    expect(await errnoOf(c.lseek(r.open.fh, MiB + 4096n, SEEK_DATA))).toBe('ENXIO');
    expect(await errnoOf(c.lseek(r.open.fh, 0n, 0 /* SEEK_SET never reaches a server */))).toBe('EINVAL');
    await c.release(r.open.fh);
  });
});

describe('COPY_FILE_RANGE', () => {
  test('copies between two open files at offsets; flags are EINVAL; a read-only target EBADF', async () => {
    const { c, fx } = ctx;
    const src = randomBytes(300_000);
    const n = await hostFile('cfr-src', src);
    const i = await c.open(n, O_RDONLY);
    const o = await c.create(ROOT, 'cfr-dst', O_CREAT | O_RDWR, 0o644);
    expect(await c.copyFileRange(i.fh, 100n, o.entry.nodeid, o.open.fh, 50n, 200_000n)).toBe(200_000);
    const host = fs.readFileSync(fx.p('cfr-dst'));
    expect(host.length).toBe(200_050);
    expect(host.subarray(50).equals(src.subarray(100, 200_100))).toBe(true);
    // Past the end of the source: a short copy.
    expect(await c.copyFileRange(i.fh, 299_000n, o.entry.nodeid, o.open.fh, 0n, 10_000n)).toBe(1000);
    expect(await errnoOf(c.copyFileRange(i.fh, 0n, o.entry.nodeid, o.open.fh, 0n, 10n, 1n))).toBe('EINVAL');
    expect(await errnoOf(c.copyFileRange(i.fh, 0n, n, i.fh, 1000n, 10n))).toBe('EBADF');
    await c.release(i.fh);
    await c.release(o.open.fh);
  });
});
