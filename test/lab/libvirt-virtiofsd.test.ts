// duofs-virtiofsd started the way libvirt starts a virtiofs daemon, and a real
// guest mounting it. For
//
//   <filesystem type='mount' accessmode='passthrough'>
//     <driver type='virtiofs' queue='1024'/>
//     <binary path='.../duofs-virtiofsd' xattr='on'>
//       <cache mode='always'/>
//       <lock posix='on' flock='on'/>
//     </binary>
//     <source dir='SRC'/>
//     <target dir='mailstore'/>
//   </filesystem>
//
// libvirt 9+ (qemuVirtioFSStart; 10.x+ too for a binary whose capabilities
// lack "separate-options", see compat/virtiofsd/README.md) creates and binds
// the vhost-user socket itself (qemuOpenChrChardevUNIXSocket: a blocking
// AF_UNIX stream socket, listen backlog 1), passes the listening fd down and
// runs
//
//   BINARY --fd=N -o source=SRC,cache=always,xattr,flock,posix_lock
//
// then gives QEMU `-chardev socket,path=SOCK -device
// vhost-user-fs-pci,queue-size=1024,chardev=...,tag=mailstore`. This test
// does the same: the socket is made and listened on in this process, handed
// to duofs-virtiofsd as fd 3 (and closed here, as libvirt does), and the guest
// runs `mount -t virtiofs mailstore /mnt/x`, writes and reads files, sets an
// xattr, and takes POSIX locks and flock()s — against each other, against
// locks this process holds on the host, and held while this process looks
// (test/lab/guest/scenarios/corpus-libvirt.py).
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { freshTree, runGuest, type GuestRun } from './guest.js';
import { labAvailable, makeWorkDir, removeWorkDir, repoRoot, stopProcess, tail, trackProcess } from './lab.js';
import { ensureDuofsBuilt } from './daemons.js';
import { closeFd } from '../../src/sys/fd.js';
import { listenUnixSocket } from '../../src/sys/sockets.js';
import { c, cstr } from '../../src/sys/libc.js';
import { flockNb, ofdGetLock, ofdSetLock } from '../../src/sys/locks.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** libvirt's listening socket: blocking, bound at `path`, listen(fd, 1). */
function libvirtListeningSocket(path: string): number {
  const fd = listenUnixSocket(path, 1);
  const fl = c.fcntlInt(fd, F_GETFL, 0);
  if (fl < 0 || c.fcntlInt(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
    closeFd(fd);
    throw new Error(`fcntl on the listening socket ${path} failed`);
  }
  return fd;
}

function hostXattr(path: string, name: string): string | undefined {
  const buf = Buffer.alloc(256);
  const n = Number(c.lgetxattr(cstr(path), cstr(name), buf, buf.length));
  return n < 0 ? undefined : buf.subarray(0, n).toString('latin1');
}

d('duofs-virtiofsd as libvirt runs it, mounted by a real guest', () => {
  let work = '';
  let src = '';
  let run: GuestRun | undefined;
  let daemonOut = '';
  let aliveAfterGuest = false;
  const hostSaw: Record<string, string> = {};
  const argv: string[] = [];

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    ensureDuofsBuilt();
    work = makeWorkDir('libvirt');
    src = freshTree(work, 'mailstore');
    writeFileSync(join(src, 'from-host.txt'), 'hello-from-host\n');
    for (const f of ['host-held-posix', 'host-held-flock', 'host-ack']) writeFileSync(join(src, f), '');
    // libvirt keeps daemon sockets in a per-domain folder, e.g.
    // /run/libvirt/qemu/domain-1-vm/fs0-fs.sock (its name for this <filesystem>)
    const sockDir = join(work, 'domain-1-vm');
    mkdirSync(sockDir);
    const sock = join(sockDir, 'fs0-fs.sock');

    // Locks held on the host for the whole run: an OFD write lock and a flock.
    const heldPosix = openSync(join(src, 'host-held-posix'), 'r+');
    const heldFlock = openSync(join(src, 'host-held-flock'), 'r+');
    const ack = openSync(join(src, 'host-ack'), 'r+');
    expect(ofdSetLock(heldPosix, { type: F_WRLCK, start: 0, len: 0 })).toBe(true);
    expect(flockNb(heldFlock, F_WRLCK)).toBe(true);

    let child: ChildProcess | undefined;
    const listenFd = libvirtListeningSocket(sock);
    try {
      argv.push(
        join(repoRoot, 'bin', 'duofs-virtiofsd.js'),
        '--fd=3',
        '-o',
        `source=${src.replaceAll(',', ',,')},cache=always,xattr,flock,posix_lock`,
      );
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
      closeFd(listenFd); // VIR_COMMAND_PASS_FD_CLOSE_PARENT
    }

    // When the guest says it holds its locks, look at them from the host, then
    // take a write lock on host-ack: the guest polls F_GETLK there.
    let consoleTail = '';
    const onConsole = (text: string) => {
      consoleTail = (consoleTail + text).slice(-4096);
      if (hostSaw.posix !== undefined || !consoleTail.includes('LIBVIRT-GUEST-HOLDS-LOCKS')) return;
      const gp = openSync(join(src, 'guest-held-posix'), 'r+');
      const gf = openSync(join(src, 'guest-held-flock'), 'r+');
      try {
        const l = ofdGetLock(gp, { type: F_WRLCK, start: 0, len: 0 });
        hostSaw.posix = l.type === F_WRLCK ? 'wrlck' : l.type === F_RDLCK ? 'rdlck' : 'unlck';
        hostSaw.posixSetlk = ofdSetLock(gp, { type: F_WRLCK, start: 0, len: 0 }) ? 'acquired' : 'EAGAIN';
        const got = flockNb(gf, F_WRLCK);
        hostSaw.flock = got ? 'acquired' : 'EWOULDBLOCK';
        if (got) flockNb(gf, F_UNLCK);
      } finally {
        closeSync(gp); // also drops an OFD lock taken above by mistake
        closeSync(gf);
      }
      ofdSetLock(ack, { type: F_WRLCK, start: 0, len: 0 });
    };

    const t0 = Date.now();
    try {
      run = await runGuest({
        label: 'libvirt',
        workDir: work,
        timeoutMs: 240_000,
        scenario: 'corpus-libvirt.py',
        scenarioTimeoutSec: 150,
        // tag 'mailstore' from <target dir='mailstore'/>; queue='1024' is QEMU's queue-size
        mounts: [{ kind: 'vhost-user-fs', name: 'x', socket: sock, tag: 'mailstore', queueSize: 1024 }],
        onConsole,
      });
      aliveAfterGuest = child.exitCode === null && child.signalCode === null;
      process.stderr.write(
        `lab: libvirt-virtiofsd: wall ${((Date.now() - t0) / 1000).toFixed(1)} s, boot ${((run.bootMs ?? NaN) / 1000).toFixed(1)} s, ` +
          `scenario ${run.sections[0]?.guestSeconds} s\n`,
      );
    } catch (e) {
      if (e instanceof Error) e.message += `\n--- node ${argv.join(' ')} (tail of its output) ---\n${tail(daemonOut, 30)}`;
      throw e;
    } finally {
      await stopProcess(child);
      for (const fd of [heldPosix, heldFlock, ack]) closeSync(fd);
    }
  }, 300_000);

  afterAll(() => {
    if (work) removeWorkDir(work);
  });

  const check = (name: string) => run?.sections[0]?.checks.get(name);

  test('the guest mounts the daemon libvirt started: mount -t virtiofs mailstore /mnt/x', () => {
    expect(run?.mounted).toEqual(['x']);
    expect(run?.console).toContain('@@DUOFS-LAB MOUNTED x@@');
    expect(check('mount')).toBe('mailstore:virtiofs');
    expect(run?.sections[0]?.rc).toBe(0);
  });

  test('files written and read through it are on the host; xattr=on works', () => {
    expect(check('read_host_file')).toBe('hello-from-host');
    expect(check('write_read')).toBe('ok');
    expect(readFileSync(join(src, 'hello.txt'), 'utf8')).toBe('hello from the libvirt guest\n');
    const want = Buffer.concat(Array.from({ length: 40000 }, () => createHash('sha256').update('seed').digest()));
    const got = readFileSync(join(src, 'mail.bin'));
    expect(got.length).toBe(want.length);
    expect(got.equals(want)).toBe(true);
    expect(check('xattr')).toBe('inbox');
    expect(hostXattr(join(src, 'hello.txt'), 'user.mail')).toBe('inbox');
    expect(statSync(join(src, 'hello.txt')).uid).toBe(0); // accessmode='passthrough': the guest's ids on the host
  });

  test("POSIX locks (<lock posix='on'/>): two guest processes exclude each other", () => {
    expect(check('posix_lock')).toBe('ok');
    expect(check('posix_lock_conflict_in_guest')).toMatch(/^EAGAIN,getlk=wrlck,holder=/);
    expect(check('posix_lock_after_unlock')).toBe('acquired');
  });

  test('F_GETLK names the guest process that holds the conflicting lock (as a local file system does)', () => {
    // The FUSE SETLK request carries the locking process's pid (lk.pid, in the
    // guest's pid namespace); a GETLK reply with pid 0 makes F_GETLK report l_pid 0.
    expect(check('posix_lock_conflict_in_guest')).toBe('EAGAIN,getlk=wrlck,holder=parent');
  });

  test("flock (<lock flock='on'/>): two open files in the guest exclude each other", () => {
    expect(check('flock_conflict_in_guest')).toBe('EAGAIN');
    expect(check('flock_after_unlock')).toBe('ok');
  });

  test("the locks are real host locks: the guest sees the host's, the host sees the guest's", () => {
    expect(check('host_posix_lock_seen')).toBe('EAGAIN');
    expect(check('host_posix_lock_getlk')).toBe('wrlck');
    expect(check('host_flock_seen')).toBe('EAGAIN');
    expect(hostSaw).toEqual({ posix: 'wrlck', posixSetlk: 'EAGAIN', flock: 'EWOULDBLOCK' });
    expect(check('host_acknowledged')).toBe('ok');
  });

  test('duofs-virtiofsd serves on after the guest went away, and logged no error', () => {
    expect(aliveAfterGuest).toBe(true);
    expect(daemonOut).toMatch(/^\[\S+Z INFO  duofs-virtiofsd\] /m); // virtiofsd's text lines (so the next line can fail)
    expect(daemonOut).not.toMatch(/ ERROR duofs-virtiofsd\]/);
    expect(daemonOut).not.toMatch(/^duofs-virtiofsd: /m); // its one-line start-up errors
    expect(existsSync(join(src, 'guest-held-posix'))).toBe(true);
  });
});
