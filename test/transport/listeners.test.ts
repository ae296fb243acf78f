// A listening 9P socket outlives accept errors: Node reports a failed
// accept (EMFILE, ENFILE, ENOBUFS) as an 'error' event on the server, and
// throws it when nobody listens, which would take the daemon and every
// guest's mount down with it.
import { afterEach, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { connect, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { listenTcp, listenUnix } from '../../src/listeners.js';
import pino from 'pino';

let dir: string;
const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function acceptError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`accept ${code}`), { code, syscall: 'accept' });
}

test.each(['unix', 'tcp'])('a %s listener logs failed accepts (once a second) and keeps serving', async (kind) => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-listen-'));
  const lines: string[] = [];
  const log = pino(
    { level: 'info' },
    {
      write: (l: string) => {
        lines.push(l);
      },
    },
  );
  let served = 0;
  const onConnection = (s: import('node:net').Socket): void => {
    served++;
    s.end();
  };
  const target = kind === 'unix' ? path.join(dir, 's.sock') : undefined;
  const server = target ? await listenUnix(target, onConnection, log) : (await listenTcp({ host: '127.0.0.1', port: 0 }, onConnection, log)).server;
  servers.push(server);
  for (let i = 0; i < 5; i++) server.emit('error', acceptError('EMFILE'));
  expect(lines.filter((l) => l.includes('still listening'))).toHaveLength(1);
  expect(lines[0]).toContain('EMFILE');
  const a = server.address();
  await new Promise<void>((resolve, reject) => {
    const s = target ? connect(target) : connect((a as { port: number }).port, '127.0.0.1');
    s.on('error', reject)
      .on('close', () => resolve())
      .resume();
  });
  expect(served).toBe(1);
});
