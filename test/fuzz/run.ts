// `npm run fuzz -- [--target T] [--seconds S] [--save] [--no-coverage] [--seed N]`
//
// Runs each fuzz target (all by default) for S seconds (default 60), each
// in its own child process so that a hang — even one inside a syscall,
// which no timer in the process can see — is caught: the child reports
// progress, and a child silent for 20 s is killed and its last input kept.
// Prints per target: executions, corpus size, coverage (V8 blocks reached)
// and findings; findings are saved under .cache/fuzz/findings/. Exit status
// 1 when anything was found. --save adds coverage-increasing inputs to
// test/fuzz/corpus/<target>/ (check them in to grow the CI corpus).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzz, type FuzzResult } from './engine.js';
import { allTargets } from './targets/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const cacheDir = path.join(root, '.cache', 'fuzz');
const SILENCE_MS = 20_000;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);

async function child(name: string): Promise<void> {
  const target = allTargets().find((t) => t.name === name);
  if (!target) throw new Error(`no fuzz target ${name}`);
  fs.mkdirSync(cacheDir, { recursive: true });
  const cur = fs.openSync(path.join(cacheDir, `${name}.current`), 'w');
  const result = await fuzz(target, {
    ms: Number(arg('seconds') ?? 60) * 1000,
    seed: arg('seed') !== undefined ? Number(arg('seed')) : undefined,
    coverage: !flag('no-coverage'),
    save: flag('save'),
    findingsDir: path.join(cacheDir, 'findings'),
    onInput: (b) => {
      fs.ftruncateSync(cur, 0);
      fs.writeSync(cur, b, 0, b.length, 0);
    },
    onProgress: (n) => process.stdout.write(`progress ${n}\n`),
  });
  process.stdout.write(`result ${JSON.stringify(result)}\n`);
  // Targets may leave handles (sockets, pollers) behind; the result is out.
  process.exit(0);
}

function runChild(name: string, seconds: number): Promise<FuzzResult> {
  return new Promise((resolve) => {
    const args = [
      '--import',
      path.join(root, 'test/lab/ts-hooks.mjs'),
      fileURLToPath(import.meta.url),
      '--child',
      name,
      '--seconds',
      String(seconds),
    ];
    for (const f of ['save', 'no-coverage']) if (flag(f)) args.push(`--${f}`);
    if (arg('seed') !== undefined) args.push('--seed', arg('seed')!);
    const p = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let last = Date.now();
    let execs = 0;
    let result: FuzzResult | undefined;
    let buf = '';
    p.stdout.on('data', (d: Buffer) => {
      last = Date.now();
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('progress ')) execs = Number(line.slice(9));
        else if (line.startsWith('result ')) result = JSON.parse(line.slice(7)) as FuzzResult;
      }
    });
    const dog = setInterval(() => {
      if (Date.now() - last > SILENCE_MS) {
        clearInterval(dog);
        p.kill('SIGKILL');
      }
    }, 1000);
    p.on('exit', (code, signal) => {
      clearInterval(dog);
      if (result) return resolve(result);
      const curFile = path.join(cacheDir, `${name}.current`);
      const input = fs.existsSync(curFile) ? fs.readFileSync(curFile) : Buffer.alloc(0);
      const file = path.join(cacheDir, 'findings', `${name}-hang-${Date.now()}`);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, input);
      resolve({
        target: name,
        execs,
        ms: seconds * 1000,
        corpus: 0,
        fromCorpusDir: 0,
        coverage: 0,
        findings: [
          {
            kind: signal === 'SIGKILL' ? 'hang' : 'crash',
            message:
              signal === 'SIGKILL'
                ? `no progress for ${SILENCE_MS / 1000} s (process blocked)`
                : `the fuzzing process died (code ${code}, signal ${signal})`,
            input: input.toString('hex'),
            file,
          },
        ],
      });
    });
  });
}

async function main(): Promise<void> {
  const only = arg('target');
  const targets = allTargets().filter((t) => !only || t.name === only);
  if (!targets.length) {
    console.error(
      `no target ${only}; targets: ${allTargets()
        .map((t) => t.name)
        .join(', ')}`,
    );
    process.exit(2);
  }
  if (flag('list')) {
    for (const t of targets) console.log(`${t.name.padEnd(20)} ${t.describe}`);
    return;
  }
  const seconds = Number(arg('seconds') ?? 60);
  let found = 0;
  for (const t of targets) {
    const r = await runChild(t.name, seconds);
    found += r.findings.length;
    console.log(
      `${r.target.padEnd(20)} ${String(r.execs).padStart(9)} execs in ${(r.ms / 1000).toFixed(0)} s, corpus ${r.corpus} (${r.fromCorpusDir} checked in), coverage ${r.coverage} blocks, ${r.findings.length} findings`,
    );
    for (const f of r.findings)
      console.log(
        `  ${f.kind}: ${f.message.split('\n')[0]}\n    input ${f.input.slice(0, 160)}${f.input.length > 160 ? '…' : ''}${f.file ? `\n    saved ${path.relative(root, f.file)}` : ''}`,
      );
  }
  process.exit(found ? 1 : 0);
}

if (arg('child')) await child(arg('child')!);
else await main();
