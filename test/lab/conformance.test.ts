// The POSIX conformance scenario (test/lab/guest/scenarios/conformance.py)
// on each server below, each in its own guest on a fresh export, then a
// CHECK-by-CHECK comparison against test/lab/intended-differences.json.
// The table of the last run is written to .lab/results/conformance.md, each
// server's raw output to .lab/results/conformance-<server>.txt.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk } from './guest.js';
import { labAvailable, labDir } from './lab.js';
import { compareChecks, loadIntendedDifferences } from './compare.js';
import { qemu9p, runScenarioOn, virtiofsd, type LabServer } from './servers.js';

/** The servers compared, one guest each. Add a server with one line (see docs/lab.md). */
const SERVERS: LabServer[] = [
  qemu9p('qemu-9p', { securityModel: 'passthrough', msize: 512000 }),
  virtiofsd('virtiofsd'),
  // duofs9pStream('duofs-9p'),  // import it from './servers.js' once `duofs serve --9p-socket` runs
];

/** Per server: the guest's own limit for the scenario, and jest's for the whole guest. */
const SCENARIO_LIMIT_S = 360;
const GUEST_LIMIT_MS = (SCENARIO_LIMIT_S + 60) * 1000;

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

d('conformance scenario on real guests', () => {
  const results = new Map<string, Map<string, string>>();
  const protocols = new Map<string, string>();

  for (const server of SERVERS) {
    test(`${server.name}: the scenario runs to its end and prints every check once`, async () => {
      if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
      const r = await runScenarioOn(server, { scenario: 'conformance.py', scenarioTimeoutSec: SCENARIO_LIMIT_S, timeoutMs: GUEST_LIMIT_MS });
      expectScenarioOk(r.run);
      expect(r.section.duplicates).toEqual([]);
      expect(r.section.checks.size).toBeGreaterThan(200);
      expect([...r.section.checks.keys()].filter((k) => k.endsWith('group_aborted'))).toEqual([]);
      results.set(server.name, r.section.checks);
      const out = join(labDir, 'results');
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, `conformance-${server.name}.txt`), r.section.output); // raw, for diff(1)
      protocols.set(server.name, server.protocol);
      const timing = r.section.output.split('\n').filter((l) => l.startsWith('INFO dir.big') || l.startsWith('INFO total')).join('; ');
      process.stderr.write(`lab: ${server.name}: ${r.section.checks.size} checks, ${r.section.guestSeconds} s guest time, boot ${((r.run.bootMs ?? NaN) / 1000).toFixed(1)} s, wall ${(r.run.wallMs / 1000).toFixed(1)} s (${timing})\n`);
    }, GUEST_LIMIT_MS + 30_000);
  }

  test('servers agree on every check except the intended differences', () => {
    const missing = SERVERS.filter((s) => !results.has(s.name)).map((s) => s.name);
    if (missing.length) throw new Error(`no results from ${missing.join(', ')} (see the failures above)`);
    const cmp = compareChecks(results, protocols, loadIntendedDifferences());
    const out = join(labDir, 'results');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'conformance.md'), `# Conformance: ${SERVERS.map((s) => s.name).join(' vs ')}\n\n${cmp.table}\n\n` +
      (cmp.problems.length ? `## Problems\n\n${cmp.problems.map((p) => `- ${p}`).join('\n')}\n` : 'No problems.\n'));
    if (cmp.problems.length) {
      throw new Error(`${cmp.problems.length} unexpected result(s) (table: .lab/results/conformance.md):\n${cmp.problems.join('\n')}`);
    }
    expect(cmp.checks).toBeGreaterThan(200);
  }, 10_000);
});
