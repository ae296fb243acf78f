// virtio-fs with I/O in flight: under an engine where one file is slow (its
// reads start 400 ms late, as on a cold disk), requests on other files are
// answered first; RELEASE and FORGET of the slow file's handle wait for the
// read, whose data still arrives; a device reset, a REM_MEM_REG and a
// disconnect while the read waits never let it touch unmapped memory (the
// read lands in the old guest RAM, never fails with EFAULT), and the device
// keeps serving the next guest.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { Req } from '../../protocols/vhost-user/protocol.js';
import { LatencyEngine } from '../../src/io/latency.js';
import { engineUnderTest, RecordingEngine } from '../support/engines.js';
import { FUSE_WRITE_KILL_SUIDGID, ROOT } from './client.js';
import { FuseFixture } from './fixture.js';

const SLOW_MS = 400;
const slowData = randomBytes(4096);
let fx: FuseFixture;
let engine: RecordingEngine;

/** Host fds of this process (the server runs in it) open on `name`. */
function fdsOn(name: string): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === fx.p(name)) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

const isSlow = (fd: number): boolean => {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`).includes('/slow');
  } catch {
    return false;
  }
};

beforeAll(async () => {
  engine = new RecordingEngine(
    new LatencyEngine(await engineUnderTest(), (call, fd) => ((call === 'read' || call === 'write') && isSlow(fd) ? SLOW_MS : 0)),
  );
  fx = await new FuseFixture().start({ serve: { engine } });
  for (const name of ['slow1', 'slow2', 'slow3', 'slow4']) fs.writeFileSync(fx.p(name), slowData);
  fs.writeFileSync(fx.p('fast'), 'fast data');
  fs.writeFileSync(fx.p('slow-suid'), 'x');
  fs.chmodSync(fx.p('slow-suid'), 0o4755);
});

afterAll(async () => {
  await fx?.close();
});

async function openByName(c: Awaited<ReturnType<FuseFixture['guest']>>['c'], name: string): Promise<{ nodeid: bigint; fh: bigint }> {
  const { nodeid } = await c.lookup(ROOT, name);
  const { fh } = await c.open(nodeid, 0);
  return { nodeid, fh };
}

// The device serves one guest at a time: each test's guest hangs up at its end.
test('replies come as their I/O completes: a slow read does not hold up the requests behind it', async () => {
  const { c, fe } = await fx.guest();
  const slow = await openByName(c, 'slow1');
  const fast = await openByName(c, 'fast');
  const order: string[] = [];
  const slowRead = c.read(slow.fh, 0n, 4096).then((b) => {
    order.push('slow read');
    return b;
  });
  const fastRead = c.read(fast.fh, 0n, 100).then((b) => {
    order.push('fast read');
    return b;
  });
  const attr = c.getattr(fast.nodeid).then(() => order.push('getattr'));
  const [s, f] = await Promise.all([slowRead, fastRead, attr]);
  expect(order[2]).toBe('slow read');
  expect(s.equals(slowData)).toBe(true);
  expect(f.toString()).toBe('fast data');
  await c.release(slow.fh);
  await c.release(fast.fh);
  expect(fx.crashes()).toEqual([]);
  fe.close();
});

test('multiqueue: a slow read on one request queue does not hold up the other queue', async () => {
  const { c, fe } = await fx.guest();
  const slow = await openByName(c, 'slow1');
  const fast = await openByName(c, 'fast');
  const order: string[] = [];
  const slowReads = Promise.all([0, 1, 2, 3].map((i) => c.read(slow.fh, BigInt(i * 1024), 1024, { queue: 1 }))).then((b) => {
    order.push('queue 1 reads');
    return b;
  });
  const fastRead = c.read(fast.fh, 0n, 100, { queue: 2 }).then((b) => {
    order.push('queue 2 read');
    return b;
  });
  const [s, f] = await Promise.all([slowReads, fastRead]);
  expect(order).toEqual(['queue 2 read', 'queue 1 reads']);
  expect(Buffer.concat(s).equals(slowData)).toBe(true);
  expect(f.toString()).toBe('fast data');
  await c.release(slow.fh);
  await c.release(fast.fh);
  fe.close();
});

test('RELEASE and FORGET while a read is in flight: the read still returns the data, then the fd closes', async () => {
  const { c, fe } = await fx.guest();
  const slow = await openByName(c, 'slow2');
  expect(fdsOn('slow2')).toBeGreaterThan(0);
  const read = c.read(slow.fh, 0n, 4096);
  await new Promise((r) => setTimeout(r, 50)); // the read is waiting on the "disk"
  await c.release(slow.fh);
  await c.forget(slow.nodeid, 1n);
  const data = await read;
  expect(data.equals(slowData)).toBe(true);
  // Nothing holds the file any more: its fds are gone (the inode's and the handle's).
  await new Promise((r) => setTimeout(r, 50));
  expect(fdsOn('slow2')).toBe(0);
  expect(engine.failed).toEqual([]);
  fe.close();
});

test('a WRITE_KILL_SUIDGID write whose handle is released under it still drops the setuid bit', async () => {
  const { c, fe } = await fx.guest();
  const { nodeid } = await c.lookup(ROOT, 'slow-suid');
  const { fh } = await c.open(nodeid, 1 /* O_WRONLY */);
  const write = c.write(fh, 0n, Buffer.from('data'), { writeFlags: FUSE_WRITE_KILL_SUIDGID, uid: 1000, gid: 1000 });
  await new Promise((r) => setTimeout(r, 50)); // the write waits on the "disk"
  await c.release(fh);
  await c.forget(nodeid, 1n);
  expect(await write).toBe(4);
  expect(fs.statSync(fx.p('slow-suid')).mode & 0o7777).toBe(0o755);
  expect(fs.readFileSync(fx.p('slow-suid'), 'utf8')).toBe('data');
  fe.close();
});

test('RESET_DEVICE and REM_MEM_REG with a read in flight: the read lands in the old guest RAM, never in unmapped memory', async () => {
  const g = await fx.guest();
  const slow = await openByName(g.c, 'slow3');
  const region = g.fe.ram.regions[0]!;
  const before = engine.completed.length;
  void g.c.read(slow.fh, 0n, 4096).catch(() => undefined); // never answered: the device is reset under it
  await new Promise((r) => setTimeout(r, 50));
  expect(await g.fe.send(Req.RESET_DEVICE)).toBe(0n);
  await g.fe.remMemReg(0); // the guest takes its memory away at once
  // The read runs after all that, into duofs's own mapping of the old RAM:
  // the frontend still sees those pages (the memfd), and the data is there.
  await waitFor(() => engine.completed.length > before && engine.completed.some((r) => r.fd >= 0 && r.result === 4096), SLOW_MS * 5);
  expect(engine.failed).toEqual([]);
  const ram = g.fe.ram.view(region.gpa, region.size);
  expect(ram.indexOf(slowData)).toBeGreaterThanOrEqual(0);
  expect(fx.crashes()).toEqual([]);
  g.fe.close();
});

test('a guest that disconnects with 200 reads in flight: no fault, no fd left, and the next guest is served', async () => {
  const g = await fx.guest();
  const slow = await openByName(g.c, 'slow4');
  const failedBefore = engine.failed.length;
  for (let i = 0; i < 200; i++) void g.c.read(slow.fh, BigInt((i % 16) * 256), 256).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 50));
  g.fe.close(); // the VMM dies: its end of guest RAM goes with it
  await new Promise((r) => setTimeout(r, SLOW_MS * 2));
  expect(engine.failed.slice(failedBefore)).toEqual([]);
  await waitFor(() => fdsOn('slow4') === 0, 2000);
  const next = await fx.guest();
  const fast = await openByName(next.c, 'fast');
  expect((await next.c.read(fast.fh, 0n, 100)).toString()).toBe('fast data');
  expect(fx.crashes()).toEqual([]);
});

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
