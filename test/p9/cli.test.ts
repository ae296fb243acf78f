// The CLI: `node bin/duofs.js serve --shared-dir DIR --9p-socket PATH
// --9p-tcp HOST:PORT --log-level info`, driven as a user would.
import { expect, jest, test, beforeAll, afterAll } from '@jest/globals';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureBuilt, startCli, type CliServer, repoRoot } from './harness.js';
import { makeTree, populate, type TempTree } from '../support/tree.js';
import { P9Client } from './client.js';
import { ensureDiod } from '../support/diod.js';
import { O, QTDIR } from './proto.js';

jest.setTimeout(180_000);

let tree: TempTree;
let srv: CliServer;
let sock: string;

beforeAll(async () => {
  ensureDiod();
  ensureBuilt();
  tree = makeTree('duofs-cli-');
  populate(tree.dir);
  sock = path.join(tree.base, 'cli.sock');
  srv = await startCli(tree.dir, { socketPath: sock, logLevel: 'info' });
});

afterAll(async () => {
  await srv?.close();
  tree?.cleanup();
});

test('serves the export over TCP and the unix socket at once', async () => {
  for (const addr of [srv.address, sock]) {
    const { c, root, qid } = await P9Client.session(addr, { aname: tree.dir });
    expect(qid.type).toBe(QTDIR);
    expect(qid.path).toBe(fs.statSync(tree.dir, { bigint: true }).ino);
    const f = c.newFid();
    await c.walk(root, f, ['hello.txt']);
    await c.lopen(f, O.RDONLY);
    expect((await c.read(f, 0, 100)).toString()).toBe('hello, world\n');
    await c.close();
  }
});

test('logs JSON lines at info level', () => {
  const lines = srv
    .log()
    .split('\n')
    .filter((l) => l.startsWith('{'));
  expect(lines.length).toBeGreaterThan(0);
  for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
});

test('diodls works against the CLI server', async () => {
  const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const p = spawn('/usr/sbin/diodls', ['-s', srv.address, '-a', tree.dir, '-t', '20']);
    let stdout = '';
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    p.on('close', (code) => resolve({ code, stdout }));
  });
  expect(out.code).toBe(0);
  expect(out.stdout.split('\n').filter(Boolean).sort()).toEqual(fs.readdirSync(tree.dir).sort());
});

test('refuses to start without an export or a listener', async () => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; err: string }>((resolve) => {
      const p = spawn(process.execPath, [path.join(repoRoot, 'bin/duofs.js'), ...args]);
      let err = '';
      p.stderr.on('data', (d: Buffer) => {
        err += d.toString();
      });
      p.on('close', (code) => resolve({ code, err }));
    });
  const missing = await run(['serve', '--shared-dir', path.join(tree.base, 'nope'), '--9p-tcp', '127.0.0.1:0']);
  expect(missing.code).not.toBe(0);
  expect(missing.err).toMatch(/nope/);
  const nothing = await run(['serve', '--shared-dir', tree.dir]);
  expect(nothing.code).not.toBe(0);
});

test('SIGTERM stops it cleanly and removes the socket', async () => {
  const sock2 = path.join(tree.base, 'cli2.sock');
  const s2 = await startCli(tree.dir, { socketPath: sock2 });
  const { c } = await P9Client.session(sock2, { aname: tree.dir });
  const exit = new Promise<number | null>((r) => s2.proc.once('exit', (code) => r(code)));
  s2.proc.kill('SIGTERM');
  expect(await exit).toBe(0);
  expect(fs.existsSync(sock2)).toBe(false);
  expect(await c.waitClosed(5000)).toBe(true);
});

test('with --sandbox none (no supervisor) SIGTERM removes the socket files too', async () => {
  const sock3 = path.join(tree.base, 'cli3.sock');
  const vfs = path.join(tree.base, 'cli3-vfs.sock');
  const s3 = await startCli(tree.dir, { socketPath: sock3, extraArgs: ['--sandbox', 'none', '--virtiofs-socket', vfs] });
  const { c } = await P9Client.session(sock3, { aname: tree.dir });
  expect(fs.existsSync(vfs)).toBe(true);
  const exit = new Promise<number | null>((r) => s3.proc.once('exit', (code) => r(code)));
  s3.proc.kill('SIGTERM');
  expect(await exit).toBe(0);
  expect(fs.existsSync(sock3)).toBe(false);
  expect(fs.existsSync(vfs)).toBe(false);
  await c.close().catch(() => {});
});
