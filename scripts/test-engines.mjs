#!/usr/bin/env node
// `npm run test:engines`: the whole suite (lab included) once per I/O engine
// (sync, threads, io_uring), each run on its engine alone; a long run, not CI's.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { root } from './ensure-deps.mjs';

const engines = (process.env.DUOFS_ENGINES ?? 'sync,threads,io_uring').split(',').filter(Boolean);
let passed = 0;
let failed = 0;
let status = 0;
for (const engine of engines) {
  console.error(`duofs: the whole suite on --io-engine ${engine}`);
  const r = spawnSync(process.execPath, [join(root, 'scripts/test.mjs'), ...process.argv.slice(2)], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['inherit', 'pipe', 'inherit'],
    env: { ...process.env, DUOFS_IO_ENGINE: engine, DUOFS_ENGINE_MATRIX: '' },
  });
  process.stdout.write(r.stdout ?? '');
  const m = /(\d+) passed, (\d+) failed/.exec((r.stdout ?? '').trim().split('\n').pop() ?? '');
  passed += m ? Number(m[1]) : 0;
  failed += m ? Number(m[2]) : 1;
  if (r.status !== 0) status = r.status ?? 1;
}
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(status);
