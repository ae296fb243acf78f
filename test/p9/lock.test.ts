// Tlock / Tgetlock on real host locks: clients on different connections
// conflict, a conflict is BLOCKED at once (never a hang), and host processes
// see the locks (F_OFD_GETLK from python3).
import { expect, jest, test, describe } from '@jest/globals';
import fs from 'node:fs';
import { useServer, openAt, uniq, sleep } from './fixture.js';
import { LOCK_FLAGS, LOCK_STATUS, LOCK_TYPE, O } from './proto.js';
import { F, hostGetlk, hostHoldLock } from './host.js';
import { P9Client } from './client.js';

jest.setTimeout(30_000);
const ctx = useServer();

async function twoOpeners(name: string) {
  fs.writeFileSync(ctx.tree.p('scratch', name), Buffer.alloc(4096));
  const a = await ctx.session();
  const b = await ctx.session();
  const fa = await openAt(a.c, a.root, `scratch/${name}`, O.RDWR);
  const fb = await openAt(b.c, b.root, `scratch/${name}`, O.RDWR);
  return { a: a.c, b: b.c, fa, fb, host: ctx.tree.p('scratch', name) };
}

const W = (start: number, length: number, extra: { flags?: number; procId?: number; clientId?: string } = {}) => ({
  type: LOCK_TYPE.WRLCK,
  start,
  length,
  procId: extra.procId ?? 100,
  clientId: extra.clientId ?? 'client',
  flags: extra.flags ?? 0,
});
const R = (start: number, length: number) => ({ type: LOCK_TYPE.RDLCK, start, length, procId: 100, clientId: 'client' });
const U = (start: number, length: number) => ({ type: LOCK_TYPE.UNLCK, start, length, procId: 100, clientId: 'client' });

describe('Tlock between two clients', () => {
  test('the second writer is BLOCKED, sees the lock with Tgetlock, and gets it after unlock', async () => {
    const { a, b, fa, fb, host } = await twoOpeners(uniq('lk'));
    expect(await a.lock(fa, W(0, 100))).toBe(LOCK_STATUS.SUCCESS);
    // A host process sees it.
    const h = hostGetlk(host, F.WRLCK, 0, 100);
    expect({ type: h.type, start: h.start, len: h.len }).toEqual({ type: F.WRLCK, start: 0, len: 100 });
    expect(hostGetlk(host, F.WRLCK, 200, 10).type).toBe(F.UNLCK);

    expect(await b.lock(fb, W(50, 10))).toBe(LOCK_STATUS.BLOCKED);
    const gl = await b.getlock(fb, W(50, 10));
    expect({ type: gl.type, start: gl.start, length: gl.length }).toEqual({ type: LOCK_TYPE.WRLCK, start: 0n, length: 100n });
    // Outside the range there is no conflict.
    expect((await b.getlock(fb, W(100, 10))).type).toBe(LOCK_TYPE.UNLCK);
    expect(await b.lock(fb, W(100, 10))).toBe(LOCK_STATUS.SUCCESS);

    expect(await a.lock(fa, U(0, 100))).toBe(LOCK_STATUS.SUCCESS);
    expect(await b.lock(fb, W(50, 10))).toBe(LOCK_STATUS.SUCCESS);
    expect(hostGetlk(host, F.WRLCK, 50, 10).type).toBe(F.WRLCK);
    expect(await a.lock(fa, W(55, 1))).toBe(LOCK_STATUS.BLOCKED);
    expect(await b.lock(fb, U(0, 0))).toBe(LOCK_STATUS.SUCCESS);
    expect(hostGetlk(host, F.WRLCK, 0, 0).type).toBe(F.UNLCK);
  });

  test('a conflicting Tlock with the BLOCK flag answers BLOCKED at once and other requests keep flowing', async () => {
    const { a, b, fa, fb } = await twoOpeners(uniq('lkb'));
    expect(await a.lock(fa, W(0, 0))).toBe(LOCK_STATUS.SUCCESS);
    const t0 = Date.now();
    const blocked = b.lock(fb, { ...W(10, 10), flags: LOCK_FLAGS.BLOCK });
    // While it is outstanding (or after), other requests on the same connection are answered.
    const others = await Promise.all([b.getattr(fb), b.read(fb, 0, 10), a.getattr(fa)]);
    expect(others).toHaveLength(3);
    expect(await blocked).toBe(LOCK_STATUS.BLOCKED);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  test('read locks are shared; a writer is blocked by a reader', async () => {
    const { a, b, fa, fb } = await twoOpeners(uniq('lkr'));
    expect(await a.lock(fa, R(0, 10))).toBe(LOCK_STATUS.SUCCESS);
    expect(await b.lock(fb, R(0, 10))).toBe(LOCK_STATUS.SUCCESS);
    expect(await b.lock(fb, W(0, 10))).toBe(LOCK_STATUS.BLOCKED);
    const gl = await b.getlock(fb, W(0, 10));
    expect(gl.type).toBe(LOCK_TYPE.RDLCK);
  });

  test('a lock of length 0 reaches to the end of the file and beyond', async () => {
    const { a, b, fa, fb } = await twoOpeners(uniq('lk0'));
    expect(await a.lock(fa, W(10, 0))).toBe(LOCK_STATUS.SUCCESS);
    expect(await b.lock(fb, W(1_000_000_000, 1))).toBe(LOCK_STATUS.BLOCKED);
    expect(await b.lock(fb, W(0, 10))).toBe(LOCK_STATUS.SUCCESS);
    const gl = await b.getlock(fb, W(20, 5));
    expect({ type: gl.type, start: gl.start, length: gl.length }).toEqual({ type: LOCK_TYPE.WRLCK, start: 10n, length: 0n });
  });

  test('Tclunk of the locking fid releases its locks', async () => {
    const { a, b, fa, fb, host } = await twoOpeners(uniq('lkc'));
    expect(await a.lock(fa, W(0, 0))).toBe(LOCK_STATUS.SUCCESS);
    await a.clunk(fa);
    expect(await b.lock(fb, W(0, 0))).toBe(LOCK_STATUS.SUCCESS);
    expect(hostGetlk(host, F.WRLCK, 0, 0).type).toBe(F.WRLCK);
  });

  test('a client that disconnects releases its locks', async () => {
    const name = uniq('lkd');
    fs.writeFileSync(ctx.tree.p('scratch', name), 'x');
    const a = await P9Client.session(ctx.srv.address, { aname: ctx.tree.dir });
    const fa = await openAt(a.c, a.root, `scratch/${name}`, O.RDWR);
    expect(await a.c.lock(fa, W(0, 0))).toBe(LOCK_STATUS.SUCCESS);
    await a.c.close();
    const host = ctx.tree.p('scratch', name);
    let t = 0;
    while (hostGetlk(host, F.WRLCK, 0, 0).type !== F.UNLCK && t++ < 50) await sleep(100);
    expect(hostGetlk(host, F.WRLCK, 0, 0).type).toBe(F.UNLCK);
  });

  test('Tgetlock with no conflict answers UNLCK', async () => {
    const { b, fb } = await twoOpeners(uniq('lkn'));
    expect((await b.getlock(fb, W(0, 0))).type).toBe(LOCK_TYPE.UNLCK);
  });

  test('unlocking a range never locked is SUCCESS', async () => {
    const { a, fa } = await twoOpeners(uniq('lku'));
    expect(await a.lock(fa, U(0, 0))).toBe(LOCK_STATUS.SUCCESS);
  });

  test('a nonsense lock type is refused without taking a lock', async () => {
    const { a, b, fa, fb } = await twoOpeners(uniq('lkx'));
    try {
      const st = await a.lock(fa, { type: 7, start: 0, length: 0 });
      expect(st).not.toBe(LOCK_STATUS.SUCCESS);
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EINVAL');
    }
    expect(await b.lock(fb, W(0, 0))).toBe(LOCK_STATUS.SUCCESS);
  });
});

describe('locks shared with host processes', () => {
  test('a lock held by a host process blocks a client, and is reported by Tgetlock', async () => {
    const name = uniq('lkh');
    const host = ctx.tree.p('scratch', name);
    fs.writeFileSync(host, Buffer.alloc(100));
    const holder = await hostHoldLock(host, F.WRLCK, 10, 20);
    try {
      const { c, root } = await ctx.session();
      const f = await openAt(c, root, `scratch/${name}`, O.RDWR);
      expect(await c.lock(f, W(15, 1))).toBe(LOCK_STATUS.BLOCKED);
      expect(await c.lock(f, { ...W(15, 1), flags: LOCK_FLAGS.BLOCK })).toBe(LOCK_STATUS.BLOCKED);
      const gl = await c.getlock(f, W(0, 0));
      expect({ type: gl.type, start: gl.start, length: gl.length }).toEqual({ type: LOCK_TYPE.WRLCK, start: 10n, length: 20n });
      await holder.release();
      expect(await c.lock(f, W(15, 1))).toBe(LOCK_STATUS.SUCCESS);
    } finally {
      await holder.release();
    }
  });
});
