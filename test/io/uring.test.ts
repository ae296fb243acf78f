// The io_uring engine against real files: vectored reads and writes, 64-bit
// offsets, end of file, bad fds, fsync, fallocate, copy_file_range through
// the fallback, more concurrent calls than the ring holds, close() draining
// what is in flight, and the fallback to threads when no ring can be set up.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { IoEngine, IoVecs } from '../../src/io/engine.js';
import { buildIov } from '../../src/io/iov.js';
import { createEngine } from '../../src/io/select.js';
import { ThreadsEngine } from '../../src/io/threads.js';
import { UringEngine, createUringEngine } from '../../src/io/uring.js';
import type { Logger } from '../../src/log.js';
import { SysError } from '../../src/sys/index.js';
import { addressOf } from '../../src/sys/raw-io.js';

// Rings need kernel.io_uring_disabled = 0 (or, at 1, a member of its group); only the refusal runs elsewhere.
const ringsAllowed = ((): boolean => {
  try {
    return readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() === '0';
  } catch {
    return true; // a kernel before the knob (6.6): rings are on unless seccomp says otherwise
  }
})();
const onRing = ringsAllowed ? describe : describe.skip;
const EBADF = 9;
const EINVAL = 22;
const EOPNOTSUPP = 95;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'duofs-uring-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The file's bytes read with O_DIRECT, leaving the page cache as it was. */
function readFileSyncNoCache(path: string): Buffer {
  const r = spawnSync('dd', [`if=${path}`, 'bs=64k', 'iflag=direct', 'status=none'], { maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`dd: ${r.stderr.toString()}`);
  return r.stdout;
}

/** An iovec array over `bufs`, in order. */
function iov(bufs: Buffer[]): IoVecs {
  return buildIov(
    bufs.map(addressOf),
    bufs.map((b) => b.length),
    0,
    bufs.length,
    bufs,
  );
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed + (i >> 9)) & 0xff;
  return b;
}

function file(name: string, data?: Buffer): { path: string; fd: number } {
  const path = join(dir, name);
  writeFileSync(path, data ?? Buffer.alloc(0));
  return { path, fd: openSync(path, 'r+') };
}

/** A fallback that counts what it is handed. */
class CountingFallback extends ThreadsEngine {
  copies = 0;
  override copyFileRange(...a: Parameters<ThreadsEngine['copyFileRange']>): Promise<number> {
    this.copies++;
    return super.copyFileRange(...a);
  }
}

onRing('the io_uring engine on a real file', () => {
  const fallback = new CountingFallback(2);
  let engine: IoEngine;
  beforeAll(() => {
    engine = createUringEngine({ fallback, inlineFirst: false });
  });
  afterAll(() => engine.close());

  test('is io_uring, here', () => {
    expect(engine.kind).toBe('io_uring');
    expect(engine).toBeInstanceOf(UringEngine);
  });

  test('writev gathers several iovecs at the offset; readv scatters them back', async () => {
    const { path, fd } = file('rw', Buffer.from('0123456789'));
    try {
      const parts = [Buffer.from('hello '), pattern(5000, 1), Buffer.from(' world')];
      expect(await engine.writev(fd, iov(parts), 3)).toBe(5012);
      const whole = Buffer.concat(parts);
      expect(readFileSync(path).equals(Buffer.concat([Buffer.from('012'), whole]))).toBe(true);
      const into = [Buffer.alloc(7), Buffer.alloc(4096), Buffer.alloc(909)];
      expect(await engine.readv(fd, iov(into), 3)).toBe(5012);
      expect(Buffer.concat(into).equals(whole)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });

  test('offsets beyond 2^32, as bigint or number, are 64-bit positions', async () => {
    const { path, fd } = file('big');
    const at = 2n ** 32n + 4099n;
    try {
      const data = pattern(3000, 2);
      expect(await engine.writev(fd, iov([data]), at)).toBe(3000);
      expect(statSync(path).size).toBe(Number(at) + 3000);
      const back = Buffer.alloc(3000);
      expect(await engine.readv(fd, iov([back]), at)).toBe(3000);
      expect(back.equals(data)).toBe(true);
      // the same position as a plain number
      const again = Buffer.alloc(3000);
      expect(await engine.readv(fd, iov([again]), Number(at))).toBe(3000);
      expect(again.equals(data)).toBe(true);
      // the low 32 bits alone hold nothing
      const low = Buffer.alloc(16, 0xee);
      expect(await engine.readv(fd, iov([low]), 4099)).toBe(16);
      expect(low.every((x) => x === 0)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });

  test('a read across end of file is short, and one past it reads 0', async () => {
    const { fd } = file('eof', pattern(100, 3));
    try {
      const b = [Buffer.alloc(40, 0xee), Buffer.alloc(4096, 0xee)];
      expect(await engine.readv(fd, iov(b), 50)).toBe(50);
      expect(Buffer.concat(b).subarray(0, 50).equals(pattern(100, 3).subarray(50))).toBe(true);
      expect(
        Buffer.concat(b)
          .subarray(50)
          .every((x) => x === 0xee),
      ).toBe(true);
      expect(await engine.readv(fd, iov(b), 200)).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  test('a closed fd gives -EBADF from every call; nothing rejects', async () => {
    const { fd } = file('badf', pattern(10, 4));
    closeSync(fd);
    const b = Buffer.alloc(10);
    await expect(engine.readv(fd, iov([b]), 0)).resolves.toBe(-EBADF);
    await expect(engine.writev(fd, iov([b]), 0)).resolves.toBe(-EBADF);
    await expect(engine.fsync(fd, false)).resolves.toBe(-EBADF);
    await expect(engine.fallocate(fd, 0, 0, 10)).resolves.toBe(-EBADF);
  });

  test('a bad fd in the middle of one batch fails alone; the calls around it complete', async () => {
    const good = file('batch', pattern(8192, 12));
    const bad = file('batch-bad');
    closeSync(bad.fd);
    try {
      const b = Array.from({ length: 6 }, () => Buffer.alloc(1024));
      const fds = [good.fd, bad.fd, good.fd, bad.fd, bad.fd, good.fd];
      const r = await Promise.all(fds.map((fd, i) => engine.readv(fd, iov([b[i]!]), i * 1024)));
      expect(r).toEqual([1024, -EBADF, 1024, -EBADF, -EBADF, 1024]);
      for (const i of [0, 2, 5]) expect(b[i]!.equals(pattern(8192, 12).subarray(i * 1024, (i + 1) * 1024))).toBe(true);
    } finally {
      closeSync(good.fd);
    }
  });

  test('a negative offset is EINVAL, never "the file position" (READV\'s -1)', async () => {
    const { fd } = file('neg', pattern(10, 5));
    try {
      const b = Buffer.alloc(10);
      expect(await engine.readv(fd, iov([b]), -1)).toBe(-EINVAL);
      expect(await engine.readv(fd, iov([b]), -1n)).toBe(-EINVAL);
      expect(await engine.writev(fd, iov([b]), 2n ** 64n - 1n)).toBe(-EINVAL);
    } finally {
      closeSync(fd);
    }
  });

  test('fsync and fdatasync complete with 0', async () => {
    const { fd } = file('sync', pattern(4096, 6));
    try {
      expect(await engine.fsync(fd, false)).toBe(0);
      expect(await engine.fsync(fd, true)).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  test('fallocate mode 0 grows the file; PUNCH_HOLE|KEEP_SIZE zeros a range in place', async () => {
    const { path, fd } = file('falloc', pattern(16384, 7));
    try {
      expect(await engine.fallocate(fd, 0, 0, 1 << 20)).toBe(0);
      expect(fstatSync(fd).size).toBe(1 << 20);
      expect(await engine.fallocate(fd, 3, 4096, 4096)).toBe(0);
      const back = readFileSync(path);
      expect(back.length).toBe(1 << 20);
      expect(back.subarray(4096, 8192).every((x) => x === 0)).toBe(true);
      expect(back.subarray(0, 4096).equals(pattern(16384, 7).subarray(0, 4096))).toBe(true);
      expect(back.subarray(8192, 16384).equals(pattern(16384, 7).subarray(8192))).toBe(true);
      expect(await engine.fallocate(fd, 0, 0, 0)).toBe(-EINVAL);
    } finally {
      closeSync(fd);
    }
  });

  test('copy_file_range runs on the fallback engine', async () => {
    const src = file('cfr-in', pattern(10000, 8));
    const dst = file('cfr-out');
    try {
      const before = fallback.copies;
      expect(await engine.copyFileRange(src.fd, 100, dst.fd, 2n ** 32n, 5000)).toBe(5000);
      expect(fallback.copies).toBe(before + 1);
      const out = Buffer.alloc(5000);
      expect(await engine.readv(dst.fd, iov([out]), 2n ** 32n)).toBe(5000);
      expect(out.equals(pattern(10000, 8).subarray(100, 5100))).toBe(true);
    } finally {
      closeSync(src.fd);
      closeSync(dst.fd);
    }
  });
});

onRing('more calls than the ring holds', () => {
  test('1000 concurrent reads on an 8-entry ring all complete with the right data', async () => {
    const engine = createUringEngine({ entries: 8, fallback: new ThreadsEngine(2), inlineFirst: false });
    const data = pattern(1000 * 512, 9);
    const { fd } = file('many', data);
    try {
      const bufs = Array.from({ length: 1000 }, () => Buffer.alloc(512));
      const calls = bufs.map((b, i) => engine.readv(fd, iov([b]), (999 - i) * 512));
      // page-cache hits complete inside the submitting io_uring_enter, so some are done already
      expect(engine.inflight).toBeGreaterThan(0);
      expect(engine.inflight).toBeLessThanOrEqual(1000);
      expect(await Promise.all(calls)).toEqual(bufs.map(() => 512));
      bufs.forEach((b, i) => expect(b.equals(data.subarray((999 - i) * 512, (1000 - i) * 512))).toBe(true));
      const s = engine.stats();
      expect(s).toMatchObject({ kind: 'io_uring', inflight: 0 });
      expect(s.inline + s.offloaded).toBe(1000);
      expect(engine.inflight).toBe(0);
    } finally {
      closeSync(fd);
      await engine.close();
    }
  });

  test('1000 concurrent writes, then fsyncs, on a 4-entry ring: every byte lands', async () => {
    const engine = createUringEngine({ entries: 4, fallback: new ThreadsEngine(2), inlineFirst: false });
    const { path, fd } = file('many-w');
    try {
      const data = pattern(1000 * 100, 10);
      const calls: Promise<number>[] = [];
      for (let i = 0; i < 1000; i++) calls.push(engine.writev(fd, iov([data.subarray(i * 100, (i + 1) * 100)]), i * 100));
      for (let i = 0; i < 20; i++) calls.push(engine.fsync(fd, i % 2 === 0));
      const r = await Promise.all(calls);
      expect(r.slice(0, 1000).every((n) => n === 100)).toBe(true);
      expect(r.slice(1000)).toEqual(Array(20).fill(0));
      expect(readFileSync(path).equals(data)).toBe(true);
      expect(engine.stats().inline + engine.stats().offloaded).toBe(1020);
      // an fsync of dirty data waits for the disk on the kernel's workers: it completes through the eventfd
      expect(engine.stats().offloaded).toBeGreaterThan(0);
    } finally {
      closeSync(fd);
      await engine.close();
    }
  });
});

onRing('close()', () => {
  test('waits for every call in flight, then refuses calls with -EBADF; twice is fine', async () => {
    const fallback = new ThreadsEngine(2);
    const engine = createUringEngine({ entries: 4, fallback, inlineFirst: false });
    const { fd } = file('close', pattern(64 * 1024, 11));
    const settled: number[] = [];
    const calls: Promise<number>[] = [];
    for (let i = 0; i < 40; i++) calls.push(engine.readv(fd, iov([Buffer.alloc(1024)]), i * 1024).then((r) => (settled.push(r), r)));
    calls.push(engine.fsync(fd, false).then((r) => (settled.push(r), r)));
    const out = file('close-out');
    calls.push(engine.copyFileRange(fd, 0, out.fd, 0, 4096).then((r) => (settled.push(r), r)));
    expect(engine.inflight).toBeGreaterThan(0);
    expect(settled).toEqual([]); // promises settle asynchronously, even for calls the kernel finished inline
    let closed = false;
    const closing = engine.close().then(() => {
      closed = true;
      return settled.length;
    });
    expect(await engine.readv(fd, iov([Buffer.alloc(8)]), 0)).toBe(-EBADF);
    expect(await engine.fsync(fd, true)).toBe(-EBADF);
    expect(await engine.copyFileRange(fd, 0, out.fd, 0, 1)).toBe(-EBADF);
    expect(await closing).toBe(42); // every call had settled when close() resolved
    expect(closed).toBe(true);
    expect((await Promise.all(calls)).slice(0, 40)).toEqual(Array(40).fill(1024));
    expect(engine.inflight).toBe(0);
    await engine.close();
    expect(await engine.writev(fd, iov([Buffer.alloc(8)]), 0)).toBe(-EBADF);
    closeSync(fd);
    closeSync(out.fd);
  });

  test('inline first: a page-cache hit is answered inline, a read the disk must serve goes through the ring', async () => {
    // Written with O_DIRECT, so none of it is in the page cache yet.
    const path = join(dir, 'cold');
    const dd = spawnSync('dd', ['if=/dev/urandom', `of=${path}`, 'bs=64k', 'count=4', 'oflag=direct', 'status=none']);
    expect(dd.status).toBe(0);
    const want = readFileSyncNoCache(path);
    const fd = openSync(path, 'r');
    const engine = createUringEngine({ fallback: new ThreadsEngine(1) });
    try {
      const cold = Buffer.alloc(4096);
      expect(await engine.readv(fd, iov([cold]), 65536, 'local')).toBe(4096);
      expect(cold.equals(want.subarray(65536, 65536 + 4096))).toBe(true);
      expect(engine.stats()).toMatchObject({ inline: 0, offloaded: 1 });
      const warm = Buffer.alloc(4096);
      expect(await engine.readv(fd, iov([warm]), 65536, 'local')).toBe(4096); // now cached
      expect(warm.equals(cold)).toBe(true);
      expect(engine.stats()).toMatchObject({ inline: 1, offloaded: 1 });
    } finally {
      await engine.close();
      closeSync(fd);
    }
  });

  test('an idle engine closes at once', async () => {
    const engine = createUringEngine({ fallback: new ThreadsEngine(1) });
    await engine.close();
    expect(engine.stats()).toEqual({ kind: 'io_uring', inline: 0, offloaded: 0, inflight: 0 });
  });
});

describe('when no ring can be set up', () => {
  const refused = [0, 1 << 30];

  test.each(refused)('entries %d: io_uring_setup fails with EINVAL, named', (entries) => {
    let err: unknown;
    try {
      createUringEngine({ entries, fallback: new ThreadsEngine(1) });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect(err).toMatchObject({ op: 'io_uring_setup', errno: EINVAL });
    expect((err as Error).message).toMatch(/io_uring_setup .*EINVAL/);
  });

  test('auto falls back to threads with one log line; io_uring alone refuses', async () => {
    const lines: unknown[][] = [];
    const log = { info: (...a: unknown[]) => lines.push(a) } as unknown as Logger;
    const e = await createEngine({ choice: 'auto', threadPoolSize: 2, ringEntries: 1 << 30, log });
    expect(e.kind).toBe('threads');
    expect(lines).toHaveLength(1);
    expect(String(lines[0]![1])).toMatch(/io_uring_setup failed: EINVAL/);
    await e.close();
    await expect(createEngine({ choice: 'io_uring', threadPoolSize: 2, ringEntries: 1 << 30 })).rejects.toMatchObject({
      errno: EOPNOTSUPP,
      message: expect.stringMatching(/io_uring_setup failed: EINVAL/),
    });
  });

  (ringsAllowed ? test : test.skip)('where the kernel allows rings, auto and io_uring both give io_uring', async () => {
    for (const choice of ['auto', 'io_uring'] as const) {
      const e = await createEngine({ choice, threadPoolSize: 2 });
      expect(e.kind).toBe('io_uring');
      await e.close();
    }
  });
});

onRing('the ring runs only the four operations the engine uses', () => {
  test('an OPENAT submitted to the ring is refused with EACCES; a READV on the same ring still runs', async () => {
    const { IoUring, IORING_OP_OPENAT, IORING_OP_READV } = await import('../../src/sys/uring.js');
    const ring = new IoUring(8);
    try {
      expect(ring.restricted).toBe(true);
      const path = Buffer.from('/etc/hostname\0');
      ring.prep(IORING_OP_OPENAT, -100 /* AT_FDCWD */, 0, addressOf(path), 0, 0, 1);
      const dir = mkdtempSync(join(tmpdir(), 'duofs-ring-'));
      writeFileSync(join(dir, 'f'), 'ring');
      const fd = openSync(join(dir, 'f'), 'r');
      const buf = Buffer.alloc(4);
      const iov = buildIov([Number(addressOf(buf))], [buf.length], 0, 1, [buf]);
      ring.prep(IORING_OP_READV, fd, 0, addressOf(iov.iov), iov.count, 0, 2);
      // The refused SQE ends that submit (the kernel stops after a failed one); the READV goes in next.
      let submitted = 0;
      for (let i = 0; i < 4 && ring.unsubmitted() > 0; i++) submitted += ring.submit();
      expect(submitted).toBe(2);
      const got = new Map<number, number>();
      const deadline = Date.now() + 2000;
      while (got.size < 2 && Date.now() < deadline) {
        ring.reap((id, res) => got.set(id, res));
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(got.get(1)).toBe(-13);
      expect(got.get(2)).toBe(4);
      expect(buf.toString()).toBe('ring');
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    } finally {
      ring.close();
    }
  });
});
