// The /dev/fuse reader yields under a flood: while a process keeps the
// kernel's FUSE queue full (threads opening and closing files on the
// mount), the same daemon goes on answering a 9P client. Before, the reader
// read /dev/fuse until it was empty, which under a flood is never, and
// every other client waited until the flood was over.
import { afterEach, beforeEach, expect, jest, test } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, type Daemon } from '../support/daemon.js';
import { P9Client } from '../p9/client.js';

jest.setTimeout(60_000);

const FLOOD_MS = 3000;
const THREADS = 64;
// Runs in a child: THREADS worker threads, each opening and closing files
// on the mount in a tight loop (OPEN, FLUSH, RELEASE each time), all
// started at once for FLOOD_MS. Synchronous calls on threads of their own
// refill the kernel's queue about as fast as the daemon empties it.
const FLOOD = `
import { Worker } from 'node:worker_threads';
const [dir, ms, threads] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const sab = new SharedArrayBuffer(16);
const gate = new Int32Array(sab, 0, 2); // [go, ready]
const end = new Float64Array(sab, 8, 1);
const body = \`
  import fs from 'node:fs';
  import { workerData, parentPort } from 'node:worker_threads';
  const { dir, sab, i } = workerData;
  const gate = new Int32Array(sab, 0, 2);
  const end = new Float64Array(sab, 8, 1);
  Atomics.add(gate, 1, 1);
  Atomics.wait(gate, 0, 0);
  let ops = 0;
  while (Date.now() < end[0]) { fs.closeSync(fs.openSync(dir + '/f' + ((i + ops) % 16), 'r')); ops++; }
  parentPort.postMessage(ops);
\`;
const counts = Array.from({ length: threads }, (_, i) => new Promise((resolve, reject) => {
  const w = new Worker(body, { eval: true, workerData: { dir, sab, i } });
  w.once('message', resolve);
  w.once('error', reject);
}));
while (Atomics.load(gate, 1) < threads) await new Promise((r) => setTimeout(r, 10));
end[0] = Date.now() + ms;
Atomics.store(gate, 0, 1);
Atomics.notify(gate, 0);
console.log('started', end[0]);
console.log('ops', (await Promise.all(counts)).reduce((a, b) => a + b, 0));
`;

let tmp: string;
let daemon: Daemon | undefined;

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join('/var/tmp', 'duofs-fuse-fair-'));
  for (const d of ['export', 'mnt']) fs.mkdirSync(path.join(tmp, d));
  for (let i = 0; i < 16; i++) fs.writeFileSync(path.join(tmp, 'export', `f${i}`), `file ${i}\n`);
});

/** Runs a command to its end (or kills it after `ms`); its output as text. */
function run(cmd: string, args: string[], ms: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    p.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const t = setTimeout(() => p.kill('SIGKILL'), ms);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  fs.rmSync(tmp, { recursive: true, force: true });
});

const asRoot = process.getuid?.() === 0 && fs.existsSync('/dev/fuse') ? test : test.skip;

asRoot('the /dev/fuse reader yields under a flood: a 9P client of the same daemon is answered during it', async () => {
  const exp = path.join(tmp, 'export');
  const mnt = path.join(tmp, 'mnt');
  const sock = path.join(tmp, '9p.sock');
  daemon = await startDaemon(['--shared-dir', exp, '--fuse-mount', mnt, '--9p-socket', sock, '--log-level', 'warn'], { mount: mnt, sockets: [sock] });
  const { c, root } = await P9Client.session(sock, { aname: exp, timeoutMs: 30_000 });
  try {
    const child = spawn(process.execPath, ['--input-type=module', '-e', FLOOD, mnt, String(FLOOD_MS), String(THREADS)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const started = new Promise<number>((r) =>
      child.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        const m = /started (\d+)/.exec(out);
        if (m) r(Number(m[1]));
      }),
    );
    const end = await Promise.race([started, exited.then(() => 0)]);
    // 9P requests one after the other; those answered before the flood's end
    // (the child's clock is ours) are counted.
    let during = 0;
    while (Date.now() < end) {
      await c.getattr(root);
      if (Date.now() < end) during++;
    }
    expect(await exited).toBe(0);
    const ops = Number(/ops (\d+)/.exec(out)?.[1] ?? 0);
    // The flood was real (each op is three FUSE requests) ...
    expect(ops).toBeGreaterThan(1000);
    // ... and the 9P client went on being answered during it.
    expect(during).toBeGreaterThan(20);
  } finally {
    await c.close();
  }
});

// Direct I/O (--cache never): every read and write reaches the daemon, from
// more threads than requests the reader keeps in flight, each also syncing
// (an fsync runs on the engine's pool and finishes later). Request buffers
// are reused and replies leave out of order, so a buffer handed back too
// early shows as wrong bytes. (On a fast disk the requests in flight may
// stay below the bound; on a slow one the reader must read on as they finish.)
const RW = `
import os, random, sys, threading
mnt, threads, rounds, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
content = [random.Random(f).randbytes(size) for f in range(8)]
bad = []
def work(t):
    r = random.Random(1000 + t)
    fds = [os.open(f'{mnt}/r{f}', os.O_RDONLY) for f in range(8)]
    w = os.open(f'{mnt}/w{t}', os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    mine = random.Random(2000 + t).randbytes(rounds * 4096)
    for i in range(rounds):
        f, off = r.randrange(8), r.randrange(size - 65536)
        n = r.randrange(1, 65536)
        got = os.pread(fds[f], n, off)
        if got != content[f][off:off + n]:
            bad.append(f'thread {t}: read r{f} at {off}+{n}: wrong bytes')
        os.pwrite(w, mine[i * 4096:(i + 1) * 4096], i * 4096)
        os.fsync(w)
    for fd in fds + [w]:
        os.close(fd)
ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print('\\n'.join(bad[:10]) or 'ok')
`;

asRoot('many readers and writers at once: reused request buffers carry the right bytes, and every request is answered', async () => {
  const exp = path.join(tmp, 'export');
  const mnt = path.join(tmp, 'mnt');
  const SIZE = 1 << 20;
  const THREADS_RW = 96;
  const ROUNDS = 40;
  const gen = spawnSync('python3', [
    '-c',
    `
import random, sys
for f in range(8):
    open(f'${exp}/r{f}', 'wb').write(random.Random(f).randbytes(${SIZE}))
`,
  ]);
  expect(gen.status).toBe(0);
  daemon = await startDaemon(['--shared-dir', exp, '--fuse-mount', mnt, '--cache', 'never', '--log-level', 'warn'], { mount: mnt });
  // Not spawnSync: this process must go on reading the daemon's log meanwhile.
  const r = await run('python3', ['-c', RW, mnt, String(THREADS_RW), String(ROUNDS), String(SIZE)], 40_000);
  expect(r.stderr).toBe('');
  expect(r.stdout.trim()).toBe('ok');
  const want = (t: number) =>
    spawnSync('python3', ['-c', `import random, sys; sys.stdout.buffer.write(random.Random(${2000 + t}).randbytes(${ROUNDS * 4096}))`]).stdout;
  for (const t of [0, 47, 95]) expect(fs.readFileSync(path.join(exp, `w${t}`)).equals(want(t))).toBe(true);
  expect(daemon.stderr()).not.toMatch(/"level":(40|50)/);
});
