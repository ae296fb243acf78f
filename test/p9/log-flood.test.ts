// The log is not a denial-of-service channel: a client that floods the
// server with bad requests gets a bounded number of log lines, the lines it
// did not get are counted ("suppressed": N, adding up to what was sent), the
// server still answers it, and another client's first bad request is still
// logged (the limit is per peer).
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { pino } from 'pino';
import { startDuofs, type Duofs } from '../../src/server.js';
import { P9Client, P9Error } from './client.js';
import { ensureBuilt, startCli } from './harness.js';
import { T, HEADER_SIZE } from './proto.js';
import { makeTree, type TempTree } from '../support/tree.js';
import { DEFAULT_LOG_LIMITS } from '../../src/log-limit.js';

interface Line {
  level: number;
  msg: string;
  peer?: string;
  suppressed?: number;
  kind?: string;
  [k: string]: unknown;
}

const FLOOD = 4000;
const lines: Line[] = [];
let tree: TempTree;
let duofs: Duofs;
let address: string;

beforeAll(async () => {
  tree = makeTree();
  const log = pino(
    { level: 'info' },
    {
      write: (s: string) => {
        lines.push(JSON.parse(s) as Line);
      },
    },
  );
  duofs = await startDuofs({ sharedDir: tree.dir, ninepTcp: '127.0.0.1:0', log });
  address = `${duofs.ninepTcpAddress!.host}:${duofs.ninepTcpAddress!.port}`;
});

afterAll(async () => {
  await duofs?.close();
  tree?.cleanup();
});

/** Twalk fid -> newfid with no names: on a fid the client never bound, a bad request (EBADF). */
function badWalk(tag: number, fid: number): Buffer {
  const b = Buffer.alloc(HEADER_SIZE + 10);
  b.writeUInt32LE(b.length, 0);
  b[4] = T.walk;
  b.writeUInt16LE(tag, 5);
  b.writeUInt32LE(fid, 7);
  b.writeUInt32LE(fid + 1, 11);
  b.writeUInt16LE(0, 15);
  return b;
}

/** Lines about bad requests from one peer, and the suppressed count those lines (and summaries) report. */
function badRequestLines(peer: string): { logged: Line[]; suppressed: number } {
  const mine = lines.filter((l) => l.peer === peer && /bad 9p request/.test(l.msg));
  const logged = mine.filter((l) => !/suppressed/.test(l.msg));
  return { logged, suppressed: mine.reduce((n, l) => n + (l.suppressed ?? 0), 0) };
}

const waitFor = async (what: string, ok: () => boolean, ms = 5000): Promise<void> => {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('a burst of requests in one write leaves no pile of drain listeners (Node would warn on stderr per burst)', async () => {
  ensureBuilt();
  const srv = await startCli(tree.dir, { logLevel: 'warn' });
  try {
    const { c } = await P9Client.session(srv.address, { aname: tree.dir });
    // 3000 frames in one write: the server answers them in one corked batch,
    // far past the socket's high-water mark, and must wait for one drain, not 3000.
    c.sock.cork();
    const replies = Array.from({ length: 3000 }, (_, i) => c.rawRequest(badWalk(1 + i, 3_000_000 + i)).catch((e: Error) => e));
    c.sock.uncork();
    expect((await Promise.all(replies)).every((e) => e instanceof P9Error && e.code === 'EBADF')).toBe(true);
    await c.close();
  } finally {
    await srv.close();
  }
  expect(srv.log()).not.toMatch(/MaxListenersExceeded/);
  expect(srv.log()).toMatch(/bad 9p request/);
}, 60_000);

test('a flood of bad 9P requests gets a bounded number of log lines, counted, per peer', async () => {
  const { c, root } = await P9Client.session(address, { aname: tree.dir });
  const peer = `tcp:127.0.0.1:${c.sock.localPort}`;
  const replies: Promise<unknown>[] = [];
  for (let i = 0; i < FLOOD; i++) replies.push(c.rawRequest(badWalk(1 + (i % 60000), 1_000_000 + i)));
  const outcomes = await Promise.all(
    replies.map((p) =>
      p.then(
        () => 'answered',
        (e: Error) => (e instanceof P9Error ? e.code : e.message),
      ),
    ),
  );
  // Every bad request is still answered (Rlerror EBADF), none is dropped.
  expect(outcomes.filter((o) => o !== 'EBADF')).toEqual([]);

  const during = badRequestLines(peer);
  expect(during.logged.length).toBeGreaterThan(0);
  expect(during.logged.length).toBeLessThanOrEqual(DEFAULT_LOG_LIMITS.burst + 1);

  // The server still serves this client.
  const f = c.newFid();
  await c.walk(root, f, []);
  await c.clunk(f);

  // Another client's first bad request is logged: the first one's flood does not silence it.
  const other = await P9Client.session(address, { aname: tree.dir });
  const otherPeer = `tcp:127.0.0.1:${other.c.sock.localPort}`;
  await expect(other.c.rawRequest(badWalk(7, 4242))).rejects.toThrow();
  expect(badRequestLines(otherPeer).logged.length).toBe(1);
  await other.c.close();

  // At the end of the session the count is complete: what was logged plus what was suppressed is what was sent.
  await c.close();
  await waitFor('the disconnect line', () => lines.some((l) => l.peer === peer && l.msg === '9p client disconnected'));
  const after = badRequestLines(peer);
  expect(after.suppressed).toBeGreaterThan(0);
  expect(after.logged.length + after.suppressed).toBe(FLOOD);
  // Bounded in total too, summaries included.
  expect(lines.filter((l) => l.peer === peer).length).toBeLessThan(3 * DEFAULT_LOG_LIMITS.burst);
});
