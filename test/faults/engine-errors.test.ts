// The storage fails under the engine: reads of one file get EIO, writes to
// another ENOSPC, an fsync EIO, a read EAGAIN (as a ring short of resources
// could say). Each reaches the client as that errno — FUSE's error reply,
// 9P's Rlerror — on the request that caused it and no other, and both
// protocols keep serving the rest of the export.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { engineUnderTest, FaultEngine } from '../support/engines.js';
import { ROOT, errnoOf } from '../fuse/client.js';
import { FuseFixture } from '../fuse/fixture.js';
import { P9Error } from '../../src/doubles/p9-client.js';

const EIO = 5;
const EAGAIN = 11;
const ENOSPC = 28;
let fx: FuseFixture;

const named = (fd: number): string => {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return '';
  }
};

beforeAll(async () => {
  const engine = new FaultEngine(await engineUnderTest(), (call, fd) => {
    const p = named(fd);
    if (call === 'read' && p.endsWith('/bad-sector')) return EIO;
    if (call === 'read' && p.endsWith('/busy')) return EAGAIN;
    if (call === 'write' && p.endsWith('/full')) return ENOSPC;
    if (call === 'fsync' && p.endsWith('/lost')) return EIO;
    return 0;
  });
  fx = await new FuseFixture().start({ ninep: true, serve: { engine } });
  for (const n of ['bad-sector', 'busy', 'full', 'lost', 'good']) fs.writeFileSync(fx.p(n), `${n} data`);
});

afterAll(async () => {
  await fx?.close();
});

test('virtio-fs: each storage error is the reply to its own request; the rest of the export is served', async () => {
  const { c, fe } = await fx.guest();
  const open = async (name: string, flags: number) => (await c.open((await c.lookup(ROOT, name)).nodeid, flags)).fh;
  const [bad, busy, full, lost, good] = await Promise.all([
    open('bad-sector', 0),
    open('busy', 0),
    open('full', 1),
    open('lost', 1),
    open('good', 0),
  ]);
  const [e1, e2, e3, e4, ok] = await Promise.all([
    errnoOf(c.read(bad, 0n, 100)),
    errnoOf(c.read(busy, 0n, 100)),
    errnoOf(c.write(full, 0n, Buffer.from('more'))),
    errnoOf(c.fsync(lost)),
    c.read(good, 0n, 100),
  ]);
  expect([e1, e2, e3, e4]).toEqual(['EIO', 'EAGAIN', 'ENOSPC', 'EIO']);
  expect(ok.toString()).toBe('good data');
  expect(fs.readFileSync(fx.p('full'), 'utf8')).toBe('full data'); // nothing written
  expect(fx.crashes()).toEqual([]);
  fe.close();
});

test('9P: the same errors as Rlerror, on their own tags; the session goes on', async () => {
  const { c, root } = await fx.ninep();
  const open = async (name: string, flags: number) => {
    const fid = c.newFid();
    await c.walkPath(root, fid, name);
    await c.lopen(fid, flags);
    return fid;
  };
  const code = (p: Promise<unknown>) =>
    p.then(
      () => 'OK',
      (e: unknown) => (e instanceof P9Error ? e.code : String(e)),
    );
  const [bad, busy, full, lost, good] = await Promise.all([
    open('bad-sector', 0),
    open('busy', 0),
    open('full', 1),
    open('lost', 1),
    open('good', 0),
  ]);
  expect(
    await Promise.all([code(c.read(bad, 0, 100)), code(c.read(busy, 0, 100)), code(c.write(full, 0, Buffer.from('more'))), code(c.fsync(lost))]),
  ).toEqual(['EIO', 'EAGAIN', 'ENOSPC', 'EIO']);
  expect((await c.read(good, 0, 100)).toString()).toBe('good data');
  expect(fx.crashes()).toEqual([]);
});
