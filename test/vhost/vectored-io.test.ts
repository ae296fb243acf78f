// File data between files and guest-memory segments with preadv/pwritev:
// scattered pages, neighbours merged, more pieces than IOV_MAX, short reads
// at end of file, and plain buffers (the /dev/fuse path), on every engine.
import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory, hostAddressOf, type MappedRegion } from '../../protocols/virtqueue/guest-memory.js';
import { readInto, writeFrom } from '../../src/io/transfer.js';
import type { IoEngine } from '../../src/io/engine.js';
import { SyncEngine } from '../../src/io/sync.js';
import { ThreadsEngine } from '../../src/io/threads.js';
import { createUringEngine } from '../../src/io/uring.js';
import { closeFd } from '../../src/sys/fd.js';
import { createMemfd } from '../../src/sys/mem.js';

const PAGE = 4096;
const SIZE = 4 * 1024 * 1024;
let dir: string;
let mem: GuestMemory;
let memFd: number;
const pins: MappedRegion[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'duofs-vio-'));
  memFd = createMemfd('duofs-test-guest', SIZE);
  mem = new GuestMemory();
  mem.add({ guestAddr: 0, size: SIZE, userAddr: 0x7000_0000_0000, mmapOffset: 0 }, memFd);
});
afterEach(() => {
  for (const p of pins.splice(0)) p.unpin();
});
afterAll(() => {
  mem.clear();
  closeFd(memFd);
  rmSync(dir, { recursive: true, force: true });
});

/** One view per guest page, in a scrambled order with some neighbours (as a guest's page cache hands them out). */
function scatteredPages(n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const gpa = ((i * 7) % 1000) * PAGE; // 7 is coprime with 1000: distinct pages
    expect(mem.translate(gpa, PAGE, out, pins)).toBe(true);
  }
  return out;
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 12)) & 0xff;
  return b;
}

function fill(views: Buffer[], data: Buffer): void {
  let at = 0;
  for (const v of views) at += data.copy(v, 0, at, at + v.length);
}

function collect(views: Buffer[], skip: number, len: number): Buffer {
  return Buffer.concat(views).subarray(skip, skip + len);
}

const engines: [string, () => IoEngine][] = [
  ['sync', () => new SyncEngine()],
  ['threads', () => new ThreadsEngine(4)],
  ['io_uring', () => createUringEngine({ fallback: new ThreadsEngine(4) })],
];
// io_uring only where the kernel hands out rings (kernel.io_uring_disabled = 0; test/io/uring.test.ts covers the refusal)
const uringOff = ((): boolean => {
  try {
    return readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() !== '0';
  } catch {
    return false;
  }
})();
if (uringOff) engines.pop();

describe.each(engines)('on the %s engine', (_name, make) => {
  const engine = make();
  afterAll(() => engine.close());

  test('a 1 MiB write from 256 scattered guest pages lands in order, at the offset', async () => {
    const views = scatteredPages(256);
    expect(hostAddressOf(views[0]!)).toBeDefined();
    const data = pattern(256 * PAGE, 1);
    fill(views, data);
    const f = join(dir, 'w1');
    writeFileSync(f, Buffer.alloc(10));
    const fd = openSync(f, 'r+');
    try {
      expect(await writeFrom(engine, { fd, what: 'file' }, 10, views, { partial: false })).toBe(data.length);
    } finally {
      closeSync(fd);
    }
    const back = readFileSync(f);
    expect(back.length).toBe(10 + data.length);
    expect(back.subarray(10).equals(data)).toBe(true);
  });

  test('contiguous pages and more pieces than IOV_MAX (1024) are written whole', async () => {
    // 1500 single-page views of which runs are contiguous in guest memory
    const views: Buffer[] = [];
    for (let i = 0; i < 1500; i++) {
      const gpa = (i % 2 === 0 ? i : 1500 + i) * 512; // half-page pieces, alternating areas
      expect(mem.translate(gpa, 512, views, pins)).toBe(true);
    }
    const data = pattern(1500 * 512, 2);
    fill(views, data);
    const f = join(dir, 'w2');
    const fd = openSync(f, 'w+');
    try {
      expect(await writeFrom(engine, { fd, what: 'file' }, 0n, views, { partial: false })).toBe(data.length);
    } finally {
      closeSync(fd);
    }
    expect(readFileSync(f).equals(data)).toBe(true);
  });

  test('a read fills segments after the header skip and stops short at end of file', async () => {
    const f = join(dir, 'r1');
    const data = pattern(100_000, 3);
    writeFileSync(f, data);
    const views = scatteredPages(64); // 256 KiB of room
    for (const v of views) v.fill(0xee);
    const fd = openSync(f, 'r');
    try {
      expect(await readInto(engine, { fd }, 1000, views, 16, 200_000)).toBe(99_000);
      expect(collect(views, 16, 99_000).equals(data.subarray(1000))).toBe(true);
      expect(collect(views, 0, 16).every((x) => x === 0xee)).toBe(true);
      // max caps the read; nothing after it is touched
      for (const v of views) v.fill(0xee);
      expect(await readInto(engine, { fd }, 0, views, 16, 5000)).toBe(5000);
      expect(collect(views, 16, 5000).equals(data.subarray(0, 5000))).toBe(true);
      expect(collect(views, 5016, 100).every((x) => x === 0xee)).toBe(true);
      // at end of file: 0
      expect(await readInto(engine, { fd }, 100_000, views, 16, 4096)).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  test('plain buffers (the /dev/fuse and socket paths) give the same result', async () => {
    const f = join(dir, 'p1');
    const parts = [pattern(3000, 4), pattern(5000, 5)];
    const fd = openSync(f, 'w+');
    try {
      expect(await writeFrom(engine, { fd, what: 'file' }, 0, parts, { partial: false })).toBe(8000);
      const into = [Buffer.alloc(100), Buffer.alloc(10_000)];
      expect(await readInto(engine, { fd }, 0, into, 50, 9000)).toBe(8000);
      expect(collect(into, 50, 8000).equals(Buffer.concat(parts))).toBe(true);
    } finally {
      closeSync(fd);
    }
  });

  test('on a local filesystem a page-cache write and read are answered at once, not as a promise', () => {
    const f = join(dir, 'now');
    const fd = openSync(f, 'w+');
    try {
      for (const [views, at] of [
        [[pattern(4096, 6)], 0],
        [scatteredPages(3), 8192],
      ] as const) {
        const data = Buffer.concat(views);
        const n = writeFrom(engine, { fd, speed: 'local', what: 'file' }, at, views, { partial: false });
        expect(n).toBe(data.length); // a number: the reply can leave in this turn
        const into = [Buffer.alloc(8), Buffer.alloc(data.length)];
        expect(readInto(engine, { fd, speed: 'local' }, at, into, 8, data.length)).toBe(data.length);
        expect(into[1]!.equals(data)).toBe(true);
      }
      // An error still comes as a rejection, never as a throw.
      const r = readInto(engine, { fd: 1_000_000, speed: 'memory', what: 'no such fd' }, 0, [Buffer.alloc(10)], 0, 10);
      expect(r).toBeInstanceOf(Promise);
      return expect(r).rejects.toThrow(/preadv.*no such fd/);
    } finally {
      closeSync(fd);
    }
  });

  test('an error names the call and the object', async () => {
    const views = scatteredPages(2);
    const f = join(dir, 'ro');
    writeFileSync(f, 'x');
    const fd = openSync(f, 'r');
    try {
      await expect(writeFrom(engine, { fd, what: 'file ro' }, 0, views, { partial: true })).rejects.toThrow(/pwritev.*file ro.*EBADF|EBADF.*pwritev/);
    } finally {
      closeSync(fd);
    }
  });

  // A filesystem that fills up part way through a write: the first call is
  // short, the retry fails with ENOSPC. With { partial: false } (a client that
  // caches writes) the error is the answer; with { partial: true }, the count.
  describe('a write that meets a full disk', () => {
    let full: string;
    beforeAll(() => {
      full = mkdtempSync(join(tmpdir(), 'duofs-vio-full-'));
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', full]);
    });
    afterAll(() => {
      spawnSync('umount', ['-l', full]);
      rmSync(full, { recursive: true, force: true });
    });

    // speed 'memory' (what the backend says of tmpfs): the first call runs
    // inline (writevNow) and its short count must go on the long way.
    test.each([
      ['guest pages', () => scatteredPages(40), undefined],
      ['plain buffers', () => [Buffer.alloc(100609)], undefined],
      ['guest pages, written inline first', () => scatteredPages(40), 'memory' as const],
      ['one plain buffer, written inline first', () => [Buffer.alloc(100609)], 'memory' as const],
    ])('%s', async (_label, make, speed) => {
      const views = make();
      const size = views.reduce((n, v) => n + v.length, 0);
      expect(size).toBeGreaterThan(65536);
      for (const partial of [false, true]) {
        const f = join(full, `f-${partial}`);
        const fd = openSync(f, 'w+');
        try {
          if (!partial) await expect(writeFrom(engine, { fd, speed, what: 'full file' }, 0, views, { partial })).rejects.toThrow(/ENOSPC/);
          else {
            const n = await writeFrom(engine, { fd, speed, what: 'full file' }, 0, views, { partial });
            expect(n).toBeGreaterThan(0);
            expect(n).toBeLessThan(size);
            expect(statSync(f).size).toBe(n);
          }
        } finally {
          closeSync(fd);
          rmSync(f);
        }
      }
    });
  });
});
