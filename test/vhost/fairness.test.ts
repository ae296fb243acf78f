// A guest that keeps one ring full must not hold up the event loop: the
// backend hands a bounded batch of chains to the device per turn and
// continues on a later one, so another queue (and everything else on the
// loop) is served in between. Entries left on the ring are served without
// another kick, each exactly once, in ring order.
import { afterEach, describe, expect, test } from '@jest/globals';
import type { DescriptorChain } from '../../protocols/vhost-user/device.js';
import { gather } from '../../protocols/virtqueue/chain.js';
import { Req, VirtioFeature } from '../../protocols/vhost-user/protocol.js';
import { DEFAULT_FEATURES, type VhostUserFrontend } from './driver.js';
import { EchoDevice } from './echo-device.js';
import { Fixture, sleep, within } from './harness.js';

const FLOOD = 1000;

/** An echo device that logs which request (by its bytes) reached it, and can act on the first of a queue. */
class RecordingDevice extends EchoDevice {
  readonly order: string[] = [];
  onFirst: ((queue: number) => void) | null = null;

  override onRequest(queue: number, chain: DescriptorChain): void {
    this.order.push(gather(chain.readable).toString());
    const f = this.onFirst;
    if (f) {
      this.onFirst = null;
      f(queue);
    }
    super.onRequest(queue, chain);
  }
}

let fx: Fixture | undefined;
afterEach(() => {
  fx?.close();
  fx = undefined;
});

async function setup(features = DEFAULT_FEATURES): Promise<{ dev: RecordingDevice; fe: VhostUserFrontend }> {
  const dev = new RecordingDevice(2);
  fx = new Fixture(dev);
  const fe = await fx.connect({ queueSize: 1024, features });
  return { dev, fe };
}

/** FLOOD requests on queue 1 published with a single kick (indirect: one descriptor each). */
function flood(fe: VhostUserFrontend): Promise<string[]> {
  const q = fe.queue(1);
  const all = Array.from({ length: FLOOD }, (_, i) =>
    q.request({ out: [Buffer.from(`f${i}`)], in: [16], indirect: true, noKick: true }).then((c) => c.data.toString()),
  );
  q.kick();
  return Promise.all(all);
}

describe.each([
  ['with EVENT_IDX', DEFAULT_FEATURES],
  ['without EVENT_IDX', DEFAULT_FEATURES & ~VirtioFeature.EVENT_IDX],
])('a full ring (%s)', (_name, features) => {
  test('another queue is served while the ring is still being worked through; every request gets exactly one reply', async () => {
    const { dev, fe } = await setup(features);
    // The other queue's request is made (and kicked) when the first flooded chain reaches the device.
    let other: Promise<string> | undefined;
    dev.onFirst = () => {
      other = fe.request(0, { out: [Buffer.from('other')], in: [16] }).then((c) => c.data.toString());
    };
    const replies = await within(flood(fe), 10_000, 'the flood');
    expect(await within(other!, 2000, 'the other queue')).toBe('other');
    // Every flooded request came back once, with its own bytes, from one kick.
    expect(replies).toEqual(Array.from({ length: FLOOD }, (_, i) => `f${i}`));
    expect(fe.queue(1).strayUsed).toEqual([]);
    expect(fe.queue(0).strayUsed).toEqual([]);
    expect(fe.queue(1).outstanding).toBe(0);
    // The device saw each flooded chain once, in ring order ...
    const flooded = dev.order.filter((s) => s.startsWith('f'));
    expect(flooded).toEqual(replies);
    // ... and the other queue's request long before the flood was through.
    const before = dev.order.indexOf('other');
    expect(before).toBeGreaterThan(0);
    expect(before).toBeLessThan(FLOOD / 2);
  });
});

test('a kick while the rest of a batch waits does not reorder or repeat chains', async () => {
  const { dev, fe } = await setup();
  const q = fe.queue(1);
  let late: Promise<string>[] = [];
  dev.onFirst = () => {
    // More requests, each kicked, while the flood is being served.
    late = Array.from({ length: 20 }, (_, i) =>
      q.request({ out: [Buffer.from(`late${i}`)], in: [16], indirect: true }).then((c) => c.data.toString()),
    );
  };
  const first = flood(fe);
  await within(first, 10_000, 'the flood');
  await within(Promise.all(late), 2000, 'the late requests');
  const want = [...Array.from({ length: FLOOD }, (_, i) => `f${i}`), ...Array.from({ length: 20 }, (_, i) => `late${i}`)];
  expect(dev.order).toEqual(want);
  expect(q.strayUsed).toEqual([]);
});

test('a device reset while chains wait on the ring: nothing more from the old ring reaches the device', async () => {
  const { dev, fe } = await setup();
  let resetSeen = -1;
  dev.onFirst = () => {
    void fe.send(Req.RESET_DEVICE).then(() => {
      resetSeen = dev.order.length;
    });
  };
  void flood(fe);
  await within(
    (async () => {
      while (resetSeen < 0) await sleep(5);
    })(),
    5000,
    'the reset',
  );
  expect(dev.resets).toBe(1);
  const seen = dev.order.length;
  expect(seen).toBeLessThan(FLOOD); // the reset came in between batches
  await sleep(50);
  expect(dev.order.length).toBe(seen);
  expect(fx!.warnings()).toEqual([]);
});

test('a frontend that disconnects while chains wait on the ring leaves the server serving the next one', async () => {
  const { dev, fe } = await setup();
  dev.onFirst = () => fe.close();
  void flood(fe).catch(() => {});
  await sleep(50);
  expect(dev.order.length).toBeLessThan(FLOOD);
  const fe2 = await fx!.connect();
  expect((await within(fe2.request(1, { out: [Buffer.from('again')], in: [16] }), 2000, 'a new frontend')).data.toString()).toBe('again');
});
