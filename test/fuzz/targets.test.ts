// CI's share of the fuzzing campaign: every fuzz target (test/fuzz/targets)
// runs its checked-in corpus (test/fuzz/corpus/<target>/) and its built-in
// seeds, then mutates them, for a few seconds each. A finding (an exception
// the server did not expect, a request left unanswered, a blocked event
// loop, a change outside the export, a good request failing afterwards)
// fails the test with the input in hex; `npm run fuzz -- --target T
// --seconds S` runs longer. DUOFS_FUZZ_SEED reproduces a run's mutations.
import { expect, jest, test } from '@jest/globals';
import { fuzz, loadCorpus, corpusRoot } from './engine.js';
import { allTargets } from './targets/index.js';
import path from 'node:path';

jest.setTimeout(60_000);
const MS = Number(process.env.DUOFS_FUZZ_TARGET_MS ?? 2500);
const seed = Number(process.env.DUOFS_FUZZ_SEED ?? Math.floor(Math.random() * 0xffffffff)) >>> 0;

for (const target of allTargets()) {
  test(`fuzz target ${target.name}: corpus and ${MS} ms of mutations (seed ${seed})`, async () => {
    const corpus = loadCorpus(path.join(corpusRoot, target.name));
    expect(corpus.length).toBeGreaterThan(0); // the checked-in corpus is there and read
    // The corpus is run whole even past the time budget, so CI always replays it.
    const r = await fuzz(target, { ms: MS, seed, maxFindings: 3, checkEvery: 200 });
    expect(r.execs).toBeGreaterThanOrEqual(Math.min(corpus.length, 1));
    expect(r.findings.map((f) => `${f.kind}: ${f.message}\n  input ${f.input}`)).toEqual([]);
  });
}
