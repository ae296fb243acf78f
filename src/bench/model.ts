// The result of a `duofs bench` run as written to bench.json, and what the
// renderers (table, SVG) read back. A result file holds every repetition of
// every cell; the summary (spread, ratios) is recomputed from it.
import type { JobDef, ServerDef } from './jobs.js';

export const RESULT_FORMAT = 'duofs-bench/1';

export interface CellResult {
  server: string;
  job: string;
  /** 0-based repetition */
  rep: number;
  ok: boolean;
  /** why the cell has no figures (server down, fio failed, timed out...) */
  error?: string;
  /** metric key -> value (see JobDef.metrics) */
  metrics: Record<string, number>;
  /** e.g. "buffered: O_DIRECT refused by the mount" */
  notes?: string[];
  /** guest (or host) seconds the cell took, set-up included */
  wallSecs?: number;
}

export interface ServerStatus {
  name: string;
  /** 'ok', or why the server produced no (or partial) figures */
  status: 'ok' | 'failed' | 'partial';
  error?: string;
}

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  node: string;
  /** 1-minute load average when the run started, ended, and the highest seen (sampled every 5 s) */
  loadStart: number;
  loadEnd: number;
  loadMax: number;
  /** QEMU processes on the machine that were not this run's, at start, end, and the most seen */
  otherGuestsStart: number;
  otherGuestsEnd: number;
  otherGuestsMax: number;
}

export interface BenchResult {
  format: typeof RESULT_FORMAT;
  kind: 'guest' | 'host';
  startedAt: string;
  finishedAt: string;
  /** the command line as run */
  command: string;
  machine: MachineInfo;
  /** versions of what ran: qemu, virtiofsd, kernel, fio, diod... */
  versions: Record<string, string>;
  /** what was run: size, runtime, repeat, iodepth, direct... */
  settings: Record<string, string | number | boolean>;
  servers: (ServerDef & ServerStatus)[];
  jobs: JobDef[];
  cells: CellResult[];
  /** free text notes for the reader (how caches were handled, skipped servers) */
  notes: string[];
}
