// The log is not a denial-of-service channel on virtio-fs either: a guest
// that floods its device with bad FUSE requests, broken chains and refused
// vhost-user messages gets a bounded number of log lines per kind, the rest
// are counted and the counts add up when the guest goes, the device keeps
// answering, a 9P client's first bad request is still logged (per peer),
// and the guest's next boot on the same device gets no fresh allowance.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { FuseFixture, type LogLine } from './fixture.js';
import { OP, ROOT, S_IFMT, inHeader } from './client.js';
import { T, HEADER_SIZE } from '../p9/proto.js';
import { DEFAULT_LOG_LIMITS } from '../../src/log-limit.js';
import { Req } from '../../protocols/vhost-user/protocol.js';

const BAD_READS = 2000;
const SHORT_CHAINS = 2000;
const REFUSED = 1000;
const BATCH = 64;
let fx: FuseFixture;

beforeAll(async () => {
  fx = await new FuseFixture().start({ ninep: true });
});

afterAll(async () => {
  await fx?.close();
});

const isVirtiofs = (l: LogLine): boolean => typeof l.peer === 'string' && l.peer.startsWith('virtiofs:');
const isSummary = (l: LogLine): boolean => /suppressed \(rate limit\)/.test(l.msg);

/** Lines of a message pattern (by default from the virtio-fs device): those written for events, and the suppressed total reported. */
function tally(re: RegExp, from: (l: LogLine) => boolean = isVirtiofs): { written: number; suppressed: number } {
  const mine = fx.lines.filter((l) => from(l) && re.test(l.msg));
  return {
    written: mine.filter((l) => !isSummary(l)).length,
    suppressed: mine.reduce((n, l) => n + (typeof l.suppressed === 'number' ? l.suppressed : 0), 0),
  };
}

const waitFor = async (what: string, ok: () => boolean, ms = 5000): Promise<void> => {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('a flood of bad FUSE requests and chains gets bounded, counted log lines, per peer', async () => {
  const g = await fx.guest();
  const readIn = Buffer.alloc(40);
  readIn.writeBigUInt64LE(0xdead_0000n, 0); // a file handle never opened: EBADF, a bad request
  readIn.writeUInt32LE(4096, 16);
  for (let i = 0; i < BAD_READS; i += BATCH) {
    const replies = [];
    for (let j = i; j < Math.min(BAD_READS, i + BATCH); j++) replies.push(g.c.send(OP.READ, [readIn], { nodeid: ROOT }).reply);
    for (const r of await Promise.all(replies)) expect(-r.error).toBe(9); // EBADF
  }
  const shortHeader = inHeader(40, OP.GETATTR, 1n, ROOT, { uid: 0, gid: 0 }).subarray(0, 12);
  for (let i = 0; i < SHORT_CHAINS; i += BATCH) {
    const done = [];
    for (let j = i; j < Math.min(SHORT_CHAINS, i + BATCH); j++) done.push(g.fe.request(1, { out: [shortHeader], in: [16] }));
    await Promise.all(done);
  }

  // vhost-user messages the device refuses (a nonzero REPLY_ACK each).
  for (let i = 0; i < REFUSED; i++) expect(await g.fe.send(Req.SET_FEATURES, Buffer.alloc(4))).not.toBe(0n);
  const anyPeer = (): boolean => true;
  const refused = tally(/request refused/, anyPeer);
  expect(refused.written).toBeGreaterThan(0);
  expect(refused.written).toBeLessThanOrEqual(DEFAULT_LOG_LIMITS.burst + 1);

  const bad = tally(/bad fuse request/);
  const short = tally(/chain shorter than a FUSE header/);
  expect(bad.written).toBeGreaterThan(0);
  expect(bad.written).toBeLessThanOrEqual(DEFAULT_LOG_LIMITS.burst + 1);
  expect(short.written).toBeGreaterThan(0);
  expect(short.written).toBeLessThanOrEqual(DEFAULT_LOG_LIMITS.burst + 1);

  // The device still answers a well-formed request.
  const a = await g.c.getattr(ROOT);
  expect(a.attr.mode & S_IFMT).toBe(0o040000);

  // A 9P client of the same server is another peer: its first bad request is logged.
  const p9 = await fx.ninep();
  const walk = Buffer.alloc(HEADER_SIZE + 10);
  walk.writeUInt32LE(walk.length, 0);
  walk[4] = T.walk;
  walk.writeUInt16LE(3, 5);
  walk.writeUInt32LE(777, 7); // not a fid of this client
  walk.writeUInt32LE(778, 11);
  await expect(p9.c.rawRequest(walk)).rejects.toThrow(/EBADF/);
  expect(fx.lines.filter((l) => typeof l.peer === 'string' && l.peer.startsWith('unix:') && /bad 9p request/.test(l.msg))).toHaveLength(1);

  // The guest goes (the device is reset): the counts are complete and add up.
  g.fe.close();
  await waitFor('the device reset', () => fx.lines.some((l) => /frontend (disconnected|connection ended)/.test(l.msg)));
  const badAfter = tally(/bad fuse request/);
  const shortAfter = tally(/chain shorter than a FUSE header/);
  expect(badAfter.written + badAfter.suppressed).toBe(BAD_READS);
  expect(shortAfter.written + shortAfter.suppressed).toBe(SHORT_CHAINS);
  const refusedAfter = tally(/request refused/, anyPeer);
  expect(refusedAfter.written + refusedAfter.suppressed).toBe(REFUSED);
  const total = fx.lines.filter(isVirtiofs).length;
  expect(total).toBeLessThan(4 * DEFAULT_LOG_LIMITS.burst);

  // The guest's next boot on this device gets no fresh allowance: its bad requests are still counted, not written.
  const g2 = await fx.guest();
  const replies = [];
  for (let j = 0; j < BATCH; j++) replies.push(g2.c.send(OP.READ, [readIn], { nodeid: ROOT }).reply);
  await Promise.all(replies);
  expect(tally(/bad fuse request/).written).toBe(badAfter.written);
  expect((await g2.c.getattr(ROOT)).attr.mode & S_IFMT).toBe(0o040000);
});
