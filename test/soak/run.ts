// `npm run soak -- --minutes N`
//
// Runs, in rounds until N minutes (default 10) have passed: a batch of the
// stateful model test (random operation sequences through 9P and virtio-fs
// at once, test/model/stateful.ts) on one long-lived server in this
// process, and a few seconds of every fuzz target (npm run fuzz, in child
// processes, so their scratch servers do not count). After each round it
// samples the model server — this process's open fds (/proc/self/fd), the
// backend's inode table, RSS after a GC, and the latency of a 9P Tgetattr
// plus a FUSE GETATTR (median of 50) — and fails when, against the first
// round, fds grew by more than 32, live inodes by more than 16, RSS by more
// than half plus 64 MiB, or the median latency by more than 5x plus 2 ms.
// Exit status 1 on growth, a model failure or a fuzz finding.
import fs from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import { ModelServer, runStateful } from '../model/stateful.js';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from '../fuse/client.js';

const arg = (n: string): string | undefined => {
  const i = process.argv.indexOf(`--${n}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const minutes = Number(arg('minutes') ?? 10);
const fuzzSeconds = Number(arg('fuzz-seconds') ?? 3);

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

interface Sample {
  round: number;
  fds: number;
  inodes: number;
  rssMiB: number;
  p50us: number;
}
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

async function latency(srv: ModelServer): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t0 = process.hrtime.bigint();
    await srv.p9.getattr(srv.p9root);
    await srv.fuse.getattr(ROOT);
    t.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  t.sort((a, b) => a - b);
  return t[25]!;
}

async function sample(round: number, srv: ModelServer): Promise<Sample> {
  gc();
  return {
    round,
    fds: fs.readdirSync('/proc/self/fd').length,
    inodes: srv.duofs.backend.inodes.size,
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
    p50us: Math.round(await latency(srv)),
  };
}

async function main(): Promise<void> {
  const deadline = Date.now() + minutes * 60_000;
  const srv = await new ModelServer().start();
  const samples: Sample[] = [];
  const problems: string[] = [];
  let modelRuns = 0;
  const execs = new Map<string, number>();
  try {
    for (let round = 0; Date.now() < deadline || round < 2; round++) {
      try {
        await runStateful(srv, { runs: 20, maxCommands: 40 });
        modelRuns += 20;
      } catch (e) {
        problems.push(`model: ${(e as Error).message.split('\n').slice(0, 8).join('\n')}`);
        break;
      }
      const fz = spawnSync(
        process.execPath,
        [
          '--import',
          path.join(root, 'test/lab/ts-hooks.mjs'),
          path.join(root, 'test/fuzz/run.ts'),
          '--seconds',
          String(fuzzSeconds),
          '--no-coverage',
        ],
        { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      for (const m of fz.stdout.matchAll(/^(\S+)\s+(\d+) execs/gm)) execs.set(m[1]!, (execs.get(m[1]!) ?? 0) + Number(m[2]));
      if (fz.status !== 0) problems.push(`fuzz:\n${fz.stdout}`);
      const s = await sample(round, srv);
      samples.push(s);
      console.log(`round ${round}: ${modelRuns} model runs, fds ${s.fds}, inodes ${s.inodes}, rss ${s.rssMiB} MiB, getattr p50 ${s.p50us} µs`);
      if (problems.length) break;
    }
  } finally {
    await srv.close();
  }
  const first = samples[0];
  const last = samples[samples.length - 1];
  if (first && last && samples.length > 1) {
    if (last.fds > first.fds + 32) problems.push(`fds grew from ${first.fds} to ${last.fds}`);
    if (last.inodes > first.inodes + 16) problems.push(`live inodes grew from ${first.inodes} to ${last.inodes}`);
    if (last.rssMiB > first.rssMiB * 1.5 + 64) problems.push(`RSS grew from ${first.rssMiB} to ${last.rssMiB} MiB`);
    if (last.p50us > first.p50us * 5 + 2000) problems.push(`getattr latency grew from ${first.p50us} to ${last.p50us} µs`);
  }
  console.log(`soak: ${minutes} min, ${samples.length} rounds, ${modelRuns} model runs; fuzz execs ${JSON.stringify(Object.fromEntries(execs))}`);
  for (const p of problems) console.log(`FAIL ${p}`);
  console.log(problems.length ? 'soak failed' : 'soak passed');
  process.exit(problems.length ? 1 : 0);
}

await main();
