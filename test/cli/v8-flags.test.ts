// The serving process runs with SERVER_V8_FLAGS (src/sys/v8-flags.ts: a 64 MiB
// initial old space, without which 1 MiB 9P writes cost a full GC every few
// requests): the sandbox supervisor starts the server with them, and the
// bins carry them in their #! line for a duofs started by path.
import { afterEach, expect, jest, test } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVER_V8_FLAGS, withServerV8Flags } from '../../src/sys/v8-flags.js';
import { P9Client } from '../p9/client.js';

jest.setTimeout(60_000);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

test('the bins start node with the server flags when run by path', () => {
  for (const b of ['duofs.js', 'duofs-virtiofsd.js']) {
    const first = fs.readFileSync(path.join(root, 'bin', b), 'utf8').split('\n')[0]!;
    expect(first.startsWith('#!/usr/bin/env -S node ')).toBe(true);
    for (const f of SERVER_V8_FLAGS) expect(first.split(' ')).toContain(f);
  }
  const r = spawnSync(path.join(root, 'bin', 'duofs.js'), ['--version'], { encoding: 'utf8' });
  expect(r.stdout.trim()).toMatch(/^duofs /);
});

test('withServerV8Flags adds each flag once and keeps one the operator gave', () => {
  expect(withServerV8Flags(['--trace-gc'])).toEqual([...SERVER_V8_FLAGS, '--trace-gc']);
  expect(withServerV8Flags(['--initial-old-space-size=256'])).toEqual(['--initial-old-space-size=256']);
});

test('a sandboxed server (under the supervisor) runs with the flags', async () => {
  if (process.getuid?.() !== 0) return; // the namespace sandbox as root (CI runs as root)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-v8-'));
  const exp = path.join(tmp, 'export');
  fs.mkdirSync(exp);
  const sock = path.join(tmp, 'v8.sock');
  try {
    const p = spawn(
      process.execPath,
      [path.join(root, 'bin', 'duofs.js'), 'serve', '--shared-dir', exp, '--9p-socket', sock, '--sandbox', 'namespace', '--log-level', 'warn'],
      {
        stdio: 'ignore',
      },
    );
    children.push(p);
    for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    const { c } = await P9Client.session({ path: sock }, { aname: exp, timeoutMs: 30_000 });
    await c.close();
    // The server is the process whose command line has the socket but is not the supervisor (p itself).
    const servers = fs
      .readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d) && Number(d) !== p.pid)
      .map((d) => {
        try {
          return fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
        } catch {
          return [];
        }
      })
      .filter((argv) => argv.includes(sock) && argv[0] === process.execPath);
    expect(servers.length).toBe(1);
    for (const f of SERVER_V8_FLAGS) expect(servers[0]).toContain(f);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
