// Socket activation and sd_notify as systemd drives them: the CLI serves
// 9P (many clients on one inherited listener), virtio-fs and virtio-9p on
// listening sockets it inherits at fds 3, 4, ... (LISTEN_PID, LISTEN_FDS,
// LISTEN_FDNAMES), in and out of its sandbox, never unlinks them, and tells
// a NOTIFY_SOCKET READY=1 with STATUS= once it serves and STOPPING=1 on
// SIGTERM. A LISTEN_* the command line cannot match is a usage error (exit
// 2) naming the fd; a LISTEN_PID that is not ours is ignored, as
// sd_listen_fds does.
import { afterEach, beforeAll, beforeEach, expect, jest, test } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { P9Client } from '../../src/doubles/p9-client.js';
import { O } from '../../src/doubles/p9-proto.js';
import { VhostUserFrontend } from '../../src/doubles/vhost-user-frontend.js';
import { listenUnixSocket } from '../../src/sys/sockets.js';
import { closeFd } from '../../src/sys/fd.js';
import { ensureBuilt } from '../p9/harness.js';
import { freePort } from '../support/diod.js';
import { virtiofsWorkload } from '../sandbox/workload.js';
import { bin, notifyListener, serverPid, startActivated, track, waitFor, type Daemon, type NotifyListener } from './harness.js';

jest.setTimeout(120_000);

const isRoot = process.geteuid?.() === 0;
const haveUnshare = spawnSync('unshare', ['--version']).status === 0;
const asRoot = isRoot && haveUnshare ? test : test.skip;
const haveActivate = fs.existsSync('/usr/bin/systemd-socket-activate');

let tmp: string;
let exportDir: string;
const daemons: Daemon[] = [];
const cleanups: (() => void)[] = [];

beforeAll(() => ensureBuilt());

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-systemd-'));
  fs.chmodSync(tmp, 0o755);
  exportDir = path.join(tmp, 'export');
  fs.mkdirSync(exportDir);
  fs.writeFileSync(path.join(exportDir, 'hello.txt'), 'hello\n');
});

afterEach(() => {
  for (const d of daemons.splice(0)) if (d.proc.exitCode === null && d.proc.signalCode === null) d.proc.kill('SIGKILL');
  for (const c of cleanups.splice(0)) c();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A listening unix socket made "by systemd" (this process), closed after the test. */
function systemdSocket(name: string): { path: string; fd: number } {
  const p = path.join(tmp, name);
  const fd = listenUnixSocket(p, 64);
  cleanups.push(() => closeFd(fd));
  return { path: p, fd };
}

async function notify(address = path.join(tmp, 'notify.sock')): Promise<NotifyListener> {
  const l = await notifyListener(address);
  cleanups.push(() => l.close());
  return l;
}

async function readHello(addr: string): Promise<{ c: P9Client; root: number; text: string }> {
  const { c, root } = await P9Client.session(addr, { aname: exportDir });
  const f = c.newFid();
  await c.walk(root, f, ['hello.txt']);
  await c.lopen(f, O.RDONLY);
  return { c, root, text: (await c.read(f, 0, 100)).toString() };
}

/** Two 9P clients at once on the one inherited listener, both served, then virtio-fs. */
async function driveAll(ninep: string, vfs: string): Promise<void> {
  const [a, b] = await Promise.all([readHello(ninep), readHello(ninep)]);
  expect([a.text, b.text]).toEqual(['hello\n', 'hello\n']);
  // both sessions stay live together: each still answers after the other spoke
  expect((await a.c.walk(a.root, a.c.newFid(), ['hello.txt'])).length).toBe(1);
  expect((await b.c.walk(b.root, b.c.newFid(), ['hello.txt'])).length).toBe(1);
  await a.c.close();
  await b.c.close();
  await virtiofsWorkload(vfs, 'sd'); // throws on any request that fails
}

for (const sandbox of ['none', 'chroot', 'namespace'] as const) {
  const t = sandbox === 'none' ? test : asRoot;
  t(
    `--sandbox ${sandbox}: named fds serve 9P (two clients on one fd) and virtio-fs; READY=1 with STATUS=, STOPPING=1; sockets left in place`,
    async () => {
      const ninep = systemdSocket('9p.sock');
      const vfs = systemdSocket('vfs.sock');
      const inoBefore = [fs.statSync(ninep.path).ino, fs.statSync(vfs.path).ino];
      // chroot: the notify socket lies outside the export, so only a socket connected before the root changed reaches it
      const n = await notify();
      const d = startActivated(['--shared-dir', exportDir, '--sandbox', sandbox, '--xattr'], {
        fds: [ninep.fd, vfs.fd],
        names: ['9p', 'virtiofs'],
        env: { NOTIFY_SOCKET: n.address },
      });
      daemons.push(d);
      await waitFor(() => n.messages.some((m) => m.includes('READY=1')), 'READY=1');
      const ready = n.messages.find((m) => m.includes('READY=1'))!;
      expect(ready.split('\n')).toEqual([
        'READY=1',
        `STATUS=serving ${exportDir} on 9P unix:${ninep.path} (fd 3), virtio-fs unix:${vfs.path} (fd 4)`,
      ]);
      expect(n.messages.some((m) => m.includes('MAINPID='))).toBe(false);
      expect(d.err()).toMatch(/socket activation: inherited listener fd=3 frontEnd=9p/);
      if (sandbox === 'namespace') {
        // the server got neither LISTEN_* (it is not LISTEN_PID) nor NOTIFY_SOCKET (the supervisor notifies)
        const env = fs.readFileSync(`/proc/${serverPid(d.proc.pid!)}/environ`, 'utf8').split('\0');
        expect(env.filter((v) => /^(LISTEN_|NOTIFY_SOCKET=)/.test(v))).toEqual([]);
        expect(env.some((v) => v.startsWith('DUOFS_SANDBOX_STAGE=namespace'))).toBe(true);
      }
      await driveAll(ninep.path, vfs.path);
      d.proc.kill('SIGTERM');
      expect((await d.exited).code).toBe(0);
      await waitFor(() => n.messages.some((m) => m.startsWith('STOPPING=1')), 'STOPPING=1', 5000);
      expect(n.messages.filter((m) => m.startsWith('STOPPING=1'))).toHaveLength(1);
      // systemd's sockets: still there, the same files
      expect([fs.statSync(ninep.path).ino, fs.statSync(vfs.path).ino]).toEqual(inoBefore);
    },
  );
}

asRoot('systemd-socket-activate: an abstract NOTIFY_SOCKET, 9p-vhost by name, unnamed TCP matched to --9p-tcp in a new net namespace', async () => {
  if (!haveActivate) throw new Error('systemd-socket-activate is not installed');
  const port = await freePort();
  const vhost9p = path.join(tmp, '9pv.sock');
  const n = await notify(`@duofs-test-${process.pid}-${Date.now()}`);
  // --fdname names the -l sockets in order; the TCP one is "unknown", systemd's own word for unnamed
  const proc = spawn(
    '/usr/bin/systemd-socket-activate',
    [
      '-E',
      'NOTIFY_SOCKET',
      '-l',
      vhost9p,
      '-l',
      `127.0.0.1:${port}`,
      '--fdname=9p-vhost:unknown',
      process.execPath,
      bin,
      'serve',
      '--shared-dir',
      exportDir,
      '--9p-tcp',
      `127.0.0.1:${port}`,
      '--log-format',
      'text',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: n.address } },
  );
  const d = track(proc);
  daemons.push(d);
  await waitFor(() => fs.existsSync(vhost9p), 'the sockets');
  // systemd-socket-activate starts duofs on the first connection; this one waits in the backlog meanwhile
  const first = await readHello(`127.0.0.1:${port}`);
  expect(first.text).toBe('hello\n');
  await waitFor(() => n.messages.some((m) => m.includes('READY=1')), 'READY=1');
  expect(n.messages.find((m) => m.includes('READY=1'))).toContain(
    `STATUS=serving ${exportDir} on 9P tcp:127.0.0.1:${port} (fd 4), virtio-9p unix:${vhost9p} (fd 3)`,
  );
  // the flag's address was not bound again (that would be EADDRINUSE), and the server has a net namespace of its own
  expect(d.err()).not.toMatch(/address in use|keeps the host network namespace/);
  const second = await readHello(`127.0.0.1:${port}`);
  expect(second.text).toBe('hello\n');
  await first.c.close();
  await second.c.close();
  const fe = await VhostUserFrontend.connect({ socketPath: vhost9p, negotiateOnly: true });
  fe.close();
  proc.kill('SIGTERM');
  expect((await d.exited).code).toBe(0);
  await waitFor(() => n.messages.some((m) => m.startsWith('STOPPING=1')), 'STOPPING=1', 5000);
  expect(fs.existsSync(vhost9p)).toBe(true);
});

test('unnamed fds are matched to the flags by path; a flag no fd stands for is still made', async () => {
  const vfs = systemdSocket('vfs.sock');
  const ino = fs.statSync(vfs.path).ino;
  const own = path.join(tmp, 'own9p.sock');
  const d = startActivated(['--shared-dir', exportDir, '--sandbox', 'none', '--virtiofs-socket', vfs.path, '--9p-socket', own], { fds: [vfs.fd] });
  daemons.push(d);
  await waitFor(() => d.err().includes('serving 9P2000.L on a unix socket') || d.proc.exitCode !== null, 'the 9P socket');
  expect(d.proc.exitCode).toBeNull();
  expect(d.err()).toMatch(/inherited listener fd=3 frontEnd=virtiofs/);
  expect(fs.statSync(vfs.path).ino).toBe(ino); // served on the fd, not made again
  const fe = await VhostUserFrontend.connect({ socketPath: vfs.path, negotiateOnly: true });
  fe.close();
  expect((await readHello(own)).text).toBe('hello\n');
  d.proc.kill('SIGTERM');
  expect((await d.exited).code).toBe(0);
  expect(fs.existsSync(vfs.path)).toBe(true); // systemd's
});

test('a LISTEN_PID that is not ours is ignored, as sd_listen_fds does', async () => {
  const s = systemdSocket('other.sock');
  const own = path.join(tmp, 'own.sock');
  const d = startActivated(['--shared-dir', exportDir, '--sandbox', 'none', '--9p-socket', own], { fds: [s.fd], names: ['9p'], listenPid: 1 });
  daemons.push(d);
  await waitFor(() => d.err().includes('serving 9P2000.L on a unix socket'), 'the 9P socket');
  expect(d.err()).toMatch(/LISTEN_PID=1 is not this process \(\d+\): the inherited fds are not ours; ignored/);
  expect(d.err()).not.toMatch(/socket activation: inherited listener/);
  d.proc.kill('SIGTERM');
  expect((await d.exited).code).toBe(0);
});

test('LISTEN_FDS the command line cannot match: exit 2, naming the fd', async () => {
  const bad = async (fds: number[], names: string[] | undefined, extra: string[] = []): Promise<string> => {
    const d = startActivated(['--shared-dir', exportDir, '--sandbox', 'none', ...extra], names ? { fds, names } : { fds });
    daemons.push(d);
    expect((await d.exited).code).toBe(2);
    return d.err();
  };
  const file = fs.openSync(path.join(tmp, 'plain'), fs.constants.O_RDWR | fs.constants.O_CREAT);
  cleanups.push(() => fs.closeSync(file));
  expect(await bad([file], ['9p'])).toMatch(/socket activation: fd 3 \(FileDescriptorName=9p\) is not a socket \(ENOTSOCK\)/);
  const s = systemdSocket('x.sock');
  expect(await bad([s.fd], ['nfs'])).toMatch(
    /fd 3 \(FileDescriptorName=nfs\), unix:\S+x\.sock \(fd 3\): no front-end has that name; name it virtiofs, 9p-vhost, 9p, 9p-tcp/,
  );
  expect(await bad([s.fd], undefined, ['--9p-socket', path.join(tmp, 'elsewhere.sock')])).toMatch(
    /fd 3, unix:\S+x\.sock \(fd 3\), matches no front-end: name it with FileDescriptorName=/,
  );
  expect(await bad([s.fd], ['duofs@x.socket'])).toMatch(/fd 3, unix:\S+x\.sock \(fd 3\), matches no front-end/); // systemd's default name is "unnamed"
  // a connected socket (Accept=yes) is not a listener
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(path.join(tmp, 'pair.sock'), () => r()));
  const theirs = net.connect(path.join(tmp, 'pair.sock'));
  await new Promise<void>((r) => theirs.once('connect', () => r()));
  const handle = (theirs as unknown as { _handle: { fd: number } })._handle;
  expect(await bad([handle.fd], ['9p'])).toMatch(/is not a listening stream socket; give duofs ListenStream= sockets with Accept=no/);
  theirs.destroy();
  srv.close();
  expect(await bad([s.fd], ['virtiofs', '9p'])).toMatch(/LISTEN_FDNAMES=virtiofs:9p names 2 fds, LISTEN_FDS=1 passes 1/);
  expect(await bad([s.fd], ['virtiofs'], ['--virtiofs-fd', '3'])).toMatch(/--virtiofs-fd 3: that fd is a socket-activated listener already/);
});
