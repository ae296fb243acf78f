// The result as a table: one row per job and metric, one column per server,
// each cell "median [min–max] ratio×" where the ratio is to the reference
// server of the same protocol. Plain text (aligned, for a terminal) and
// Markdown (for a report). Failed cells say so and point at a footnote.
import type { BenchResult } from './model.js';
import { fmtRatio, fmtValue, summarize, type SummaryCell, type SummaryRow } from './stats.js';

interface Footnotes {
  list: string[];
  ref(text: string): string;
}

function footnotes(): Footnotes {
  const list: string[] = [];
  return {
    list,
    ref(text: string): string {
      let i = list.indexOf(text);
      if (i < 0) i = list.push(text) - 1;
      return `[${i + 1}]`;
    },
  };
}

function cellText(c: SummaryCell, fn: Footnotes): string {
  const marks = c.notes.map((n) => fn.ref(n)).join('');
  if (!c.spread) {
    return c.failed ? `failed ${fn.ref(`${c.server}: ${c.error ?? 'failed'}`)}` : 'not run';
  }
  const s = c.spread;
  const range = s.n > 1 ? ` [${fmtValue(s.min)}–${fmtValue(s.max)}]` : '';
  const ratio = c.reference === '' ? (c.ratio === 1 ? ' (ref)' : '') : ` ${fmtRatio(c.ratio)}`;
  const fails = c.failed ? ` ${c.failed} failed ${fn.ref(`${c.server}: ${c.error ?? 'failed'}`)}` : '';
  return `${fmtValue(s.median)}${range}${ratio}${fails}${marks}`;
}

export interface Table {
  header: string[];
  /** second header line: what each server's ratio is against */
  subheader: string[];
  rows: string[][];
  footnotes: string[];
}

export function buildTable(r: BenchResult, rows: SummaryRow[] = summarize(r)): Table {
  const fn = footnotes();
  const header = ['job', 'unit', ...r.servers.map((s) => s.name)];
  const subheader = [
    '',
    '',
    ...r.servers.map((s) =>
      s.reference === s.name ? 'reference' : r.servers.some((x) => x.name === s.reference) ? `vs ${s.reference}` : 'no reference',
    ),
  ];
  const body = rows.map((row) => [
    row.metric.label === row.metric.unit || row.metric.label === 'IOPS' || row.metric.label === 'MB/s'
      ? row.title
      : `${row.title}: ${row.metric.label}`,
    row.metric.unit,
    ...row.cells.map((c) => cellText(c, fn)),
  ]);
  for (const s of r.servers) if (s.status !== 'ok' && s.error) fn.ref(`${s.name}: ${s.error}`);
  return { header, subheader, rows: body, footnotes: fn.list };
}

const width = (s: string): number => [...s].length;
const pad = (s: string, n: number, right = false): string =>
  right ? ' '.repeat(Math.max(0, n - width(s))) + s : s + ' '.repeat(Math.max(0, n - width(s)));

/** Aligned plain text, for a terminal. */
export function renderText(r: BenchResult): string {
  const t = buildTable(r);
  const all = [t.header, t.subheader, ...t.rows];
  const w = t.header.map((_, i) => Math.max(...all.map((row) => width(row[i] ?? ''))));
  const line = (row: string[]) =>
    row
      .map((c, i) => pad(c, w[i]!, i >= 2))
      .join('  ')
      .trimEnd();
  const out = [line(t.header), line(t.subheader), w.map((n) => '-'.repeat(n)).join('  '), ...t.rows.map(line)];
  out.push('', 'Each cell: median [min–max] over the repetitions, then median / the median of the reference server of the same protocol.');
  for (const [i, f] of t.footnotes.entries()) out.push(`[${i + 1}] ${f}`);
  return out.join('\n') + '\n';
}

const mdEscape = (s: string): string => s.replace(/\|/g, '\\|');

/** A Markdown table (GitHub flavour) with footnotes below. */
export function renderMarkdown(r: BenchResult): string {
  const t = buildTable(r);
  const head = t.header.map((h, i) => (i >= 2 && t.subheader[i] ? `${h} (${t.subheader[i]})` : h));
  const out = [
    `| ${head.map(mdEscape).join(' | ')} |`,
    `|${head.map((_, i) => (i >= 2 ? '---:' : '---')).join('|')}|`,
    ...t.rows.map((row) => `| ${row.map(mdEscape).join(' | ')} |`),
    '',
    'Each cell: median [min–max] over the repetitions, then median ÷ the reference server’s median (same protocol).',
  ];
  if (t.footnotes.length) out.push('', ...t.footnotes.map((f, i) => `${i + 1}. ${mdEscape(f)}`));
  return out.join('\n') + '\n';
}
