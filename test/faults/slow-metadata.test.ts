// A filesystem under the export whose metadata answers are slow (a FUSE
// mount served by a second duofs whose every lookup and getattr reply comes
// 250 ms late: DUOFS_TEST_DEFERRED_BACKEND, with --cache never so the kernel
// asks each time). A lookup, getattr, open, readdir, unlink, rename, statfs
// or xattr call in there must not hold up another client of the server
// above it: those calls run on the pool (issue 12).
// Asserted as an order, not a speed: the other client's requests are all
// answered before the slow one.
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SlowStorage } from '../../src/bench/slow.js';
import { startDuofs, type Duofs } from '../../src/server.js';
import { ensureBuilt } from '../p9/harness.js';
import { P9Client } from '../p9/client.js';

jest.setTimeout(60_000);
const LATE_MS = 250;
let base: string;
let exp: string;
let slow: SlowStorage | undefined;
const servers: Duofs[] = [];

beforeAll(async () => {
  ensureBuilt();
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-slowmeta-')));
  const real = path.join(base, 'real');
  exp = path.join(base, 'export');
  fs.mkdirSync(real);
  fs.mkdirSync(path.join(exp, 'slow'), { recursive: true });
  fs.mkdirSync(path.join(real, 'dir'));
  for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(real, 'dir', `f${i}`), `file ${i}`);
  for (const n of ['gone', 'moved']) fs.writeFileSync(path.join(real, n), n);
  execFileSync('setfattr', ['-n', 'user.colour', '-v', 'blue', path.join(real, 'dir', 'f4')]);
  fs.writeFileSync(path.join(exp, 'here'), 'local');
  slow = await SlowStorage.start(real, path.join(exp, 'slow'), 0, ['--sandbox', 'none', '--xattr'], { DUOFS_TEST_DEFERRED_BACKEND: `${LATE_MS}ms` });
});

afterAll(async () => {
  for (const s of servers) await s.close();
  await slow?.stop();
  fs.rmSync(base, { recursive: true, force: true });
});

async function serve(ioEngine: 'threads' | 'sync'): Promise<string> {
  const d = await startDuofs({ sharedDir: exp, ninepTcp: '127.0.0.1:0', logLevel: 'silent', ioEngine });
  servers.push(d);
  return `${d.ninepTcpAddress!.host}:${d.ninepTcpAddress!.port}`;
}

/** Runs `slowCall`, and meanwhile 5 getattrs of a local file from another client; the order they finished in. */
async function race(
  address: string,
  slowCall: (c: P9Client, fid: number) => Promise<unknown>,
  setup?: (c: P9Client, dirFid: number) => Promise<number>,
): Promise<string[]> {
  const a = await P9Client.session(address, { aname: exp });
  const b = await P9Client.session(address, { aname: exp });
  const dirFid = a.c.newFid();
  await a.c.walk(a.root, dirFid, ['slow', 'dir']); // the slow part of the tree (this walk is slow too)
  const target = setup ? await setup(a.c, dirFid) : dirFid;
  const here = b.c.newFid();
  await b.c.walk(b.root, here, ['here']);
  const order: string[] = [];
  const slowDone = slowCall(a.c, target).then(() => order.push('slow'));
  await new Promise((r) => setTimeout(r, 50)); // the slow call is in flight
  for (let i = 0; i < 5; i++) {
    await b.c.getattr(here);
    order.push('other');
  }
  await slowDone;
  await a.c.close();
  await b.c.close();
  return order;
}

const others = ['other', 'other', 'other', 'other', 'other'];

test('a lookup on the slow filesystem does not hold up another client (threads engine)', async () => {
  const address = await serve('threads');
  let n = 0;
  const order = await race(address, (c, dir) => c.walk(dir, c.newFid(), [`f${n++}`]));
  expect(order).toEqual([...others, 'slow']);
});

test('a getattr on the slow filesystem does not hold up another client (threads engine)', async () => {
  const address = await serve('threads');
  const order = await race(address, async (c, dir) => {
    const f = c.newFid();
    await c.walk(dir, f, ['f1']);
    await c.getattr(f); // ~LATE_MS late, on the pool
  });
  // The walk and the getattr are both slow; another client is served throughout.
  expect(order.indexOf('slow')).toBe(5);
});

test('--io-engine sync keeps them inline: the other client waits (what the pool saves)', async () => {
  const address = await serve('sync');
  const order = await race(address, (c, dir) => c.walk(dir, c.newFid(), ['f2']));
  expect(order[0]).toBe('slow');
});

test('a readdir on the slow filesystem does not hold up another client (threads engine)', async () => {
  const address = await serve('threads');
  let names: string[] = [];
  const order = await race(
    address,
    async (c, d) => {
      names = (await c.readdirAll(d)).map((e) => e.name.toString()).sort();
    },
    async (c, dir) => {
      const d = c.newFid();
      await c.walk(dir, d, []);
      await c.lopen(d, 0);
      return d;
    },
  );
  expect(order).toEqual([...others, 'slow']);
  expect(names).toEqual(['.', '..', ...Array.from({ length: 8 }, (_, i) => `f${i}`)].sort());
});

test('an open on the slow filesystem does not hold up another client (threads engine)', async () => {
  const address = await serve('threads');
  const order = await race(
    address,
    (c, f) => c.lopen(f, 0),
    async (c, dir) => {
      const f = c.newFid();
      await c.walk(dir, f, ['f3']);
      return f;
    },
  );
  expect(order).toEqual([...others, 'slow']);
});

test('an unlink and a rename on the slow filesystem do not hold up another client (threads engine)', async () => {
  const address = await serve('threads');
  const up = (c: P9Client, dir: number) => {
    const f = c.newFid();
    return c.walk(dir, f, ['..']).then(() => f);
  };
  expect(await race(address, (c, top) => c.unlinkat(top, 'gone', 0), up)).toEqual([...others, 'slow']);
  expect(fs.existsSync(path.join(base, 'real', 'gone'))).toBe(false);
  expect(await race(address, (c, top) => c.renameat(top, 'moved', top, 'moved2'), up)).toEqual([...others, 'slow']);
  expect(fs.readFileSync(path.join(base, 'real', 'moved2'), 'utf8')).toBe('moved');
});

test('a statfs and an xattr read on the slow filesystem do not hold up another client (threads engine)', async () => {
  const address = await serve('threads');
  let namelen = 0;
  expect(
    await race(address, async (c, dir) => {
      namelen = (await c.statfs(dir)).namelen;
    }),
  ).toEqual([...others, 'slow']);
  expect(namelen).toBe(255);
  let value = '';
  const order = await race(
    address,
    async (c, f) => {
      const x = c.newFid();
      const size = await c.xattrwalk(f, x, 'user.colour');
      value = (await c.read(x, 0, Number(size))).toString();
      await c.clunk(x);
    },
    async (c, dir) => {
      const f = c.newFid();
      await c.walk(dir, f, ['f4']);
      return f;
    },
  );
  expect(order).toEqual([...others, 'slow']);
  expect(value).toBe('blue');
});
