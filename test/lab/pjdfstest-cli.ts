// `npm run pjdfstest -- [options]`: the whole pjdfstest suite (or a part of
// it) in a lab guest, per protocol and security model, one guest after the
// other, with per-directory progress and a summary. Exits 1 when any run
// differs from test/lab/pjdfstest-expected.json (a check failing that is not
// listed there, or a listed one passing), 2 on bad arguments.
//   npm run pjdfstest -- --protocol virtiofs --model passthrough
//   npm run pjdfstest -- --protocol all --model all          (every duofs configuration)
//   npm run pjdfstest -- --protocol 9p --model mapped-xattr --unprivileged
//   npm run pjdfstest -- --impl qemu --protocol 9p --model mapped-file   (the reference)
//   npm run pjdfstest -- --tests chown,rename/00.t
// Run only one lab guest at a time on a small machine: flock /tmp/duofs-lab.lock npm run pjdfstest ...
// The whole suite takes about 15 minutes per configuration on a quiet 2-core
// machine, 2-3 times that under load; the default limit is 90 minutes.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { labAvailable, labDir } from './lab.js';
import type { SecurityModel } from './guest.js';
import type { Protocol } from './servers.js';
import { checkConfig, compareRun, configName, loadKnownFailures, pjdTestFiles, runPjdfstest, type Impl, type PjdConfig } from './pjdfstest.js';

const MODELS: SecurityModel[] = ['passthrough', 'mapped-xattr', 'mapped-file', 'none'];
const PROTOCOLS: Protocol[] = ['virtiofs', '9p'];

function usage(msg?: string): never {
  if (msg) console.error(`pjdfstest: ${msg}`);
  console.error(`usage: npm run pjdfstest -- [--impl duofs|qemu|virtiofsd] [--protocol virtiofs|9p|all] [--model ${MODELS.join('|')}|all]
       [--unprivileged] [--also-unprivileged] [--tests dir,file.t,...] [--server-args='...'] [--limit SECONDS] [--keep]
  --unprivileged       duofs runs as uid/gid 64123 (mapped models only)
  --also-unprivileged  with mapped models, run each once as root and once unprivileged
  --tests              directories or .t files under tests/ (default: the whole suite)
  --server-args='...'  extra arguments for duofs serve or virtiofsd (e.g. --server-args='--cache never')`);
  process.exit(2);
}

let a;
try {
  a = parseArgs({
    options: {
      impl: { type: 'string', default: 'duofs' },
      protocol: { type: 'string', default: 'all' },
      model: { type: 'string', default: 'passthrough' },
      unprivileged: { type: 'boolean', default: false },
      'also-unprivileged': { type: 'boolean', default: false },
      tests: { type: 'string' },
      'server-args': { type: 'string' },
      limit: { type: 'string', default: '5400' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  }).values;
} catch (e) {
  usage((e as Error).message);
}
if (a.help) usage();
const impl = a.impl as Impl;
if (!['duofs', 'qemu', 'virtiofsd'].includes(impl)) usage(`unknown --impl ${a.impl}`);
const protocols =
  a.protocol === 'all' ? (impl === 'duofs' ? PROTOCOLS : impl === 'qemu' ? ['9p' as const] : ['virtiofs' as const]) : [a.protocol as Protocol];
if (!protocols.every((p) => PROTOCOLS.includes(p))) usage(`unknown --protocol ${a.protocol}`);
const models = a.model === 'all' ? (impl === 'virtiofsd' ? ['passthrough' as const] : MODELS) : [a.model as SecurityModel];
if (!models.every((m) => MODELS.includes(m))) usage(`unknown --model ${a.model}`);
const limitS = Number(a.limit);
if (!(limitS > 0)) usage(`--limit must be a number of seconds, not ${a.limit}`);
const selection = a.tests ? a.tests.split(',').filter(Boolean) : ['.'];

const args = a['server-args']?.split(/\s+/).filter(Boolean);
const configs: PjdConfig[] = [];
for (const protocol of protocols) {
  for (const model of models) {
    const mapped = model.startsWith('mapped');
    if (!a.unprivileged || a['also-unprivileged']) configs.push({ impl, protocol, model, args });
    if (mapped && impl === 'duofs' && (a.unprivileged || a['also-unprivileged'])) configs.push({ impl, protocol, model, unprivileged: true, args });
  }
}
try {
  for (const c of configs) checkConfig(c);
  if (!configs.length) throw new Error('--unprivileged needs a mapped model');
} catch (e) {
  usage((e as Error).message);
}
let files: string[];
try {
  files = pjdTestFiles(selection);
} catch (e) {
  usage((e as Error).message);
}
const lab = labAvailable();
if (!lab.ok) {
  console.error(`pjdfstest: lab unavailable: ${lab.why}`);
  process.exit(1);
}

const known = loadKnownFailures();
const outDir = join(labDir, 'results', 'pjdfstest');
mkdirSync(outDir, { recursive: true });
const summary: string[] = [];
let bad = 0;
console.log(`pjdfstest: ${files.length} files, ${configs.length} configuration(s): ${configs.map(configName).join(', ')}`);
for (const c of configs) {
  const name = configName(c);
  const t0 = Date.now();
  console.log(`\n== ${name}`);
  try {
    const run = await runPjdfstest(c, {
      selection,
      limitS,
      keepWorkDir: a.keep,
      onLine: (l) => {
        const m = /PJD-DIR (\S+) files=(\d+) planned=(\d+) passed=(\d+) secs=([\d.]+)/.exec(l);
        if (m)
          console.log(
            `  ${m[1].padEnd(16)} ${m[4].padStart(5)}/${m[3].padEnd(5)} passed  ${m[2].padStart(3)} files  ${Number(m[5]).toFixed(0).padStart(5)} s  (${((Date.now() - t0) / 1000).toFixed(0)} s wall)`,
          );
        else if (/^PJD-NOTOK /.test(l)) console.log(`    ${l.slice(10)}`);
        else if (/^(PJD-ERROR|lab-guest:)/.test(l)) console.log(`  ${l}`);
      },
    });
    writeFileSync(join(outDir, `${name}.txt`), run.output);
    const problems = compareRun(run, files, known);
    const failed = [...run.files.values()].reduce((n, r) => n + r.failed.length, 0);
    const line =
      `${name}: ${run.total.passed}/${run.total.planned} passed in ${run.total.files} files (${failed} failed), ` +
      `${((Date.now() - t0) / 60000).toFixed(1)} min${problems.length ? `, ${problems.length} PROBLEM(S)` : ', as expected'}`;
    summary.push(line);
    if (problems.length) {
      bad++;
      console.log(`  problems (output: ${join(outDir, `${name}.txt`)}):\n  ${problems.join('\n  ')}`);
    }
  } catch (e) {
    bad++;
    summary.push(`${name}: FAILED TO RUN (${(e as Error).message.split('\n')[0]})`);
    console.log((e as Error).message);
  }
}
console.log(`\n== summary\n${summary.join('\n')}`);
process.exit(bad ? 1 : 0);
