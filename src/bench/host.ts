// The host-side benchmark: no guest. The vhost-user test frontend
// (src/doubles/vhost-user-frontend.ts, playing the VMM) and the FUSE client on top of it
// (src/doubles/fuse-client.ts) push FUSE requests at duofs and at the Rust
// virtiofsd from the lab root; the 9P client (src/doubles/p9-client.ts) pushes 9P
// requests at duofs and diod over unix sockets. Every load runs for a fixed
// time with N requests in flight; loads and servers are interleaved so that
// each pair sees the same machine. Besides ops/s and MB/s, the server
// process's CPU time per operation is taken from /proc (efficiency, which
// does not depend on how fast this client is).
//
// The helpers are the compiled test modules under dist/test (tsc builds them
// with everything else).
import { SERVER_V8_FLAGS } from '../sys/v8-flags.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { VhostUserFrontend } from '../doubles/vhost-user-frontend.js';
import { FuseClient, ROOT, IN_HEADER, OUT_HEADER } from '../doubles/fuse-client.js';
import { P9Client } from '../doubles/p9-client.js';
import { IOHDRSZ } from '../doubles/p9-proto.js';
import { startDiod, type DiodServer } from './diod.js';
import { BenchError, MachineWatch, cpuSeconds, labRoot, machineBasics, repoRoot, requireLab } from './env.js';
import { HOL_LOADS, HOST_LOADS, HOST_SERVERS, slowReferences, type ServerDef } from './jobs.js';
import { SlowStorage, describeCheck, judgeCheck } from './slow.js';
import { RESULT_FORMAT, type BenchResult, type CellResult } from './model.js';
import { fmtDuration, type Progress } from './progress.js';
import { fmtValue } from './stats.js';

export interface HostSettings {
  servers: string[];
  jobs: string[];
  repeat: number;
  seconds: number;
  concurrency: number;
  cpuProf: boolean;
  outDir: string;
  sharedDir: string | undefined;
  xattr: boolean;
  duofsArgs: string[];
  command: string;
  /** --slow-storage: the servers export a FUSE mount of the tree whose reads and writes take this many ms */
  slowMs?: number;
}

const MIB = 1 << 20;
const FILE_SIZE = 16 * MIB;
const PAGE = Buffer.alloc(4096, 0x5a);
const CHUNK_1M = Buffer.alloc(MIB, 0xa5);
/** Linux open flags (the FUSE and 9P wire values are the host's). */
const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;

/** One server as the loads see it: every load is an async op; `pid` for CPU time. */
interface Target {
  server: string;
  /** what the reader should know about how this server was driven */
  notes(): string[];
  pid: () => number | undefined;
  op(load: string, worker: number, i: number): Promise<void>;
  close(): Promise<void>;
}

/** Page-sized descriptor lengths for n bytes. */
const pages = (n: number): number[] => Array.from({ length: Math.ceil(n / 4096) }, (_, k) => Math.min(4096, n - 4096 * k));
const offset4k = (w: number, i: number): number => ((i * 7919 + w * 104729) % (FILE_SIZE / 4096)) * 4096;
const offset1m = (w: number, i: number): number => ((i * 7 + w * 3) % (FILE_SIZE / MIB)) * MIB;

// ------------------------------------------------------------------ FUSE targets

async function fuseTarget(server: string, socketPath: string, pid: () => number | undefined, dir: string): Promise<Target> {
  const fe = await VhostUserFrontend.connect({ socketPath, queueSize: 256, regions: [{ gpa: 0x100000, size: 96 * MIB }] });
  const c = new FuseClient(fe, 1);
  c.timeoutMs = 60_000;
  const init = await c.doInit();
  const look = async (parent: bigint, name: string) => (await c.lookup(parent, name)).nodeid;
  const small = await look(ROOT, 'small.bin');
  const big = await look(ROOT, 'big.bin');
  const wnode = await look(ROOT, `w-${server}.bin`);
  const sub = await look(ROOT, 'sub');
  const cu = await look(ROOT, `cu-${server}`);
  const fhSmall = (await c.open(small, O_RDONLY)).fh;
  const fhBig = (await c.open(big, O_RDONLY)).fh;
  const fhW = (await c.open(wnode, O_RDWR)).fh;
  const maxWrite = Math.min(MIB, init.maxWrite || MIB);
  let leaf: bigint | undefined;
  let lookups = 0n;
  let seq = 0;
  void dir;
  return {
    server,
    pid,
    notes: () => [],
    async op(load, w, i) {
      switch (load) {
        case 'getattr':
        case 'probe':
          await c.getattr(small);
          return;
        case 'lookup': {
          const e = await c.lookup(sub, 'leaf');
          leaf = e.nodeid;
          lookups++;
          return;
        }
        case 'read-4k':
          await c.read(fhSmall, BigInt(offset4k(w, i)), 4096);
          return;
        case 'write-4k':
          await c.write(fhW, BigInt(offset4k(w, i)), PAGE);
          return;
        case 'read-1m': {
          // One page per descriptor, in an indirect table: what a guest kernel sends for O_DIRECT or page-cache I/O.
          const b = await c.read(fhBig, BigInt(offset1m(w, i)), MIB, { in: [OUT_HEADER, ...pages(MIB)], indirect: true });
          if (b.length !== MIB) throw new Error(`short 1 MiB read: ${b.length}`);
          return;
        }
        case 'write-1m': {
          const off = offset1m(w, i);
          const parts: Promise<number>[] = [];
          for (let at = 0; at < MIB; at += maxWrite) {
            const n = Math.min(maxWrite, MIB - at);
            parts.push(c.write(fhW, BigInt(off + at), CHUNK_1M.subarray(at, at + n), { split: [IN_HEADER, 40, ...pages(n)], indirect: true }));
          }
          await Promise.all(parts);
          return;
        }
        case 'create-unlink': {
          const name = `f${w}-${seq++}`;
          const r = await c.create(cu, name, O_WRONLY | O_CREAT | O_EXCL, 0o644);
          await c.release(r.open.fh);
          await c.unlink(cu, name);
          await c.forget(r.entry.nodeid, 1n);
          return;
        }
        default:
          throw new Error(`no FUSE load ${load}`);
      }
    },
    async close() {
      try {
        if (leaf !== undefined && lookups > 0n) await c.forget(leaf, lookups);
        for (const fh of [fhSmall, fhBig, fhW]) await c.release(fh);
      } catch {
        /* closing anyway */
      }
      fe.close();
    },
  };
}

// ------------------------------------------------------------------ 9P targets

async function ninepTarget(server: string, socketPath: string, pid: () => number | undefined, exportDir: string): Promise<Target> {
  const { c, root } = await P9Client.session({ path: socketPath }, { aname: exportDir, msize: MIB + 4096, timeoutMs: 60_000 });
  const walkOpen = async (names: string[], flags: number | undefined) => {
    const f = c.newFid();
    await c.walk(root, f, names);
    if (flags !== undefined) await c.lopen(f, flags);
    return f;
  };
  const small = await walkOpen(['small.bin'], O_RDONLY);
  const big = await walkOpen(['big.bin'], O_RDONLY);
  const wfile = await walkOpen([`w-${server}.bin`], O_RDWR);
  const sub = await walkOpen(['sub'], undefined);
  const cu = await walkOpen([`cu-${server}`], undefined);
  const chunk = c.msize - IOHDRSZ;
  let seq = 0;
  let noUnlinkat = false;
  return {
    server,
    pid,
    notes: () => (noUnlinkat ? ['no Tunlinkat (EOPNOTSUPP): unlink by walk + Tremove, as Linux v9fs falls back'] : []),
    async op(load, w, i) {
      switch (load) {
        case 'getattr':
          await c.getattr(small);
          return;
        case 'probe': {
          // what a path-based stat costs a 9P client: walk, getattr, clunk
          const f = c.newFid();
          await c.walk(root, f, ['small.bin']);
          await c.getattr(f);
          await c.clunk(f);
          return;
        }
        case 'lookup': {
          const f = c.newFid();
          await c.walk(sub, f, ['leaf']);
          await c.clunk(f);
          return;
        }
        case 'read-4k':
          await c.read(small, offset4k(w, i), 4096);
          return;
        case 'write-4k':
          await c.write(wfile, offset4k(w, i), PAGE);
          return;
        case 'read-1m': {
          const off = offset1m(w, i);
          const parts: Promise<Buffer>[] = [];
          for (let at = 0; at < MIB; at += chunk) parts.push(c.read(big, off + at, Math.min(chunk, MIB - at)));
          const got = (await Promise.all(parts)).reduce((n, b) => n + b.length, 0);
          if (got !== MIB) throw new Error(`short 1 MiB read: ${got}`);
          return;
        }
        case 'write-1m': {
          const off = offset1m(w, i);
          const parts: Promise<number>[] = [];
          for (let at = 0; at < MIB; at += chunk) parts.push(c.write(wfile, off + at, CHUNK_1M.subarray(at, Math.min(MIB, at + chunk))));
          await Promise.all(parts);
          return;
        }
        case 'create-unlink': {
          const name = `f${w}-${seq++}`;
          const f = c.newFid();
          await c.walk(cu, f, []);
          await c.lcreate(f, name, O_WRONLY | O_CREAT | O_EXCL, 0o644, 0);
          if (!noUnlinkat) {
            await c.clunk(f);
            try {
              await c.unlinkat(cu, name, 0);
              return;
            } catch (e) {
              // As Linux's v9fs does: a server without Tunlinkat (diod 1.0.24) gets Tremove.
              if ((e as { code?: string }).code !== 'EOPNOTSUPP') throw e;
              noUnlinkat = true;
              await c.walk(cu, f, [name]);
            }
          }
          await c.remove(f);
          return;
        }
        default:
          throw new Error(`no 9P load ${load}`);
      }
    },
    async close() {
      await c.close();
    },
  };
}

// ------------------------------------------------------------------ processes

interface Proc {
  child: ChildProcess;
  out(): string;
  stop(graceMs: number): Promise<void>;
}

const children = new Set<ChildProcess>();
let exitHooked = false;
function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const c of children) {
        try {
          c.kill('SIGKILL');
        } catch {
          /* gone */
        }
      }
    });
  }
}

async function startProc(what: string, command: string, args: string[], sockets: string[]): Promise<Proc> {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let out = '';
  const grab = (b: Buffer) => {
    if (out.length < 1e6) out += b.toString('utf8');
  };
  child.stdout!.on('data', grab);
  child.stderr!.on('data', grab);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const deadline = Date.now() + 20_000;
  while (!sockets.every((s) => existsSync(s))) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new BenchError(
        `${what} did not start (${child.exitCode ?? child.signalCode ?? 'no socket within 20 s'}):\n$ ${command} ${args.join(' ')}\n${out.slice(-2000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    child,
    out: () => out,
    async stop(graceMs) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
    },
  };
}

function makeTree(dir: string, servers: string[]): void {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'sub', 'leaf'), 'leaf\n');
  const data = Buffer.alloc(FILE_SIZE);
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
  writeFileSync(join(dir, 'small.bin'), data);
  writeFileSync(join(dir, 'big.bin'), data);
  for (const s of servers) {
    writeFileSync(join(dir, `w-${s}.bin`), data);
    rmSync(join(dir, `cu-${s}`), { recursive: true, force: true });
    mkdirSync(join(dir, `cu-${s}`));
  }
}

function diodVersion(): string {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: ${Version} is dpkg-query's format, not a template
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'diod'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

/** Runs one load on one target for `seconds` with `concurrency` workers; returns ops/s and server CPU µs/op. */
async function measure(t: Target, load: string, seconds: number, concurrency: number): Promise<{ ops: number; cpuUsPerOp: number | undefined }> {
  const pid = t.pid();
  const cpu0 = pid !== undefined ? cpuSeconds(pid) : undefined;
  const deadline = performance.now() + seconds * 1000;
  let ops = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      for (let i = 0; performance.now() < deadline; i++) {
        await t.op(load, w, i);
        ops++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  const cpu1 = pid !== undefined ? cpuSeconds(pid) : undefined;
  return { ops: ops / secs, cpuUsPerOp: cpu0 !== undefined && cpu1 !== undefined && ops > 0 ? ((cpu1 - cpu0) * 1e6) / ops : undefined };
}

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;

/** Times `probe`'s 'probe' op back to back for `seconds`; latencies in µs, sorted. */
async function probeLatencies(probe: Target, seconds: number): Promise<number[]> {
  const lat: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  for (let i = 0; performance.now() < deadline; i++) {
    const t0 = performance.now();
    await probe.op('probe', 0, i);
    lat.push((performance.now() - t0) * 1000);
  }
  return lat.sort((a, b) => a - b);
}

/**
 * Head of line: getattr latency from `probe` alone, then while `load` keeps
 * `inflight` slow 4 KiB reads going (after a ramp of a few read latencies).
 */
export async function headOfLine(load: Target, probe: Target, seconds: number, slowMs: number, inflight = 16): Promise<Record<string, number>> {
  const idle = await probeLatencies(probe, seconds);
  let stop = false;
  let reads = 0;
  let failure: unknown;
  const workers = Array.from({ length: inflight }, async (_, w) => {
    try {
      for (let i = 0; !stop; i++) {
        await load.op('read-4k', w, i);
        reads++;
      }
    } catch (e) {
      failure ??= e;
    }
  });
  await new Promise((r) => setTimeout(r, Math.max(200, 3 * slowMs)));
  const r0 = reads;
  const t0 = performance.now();
  let loaded: number[];
  try {
    loaded = await probeLatencies(probe, seconds);
  } finally {
    stop = true;
  }
  const secs = (performance.now() - t0) / 1000;
  const r1 = reads;
  await Promise.all(workers);
  if (failure !== undefined) throw new Error(`the slow reads failed: ${(failure as Error).message}`);
  const m = {
    p50Idle: quantile(idle, 0.5),
    p99Idle: quantile(idle, 0.99),
    p50Loaded: quantile(loaded, 0.5),
    p99Loaded: quantile(loaded, 0.99),
    loadIops: (r1 - r0) / secs,
    probesLoaded: loaded.length / secs,
  };
  return { ...m, p50Ratio: m.p50Loaded / m.p50Idle, p99Ratio: m.p99Loaded / m.p99Idle };
}

export async function runHostBench(
  s: HostSettings,
  progress: Progress,
): Promise<{ result: BenchResult; profiles: { server: string; file: string }[] }> {
  const servers: ServerDef[] = s.servers.map((n) => HOST_SERVERS.find((x) => x.name === n)!);
  const loads = [...HOL_LOADS, ...HOST_LOADS].filter((l) => s.jobs.includes(l.name));
  const slow = s.slowMs !== undefined;
  if (loads.some((l) => l.name.startsWith('hol-')) && !slow) throw new BenchError('the head-of-line jobs need --slow-storage MS');
  const stamp = servers.some((x) => x.name.startsWith('virtiofsd')) ? requireLab([{ path: 'usr/libexec/virtiofsd', what: 'virtiofsd' }]) : undefined;
  if (process.getuid?.() !== 0) throw new BenchError('duofs bench --host starts servers in passthrough mode as root: run it as root');
  if (!existsSync(join(repoRoot, 'dist', 'src', 'cli.js'))) throw new BenchError('duofs is not built (dist/src/cli.js missing): run `npm run build`');
  const startedAt = new Date().toISOString();
  const watch = new MachineWatch();
  // Not tmpfs: a real file system like an export (os.tmpdir() is on the root fs here).
  const base = mkdtempSync(join(os.tmpdir(), 'duofs-bench-host-'));
  const tree = s.sharedDir ? resolve(s.sharedDir) : join(base, 'export');
  // Slow storage: the files are made in benchTree, the servers export its slow FUSE mount.
  const benchTree = s.sharedDir ? join(tree, '.duofs-bench') : tree;
  const exportTree = slow ? join(base, 'slow') : benchTree;
  let slowStore: SlowStorage | undefined;
  /** targets made only as the other half of a head-of-line pair (closed at the end) */
  const extra = new Map<string, Target>();
  const procs: Proc[] = [];
  let diod: DiodServer | undefined;
  const targets: Target[] = [];
  const cells: CellResult[] = [];
  const profiles: { server: string; file: string }[] = [];
  const dead = new Map<string, string>();
  const notes: string[] = [];
  const versions: Record<string, string> = { node: process.version };
  let duofsProc: Proc | undefined;
  const profDir = join(s.outDir, 'profiles');
  const profFile = join(profDir, 'duofs-host.cpuprofile');
  try {
    mkdirSync(benchTree, { recursive: true });
    makeTree(
      benchTree,
      servers.map((x) => x.name),
    );
    if (slow) {
      mkdirSync(exportTree);
      progress.status(`mounting the slow storage (${s.slowMs} ms per read and write)`);
      slowStore = await SlowStorage.start(benchTree, exportTree, s.slowMs!);
      const c = await slowStore.check('small.bin');
      notes.push(describeCheck(s.slowMs!, c));
      progress.line(describeCheck(s.slowMs!, c));
      judgeCheck(s.slowMs!, c);
    }
    const wantDuofs = servers.filter((x) => x.name.startsWith('duofs-'));
    // The cross-protocol head-of-line pairs need both front-ends of the one duofs.
    const bothFronts = wantDuofs.length > 0 && loads.some((l) => l.name === 'hol-cross');
    const sock = (n: string) => join(base, `${n}.sock`);
    if (wantDuofs.length) {
      if (s.cpuProf) mkdirSync(profDir, { recursive: true });
      const front: string[] = [];
      const fronts = bothFronts ? ['duofs-virtiofs', 'duofs-9p'] : wantDuofs.map((x) => x.name);
      if (fronts.includes('duofs-virtiofs'))
        front.push('--virtiofs-socket', sock('duofs-virtiofs'), '--tag', 'bench', ...(s.xattr ? ['--xattr'] : []));
      if (fronts.includes('duofs-9p')) front.push('--9p-socket', sock('duofs-9p'));
      progress.status('starting duofs');
      duofsProc = await startProc(
        'duofs',
        process.execPath,
        [
          ...SERVER_V8_FLAGS,
          ...(s.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-name=duofs-host.cpuprofile'] : []),
          join(repoRoot, 'bin', 'duofs.js'),
          'serve',
          '--shared-dir',
          exportTree,
          '--log-level',
          'warn',
          ...front,
          // A profile is written at exit to a host path, which a sandboxed server no longer sees.
          ...(s.cpuProf ? ['--sandbox', 'none'] : []),
          ...s.duofsArgs,
        ],
        fronts.map((x) => sock(x)),
      );
      procs.push(duofsProc);
    }
    const vfsds = new Map<string, Proc>();
    for (const name of ['virtiofsd', 'virtiofsd-t16']) {
      if (!servers.some((x) => x.name === name)) continue;
      const loader = join(labRoot, 'lib64', 'ld-linux-x86-64.so.2');
      progress.status(`starting ${name}`);
      const p = await startProc(
        name,
        loader,
        [
          '--library-path',
          join(labRoot, 'usr/lib/x86_64-linux-gnu'),
          join(labRoot, 'usr/libexec/virtiofsd'),
          `--socket-path=${sock(name)}`,
          `--shared-dir=${exportTree}`,
          '--sandbox=none',
          '--log-level=warn',
          ...(s.xattr ? ['--xattr'] : []),
          ...(name === 'virtiofsd-t16' ? ['--thread-pool-size=16'] : []),
        ],
        [sock(name)],
      );
      procs.push(p);
      vfsds.set(name, p);
      versions.virtiofsd = stamp!.virtiofsdVersion.replace(/^virtiofsd /, '');
    }
    if (servers.some((x) => x.name === 'diod')) {
      progress.status('starting diod');
      try {
        diod = await startDiod(exportTree, { socketPath: sock('diod') });
      } catch (e) {
        throw new BenchError(`diod did not start (install it with \`apt-get install diod\`): ${(e as Error).message}`);
      }
      versions.diod = diodVersion();
    }
    const pidOf = (name: string) => (): number | undefined =>
      name.startsWith('duofs-') ? duofsProc?.child.pid : name === 'diod' ? diod?.proc.pid : vfsds.get(name)?.child.pid;
    // 9P sessions are per connection; FUSE has one frontend per server (a second client shares its queue, as guest processes do).
    const connectTo = (name: string): Promise<Target> =>
      name === 'duofs-9p' || name === 'diod'
        ? ninepTarget(name, sock(name), pidOf(name), exportTree)
        : fuseTarget(name, sock(name), pidOf(name), exportTree);
    /** The reads' client and the getattrs' client of a head-of-line pair, or undefined when the pair does not apply. */
    const holPair = async (load: string, t: Target): Promise<{ reads: Target; probe: Target; how: string } | undefined> => {
      const proto = HOST_SERVERS.find((x) => x.name === t.server)!.protocol;
      const reuse = async (key: string, name: string): Promise<Target> => {
        const have = key === name ? targets.find((x) => x.server === name) : undefined;
        if (have) return have;
        if (!extra.has(key)) extra.set(key, await connectTo(name));
        return extra.get(key)!;
      };
      if (load === 'hol-same') {
        if (proto === 'virtiofs') return { reads: t, probe: t, how: 'reads and getattrs on the one vhost-user frontend (request queue 1)' };
        return { reads: t, probe: await reuse(`${t.server}/probe`, t.server), how: 'reads and getattrs on two 9P connections' };
      }
      if (!t.server.startsWith('duofs-')) return undefined;
      const other = proto === 'virtiofs' ? 'duofs-9p' : 'duofs-virtiofs';
      return {
        reads: await reuse(other, other),
        probe: t,
        how: `reads through ${other === 'duofs-9p' ? '9P' : 'virtio-fs'}, getattrs through ${proto === '9p' ? '9P' : 'virtio-fs'}, one duofs process`,
      };
    };
    for (const srv of servers) {
      progress.status(`connecting to ${srv.name}`);
      try {
        targets.push(await connectTo(srv.name));
      } catch (e) {
        dead.set(srv.name, `could not set up a session: ${(e as Error).message}`);
        progress.line(`!! ${srv.name}: ${dead.get(srv.name)}`);
      }
    }
    progress.line(
      `duofs bench --host: ${loads.length} loads x ${servers.length} servers x ${s.repeat} repetitions, ${s.seconds} s each, ${s.concurrency} requests in flight; tree ${benchTree}`,
    );
    const t0 = Date.now();
    const total = loads.length * s.repeat * targets.length;
    let done = 0;
    for (const load of loads) {
      if (load.name.startsWith('hol-')) {
        for (let rep = 0; rep < s.repeat; rep++) {
          const order = rep % 2 === 0 ? targets : [...targets].reverse();
          for (const t of order) {
            done++;
            const why = dead.get(t.server);
            if (why) {
              cells.push({ server: t.server, job: load.name, rep, ok: false, metrics: {}, error: why });
              continue;
            }
            try {
              const pair = await holPair(load.name, t);
              if (!pair) continue; // one protocol only: no cross pair
              progress.status(
                `[${done}/${total}] ${load.name} on ${t.server}, rep ${rep + 1}/${s.repeat} (${fmtDuration((Date.now() - t0) / 1000)})`,
              );
              if (rep === 0) await probeLatencies(pair.probe, Math.min(0.5, s.seconds / 4)); // warm up
              const metrics = await headOfLine(pair.reads, pair.probe, s.seconds, s.slowMs!);
              cells.push({ server: t.server, job: load.name, rep, ok: true, metrics, wallSecs: 2 * s.seconds, notes: [pair.how] });
              progress.line(
                `[${done}/${total}] ${load.name} on ${t.server} rep ${rep + 1}: getattr p50 ${fmtValue(metrics.p50Idle!)} -> ${fmtValue(metrics.p50Loaded!)} µs, ` +
                  `p99 ${fmtValue(metrics.p99Idle!)} -> ${fmtValue(metrics.p99Loaded!)} µs, ${fmtValue(metrics.loadIops!)} slow reads/s meanwhile`,
              );
            } catch (e) {
              const err = `${(e as Error).message}`.slice(0, 300);
              cells.push({ server: t.server, job: load.name, rep, ok: false, metrics: {}, error: err });
              progress.line(`[${done}/${total}] ${load.name} on ${t.server} rep ${rep + 1}: FAILED ${err}`);
            }
          }
        }
        continue;
      }
      for (const t of targets) {
        if (dead.has(t.server)) continue;
        try {
          await measure(t, load.name, Math.min(0.5, s.seconds / 4), s.concurrency); // warm up: page cache, JIT
        } catch (e) {
          dead.set(t.server, `${load.name} failed in warm-up: ${(e as Error).message}`);
        }
      }
      for (let rep = 0; rep < s.repeat; rep++) {
        const order = rep % 2 === 0 ? targets : [...targets].reverse();
        for (const t of order) {
          done++;
          progress.status(`[${done}/${total}] ${load.name} on ${t.server}, rep ${rep + 1}/${s.repeat} (${fmtDuration((Date.now() - t0) / 1000)})`);
          const why = dead.get(t.server);
          if (why) {
            cells.push({ server: t.server, job: load.name, rep, ok: false, metrics: {}, error: why });
            continue;
          }
          try {
            const m = await measure(t, load.name, s.seconds, s.concurrency);
            const metrics: Record<string, number> = { ops: m.ops };
            if (load.metrics.some((x) => x.key === 'mbps')) metrics.mbps = (m.ops * (load.name.endsWith('1m') ? MIB : 4096)) / 1e6;
            if (m.cpuUsPerOp !== undefined) metrics.cpuUsPerOp = m.cpuUsPerOp;
            const cell: CellResult = { server: t.server, job: load.name, rep, ok: true, metrics, wallSecs: s.seconds };
            if (load.name === 'create-unlink' && t.notes().length) cell.notes = t.notes();
            cells.push(cell);
            progress.line(
              `[${done}/${total}] ${load.name} on ${t.server} rep ${rep + 1}: ${fmtValue(m.ops)} ops/s${metrics.mbps !== undefined ? `, ${fmtValue(metrics.mbps)} MB/s` : ''}${m.cpuUsPerOp !== undefined ? `, ${fmtValue(m.cpuUsPerOp)} µs CPU/op` : ''}`,
            );
          } catch (e) {
            const err = `${(e as Error).message}`.slice(0, 300);
            cells.push({ server: t.server, job: load.name, rep, ok: false, metrics: {}, error: err });
            progress.line(`[${done}/${total}] ${load.name} on ${t.server} rep ${rep + 1}: FAILED ${err}`);
            const proc = t.server.startsWith('duofs') ? duofsProc : vfsds.get(t.server);
            if (proc && proc.child.exitCode !== null) dead.set(t.server, `the server exited (${proc.child.exitCode}): ${proc.out().slice(-300)}`);
          }
        }
      }
    }
    for (const srv of servers) {
      if (!targets.some((t) => t.server === srv.name)) {
        for (const load of loads)
          for (let rep = 0; rep < s.repeat; rep++)
            cells.push({ server: srv.name, job: load.name, rep, ok: false, metrics: {}, error: dead.get(srv.name) ?? 'not run' });
      }
    }
  } finally {
    progress.done();
    for (const t of [...targets, ...extra.values()]) await t.close().catch(() => undefined);
    for (const p of procs) await p.stop(p === duofsProc ? 60_000 : 5000);
    await diod?.stop(); // left running, it kept this process alive after the table was written
    await slowStore?.stop(); // before the removal below, which would otherwise go through the mount
    rmSync(base, { recursive: true, force: true });
    if (s.sharedDir) spawnSync('rm', ['-rf', '--one-file-system', benchTree]);
  }
  if (slow) {
    notes.push(
      `Slow storage (--slow-storage ${s.slowMs}): the servers export a FUSE mount of the tree served by a second duofs (serve --fuse-mount --debug-io-latency-ms ${s.slowMs} --cache never): every read, write and fsync a server issues starts ${s.slowMs} ms late, for every server alike, and nothing is cached by the host. ` +
        'Head-of-line jobs: the getattr client runs alone for the measured time (unloaded), then again while another client keeps 16 reads of 4 KiB at spread offsets in flight (loaded); p50/p99 are of the individual getattr latencies, 9P getattr = walk + getattr + clunk of the file. virtiofsd-t16 is virtiofsd with --thread-pool-size=16; with slow storage the virtio-fs ratios are against it.',
    );
  }
  if (s.cpuProf && existsSync(profFile)) profiles.push({ server: 'duofs (both front-ends)', file: profFile });
  notes.push(
    `Host-side, no guest: FUSE requests through the project's vhost-user test frontend (guest RAM in a memfd, split virtqueues, eventfds) on request queue 1, 1 MiB reads and writes with one 4 KiB descriptor per page in an indirect table, as a guest kernel lays them out; 9P requests from the project's 9P client over unix sockets (msize up to 1 MiB + 4 KiB). ${s.concurrency} requests in flight; each cell runs ${s.seconds} s after a warm-up, the order of servers alternates between repetitions.`,
    'duofs serves both front-ends from one process (loads run one at a time). virtiofsd runs with --sandbox=none and its default thread pool (none); diod with -n -N (no auth, numeric ids). "server CPU" is user+system time of the server process per operation (from /proc), independent of the client.',
    'The client runs in this Node process and costs CPU too: on a 2-core machine a fast server is partly limited by the client, which compresses the ratios toward 1.',
    'Reads hit the host page cache (the files were just written); the figures are request-processing rates, not disk rates. 1 MiB reads/writes over 9P are split into msize-sized requests sent at once.',
  );
  const machine = watch.finish();
  const result: BenchResult = {
    format: RESULT_FORMAT,
    kind: 'host',
    startedAt,
    finishedAt: new Date().toISOString(),
    command: s.command,
    machine: { ...machineBasics(), ...machine },
    versions,
    settings: {
      ...(slow ? { slowStorageMs: s.slowMs! } : {}),
      seconds: s.seconds,
      repeat: s.repeat,
      concurrency: s.concurrency,
      xattr: s.xattr,
      ...(s.duofsArgs.length ? { duofsArgs: s.duofsArgs.join(' ') } : {}),
    },
    servers: (slow ? slowReferences : <T>(x: T) => x)(
      servers.map((d) => {
        const mine = cells.filter((c) => c.server === d.name);
        const ok = mine.filter((c) => c.ok).length;
        const error = dead.get(d.name) ?? mine.find((c) => !c.ok)?.error;
        return {
          ...d,
          status: ok === mine.length ? ('ok' as const) : ok === 0 ? ('failed' as const) : ('partial' as const),
          ...(ok < mine.length && error ? { error } : {}),
        };
      }),
    ),
    jobs: loads.map((l) => ({ name: l.name, title: l.title, metrics: l.metrics })),
    cells,
    notes,
  };
  return { result, profiles };
}
