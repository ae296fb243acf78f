// The rules of src/systemd/activation.ts and src/sys/notify-socket.ts that
// the CLI tests reach only at a cost: how LISTEN_* is read and unset, which
// sockets a front-end refuses, which flags an inherited socket stands for,
// and how a NOTIFY_SOCKET value becomes an address.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ActivationError, assignListenFds, listenFds, remainingFlags } from '../../src/systemd/activation.js';
import { listenUnixSocket } from '../../src/sys/sockets.js';
import { closeFd } from '../../src/sys/fd.js';
import { notifyAddress } from '../../src/sys/notify-socket.js';

let tmp: string;
let unixFd: number;
let unixPath: string;
let tcp: net.Server;
let tcpFd: number;
let tcpPort: number;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-listen-fds-'));
  unixPath = path.join(tmp, 'a.sock');
  unixFd = listenUnixSocket(unixPath);
  tcp = net.createServer();
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
  tcpFd = (tcp as unknown as { _handle: { fd: number } })._handle.fd;
  tcpPort = (tcp.address() as net.AddressInfo).port;
});

afterAll(() => {
  closeFd(unixFd);
  tcp.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const none = { virtiofsSocket: [], ninepVhostSocket: [] };

test('LISTEN_* are unset whatever they say; a LISTEN_PID naming another process is ignored; nonsense is an error', () => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: '12', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b', OTHER: 'x' };
  expect(listenFds(env, 13)).toEqual({ fds: [], ignored: expect.stringMatching(/LISTEN_PID=12 is not this process \(13\)/) });
  expect(env).toEqual({ OTHER: 'x' });
  expect(listenFds({}, 13)).toEqual({ fds: [] });
  expect(() => listenFds({ LISTEN_PID: 'me', LISTEN_FDS: '1' }, 13)).toThrow(ActivationError);
  expect(() => listenFds({ LISTEN_PID: '13', LISTEN_FDS: 'x' }, 13)).toThrow(/LISTEN_FDS=x: expected a number/);
});

test('by name: vhost-user takes unix sockets only; 9P takes unix and TCP', () => {
  expect(() => assignListenFds([{ fd: tcpFd, name: 'virtiofs' }], none)).toThrow(/vhost-user needs a unix socket/);
  expect(assignListenFds([{ fd: tcpFd, name: '9p-tcp' }], none)).toEqual([
    { fd: tcpFd, frontEnd: '9p', where: `tcp:127.0.0.1:${tcpPort} (fd ${tcpFd})` },
  ]);
  expect(assignListenFds([{ fd: unixFd, name: '9p-vhost' }], none)).toEqual([
    { fd: unixFd, frontEnd: '9p-vhost', where: `unix:${unixPath} (fd ${unixFd})` },
  ]);
});

test('an inherited socket stands for the flag with its address, and only that flag is not made again', () => {
  const flags = { virtiofsSocket: [unixPath, '/other.sock'], ninepVhostSocket: [], ninepTcp: `127.0.0.1:${tcpPort}`, ninepSocket: '/9p.sock' };
  const a = assignListenFds([{ fd: unixFd }, { fd: tcpFd, name: 'unknown' }], flags);
  expect(a.map((x) => [x.frontEnd, x.replaces])).toEqual([
    ['virtiofs', unixPath],
    ['9p', `127.0.0.1:${tcpPort}`],
  ]);
  expect(remainingFlags(flags, a)).toEqual({ virtiofsSocket: ['/other.sock'], ninepVhostSocket: [], ninepSocket: '/9p.sock' });
  // the name says 9P, the command line gives that path to virtio-fs: the unit and the flags disagree
  expect(() => assignListenFds([{ fd: unixFd, name: '9p' }], flags)).toThrow(
    /named for 9p but the command line gives that path to another front-end/,
  );
  // a bare port means loopback, as --9p-tcp does
  expect(assignListenFds([{ fd: tcpFd }], { ...none, ninepTcp: String(tcpPort) })[0]!.replaces).toBe(String(tcpPort));
});

test('NOTIFY_SOCKET: a path is NUL-terminated, @name is abstract (a leading NUL, no terminator), anything else is refused', () => {
  expect([...notifyAddress('/run/n')]).toEqual([1, 0, ...Buffer.from('/run/n'), 0]);
  expect([...notifyAddress('@n')]).toEqual([1, 0, 0, ...Buffer.from('n')]);
  expect(() => notifyAddress('run/n')).toThrow(/EINVAL/);
  expect(() => notifyAddress(`/${'x'.repeat(200)}`)).toThrow(/ENAMETOOLONG/);
});
