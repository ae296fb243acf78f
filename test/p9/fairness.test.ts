// One connection pipelining thousands of requests must not hold up the
// others: the server parses a bounded batch per turn of the event loop and
// continues on a later one, so another client's request is answered before
// the flood is through. Backpressure still holds: a client that does not
// read its replies stops being read, and gets every reply once it reads.
import { expect, jest, test } from '@jest/globals';
import path from 'node:path';
import { sleep, startTarget, useServer } from './fixture.js';
import { T, Writer } from './proto.js';
import { P9Client } from './client.js';

jest.setTimeout(60_000);
const ctx = useServer();

/** Requests a flood can pipeline at once: all fit one 64 KiB read on the server (9 bytes each). */
const FLOOD = 5000;
/** A tag never used by these clients (Tflush of it is answered at once, with 7 bytes). */
const IDLE_TAG = 0xfffe;

/** Sends FLOOD Tflush in one write; resolves each time with the count of replies so far. */
function flood(c: P9Client, onReply: (n: number) => void): Promise<void> {
  const body = new Writer().u16(IDLE_TAG).done();
  let n = 0;
  c.sock.cork();
  const all = Array.from({ length: FLOOD }, () => c.request(T.flush, body).then(() => onReply(++n)));
  c.sock.uncork();
  return Promise.all(all).then(() => {});
}

test('a connection pipelining thousands of requests does not keep another connection waiting until it is through', async () => {
  const a = await ctx.session();
  const b = await ctx.session();
  const events: string[] = [];
  let other: Promise<void> | undefined;
  // B asks once A's first reply is back, i.e. once the server is working on A's flood.
  const done = flood(a.c, (n) => {
    if (n === 1)
      other = b.c.getattr(b.root).then(() => {
        events.push(`B answered after ${countA} of A's replies`);
      });
    countA = n;
  });
  let countA = 0;
  await done;
  events.push('A done');
  await other;
  expect(events).toHaveLength(2);
  expect(events[0]).toMatch(/^B answered/);
  expect(events[1]).toBe('A done');
  expect(a.c.violations).toEqual([]);
});

test('a client that stops reading replies is stopped being read, and gets every reply once it reads again', async () => {
  // A unix socket: its kernel buffers are small and fixed (TCP's grow), so
  // a server that stops reading shows as our own writes backing up.
  const sock = path.join(ctx.tree.base, 'fair.sock');
  const srv = await startTarget(ctx.tree.dir, { socketPath: sock });
  let client: P9Client | undefined;
  try {
    const { c, root } = await P9Client.session(sock, { aname: ctx.tree.dir, timeoutMs: 0 });
    client = c;
    // Large replies (Rgetattr: 160 bytes for 19) fill the socket buffers
    // fast; the requests go out in one writev, which completes only once
    // the server has read (nearly) all of them.
    const N = 30_000;
    c.sock.pause();
    c.sock.cork();
    const replies = Array.from({ length: N }, () => c.getattr(root));
    c.sock.uncork();
    // The server stops reading: our requests stay backed up on our side.
    // (A server that went on reading takes well under this to drain them.)
    for (let i = 0; i < 100; i++) {
      await sleep(10);
      expect(c.sock.writableLength).toBeGreaterThan(0);
    }
    // Reading again lets everything through, each request answered once.
    c.sock.resume();
    const got = await Promise.all(replies);
    expect(got).toHaveLength(N);
    expect(c.violations).toEqual([]);
    expect((await c.getattr(root)).qid.type).toBe(ctx.rootQid.type);
    await c.close();
  } finally {
    client?.sock.destroy();
    await srv.close();
  }
});
