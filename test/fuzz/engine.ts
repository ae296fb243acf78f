// A small coverage-guided mutation fuzzer for the parsers a guest reaches.
//
// Why not @jazzer.js/core: its 4.0.0 package installs from the npm registry,
// but the libFuzzer addon it ships (prebuilds/fuzzer-linux-x64.node) needs
// GLIBC_2.38 and this Debian 12 machine has 2.36; the package carries no
// sources to rebuild from, and cmake-js would download Node headers from
// outside the registry. Older versions (1.x, 2.x) download their binary.
//
// So this engine does what libFuzzer does, at JS speed: inputs from a
// checked-in corpus, stacked byte-level mutations, and V8's own block
// coverage (node:inspector precise coverage) to keep the inputs that reach
// code no earlier input reached. Coverage counts only product code
// (protocols/, security/, src/), not the tests or node_modules.
import { Session } from 'node:inspector';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';

/** What the target says went wrong; anything else thrown by exec() is a finding too. */
export class Finding extends Error {
  constructor(
    readonly kind: 'crash' | 'hang' | 'no-answer' | 'bad-reply' | 'escape' | 'property',
    message: string,
  ) {
    super(message);
  }
}

export interface TargetInstance {
  /** Feeds one input. Throws Finding (or anything) when the server misbehaved. */
  exec(input: Buffer): Promise<void> | void;
  /** A well-formed request is still answered correctly; throws Finding otherwise. */
  check(): Promise<void> | void;
  stop(): Promise<void> | void;
}

export interface FuzzTarget {
  name: string;
  /** What the target feeds, for docs and --list. */
  describe: string;
  maxLen: number;
  /** Built-in seeds (written to test/fuzz/corpus/<name>/ by --write-seeds). */
  seeds(): Buffer[];
  start(): Promise<TargetInstance>;
  /** Values worth splicing in (magic numbers, opcodes). */
  dictionary?: Buffer[];
}

export interface FoundInput {
  kind: string;
  message: string;
  input: string; // hex
  file?: string;
}

export interface FuzzResult {
  target: string;
  execs: number;
  ms: number;
  corpus: number;
  fromCorpusDir: number;
  coverage: number;
  findings: FoundInput[];
}

export interface FuzzOptions {
  ms: number;
  seed?: number;
  coverage?: boolean;
  corpusDir?: string;
  /** Save new coverage-increasing inputs into corpusDir. */
  save?: boolean;
  /** Where findings are written (one file per finding). */
  findingsDir?: string;
  /** Stop after this many findings (default 5). */
  maxFindings?: number;
  /** Runs check() every this many execs (default 500) and at the end. */
  checkEvery?: number;
  /** Called before each exec with the input (the runner's hang watchdog keeps it). */
  onInput?: (input: Buffer) => void;
  onProgress?: (execs: number) => void;
}

const here = path.dirname(new URL(import.meta.url).pathname);
export const corpusRoot = path.join(here, 'corpus');

/** mulberry32 */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof prng>;

const INTERESTING_32 = [0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x2f /* / */, 0x2e /* . */];

/** One stacked mutation of `b` (libFuzzer's basic set). */
export function mutate(r: Rng, b: Buffer, maxLen: number, others: readonly Buffer[], dict: readonly Buffer[]): Buffer {
  let out = Buffer.from(b);
  const n = 1 + (r.chance(0.5) ? 0 : r.int(4));
  for (let k = 0; k < n; k++) {
    const len = out.length;
    switch (r.int(12)) {
      case 0:
        if (len) out[r.int(len)] ^= 1 << r.int(8);
        break;
      case 1:
        if (len) out[r.int(len)] = r.int(256);
        break;
      case 2:
        if (len) out[r.int(len)] = INTERESTING_8[r.int(INTERESTING_8.length)]!;
        break;
      case 3:
        if (len >= 2) out.writeUInt16LE(INTERESTING_32[r.int(INTERESTING_32.length)]! & 0xffff, r.int(len - 1));
        break;
      case 4:
        if (len >= 4) out.writeUInt32LE(INTERESTING_32[r.int(INTERESTING_32.length)]! >>> 0, r.int(len - 3));
        break;
      case 5:
        if (len >= 4) {
          const at = r.int(len - 3);
          out.writeUInt32LE((out.readUInt32LE(at) + r.int(33) - 16) >>> 0, at);
        }
        break;
      case 6: {
        // insert random bytes
        const at = r.int(len + 1);
        const ins = Buffer.from(Array.from({ length: 1 + r.int(8) }, () => r.int(256)));
        out = Buffer.concat([out.subarray(0, at), ins, out.subarray(at)]);
        break;
      }
      case 7:
        if (len) {
          const at = r.int(len);
          out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + r.int(Math.min(16, len - at)))]);
        }
        break;
      case 8:
        out = out.subarray(0, r.int(len + 1));
        break;
      case 9:
        if (len) {
          const at = r.int(len);
          const l = 1 + r.int(Math.min(32, len - at));
          out = Buffer.concat([out.subarray(0, at + l), out.subarray(at, at + l), out.subarray(at + l)]);
        }
        break;
      case 10: {
        // splice with another input
        const o = others[r.int(others.length)];
        if (!o?.length) break;
        const from = r.int(o.length);
        const piece = o.subarray(from, from + 1 + r.int(o.length - from));
        const at = r.int(len + 1);
        out = r.chance(0.5)
          ? Buffer.concat([out.subarray(0, at), piece])
          : Buffer.concat([out.subarray(0, at), piece, out.subarray(at + piece.length)]);
        break;
      }
      case 11: {
        // a dictionary word over or into the input
        const d = dict[r.int(dict.length)];
        if (!d) break;
        const at = r.int(len + 1);
        out = r.chance(0.5)
          ? Buffer.concat([out.subarray(0, at), d, out.subarray(at + d.length)])
          : Buffer.concat([out.subarray(0, at), d, out.subarray(at)]);
        break;
      }
    }
  }
  return out.length > maxLen ? out.subarray(0, maxLen) : out;
}

/** Block coverage of product code through V8's precise coverage. */
class Coverage {
  private readonly s = new Session();
  /** fn key -> known block keys (learnt from reports where they were not run) */
  private readonly blocks = new Map<string, Set<string>>();
  private readonly seen = new Set<string>();

  constructor() {
    this.s.connect();
    this.post('Profiler.enable');
    this.post('Profiler.startPreciseCoverage', { callCount: false, detailed: true });
  }

  // Session.post on an in-process session answers synchronously.
  private post(method: string, params?: object): unknown {
    let out: unknown;
    let err: Error | null = null;
    this.s.post(method, params ?? {}, (e, r) => {
      err = e;
      out = r;
    });
    if (err) throw err;
    return out;
  }

  get size(): number {
    return this.seen.size;
  }

  /** Takes (and resets) the counters; true when this run reached something new. */
  collect(): boolean {
    const r = this.post('Profiler.takePreciseCoverage') as {
      result: { url: string; functions: { ranges: { startOffset: number; endOffset: number; count: number }[] }[] }[];
    };
    let fresh = false;
    for (const script of r.result) {
      const u = script.url;
      if (!/\/(protocols|security|src)\//.test(u) || u.includes('node_modules') || u.includes('/test/')) continue;
      for (const fn of script.functions) {
        const top = fn.ranges[0];
        if (!top || top.count === 0) continue;
        const fk = `${u}:${top.startOffset}`;
        if (!this.seen.has(fk)) {
          this.seen.add(fk);
          fresh = true;
        }
        let known = this.blocks.get(fk);
        const notRun = new Set<string>();
        for (let i = 1; i < fn.ranges.length; i++) {
          const b = fn.ranges[i]!;
          const bk = `${fk}/${b.startOffset}-${b.endOffset}`;
          if (b.count === 0) notRun.add(bk);
        }
        if (!known) {
          known = new Set();
          this.blocks.set(fk, known);
        }
        for (const bk of notRun) known.add(bk);
        for (const bk of known) {
          if (!notRun.has(bk) && !this.seen.has(bk)) {
            this.seen.add(bk);
            fresh = true;
          }
        }
      }
    }
    return fresh;
  }

  stop(): void {
    try {
      this.post('Profiler.stopPreciseCoverage');
      this.post('Profiler.disable');
    } catch {
      /* already gone */
    }
    this.s.disconnect();
  }
}

export function loadCorpus(dir: string): Buffer[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .sort()
    .filter((f) => !f.startsWith('.') && !f.endsWith('.md'))
    .map((f) => fs.readFileSync(path.join(dir, f)));
}

export const inputName = (b: Buffer): string => createHash('sha1').update(b).digest('hex').slice(0, 16);

function describeError(e: unknown): { kind: string; message: string } {
  if (e instanceof Finding) return { kind: e.kind, message: e.message };
  const err = e as Error;
  return {
    kind: 'uncaught',
    message: `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}\n${(err?.stack ?? '').split('\n').slice(1, 6).join('\n')}`,
  };
}

/** Runs one target for o.ms milliseconds. */
export async function fuzz(target: FuzzTarget, o: FuzzOptions): Promise<FuzzResult> {
  const r = prng(o.seed ?? Date.now());
  const corpusDir = o.corpusDir ?? path.join(corpusRoot, target.name);
  const fromDir = loadCorpus(corpusDir);
  // Seeds first: they are a hand-written sequence (create, then use) that later inputs may disturb.
  const corpus: Buffer[] = [...target.seeds(), ...fromDir];
  const known = new Set(corpus.map(inputName));
  const dict = target.dictionary ?? [];
  const findings: FoundInput[] = [];
  const maxFindings = o.maxFindings ?? 5;
  const checkEvery = o.checkEvery ?? 500;
  const cov = o.coverage === false ? undefined : new Coverage();
  const started = Date.now();
  let execs = 0;
  let inst = await target.start();

  const record = async (input: Buffer, e: unknown): Promise<void> => {
    const d = describeError(e);
    const f: FoundInput = { ...d, input: input.toString('hex') };
    if (o.findingsDir) {
      fs.mkdirSync(o.findingsDir, { recursive: true });
      f.file = path.join(o.findingsDir, `${target.name}-${d.kind}-${inputName(input)}`);
      fs.writeFileSync(f.file, input);
    }
    findings.push(f);
    // The instance may be wedged or half-broken: start a fresh one.
    try {
      await inst.stop();
    } catch {
      /* it failed already */
    }
    inst = await target.start();
  };

  const runOne = async (input: Buffer): Promise<void> => {
    o.onInput?.(input);
    execs++;
    try {
      await inst.exec(input);
    } catch (e) {
      await record(input, e);
      return;
    }
    if (execs % checkEvery === 0) {
      try {
        await inst.check();
      } catch (e) {
        await record(input, new Finding('no-answer', `after this input a good request failed: ${(e as Error).message}`));
      }
    }
    if (execs % 256 === 0) o.onProgress?.(execs);
  };

  try {
    // Every corpus input once, even past the time budget (what CI relies on), then mutations.
    for (const input of [...corpus]) {
      if (findings.length >= maxFindings) break;
      await runOne(input);
      cov?.collect();
    }
    while (Date.now() - started < o.ms && findings.length < maxFindings) {
      const parent = corpus[r.int(corpus.length)] ?? Buffer.alloc(0);
      const input = mutate(r, parent, target.maxLen, corpus, dict);
      await runOne(input);
      if (cov?.collect()) {
        const name = inputName(input);
        if (!known.has(name)) {
          known.add(name);
          if (corpus.length < 5000) corpus.push(input);
          if (o.save) {
            fs.mkdirSync(corpusDir, { recursive: true });
            fs.writeFileSync(path.join(corpusDir, name), input);
          }
        }
      }
    }
    try {
      await inst.check();
    } catch (e) {
      await record(Buffer.alloc(0), new Finding('no-answer', `at the end a good request failed: ${(e as Error).message}`));
    }
  } finally {
    await inst.stop();
    cov?.stop();
  }
  return {
    target: target.name,
    execs,
    ms: Date.now() - started,
    corpus: corpus.length,
    fromCorpusDir: fromDir.length,
    coverage: cov?.size ?? 0,
    findings,
  };
}

/** Awaits p, or throws a hang Finding after ms. */
export function withinMs<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Finding('hang', `no answer within ${ms} ms: ${what}`)), ms);
    }),
  ]);
}
