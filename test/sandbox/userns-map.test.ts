// --uid-map/--gid-map as libvirt's session mode uses them: an ordinary user
// (a throwaway one with /etc/subuid and /etc/subgid ranges) starts
// duofs-virtiofsd with exactly the argv libvirt builds for it
// (src/qemu/qemu_virtiofs.c: qemuVirtioFSPrepareIdMap makes the maps for an
// unprivileged daemon, qemuVirtioFSBuildCommandLine appends them):
//
//   BINARY --fd=N -o source=DIR,xattr --uid-map=:0:UID:1: --uid-map=:1:SUBUID:COUNT:
//          --gid-map=:0:GID:1: --gid-map=:1:SUBGID:COUNT:
//
// on a listening socket this process made and passes down, and the project's
// vhost-user frontend plays the guest: the server's /proc/PID/uid_map and
// gid_map must be exactly those maps, and a guest's chown to id 1000 must land
// on the host as SUBUID+999 (the namespace's 1000), its creations as the
// guest's ids, mapped. `duofs serve` takes the same flags. Also the error
// paths: a range the user does not own (newuidmap refuses: exit 1, its words),
// and the flags as root (virtiofsd's start-up error, exit 1).
// Needs root (to add the user) and newuidmap/newgidmap (Debian's uidmap
// package, which npm test installs).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhostUserFrontend } from '../../src/doubles/vhost-user-frontend.js';
import { FATTR, FuseClient, ROOT, S_IFCHR, S_IFIFO, errnoOf } from '../../src/doubles/fuse-client.js';
import { closeFd } from '../../src/sys/fd.js';
import { listenUnixSocket } from '../../src/sys/sockets.js';
import { c as libc, cstr } from '../../src/sys/libc.js';
import { createSubidUser, libvirtSessionMaps, subidUnavailable, type SubidUser } from '../support/subid-user.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const vfsdBin = path.join(root, 'bin', 'duofs-virtiofsd.js');
const duofsBin = path.join(root, 'bin', 'duofs.js');
const isRoot = process.geteuid?.() === 0;
const maybe = isRoot ? test : test.skip;

let user: SubidUser | undefined;
let tmp = '';
let exportDir = '';
const children: ChildProcess[] = [];

beforeAll(() => {
  if (!isRoot) return;
  const why = subidUnavailable();
  if (why) throw new Error(`cannot test --uid-map here: ${why}`);
  user = createSubidUser('um');
});
afterAll(() => user?.remove());

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-userns-'));
  fs.chmodSync(tmp, 0o755);
  exportDir = path.join(tmp, 'export');
  fs.mkdirSync(exportDir);
  if (user) fs.chownSync(exportDir, user.uid, user.gid);
});
afterEach(() => {
  for (const ch of children.splice(0)) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** libvirt's listening socket (blocking, backlog 1), owned by the session user as libvirt's own would be. */
function libvirtSocket(p: string, u: SubidUser): number {
  const fd = listenUnixSocket(p, 1);
  const fl = libc.fcntlInt(fd, 3 /* F_GETFL */, 0);
  libc.fcntlInt(fd, 4 /* F_SETFL */, fl & ~0o4000 /* O_NONBLOCK */);
  fs.chownSync(p, u.uid, u.gid);
  return fd;
}

interface Daemon {
  proc: ChildProcess;
  err: () => string;
  exited: Promise<number | null>;
}

/** Runs `args` (after node) as the user, with `fd` at 3 when given. */
function asUser(u: SubidUser, args: string[], fd?: number): Daemon {
  const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe'];
  if (fd !== undefined) stdio.push(fd);
  const proc = spawn('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--init-groups', '--', process.execPath, ...args], {
    stdio,
    env: { ...process.env, HOME: '/' },
  });
  children.push(proc);
  let err = '';
  proc.stdout!.on('data', (b: Buffer) => {
    err += b.toString();
  });
  proc.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, err: () => err, exited };
}

async function waitFor(cond: () => boolean, what: string, d: Daemon, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; output:\n${d.err()}`);
    if (d.proc.exitCode !== null) throw new Error(`exited ${d.proc.exitCode} before ${what}; output:\n${d.err()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const kids = (pid: number): number[] => {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
};

/** The server: the supervisor's (setpriv became it) grandchild, unshare --fork's child. */
function serverPid(d: Daemon): number {
  const unshare = kids(d.proc.pid!)[0];
  const server = unshare === undefined ? undefined : kids(unshare)[0];
  if (server === undefined) throw new Error(`no server process under ${d.proc.pid}`);
  return server;
}

/** /proc/PID/{uid,gid}_map as [inside, outside, count] triples, as this (the initial) namespace reads them. */
const mapOf = (pid: number, kind: 'uid' | 'gid'): number[][] =>
  fs
    .readFileSync(`/proc/${pid}/${kind}_map`, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number));

function xattrU32(p: string, name: string): number | undefined {
  const b = Buffer.alloc(16);
  const n = Number(libc.lgetxattr(cstr(p), cstr(name), b, b.length));
  return n === 4 ? b.readUInt32LE(0) : undefined;
}

/** What a guest does: creations as root and as 1000, chown, chmod, a fifo and a char device, an id outside the map. */
async function guestWork(sock: string) {
  const fe = await VhostUserFrontend.connect({ socketPath: sock });
  try {
    const c = new FuseClient(fe);
    await c.doInit();
    const byRoot = await c.create(ROOT, 'by-root', 2, 0o644);
    await c.release(byRoot.open.fh);
    const owned = await c.create(ROOT, 'owned', 2, 0o644);
    await c.release(owned.open.fh);
    const chowned = await c.setattr(owned.entry.nodeid, { valid: FATTR.UID | FATTR.GID, uid: 1000, gid: 1000 });
    const chmodded = await c.setattr(owned.entry.nodeid, { valid: FATTR.MODE, mode: 0o4751 });
    const home = await c.mkdir(ROOT, 'home', 0o755);
    await c.setattr(home.nodeid, { valid: FATTR.UID | FATTR.GID, uid: 1000, gid: 1000 });
    c.caller = { uid: 1000, gid: 1000 };
    const mine = await c.create(home.nodeid, 'mine', 2, 0o600);
    await c.release(mine.open.fh);
    const fifo = await c.mknod(home.nodeid, 'fifo', S_IFIFO | 0o640);
    c.caller = { uid: 0, gid: 0 };
    const chr = await errnoOf(c.mknod(ROOT, 'null', S_IFCHR | 0o666, (1 << 8) | 3));
    const unmapped = await errnoOf(c.setattr(owned.entry.nodeid, { valid: FATTR.UID, uid: 70_000 }));
    return {
      chownedUid: chowned.attr.uid,
      chmodMode: chmodded.attr.mode & 0o7777,
      mineUid: mine.entry.attr.uid,
      fifoUid: fifo.attr.uid,
      chr,
      unmapped,
    };
  } finally {
    fe.close();
  }
}

const sessionArgv = (u: SubidUser, extra: string[] = []): string[] => [
  vfsdBin,
  '--fd=3',
  '-o',
  `source=${exportDir},xattr`,
  ...libvirtSessionMaps(u),
  ...extra,
];

maybe(
  "libvirt's session argv as a user: the server's user namespace has exactly those maps; a guest's chown lands as the mapped host id",
  async () => {
    const u = user!;
    const sock = path.join(tmp, 'fs0-fs.sock');
    const fd = libvirtSocket(sock, u);
    const d = asUser(u, sessionArgv(u), fd);
    closeFd(fd); // VIR_COMMAND_PASS_FD_CLOSE_PARENT
    await waitFor(() => d.err().includes('duofs-virtiofsd started'), 'the server', d);
    const pid = serverPid(d);
    expect(mapOf(pid, 'uid')).toEqual([
      [0, u.uid, 1],
      [1, u.subuid.start, u.subuid.count],
    ]);
    expect(mapOf(pid, 'gid')).toEqual([
      [0, u.gid, 1],
      [1, u.subgid.start, u.subgid.count],
    ]);
    expect(fs.readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${u.uid}\\s+${u.uid}\\s+${u.uid}\\s+${u.uid}$`, 'm'));
    expect(d.err()).toMatch(/sandbox: user namespace mapped/);

    const g = await guestWork(sock);
    // The guest sees its own ids...
    expect(g).toEqual({ chownedUid: 1000, chmodMode: 0o4751, mineUid: 1000, fifoUid: 1000, chr: 'EPERM', unmapped: 'EINVAL' });
    // ...and on the host they are the namespace's: 0 is the user, 1000 is SUBUID+999.
    const st = (n: string) => fs.lstatSync(path.join(exportDir, n));
    expect([st('by-root').uid, st('by-root').gid]).toEqual([u.uid, u.gid]);
    expect([st('owned').uid, st('owned').gid, st('owned').mode & 0o7777]).toEqual([u.subuid.start + 999, u.subgid.start + 999, 0o4751]);
    expect([st('home/mine').uid, st('home/mine').gid]).toEqual([u.subuid.start + 999, u.subgid.start + 999]);
    expect([st('home/fifo').isFIFO(), st('home/fifo').uid, st('home/fifo').mode & 0o777]).toEqual([true, u.subuid.start + 999, 0o640]);
    expect(fs.existsSync(path.join(exportDir, 'null'))).toBe(false); // a device node needs CAP_MKNOD on the host (as for virtiofsd)

    d.proc.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  },
  60_000,
);

maybe(
  "the same argv with --security-model mapped-xattr: the guest's owners, modes and device numbers go to user.virtfs.*",
  async () => {
    const u = user!;
    const sock = path.join(tmp, 'fs1-fs.sock');
    const fd = libvirtSocket(sock, u);
    const d = asUser(u, sessionArgv(u, ['--security-model', 'mapped-xattr']), fd);
    closeFd(fd);
    await waitFor(() => d.err().includes('duofs-virtiofsd started'), 'the server', d);
    expect(mapOf(serverPid(d), 'uid')).toEqual([
      [0, u.uid, 1],
      [1, u.subuid.start, u.subuid.count],
    ]);
    const fe = await VhostUserFrontend.connect({ socketPath: sock });
    try {
      const c = new FuseClient(fe);
      await c.doInit();
      const f = await c.create(ROOT, 'owned', 2, 0o644);
      await c.release(f.open.fh);
      expect((await c.setattr(f.entry.nodeid, { valid: FATTR.UID | FATTR.GID, uid: 1000, gid: 1000 })).attr.uid).toBe(1000);
      const chr = await c.mknod(ROOT, 'null', S_IFCHR | 0o666, (1 << 8) | 3);
      expect([chr.attr.mode & 0o170000, chr.attr.rdev]).toEqual([S_IFCHR, (1 << 8) | 3]);
    } finally {
      fe.close();
    }
    const owned = path.join(exportDir, 'owned');
    const st = fs.lstatSync(owned);
    expect([st.uid, st.gid]).toEqual([u.uid, u.gid]); // the namespace's root: the user itself
    expect([xattrU32(owned, 'user.virtfs.uid'), xattrU32(owned, 'user.virtfs.gid')]).toEqual([1000, 1000]);
    const dev = path.join(exportDir, 'null');
    expect([fs.lstatSync(dev).isFile(), xattrU32(dev, 'user.virtfs.mode')]).toEqual([true, S_IFCHR | 0o666]);
    d.proc.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  },
  60_000,
);

maybe(
  'duofs serve takes the same flags',
  async () => {
    const u = user!;
    fs.chownSync(tmp, u.uid, u.gid);
    const sock = path.join(tmp, 'serve.sock');
    const d = asUser(u, [duofsBin, 'serve', '--shared-dir', exportDir, '--virtiofs-socket', sock, '--log-format', 'text', ...libvirtSessionMaps(u)]);
    await waitFor(() => d.err().includes('seccomp: kill'), 'the server', d);
    const pid = serverPid(d);
    expect(mapOf(pid, 'uid')).toEqual([
      [0, u.uid, 1],
      [1, u.subuid.start, u.subuid.count],
    ]);
    expect(mapOf(pid, 'gid')).toEqual([
      [0, u.gid, 1],
      [1, u.subgid.start, u.subgid.count],
    ]);
    const fe = await VhostUserFrontend.connect({ socketPath: sock });
    try {
      const c = new FuseClient(fe);
      await c.doInit();
      const f = await c.create(ROOT, 'owned', 2, 0o644);
      await c.release(f.open.fh);
      await c.setattr(f.entry.nodeid, { valid: FATTR.UID | FATTR.GID, uid: 1000, gid: 1000 });
    } finally {
      fe.close();
    }
    const st = fs.lstatSync(path.join(exportDir, 'owned'));
    expect([st.uid, st.gid]).toEqual([u.subuid.start + 999, u.subgid.start + 999]);
    d.proc.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  },
  60_000,
);

maybe(
  "a range the user does not own: newuidmap refuses, the start fails with exit 1 in virtiofsd's words, nothing keeps running",
  async () => {
    const u = user!;
    const sock = path.join(tmp, 'fs2-fs.sock');
    const fd = libvirtSocket(sock, u);
    const beyond = u.subuid.start + u.subuid.count;
    const d = asUser(u, [vfsdBin, '--fd=3', '-o', `source=${exportDir}`, `--uid-map=:0:${u.uid}:1:`, `--uid-map=:1:${beyond}:10:`], fd);
    closeFd(fd);
    expect(await d.exited).toBe(1);
    expect(d.err()).toMatch(
      /ERROR duofs-virtiofsd\] sandbox: couldn't setup id mappings: write to uid map failed: newuidmap: uid range \[1-11\) -> \[\d+-\d+\) not allowed$/m,
    );
    expect(kids(d.proc.pid!)).toEqual([]);
  },
  60_000,
);

maybe("as root, or with --sandbox none: virtiofsd's start-up error, exit 1 (both commands)", () => {
  const run = (args: string[]) => spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 20_000 });
  const msg =
    "Error entering sandbox: uid_map can only be used by unprivileged user where sandbox mod is namespace (Use '--sandbox namespace' instead)";
  const a = run([vfsdBin, '--socket-path', path.join(tmp, 'r.sock'), '--shared-dir', exportDir, '--uid-map=:0:1000:1:']);
  expect([a.status, a.stderr.trim()]).toEqual([1, `duofs-virtiofsd: ${msg}`]);
  const b = run([duofsBin, 'serve', '--shared-dir', exportDir, '--virtiofs-socket', path.join(tmp, 'r.sock'), '--gid-map=:0:1000:1:']);
  expect([b.status, b.stderr.trim()]).toEqual([1, `duofs: ${msg.replace('uid_map', 'gid_map')}`]);
  const u = user!;
  const none = spawnSync(
    'setpriv',
    [
      `--reuid=${u.uid}`,
      `--regid=${u.gid}`,
      '--init-groups',
      '--',
      process.execPath,
      vfsdBin,
      '--socket-path',
      path.join(tmp, 'r.sock'),
      '--shared-dir',
      exportDir,
      '--sandbox',
      'none',
      ...libvirtSessionMaps(u),
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  expect([none.status, none.stderr.trim()]).toEqual([1, `duofs-virtiofsd: ${msg}`]);
  expect(fs.existsSync(path.join(tmp, 'r.sock'))).toBe(false);
});
