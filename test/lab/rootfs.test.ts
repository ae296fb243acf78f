// A guest whose root filesystem is duofs (issue 16), served by an ordinary
// (non-root) host user with mapped-xattr, so the guest's root is writable and
// keeps the guest's owners, modes and device nodes:
//  * 9p: `root=TAG rootfstype=9p rootflags=trans=virtio,version=9p2000.L` from
//    duofs's virtio-9p device (vhost-user-test-device-pci). Debian's kernel has
//    9p as modules, so the lab's initramfs (initramfs.ts) loads them, mounts
//    the root as those arguments say and switch_roots;
//  * virtio-fs: `root=TAG rootfstype=virtiofs`, no initramfs (built in).
// The root is a small busybox tree (not the lab root). Its init
// (guest/rootfs/init.sh) installs busybox's applet links on the root, writes,
// chowns to 1234:5678, chmods, makes a device node, a fifo and a symlink, and
// reads them back (also after dropping the guest's caches); the virtio-fs boot
// also reads what the 9p boot made. On the host every object is a regular
// file or directory of the unprivileged user and the guest's view is in
// user.virtfs.* xattrs. duofs logs at warn: any warning fails the test.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { chownSync, copyFileSync, lstatSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun } from './guest.js';
import { ensureRoot9pInitramfs, type Initramfs } from './initramfs.js';
import { guestScriptsDir, labAvailable, labRoot, makeWorkDir, removeWorkDir, tail } from './lab.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { c, cstr } from '../../src/sys/libc.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

const UID = 64124;
const GID = 64124;

function xattr(path: string, name: string): Buffer | undefined {
  const val = Buffer.alloc(256);
  const n = Number(c.lgetxattr(cstr(path), cstr(name), val, val.length));
  return n >= 0 ? Buffer.from(val.subarray(0, n)) : undefined;
}
const u32 = (b: Buffer | undefined) => (b?.length === 4 ? b.readUInt32LE(0) : undefined);
const u64 = (b: Buffer | undefined) => (b?.length === 8 ? b.readBigUInt64LE(0) : undefined);
/** glibc's makedev, the encoding of user.virtfs.rdev. */
const makedev = (ma: number, mi: number) =>
  ((BigInt(ma) & 0xfffff000n) << 32n) | ((BigInt(ma) & 0xfffn) << 8n) | ((BigInt(mi) & 0xffffff00n) << 12n) | (BigInt(mi) & 0xffn);

/** A small root: busybox-static and the init script, every object the unprivileged user's. */
function makeRootTree(dir: string): void {
  for (const sub of ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'etc']) mkdirSync(join(dir, sub), { mode: 0o755 });
  copyFileSync(join(labRoot, 'usr/bin/busybox'), join(dir, 'bin/busybox'));
  copyFileSync(join(guestScriptsDir, 'rootfs', 'init.sh'), join(dir, 'lab-init'));
  const own = (p: string) => {
    chownSync(p, UID, GID);
    if (lstatSync(p).isDirectory()) for (const n of readdirSync(p)) own(join(p, n));
  };
  own(dir);
}

/** What the guest must read back for the objects it made in DIR (busybox stat). */
const WANT = {
  file: '1234:5678 2751 regular file 48',
  content: 'written by the guest over PROTO|appended|',
  zero: '0:6 640 character special file 1:5',
  'zero.read': '00000000',
  fifo: '604 fifo',
  link: '1234:5678 symbolic link -> file',
  dir: '1234:5678 750 directory',
};
const want = (prefix: string, proto: string) =>
  Object.fromEntries(
    Object.entries(WANT).map(([k, v]) => [
      `${prefix}.${k}`,
      k === 'file' ? `1234:5678 2751 regular file ${`written by the guest over ${proto}\nappended\n`.length}` : v.replace('PROTO', proto),
    ]),
  );

d('the guest root filesystem on duofs (unprivileged, mapped-xattr)', () => {
  let work = '';
  let tree = '';
  let initramfs: Initramfs | undefined;
  const runs = new Map<string, GuestRun>();
  let duofsLog = '';

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    work = makeWorkDir('rootfs');
    tree = freshTree(work, 'root');
    makeRootTree(tree);
    initramfs = ensureRoot9pInitramfs();
    process.stderr.write(
      `lab: rootfs: initramfs ${initramfs.path} (${initramfs.built ? 'built' : 'cached'}, ${initramfs.bytes} bytes): ${initramfs.modules.join(' ')}` +
        `${initramfs.builtin.length ? `; built in: ${initramfs.builtin.join(' ')}` : ''}\n`,
    );
    const sockDir = join(work, 'sock');
    mkdirSync(sockDir, { mode: 0o755 });
    chownSync(sockDir, UID, GID);
    const s9 = join(sockDir, 'root-9p.sock');
    const sv = join(sockDir, 'root-vfs.sock');
    let daemon: HostDaemon | undefined;
    try {
      daemon = await startDuofs(
        [
          'serve',
          '--shared-dir',
          tree,
          '--security-model',
          'mapped-xattr',
          '--9p-vhost-socket',
          s9,
          '--9p-tag',
          'root9p',
          '--virtiofs-socket',
          sv,
          '--tag',
          'rootvfs',
          '--log-level',
          'warn',
        ],
        [s9, sv],
        { user: { uid: UID, gid: GID } },
      );
      for (const [proto, root] of [
        [
          '9p',
          {
            kind: 'vhost-user-9p',
            socket: s9,
            tag: 'root9p',
            initrd: initramfs.path,
            kernelArgs: ['root=root9p', 'rootfstype=9p', 'rootflags=trans=virtio,version=9p2000.L', 'rw', 'init=/lab-init', 'lab.proto=9p'],
          },
        ],
        [
          'virtiofs',
          {
            kind: 'vhost-user-fs',
            socket: sv,
            tag: 'rootvfs',
            kernelArgs: ['root=rootvfs', 'rootfstype=virtiofs', 'rw', 'init=/lab-init', 'lab.proto=virtiofs'],
          },
        ],
      ] as [string, NonNullable<Parameters<typeof runGuest>[0]['root']>][]) {
        const t0 = Date.now();
        const run = await runGuest({ label: `rootfs-${proto}`, workDir: join(work, `g-${proto}`), timeoutMs: 150_000, mounts: [], root });
        runs.set(proto, run);
        process.stderr.write(
          `lab: rootfs ${proto}: wall ${((Date.now() - t0) / 1000).toFixed(1)} s, init at uptime ${run.bootUptime} s, scenario ${run.sections[0]?.guestSeconds} s\n`,
        );
      }
    } catch (e) {
      if (e instanceof Error && daemon) e.message += `\n--- duofs (uid ${UID}) output (tail) ---\n${tail(daemon.output(), 30)}`;
      throw e;
    } finally {
      duofsLog = daemon?.output() ?? '';
      await daemon?.stop();
    }
  }, 400_000);

  afterAll(() => {
    if (work) removeWorkDir(work);
  });

  test('the initramfs carries the 9p modules and their dependencies, not what the kernel has built in', () => {
    expect(initramfs!.modules.map((m) => m.replace(/^.*\//, ''))).toEqual(['netfs.ko', '9pnet.ko', '9pnet_virtio.ko', '9p.ko']);
    // the same inputs give the same archive
    expect(ensureRoot9pInitramfs()).toMatchObject({ path: initramfs!.path, built: false });
  });

  for (const proto of ['9p', 'virtiofs']) {
    test(`${proto} root: writable, the guest's chown, chmod, mknod, fifo and symlink read back as made`, () => {
      const run = runs.get(proto)!;
      const s = run.sections.find((x) => x.mount === `root-${proto}`);
      expect(s).toBeDefined();
      const ch = Object.fromEntries(s!.checks);
      const steps = Object.entries(ch).filter(([k, v]) => k.startsWith('step.') && v !== 'ok');
      expect(steps).toEqual([]);
      expect(s!.rc).toBe(0);
      expect(ch['root.mount']).toBe(`${proto} rw`);
      expect(ch.id).toBe('0:0');
      expect(ch['root.links']).toBe('many');
      expect(ch).toMatchObject(want('rb', proto));
      expect(ch).toMatchObject(want('dropped', proto));
    });
  }

  test('the virtio-fs root sees what the 9p root made, with the same owners, modes and device', () => {
    const ch = Object.fromEntries(runs.get('virtiofs')!.sections[0].checks);
    expect(ch).toMatchObject(want('seen.9p', '9p'));
  });

  test(`on the host: everything is uid ${UID}'s, regular files and directories, the guest's view in user.virtfs.*`, () => {
    const bad: string[] = [];
    const visit = (p: string) => {
      const st = lstatSync(p);
      if (st.uid !== UID || st.gid !== GID || !(st.isFile() || st.isDirectory()) || (st.mode & 0o7000) !== 0)
        bad.push(`${p}: mode ${st.mode.toString(8)} ${st.uid}:${st.gid}`);
      if (st.isDirectory()) for (const n of readdirSync(p)) visit(join(p, n));
    };
    visit(tree);
    expect(bad).toEqual([]);
    for (const proto of ['9p', 'virtiofs']) {
      const g = join(tree, `guest-${proto}`);
      const meta = (n: string) => ({
        uid: u32(xattr(join(g, n), 'user.virtfs.uid')),
        gid: u32(xattr(join(g, n), 'user.virtfs.gid')),
        mode: u32(xattr(join(g, n), 'user.virtfs.mode')),
      });
      expect(meta('file')).toEqual({ uid: 1234, gid: 5678, mode: 0o102751 });
      expect(readFileSync(join(g, 'file'), 'utf8')).toBe(`written by the guest over ${proto}\nappended\n`);
      expect(meta('zero')).toEqual({ uid: 0, gid: 6, mode: 0o020640 });
      expect(u64(xattr(join(g, 'zero'), 'user.virtfs.rdev'))).toBe(makedev(1, 5));
      expect(lstatSync(join(g, 'zero')).size).toBe(0);
      expect(meta('fifo')).toMatchObject({ mode: 0o010604 });
      expect(meta('link')).toMatchObject({ uid: 1234, gid: 5678, mode: 0o120777 });
      expect(readFileSync(join(g, 'link'), 'utf8')).toBe('file');
      expect(meta('dir')).toEqual({ uid: 1234, gid: 5678, mode: 0o040750 });
    }
    // busybox's applet links, made by the 9p guest on its root, are symlinks in user.virtfs.mode
    expect(u32(xattr(join(tree, 'bin', 'sh'), 'user.virtfs.mode'))).toBe(0o120777);
    expect(readFileSync(join(tree, 'bin', 'sh'), 'utf8')).toBe('/bin/busybox');
  });

  test('duofs logged no warning or error', () => {
    expect(duofsLog.split('\n').filter((l) => /"level":(40|50|60)|\b(WARN|ERROR)\b/.test(l))).toEqual([]);
  });
});
