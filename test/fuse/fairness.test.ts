// Fairness on virtio-fs: a guest that fills one request queue (250
// GETATTRs available at once) does not hold back a request on its other
// queue — it is answered after a bounded batch of the first, not after all
// of them — and every request still gets exactly one reply.
import { expect, test } from '@jest/globals';
import { ROOT } from './client.js';
import { useFuse } from './fixture.js';
import { QUEUE_BATCH } from '../../protocols/vhost-user/session.js';

const ctx = useFuse({ numRequestQueues: 2 });
const FLOOD = 250; // the queue has 256 entries

test('a full request queue does not hold back the other queue', async () => {
  const { c } = ctx;
  let done = 0;
  const flood: Promise<unknown>[] = [];
  // All published before the server's loop runs: one kick finds them all.
  for (let i = 0; i < FLOOD; i++) flood.push(c.getattr(ROOT, undefined, { queue: 1, indirect: true }).then(() => done++));
  const other = c.getattr(ROOT, undefined, { queue: 2 }).then(() => done);
  const doneWhenOtherAnswered = await other;
  await Promise.all(flood);
  expect(done).toBe(FLOOD);
  if (process.env.DUOFS_TEST_VERBOSE) console.log({ doneWhenOtherAnswered });
  expect(doneWhenOtherAnswered).toBeLessThan(FLOOD - QUEUE_BATCH); // here: 128 (two batches), 250 without the bound
});
