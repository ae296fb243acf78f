// Every byte from a guest is hostile: malformed descriptor chains must break
// the queue (reported in the log, naming the peer and the fault, and on the
// error eventfd), never crash the daemon or reach outside guest memory. The
// other queues keep working, and a new connection is served normally.
import { afterEach, beforeEach, expect, test } from '@jest/globals';
import { Req, VirtioFeature } from '../../protocols/vhost-user/protocol.js';
import { closeFd } from '../../src/sys/fd.js';
import { createEventFd, drainEventFd } from '../../src/sys/eventfd.js';
import {
  DEFAULT_FEATURES,
  VRING_DESC_F_INDIRECT as IND,
  VRING_DESC_F_NEXT as NEXT,
  VRING_DESC_F_WRITE as WRITE,
  type DriverQueue,
  type VhostUserFrontend,
} from './driver.js';
import { Fixture, sleep, within } from './harness.js';

let fx: Fixture;
beforeEach(() => {
  fx = new Fixture();
});
afterEach(() => fx.close());

const RAM = { gpa: 0x100000, size: 1 << 20 }; // default test RAM: [1 MiB, 2 MiB)
const END = RAM.gpa + RAM.size;

interface Scenario {
  name: string;
  fault: RegExp;
  features?: bigint;
  /** Writes the chain by hand and makes it available (returns nothing: the test watches the used ring). */
  post(q: DriverQueue, fe: VhostUserFrontend): void;
}

/** A valid buffer in guest RAM. */
const buf = (fe: VhostUserFrontend, n = 64) => fe.ram.alloc(n, 8);

const scenarios: Scenario[] = [
  {
    name: 'an address outside guest memory',
    fault: /descriptor 0 \[0x70000000, \+16\) is outside guest memory/,
    post: (q) => {
      q.writeDescriptor(0, { addr: 0x7000_0000, len: 16, flags: 0 });
      q.publish(0);
    },
  },
  {
    name: 'an address beyond 2^53',
    fault: /address 0xfffffffffffffff0 is beyond guest memory/,
    post: (q) => {
      q.writeDescriptor(0, { addr: 0xffff_ffff_ffff_fff0n, len: 32, flags: 0 });
      q.publish(0);
    },
  },
  {
    name: 'a length that runs past the end of memory (a 32-bit wrap attempt)',
    fault: /is outside guest memory/,
    post: (q) => {
      q.writeDescriptor(0, { addr: END - 8, len: 0xffff_ffff, flags: WRITE });
      q.publish(0);
    },
  },
  {
    name: 'a chain that loops',
    fault: /longer than the queue \(a loop\?\)/,
    post: (q, fe) => {
      const b = buf(fe);
      q.writeDescriptor(0, { addr: b, len: 8, flags: NEXT, next: 1 });
      q.writeDescriptor(1, { addr: b, len: 8, flags: NEXT, next: 0 });
      q.publish(0);
    },
  },
  {
    name: 'a next index outside the table',
    fault: /links to 300, outside its table of 256/,
    post: (q, fe) => {
      q.writeDescriptor(0, { addr: buf(fe), len: 8, flags: NEXT, next: 300 });
      q.publish(0);
    },
  },
  {
    name: 'a device-writable descriptor before a device-readable one',
    fault: /device-readable descriptor 1 after a device-writable one/,
    post: (q, fe) => {
      q.writeDescriptor(0, { addr: buf(fe), len: 8, flags: WRITE | NEXT, next: 1 });
      q.writeDescriptor(1, { addr: buf(fe), len: 8, flags: 0 });
      q.publish(0);
    },
  },
  {
    name: 'a head index outside the queue',
    fault: /head descriptor 4000 outside a queue of 256/,
    post: (q) => q.publish(4000),
  },
  {
    name: 'an avail index that jumps past the queue size',
    fault: /avail index jumped by 1000/,
    post: (q) => q.setAvailIdxRaw(1000),
  },
  {
    name: 'an indirect table outside guest memory',
    fault: /indirect table \[0x70000000, \+64\) is outside guest memory/,
    post: (q) => {
      q.writeDescriptor(0, { addr: 0x7000_0000, len: 64, flags: IND });
      q.publish(0);
    },
  },
  {
    name: 'an indirect table running past the end of its region',
    fault: /indirect table .* is outside guest memory/,
    post: (q) => {
      q.writeDescriptor(0, { addr: END - 16, len: 64, flags: IND });
      q.publish(0);
    },
  },
  {
    name: 'an indirect table whose length is not a multiple of 16',
    fault: /indirect table length 24/,
    post: (q, fe) => {
      q.writeDescriptor(0, { addr: buf(fe), len: 24, flags: IND });
      q.publish(0);
    },
  },
  {
    name: 'an indirect descriptor inside an indirect table',
    fault: /indirect descriptor 1 inside an indirect table/,
    post: (q, fe) => {
      const t = fe.writeIndirectTable([
        { addr: buf(fe), len: 8, flags: NEXT, next: 1 },
        { addr: buf(fe), len: 16, flags: IND },
      ]);
      q.writeDescriptor(0, { addr: t, len: 32, flags: IND });
      q.publish(0);
    },
  },
  {
    name: 'INDIRECT together with NEXT',
    fault: /indirect descriptor 0 also has NEXT set/,
    post: (q, fe) => {
      const t = fe.writeIndirectTable([{ addr: buf(fe), len: 8, flags: 0 }]);
      q.writeDescriptor(0, { addr: t, len: 16, flags: IND | NEXT, next: 1 });
      q.publish(0);
    },
  },
  {
    name: 'a loop inside an indirect table',
    fault: /longer than its indirect table/,
    post: (q, fe) => {
      const b = buf(fe);
      const t = fe.writeIndirectTable([
        { addr: b, len: 8, flags: NEXT, next: 1 },
        { addr: b, len: 8, flags: NEXT, next: 0 },
      ]);
      q.writeDescriptor(0, { addr: t, len: 32, flags: IND });
      q.publish(0);
    },
  },
  {
    name: 'an indirect entry pointing outside guest memory',
    fault: /descriptor 1 \[0x7fff0000, \+8\) is outside guest memory/,
    post: (q, fe) => {
      const t = fe.writeIndirectTable([
        { addr: buf(fe), len: 8, flags: NEXT, next: 1 },
        { addr: 0x7fff_0000, len: 8, flags: WRITE },
      ]);
      q.writeDescriptor(0, { addr: t, len: 32, flags: IND });
      q.publish(0);
    },
  },
  {
    name: 'an indirect descriptor when INDIRECT_DESC was not negotiated',
    fault: /INDIRECT_DESC was not negotiated/,
    features: DEFAULT_FEATURES & ~VirtioFeature.INDIRECT_DESC,
    post: (q, fe) => {
      const t = fe.writeIndirectTable([{ addr: buf(fe), len: 8, flags: 0 }]);
      q.writeDescriptor(0, { addr: t, len: 16, flags: IND });
      q.publish(0);
    },
  },
];

test.each(scenarios)('$name breaks the queue, is logged with the peer, signals the error fd; the daemon serves on', async (sc) => {
  const fe = await fx.connect({ regions: [RAM], features: sc.features });
  const q = fe.queue(1);
  const err = createEventFd();
  await fe.setVringFd(Req.SET_VRING_ERR, 1, err);
  sc.post(q, fe);
  await sleep(30);
  expect(q.usedIdx).toBe(0);
  expect(fx.device.seen.length).toBe(0);
  const line = fx.warnings().find((l) => l.queue === 1 && sc.fault.test(String(l.fault)));
  expect(line?.peer).toMatch(/^#1 pid \d+ uid \d+$/);
  expect(drainEventFd(err)).toBe(1);
  closeFd(err);

  // The broken queue stays quiet; the other queue of the same guest works.
  q.setAvailIdxRaw(0);
  expect((await within(fe.request(0, { out: [Buffer.from('alive')], in: [8] }), 2000, 'other queue')).data.toString()).toBe('alive');

  // A guest reboot (new connection) gets a working device.
  fe.close();
  await fx.nextDisconnect();
  const fe2 = await fx.connect({ regions: [RAM] });
  expect((await within(fe2.request(1, { out: [Buffer.from('fresh')], in: [8] }), 2000, 'fresh connection')).data.toString()).toBe('fresh');
});

test('zero-length descriptors are not a fault: the chain completes with 0 bytes', async () => {
  const fe = await fx.connect({ regions: [RAM] });
  const q = fe.queue(1);
  q.writeDescriptor(0, { addr: 0, len: 0, flags: NEXT, next: 1 });
  q.writeDescriptor(1, { addr: 0xdead_0000, len: 0, flags: WRITE });
  const done = q.awaitUsed(0);
  q.publish(0);
  expect(await within(done, 2000, 'empty chain')).toMatchObject({ head: 0, len: 0 });
  expect(fx.device.seen.at(-1)).toMatchObject({ readable: 0, writable: 0 });
});

test('a device that throws gets its chain completed empty; the queue keeps working', async () => {
  const fe = await fx.connect({ regions: [RAM] });
  fx.device.explode = true;
  expect((await within(fe.request(1, { out: [Buffer.from('boom')], in: [8] }), 2000, 'exploded request')).len).toBe(0);
  expect(fx.lines.some((l) => l.level === 50 && /device failed on a request/.test(l.msg))).toBe(true);
  fx.device.explode = false;
  expect((await within(fe.request(1, { out: [Buffer.from('calm')], in: [8] }), 2000, 'next request')).data.toString()).toBe('calm');
});

test('completing a chain twice is ignored', async () => {
  const fe = await fx.connect({ regions: [RAM] });
  fx.device.mode = 'hold';
  const r = fe.request(1, { out: [Buffer.from('once')], in: [8] });
  await sleep(20);
  const chain = fx.device.held.pop()!;
  expect(chain.complete(4)).toBe(true);
  expect(chain.complete(4)).toBe(false);
  await within(r, 2000, 'completion');
  await sleep(10);
  expect(fe.queue(1).usedIdx).toBe(1);
  expect(fe.queue(1).strayUsed).toEqual([]);
});
