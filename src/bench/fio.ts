// fio's JSON output (--output-format=json), parsed on the host. fio may put
// notes before the JSON document in the output file ("note: both iodepth >= 1
// and synchronous I/O engine are selected...", "fio: ..."), and a killed fio
// leaves a truncated document: both are handled, the second as an error.

export class FioParseError extends Error {
  override name = 'FioParseError';
}

export interface FioSide {
  /** bytes moved in the measured time */
  ioBytes: number;
  /** bytes per second */
  bwBytes: number;
  iops: number;
  /** milliseconds fio measured this direction */
  runtimeMs: number;
  /** mean total latency (submission to completion), ns */
  latMeanNs: number | undefined;
  /** completion latency percentiles, ns */
  clatP50Ns: number | undefined;
  clatP99Ns: number | undefined;
}

export interface FioResult {
  fioVersion: string;
  jobName: string;
  /** fio's error code for the job (0 = none) */
  error: number;
  read: FioSide;
  write: FioSide;
  /** the job options fio echoed back (strings) */
  options: Record<string, string>;
  /** lines fio printed before the JSON document */
  notes: string[];
}

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function num(o: Json, k: string, where: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new FioParseError(`fio output: ${where}.${k} is not a number`);
  return v;
}

function optNum(o: unknown, k: string): number | undefined {
  if (!isObj(o)) return undefined;
  const v = o[k];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function side(job: Json, dir: 'read' | 'write'): FioSide {
  const s = job[dir];
  if (!isObj(s)) throw new FioParseError(`fio output: job has no ${dir} section`);
  const pct = isObj(s.clat_ns) && isObj(s.clat_ns.percentile) ? s.clat_ns.percentile : undefined;
  return {
    ioBytes: num(s, 'io_bytes', dir),
    bwBytes: num(s, 'bw_bytes', dir),
    iops: num(s, 'iops', dir),
    runtimeMs: num(s, 'runtime', dir),
    latMeanNs: optNum(s.lat_ns, 'mean'),
    clatP50Ns: optNum(pct, '50.000000'),
    clatP99Ns: optNum(pct, '99.000000'),
  };
}

/** Splits fio's output file into the notes before the JSON and the JSON document. */
export function extractJson(text: string): { json: string; notes: string[] } {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith('{'));
  if (start < 0) throw new FioParseError(`fio output holds no JSON document${text.trim() ? `: ${text.trim().slice(0, 200)}` : ' (empty)'}`);
  let end = -1;
  for (let i = lines.length - 1; i >= start; i--) {
    if (lines[i]!.startsWith('}')) {
      end = i;
      break;
    }
  }
  if (end < 0) throw new FioParseError('fio output: the JSON document is truncated (fio killed?)');
  return {
    json: lines.slice(start, end + 1).join('\n'),
    notes: lines
      .slice(0, start)
      .map((l) => l.trim())
      .filter(Boolean),
  };
}

/**
 * Parses one fio run. Several jobs (numjobs > 1 without group_reporting) are
 * summed; with group_reporting fio already reports one.
 */
export function parseFioOutput(text: string): FioResult {
  const { json, notes } = extractJson(text);
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (e) {
    throw new FioParseError(`fio output is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObj(doc) || !Array.isArray(doc.jobs) || doc.jobs.length === 0) throw new FioParseError('fio output has no jobs');
  const jobs = doc.jobs.filter(isObj);
  if (jobs.length !== doc.jobs.length) throw new FioParseError('fio output: a job is not an object');
  const sum = (dir: 'read' | 'write'): FioSide => {
    const sides = jobs.map((j) => side(j, dir));
    if (sides.length === 1) return sides[0]!;
    const weighted = (k: 'latMeanNs'): number | undefined => {
      const ios = sides.reduce((n, s) => n + s.iops, 0);
      if (sides.some((s) => s[k] === undefined) || ios === 0) return undefined;
      return sides.reduce((n, s) => n + s[k]! * s.iops, 0) / ios;
    };
    return {
      ioBytes: sides.reduce((n, s) => n + s.ioBytes, 0),
      bwBytes: sides.reduce((n, s) => n + s.bwBytes, 0),
      iops: sides.reduce((n, s) => n + s.iops, 0),
      runtimeMs: Math.max(...sides.map((s) => s.runtimeMs)),
      latMeanNs: weighted('latMeanNs'),
      clatP50Ns: undefined,
      clatP99Ns: undefined,
    };
  };
  const first = jobs[0]!;
  const options: Record<string, string> = {};
  for (const src of [doc['global options'], first['job options']]) {
    if (isObj(src)) for (const [k, v] of Object.entries(src)) options[k] = String(v);
  }
  return {
    fioVersion: typeof doc['fio version'] === 'string' ? doc['fio version'] : 'unknown',
    jobName: typeof first.jobname === 'string' ? first.jobname : '',
    error: jobs.reduce((e, j) => e || (typeof j.error === 'number' ? j.error : 0), 0),
    read: sum('read'),
    write: sum('write'),
    options,
    notes,
  };
}

/** The direction a job measured: the one that moved bytes (reads for a read job). */
export function mainSide(r: FioResult): 'read' | 'write' {
  if (r.write.ioBytes > 0 && r.read.ioBytes === 0) return 'write';
  if (r.read.ioBytes > 0 && r.write.ioBytes === 0) return 'read';
  const rw = r.options.rw ?? '';
  return /write/.test(rw) ? 'write' : 'read';
}

/** A fio job's figures as bench metrics: MB/s (10^6 bytes), IOPS, mean latency in µs. */
export function fioMetrics(r: FioResult): { mbps: number; iops: number; latUs?: number } {
  const s = r[mainSide(r)];
  const out: { mbps: number; iops: number; latUs?: number } = { mbps: s.bwBytes / 1e6, iops: s.iops };
  if (s.latMeanNs !== undefined) out.latUs = s.latMeanNs / 1000;
  return out;
}
