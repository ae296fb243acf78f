// The POSIX conformance scenario (test/lab/guest/scenarios/conformance.py)
// on each server below, each in its own guest on a fresh export, then a
// CHECK-by-CHECK comparison against test/lab/intended-differences.json.
// The table of the last run is written to .lab/results/conformance.md, each
// server's raw output to .lab/results/conformance-<server>.txt.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
//
// The guests run two at a time (DUOFS_LAB_PARALLEL, default 2): on a 2-core
// host one TCG guest leaves the second core mostly idle while it waits on its
// file server, so two lanes finish in roughly 60 % of the sequential time.
// DUOFS_LAB_CONFORMANCE=name,name narrows the run to some servers (by hand).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk } from './guest.js';
import { labAvailable, labDir } from './lab.js';
import { compareChecks, loadIntendedDifferences } from './compare.js';
import { duofs9pStream, duofs9pVhost, duofsVirtiofs, qemu9p, runScenarioOn, virtiofsd, type LabServer, type ServerRun } from './servers.js';

interface Entry {
  server: LabServer;
  /** The guest's own limit for the scenario (seconds). */
  limitS: number;
  /** Rough guest seconds measured on the 2-core lab machine with two guests at once, to balance the lanes. */
  weight: number;
}

/** The servers compared, one guest each. Add a server with one line (see docs/lab.md). */
const ALL: Entry[] = [
  { server: qemu9p('qemu-9p', { securityModel: 'passthrough', msize: 512000 }), limitS: 420, weight: 170 },
  { server: virtiofsd('virtiofsd'), limitS: 420, weight: 100 },
  // duofs 9P2000.L over the in-guest socat relay and a virtio-serial port (trans=unix):
  // every request crosses a guest user-space process (the 20 000 mknod of dir.big: 330 s here against
  // 40 s over vhost-user, two guests at once), hence the longer limit; it gets a lane of its own.
  { server: duofs9pStream('duofs-9p'), limitS: 900, weight: 450 },
  // duofs 9P2000.L as a virtio-9p device over vhost-user (trans=virtio,version=9p2000.L,msize=512000)
  { server: duofs9pVhost('duofs-9pv', [], { msize: 512000 }), limitS: 420, weight: 110 },
  // duofs virtio-fs; --xattr as the lab's virtiofsd
  { server: duofsVirtiofs('duofs-vfs', ['--xattr']), limitS: 420, weight: 70 },
];

const only = process.env.DUOFS_LAB_CONFORMANCE?.split(',').filter(Boolean);
const SERVERS = only ? ALL.filter((e) => only.includes(e.server.name)) : ALL;
const PARALLEL = Math.max(1, Number(process.env.DUOFS_LAB_PARALLEL ?? 2) || 1);
const guestLimitMs = (e: Entry) => (e.limitS + 60) * 1000;

/** Longest first onto the least loaded lane; each lane runs its guests one after the other. */
function lanes(entries: Entry[], n: number): Entry[][] {
  const out: Entry[][] = Array.from({ length: n }, () => []);
  const load = new Array<number>(n).fill(0);
  for (const e of [...entries].sort((a, b) => b.weight - a.weight)) {
    const i = load.indexOf(Math.min(...load));
    out[i].push(e);
    load[i] += e.weight;
  }
  return out.filter((l) => l.length);
}
const LANES = lanes(SERVERS, PARALLEL);
/** Jest's limit for a server's test: everything before it in its lane, plus itself. */
const waitLimitMs = new Map<string, number>();
for (const lane of LANES) {
  let sum = 0;
  for (const e of lane) waitLimitMs.set(e.server.name, (sum += guestLimitMs(e)) + 30_000);
}

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

d('conformance scenario on real guests', () => {
  const results = new Map<string, Map<string, string>>();
  const protocols = new Map<string, string>();
  let started: Map<string, Promise<ServerRun>> | undefined;

  /** Starts every lane once (at the first test) and hands out each server's run. */
  const runOf = (name: string): Promise<ServerRun> => {
    if (!started) {
      const runs = new Map<string, Promise<ServerRun>>();
      for (const lane of LANES) {
        let prev: Promise<unknown> = Promise.resolve();
        for (const e of lane) {
          const p = prev
            .catch(() => undefined)
            .then(() => runScenarioOn(e.server, { scenario: 'conformance.py', scenarioTimeoutSec: e.limitS, timeoutMs: guestLimitMs(e) }));
          p.catch(() => undefined); // reported by the server's own test
          runs.set(e.server.name, p);
          prev = p;
        }
      }
      started = runs;
    }
    return started.get(name)!;
  };

  for (const { server } of SERVERS) {
    test(
      `${server.name}: the scenario runs to its end and prints every check once`,
      async () => {
        if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
        const r = await runOf(server.name);
        expectScenarioOk(r.run);
        expect(r.section.duplicates).toEqual([]);
        expect(r.section.checks.size).toBeGreaterThan(200);
        expect([...r.section.checks.keys()].filter((k) => k.endsWith('group_aborted'))).toEqual([]);
        if (r.daemonLog !== undefined) {
          // duofs ran confined, with the defaults: namespaces + pivot_root, seccomp kill.
          expect(r.daemonLog).toMatch(/sandbox: namespace, the export is the root/);
          expect(r.daemonLog).toMatch(/seccomp: kill mode/);
        }
        results.set(server.name, r.section.checks);
        const out = join(labDir, 'results');
        mkdirSync(out, { recursive: true });
        writeFileSync(join(out, `conformance-${server.name}.txt`), r.section.output); // raw, for diff(1)
        protocols.set(server.name, server.protocol);
        const timing = r.section.output
          .split('\n')
          .filter((l) => l.startsWith('INFO dir.big') || l.startsWith('INFO total'))
          .join('; ');
        process.stderr.write(
          `lab: ${server.name}: ${r.section.checks.size} checks, ${r.section.guestSeconds} s guest time, boot ${((r.run.bootMs ?? NaN) / 1000).toFixed(1)} s, wall ${(r.run.wallMs / 1000).toFixed(1)} s (${timing})\n`,
        );
      },
      waitLimitMs.get(server.name),
    );
  }

  test('servers agree on every check except the intended differences', () => {
    const missing = SERVERS.filter((e) => !results.has(e.server.name)).map((e) => e.server.name);
    if (missing.length) throw new Error(`no results from ${missing.join(', ')} (see the failures above)`);
    const intended = loadIntendedDifferences();
    // Narrowed by hand: entries whose check no chosen server printed are not stale.
    const cmp = compareChecks(results, protocols, intended);
    const problems = only ? cmp.problems.filter((p) => !p.includes('(stale entry?)')) : cmp.problems;
    const out = join(labDir, 'results');
    mkdirSync(out, { recursive: true });
    writeFileSync(
      join(out, 'conformance.md'),
      `# Conformance: ${SERVERS.map((e) => e.server.name).join(' vs ')}\n\n${cmp.table}\n\n` +
        (problems.length ? `## Problems\n\n${problems.map((p) => `- ${p}`).join('\n')}\n` : 'No problems.\n'),
    );
    if (problems.length) {
      throw new Error(`${problems.length} unexpected result(s) (table: .lab/results/conformance.md):\n${problems.join('\n')}`);
    }
    expect(cmp.checks).toBeGreaterThan(200);
  }, 10_000);
});
