// Locks through virtio-fs: GETLK, SETLK and SETLKW on real host OFD locks.
// Two FUSE lock owners exclude each other, and exclude (and are excluded
// by) a 9P client and a host process holding an fcntl lock. A SETLKW
// blocked on a conflict stalls nothing else, completes when the lock goes,
// and INTERRUPT on the hiprio queue answers it EINTR. flock() locks
// (FUSE_LK_FLOCK) exclude each other and host flock(1), and a 9P client's
// flock() (a whole-file Tlock).
import { afterEach, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import {
  F_RDLCK,
  F_UNLCK,
  F_WRLCK,
  FUSE_LK_FLOCK,
  FUSE_RELEASE_FLOCK_UNLOCK,
  OFFSET_MAX,
  ROOT,
  errnoOf,
  replyErrno,
  type FuseClient,
  type Reply,
} from './client.js';
import { sleep, useFuse } from './fixture.js';
import { LOCK_STATUS, LOCK_TYPE, O } from '../p9/proto.js';
import type { P9Client } from '../p9/client.js';

const ctx = useFuse({ ninep: true, numRequestQueues: 2 });
const O_RDWR = 2;
const PY = '/usr/bin/python3';

interface Opened {
  nodeid: bigint;
  fh: bigint;
}

async function openFile(name: string, c: FuseClient = ctx.c): Promise<Opened> {
  const p = ctx.fx.p(name);
  if (!fs.existsSync(p)) fs.writeFileSync(p, 'lock me\n'.repeat(100));
  const nodeid = (await c.lookup(ROOT, name)).nodeid;
  return { nodeid, fh: (await c.open(nodeid, O_RDWR)).fh };
}

/** Resolves with the reply, or 'pending' if none came within `ms`. */
async function settled(p: Promise<Reply>, ms: number): Promise<Reply | 'pending'> {
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p,
    new Promise<'pending'>((res) => {
      t = setTimeout(() => res('pending'), ms);
    }),
  ]);
  clearTimeout(t);
  return r;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const ch of children.splice(0)) if (ch.exitCode === null) ch.kill('SIGKILL');
});

/** A host process holding a lock ('posix': fcntl F_SETLKW whole file; 'flock': flock LOCK_EX) until killed. */
async function hostHolder(path: string, kind: 'posix' | 'posix-read' | 'flock'): Promise<ChildProcess> {
  const script = `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
k = sys.argv[2]
if k == 'posix': fcntl.lockf(fd, fcntl.LOCK_EX)
elif k == 'posix-read': fcntl.lockf(fd, fcntl.LOCK_SH)
else: fcntl.flock(fd, fcntl.LOCK_EX)
print('locked', flush=True)
sys.stdin.read()
`;
  const ch = spawn(PY, ['-c', script, path, kind], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(ch);
  await new Promise<void>((resolve, reject) => {
    ch.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('locked')) resolve();
    });
    ch.once('exit', (code) => reject(new Error(`lock holder exited (${code})`)));
  });
  return ch;
}

/** Can a host process take the lock right now (non-blocking)? */
function hostCanLock(path: string, kind: 'posix' | 'flock'): boolean {
  const script = `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    if sys.argv[2] == 'posix': fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(1)
`;
  return spawnSync(PY, ['-c', script, path, kind]).status === 0;
}

/** A 9P session with `name` open read-write; lock() takes a lock through it. */
async function ninepOpen(name: string): Promise<{
  lock: (type: number, start?: number, length?: number) => Promise<number>;
  getlock: (type: number, start?: number, length?: number) => ReturnType<P9Client['getlock']>;
}> {
  const { c, root } = await ctx.fx.ninep();
  const fid = c.newFid();
  await c.walkPath(root, fid, name);
  await c.lopen(fid, O.RDWR);
  const l = (type: number, start: number, length: number) => ({ type, start, length, procId: 77, clientId: 'p9-test' });
  return {
    lock: (type, start = 0, length = 0) => c.lock(fid, l(type, start, length)),
    getlock: (type, start = 0, length = 0) => c.getlock(fid, l(type, start, length)),
  };
}

async function stop(ch: ChildProcess): Promise<void> {
  const gone = new Promise<void>((r) => ch.once('exit', () => r()));
  ch.kill('SIGKILL');
  await gone;
}

describe('POSIX locks between FUSE lock owners', () => {
  test("GETLK of a free range is F_UNLCK; conflicting owners get EAGAIN; GETLK reports the holder's range", async () => {
    const { c } = ctx;
    const f = await openFile('posix1');
    expect((await c.getlk(f.nodeid, f.fh, 1n, { type: F_WRLCK })).type).toBe(F_UNLCK);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK, start: 0n, end: 99n });
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 2n, { type: F_WRLCK, start: 50n, end: 60n }))).toBe('EAGAIN');
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 2n, { type: F_RDLCK, start: 99n, end: 99n }))).toBe('EAGAIN');
    const g = await c.getlk(f.nodeid, f.fh, 2n, { type: F_RDLCK, start: 0n, end: OFFSET_MAX });
    expect(g).toMatchObject({ type: F_WRLCK, start: 0n, end: 99n });
    // The owner itself sees no conflict with its own lock.
    expect((await c.getlk(f.nodeid, f.fh, 1n, { type: F_WRLCK, start: 0n, end: 10n })).type).toBe(F_UNLCK);
    // Disjoint ranges coexist.
    await c.setlk(f.nodeid, f.fh, 2n, { type: F_WRLCK, start: 100n, end: 199n });
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_UNLCK, start: 0n, end: OFFSET_MAX });
    await c.setlk(f.nodeid, f.fh, 2n, { type: F_WRLCK, start: 0n, end: 50n });
    await c.release(f.fh);
  });

  test('read locks share, a write lock excludes them; upgrading and splitting within one owner', async () => {
    const { c } = ctx;
    const f = await openFile('posix2');
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_RDLCK });
    await c.setlk(f.nodeid, f.fh, 2n, { type: F_RDLCK });
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 3n, { type: F_WRLCK }))).toBe('EAGAIN');
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK }))).toBe('EAGAIN'); // 2 still reads
    await c.setlk(f.nodeid, f.fh, 2n, { type: F_UNLCK });
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK }); // upgrade
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_UNLCK, start: 10n, end: 19n }); // split the lock
    await c.setlk(f.nodeid, f.fh, 3n, { type: F_WRLCK, start: 12n, end: 15n });
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 3n, { type: F_WRLCK, start: 20n, end: 20n }))).toBe('EAGAIN');
    await c.release(f.fh);
  });

  test('FLUSH by an owner drops its locks (close semantics); RELEASE drops the locks taken through the handle', async () => {
    const { c } = ctx;
    const f = await openFile('posix3');
    const other = (await c.open(f.nodeid, O_RDWR)).fh;
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK });
    expect(await errnoOf(c.setlk(f.nodeid, other, 2n, { type: F_WRLCK }))).toBe('EAGAIN');
    await c.flush(f.fh, 1n);
    await c.setlk(f.nodeid, other, 2n, { type: F_WRLCK });
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK }))).toBe('EAGAIN');
    await c.release(other);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK });
    await c.release(f.fh);
  });

  test('bad lock arguments: unknown type and end before start are EINVAL; a handle never opened EBADF', async () => {
    const { c } = ctx;
    const f = await openFile('posix4');
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: 7 }))).toBe('EINVAL');
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK, start: 10n, end: 5n }))).toBe('EINVAL');
    expect(await errnoOf(c.getlk(f.nodeid, 424242n, 1n, { type: F_WRLCK }))).toBe('EBADF');
    expect(await replyErrno(c.setlkw(f.nodeid, 424242n, 1n, { type: F_WRLCK }).reply)).toBe('EBADF');
    await c.release(f.fh);
  });
});

describe('against 9P and host processes', () => {
  test("a 9P client's lock excludes FUSE owners and the reverse", async () => {
    const { c } = ctx;
    const f = await openFile('vs9p');
    const p9 = await ninepOpen('vs9p');
    expect(await p9.lock(LOCK_TYPE.WRLCK, 0, 10)).toBe(LOCK_STATUS.SUCCESS);
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_RDLCK, start: 5n, end: 5n }))).toBe('EAGAIN');
    expect(await c.getlk(f.nodeid, f.fh, 1n, { type: F_WRLCK })).toMatchObject({ type: F_WRLCK, start: 0n, end: 9n });
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK, start: 10n, end: OFFSET_MAX });
    expect(await p9.lock(LOCK_TYPE.RDLCK, 20, 1)).toBe(LOCK_STATUS.BLOCKED);
    expect(await p9.lock(LOCK_TYPE.UNLCK, 0, 0)).toBe(LOCK_STATUS.SUCCESS);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK, start: 0n, end: 9n });
    await c.release(f.fh);
    expect(await p9.lock(LOCK_TYPE.WRLCK, 0, 0)).toBe(LOCK_STATUS.SUCCESS);
  });

  test('a host process holding an fcntl lock excludes FUSE owners; GETLK names its pid', async () => {
    const { c, fx } = ctx;
    const f = await openFile('vshost');
    const holder = await hostHolder(fx.p('vshost'), 'posix');
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_RDLCK }))).toBe('EAGAIN');
    const g = await c.getlk(f.nodeid, f.fh, 1n, { type: F_RDLCK });
    expect(g).toMatchObject({ type: F_WRLCK, start: 0n, end: OFFSET_MAX, pid: holder.pid });
    await stop(holder);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK });
    expect(hostCanLock(fx.p('vshost'), 'posix')).toBe(false);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_UNLCK });
    expect(hostCanLock(fx.p('vshost'), 'posix')).toBe(true);
    await c.release(f.fh);
  });
});

describe('SETLKW', () => {
  test('blocks without stalling other requests on the same queue or the other one; completes when the lock goes', async () => {
    const { c, fx } = ctx;
    const f = await openFile('wait1');
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK });
    const w = c.setlkw(f.nodeid, f.fh, 2n, { type: F_WRLCK }, 0, { queue: 1, timeoutMs: 0 });
    expect(await settled(w.reply, 150)).toBe('pending');
    // Meanwhile both request queues keep serving.
    fs.writeFileSync(fx.p('other'), 'other file');
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) {
      const [a, b] = await Promise.all([c.getattr(ROOT, undefined, { queue: 1 }), c.lookup(ROOT, 'other', { queue: 2 })]);
      expect(a.attr.ino).toBeGreaterThan(0n);
      await c.forget(b.nodeid, 1n);
    }
    const o = await c.open((await c.lookup(ROOT, 'other', { queue: 1 })).nodeid, 0, { queue: 1 });
    expect((await c.read(o.fh, 0n, 100, { queue: 1 })).toString()).toBe('other file');
    expect(Date.now() - t0).toBeLessThan(2000); // generous: the point is no wait for the lock
    expect(await settled(w.reply, 10)).toBe('pending');
    const released = Date.now();
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_UNLCK });
    const r = await settled(w.reply, 2000);
    expect(r).not.toBe('pending');
    expect((r as Reply).error).toBe(0);
    expect(Date.now() - released).toBeLessThan(1500);
    // Owner 2 now holds it.
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_RDLCK }))).toBe('EAGAIN');
    await c.release(f.fh);
    await c.release(o.fh);
  });

  test('INTERRUPT on the hiprio queue answers a blocked SETLKW with EINTR; the lock is not taken', async () => {
    const { c } = ctx;
    const f = await openFile('wait2');
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK });
    const w = c.setlkw(f.nodeid, f.fh, 2n, { type: F_WRLCK }, 0, { queue: 2, timeoutMs: 0 });
    expect(await settled(w.reply, 50)).toBe('pending');
    expect(await c.interrupt(w.unique, { in: [16, 64] })).toBe(0); // INTERRUPT itself gets no reply
    const r = await settled(w.reply, 1000);
    expect(r).not.toBe('pending');
    expect((r as Reply).error).toBe(-4); // EINTR
    expect((r as Reply).unique).toBe(w.unique);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_UNLCK });
    await sleep(150); // a cancelled waiter must not take the lock later
    await c.setlk(f.nodeid, f.fh, 3n, { type: F_WRLCK });
    // INTERRUPT of a unique that is not waiting is harmless.
    expect(await c.interrupt(123456789n)).toBe(0);
    await c.release(f.fh);
  });

  test("waits for a 9P client's lock and for a host process's lock", async () => {
    const { c, fx } = ctx;
    const f = await openFile('wait3');
    const p9 = await ninepOpen('wait3');
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.SUCCESS);
    const w = c.setlkw(f.nodeid, f.fh, 1n, { type: F_RDLCK }, 0, { timeoutMs: 0 });
    expect(await settled(w.reply, 100)).toBe('pending');
    expect(await p9.lock(LOCK_TYPE.UNLCK)).toBe(LOCK_STATUS.SUCCESS);
    expect(((await settled(w.reply, 2000)) as Reply).error).toBe(0);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_UNLCK });

    const holder = await hostHolder(fx.p('wait3'), 'posix');
    const w2 = c.setlkw(f.nodeid, f.fh, 1n, { type: F_WRLCK }, 0, { timeoutMs: 0 });
    expect(await settled(w2.reply, 100)).toBe('pending');
    await stop(holder);
    expect(((await settled(w2.reply, 2000)) as Reply).error).toBe(0);
    expect(hostCanLock(fx.p('wait3'), 'posix')).toBe(false);
    await c.release(f.fh);
    expect(hostCanLock(fx.p('wait3'), 'posix')).toBe(true);
  });
});

describe('flock (FUSE_LK_FLOCK)', () => {
  test('owners exclude each other and host flock(2); RELEASE with FLOCK_UNLOCK drops it', async () => {
    const { c, fx } = ctx;
    const f = await openFile('flock1');
    const g = (await c.open(f.nodeid, O_RDWR)).fh;
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK }, FUSE_LK_FLOCK);
    expect(await errnoOf(c.setlk(f.nodeid, g, 2n, { type: F_RDLCK }, FUSE_LK_FLOCK))).toBe('EAGAIN');
    expect(hostCanLock(fx.p('flock1'), 'flock')).toBe(false);
    // flock and POSIX locks are independent on Linux
    await c.setlk(f.nodeid, g, 2n, { type: F_WRLCK });
    await c.setlk(f.nodeid, g, 2n, { type: F_UNLCK });
    await c.release(f.fh, { releaseFlags: FUSE_RELEASE_FLOCK_UNLOCK, lockOwner: 1n });
    expect(hostCanLock(fx.p('flock1'), 'flock')).toBe(true);
    await c.setlk(f.nodeid, g, 2n, { type: F_WRLCK }, FUSE_LK_FLOCK);
    await c.release(g, { releaseFlags: FUSE_RELEASE_FLOCK_UNLOCK, lockOwner: 2n });
  });

  test('a host process holding flock() excludes FUSE flock; SETLKW with FLOCK waits for it', async () => {
    const { c, fx } = ctx;
    const f = await openFile('flock2');
    const holder = await hostHolder(fx.p('flock2'), 'flock');
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK }, FUSE_LK_FLOCK))).toBe('EAGAIN');
    const w = c.setlkw(f.nodeid, f.fh, 1n, { type: F_WRLCK }, FUSE_LK_FLOCK, { timeoutMs: 0 });
    expect(await settled(w.reply, 100)).toBe('pending');
    await stop(holder);
    expect(((await settled(w.reply, 2000)) as Reply).error).toBe(0);
    expect(hostCanLock(fx.p('flock2'), 'flock')).toBe(false);
    await c.release(f.fh, { releaseFlags: FUSE_RELEASE_FLOCK_UNLOCK, lockOwner: 1n });
  });
});

// The guest's 9p client sends flock(2) as a whole-file POSIX lock (v9fs
// converts FL_FLOCK into FL_POSIX [0, OFFSET_MAX] before Tlock; no mount
// option changes that): a 9P whole-file lock must exclude flock() holders
// elsewhere (FUSE_LK_FLOCK, host flock(2)) as well as POSIX lock holders.
describe('flock through 9P and through virtio-fs exclude each other', () => {
  test("a 9P client's flock (a whole-file Tlock) excludes FUSE flock and host flock(2), and the reverse", async () => {
    const { c, fx } = ctx;
    const f = await openFile('xflock1');
    const p9 = await ninepOpen('xflock1');
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.SUCCESS);
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 1n, { type: F_RDLCK }, FUSE_LK_FLOCK))).toBe('EAGAIN');
    expect(hostCanLock(fx.p('xflock1'), 'flock')).toBe(false);
    expect(await p9.lock(LOCK_TYPE.UNLCK)).toBe(LOCK_STATUS.SUCCESS);
    expect(hostCanLock(fx.p('xflock1'), 'flock')).toBe(true);

    await c.setlk(f.nodeid, f.fh, 1n, { type: F_WRLCK }, FUSE_LK_FLOCK);
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.BLOCKED);
    expect(await p9.lock(LOCK_TYPE.RDLCK)).toBe(LOCK_STATUS.BLOCKED);
    // The refused Tlock left no POSIX lock behind.
    expect(hostCanLock(fx.p('xflock1'), 'posix')).toBe(true);
    // A byte-range lock is no flock: flock and POSIX locks stay independent.
    expect(await p9.lock(LOCK_TYPE.WRLCK, 0, 100)).toBe(LOCK_STATUS.SUCCESS);
    expect(await p9.lock(LOCK_TYPE.UNLCK)).toBe(LOCK_STATUS.SUCCESS);
    await c.release(f.fh, { releaseFlags: FUSE_RELEASE_FLOCK_UNLOCK, lockOwner: 1n });
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.SUCCESS);
    expect(await p9.lock(LOCK_TYPE.UNLCK)).toBe(LOCK_STATUS.SUCCESS);
  });

  test('shared flocks: 9P read locks on the whole file and FUSE LOCK_SH coexist; an exclusive one waits for all', async () => {
    const { c, fx } = ctx;
    const f = await openFile('xflock2');
    const p9 = await ninepOpen('xflock2');
    expect(await p9.lock(LOCK_TYPE.RDLCK)).toBe(LOCK_STATUS.SUCCESS);
    await c.setlk(f.nodeid, f.fh, 1n, { type: F_RDLCK }, FUSE_LK_FLOCK);
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 2n, { type: F_WRLCK }, FUSE_LK_FLOCK))).toBe('EAGAIN');
    // 9P upgrading its shared flock is refused while FUSE shares it, and keeps the shared one.
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.BLOCKED);
    expect(await errnoOf(c.setlk(f.nodeid, f.fh, 2n, { type: F_WRLCK }))).toBe('EAGAIN');
    await c.release(f.fh, { releaseFlags: FUSE_RELEASE_FLOCK_UNLOCK, lockOwner: 1n });
    expect(hostCanLock(fx.p('xflock2'), 'flock')).toBe(false); // 9P's shared one
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.SUCCESS);
    expect(hostCanLock(fx.p('xflock2'), 'flock')).toBe(false);
    // Unlocking part of the file ends the whole-file lock, and with it the flock.
    expect(await p9.lock(LOCK_TYPE.UNLCK, 100, 0)).toBe(LOCK_STATUS.SUCCESS);
    expect(hostCanLock(fx.p('xflock2'), 'flock')).toBe(true);
    expect(await p9.lock(LOCK_TYPE.UNLCK)).toBe(LOCK_STATUS.SUCCESS);
  });

  test('a host flock(2) holder blocks a 9P flock, which Tgetlock reports, until it lets go', async () => {
    const { fx } = ctx;
    fs.writeFileSync(fx.p('xflock3'), 'x');
    const p9 = await ninepOpen('xflock3');
    const holder = await hostHolder(fx.p('xflock3'), 'flock');
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.BLOCKED);
    expect(await p9.getlock(LOCK_TYPE.WRLCK)).toMatchObject({ type: LOCK_TYPE.WRLCK, start: 0n, length: 0n });
    expect(await p9.getlock(LOCK_TYPE.WRLCK, 0, 10)).toMatchObject({ type: LOCK_TYPE.UNLCK });
    await stop(holder);
    expect(await p9.getlock(LOCK_TYPE.WRLCK)).toMatchObject({ type: LOCK_TYPE.UNLCK });
    expect(await p9.lock(LOCK_TYPE.WRLCK)).toBe(LOCK_STATUS.SUCCESS);
    expect(hostCanLock(fx.p('xflock3'), 'flock')).toBe(false);
    expect(hostCanLock(fx.p('xflock3'), 'posix')).toBe(false);
  });
});
