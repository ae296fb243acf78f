// Spread and ratios. Each (server, job, metric) has one value per
// repetition; we report min / median / max. The ratio to the reference
// server of the same protocol is median / median; its spread comes from the
// paired repetitions (repetition r of both servers ran back to back, so they
// saw the same machine), min and max of value[r] / reference[r].
import type { BenchResult } from './model.js';
import type { MetricDef } from './jobs.js';

export interface Spread {
  n: number;
  min: number;
  median: number;
  max: number;
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('median of nothing');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function spread(xs: readonly number[]): Spread | undefined {
  const v = xs.filter((x) => Number.isFinite(x));
  if (v.length === 0) return undefined;
  return { n: v.length, min: Math.min(...v), median: median(v), max: Math.max(...v) };
}

/** a / b, undefined when either is missing or b is 0. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return undefined;
  return a / b;
}

export interface SummaryCell {
  server: string;
  /** undefined when no repetition produced the metric */
  spread: Spread | undefined;
  /** median / reference median */
  ratio: number | undefined;
  /** min and max of the paired per-repetition ratios */
  ratioMin: number | undefined;
  ratioMax: number | undefined;
  /** the reference this ratio is against ('' when the server is a reference itself) */
  reference: string;
  /** failed repetitions, with the first error */
  failed: number;
  error?: string;
  notes: string[];
}

export interface SummaryRow {
  job: string;
  title: string;
  metric: MetricDef;
  cells: SummaryCell[];
}

/** Values of one metric per repetition for one server and job (NaN for a failed repetition). */
export function valuesByRep(r: BenchResult, server: string, job: string, metric: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const c of r.cells) {
    if (c.server !== server || c.job !== job) continue;
    const v = c.ok ? c.metrics[metric] : undefined;
    out.set(c.rep, v === undefined ? NaN : v);
  }
  return out;
}

/**
 * One row per job and metric (only metrics marked `shown`, unless `all`),
 * one cell per server, in the result's server order.
 */
export function summarize(r: BenchResult, o: { all?: boolean } = {}): SummaryRow[] {
  const rows: SummaryRow[] = [];
  for (const job of r.jobs) {
    for (const metric of job.metrics) {
      if (!o.all && !metric.shown) continue;
      const perServer = new Map(r.servers.map((s) => [s.name, valuesByRep(r, s.name, job.name, metric.key)]));
      const medians = new Map(r.servers.map((s) => [s.name, spread([...perServer.get(s.name)!.values()])?.median]));
      const cells: SummaryCell[] = [];
      for (const s of r.servers) {
        const vals = perServer.get(s.name)!;
        const sp = spread([...vals.values()]);
        const isRef = s.reference === s.name;
        const refName = isRef ? '' : s.reference;
        let ratioMin: number | undefined;
        let ratioMax: number | undefined;
        let rat: number | undefined;
        if (!isRef && r.servers.some((x) => x.name === s.reference)) {
          rat = ratio(sp?.median, medians.get(s.reference));
          const ref = perServer.get(s.reference)!;
          const paired = [...vals.entries()].map(([rep, v]) => ratio(v, ref.get(rep))).filter((x): x is number => x !== undefined);
          if (paired.length) {
            ratioMin = Math.min(...paired);
            ratioMax = Math.max(...paired);
          }
        } else if (isRef && sp) {
          rat = 1;
        }
        const mine = r.cells.filter((c) => c.server === s.name && c.job === job.name);
        const failed = mine.filter((c) => !c.ok);
        const notes = [...new Set(mine.flatMap((c) => c.notes ?? []))];
        const cell: SummaryCell = { server: s.name, spread: sp, ratio: rat, ratioMin, ratioMax, reference: refName, failed: failed.length, notes };
        if (failed[0]?.error) cell.error = failed[0].error;
        cells.push(cell);
      }
      rows.push({ job: job.name, title: job.title, metric, cells });
    }
  }
  return rows;
}

/** Formats a figure with about three significant digits (1234 -> "1,234", 12.34 -> "12.3"). */
export function fmtValue(v: number): string {
  if (!Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 100) return Math.round(v).toLocaleString('en-US');
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return '0';
  return v.toPrecision(2);
}

export function fmtRatio(v: number | undefined): string {
  return v === undefined ? '-' : `${v.toFixed(2)}×`;
}
