// 9P with I/O in flight: one file is slow (its reads start 400 ms late, as on
// a cold disk). On a socket connection other requests are answered first;
// Tflush of the waiting Tread is answered only after its Rread, as the
// protocol requires; Tclunk during the read leaves the read its fd. On the
// virtio-9p device a RESET_DEVICE and REM_MEM_REG under the read never let it
// touch unmapped memory: the data lands in the old guest RAM.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { startDuofs, type Duofs } from '../../src/server.js';
import { LatencyEngine } from '../../src/io/latency.js';
import { Req } from '../../protocols/vhost-user/protocol.js';
import { NOFID, NOTAG, T } from '../../protocols/9p/constants.js';
import { Writer as FrameWriter } from '../../protocols/9p/wire.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { engineUnderTest, RecordingEngine } from '../support/engines.js';
import { P9Client } from './client.js';
import { Writer } from './proto.js';

const SLOW_MS = 400;
const slowData = randomBytes(4096);
let base: string;
let dir: string;
let duofs: Duofs;
let engine: RecordingEngine;
const errors: string[] = [];

const isSlow = (fd: number): boolean => {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`).includes('/slow');
  } catch {
    return false;
  }
};

function fdsOn(name: string): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === path.join(dir, name)) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

beforeAll(async () => {
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-9p-inflight-')));
  dir = path.join(base, 'export');
  fs.mkdirSync(dir);
  for (const n of ['slow1', 'slow2', 'slow3', 'slow4']) fs.writeFileSync(path.join(dir, n), slowData);
  fs.writeFileSync(path.join(dir, 'fast'), 'fast data');
  engine = new RecordingEngine(new LatencyEngine(await engineUnderTest(), (call, fd) => (call === 'read' && isSlow(fd) ? SLOW_MS : 0)));
  const log = pino(
    { level: 'error' },
    {
      write: (s: string) => {
        errors.push(s);
      },
    },
  );
  duofs = await startDuofs({
    sharedDir: dir,
    ninepSocket: path.join(base, '9p.sock'),
    ninepVhostSocket: path.join(base, 'v9p.sock'),
    ninepTag: 'v9p',
    engine,
    log,
  });
});

afterAll(async () => {
  await duofs?.close();
  fs.rmSync(base, { recursive: true, force: true });
});

async function session(): Promise<{ c: P9Client; root: number }> {
  return P9Client.session({ path: path.join(base, '9p.sock') }, { aname: dir });
}

async function openFid(c: P9Client, root: number, name: string): Promise<number> {
  const fid = c.newFid();
  await c.walkPath(root, fid, name);
  await c.lopen(fid, 0);
  return fid;
}

const treadBody = (fid: number, offset: number, count: number): Buffer => new Writer().u32(fid).u64(offset).u32(count).done();

test('a slow Tread does not hold up the requests behind it on the same connection', async () => {
  const { c, root } = await session();
  const slow = await openFid(c, root, 'slow1');
  const fast = await openFid(c, root, 'fast');
  const order: string[] = [];
  const slowRead = c.read(slow, 0, 4096).then((b) => {
    order.push('slow');
    return b;
  });
  const fastRead = c.read(fast, 0, 100).then((b) => {
    order.push('fast');
    return b;
  });
  const attr = c.getattr(fast).then(() => order.push('getattr'));
  const [s, f] = await Promise.all([slowRead, fastRead, attr]);
  expect(order[2]).toBe('slow');
  expect(s.equals(slowData)).toBe(true);
  expect(f.toString()).toBe('fast data');
  await c.close();
});

test('Tflush of a Tread in flight is answered after the Rread, never before', async () => {
  const { c, root } = await session();
  const slow = await openFid(c, root, 'slow2');
  const order: string[] = [];
  const { tag, reply: read } = c.requestWithTag(T.read, treadBody(slow, 0, 4096));
  const readDone = read.then((r) => {
    order.push(`R${r.type}`);
    return r;
  });
  await new Promise((r) => setTimeout(r, 50)); // the read waits on the "disk"
  const flush = c.request(T.flush, new Writer().u16(tag).done()).then((r) => {
    order.push(`R${r.type}`);
    return r;
  });
  const [r, f] = await Promise.all([readDone, flush]);
  expect(f.type).toBe(T.flush + 1);
  // Rread first (the request finished), then Rflush: the tag is free only now.
  expect(order).toEqual([`R${T.read + 1}`, `R${T.flush + 1}`]);
  expect(r.type).toBe(T.read + 1);
  expect(r.body.readUInt32LE(0)).toBe(4096);
  expect(r.body.subarray(4).equals(slowData)).toBe(true);
  await c.close();
});

test('Tclunk while a Tread is in flight: the read still returns the data, then the fd closes', async () => {
  const { c, root } = await session();
  const slow = await openFid(c, root, 'slow3');
  const read = c.read(slow, 0, 4096);
  await new Promise((r) => setTimeout(r, 50));
  await c.clunk(slow);
  expect((await read).equals(slowData)).toBe(true);
  await c.close();
  await new Promise((r) => setTimeout(r, 50));
  expect(fdsOn('slow3')).toBe(0);
  expect(engine.failed).toEqual([]);
});

test('virtio-9p: RESET_DEVICE and REM_MEM_REG with a Tread in flight; the read lands in the old guest RAM', async () => {
  const fe = await VhostUserFrontend.connect({ socketPath: path.join(base, 'v9p.sock'), queues: 1, regions: [{ gpa: 0x100000, size: 8 << 20 }] });
  try {
    const send = (frame: Buffer, room = 8192) => fe.request(0, { out: [frame], in: [room] });
    let tag = 1;
    await send(new FrameWriter().u32(65536).str('9P2000.L').finish(T.version, NOTAG));
    await send(new FrameWriter().u32(1).u32(NOFID).str('root').str(dir).u32(0).finish(T.attach, tag++));
    await send(new FrameWriter().u32(1).u32(2).u16(1).str('slow4').finish(T.walk, tag++));
    await send(new FrameWriter().u32(2).u32(0).finish(T.lopen, tag++));
    const before = engine.completed.length;
    void send(new FrameWriter().u32(2).u64(0).u32(4096).finish(T.read, tag++), 4096 + 11).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    expect(await fe.send(Req.RESET_DEVICE)).toBe(0n);
    await fe.remMemReg(0);
    const until = Date.now() + SLOW_MS * 5;
    while (!engine.completed.slice(before).some((x) => x.call === 'read')) {
      if (Date.now() > until) throw new Error('the read never ran');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(
      engine.completed
        .slice(before)
        .filter((x) => x.call === 'read')
        .map((x) => x.result),
    ).toEqual([4096]);
    const region = fe.ram.regions[0]!;
    expect(fe.ram.view(region.gpa, region.size).indexOf(slowData)).toBeGreaterThanOrEqual(0);
  } finally {
    fe.close();
  }
  await new Promise((r) => setTimeout(r, 100));
  expect(fdsOn('slow4')).toBe(0); // the reset clunked the guest's fids
  expect(errors).toEqual([]);
});
