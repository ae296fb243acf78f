// bin/duofs-virtiofsd.js as libvirt runs it. The argv below is exactly what
// libvirt generates for
//
//   <filesystem type='mount' accessmode='passthrough'>
//     <driver type='virtiofs' queue='1024'/>
//     <binary path='/usr/local/bin/duofs-virtiofsd' xattr='on'>
//       <cache mode='always'/>
//       <lock posix='on' flock='on'/>
//     </binary>
//     <source dir='EXPORT'/>
//     <target dir='mailstore'/>
//   </filesystem>
//
// libvirt 9.x (src/qemu/qemu_virtiofs.c qemuVirtioFSBuildCommandLine; Debian
// 12 ships 9.0.0) always builds it; libvirt 10.x-12.x builds it for a binary
// whose --print-capabilities lacks "separate-options", which is duofs:
//
//   BINARY --fd=N -o source=EXPORT(commas doubled),cache=always,xattr,flock,posix_lock
//
// (plus --thread-pool-size=N with <thread_pool size=N/>, -d with
// virtiofsd_debug=1 in qemu.conf; 10.x+ also --rlimit-nofile=N with
// <openfiles max=N/>, --uid-map/--gid-map when unprivileged, --readonly with
// <readonly/>). The queue size and the mount tag go to QEMU, not to the daemon.
// N is the listening vhost-user socket libvirt created and passes down.
//
// The first tests check what the argv means to duofs (DUOFS_VIRTIOFSD_DRY_RUN=1);
// the last one runs it for real on an inherited listening socket, as libvirt
// does, and talks vhost-user and FUSE to it through the project's test
// frontend (the guest-kernel mount is the lab's part).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeFd } from '../../src/sys/fd.js';
import { listenUnixSocket } from '../../src/sys/sockets.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { fuseInit, parseFuseInitReply, FUSE_OPCODE } from '../vhost/fuse-wire.js';
import { sleep, within } from '../vhost/harness.js';
import { CAPABILITY_FEATURES } from '../../compat/virtiofsd/capabilities.js';
import { jest } from '@jest/globals';

// Several tests start the daemon for real: on a loaded 2-core CI machine 5 s is not enough.
jest.setTimeout(30_000);

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.join(root, 'bin', 'duofs-virtiofsd.js');

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-vfsd-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("libvirt's argv for a virtiofs <filesystem> with cache=always, xattr and both locks", () => {
  const exportDir = path.join(tmp, 'mail,store'); // a comma, which libvirt doubles
  fs.mkdirSync(exportDir);
  const argv = ['--fd=23', '-o', `source=${exportDir.replaceAll(',', ',,')},cache=always,xattr,flock,posix_lock`];
  const r = run(argv, { DUOFS_VIRTIOFSD_DRY_RUN: '1' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const out = JSON.parse(r.stdout) as { options: Record<string, unknown>; notes: string[] };
  expect(out.options).toEqual({
    sharedDir: exportDir,
    virtiofsFd: 23,
    securityModel: 'passthrough',
    numRequestQueues: 1,
    fuse: { announceSubmounts: true, cache: 'always', xattr: true, flockLocks: true, posixLocks: true, posixAcl: 'never' },
  });
  expect(out.notes).toEqual([]);
});

test("libvirt's <lock posix='off' flock='off'/>: no_posix_lock,no_flock turn host locks off", () => {
  const r = run(['--fd=23', '-o', `source=${tmp},cache=none,no_xattr,no_flock,no_posix_lock`], { DUOFS_VIRTIOFSD_DRY_RUN: '1' });
  expect(r.status).toBe(0);
  expect(JSON.parse(r.stdout).options.fuse).toMatchObject({ cache: 'never', xattr: false, flockLocks: false, posixLocks: false });
});

// Kata Containers' argv: the Go runtime (src/runtime/virtcontainers/virtiofsd.go,
// Kata 3.x) passes --syslog --cache=MODE --shared-dir=DIR --fd=3 plus
// virtio_fs_extra_args from configuration.toml (default --thread-pool-size=1
// --announce-submounts); Kata 2.x (the C virtiofsd) passed the -o form.
test.each([
  ['Kata 3.x', ['--syslog', '--cache=auto', `--shared-dir=SHARED`, '--fd=3', '--thread-pool-size=1', '--announce-submounts']],
  ['Kata 2.x', ['--fd=3', '-o', 'source=SHARED', '-o', 'cache=auto', '--syslog', '-o', 'no_posix_lock', '-f', '--thread-pool-size=1']],
])('%s argv is accepted', (_name, argv) => {
  const r = run(
    argv.map((a) => a.replace('SHARED', tmp)),
    { DUOFS_VIRTIOFSD_DRY_RUN: '1' },
  );
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const out = JSON.parse(r.stdout) as { options: { sharedDir: string; virtiofsFd: number; fuse: { cache: string } }; syslog: boolean };
  expect(out.options).toMatchObject({ sharedDir: tmp, virtiofsFd: 3, fuse: { cache: 'auto' } });
  expect(out.syslog).toBe(true);
});

test('the same XML through libvirt 10+ with the optional extras', () => {
  const argv = [
    '--fd=23',
    '-o',
    `source=${tmp},cache=always,xattr,flock,posix_lock`,
    '--thread-pool-size=16',
    '--rlimit-nofile=4096',
    '-d',
    '--readonly',
  ];
  const r = run(argv, { DUOFS_VIRTIOFSD_DRY_RUN: '1' });
  expect(r.status).toBe(0);
  const out = JSON.parse(r.stdout) as { options: Record<string, unknown>; rlimitNofile: number };
  expect(out.options).toMatchObject({ sharedDir: tmp, virtiofsFd: 23, readonly: true, logLevel: 'debug' });
  expect(out.rlimitNofile).toBe(4096);
});

test('the separate-options form libvirt uses for binaries that advertise it', () => {
  const r = run(['--fd=23', '--shared-dir', tmp, '--cache', 'always', '--xattr'], { DUOFS_VIRTIOFSD_DRY_RUN: '1' });
  expect(r.status).toBe(0);
  expect(JSON.parse(r.stdout).options).toMatchObject({ sharedDir: tmp, virtiofsFd: 23, fuse: { cache: 'always', xattr: true } });
});

test("--print-capabilities prints virtiofsd's JSON shape and exits 0", () => {
  const r = run(['--print-capabilities']);
  expect(r.status).toBe(0);
  expect(JSON.parse(r.stdout)).toEqual({
    type: 'fs',
    features: ['migrate-precopy', 'posix-acl-negotiation-mode', 'security-label-negotiation-mode'],
  });
});

test("an option duofs refuses: exit status 2 (a usage error, as clap's), one line naming it", () => {
  const r = run(['--fd=23', '--shared-dir', tmp, '--migration-verify-handles']);
  expect(r.status).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^duofs-virtiofsd: --migration-verify-handles: not supported by duofs: .*file-handles/);
});

test("usage errors exit 2 as virtiofsd's do: unknown option, bad value, missing --shared-dir, bad -o word", () => {
  for (const argv of [
    ['--bogus'],
    ['--fd=3', '--shared-dir', tmp, '--cache', 'bogus'],
    ['--socket-path', '/tmp/x.sock'],
    ['--fd=3', '-o', `source=${tmp},nope`],
    ['--fd=3', '--shared-dir', tmp, '--xattrmap', 'bogus'],
  ]) {
    const r = run(argv);
    expect([argv.join(' '), r.status]).toEqual([argv.join(' '), 2]);
  }
  // a start-up failure is 1, as in virtiofsd
  expect(run(['--shared-dir', tmp, '--socket-path', path.join(tmp, 's'), '--posix-acl', '--translate-uid', 'map:0:1:1']).status).toBe(1);
});

test("a bad --uid-map/--gid-map exits 2 with virtiofsd's message; libvirt's session maps are carried", () => {
  const bad = run(['--fd=3', '-o', `source=${tmp}`, '--uid-map=:0:1000:1:', '--gid-map=:0:1000']);
  expect([bad.status, bad.stdout, bad.stderr]).toEqual([
    2,
    '',
    "duofs-virtiofsd: invalid value ':0:1000' for '--gid-map <GID_MAP>': A delimiter has been found that does not match the delimiter the map started with\n",
  ]);
  const ok = run(
    ['--fd=3', '-o', `source=${tmp}`, '--uid-map=:0:1000:1:', '--uid-map=:1:100000:65536:', '--gid-map=:0:1000:1:', '--gid-map=:1:100000:65536:'],
    { DUOFS_VIRTIOFSD_DRY_RUN: '1' },
  );
  expect(ok.status).toBe(0);
  expect(JSON.parse(ok.stdout)).toMatchObject({ uidMap: [':0:1000:1:', ':1:100000:65536:'], gidMap: [':0:1000:1:', ':1:100000:65536:'], notes: [] });
});

test('an --fd that is not an inherited socket is refused before serving', () => {
  const r = run(['--fd=97', '--shared-dir', tmp]);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/--fd=97: no such open file descriptor/);
});

test('--help and --version exit 0; no arguments prints the usage and fails', () => {
  const h = run(['--help']);
  expect(h.status).toBe(0);
  for (const o of ['--shared-dir', '--fd', '--print-capabilities', '--security-model', '-o <OPTS>']) expect(h.stdout).toContain(o);
  const v = run(['--version']);
  expect(v.status).toBe(0);
  expect(v.stdout).toMatch(/^duofs-virtiofsd \d+\.\d+\.\d+/);
  const none = run([]);
  expect(none.status).toBe(2);
  expect(none.stderr).toContain('Usage:');
});

test('the binary is executable (libvirt checks) and the vhost-user description names it', () => {
  expect(fs.statSync(bin).mode & 0o111).toBe(0o111);
  const dir = path.join(root, 'share/qemu/vhost-user');
  const files = fs.readdirSync(dir);
  expect(files).toEqual(['60-duofs-virtiofsd.json']);
  // libvirt takes the first fs description by file name: ours must sort after
  // the distribution's 50-virtiofsd.json, so installing duofs never takes
  // over domains that name no <binary> (an operator prefers it by copying it
  // to /etc/qemu/vhost-user/ under a lower number).
  expect(['50-virtiofsd.json', files[0]!].sort()[0]).toBe('50-virtiofsd.json');
  const desc = JSON.parse(fs.readFileSync(path.join(dir, files[0]!), 'utf8')) as Record<string, unknown>;
  expect(desc['type']).toBe('fs');
  expect(typeof desc['description']).toBe('string');
  expect(desc['binary']).toMatch(/\/duofs-virtiofsd$/);
  expect(desc['features']).toEqual([...CAPABILITY_FEATURES]); // what --print-capabilities says
});

/** Starts the daemon for real, waits until its stderr matches `until`, stops it; returns what it logged. */
async function daemon(args: string[], until: RegExp, ready?: () => boolean): Promise<string> {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    const deadline = Date.now() + 10_000;
    while (!(until.test(stderr) && (ready?.() ?? true))) {
      if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out; stderr: ${stderr}`);
      await sleep(50);
    }
    return stderr;
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }
}

test("logs are virtiofsd's text lines; an option without effect says so once, at info", async () => {
  const sock = path.join(tmp, 'v.sock');
  const err = await daemon(
    [
      '--shared-dir',
      tmp,
      '--socket-path',
      sock,
      '--inode-file-handles=never',
      '--inode-file-handles=prefer',
      '--thread-pool-size=4',
      '--thread-pool-size=8',
    ],
    /duofs-virtiofsd started/,
  );
  expect(err).toMatch(/^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO  duofs-virtiofsd\] /m);
  const handles = err.split('\n').filter((l) => l.includes('--inode-file-handles'));
  expect(handles).toHaveLength(1);
  expect(handles[0]).toMatch(/INFO  duofs-virtiofsd\] --inode-file-handles=prefer: accepted, no effect in duofs: /);
  // --thread-pool-size means something now: the pool was sized before it started (bin/thread-pool.js).
  expect(err).toMatch(/INFO  duofs-virtiofsd\] I\/O engine: (io_uring|threads) .*threadPool=8/);
  expect(err).not.toMatch(/thread pool size \d+ asked for/);
  expect(err).not.toMatch(/^\{/m); // no JSON lines
});

test("--log-format json keeps pino's JSON lines", async () => {
  const err = await daemon(['--shared-dir', tmp, '--socket-path', path.join(tmp, 'j.sock'), '--log-format', 'json'], /duofs-virtiofsd started/);
  for (const l of err.trim().split('\n')) expect(JSON.parse(l)).toHaveProperty('level');
});

test('--syslog without a reachable /dev/log: one warning, then text lines on stderr (as virtiofsd falls back)', async () => {
  if (fs.existsSync('/dev/log')) return; // test/log/format.test.ts covers the datagrams themselves
  const err = await daemon(['--shared-dir', tmp, '--socket-path', path.join(tmp, 'l.sock'), '--syslog'], /duofs-virtiofsd started/);
  expect(err.match(/can't enable syslog/g)).toHaveLength(1);
  expect(err).toMatch(/WARN  duofs-virtiofsd\] can't enable syslog: .*\/dev\/log/);
});

test('--socket-group gives the socket to the group, mode 0660', async () => {
  const sock = path.join(tmp, 'g.sock');
  const users = fs
    .readFileSync('/etc/group', 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .find((f) => f[0] === 'users');
  if (!users) throw new Error('no group "users" on this host');
  await daemon(['--shared-dir', tmp, '--socket-path', sock, '--socket-group', 'users'], /duofs-virtiofsd started/, () => {
    try {
      const st = fs.statSync(sock);
      return st.gid === Number(users[2]) && (st.mode & 0o777) === 0o660;
    } catch {
      return false;
    }
  });
  const r = run(['--shared-dir', tmp, '--socket-path', path.join(tmp, 'h.sock'), '--socket-group', 'no-such-group-here']);
  expect(r.status).toBe(1); // virtiofsd: "Couldn't resolve the group name specified for the socket path", exit 1
  expect(r.stderr).toMatch(/--socket-group no-such-group-here: no such group/);
});

test('serves virtio-fs on the inherited listening socket libvirt passes, with its -o options in force', async () => {
  const exportDir = path.join(tmp, 'export');
  fs.mkdirSync(exportDir);
  const sock = path.join(tmp, 'vfs.sock');
  const listenFd = listenUnixSocket(sock); // what libvirt's qemuVirtioFSOpenChardev makes
  let child: ChildProcess | undefined;
  let fe: VhostUserFrontend | undefined;
  let stderr = '';
  try {
    child = spawn(process.execPath, [bin, '--fd=3', '-o', `source=${exportDir},cache=always,xattr,flock,posix_lock`], {
      stdio: ['ignore', 'ignore', 'pipe', listenFd],
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    closeFd(listenFd); // libvirt closes its copy too (VIR_COMMAND_PASS_FD_CLOSE_PARENT)
    fe = await within(VhostUserFrontend.connect({ socketPath: sock, queueSize: 256 }), 10_000, `vhost-user handshake (stderr: ${stderr})`);
    const init = parseFuseInitReply((await within(fe.request(1, { out: [fuseInit(1n)], in: [16, 64] }), 5000, 'FUSE_INIT')).data);
    expect(init).toMatchObject({ error: 0, unique: 1n, major: 7 });
    const hdr = Buffer.alloc(40 + 16);
    hdr.writeUInt32LE(hdr.length, 0);
    hdr.writeUInt32LE(FUSE_OPCODE.GETATTR, 4);
    hdr.writeBigUInt64LE(2n, 8);
    hdr.writeBigUInt64LE(1n, 16); // the root
    const attr = (await within(fe.request(1, { out: [hdr], in: [16, 104] }), 5000, 'GETATTR')).data;
    expect(attr.readInt32LE(4)).toBe(0);
    expect(attr.readBigUInt64LE(16)).toBe(86400n); // cache=always: virtiofsd's long attribute timeout
    expect(attr.readUInt32LE(92) & 0o170000).toBe(0o040000); // a directory
  } finally {
    fe?.close();
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child!.once('exit', r)), sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }
});
