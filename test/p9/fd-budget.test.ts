// One client must not starve the others of file descriptors (issue 17,
// defect 4). duofs runs as the CLI under a small RLIMIT_NOFILE (`ulimit -n`
// sets soft and hard) serving 9P over TCP and virtio-fs on a vhost-user
// socket. A hostile 9P client (or guest) opens all it may: it gets EMFILE
// (Rlerror / -EMFILE) and one log line naming it, while every other
// session, a brand-new connection and a virtio-fs guest keep being served.
// Walk-only fids hold no fd of their own: thousands of them work under the
// same small limit, with the daemon's fd count staying bounded.
import { afterEach, describe, expect, jest, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { P9Client, P9Error } from './client.js';
import { ERRNO, O } from './proto.js';
import { FuseClient, ROOT, errnoOf } from '../fuse/client.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { repoRoot } from '../support/daemon.js';
import { freePort, waitListening } from '../support/diod.js';

jest.setTimeout(60_000);

const NOFILE = 256;

interface Child {
  proc: ChildProcess;
  dir: string;
  tcp: string;
  vfs: string;
  log(): string;
  fds(): number;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** `duofs serve` under `ulimit -n NOFILE`, 9P on TCP and virtio-fs on a socket; `setup` fills the export first. */
async function startChild(setup: (dir: string) => void, extra: string[] = [], wrap = ''): Promise<Child> {
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-fd-budget-')));
  const dir = path.join(base, 'export');
  fs.mkdirSync(dir);
  setup(dir);
  const vfs = path.join(base, 'vfs.sock');
  const port = await freePort();
  const args = [
    path.join(repoRoot, 'bin/duofs.js'),
    'serve',
    '--shared-dir',
    dir,
    '--9p-tcp',
    `127.0.0.1:${port}`,
    '--virtiofs-socket',
    vfs,
    '--log-level',
    'info',
    '--sandbox',
    'none',
    ...extra,
  ]; // fds() counts the serving process's own
  const proc = spawn('/bin/bash', ['-c', `ulimit -n ${NOFILE} && exec ${wrap} "$0" "$@"`, process.execPath, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
      proc.kill('SIGKILL');
      await exited;
    }
    fs.rmSync(base, { recursive: true, force: true });
  });
  await waitListening({ host: '127.0.0.1', port }, 20_000, proc);
  for (let i = 0; i < 500 && !fs.existsSync(vfs); i++) await new Promise((r) => setTimeout(r, 20));
  return { proc, dir, tcp: `127.0.0.1:${port}`, vfs, log: () => out, fds: () => fs.readdirSync(`/proc/${proc.pid}/fd`).length };
}

async function session9p(addr: string): Promise<{ c: P9Client; root: number }> {
  const s = await P9Client.session(addr, { timeoutMs: 10_000 });
  cleanups.push(() => s.c.close());
  return s;
}

async function guest(sock: string): Promise<FuseClient> {
  const fe = await VhostUserFrontend.connect({ socketPath: sock });
  cleanups.push(() => fe.close());
  const c = new FuseClient(fe);
  await c.doInit();
  return c;
}

/** Walks to root/names..., opens read-only, reads `count` bytes; the fid is clunked again. */
async function readVia(c: P9Client, root: number, names: string[], count = 64): Promise<string> {
  const fid = c.newFid();
  const qids = await c.walk(root, fid, names);
  if (qids.length !== names.length) return `partial walk (${qids.length} of ${names.length} names)`;
  await c.lopen(fid, O.RDONLY);
  const data = (await c.read(fid, 0, count)).toString();
  await c.clunk(fid);
  return data;
}

async function readViaFuse(g: FuseClient, name: string): Promise<string> {
  const e = await g.lookup(ROOT, name);
  const h = await g.open(e.nodeid, 0);
  const data = (await g.read(h.fh, 0n, 64)).toString();
  await g.release(h.fh);
  return data;
}

function errnoOfP9(e: unknown): string {
  if (e instanceof P9Error) return Object.keys(ERRNO).find((k) => ERRNO[k] === e.errno) ?? String(e.errno);
  return String(e);
}

const populate =
  (n: number) =>
  (dir: string): void => {
    fs.writeFileSync(path.join(dir, 'shared'), 'hello');
    fs.mkdirSync(path.join(dir, 'many'));
    for (let i = 0; i < n; i++) fs.writeFileSync(path.join(dir, 'many', `f${i}`), `file ${i}`);
  };

/** Lines of the daemon's log that report a session over its open-file budget. */
const budgetLines = (log: string): string[] => log.split('\n').filter((l) => /open-file budget/.test(l) && /"level":40/.test(l));

describe('fd budgets: one session cannot take the fds the others need', () => {
  test('a 9P client that opens all it may gets EMFILE; other clients, a new connection and a virtio-fs guest are served', async () => {
    const d = await startChild(populate(400));
    const other = await session9p(d.tcp);
    const g = await guest(d.vfs);
    const hog = await session9p(d.tcp);
    let opened = 0;
    let refusal = '';
    const open: number[] = [];
    for (let i = 0; i < 400 && !refusal; i++) {
      const fid = hog.c.newFid();
      // A walk that fails at its second name is a partial Rwalk (the new fid stays unbound).
      if ((await hog.c.walk(hog.root, fid, ['many', `f${i}`])).length !== 2) {
        refusal = 'partial walk';
        break;
      }
      try {
        await hog.c.lopen(fid, O.RDONLY);
        open.push(fid);
        opened++;
      } catch (e) {
        refusal = errnoOfP9(e);
      }
    }
    // The hog is refused by its budget, on its own connection, with EMFILE...
    expect(refusal).toBe('EMFILE');
    expect(hog.c.isClosed).toBe(false);
    expect(opened).toBeGreaterThan(8);
    // ...and everyone else is not.
    expect(await readVia(other.c, other.root, ['shared'])).toBe('hello');
    expect(await readVia(other.c, other.root, ['many', 'f399'])).toBe('file 399');
    const fresh = await session9p(d.tcp);
    expect(await readVia(fresh.c, fresh.root, ['many', 'f398'])).toBe('file 398');
    expect(await readViaFuse(g, 'shared')).toBe('hello');
    // One warn line names the hog (its TCP peer), however often it is refused.
    for (let i = 0; i < 20; i++) {
      const fid = hog.c.newFid();
      await hog.c.walk(hog.root, fid, ['shared']);
      expect(
        errnoOfP9(
          await hog.c.lopen(fid, O.RDONLY).then(
            () => 'opened',
            (e: unknown) => e,
          ),
        ),
      ).toBe('EMFILE');
    }
    // Closing one makes room for one, for the hog too.
    await hog.c.clunk(open.pop()!);
    expect(await readVia(hog.c, hog.root, ['shared'])).toBe('hello');
    const lines = budgetLines(d.log());
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`tcp:127.0.0.1:${hog.c.sock.localPort}`);
    expect(d.fds()).toBeLessThan(NOFILE);
    expect(d.proc.exitCode).toBeNull();
  });

  test('a virtio-fs guest that opens all it may gets -EMFILE; 9P clients are still served', async () => {
    const d = await startChild(populate(400));
    const p9 = await session9p(d.tcp);
    const g = await guest(d.vfs);
    const many = await g.lookup(ROOT, 'many');
    let refusal = '';
    let opened = 0;
    for (let i = 0; i < 400 && !refusal; i++) {
      const e = await g.lookup(many.nodeid, `f${i}`);
      const r = await errnoOf(g.open(e.nodeid, 0));
      if (r === 'OK') opened++;
      else refusal = r;
    }
    expect(refusal).toBe('EMFILE');
    expect(opened).toBeGreaterThan(8);
    expect(await readVia(p9.c, p9.root, ['many', 'f0'])).toBe('file 0');
    const fresh = await session9p(d.tcp);
    expect(await readVia(fresh.c, fresh.root, ['shared'])).toBe('hello');
    expect(budgetLines(d.log())).toHaveLength(1);
    expect(budgetLines(d.log())[0]).toContain('virtiofs:');
  });

  test('3000 walk-only fids (2500 distinct files) under ulimit -n 256: all succeed, the fd count stays bounded', async () => {
    const d = await startChild(populate(2500));
    const { c, root } = await session9p(d.tcp);
    const fids: number[] = [];
    let maxFds = 0;
    // Batches of 500 arrive together: more new inodes in one go than the whole fd limit.
    for (let i = 0; i < 3000; i += 500) {
      const batch = Array.from({ length: 500 }, (_, k) => i + k);
      const got = await Promise.all(
        batch.map(async (k) => {
          const fid = c.newFid();
          try {
            // A walk that fails at its second name is a partial Rwalk, not an error.
            const qids = await c.walk(root, fid, ['many', `f${k % 2500}`]);
            return qids.length === 2 ? fid : `fid #${k}: partial walk`;
          } catch (e) {
            return `fid #${k}: ${errnoOfP9(e)}`;
          }
        }),
      );
      const failed = got.filter((x) => typeof x === 'string');
      expect(failed.slice(0, 3)).toEqual([]);
      fids.push(...(got as number[]));
      maxFds = Math.max(maxFds, d.fds());
    }
    expect(fids).toHaveLength(3000);
    expect(maxFds).toBeLessThan(NOFILE);
    // The first fids' inodes gave their fds up long ago; they still work.
    expect((await c.getattr(fids[0]!)).size).toBe(BigInt('file 0'.length));
    await c.lopen(fids[1]!, O.RDONLY);
    expect((await c.read(fids[1]!, 0, 64)).toString()).toBe('file 1');
    // Another client still gets its fids and files.
    const other = await session9p(d.tcp);
    expect(await readVia(other.c, other.root, ['many', 'f2499'])).toBe('file 2499');
  });

  test('the fid count is a separate limit (--9p-max-fids): past it Twalk gets EMFILE, other sessions are unaffected', async () => {
    const d = await startChild(populate(10), ['--9p-max-fids', '50']);
    const { c, root } = await session9p(d.tcp);
    const results: string[] = [];
    for (let i = 0; i < 60; i++) {
      results.push(
        await c.walk(root, c.newFid(), ['shared']).then(
          () => 'ok',
          (e: unknown) => errnoOfP9(e),
        ),
      );
    }
    // The attach fid counts: 49 more fit.
    expect(results.filter((r) => r === 'ok')).toHaveLength(49);
    expect(new Set(results.slice(49))).toEqual(new Set(['EMFILE']));
    expect(
      d
        .log()
        .split('\n')
        .filter((l) => l.includes('--9p-max-fids') && l.includes('"level":40')),
    ).toHaveLength(1);
    const other = await session9p(d.tcp);
    expect(await readVia(other.c, other.root, ['shared'])).toBe('hello');
  });

  test('--rlimit-nofile and --session-max-open set the budget; a session that goes away gives its fds back', async () => {
    const d = await startChild(populate(40), ['--rlimit-nofile', '200', '--session-max-open', '10']);
    const openAll = async (s: { c: P9Client; root: number }): Promise<{ opened: number; refusal: string }> => {
      let opened = 0;
      for (let i = 0; i < 40; i++) {
        const fid = s.c.newFid();
        await s.c.walk(s.root, fid, ['many', `f${i}`]);
        const r = await s.c.lopen(fid, O.RDONLY).then(
          () => '',
          (e: unknown) => errnoOfP9(e),
        );
        if (r) return { opened, refusal: r };
        opened++;
      }
      return { opened, refusal: '' };
    };
    const first = await session9p(d.tcp);
    expect(await openAll(first)).toEqual({ opened: 10, refusal: 'EMFILE' });
    await first.c.close();
    await new Promise((r) => setTimeout(r, 100));
    const second = await session9p(d.tcp);
    expect(await openAll(second)).toEqual({ opened: 10, refusal: 'EMFILE' });
    const split = d
      .log()
      .split('\n')
      .find((l) => l.includes('file descriptor budget'));
    expect(JSON.parse(split!)).toMatchObject({ nofile: 200, openPerSession: 10 });
  });

  test('two hogs at their budgets plus thousands of walk-only fids leave the reserve untouched', async () => {
    const d = await startChild(populate(1500));
    const hogs = [await session9p(d.tcp), await session9p(d.tcp)];
    let next = 0;
    for (const h of hogs) {
      for (;;) {
        const fid = h.c.newFid();
        await h.c.walk(h.root, fid, ['many', `f${next++}`]);
        if (
          await h.c.lopen(fid, O.RDONLY).then(
            () => false,
            () => true,
          )
        )
          break;
      }
    }
    // Every open file pins its inode's fd too; walk-only fids fill the rest of the inode table.
    const walker = await session9p(d.tcp);
    for (let i = next; i < 1500; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, 1500 - i) }, (_, k) => walker.c.walk(walker.root, walker.c.newFid(), ['many', `f${i + k}`])),
      );
    }
    await new Promise((r) => setTimeout(r, 50)); // evictions run after the request
    // The reserve (64 of 256 here) is for sockets, eventfds and the server itself.
    expect(d.fds()).toBeLessThanOrEqual(NOFILE - 48);
    const fresh = await session9p(d.tcp);
    expect(await readVia(fresh.c, fresh.root, ['many', 'f1499'])).toBe('file 1499');
    const g = await guest(d.vfs);
    expect(await readViaFuse(g, 'shared')).toBe('hello');
  });

  test('a root daemon that may not reopen file handles keeps its inode fds: old fids never fail with EPERM, the reserve stays', async () => {
    // Without CAP_DAC_READ_SEARCH, open_by_handle_at is EPERM: evicting would break every evicted inode.
    const d = await startChild(populate(400), [], 'setpriv --bounding-set -dac_read_search');
    const { c, root } = await session9p(d.tcp);
    const many = c.newFid();
    await c.walk(root, many, ['many']);
    const fids: number[] = [];
    let refusal = '';
    for (let i = 0; i < 400 && !refusal; i++) {
      const fid = c.newFid();
      await c.walk(many, fid, [`f${i}`]).then(
        () => fids.push(fid),
        (e: unknown) => {
          refusal = errnoOfP9(e);
        },
      );
    }
    // It runs out (no handles to trade fds for), with ENFILE from the table, before the reserve.
    expect(refusal).toBe('ENFILE');
    expect(fids.length).toBeGreaterThan(100);
    // The table stops at limit - reserve; Node's own fds (about 20) come out of the reserve.
    expect(d.fds()).toBeLessThanOrEqual(NOFILE - 32);
    for (const [i, fid] of fids.entries()) expect((await c.getattr(fid)).size).toBe(BigInt(`file ${i}`.length));
    // A new connection is still accepted and served (inodes already known).
    const fresh = await session9p(d.tcp);
    const f0 = fresh.c.newFid();
    await fresh.c.walk(fresh.root, f0, ['many', 'f0']);
    expect((await fresh.c.getattr(f0)).size).toBe(BigInt('file 0'.length));
    expect(d.log()).toContain('cannot be traded for file handles');
    expect(
      d
        .log()
        .split('\n')
        .filter((l) => l.includes('inode table full') && l.includes('"level":40')),
    ).toHaveLength(1);
  });

  test('9P connections are bounded (reserve/2): the ones past it are closed at once, one log line, and room comes back', async () => {
    const d = await startChild(populate(1));
    // ulimit -n 256: a reserve of 64, so 32 connections.
    const conns = await Promise.all(Array.from({ length: 40 }, () => P9Client.connect(d.tcp)));
    for (const c of conns) cleanups.push(() => c.close());
    const served = await Promise.all(
      conns.map((c) =>
        c.version(8192).then(
          () => true,
          () => false,
        ),
      ),
    );
    expect(served.filter(Boolean)).toHaveLength(32);
    expect(
      d
        .log()
        .split('\n')
        .filter((l) => l.includes('too many connections')),
    ).toHaveLength(1);
    await Promise.all(
      conns
        .filter((_, i) => served[i])
        .slice(0, 5)
        .map((c) => c.close()),
    );
    await new Promise((r) => setTimeout(r, 100));
    const fresh = await session9p(d.tcp);
    expect(await readVia(fresh.c, fresh.root, ['shared'])).toBe('hello');
  });
});
