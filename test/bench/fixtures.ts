// Recorded output of a real guest run (fio 3.41 in a lab guest, 2 s cells,
// one repetition) under fixtures/guest-cells: the cell files bench-run.py
// writes and fio's JSON beside them. Builds a BenchResult from them the way
// src/bench/guest.ts does.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cellFromGuest, type GuestCell } from '../../src/bench/cells.js';
import { GUEST_JOBS, GUEST_SERVERS } from '../../src/bench/jobs.js';
import { RESULT_FORMAT, type BenchResult, type CellResult } from '../../src/bench/model.js';

export const cellsDir = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'guest-cells');

export function readFixture(name: string): string {
  return readFileSync(join(cellsDir, name), 'utf8');
}

export function fixtureCells(): CellResult[] {
  const out: CellResult[] = [];
  for (const f of readdirSync(cellsDir).sort()) {
    if (!f.endsWith('.json') || f.endsWith('.fio.json')) continue;
    const g = JSON.parse(readFixture(f)) as GuestCell;
    const { fioVersion: _v, ...cell } = cellFromGuest(
      g,
      GUEST_JOBS.find((j) => j.name === g.job),
      (n) => {
        try {
          return readFixture(n);
        } catch {
          return undefined;
        }
      },
    );
    out.push(cell);
  }
  return out;
}

export const FIXTURE_SERVERS = ['duofs-virtiofs', 'virtiofsd', 'qemu-9p', 'diod'];

/** The recorded run as a result file would hold it. */
export function fixtureResult(): BenchResult {
  const cells = fixtureCells();
  return {
    format: RESULT_FORMAT,
    kind: 'guest',
    startedAt: '2026-11-21T15:13:00.000Z',
    finishedAt: '2026-11-21T15:20:00.000Z',
    command: 'duofs bench --servers duofs-virtiofs,virtiofsd,qemu-9p,diod --repeat 1 --runtime 2 --size 16M --files 100',
    machine: {
      cpus: 2,
      cpuModel: 'AMD EPYC',
      memGiB: 24,
      kernel: '6.1.0',
      node: 'v20.20.2',
      loadStart: 2.1,
      loadEnd: 2.5,
      loadMax: 3,
      otherGuestsStart: 2,
      otherGuestsEnd: 0,
      otherGuestsMax: 2,
    },
    versions: { qemu: '11.1.3', virtiofsd: '1.14.0', fio: '3.41' },
    settings: { size: '16M', runtime: 2, repeat: 1, direct: true, iodepth: 16, files: 100 },
    servers: FIXTURE_SERVERS.map((n) => ({
      ...GUEST_SERVERS.find((s) => s.name === n)!,
      status: n === 'diod' ? ('failed' as const) : ('ok' as const),
      ...(n === 'diod' ? { error: 'mount failed: mount: /mnt/diod: permission denied.' } : {}),
    })),
    jobs: GUEST_JOBS.map((j) => ({ name: j.name, title: j.title, metrics: j.metrics })),
    cells,
    notes: ['recorded fixture'],
  };
}
