// Live migration, precopy: the dirty log. While the frontend has LOG_ALL on
// and gave a log (SET_LOG_BASE with a memfd), every page of guest memory
// duofs writes must be marked after the write — reply bytes in device-writable
// descriptors (FUSE replies, READ data) and the used ring (entries, index,
// avail_event) — and nothing else; with logging off, nothing at all.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { ProtocolFeature, Req } from '../../protocols/vhost-user/protocol.js';
import { createMemfd } from '../../src/sys/mem.js';
import { closeFd } from '../../src/sys/fd.js';
import { DEFAULT_PROTOCOL_FEATURES, DirtyBitmap, type Completion, type DriverQueue } from '../vhost/driver.js';
import { IN_HEADER, OP, OUT_HEADER, ROOT, cstr, inHeader } from './client.js';
import { FuseFixture, type Guest } from './fixture.js';

const PAGE = 4096;
let fx: FuseFixture;
let g: Guest;

beforeAll(async () => {
  fx = await new FuseFixture().start();
  fs.writeFileSync(fx.p('data'), Buffer.alloc(10000, 0x5a));
  g = await fx.guest({ protocolFeatures: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.LOG_SHMFD });
});
afterAll(async () => {
  await fx.close();
});

/** Pages holding the first `c.len` bytes the device wrote into the chain's writable buffers. */
function replyPages(c: Completion): Set<number> {
  const pages = new Set<number>();
  let left = c.len;
  for (const [gpa, len] of c.writable) {
    const n = Math.min(len, left);
    if (n <= 0) break;
    for (let p = Math.floor(gpa / PAGE); p <= Math.floor((gpa + n - 1) / PAGE); p++) pages.add(p);
    left -= n;
  }
  return pages;
}

/** Pages of the used ring the device writes for a completion in `slot`: the index, the entry, avail_event. */
function usedPages(q: DriverQueue, slot: number): Set<number> {
  const at = (off: number, n: number) => [Math.floor((q.usedGpa + off) / PAGE), Math.floor((q.usedGpa + off + n - 1) / PAGE)];
  return new Set([...at(2, 2), ...at(4 + 8 * slot, 8), ...at(4 + 8 * q.size, 2)]);
}

let unique = 1000n;
/** One FUSE request put on request queue 1 by hand, so the completion (with its buffers' addresses) is ours. */
async function request(opcode: number, nodeid: bigint, args: Buffer, inSizes: number[]): Promise<{ c: Completion; slot: number }> {
  const q = g.fe.queue(1);
  const slot = q.usedIdx % q.size;
  const c = await g.fe.request(1, {
    out: [inHeader(IN_HEADER + args.length, opcode, (unique += 2n), nodeid, { uid: 0, gid: 0 }), args],
    in: inSizes,
  });
  expect(c.data.readInt32LE(4)).toBe(0); // no error reply
  return { c, slot };
}

const readIn = (fh: bigint, offset: bigint, size: number): Buffer => {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(fh, 0);
  b.writeBigUInt64LE(offset, 8);
  b.writeUInt32LE(size, 16);
  return b;
};

const sorted = (s: Set<number>): number[] => [...s].sort((a, b) => a - b);

describe('dirty log (LOG_ALL, LOG_SHMFD)', () => {
  test('offered: LOG_ALL among the virtio features, LOG_SHMFD among the protocol features', () => {
    expect(g.fe.offeredFeatures & (1n << 26n)).toBe(1n << 26n);
    expect(g.fe.offeredProtocolFeatures & ProtocolFeature.LOG_SHMFD).toBe(ProtocolFeature.LOG_SHMFD);
  });

  test('a log given but LOG_ALL off: LOOKUP and READ mark nothing', async () => {
    const log = new DirtyBitmap(Math.ceil((17 << 20) / PAGE / 8));
    try {
      const reply = await g.fe.setLogBase(log.fd, log.size);
      expect(reply.size).toBe(8);
      expect(reply.payload.readBigUInt64LE(0)).toBe(0n);
      const { c } = await request(OP.LOOKUP, ROOT, cstr('data'), [OUT_HEADER, 4096]);
      expect(c.len).toBe(OUT_HEADER + 128);
      expect(log.pages()).toEqual([]);
    } finally {
      log.close();
    }
  });

  test('with LOG_ALL: exactly the pages of the LOOKUP reply, the READ data and the used ring are marked', async () => {
    const log = await g.fe.startDirtyLog();
    try {
      const q = g.fe.queue(1);
      // Turning logging on re-arms avail_event (EVENT_IDX) on every queue: used-ring pages only.
      const rings = new Set(g.fe.queues.flatMap((x) => [...usedPages(x, 0)]));
      expect(log.take().every((p) => rings.has(p))).toBe(true);

      const lookup = await request(OP.LOOKUP, ROOT, cstr('data'), [OUT_HEADER, 4096]);
      expect(lookup.c.len).toBe(OUT_HEADER + 128);
      const nodeid = lookup.c.data.readBigUInt64LE(OUT_HEADER);
      const want = new Set([...replyPages(lookup.c), ...usedPages(q, lookup.slot)]);
      expect(log.take()).toEqual(sorted(want));

      const open = await request(OP.OPEN, nodeid, Buffer.alloc(8), [OUT_HEADER, 16]);
      const fh = open.c.data.readBigUInt64LE(OUT_HEADER);
      log.take();

      // 10000 bytes into a 16 KiB buffer: the data's pages are marked, not the unused tail's.
      const read = await request(OP.READ, nodeid, readIn(fh, 0n, 16384), [OUT_HEADER, 16384]);
      expect(read.c.len).toBe(OUT_HEADER + 10000);
      const [dataGpa] = read.c.writable[1]!;
      const dataPages = replyPages(read.c);
      expect(dataPages.has(Math.floor((dataGpa + 10000 - 1) / PAGE))).toBe(true);
      expect(dataPages.has(Math.floor((dataGpa + 16384 - 1) / PAGE))).toBe(false); // the test tells the tail apart
      expect(log.take()).toEqual(sorted(new Set([...dataPages, ...usedPages(q, read.slot)])));
    } finally {
      await g.fe.stopDirtyLog();
      log.close();
    }
  });

  test('LOG_ALL without VRING_F_LOG: reply bytes are marked, the used ring is not', async () => {
    const log = await g.fe.startDirtyLog({ usedLog: false });
    try {
      const q = g.fe.queue(1);
      const r = await request(OP.LOOKUP, ROOT, cstr('data'), [OUT_HEADER, 4096]);
      const reply = replyPages(r.c);
      expect([...usedPages(q, r.slot)].some((p) => reply.has(p))).toBe(false); // the test can tell them apart
      expect(log.take()).toEqual(sorted(reply));
    } finally {
      await g.fe.stopDirtyLog();
      log.close();
    }
  });

  test('after LOG_ALL is turned off again nothing is marked', async () => {
    const log = await g.fe.startDirtyLog();
    await g.fe.stopDirtyLog();
    try {
      await request(OP.LOOKUP, ROOT, cstr('data'), [OUT_HEADER, 4096]);
      expect(log.pages()).toEqual([]);
    } finally {
      log.close();
    }
  });

  test('a log the backend cannot use is refused, and the session goes on', async () => {
    // A log fd shorter than the size it claims, and a size of 0.
    const fd = createMemfd('short-log', 4096);
    g.fe.close(); // one frontend at a time
    try {
      const fe = (await fx.guest({ protocolFeatures: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.LOG_SHMFD })).fe;
      const closed = fe.closed;
      await expect(fe.setLogBase(fd, 1 << 20)).rejects.toThrow(/closed the connection/);
      await closed;
      expect(fx.warnings().some((l) => /SET_LOG_BASE: log needs 1048576 bytes of its fd, which has 4096/.test(l.fault ?? ''))).toBe(true);
      const fe2 = (await fx.guest({ protocolFeatures: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.LOG_SHMFD })).fe;
      await expect(fe2.setLogBase(fd, 0)).rejects.toThrow(/closed the connection/);
      expect(fx.warnings().some((l) => /SET_LOG_BASE: log size 0 is not between/.test(l.fault ?? ''))).toBe(true);
      // Without LOG_SHMFD negotiated SET_LOG_BASE is refused (nonzero ack when asked for one).
      const fe3 = (await fx.guest()).fe;
      expect(await fe3.send(Req.SET_LOG_BASE, Buffer.alloc(16), [fd])).toBe(1n);
      fe3.close();
      const again = await fx.guest();
      expect((await again.c.lookup(ROOT, 'data')).attr.size).toBe(10000n);
    } finally {
      closeFd(fd);
    }
  });
});
