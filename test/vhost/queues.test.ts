// Split virtqueues through the backend core: chains of several descriptors,
// indirect tables, several queues, notification suppression (EVENT_IDX,
// NO_INTERRUPT) and guest memory added and removed.
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { VirtioFeature } from '../../protocols/vhost-user/protocol.js';
import { DEFAULT_FEATURES } from './driver.js';
import { Fixture, sleep, within } from './harness.js';

let fx: Fixture;
beforeEach(() => {
  fx = new Fixture();
});
afterEach(() => fx.close());

const bytes = (n: number, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

describe('descriptor chains', () => {
  test('readable and writable parts split over several descriptors arrive as several views', async () => {
    const fe = await fx.connect();
    const parts = [bytes(100, 1), bytes(3000, 2), bytes(1, 3)];
    const c = await within(fe.request(1, { out: parts, in: [1000, 2000, 1500] }), 2000, 'echo');
    expect(c.len).toBe(3101);
    expect(c.data.equals(Buffer.concat(parts))).toBe(true);
    expect(fx.device.seen.at(-1)).toEqual({ queue: 1, readable: 3101, writable: 4500, segments: [3, 3] });
  });

  test('the device cannot report more bytes than the writable space', async () => {
    const fe = await fx.connect();
    const c = await within(fe.request(1, { out: [bytes(500)], in: [100] }), 2000, 'echo');
    expect(c.len).toBe(100);
  });

  test('an indirect chain is served like a direct one', async () => {
    const fe = await fx.connect();
    const parts = [bytes(40, 9), bytes(24, 8)];
    const c = await within(fe.request(1, { out: parts, in: [16, 64], indirect: true }), 2000, 'indirect echo');
    expect(c.data.equals(Buffer.concat(parts))).toBe(true);
    expect(fx.device.seen.at(-1)).toEqual({ queue: 1, readable: 64, writable: 80, segments: [2, 2] });
  });

  test('an indirect table longer than the queue is accepted (Linux builds such tables)', async () => {
    const fe = await fx.connect({ queueSize: 8 });
    const parts = Array.from({ length: 20 }, (_, i) => bytes(10, i));
    const c = await within(fe.request(1, { out: parts, in: [100, 100], indirect: true }), 2000, 'long indirect');
    expect(c.len).toBe(200);
    expect(c.data.equals(Buffer.concat(parts))).toBe(true);
  });

  test('a full descriptor table of outstanding chains, completed out of order', async () => {
    const fe = await fx.connect({ queueSize: 32 });
    fx.device.mode = 'hold';
    const all = Array.from({ length: 16 }, (_, i) => fe.request(1, { out: [Buffer.from(`r${i}`)], in: [8] }));
    await sleep(20);
    expect(fx.device.held.length).toBe(16);
    for (const chain of fx.device.held.splice(0).reverse()) chain.complete(0);
    const done = await within(Promise.all(all), 2000, 'all completions');
    expect(done.map((c) => c.len)).toEqual(Array(16).fill(0));
    // The ring wraps: a second round on the same descriptors works.
    fx.device.mode = 'sync';
    for (let i = 0; i < 40; i++)
      expect((await within(fe.request(1, { out: [Buffer.from(`w${i}`)], in: [8] }), 2000, 'wrap')).data.toString()).toBe(`w${i}`);
  });

  test('a descriptor running from one region into the next (contiguous in guest memory) is served as two views', async () => {
    const fe = await fx.connect({
      regions: [
        { gpa: 0x100000, size: 1 << 20 },
        { gpa: 0x200000, size: 1 << 20 },
      ],
    });
    const at = 0x200000 - 100;
    fe.ram.write(at, bytes(200, 5).subarray(0, 100)); // spans the boundary: written through each region's view
    fe.ram.write(0x200000, bytes(200, 5).subarray(100));
    const q = fe.queue(1);
    q.writeDescriptor(200, { addr: at, len: 200, flags: 1, next: 201 });
    const inAt = fe.ram.alloc(256, 8, 0);
    q.writeDescriptor(201, { addr: inAt, len: 256, flags: 2 });
    const done = q.awaitUsed(200);
    q.publish(200);
    expect((await within(done, 2000, 'spanning echo')).len).toBe(200);
    expect(fe.ram.read(inAt, 200).equals(bytes(200, 5))).toBe(true);
    expect(fx.device.seen.at(-1)!.segments).toEqual([2, 1]);
  });
});

describe('several queues', () => {
  test('requests on every queue reach the device with their queue number', async () => {
    fx.close();
    fx = new Fixture(new (await import('./echo-device.js')).EchoDevice(4));
    const fe = await fx.connect();
    expect(fe.queues.length).toBe(4);
    const rs = await within(
      Promise.all([0, 1, 2, 3, 3, 2, 1, 0].map((q, i) => fe.request(q, { out: [Buffer.from(`q${q}-${i}`)], in: [16] }))),
      2000,
      'all queues',
    );
    expect(rs.map((c) => c.data.toString())).toEqual([0, 1, 2, 3, 3, 2, 1, 0].map((q, i) => `q${q}-${i}`));
    expect(fx.device.seen.map((s) => s.queue).sort()).toEqual([0, 0, 1, 1, 2, 2, 3, 3]);
  });
});

describe('notification suppression', () => {
  test('EVENT_IDX: the backend publishes avail_event, so a burst of requests needs one kick', async () => {
    const fe = await fx.connect();
    const q = fe.queue(1);
    await within(q.request({ out: [Buffer.from('first')], in: [8] }), 2000, 'first');
    const kicks = q.kicks;
    const burst = [1, 2, 3, 4].map((i) => q.request({ out: [Buffer.from(`b${i}`)], in: [8] }));
    expect(q.kicks).toBe(kicks + 1);
    await within(Promise.all(burst), 2000, 'burst');
  });

  test('EVENT_IDX: no interrupt until the used index passes used_event', async () => {
    const fe = await fx.connect();
    const q = fe.queue(1);
    await within(q.request({ out: [Buffer.from('warm')], in: [8] }), 2000, 'first'); // the first completion always interrupts
    fx.device.mode = 'hold';
    const reqs = [0, 1, 2, 3].map((i) => q.request({ out: [Buffer.from(`e${i}`)], in: [8] }));
    await sleep(20);
    q.setUsedEvent(4); // interrupt me when used entry 4 (the last of these) is written
    const before = q.interrupts;
    for (let i = 0; i < 3; i++) {
      fx.device.held.shift()!.complete(1);
      await sleep(5);
    }
    expect(q.usedIdx).toBe(4);
    expect(q.interrupts).toBe(before);
    fx.device.held.shift()!.complete(1);
    await within(Promise.all(reqs), 2000, 'the interrupt at used_event');
    expect(q.interrupts).toBe(before + 1);
  });

  test('without EVENT_IDX, NO_INTERRUPT in the avail flags silences the device', async () => {
    const fe = await fx.connect({ features: DEFAULT_FEATURES & ~VirtioFeature.EVENT_IDX, noInterrupt: true });
    const q = fe.queue(1);
    const done = q.request({ out: [Buffer.from('hush')], in: [8] });
    await sleep(50);
    expect(q.interrupts).toBe(0);
    expect(q.usedIdx).toBe(1);
    q.reap();
    expect((await done).data.toString()).toBe('hush');
    q.setNoInterrupt(false);
    await within(q.request({ out: [Buffer.from('loud')], in: [8] }), 2000, 'interrupt again');
    expect(q.interrupts).toBe(1);
  });

  test('completions in one turn of the event loop share one interrupt', async () => {
    const fe = await fx.connect();
    const q = fe.queue(1);
    fx.device.mode = 'hold';
    const reqs = Array.from({ length: 8 }, (_, i) => q.request({ out: [Buffer.from(`t${i}`)], in: [8] }));
    await sleep(20);
    const before = q.interrupts;
    fx.device.release();
    await within(Promise.all(reqs), 2000, 'batch');
    expect(q.interrupts).toBe(before + 1);
  });
});

describe('guest memory', () => {
  const twoRegions = {
    regions: [
      { gpa: 0x100000, size: 4 << 20 },
      { gpa: 0x40000000, size: 4 << 20 },
    ],
  };

  test('ADD_MEM_REG regions are used for buffers in either', async () => {
    const fe = await fx.connect(twoRegions);
    for (const region of [0, 1]) {
      const c = await within(fe.request(1, { out: [bytes(300, region)], in: [300], region }), 2000, `region ${region}`);
      expect(c.data.equals(bytes(300, region))).toBe(true);
    }
  });

  test('SET_MEM_TABLE works too, and replacing the table keeps running rings working', async () => {
    const fe = await fx.connect({ ...twoRegions, useMemSlots: false });
    expect((await within(fe.request(1, { out: [bytes(10)], in: [10], region: 1 }), 2000, 'table')).len).toBe(10);
    await fe.setMemTable(); // same regions again: rings are re-resolved
    expect((await within(fe.request(1, { out: [bytes(10)], in: [10], region: 1 }), 2000, 'after replace')).len).toBe(10);
  });

  test('REM_MEM_REG: buffers in the removed region break the queue; the region is unmapped; unknown regions are refused', async () => {
    const fe = await fx.connect(twoRegions);
    const mapsBefore = backendMappings();
    await fe.remMemReg(1);
    expect(backendMappings()).toBe(mapsBefore - 1);
    let finished = false;
    void fe.request(1, { out: [bytes(10)], in: [10], region: 1 }).then(() => (finished = true));
    await sleep(50);
    expect(finished).toBe(false);
    expect(fx.warnings().some((l) => /outside guest memory/.test(l.fault ?? '') && l.queue === 1)).toBe(true);
    expect(await within(fe.request(0, { out: [bytes(10)], in: [10], region: 0 }), 2000, 'other queue')).toMatchObject({ len: 10 });
    await expect(fe.remMemReg(1)).rejects.toThrow(/refused REM_MEM_REG/);
    await fe.addMemReg(1);
    expect(backendMappings()).toBe(mapsBefore);
  });

  test('a region removed while a request still points into it stays mapped until the request completes', async () => {
    const fe = await fx.connect(twoRegions);
    fx.device.mode = 'hold';
    const req = fe.request(1, { out: [bytes(64, 3)], in: [64], region: 1 });
    await sleep(20);
    const maps = backendMappings();
    await fe.remMemReg(1);
    expect(backendMappings()).toBe(maps); // pinned by the held chain
    fx.device.release(); // the device writes into the (still mapped) region
    expect((await within(req, 2000, 'late completion')).data.equals(bytes(64, 3))).toBe(true);
    expect(backendMappings()).toBe(maps - 1);
  });
});

/** Mappings of the test guest memfd in this process (the frontend's one mapping plus the backend's, one per region). */
function backendMappings(): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('memfd:duofs-test-guest')).length;
}
