// Log line shapes: virtiofsd's text lines (`[time LEVEL target] msg`) and
// syslog datagrams on a unix datagram socket (what /dev/log is), received
// by a real datagram server (python: Node has no unix datagram sockets).
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger, preparedLine, syslogLine, textLine } from '../../src/log.js';

test("text lines are virtiofsd's env_logger lines (level padded to 5), then the fields", () => {
  const json = JSON.stringify({
    level: 50,
    time: Date.UTC(2026, 11, 2, 18, 18, 16, 123),
    pid: 7,
    msg: '/nonexist does not exist',
    peer: 'vu:0',
    n: 3,
    path: '/a b',
  });
  expect(textLine(json, 'duofs-virtiofsd')).toBe('[2026-12-02T18:18:16Z ERROR duofs-virtiofsd] /nonexist does not exist peer=vu:0 n=3 path="/a b"\n');
  expect(textLine(JSON.stringify({ level: 30, time: 0, msg: 'x' }))).toBe('[1970-01-01T00:00:00Z INFO  duofs] x\n');
  expect(textLine(JSON.stringify({ level: 40, time: 0, msg: 'w', err: { code: 'EIO' } }))).toBe(
    '[1970-01-01T00:00:00Z WARN  duofs] w err="{\\"code\\":\\"EIO\\"}"\n',
  );
});

test('a prepared line (the seccomp trap handler writes it) follows the log format: text as textLine minus the time, else JSON', () => {
  const msg = 'seccomp: forbidden system call ptrace (101); ending the process (SIGSYS)';
  const text = preparedLine('text', 'virtiofsd', 60, msg, { seccomp: 'trap', syscall: 'ptrace', nr: 101 });
  expect(text).toBe(`[ERROR virtiofsd] ${msg} seccomp=trap syscall=ptrace nr=101\n`);
  const json = preparedLine(undefined, 'duofs', 60, msg, { seccomp: 'trap', syscall: 'ptrace', nr: 101 });
  expect(JSON.parse(json)).toEqual({ level: 60, pid: process.pid, seccomp: 'trap', syscall: 'ptrace', nr: 101, msg });
  expect(json.endsWith('\n')).toBe(true);
});

test("syslog lines: facility user, the level's severity, the tag and pid", () => {
  expect(syslogLine(JSON.stringify({ level: 30, time: Date.now(), msg: 'started' }), 'duofs-virtiofsd', 42)).toMatch(
    /^<14>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d duofs-virtiofsd\[42\]: started$/,
  );
  expect(syslogLine(JSON.stringify({ level: 50, time: 0, msg: 'e' }))).toMatch(/^<11>/);
  expect(syslogLine(JSON.stringify({ level: 40, time: 0, msg: 'w' }))).toMatch(/^<12>/);
  expect(syslogLine(JSON.stringify({ level: 20, time: 0, msg: 'd' }))).toMatch(/^<15>/);
});

let dir: string;
let sock: string;
let server: ChildProcess;
let received = '';
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-syslog-'));
  sock = path.join(dir, 'log');
  const py = `import socket,sys\ns=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('ready', flush=True)\nwhile True:\n  d=s.recv(65536)\n  sys.stdout.write(d.decode()+'\\n'); sys.stdout.flush()\n`;
  server = spawn('/usr/bin/python3', ['-c', py, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) =>
    server.stdout!.on('data', (d: Buffer) => {
      received += d.toString();
      if (received.includes('ready')) resolve();
    }),
  );
});
afterAll(() => {
  server.kill();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('--syslog sends each event as one datagram to the socket', async () => {
  const log = createLogger('info', { syslog: sock, target: 'duofs-virtiofsd' });
  log.info({ export: '/srv' }, 'duofs-virtiofsd started');
  log.debug('not at info');
  log.error('it broke');
  const deadline = Date.now() + 5000;
  while (!received.includes('it broke') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const lines = received.split('\n').filter((l) => l.startsWith('<'));
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatch(new RegExp(`^<14>.* duofs-virtiofsd\\[${process.pid}\\]: duofs-virtiofsd started export=/srv$`));
  expect(lines[1]).toMatch(/^<11>.*: it broke$/);
});
