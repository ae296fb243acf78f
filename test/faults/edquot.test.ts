// Fault injection: a disk quota that runs out part way through a write.
// QuotaEngine (test/support/engines.ts) sits under the backend: the write
// that crosses the limit is short (the bytes up to the limit land in the
// file) and every later write fails with EDQUOT, as pwrite(2) does on a
// filesystem whose quota runs out. Through 9P, virtio-fs (the vhost-user
// frontend double) and the /dev/fuse path with --writeback (a FUSE session
// fed plain buffers, as test/faults/enospc.test.ts does): every byte a reply
// acknowledged is in the host file, the client's error is EDQUOT (never
// ENOSPC, EIO or a short success under the writeback cache), and once the
// quota is raised the same handle writes again.
//
// Only the engine's data path can be faulted this way: creates, mkdir and
// xattrs run as syscalls in the backend, which has no injection point, so
// EDQUOT on create is tested on a real quota (test/faults/real-quota.test.ts).
import { afterAll, beforeAll, beforeEach, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { pino } from 'pino';
import { EDQUOT, QuotaEngine, engineUnderTest } from '../support/engines.js';
import { ROOT, OP, inHeader, initIn, cstr } from '../fuse/client.js';
import { FuseFixture } from '../fuse/fixture.js';
import { O } from '../p9/proto.js';
import { FuseSession } from '../../protocols/fuse/session.js';
import { RequestBody } from '../../protocols/fuse/request.js';
import { defaultFuseOptions } from '../../protocols/fuse/options.js';

let fx: FuseFixture;
let quota: QuotaEngine;

const charged = (fd: number): boolean => {
  try {
    return /\/quota-[^/]*$/.test(fs.readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return false;
  }
};

beforeAll(async () => {
  quota = new QuotaEngine(await engineUnderTest(), charged, 0);
  fx = await new FuseFixture().start({ ninep: true, serve: { engine: quota } });
});

afterAll(async () => {
  await fx?.close();
});

const LIMIT = 100_000;
beforeEach(() => {
  quota.used = 0;
  quota.limit = LIMIT;
});

const chunk = (i: number, n: number): Buffer => Buffer.alloc(n, 0x41 + (i % 26));
const codeOf = (e: unknown): string => String((e as { code?: unknown }).code ?? e);

/** Writes chunks until one fails; returns what was acknowledged and the error. */
async function fill(write: (off: number, data: Buffer) => Promise<number>, size: number): Promise<{ acked: Buffer; error: string; short: number }> {
  const acked: Buffer[] = [];
  let off = 0;
  let error = '';
  let short = 0;
  for (let i = 0; i < 50 && !error; i++) {
    const data = chunk(i, size);
    try {
      const n = await write(off, data);
      if (n < data.length) short++;
      if (n === 0) error = 'a write of 0 bytes';
      acked.push(data.subarray(0, n));
      off += n;
    } catch (e) {
      error = codeOf(e);
    }
  }
  return { acked: Buffer.concat(acked), error, short };
}

test('9P: a write the quota cuts short is acknowledged for what landed, the next is Rlerror(EDQUOT), and a raised quota writes again', async () => {
  const { c, root } = await fx.ninep();
  const f = c.newFid();
  await c.walk(root, f, []);
  await c.lcreate(f, 'quota-9p', O.RDWR | O.CREAT | O.EXCL, 0o644, 0);
  const r = await fill((off, d) => c.write(f, off, d), 40_000);
  expect(r.error).toBe('EDQUOT');
  expect(r.short).toBe(1); // 40 000 + 40 000 + 20 000 of 40 000, then EDQUOT
  expect(r.acked.length).toBe(LIMIT);
  expect(fs.readFileSync(fx.p('quota-9p')).equals(r.acked)).toBe(true);
  quota.grant(5);
  expect(await c.write(f, r.acked.length, Buffer.from('more!'))).toBe(5);
  expect(fs.readFileSync(fx.p('quota-9p')).subarray(LIMIT).toString()).toBe('more!');
  await c.clunk(f);
  expect(fx.crashes()).toEqual([]);
});

test('virtio-fs: a WRITE the quota cuts short answers the short count, the next EDQUOT; fsync and a raised quota then succeed', async () => {
  const { c } = await fx.guest();
  const { open } = await c.create(ROOT, 'quota-vfs', O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 });
  const r = await fill((off, d) => c.write(open.fh, BigInt(off), d), (100_609 / 3) | 0);
  expect(r.error).toBe('EDQUOT');
  expect(r.short).toBe(1);
  expect(r.acked.length).toBe(LIMIT);
  expect(fs.readFileSync(fx.p('quota-vfs')).equals(r.acked)).toBe(true);
  await c.fsync(open.fh); // nothing acknowledged is pending: write(2) reported the error itself
  quota.grant(4096);
  expect(await c.write(open.fh, BigInt(LIMIT), chunk(7, 4096))).toBe(4096);
  await c.release(open.fh);
  expect(fs.statSync(fx.p('quota-vfs')).size).toBe(LIMIT + 4096);
  expect(fx.crashes()).toEqual([]);
});

// With the writeback cache the kernel takes a short success as the whole range written (defect 2):
// the WRITE that meets the quota part way must fail with EDQUOT, and the error is what the guest's fsync reports.
test('/dev/fuse path with --writeback: the WRITE the quota cuts short fails with EDQUOT, never a short success', async () => {
  const s = new FuseSession(
    { backend: fx.duofs.backend, log: pino({ level: 'silent' }), options: { ...defaultFuseOptions, writeback: true } },
    'dev-fuse-like',
  );
  let unique = 1n;
  const call = (opcode: number, nodeid: bigint, ...args: Buffer[]): Promise<{ error: number; body: Buffer }> =>
    new Promise((resolve) => {
      const a = Buffer.concat(args);
      s.handle(RequestBody.of(Buffer.concat([inHeader(40 + a.length, opcode, unique++, nodeid), a])), {
        send: (error, body) => {
          resolve({ error, body: Buffer.concat(body) });
          return true;
        },
        sendRead: () => resolve({ error: 0, body: Buffer.alloc(0) }),
        none: () => resolve({ error: -1, body: Buffer.alloc(0) }),
      });
    });
  const init = await call(OP.INIT, 0n, initIn());
  expect(init.body.readUInt32LE(12) & (1 << 10)).not.toBe(0); // FUSE_WRITEBACK_CACHE negotiated
  const created = await call(OP.CREATE, 1n, Buffer.from([0o102, 0, 0, 0, 0xa4, 0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), cstr('quota-devfuse'));
  expect(created.error).toBe(0);
  const nodeid = created.body.readBigUInt64LE(0);
  const fh = created.body.readBigUInt64LE(128);
  const write = async (off: number, data: Buffer): Promise<number> => {
    const w = Buffer.alloc(40);
    w.writeBigUInt64LE(fh, 0);
    w.writeBigUInt64LE(BigInt(off), 8);
    w.writeUInt32LE(data.length, 16);
    const r = await call(OP.WRITE, nodeid, w, data);
    if (r.error) throw Object.assign(new Error(`errno ${r.error}`), { code: r.error === EDQUOT ? 'EDQUOT' : `errno ${r.error}` });
    return r.body.readUInt32LE(0);
  };
  const r = await fill(write, 30_000);
  s.close();
  expect(r.error).toBe('EDQUOT');
  expect(r.short).toBe(0); // 3 × 30 000 acknowledged, then the error, not "10 000 of 30 000"
  expect(r.acked.length).toBe(90_000);
  const host = fs.readFileSync(fx.p('quota-devfuse'));
  expect(host.subarray(0, r.acked.length).equals(r.acked)).toBe(true);
  expect(host.length).toBe(LIMIT); // the failed WRITE's first 10 000 bytes landed, unacknowledged (the kernel rewrites or reports them)
});
