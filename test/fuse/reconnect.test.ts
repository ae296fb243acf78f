// Serving on: duofs runs as a child process (the CLI, as an operator starts
// it); a guest connects, takes references, handles and locks, and goes
// away without cleaning up (QEMU killed). duofs accepts the next
// connection, a new INIT works, and everything the first guest held is
// released: the daemon's fd count (/proc/PID/fd) returns to its baseline,
// boot after boot, and its locks are gone. A daemon with a small fd limit
// still lists every name of a large directory through READDIRPLUS.
import { afterEach, describe, expect, jest, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { F_WRLCK, ROOT, errnoOf, type Dirent, type DirentPlus } from './client.js';
import { FuseClient } from './client.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { repoRoot } from '../support/daemon.js';
import { sleep } from './fixture.js';

jest.setTimeout(20_000);

interface Child {
  proc: ChildProcess;
  dir: string;
  sock: string;
  log(): string;
  fds(): number;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Starts `duofs serve` (dist/ is built by jest's globalSetup), optionally under `ulimit -n`. */
async function startChild(o: { nofile?: number; extra?: string[] } = {}): Promise<Child> {
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-fuse-child-')));
  const dir = path.join(base, 'export');
  fs.mkdirSync(dir);
  const sock = path.join(base, 'vfs.sock');
  const args = [
    path.join(repoRoot, 'bin/duofs.js'),
    'serve',
    '--shared-dir',
    dir,
    '--virtiofs-socket',
    sock,
    '--tag',
    'child',
    '--num-request-queues',
    '2',
    '--log-level',
    'warn',
    '--sandbox',
    'none',
    ...(o.extra ?? []),
  ]; // its fds are counted in /proc/PID
  const proc = o.nofile
    ? spawn('/bin/bash', ['-c', `ulimit -n ${o.nofile} && exec "$0" "$@"`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(base, { recursive: true, force: true });
  });
  for (let i = 0; i < 500 && !fs.existsSync(sock); i++) {
    if (proc.exitCode !== null) break;
    await sleep(20);
  }
  if (!fs.existsSync(sock)) throw new Error(`duofs did not start:\n${out}`);
  return { proc, dir, sock, log: () => out, fds: () => fs.readdirSync(`/proc/${proc.pid}/fd`).length };
}

async function connect(sock: string): Promise<VhostUserFrontend> {
  const fe = await VhostUserFrontend.connect({ socketPath: sock });
  cleanups.push(() => fe.close()); // also when a test fails half-way: a live frontend keeps jest from exiting
  return fe;
}

async function boot(sock: string): Promise<{ fe: VhostUserFrontend; c: FuseClient }> {
  const fe = await connect(sock);
  const c = new FuseClient(fe);
  await c.doInit();
  return { fe, c };
}

/** Polls until `f()` is true or `ms` pass; returns the last value of `f()`. */
async function until(f: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!f() && Date.now() < end) await sleep(20);
  return f();
}

describe('reconnect', () => {
  test('boot after boot: references, handles and locks of a vanished guest are released; the fd count returns to its baseline', async () => {
    const d = await startChild();
    fs.mkdirSync(path.join(d.dir, 'many'));
    for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(d.dir, 'many', `f${i}`), `file ${i}`);
    fs.writeFileSync(path.join(d.dir, 'locked'), 'lock');
    await sleep(100);
    const baseline = d.fds();
    let firstNode = 0n;
    for (let bootNo = 1; bootNo <= 3; bootNo++) {
      const { fe, c } = await boot(d.sock);
      // A guest held by a previous boot's lock would block here: the lock must be gone.
      const lf = await c.lookup(ROOT, 'locked');
      const lh = await c.open(lf.nodeid, 2);
      await c.setlk(lf.nodeid, lh.fh, 1n, { type: F_WRLCK });
      if (bootNo > 1) expect(await errnoOf(c.getattr(firstNode))).toBe('ESTALE');
      const many = await c.lookup(ROOT, 'many');
      firstNode = many.nodeid;
      const fhs: bigint[] = [];
      for (let i = 0; i < 200; i++) {
        const e = await c.lookup(many.nodeid, `f${i}`);
        if (i < 50) fhs.push((await c.open(e.nodeid, i % 2 ? 0 : 2)).fh);
      }
      const dh = await c.opendir(many.nodeid);
      const plus = (await c.readdirAll(dh.fh, { plus: true })) as DirentPlus[];
      expect(plus.length).toBe(202);
      for (let i = 0; i < 5; i++) await c.opendir(ROOT);
      // A SETLKW left waiting when the guest goes.
      void c.setlkw(lf.nodeid, lh.fh, 2n, { type: F_WRLCK }, 0, { timeoutMs: 0 }).reply.catch(() => undefined);
      await sleep(20);
      expect(d.fds()).toBeGreaterThan(baseline + 250);
      fe.close(); // QEMU killed: no FORGET, no RELEASE, no DESTROY
      expect(await until(() => d.fds() === baseline, 3000)).toBe(true);
    }
    expect(d.proc.exitCode).toBeNull();
    expect(d.log()).not.toMatch(/"level":(50|60)/);
  });

  test('DESTROY then disconnect, and a disconnect before INIT: the next guest is served', async () => {
    const d = await startChild();
    fs.writeFileSync(path.join(d.dir, 'f'), 'hello');
    const g1 = await boot(d.sock);
    await g1.c.lookup(ROOT, 'f');
    await g1.c.destroy();
    g1.fe.close();
    const g2fe = await connect(d.sock);
    g2fe.close();
    const g3 = await boot(d.sock);
    const e = await g3.c.lookup(ROOT, 'f');
    const o = await g3.c.open(e.nodeid, 0);
    expect((await g3.c.read(o.fh, 0n, 10)).toString()).toBe('hello');
    g3.fe.close();
  });
});

describe('a daemon short of file descriptors', () => {
  test('READDIRPLUS of 600 distinct inodes under `ulimit -n 256` still lists every name', async () => {
    const d = await startChild({ nofile: 256 });
    const many = path.join(d.dir, 'many');
    fs.mkdirSync(many);
    for (let i = 0; i < 600; i++) fs.writeFileSync(path.join(many, `n${i}`), '');
    const { fe, c } = await boot(d.sock);
    const dir = await c.lookup(ROOT, 'many');
    // Plain READDIR needs no fd per entry: the reference listing.
    const h2 = await c.opendir(dir.nodeid);
    const plain = (await c.readdirAll(h2.fh, { size: 4096 })) as Dirent[];
    expect(plain.length).toBe(602);
    await c.releasedir(h2.fh);
    const h = await c.opendir(dir.nodeid);
    const plus = (await c.readdirAll(h.fh, { plus: true, size: 4096 })) as DirentPlus[];
    await c.releasedir(h.fh);
    const names = new Set(plus.map((x) => x.name.toString()));
    const missing = Array.from({ length: 600 }, (_, i) => `n${i}`).filter((n) => !names.has(n));
    expect({ listed: plus.length, missing: missing.length }).toEqual({ listed: 602, missing: 0 });
    // Giving the references back makes room again.
    await c.batchForget(plus.filter((x) => x.entry.nodeid !== 0n).map((x) => [x.entry.nodeid, 1n] as [bigint, bigint]));
    expect((await c.lookup(dir.nodeid, 'n599')).attr.size).toBe(0n);
    fe.close();
    expect(d.proc.exitCode).toBeNull();
  });
});
