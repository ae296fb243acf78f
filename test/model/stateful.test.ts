// Bounded stateful run for npm test: random operation sequences through 9P
// and virtio-fs at once on one export, against the model in stateful.ts
// (files and directories, owners, times, xattrs, locks across the two
// protocols, and pairs of steps started together). A failure prints
// fast-check's seed and the shrunk sequence; `npm run soak` runs this for
// minutes. 400 sequences of up to 80 steps (about half that on average)
// take about 6 s here.
import { afterAll, beforeAll, jest, test } from '@jest/globals';
import { ModelServer, runStateful } from './stateful.js';

jest.setTimeout(120_000);
let srv: ModelServer;
beforeAll(async () => {
  srv = await new ModelServer().start();
});
afterAll(async () => {
  await srv?.close();
});

test('random sequences through 9P and FUSE agree with the model of the tree', async () => {
  await runStateful(srv, { runs: Number(process.env.DUOFS_MODEL_RUNS ?? 400), maxCommands: 80 });
});
