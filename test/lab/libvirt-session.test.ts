// duofs-virtiofsd as libvirt's session mode (qemu:///session, an ordinary
// user's libvirt) starts it, and a real guest using it. For
//
//   <filesystem type='mount' accessmode='passthrough'>
//     <driver type='virtiofs'/>
//     <binary path='.../duofs-virtiofsd'/>
//     <source dir='SRC'/>
//     <target dir='TAG'/>
//   </filesystem>
//
// libvirt (src/qemu/qemu_virtiofs.c) running unprivileged gives the daemon,
// when the domain XML has no <idmap>, the user itself as id 0 and its
// /etc/subuid and /etc/subgid ranges from 1 on (qemuVirtioFSPrepareIdMap,
// called from qemuVirtioFSPrepareDomain when !driver->privileged), and
// builds (qemuVirtioFSBuildCommandLine; -o form because duofs's capabilities
// lack "separate-options"; no virtCommandSetUID in session mode, so it runs
// as the user):
//
//   BINARY --fd=N -o source=SRC --uid-map=:0:UID:1: --uid-map=:1:SUBUID:COUNT:
//          --gid-map=:0:GID:1: --gid-map=:1:SUBGID:COUNT:
//
// This test does the same for two <filesystem>s of one domain, as a
// throwaway user with subordinate ranges: the listening sockets are made
// here and passed down as fd 3, one daemon gets exactly that argv (duofs's
// default, passthrough inside the user namespace), the other the same plus
// `--security-model mapped-xattr` (what a <binary path> wrapper script adds:
// libvirt cannot pass it). One guest mounts both and, as root and as uid
// 1000, creates, chowns, chmods, makes a fifo and a char device
// (guest/scenarios/libvirt-session.py). Then the host is checked:
// passthrough puts the namespace's ids on the host (guest 0 = the user,
// guest N = SUBUID+N-1) and refuses the device node (EPERM: making one
// needs CAP_MKNOD in the host's namespace, for virtiofsd too); mapped-xattr
// keeps every host object the user's and the guest's owner, mode and device
// number in user.virtfs.*.
// Needs root, `npm run lab:setup` and the uidmap package (npm test installs
// it); DUOFS_SKIP_LAB=1 skips.
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun } from './guest.js';
import { labAvailable, makeWorkDir, removeWorkDir, repoRoot, stopProcess, tail, trackProcess } from './lab.js';
import { ensureDuofsBuilt } from './daemons.js';
import { closeFd } from '../../src/sys/fd.js';
import { listenUnixSocket } from '../../src/sys/sockets.js';
import { c, cstr } from '../../src/sys/libc.js';
import { createSubidUser, libvirtSessionMaps, subidUnavailable, type SubidUser } from '../support/subid-user.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

/** libvirt's listening socket (qemuOpenChrChardevUNIXSocket): blocking, backlog 1; in session mode the user's. */
function libvirtSocket(path: string, u: SubidUser): number {
  const fd = listenUnixSocket(path, 1);
  const fl = c.fcntlInt(fd, 3 /* F_GETFL */, 0);
  c.fcntlInt(fd, 4 /* F_SETFL */, fl & ~0o4000 /* O_NONBLOCK */);
  chownSync(path, u.uid, u.gid);
  return fd;
}

function xattrU32(path: string, name: string): number | undefined {
  const b = Buffer.alloc(16);
  const n = Number(c.lgetxattr(cstr(path), cstr(name), b, b.length));
  return n === 4 ? b.readUInt32LE(0) : undefined;
}
function xattrU64(path: string, name: string): bigint | undefined {
  const b = Buffer.alloc(16);
  const n = Number(c.lgetxattr(cstr(path), cstr(name), b, b.length));
  return n === 8 ? b.readBigUInt64LE(0) : undefined;
}

const kids = (pid: number): number[] => {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
};
const mapOf = (pid: number, kind: 'uid' | 'gid'): number[][] =>
  readFileSync(`/proc/${pid}/${kind}_map`, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number));

interface Daemon {
  name: string;
  argv: string[];
  child: ChildProcess;
  out: () => string;
  maps?: { uid: number[][]; gid: number[][] };
}

d("duofs-virtiofsd as libvirt's session mode runs it (a user, --uid-map/--gid-map, --fd), mounted by a real guest", () => {
  let work = '';
  let user: SubidUser | undefined;
  let run: GuestRun | undefined;
  const trees: Record<string, string> = {};
  const daemons: Daemon[] = [];

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const why = subidUnavailable();
    if (why) throw new Error(`cannot run libvirt's session mode here: ${why}`);
    ensureDuofsBuilt();
    user = createSubidUser('lvs');
    const u = user;
    work = makeWorkDir('libvirt-session');
    const sockDir = join(work, 'domain-1-vm'); // libvirt: one folder per domain, <alias>-fs.sock in it
    mkdirSync(sockDir, { mode: 0o755 });
    chownSync(sockDir, u.uid, u.gid);
    const t0 = Date.now();
    try {
      for (const [name, extra] of [
        ['sp', []],
        ['sm', ['--security-model', 'mapped-xattr']],
      ] as const) {
        trees[name] = freshTree(work, name);
        chownSync(trees[name]!, u.uid, u.gid); // the user's directory, as a session domain's would be
        const sock = join(sockDir, `fs-${name}-fs.sock`);
        const fd = libvirtSocket(sock, u);
        const argv = [
          join(repoRoot, 'bin', 'duofs-virtiofsd.js'),
          '--fd=3',
          '-o',
          `source=${trees[name]!.replaceAll(',', ',,')}`,
          ...libvirtSessionMaps(u),
          ...extra,
        ];
        let out = '';
        try {
          const child = spawn(
            'setpriv',
            ['--pdeathsig', 'KILL', `--reuid=${u.uid}`, `--regid=${u.gid}`, '--init-groups', '--', process.execPath, ...argv],
            {
              cwd: '/',
              stdio: ['ignore', 'pipe', 'pipe', fd],
              detached: true,
              env: { ...process.env, HOME: '/' },
            },
          );
          trackProcess(child);
          const grab = (b: Buffer) => {
            if (out.length < 1e6) out += b.toString('utf8');
          };
          child.stdout!.on('data', grab);
          child.stderr!.on('data', grab);
          daemons.push({ name, argv, child, out: () => out });
        } finally {
          closeFd(fd); // VIR_COMMAND_PASS_FD_CLOSE_PARENT
        }
      }
      // Both serving, from inside their user namespaces: read the maps the kernel has.
      const end = Date.now() + 60_000;
      for (const dm of daemons) {
        while (!dm.out().includes('duofs-virtiofsd started')) {
          if (dm.child.exitCode !== null || Date.now() > end) throw new Error(`${dm.name} did not start:\n${tail(dm.out(), 30)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const server = kids(kids(dm.child.pid!)[0] ?? -1)[0];
        if (server !== undefined) dm.maps = { uid: mapOf(server, 'uid'), gid: mapOf(server, 'gid') };
      }
      run = await runGuest({
        label: 'libvirt-session',
        workDir: work,
        timeoutMs: 240_000,
        scenario: 'libvirt-session.py',
        scenarioTimeoutSec: 120,
        mounts: daemons.map((dm) => ({
          kind: 'vhost-user-fs' as const,
          name: dm.name,
          socket: join(sockDir, `fs-${dm.name}-fs.sock`),
          tag: dm.name,
        })),
      });
      process.stderr.write(
        `lab: libvirt-session: wall ${((Date.now() - t0) / 1000).toFixed(1)} s, boot ${((run.bootMs ?? NaN) / 1000).toFixed(1)} s, ` +
          `${run.sections.map((s) => `${s.mount} ${s.guestSeconds}s`).join(', ')}\n`,
      );
    } catch (e) {
      if (e instanceof Error) for (const dm of daemons) e.message += `\n--- ${dm.name}: node ${dm.argv.join(' ')} (tail) ---\n${tail(dm.out(), 30)}`;
      throw e;
    } finally {
      for (const dm of daemons) await stopProcess(dm.child);
    }
  }, 300_000);

  afterAll(() => {
    if (work) removeWorkDir(work);
    user?.remove();
  });

  const checks = (mount: string) => Object.fromEntries(run?.sections.find((s) => s.mount === mount)?.checks ?? []);
  const host = (mount: string, rel: string) => {
    const st = lstatSync(join(trees[mount]!, rel));
    return {
      uid: st.uid,
      gid: st.gid,
      mode: st.mode & 0o7777,
      type: st.isFile() ? 'reg' : st.isDirectory() ? 'dir' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'chr' : '?',
    };
  };

  test("each daemon runs as the user in a user namespace with exactly libvirt's maps", () => {
    const u = user!;
    for (const dm of daemons) {
      expect([dm.name, dm.maps]).toEqual([
        dm.name,
        {
          uid: [
            [0, u.uid, 1],
            [1, u.subuid.start, u.subuid.count],
          ],
          gid: [
            [0, u.gid, 1],
            [1, u.subgid.start, u.subgid.count],
          ],
        },
      ]);
      expect(dm.out()).toMatch(/sandbox: namespace, the export is the root.*userNamespace=true/);
      expect(dm.out()).not.toMatch(/ ERROR duofs-virtiofsd\]/);
    }
  });

  test('the guest mounts both and every scenario step ran', () => {
    expect(run?.mounted).toEqual(['sp', 'sm']);
    for (const m of ['sp', 'sm']) {
      expect([m, checks(m)['mount'], checks(m)['done']]).toEqual([m, 'virtiofs', 'ok']);
      expect(run?.sections.find((s) => s.mount === m)?.rc).toBe(0);
    }
  });

  test('passthrough in the user namespace: the guest chowns, chmods and makes a fifo; a char device is EPERM', () => {
    expect(checks('sp')).toMatchObject({
      create_as_root: 'reg,0:0,644',
      chown_1000: 'reg,1000:1000,644',
      chmod_4751: 'reg,1000:1000,4751',
      chown_nobody: 'reg,65534:65534,644',
      mkfifo: 'fifo,0:0,640',
      chown_fifo: 'fifo,1001:1002,640',
      mknod_chr: 'EPERM',
      chown_home: 'dir,1000:1000,755',
      create_as_1000: 'reg,1000:1000,644',
      mkfifo_as_1000: 'fifo,1000:1000,600',
    });
  });

  test("passthrough: on the host the ids are the namespace's — guest 0 is the user, guest N is SUBUID+N-1", () => {
    const u = user!;
    const sub = (n: number) => u.subuid.start + n - 1;
    const subg = (n: number) => u.subgid.start + n - 1;
    expect(host('sp', 'by-root')).toEqual({ uid: u.uid, gid: u.gid, mode: 0o644, type: 'reg' });
    expect(host('sp', 'owned')).toEqual({ uid: sub(1000), gid: subg(1000), mode: 0o4751, type: 'reg' });
    expect(host('sp', 'nobody')).toEqual({ uid: sub(65534), gid: subg(65534), mode: 0o644, type: 'reg' });
    expect(host('sp', 'fifo')).toEqual({ uid: sub(1001), gid: subg(1002), mode: 0o640, type: 'fifo' });
    expect(host('sp', 'home/mine')).toEqual({ uid: sub(1000), gid: subg(1000), mode: 0o644, type: 'reg' });
    expect(host('sp', 'home/fifo')).toEqual({ uid: sub(1000), gid: subg(1000), mode: 0o600, type: 'fifo' });
  });

  test('mapped-xattr: the guest chowns, chmods, makes a fifo and a char device node', () => {
    expect(checks('sm')).toMatchObject({
      create_as_root: 'reg,0:0,644',
      chown_1000: 'reg,1000:1000,644',
      chmod_4751: 'reg,1000:1000,4751',
      chown_nobody: 'reg,65534:65534,644',
      mkfifo: 'fifo,0:0,640',
      chown_fifo: 'fifo,1001:1002,640',
      mknod_chr: 'chr,0:0,644,1:3',
      chown_chr: 'chr,0:5,644,1:3',
      chown_home: 'dir,1000:1000,755',
      create_as_1000: 'reg,1000:1000,644',
      mkfifo_as_1000: 'fifo,1000:1000,600',
    });
  });

  test("mapped-xattr: on the host every object is the user's plain file or directory, the guest's view in user.virtfs.*", () => {
    const u = user!;
    const p = (rel: string) => join(trees['sm']!, rel);
    const meta = (rel: string) => ({
      uid: xattrU32(p(rel), 'user.virtfs.uid'),
      gid: xattrU32(p(rel), 'user.virtfs.gid'),
      mode: xattrU32(p(rel), 'user.virtfs.mode'),
    });
    for (const rel of ['by-root', 'owned', 'nobody', 'fifo', 'null', 'home/mine', 'home/fifo']) {
      expect([rel, host('sm', rel)]).toEqual([rel, { uid: u.uid, gid: u.gid, mode: 0o600, type: 'reg' }]);
    }
    expect(host('sm', 'home')).toMatchObject({ uid: u.uid, gid: u.gid, type: 'dir' });
    expect(meta('owned')).toEqual({ uid: 1000, gid: 1000, mode: 0o104751 });
    expect(meta('nobody')).toEqual({ uid: 65534, gid: 65534, mode: 0o100644 });
    expect(meta('fifo')).toEqual({ uid: 1001, gid: 1002, mode: 0o010640 });
    expect(meta('null')).toEqual({ uid: 0, gid: 5, mode: 0o020644 });
    expect(xattrU64(p('null'), 'user.virtfs.rdev')).toBe((1n << 8n) | 3n); // glibc makedev(1, 3)
    expect(meta('home/mine')).toEqual({ uid: 1000, gid: 1000, mode: 0o100644 });
  });
});
