// Spread (min/median/max over repetitions) and ratios to the reference
// server of the same protocol, median/median and paired per repetition.
import { describe, expect, test } from '@jest/globals';
import { fmtRatio, fmtValue, median, ratio, spread, summarize } from '../../src/bench/stats.js';
import { RESULT_FORMAT, type BenchResult, type CellResult } from '../../src/bench/model.js';
import type { ServerDef } from '../../src/bench/jobs.js';

const server = (name: string, protocol: '9p' | 'virtiofs', reference: string): ServerDef & { status: 'ok' } => ({
  name,
  protocol,
  reference,
  description: name,
  status: 'ok',
});

function result(
  cells: CellResult[],
  servers = [server('a', 'virtiofs', 'ref'), server('ref', 'virtiofs', 'ref'), server('b', '9p', 'q')],
): BenchResult {
  return {
    format: RESULT_FORMAT,
    kind: 'guest',
    startedAt: '2026-01-01T00:00:00Z',
    finishedAt: '2026-01-01T00:01:00Z',
    command: 'test',
    machine: {
      cpus: 2,
      cpuModel: 'x',
      memGiB: 1,
      kernel: 'k',
      node: 'n',
      loadStart: 0,
      loadEnd: 0,
      loadMax: 0,
      otherGuestsStart: 0,
      otherGuestsEnd: 0,
      otherGuestsMax: 0,
    },
    versions: {},
    settings: {},
    servers,
    jobs: [
      {
        name: 'j',
        title: 'job',
        metrics: [
          { key: 'v', label: 'MB/s', unit: 'MB/s', higherIsBetter: true, shown: true },
          { key: 'hidden', label: 'x', unit: 'µs', higherIsBetter: false, shown: false },
        ],
      },
    ],
    cells,
    notes: [],
  };
}
const cell = (srv: string, rep: number, v: number | undefined, error?: string): CellResult =>
  v === undefined
    ? { server: srv, job: 'j', rep, ok: false, metrics: {}, error: error ?? 'boom' }
    : { server: srv, job: 'j', rep, ok: true, metrics: { v, hidden: 1 } };

describe('median and spread', () => {
  test('odd and even counts, unsorted input', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(() => median([])).toThrow();
  });
  test('spread ignores failed repetitions (NaN)', () => {
    expect(spread([10, NaN, 30, 20])).toEqual({ n: 3, min: 10, median: 20, max: 30 });
    expect(spread([NaN])).toBeUndefined();
    expect(spread([])).toBeUndefined();
  });
  test('ratio guards against missing figures and zero', () => {
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(3, 0)).toBeUndefined();
    expect(ratio(undefined, 2)).toBeUndefined();
    expect(ratio(NaN, 2)).toBeUndefined();
  });
});

describe('summarize', () => {
  test('median ratio and the paired per-repetition ratio range', () => {
    const r = result([cell('a', 0, 90), cell('a', 1, 120), cell('a', 2, 100), cell('ref', 0, 100), cell('ref', 1, 100), cell('ref', 2, 200)]);
    const [row] = summarize(r);
    expect(row!.metric.key).toBe('v');
    const a = row!.cells.find((c) => c.server === 'a')!;
    expect(a.spread).toEqual({ n: 3, min: 90, median: 100, max: 120 });
    expect(a.ratio).toBeCloseTo(1.0); // 100 / 100
    expect(a.ratioMin).toBeCloseTo(0.5); // 100 / 200 in repetition 2
    expect(a.ratioMax).toBeCloseTo(1.2); // 120 / 100 in repetition 1
    expect(a.reference).toBe('ref');
    const ref = row!.cells.find((c) => c.server === 'ref')!;
    expect(ref.ratio).toBe(1);
    expect(ref.reference).toBe('');
  });

  test('only shown metrics, unless all are asked for', () => {
    const r = result([cell('a', 0, 1), cell('ref', 0, 1)]);
    expect(summarize(r).map((x) => x.metric.key)).toEqual(['v']);
    expect(summarize(r, { all: true }).map((x) => x.metric.key)).toEqual(['v', 'hidden']);
  });

  test('failed repetitions are counted with their error; pairs with a failed side are skipped', () => {
    const r = result([cell('a', 0, 50), cell('a', 1, undefined, 'fio timed out'), cell('ref', 0, 100), cell('ref', 1, 100)]);
    const a = summarize(r)[0]!.cells.find((c) => c.server === 'a')!;
    expect(a.failed).toBe(1);
    expect(a.error).toBe('fio timed out');
    expect(a.spread).toEqual({ n: 1, min: 50, median: 50, max: 50 });
    expect(a.ratio).toBeCloseTo(0.5);
    expect([a.ratioMin, a.ratioMax]).toEqual([0.5, 0.5]);
  });

  test('no ratio when the reference did not run or produced nothing', () => {
    const r = result([cell('a', 0, 5), cell('ref', 0, undefined), cell('b', 0, 7)]);
    const row = summarize(r)[0]!;
    expect(row.cells.find((c) => c.server === 'a')!.ratio).toBeUndefined();
    expect(row.cells.find((c) => c.server === 'ref')!.ratio).toBeUndefined();
    expect(row.cells.find((c) => c.server === 'ref')!.spread).toBeUndefined();
    // b's reference (q) is not in the run at all
    expect(row.cells.find((c) => c.server === 'b')!.ratio).toBeUndefined();
  });
});

describe('formatting', () => {
  test('about three significant digits, thousands separated', () => {
    expect(fmtValue(1234.5)).toBe('1,235');
    expect(fmtValue(123.45)).toBe('123');
    expect(fmtValue(12.345)).toBe('12.3');
    expect(fmtValue(1.2345)).toBe('1.23');
    expect(fmtValue(0.012345)).toBe('0.012');
    expect(fmtValue(0)).toBe('0');
    expect(fmtValue(NaN)).toBe('-');
    expect(fmtRatio(0.6377)).toBe('0.64×');
    expect(fmtRatio(undefined)).toBe('-');
  });
});
