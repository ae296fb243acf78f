// The listener and the life of a connection: serving on after the frontend
// goes away (QEMU's reconnect), one frontend at a time, the socket file
// (mode, stale files), inherited listening fds, and shutdown.
import { afterEach, describe, expect, test } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { StartupError } from '../../src/listeners.js';
import { VhostUserServer } from '../../protocols/vhost-user/server.js';
import { closeFd } from '../../src/sys/fd.js';
import { connectUnixSocket, listenUnixSocket } from '../../src/sys/sockets.js';
import { EchoDevice } from './echo-device.js';
import { VhostUserFrontend } from './driver.js';
import { Fixture, sleep, within } from './harness.js';

let fx: Fixture | undefined;
const cleanups: (() => void)[] = [];
afterEach(() => {
  fx?.close();
  fx = undefined;
  for (const c of cleanups.splice(0)) c();
});

const echoOnce = async (fe: VhostUserFrontend, text: string) =>
  (await within(fe.request(1, { out: [Buffer.from(text)], in: [32] }), 2000, text)).data.toString();

const guestMappings = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('memfd:duofs-test-guest')).length;

describe('serving on', () => {
  test('after the frontend disconnects the device is reset and the next frontend is served, again and again', async () => {
    fx = new Fixture();
    for (let i = 1; i <= 4; i++) {
      const fe = await fx.connect();
      expect(fx.server.connection?.serial).toBe(i);
      expect(await echoOnce(fe, `boot ${i}`)).toBe(`boot ${i}`);
      const gone = fx.nextDisconnect();
      fe.close(); // QEMU killed, or the guest shut down
      expect(await within(gone, 2000, 'disconnect')).toEqual({ kind: 'eof' });
      expect(fx.device.resets).toBe(i);
      expect(guestMappings()).toBe(0); // the session's mappings went with it
    }
  });

  test('one frontend at a time: a second one waits in the backlog and is served when the first goes', async () => {
    fx = new Fixture();
    const first = await fx.connect();
    let secondReady = false;
    const second = fx.connect().then((fe) => {
      secondReady = true;
      return fe;
    });
    await sleep(100);
    expect(secondReady).toBe(false);
    expect(await echoOnce(first, 'first')).toBe('first');
    first.close();
    const fe2 = await within(second, 2000, 'second frontend served');
    expect(await echoOnce(fe2, 'second')).toBe('second');
  });

  test('requests outstanding when the frontend dies: completing them later is harmless, then memory is released', async () => {
    fx = new Fixture();
    const fe = await fx.connect();
    fx.device.mode = 'hold';
    void fe.request(1, { out: [Buffer.from('orphan')], in: [32] });
    await sleep(20);
    expect(fx.device.held.length).toBe(1);
    const orphan = fx.device.held[0]!;
    const gone = fx.nextDisconnect();
    fe.close();
    await within(gone, 2000, 'disconnect');
    expect(fx.device.held.length).toBe(0); // reset() dropped it from the device's view...
    expect(guestMappings()).toBe(1); // ...but its memory stays mapped while the chain is out
    expect(orphan.complete(6)).toBe(true);
    expect(guestMappings()).toBe(0);
    fx.device.mode = 'sync';
    const fe2 = await fx.connect();
    expect(await echoOnce(fe2, 'next guest')).toBe('next guest');
  });

  test('server.close() drops the frontend and removes the socket file', async () => {
    fx = new Fixture();
    const fe = await fx.connect();
    fx.server.close();
    expect((await within(fe.closed, 2000, 'frontend sees close')).kind).not.toBe('local');
    expect(() => statSync(fx!.socketPath)).toThrow();
  });
});

describe('the socket', () => {
  const logger = pino({ level: 'silent' });
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), 'duofs-vhost-sock-'));
    cleanups.push(() => rmSync(d, { recursive: true, force: true }));
    return d;
  };

  test('is created owner-only (0600)', () => {
    fx = new Fixture();
    expect(statSync(fx.socketPath).mode & 0o777).toBe(0o600);
  });

  test('a stale socket file is replaced; a live one or a non-socket is a startup error', async () => {
    const d = tmp();
    const path = join(d, 's.sock');
    closeFd(listenUnixSocket(path)); // a server that died: the file stays, nobody listens
    const s1 = VhostUserServer.listen({ device: new EchoDevice(), logger, socketPath: path });
    cleanups.push(() => s1.close());
    expect(() => VhostUserServer.listen({ device: new EchoDevice(), logger, socketPath: path })).toThrow(StartupError);
    expect(() => VhostUserServer.listen({ device: new EchoDevice(), logger, socketPath: path })).toThrow(/address in use/);
    const file = join(d, 'file');
    writeFileSync(file, 'x');
    expect(() => VhostUserServer.listen({ device: new EchoDevice(), logger, socketPath: file })).toThrow(/is not a socket/);
    const fe = await VhostUserFrontend.connect({ socketPath: path });
    cleanups.push(() => fe.close());
    expect(await echoOnce(fe, 'replaced')).toBe('replaced');
  });

  test('an inherited listening fd is served; an fd that is not a listening socket is refused', async () => {
    const d = tmp();
    const path = join(d, 'inherited.sock');
    const fd = listenUnixSocket(path);
    const server = VhostUserServer.listen({ device: new EchoDevice(), logger, listenFd: fd });
    cleanups.push(() => server.close());
    const fe = await VhostUserFrontend.connect({ socketPath: path });
    cleanups.push(() => fe.close());
    expect(await echoOnce(fe, 'via --fd')).toBe('via --fd');
    const connected = connectUnixSocket(path); // a connected (not listening) socket
    cleanups.push(() => closeFd(connected));
    expect(() => VhostUserServer.listen({ device: new EchoDevice(), logger, listenFd: connected })).toThrow(/is not a listening unix socket/);
    expect(() => VhostUserServer.listen({ device: new EchoDevice(), logger })).toThrow(/exactly one/);
  });
});
