// Summaries of a V8 CPU profile (node --cpu-prof writes *.cpuprofile): the
// functions with the most self time and the most total (inclusive) time, so
// a bench run can say where duofs spends its CPU without opening DevTools.
import { relative } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface HotSpot {
  /** "name (file:line)" */
  where: string;
  selfMs: number;
  totalMs: number;
  selfPct: number;
  totalPct: number;
}

export interface ProfileSummary {
  /** wall time the profile covers */
  durationMs: number;
  /** time in (idle): the event loop waiting */
  idleMs: number;
  /** (garbage collector) */
  gcMs: number;
  /** busy = duration - idle */
  busyMs: number;
  bySelf: HotSpot[];
  byTotal: HotSpot[];
}

const SPECIAL = new Set(['(root)', '(idle)', '(program)', '(garbage collector)']);

function frameKey(f: CallFrame, root: string | undefined): string {
  if (SPECIAL.has(f.functionName)) return f.functionName;
  let file = f.url.replace(/^file:\/\//, '');
  if (root && file.startsWith(root)) file = relative(root, file);
  const name = f.functionName || '(anonymous)';
  return file ? `${name} (${file}:${f.lineNumber + 1})` : `${name} (native)`;
}

export function parseCpuProfile(text: string): CpuProfile {
  const p = JSON.parse(text) as CpuProfile;
  if (!Array.isArray(p.nodes) || typeof p.startTime !== 'number') throw new Error('not a V8 CPU profile (no nodes/startTime)');
  return p;
}

/**
 * Self and total time per function. Time per sample is taken from
 * timeDeltas when present (the real spacing), else spread evenly. Percentages
 * are of busy time (idle excluded), which is what matters for a server that
 * waits on its guests most of the time.
 */
export function summarizeProfile(p: CpuProfile, o: { top?: number; root?: string } = {}): ProfileSummary {
  const top = o.top ?? 15;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const durationUs = p.endTime - p.startTime;
  if (p.samples && p.timeDeltas && p.samples.length === p.timeDeltas.length && p.samples.length > 0) {
    // timeDeltas[i] is the time between sample i-1 and sample i; charge it to sample i-1's node.
    for (let i = 0; i < p.samples.length; i++) {
      const id = p.samples[i]!;
      const next = i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1]! : 0;
      selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, next));
    }
  } else {
    const hits = p.nodes.reduce((n, x) => n + (x.hitCount ?? 0), 0) || 1;
    for (const n of p.nodes) selfUs.set(n.id, ((n.hitCount ?? 0) / hits) * durationUs);
  }
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  for (const n of p.nodes) {
    const t = selfUs.get(n.id) ?? 0;
    if (t === 0) continue;
    const key = frameKey(n.callFrame, o.root);
    self.set(key, (self.get(key) ?? 0) + t);
    if (key === '(idle)') idle += t;
    if (key === '(garbage collector)') gc += t;
    // Inclusive: charge every distinct function on the stack once.
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const k = frameKey(byId.get(id)!.callFrame, o.root);
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + t);
    }
  }
  const busy = Math.max(1, durationUs - idle);
  const spot = (k: string): HotSpot => ({
    where: k,
    selfMs: (self.get(k) ?? 0) / 1000,
    totalMs: (total.get(k) ?? 0) / 1000,
    selfPct: (100 * (self.get(k) ?? 0)) / busy,
    totalPct: (100 * (total.get(k) ?? 0)) / busy,
  });
  const rank = (m: Map<string, number>, skip: Set<string>) =>
    [...m.entries()]
      .filter(([k]) => !skip.has(k))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k]) => spot(k));
  return {
    durationMs: durationUs / 1000,
    idleMs: idle / 1000,
    gcMs: gc / 1000,
    busyMs: busy / 1000,
    bySelf: rank(self, new Set(['(idle)', '(root)'])),
    byTotal: rank(total, new Set(['(idle)', '(root)', '(program)'])),
  };
}

export function formatProfileSummary(s: ProfileSummary, title: string): string {
  const lines = [
    `${title}: ${(s.durationMs / 1000).toFixed(1)} s profiled, busy ${(s.busyMs / 1000).toFixed(1)} s (${((100 * s.busyMs) / Math.max(1, s.durationMs)).toFixed(0)}%), GC ${((100 * s.gcMs) / s.busyMs).toFixed(1)}% of busy`,
    '  self time (% of busy):',
    ...s.bySelf.map((h) => `    ${h.selfPct.toFixed(1).padStart(5)}%  ${h.where}`),
    '  total time (% of busy):',
    ...s.byTotal.map((h) => `    ${h.totalPct.toFixed(1).padStart(5)}%  ${h.where}`),
  ];
  return lines.join('\n') + '\n';
}
