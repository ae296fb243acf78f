// Host-side 9P2000.L benchmark: duofs against diod on the same tree, from
// the test client (test/p9/client.ts), interleaved so that both see the same
// machine conditions. Not a test: prints a table of ops/s and duofs/diod.
//
//   npm run bench:9p                      (builds, then runs dist/bench/9p-host.js)
//   node dist/bench/9p-host.js --seconds 2 --rounds 3 --concurrency 8 [--in-process]
//
// duofs runs as the CLI (`node bin/duofs.js serve`) in its own process, like
// diod, unless --in-process is given (then it shares this process's event
// loop with the client, which understates it).
import fs from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { P9Client } from '../test/p9/client.js';
import { IOHDRSZ, O } from '../test/p9/proto.js';
import { startDiod } from '../test/support/diod.js';
import { makeTree } from '../test/support/tree.js';
import { startCli, startInProcess, Served } from '../test/p9/harness.js';

interface Args { seconds: number; rounds: number; concurrency: number; inProcess: boolean; loads: string[] }
function parseArgs(argv: string[]): Args {
  const a: Args = { seconds: 1.5, rounds: 3, concurrency: 8, inProcess: false, loads: [] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--seconds' && v) { a.seconds = Number(v); i++; }
    else if (k === '--rounds' && v) { a.rounds = Number(v); i++; }
    else if (k === '--concurrency' && v) { a.concurrency = Number(v); i++; }
    else if (k === '--load' && v) { a.loads.push(v); i++; }
    else if (k === '--in-process') a.inProcess = true;
    else if (k === '--help' || k === '-h') {
      console.log('usage: 9p-host [--seconds S] [--rounds N] [--concurrency C] [--load NAME]... [--in-process]');
      process.exit(0);
    }
  }
  return a;
}

const MIB = 1 << 20;
const SMALL_FILE = 16 * MIB;

interface Target { name: string; address: string; stop(): Promise<void> }

interface Ctx { c: P9Client; root: number; small: number; big: number; wfile: number; exportDir: string }

interface Load {
  name: string;
  /** bytes moved per op, for MiB/s */
  bytes: number;
  op(ctx: Ctx, worker: number, i: number): Promise<unknown>;
}

const LOADS: Load[] = [
  { name: 'getattr', bytes: 0, op: (x) => x.c.getattr(x.root) },
  {
    name: 'walk+clunk', bytes: 0,
    op: async (x, w) => {
      const fid = 1000 + w;
      await x.c.walk(x.root, fid, ['sub', 'deeper', 'leaf.bin']);
      await x.c.clunk(fid);
    },
  },
  { name: 'read 4KiB', bytes: 4096, op: (x, w, i) => x.c.read(x.small, (((i * 7919 + w * 104729) % (SMALL_FILE / 4096)) * 4096), 4096) },
  { name: 'write 4KiB', bytes: 4096, op: (x, w, i) => x.c.write(x.wfile, (((i * 7919 + w * 104729) % (SMALL_FILE / 4096)) * 4096), PAGE) },
  {
    name: 'read 1MiB', bytes: MIB,
    op: async (x) => {
      const chunk = x.c.msize - IOHDRSZ;
      const parts: Promise<Buffer>[] = [];
      for (let off = 0; off < MIB; off += chunk) parts.push(x.c.read(x.big, off, Math.min(chunk, MIB - off)));
      const got = (await Promise.all(parts)).reduce((n, b) => n + b.length, 0);
      if (got !== MIB) throw new Error(`short 1 MiB read: ${got}`);
    },
  },
];
const PAGE = Buffer.alloc(4096, 0x5a);

async function prepare(t: Target, exportDir: string): Promise<Ctx> {
  const { c, root } = await P9Client.session(t.address, { aname: exportDir, msize: MIB + 4096, timeoutMs: 60_000 });
  const open = async (p: string[], flags: number) => {
    const f = c.newFid();
    await c.walk(root, f, p);
    await c.lopen(f, flags);
    return f;
  };
  return {
    c, root, exportDir,
    small: await open(['small.bin'], O.RDONLY),
    big: await open(['big.bin'], O.RDONLY),
    wfile: await open([`w-${t.name}.bin`], O.RDWR),
  };
}

async function measure(ctx: Ctx, load: Load, seconds: number, concurrency: number): Promise<number> {
  const deadline = performance.now() + seconds * 1000;
  let ops = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    for (let i = 0; performance.now() < deadline; i++) {
      await load.op(ctx, w, i);
      ops++;
    }
  }));
  return ops / ((performance.now() - t0) / 1000);
}

function diodVersion(): string {
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'diod'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '(version unknown)';
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };
const fmt = (n: number) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1));

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const loads = args.loads.length ? LOADS.filter((l) => args.loads.includes(l.name)) : LOADS;
  const tree = makeTree('duofs-bench-');
  const dir = tree.dir;
  fs.mkdirSync(path.join(dir, 'sub', 'deeper'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'sub', 'deeper', 'leaf.bin'), 'leaf');
  const small = Buffer.alloc(SMALL_FILE);
  for (let i = 0; i < small.length; i += 4096) small.writeUInt32LE(i, i);
  fs.writeFileSync(path.join(dir, 'small.bin'), small);
  fs.writeFileSync(path.join(dir, 'big.bin'), small.subarray(0, MIB));
  for (const n of ['duofs', 'diod']) fs.writeFileSync(path.join(dir, `w-${n}.bin`), Buffer.alloc(SMALL_FILE));

  const targets: Target[] = [];
  let duofs: Served;
  if (args.inProcess) duofs = await startInProcess(dir);
  else duofs = await startCli(dir, { logLevel: 'warn' });
  targets.push({ name: 'duofs', address: duofs.address, stop: () => duofs.close() });
  const diod = await startDiod(dir);
  targets.push({ name: 'diod', address: diod.address, stop: () => diod.stop() });

  try {
    const ctxs = new Map<string, Ctx>();
    for (const t of targets) ctxs.set(t.name, await prepare(t, dir));
    console.log(`9P2000.L host benchmark: duofs (${args.inProcess ? 'in-process' : 'CLI process'}) vs diod ${diodVersion()}, same export on ${dir}`);
    console.log(`node ${process.version}, ${os.cpus().length} cores, ${args.concurrency} requests in flight on one TCP loopback connection, ` +
      `${args.seconds}s x ${args.rounds} rounds per cell (median), msize duofs=${ctxs.get('duofs')!.c.msize} diod=${ctxs.get('diod')!.c.msize}`);
    // Warm up (page cache, JIT) once per target and load.
    for (const load of loads) for (const t of targets) await measure(ctxs.get(t.name)!, load, 0.3, args.concurrency);
    const rows: string[][] = [['load', 'duofs ops/s', 'diod ops/s', 'duofs/diod', 'duofs MiB/s', 'diod MiB/s']];
    for (const load of loads) {
      const res = new Map<string, number[]>(targets.map((t) => [t.name, []]));
      for (let r = 0; r < args.rounds; r++) {
        // Alternate who goes first so neither always gets the warmer machine.
        const order = r % 2 === 0 ? targets : [...targets].reverse();
        for (const t of order) res.get(t.name)!.push(await measure(ctxs.get(t.name)!, load, args.seconds, args.concurrency));
      }
      const a = median(res.get('duofs')!);
      const b = median(res.get('diod')!);
      const mib = (x: number) => (load.bytes ? fmt((x * load.bytes) / MIB) : '-');
      rows.push([load.name, fmt(a), fmt(b), (a / b).toFixed(2), mib(a), mib(b)]);
      process.stderr.write(`  ${load.name}: duofs ${res.get('duofs')!.map(fmt).join(' / ')}  diod ${res.get('diod')!.map(fmt).join(' / ')}\n`);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const [i, r] of rows.entries()) {
      console.log(r.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join('  '));
      if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    }
    for (const x of ctxs.values()) await x.c.close();
  } finally {
    for (const t of targets) await t.stop();
    tree.cleanup();
  }
}

main().then(() => process.exit(0), (e: unknown) => {
  console.error('bench failed:', e);
  process.exit(1);
});
