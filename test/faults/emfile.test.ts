// Fault injection: the server runs out of file descriptors. duofs runs as
// a child process (the CLI); once it is serving, prlimit lowers its
// RLIMIT_NOFILE to a few dozen above what it holds. A 9P client then
// creates and writes files, holding every fid, until the server refuses:
// the refusal must reach the client as EMFILE (not EIO, not a dropped
// connection), every acknowledged write must be on disk, and once the fids
// are clunked both protocols serve again (a new 9P session and a new
// virtio-fs guest create and write a file).
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureBuilt, startCli, type CliServer } from '../p9/harness.js';
import { P9Client } from '../p9/client.js';
import { O } from '../p9/proto.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { FuseClient, ROOT } from '../fuse/client.js';

jest.setTimeout(120_000);
let base: string;
let exp: string;
let srv: CliServer;

beforeAll(async () => {
  ensureBuilt();
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-emfile-')));
  exp = path.join(base, 'export');
  fs.mkdirSync(exp);
  srv = await startCli(exp, {
    socketPath: path.join(base, '9p.sock'),
    extraArgs: ['--virtiofs-socket', path.join(base, 'vfs.sock'), '--sandbox', 'none'],
  }); // prlimit and /proc/PID/fd act on the serving process itself
});

afterAll(async () => {
  await srv?.close();
  fs.rmSync(base, { recursive: true, force: true });
});

test('out of fds: the client gets EMFILE, acknowledged writes are kept, and both protocols serve once fids are clunked', async () => {
  // A virtio-fs guest connected before the squeeze (its memory and eventfds are fds too).
  const early = await VhostUserFrontend.connect({ socketPath: path.join(base, 'vfs.sock') });
  const earlyFuse = new FuseClient(early);
  await earlyFuse.doInit();
  const pid = srv.proc.pid!;
  const held = fs.readdirSync(`/proc/${pid}/fd`).length;
  const limit = held + 40;
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`]);
  const { c, root } = await P9Client.session({ path: path.join(base, '9p.sock') }, { aname: exp });
  const acked = new Map<string, string>();
  const fids: number[] = [];
  let error = '';
  for (let i = 0; i < 200 && !error; i++) {
    const f = c.newFid();
    try {
      await c.walk(root, f, []);
      fids.push(f);
      await c.lcreate(f, `f${i}`, O.RDWR | O.CREAT | O.EXCL, 0o644, 0);
      const data = `data ${i}\n`;
      expect(await c.write(f, 0, Buffer.from(data))).toBe(data.length);
      acked.set(`f${i}`, data);
    } catch (e) {
      error = (e as { code?: string }).code ?? String(e);
    }
  }
  expect(error).toBe('EMFILE');
  expect(acked.size).toBeGreaterThan(5);
  for (const [n, data] of acked) expect(fs.readFileSync(path.join(exp, n), 'utf8')).toBe(data);
  // The FUSE guest's CREATE gets the errno too.
  const fuseErr = await earlyFuse.create(ROOT, 'squeezed', O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 }).then(
    () => 'created',
    (e: { code?: string }) => e.code,
  );
  expect(fuseErr).toBe('EMFILE');
  early.close();
  for (const f of fids) await c.clunk(f).catch(() => {});

  // Serving again: a new 9P session and a new virtio-fs guest.
  const s2 = await P9Client.session({ path: path.join(base, '9p.sock') }, { aname: exp });
  const g = s2.c.newFid();
  await s2.c.walk(s2.root, g, []);
  await s2.c.lcreate(g, 'after9p', O.RDWR | O.CREAT | O.EXCL, 0o644, 0);
  expect(await s2.c.write(g, 0, Buffer.from('ok'))).toBe(2);
  await s2.c.close();
  const fe = await VhostUserFrontend.connect({ socketPath: path.join(base, 'vfs.sock') });
  try {
    const fuse = new FuseClient(fe);
    await fuse.doInit();
    const { open } = await fuse.create(ROOT, 'afterfuse', O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 });
    expect(await fuse.write(open.fh, 0n, Buffer.from('ok'))).toBe(2);
  } finally {
    fe.close();
  }
  expect(fs.readFileSync(path.join(exp, 'afterfuse'), 'utf8')).toBe('ok');
  await c.close();
  expect(srv.log()).not.toMatch(/unexpectedly/);
});

test('out of fds at accept: a new 9P client is turned away, a virtio-fs frontend waits without a spin, and both are served once fds are free', async () => {
  const pid = srv.proc.pid!;
  const logBefore = srv.log().length;
  // The last test's connections may still be closing: wait until the server's fds are steady,
  // so none is freed after the squeeze (a freed fd would let the next client in).
  let held = fs.readdirSync(`/proc/${pid}/fd`).length;
  for (let steady = 0; steady < 3; ) {
    await new Promise((r) => setTimeout(r, 150));
    const n = fs.readdirSync(`/proc/${pid}/fd`).length;
    steady = n === held ? steady + 1 : 0;
    held = n;
  }
  const limit = held + 30;
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`]);
  const { c, root } = await P9Client.session({ path: path.join(base, '9p.sock') }, { aname: exp });
  // Hold fids until the server is out of fds.
  const fids: number[] = [];
  for (let i = 0; i < 200; i++) {
    const f = c.newFid();
    try {
      await c.walk(root, f, []);
      fids.push(f);
      await c.lcreate(f, `g${i}`, O.RDWR | O.CREAT | O.EXCL, 0o644, 0);
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EMFILE');
      break;
    }
  }
  // A create needs more than one fd, so one may still be free: take the rest one at a time
  // (an open of a file the server already holds costs exactly one).
  for (let i = 0; i < 50; i++) {
    const f = c.newFid();
    try {
      await c.walk(root, f, ['g0']);
      fids.push(f);
      await c.lopen(f, O.RDONLY);
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EMFILE');
      break;
    }
  }
  // A 9P client now: libuv accepts and closes it (it cannot be served), the daemon lives on.
  const turnedAway = await P9Client.session({ path: path.join(base, '9p.sock') }, { aname: exp }).then(
    async (s) => {
      await s.c.close();
      return 'served';
    },
    () => 'turned away',
  );
  expect(turnedAway).toBe('turned away');
  // A virtio-fs frontend waits in the backlog: the server must not spin on the readable listener.
  const cpu0 = cpuTicks(pid);
  let connected = false;
  const pending = VhostUserFrontend.connect({ socketPath: path.join(base, 'vfs.sock') }).then((fe) => {
    connected = true;
    return fe;
  });
  await new Promise((r) => setTimeout(r, 1500));
  expect(connected).toBe(false);
  const spent = cpuTicks(pid) - cpu0;
  expect(spent).toBeLessThan(100); // clock ticks (1/100 s): a spinning accept loop burns ~150 in 1.5 s
  const failures =
    srv
      .log()
      .slice(logBefore)
      .match(/vhost-user: accept failed/g) ?? [];
  expect(failures.length).toBe(1); // said once, not once per poll
  for (const f of fids) await c.clunk(f).catch(() => {});
  const fe = await pending;
  try {
    const fuse = new FuseClient(fe);
    await fuse.doInit();
    const { open } = await fuse.create(ROOT, 'after-accept', O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 });
    expect(await fuse.write(open.fh, 0n, Buffer.from('ok'))).toBe(2);
  } finally {
    fe.close();
  }
  const s2 = await P9Client.session({ path: path.join(base, '9p.sock') }, { aname: exp });
  await s2.c.close();
  await c.close();
  expect(srv.proc.exitCode).toBeNull();
});

/** utime + stime of a process, in clock ticks. */
function cpuTicks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}
