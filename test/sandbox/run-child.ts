// Runs test/sandbox/child.ts (compiled: dist/test/sandbox/child.js) and
// reads its threads' credentials from the outside, in /proc/<pid>/task.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildConfig, ChildResult } from './child.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const childJs = path.join(root, 'dist/test/sandbox/child.js');

export interface OutsideTask {
  tid: number;
  capPrm: bigint;
  capEff: bigint;
  capInh: bigint;
  capBnd: bigint;
  capAmb: bigint;
  noNewPrivs: boolean;
}

export interface ChildRun {
  result: ChildResult;
  /** every thread of the child, read by this (test) process */
  tasks: OutsideTask[];
}

function readTasks(pid: number): OutsideTask[] {
  const out: OutsideTask[] = [];
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    const s = fs.readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8');
    const f = (k: string): string => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(s)?.[1] ?? '';
    const h = (k: string): bigint => BigInt('0x' + f(k));
    out.push({
      tid: Number(t),
      capPrm: h('CapPrm'),
      capEff: h('CapEff'),
      capInh: h('CapInh'),
      capBnd: h('CapBnd'),
      capAmb: h('CapAmb'),
      noNewPrivs: f('NoNewPrivs') === '1',
    });
  }
  return out;
}

export async function runChild(cfg: ChildConfig, poolSize = 5): Promise<ChildRun> {
  const p = spawn(process.execPath, [childJs, JSON.stringify(cfg)], {
    env: { ...process.env, UV_THREADPOOL_SIZE: String(poolSize) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  p.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((res) => p.on('exit', (code) => res(code)));
  const line = await new Promise<string>((resolve, reject) => {
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    void exited.then((code) => reject(new Error(`child exited (${code}) before reporting: ${err}`)));
  });
  const result = JSON.parse(line) as ChildResult;
  let tasks: OutsideTask[];
  try {
    tasks = readTasks(result.pid);
  } finally {
    p.stdin.end();
    await exited;
  }
  return { result, tasks };
}

/** The capability mask /proc shows for a set of names (bit n = capability n). */
export { capMask } from '../../src/sys/caps.js';
