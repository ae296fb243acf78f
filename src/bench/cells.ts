// One cell of a guest run as bench-run.py writes it (cells/<id>.json, with
// fio's own output beside it in <id>.fio.json), turned into a CellResult:
// fio's JSON parsed here on the host, the metadata and untar timings
// converted to rates.
import { FioParseError, fioMetrics, parseFioOutput } from './fio.js';
import type { GuestJobDef } from './jobs.js';
import type { CellResult } from './model.js';

/** What the host reads back for one cell (written by bench-run.py). */
export interface GuestCell {
  id: string;
  server: string;
  job: string;
  rep: number;
  rc: number | null;
  wallSecs: number;
  direct: boolean;
  error: string | null;
  fioFile: string | null;
  result: Record<string, unknown> | null;
  notes: string[];
}

/** Turns one cell file (and fio's output beside it, read through `readSibling`) into a CellResult. */
export function cellFromGuest(
  g: GuestCell,
  job: GuestJobDef | undefined,
  readSibling: (name: string) => string | undefined,
): CellResult & { fioVersion?: string } {
  const cell: CellResult & { fioVersion?: string } = { server: g.server, job: g.job, rep: g.rep, ok: false, metrics: {}, wallSecs: g.wallSecs };
  if (g.notes.length) cell.notes = [...g.notes];
  if (g.error) {
    cell.error = g.error;
    return cell;
  }
  if (!job) {
    cell.error = `unknown job ${g.job}`;
    return cell;
  }
  try {
    if (job.kind === 'fio') {
      const text = g.fioFile ? readSibling(g.fioFile) : undefined;
      if (text === undefined) throw new FioParseError('fio wrote no output file');
      const fio = parseFioOutput(text);
      if (fio.error) throw new FioParseError(`fio reported error ${fio.error}`);
      const m = fioMetrics(fio);
      cell.metrics = { mbps: m.mbps, iops: m.iops, ...(m.latUs !== undefined ? { latUs: m.latUs } : {}) };
      cell.fioVersion = fio.fioVersion;
      if (!g.direct && !(cell.notes ?? []).some((n) => n.startsWith('buffered'))) (cell.notes ??= []).push('buffered I/O (no O_DIRECT)');
    } else if (job.kind === 'meta') {
      const r = g.result as Record<string, { ops: number; secs: number }> | null;
      if (!r) throw new Error('the metadata job left no result');
      for (const k of ['create', 'stat', 'readdir', 'unlink']) {
        const p = r[k];
        if (!p || !(p.secs > 0)) throw new Error(`the metadata job has no ${k} phase`);
        cell.metrics[k] = p.ops / p.secs;
      }
    } else {
      const r = g.result as { secs: number; files: number; bytes: number } | null;
      if (!r || !(r.secs > 0)) throw new Error('the untar job left no result');
      cell.metrics = { files: r.files / r.secs, mbps: r.bytes / r.secs / 1e6, secs: r.secs };
    }
    cell.ok = true;
  } catch (e) {
    cell.error = (e as Error).message;
  }
  return cell;
}

/** The guest's text about a failed mount, without the kernel log lines init prints after it. */
export function mountMessage(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^\[\s*\d+\.\d+\]/.test(l));
  return (
    lines
      .join(' ')
      .replace(/\s*dmesg\(1\) may have more information after failed mount system call\.?/, '')
      .slice(0, 300) || 'no message'
  );
}
