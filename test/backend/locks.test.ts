// The Backend's lock API (getlk / setlk / setlkw / flock): the waiting
// logic lives in the backend, so these drive it without a protocol. A
// blocking request completes when the conflict goes, and ends without the
// lock when its signal aborts (a FUSE INTERRUPT, a session closing) or its
// handle is closed.
import { afterEach, beforeEach, expect, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DAEMON, LocalBackend } from '../../src/backend/backend.js';
import { Errno, F_RDLCK, F_UNLCK, F_WRLCK, O_RDWR, SysError } from '../../src/sys/index.js';
import { now } from '../support/now.js';

let dir: string;
let b: LocalBackend;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-locks-'));
  fs.writeFileSync(path.join(dir, 'f'), 'lock me');
  b = new LocalBackend({ sharedDir: dir });
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const whole = (type: number) => ({ type, start: 0, len: 0 });

function open() {
  const e = now(b.lookup(DAEMON, b.root, Buffer.from('f')));
  const file = now(b.open(DAEMON, e.inode, O_RDWR));
  b.release(e.inode);
  return file;
}

/** 'pending', or how the promise settled (0 or the errno) within `ms`. */
async function state(p: Promise<void>, ms: number): Promise<'pending' | number> {
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p.then(
      () => 0,
      (e: unknown) => (e instanceof SysError ? e.errno : -1),
    ),
    new Promise<'pending'>((res) => {
      t = setTimeout(() => res('pending'), ms);
    }),
  ]);
  clearTimeout(t);
  return r;
}

test('setlk conflicts between owners; getlk names the holder; setlkw waits and takes the lock when it goes', async () => {
  const f = open();
  expect(b.setlk(f, 'a', whole(F_WRLCK), { pid: 41 })).toBe(true);
  expect(b.setlk(f, 'b', { type: F_RDLCK, start: 3, len: 1 })).toBe(false);
  expect(b.getlk(f, 'b', whole(F_RDLCK))).toMatchObject({ type: F_WRLCK, start: 0, len: 0, pid: 41 });
  const w = b.setlkw(f, 'b', whole(F_WRLCK));
  expect(await state(w, 50)).toBe('pending');
  expect(b.waitingLocks).toBe(1);
  expect(b.setlk(f, 'a', whole(F_UNLCK))).toBe(true);
  expect(await state(w, 1000)).toBe(0);
  expect(b.waitingLocks).toBe(0);
  expect(b.setlk(f, 'a', whole(F_RDLCK))).toBe(false); // b holds it now
  b.closeFile(f);
});

test('an aborted setlkw ends with EINTR and never takes the lock later', async () => {
  const f = open();
  b.setlk(f, 'a', whole(F_WRLCK));
  const cancel = new AbortController();
  const w = b.setlkw(f, 'b', whole(F_WRLCK), { signal: cancel.signal });
  expect(await state(w, 30)).toBe('pending');
  cancel.abort();
  expect(await state(w, 100)).toBe(Errno.EINTR);
  b.setlk(f, 'a', whole(F_UNLCK));
  await sleep(150); // a cancelled waiter that still retried would take it now
  expect(b.setlk(f, 'c', whole(F_WRLCK))).toBe(true);
  // Already aborted: refused at once.
  expect(await state(b.setlkw(f, 'd', whole(F_RDLCK), { signal: AbortSignal.abort() }), 100)).toBe(Errno.EINTR);
  b.closeFile(f);
});

test('closing the handle ends a setlkw waiting through it with EBADF', async () => {
  const f = open();
  const g = open();
  b.setlk(g, 'a', whole(F_WRLCK));
  const w = b.setlkw(f, 'b', whole(F_WRLCK));
  expect(await state(w, 30)).toBe('pending');
  b.closeFile(f);
  expect(await state(w, 100)).toBe(Errno.EBADF);
  expect(b.waitingLocks).toBe(0);
  b.closeFile(g);
});

test('flock: owners exclude each other; a blocking flock waits for the holder', async () => {
  const f = open();
  expect(b.flock(f, 'a', F_WRLCK)).toBe(true);
  expect(b.flock(f, 'b', F_RDLCK)).toBe(false);
  // flock and record locks are independent
  expect(b.setlk(f, 'b', whole(F_WRLCK))).toBe(true);
  const w = b.setlkw(f, 'b', whole(F_RDLCK), { flock: true });
  expect(await state(w, 30)).toBe('pending');
  expect(b.flock(f, 'a', F_UNLCK)).toBe(true);
  expect(await state(w, 1000)).toBe(0);
  expect(b.flock(f, 'a', F_WRLCK)).toBe(false);
  b.closeFile(f);
});
