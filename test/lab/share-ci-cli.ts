// `npm run lab:share-ci -- [options]`: the full-size "CI on a share" scenario
// (issue 16) on duofs virtio-fs, virtiofsd, duofs virtio-9p and QEMU's 9p, in
// one guest, and the side-by-side table of guest seconds per step. Exits 1
// when a server fails a step, when the servers' results differ, or when duofs
// printed anything at --log-level warn; 2 on bad arguments. The table and the
// differences go to .lab/results/share-ci.md too.
//   flock /tmp/duofs-lab.lock npm run lab:share-ci
//   npm run lab:share-ci -- --files 500 --servers duofs-vfs,duofs-9pv --no-build
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { labAvailable, labDir, labStamp } from './lab.js';
import { differences, duofsComplaints, runShareCi, SERVER_NAMES, timeTable, type ServerName } from './share-ci.js';

function usage(msg?: string): never {
  if (msg) console.error(`share-ci: ${msg}`);
  console.error(`usage: npm run lab:share-ci -- [--files N] [--servers ${SERVER_NAMES.join(',')}] [--no-build] [--configure] [--limit SECONDS] [--keep] [--verbose]
  --files N     generated files committed (default 3000)
  --servers     which servers, in this order (default: all four)
  --no-build    skip the GNU hello build
  --configure   run ./configure in the guest too (~400 s per server under TCG;
                default: make -j2 of the tree lab setup configured for the guest)
  --limit       per-server limit inside the guest (default 1800 s)
  --verbose     stream the guest console`);
  process.exit(2);
}

let a;
try {
  a = parseArgs({
    options: {
      files: { type: 'string', default: '3000' },
      servers: { type: 'string', default: SERVER_NAMES.join(',') },
      'no-build': { type: 'boolean', default: false },
      configure: { type: 'boolean', default: false },
      limit: { type: 'string', default: '1800' },
      keep: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  }).values;
} catch (e) {
  usage((e as Error).message);
}
if (a.help) usage();
const files = Number(a.files);
if (!Number.isInteger(files) || files < 10 || files > 100_000) usage(`--files must be an integer in 10..100000, not ${a.files}`);
const servers = a.servers.split(',').filter(Boolean) as ServerName[];
for (const s of servers) if (!SERVER_NAMES.includes(s)) usage(`unknown server ${s}`);
if (!servers.length || new Set(servers).size !== servers.length) usage('--servers: name each server once');
const limit = Number(a.limit);
if (!(limit > 0)) usage(`bad --limit ${a.limit}`);
const lab = labAvailable();
if (!lab.ok) {
  console.error(`share-ci: ${lab.why}`);
  process.exit(1);
}

const stamp = labStamp();
console.error(
  `share-ci: ${files} files, ${a['no-build'] ? 'no build' : 'GNU hello build'}, servers ${servers.join(', ')} (one guest, one after the other)`,
);
let partial = '';
const t0 = Date.now();
const r = await runShareCi({
  files,
  servers,
  build: !a['no-build'],
  configure: a.configure,
  perServerLimitS: limit,
  keepWorkDir: a.keep,
  onConsole: (s) => {
    if (a.verbose) process.stderr.write(s);
    const lines = (partial + s).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      if (a.verbose) continue;
      const m = /@@DUOFS-LAB (BEGIN|END) ([^@]*)@@/.exec(l);
      if (m) console.error(`share-ci: [${((Date.now() - t0) / 1000).toFixed(0)} s] ${m[1]} ${m[2]}`);
      else if (/^(TIME|FAIL) /.test(l)) console.error(`share-ci:   ${l.trim()}`);
    }
  },
});

const problems: string[] = [];
for (const x of r.results) {
  if (x.section.rc !== 0)
    problems.push(`${x.server}: the scenario exited with ${x.section.rc}:\n${x.section.output.split('\n').slice(-25).join('\n')}`);
  for (const l of duofsComplaints(x)) problems.push(`${x.server}: duofs logged: ${l}`);
}
const diffs = differences(r.results);
for (const d of diffs) problems.push(`differs: ${d}`);
const checks = r.results[0]?.section.checks ?? new Map<string, string>();
const pick = (k: string) => checks.get(k) ?? '?';
const table = timeTable(r.results);
const md = [
  `# CI on a share: ${files} files${a['no-build'] ? '' : ` + GNU hello (${a.configure ? './configure, ' : ''}make -j2 of ${r.tarball.split('/').pop()})`}`,
  '',
  `Guest: ${stamp.kernelVersion}, 2 vCPUs (TCG), 2 GiB; ${stamp.qemuVersion}; ${stamp.virtiofsdVersion}; wall ${(r.run.wallMs / 1000).toFixed(0)} s.`,
  '',
  table,
  '',
  `Same on every server: ${diffs.length ? 'NO' : 'yes'} (${checks.size} checks; commit ${pick('git.commit3').slice(0, 12)}, tree ${pick('clone.tree').slice(0, 12)}, ` +
    `fsck ${pick('fsck.repo')}, pack ${pick('gc.pack_name').slice(0, 17)}…, hello sha256 ${pick('build.hello_sha256').slice(0, 12)}…)`,
  '',
  problems.length ? `## Problems\n\n${problems.map((p) => `- ${p}`).join('\n')}\n` : 'No problems.\n',
].join('\n');
mkdirSync(join(labDir, 'results'), { recursive: true });
writeFileSync(join(labDir, 'results', 'share-ci.md'), md);
for (const x of r.results) writeFileSync(join(labDir, 'results', `share-ci-${x.server}.txt`), x.section.output);
console.log(md);
process.exit(problems.length ? 1 : 0);
