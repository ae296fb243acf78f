// duofs-virtiofsd started with Kata Containers' argv, mounted by a real
// guest. Kata's Go runtime (src/runtime/virtcontainers/virtiofsd.go, 3.x)
// always runs
//
//   BINARY --syslog --cache=MODE --shared-dir=DIR --fd=3 [virtio_fs_extra_args...]
//
// with virtio_fs_extra_args from configuration.toml (default
// --thread-pool-size=1 --announce-submounts). This test adds two extra args
// operators use there, --xattrmap=:map::user.virtiofs.: and -o no_posix_lock,
// and checks in the guest (test/lab/guest/scenarios/corpus-kata.py) and on
// the host that each means what it means to virtiofsd: xattrs renamed and
// host-only ones hidden, no POSIX ACLs (--posix-acl=never), POSIX locks kept
// inside the guest while flock() reaches the host; --syslog with no /dev/log
// here falls back to stderr with one warning.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun } from './guest.js';
import { labAvailable, makeWorkDir, removeWorkDir, repoRoot, stopProcess, tail, trackProcess } from './lab.js';
import { ensureDuofsBuilt } from './daemons.js';
import { closeFd } from '../../src/sys/fd.js';
import { listenUnixSocket } from '../../src/sys/sockets.js';
import { c, cstr } from '../../src/sys/libc.js';
import { flockNb, ofdGetLock } from '../../src/sys/locks.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;
const F_WRLCK = 1;
const F_UNLCK = 2;

function hostXattrs(path: string): string[] {
  const buf = Buffer.alloc(4096);
  const n = Number(c.llistxattr(cstr(path), buf, buf.length));
  return n <= 0 ? [] : buf.subarray(0, n).toString('latin1').split('\0').filter(Boolean).sort();
}

d("duofs-virtiofsd with Kata Containers' argv, mounted by a real guest", () => {
  let work = '';
  let src = '';
  let run: GuestRun | undefined;
  let daemonOut = '';
  const hostSaw: Record<string, string> = {};

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    ensureDuofsBuilt();
    work = makeWorkDir('kata');
    src = freshTree(work, 'shared');
    writeFileSync(join(src, 'tagged.txt'), 'x');
    c.lsetxattr(cstr(join(src, 'tagged.txt')), cstr('user.virtiofs.user.seen'), Buffer.from('1'), 1, 0);
    c.lsetxattr(cstr(join(src, 'tagged.txt')), cstr('user.hostonly'), Buffer.from('h'), 1, 0);
    writeFileSync(join(src, 'host-ack'), '');
    const ack = openSync(join(src, 'host-ack'), 'r+');
    const sock = join(work, 'vhost-fs.sock');
    const listenFd = listenUnixSocket(sock, 1);
    let child: ChildProcess | undefined;
    const argv = [
      join(repoRoot, 'bin', 'duofs-virtiofsd.js'),
      '--syslog',
      '--cache=auto',
      `--shared-dir=${src}`,
      '--fd=3',
      '--thread-pool-size=1',
      '--announce-submounts',
      '--xattrmap=:map::user.virtiofs.:',
      '-o',
      'no_posix_lock',
    ];
    try {
      child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, ...argv], {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe', listenFd],
        detached: true,
      });
      trackProcess(child);
      const grab = (b: Buffer) => {
        if (daemonOut.length < 1e6) daemonOut += b.toString('utf8');
      };
      child.stdout!.on('data', grab);
      child.stderr!.on('data', grab);
    } finally {
      closeFd(listenFd);
    }
    let consoleTail = '';
    const onConsole = (text: string) => {
      consoleTail = (consoleTail + text).slice(-4096);
      if (hostSaw.posix !== undefined || !consoleTail.includes('KATA-GUEST-HOLDS-LOCKS')) return;
      const gp = openSync(join(src, 'guest-posix'), 'r+');
      const gf = openSync(join(src, 'guest-flock'), 'r+');
      try {
        hostSaw.posix = ofdGetLock(gp, { type: F_WRLCK, start: 0, len: 0 }).type === F_UNLCK ? 'unlocked' : 'locked';
        const got = flockNb(gf, F_WRLCK);
        hostSaw.flock = got ? 'acquired' : 'EWOULDBLOCK';
        if (got) flockNb(gf, F_UNLCK);
      } finally {
        closeSync(gp);
        closeSync(gf);
      }
      flockNb(ack, F_WRLCK);
    };
    try {
      run = await runGuest({
        label: 'kata',
        workDir: work,
        timeoutMs: 240_000,
        scenario: 'corpus-kata.py',
        scenarioTimeoutSec: 150,
        mounts: [{ kind: 'vhost-user-fs', name: 'x', socket: sock, tag: 'kataShared', queueSize: 1024 }],
        onConsole,
      });
    } catch (e) {
      if (e instanceof Error) e.message += `\n--- node ${argv.join(' ')} (tail of its output) ---\n${tail(daemonOut, 30)}`;
      throw e;
    } finally {
      await stopProcess(child);
      closeSync(ack);
    }
  }, 300_000);

  afterAll(() => {
    if (work) removeWorkDir(work);
  });

  const check = (name: string) => run?.sections[0]?.checks.get(name);

  test('the guest mounts it: mount -t virtiofs kataShared', () => {
    expect(run?.mounted).toEqual(['x']);
    expect(check('mount')).toBe('kataShared:virtiofs');
    expect(check('write_read')).toBe('kata');
  });

  test('--xattrmap: guest names live under user.virtiofs. on the host; host-only names are hidden', () => {
    expect(check('xattr_get')).toBe('v1');
    expect(hostXattrs(join(src, 'f.txt'))).toEqual(['user.virtiofs.user.kata']);
    expect(check('xattr_list_tagged')).toBe('user.seen');
    expect(check('xattr_hostonly')).toBe('ENODATA'); // asked for as user.virtiofs.user.hostonly: not there
  });

  test("--posix-acl=never (virtiofsd's default): the guest gets no ACLs", () => {
    expect(check('acl_set')).toBe('ENOTSUP'); // errno 95 (EOPNOTSUPP); python's errno.errorcode names it ENOTSUP
    expect(hostXattrs(join(src, 'f.txt'))).not.toContain('system.posix_acl_access');
  });

  test('-o no_posix_lock: POSIX locks stay in the guest (two guest processes still exclude each other); flock reaches the host', () => {
    expect(check('posix_conflict_in_guest')).toBe('EAGAIN');
    expect(hostSaw).toEqual({ posix: 'unlocked', flock: 'EWOULDBLOCK' });
    expect(check('host_acknowledged')).toBe('ok');
  });

  test("--syslog without /dev/log: one warning, virtiofsd's text lines, no error", () => {
    if (existsSync('/dev/log')) return;
    expect(daemonOut.match(/can't enable syslog/g)).toHaveLength(1);
    expect(daemonOut).toMatch(/^\[\S+Z INFO  duofs-virtiofsd\] /m);
    expect(daemonOut).not.toMatch(/ (ERROR) duofs-virtiofsd\]/);
    expect(daemonOut).not.toMatch(/^duofs-virtiofsd: /m);
  });
});
