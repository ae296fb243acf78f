// A request whose backend call waits (the backend answers 50 ms later:
// DUOFS_TEST_DEFERRED_BACKEND) while the client clunks the fid it acts on.
// Each handler checks after the wait that its fid is still what it was:
// the request fails EBADF, and nothing it made is leaked — no inode
// reference, no open fd — and the session serves on.
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDuofs, type Duofs } from '../../src/server.js';
import { P9Client } from './client.js';
import { O } from './proto.js';

jest.setTimeout(30_000);
let dir: string;
let duofs: Duofs;
let address: string;

beforeAll(async () => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-waits-')));
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub', 'f'), 'data');
  process.env.DUOFS_TEST_DEFERRED_BACKEND = '50ms'; // far longer than the clunk takes to arrive
  try {
    duofs = await startDuofs({ sharedDir: dir, ninepTcp: '127.0.0.1:0', logLevel: 'silent', sandbox: 'none' } as Parameters<typeof startDuofs>[0]);
  } finally {
    delete process.env.DUOFS_TEST_DEFERRED_BACKEND;
  }
  const a = duofs.ninepTcpAddress!;
  address = `${a.host}:${a.port}`;
});
afterAll(async () => {
  await duofs?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const errno = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: { code?: string }) => e.code ?? String(e),
  );
const fds = (): number => fs.readdirSync('/proc/self/fd').length;

test('Twalk moving a fid, Tlopen and Tlcreate each meet a Tclunk of their fid while they wait: EBADF, nothing leaked', async () => {
  const { c, root } = await P9Client.session(address, { aname: dir });
  const inodes0 = duofs.backend.inodes.size;
  const fds0 = fds();
  for (let round = 0; round < 5; round++) {
    // A walk that moves fid f into sub/f, and a clunk of f sent right behind it.
    const f = c.newFid();
    await c.walk(root, f, []);
    const moved = errno(c.walk(f, f, ['sub', 'f']));
    const clunked = errno(c.clunk(f));
    expect([await moved, await clunked]).toEqual(['EBADF', 'ok']);
    // An open of fid g, and a clunk behind it.
    const g = c.newFid();
    await c.walk(root, g, ['sub', 'f']);
    const opened = errno(c.lopen(g, O.RDONLY));
    const gone = errno(c.clunk(g));
    expect([await opened, await gone]).toEqual(['EBADF', 'ok']);
    // A create through fid h, and a clunk behind it: the file is made, the handle is not kept.
    const h = c.newFid();
    await c.walk(root, h, ['sub']);
    const created = errno(c.lcreate(h, `new${round}`, O.RDWR | O.CREAT, 0o644, 0));
    const dropped = errno(c.clunk(h));
    expect([await created, await dropped]).toEqual(['EBADF', 'ok']);
    expect(fs.existsSync(path.join(dir, 'sub', `new${round}`))).toBe(true);
  }
  // Nothing held beyond what the session's own root fid holds; the session still serves.
  expect(duofs.backend.inodes.size).toBe(inodes0);
  expect(fds()).toBeLessThanOrEqual(fds0);
  const k = c.newFid();
  expect(await c.walk(root, k, ['sub', 'f'])).toHaveLength(2);
  await c.lopen(k, O.RDONLY);
  expect((await c.read(k, 0, 10)).toString()).toBe('data');
  await c.close();
});
