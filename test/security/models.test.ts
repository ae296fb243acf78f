// The security models through both front-ends of one daemon: a corpus built
// through the host's FUSE client (as a virtio-fs guest would) must look the
// same over 9P, and must be stored in QEMU's on-disk formats byte for byte.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { P9Client } from '../p9/client.js';
import { jest } from '@jest/globals';
import { startDaemon, type Daemon } from '../support/daemon.js';

jest.setTimeout(60_000);

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const S_IFLNK = 0o120000;
const S_IFDIR = 0o040000;

const xattr = (p: string, name: string): Buffer | undefined => {
  try {
    return execFileSync('getfattr', ['--only-values', '-h', '-n', name, p], { stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
};

let tmp: string;
let exportDir: string;
let mnt: string;
let sock: string;
let daemon: Daemon | undefined;

beforeAll(() => {
  try {
    execFileSync('getfattr', ['--version'], { stdio: 'ignore' });
  } catch {
    execFileSync('apt-get', ['install', '-y', '-qq', 'attr'], { stdio: 'ignore' });
  }
});

beforeEach(() => {
  // Not under /tmp: user.* xattrs need a filesystem that keeps them.
  tmp = fs.mkdtempSync(path.join('/var/tmp', 'duofs-sec-'));
  exportDir = path.join(tmp, 'export');
  mnt = path.join(tmp, 'mnt');
  sock = path.join(tmp, '9p.sock');
  fs.mkdirSync(exportDir);
  fs.mkdirSync(mnt);
});

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function serve(model: string, extra: string[] = []): Promise<void> {
  daemon = await startDaemon(
    ['--shared-dir', exportDir, '--security-model', model, '--fuse-mount', mnt, '--9p-socket', sock, '--xattr', '--log-level', 'warn', ...extra],
    { sockets: [sock], mount: mnt },
  );
}

/** Builds a corpus through the FUSE mount, as root in a guest would. */
function buildCorpus(): void {
  const m = (p: string): string => path.join(mnt, p);
  fs.writeFileSync(m('plain'), 'data\n');
  fs.chownSync(m('plain'), 1234, 5678);
  fs.chmodSync(m('plain'), 0o4755);
  fs.mkdirSync(m('dir'));
  fs.chownSync(m('dir'), 77, 88);
  fs.chmodSync(m('dir'), 0o1777);
  // Explicit modes: in-process servers in the same jest worker set umask 0.
  execFileSync('mknod', ['-m', '644', m('dir/cdev'), 'c', '4', '5']);
  execFileSync('mknod', ['-m', '644', m('dir/bdev'), 'b', '8', '1']);
  execFileSync('mkfifo', ['-m', '644', m('dir/fifo')]);
  fs.symlinkSync('../plain', m('dir/link'));
  fs.linkSync(m('plain'), m('dir/hard'));
  execFileSync('setfattr', ['-n', 'user.note', '-v', 'hello', m('plain')]);
}

/** What a client sees of every corpus object: [name, type, perms, uid, gid, rdev, size]. */
function viewThroughFuse(): string[] {
  return ['plain', 'dir', 'dir/cdev', 'dir/bdev', 'dir/fifo', 'dir/link', 'dir/hard'].map((p) => {
    const st = fs.lstatSync(path.join(mnt, p));
    return `${p} ${(st.mode & S_IFMT).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.rdev} ${st.isFile() ? st.size : '-'}`;
  });
}

async function viewThrough9p(): Promise<string[]> {
  const { c, root } = await P9Client.session(sock);
  try {
    const out: string[] = [];
    for (const p of ['plain', 'dir', 'dir/cdev', 'dir/bdev', 'dir/fifo', 'dir/link', 'dir/hard']) {
      const f = c.newFid();
      await c.walk(root, f, p.split('/'));
      const a = await c.getattr(f);
      const major = Number(((a.rdev >> 32n) & 0xfffff000n) | ((a.rdev >> 8n) & 0xfffn));
      const minor = Number(((a.rdev >> 12n) & 0xffffff00n) | (a.rdev & 0xffn));
      // fs.Stats.rdev is the kernel's new_encode_dev of (major, minor)
      const rdev = (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
      const isFile = (a.mode & S_IFMT) === S_IFREG;
      out.push(`${p} ${(a.mode & S_IFMT).toString(8)} ${(a.mode & 0o7777).toString(8)} ${a.uid}:${a.gid} ${rdev} ${isFile ? a.size : '-'}`);
      await c.clunk(f);
    }
    const l = c.newFid();
    await c.walk(root, l, ['dir', 'link']);
    out.push(`readlink ${await c.readlink(l)}`);
    return out;
  } finally {
    await c.close();
  }
}

/** The daemon's stderr reaches us asynchronously: wait a little for a line. */
async function expectLog(re: RegExp): Promise<void> {
  const end = Date.now() + 3000;
  while (!re.test(daemon!.stderr()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  expect(daemon!.stderr()).toMatch(re);
}

const expectedView = [
  'plain 100000 4755 1234:5678 0 5',
  'dir 40000 1777 77:88 0 -',
  'dir/cdev 20000 644 0:0 1029 -',
  'dir/bdev 60000 644 0:0 2049 -',
  'dir/fifo 10000 644 0:0 0 -',
  'dir/link 120000 777 0:0 0 -',
  'dir/hard 100000 4755 1234:5678 0 5',
];

describe.each(['mapped-xattr', 'mapped-file'])('%s', (model) => {
  test('guests see owners, modes, devices and symlinks; the host sees none of it', async () => {
    await serve(model);
    buildCorpus();
    expect(viewThroughFuse()).toEqual(expectedView);
    expect(await viewThrough9p()).toEqual([...expectedView, 'readlink ../plain']);
    expect(fs.readlinkSync(path.join(mnt, 'dir/link'))).toBe('../plain');

    // Host side: everything is a plain file or directory owned by the daemon, modes fmode/dmode.
    const host = (p: string): fs.Stats => fs.lstatSync(path.join(exportDir, p));
    for (const p of ['plain', 'dir/cdev', 'dir/bdev', 'dir/fifo', 'dir/link']) {
      expect([p, host(p).mode & S_IFMT, host(p).mode & 0o777, host(p).uid]).toEqual([p, S_IFREG, 0o600, 0]);
    }
    expect(host('dir').mode & 0o7777).toBe(0o700);
    expect(fs.readFileSync(path.join(exportDir, 'dir/link'), 'utf8')).toBe('../plain');
    expect(host('dir/hard').ino).toBe(host('plain').ino);
    expect(fs.readFileSync(path.join(mnt, 'plain'), 'utf8')).toBe('data\n');
  });

  test("the model's own metadata is invisible and untouchable", async () => {
    await serve(model);
    buildCorpus();
    const names = fs.readdirSync(mnt).sort();
    expect(names).toEqual(['dir', 'plain']);
    const list = execFileSync('getfattr', ['-d', '-m', '-', path.join(mnt, 'plain')]).toString();
    expect(list).toContain('user.note="hello"');
    expect(list).not.toContain('virtfs');
    if (model === 'mapped-xattr') {
      expect(() => execFileSync('setfattr', ['-n', 'user.virtfs.uid', '-v', '0', path.join(mnt, 'plain')], { stdio: 'pipe' })).toThrow(
        /Permission denied/,
      );
      expect(xattr(path.join(mnt, 'plain'), 'user.virtfs.uid')).toBeUndefined();
    } else {
      expect(() => fs.statSync(path.join(mnt, '.virtfs_metadata'))).toThrow(/EINVAL/);
      expect(() => fs.mkdirSync(path.join(mnt, '.virtfs_metadata_root'))).toThrow(/EINVAL/);
    }
  });
});

test('mapped-xattr stores exactly what QEMU stores', async () => {
  await serve('mapped-xattr');
  buildCorpus();
  const h = (p: string): string => path.join(exportDir, p);
  const le32 = (v: number): string => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b.toString('hex');
  };
  expect(xattr(h('plain'), 'user.virtfs.uid')!.toString('hex')).toBe(le32(1234));
  expect(xattr(h('plain'), 'user.virtfs.gid')!.toString('hex')).toBe(le32(5678));
  expect(xattr(h('plain'), 'user.virtfs.mode')!.toString('hex')).toBe(le32(S_IFREG | 0o4755));
  expect(xattr(h('dir/cdev'), 'user.virtfs.mode')!.toString('hex')).toBe(le32(S_IFCHR | 0o644));
  expect(xattr(h('dir/bdev'), 'user.virtfs.rdev')!.toString('hex')).toBe('0108000000000000');
  expect(xattr(h('dir/fifo'), 'user.virtfs.mode')!.toString('hex')).toBe(le32(S_IFIFO | 0o644));
  expect(xattr(h('dir/link'), 'user.virtfs.mode')!.toString('hex')).toBe(le32(S_IFLNK | 0o777));
  expect(xattr(h('dir'), 'user.virtfs.mode')!.toString('hex')).toBe(le32(S_IFDIR | 0o1777));
});

test('mapped-file keeps .virtfs_metadata in step through link, rename, unlink and rmdir', async () => {
  await serve('mapped-file');
  buildCorpus();
  const md = (p: string): string => fs.readFileSync(path.join(exportDir, p), 'utf8');
  expect(md('.virtfs_metadata/plain')).toBe(`virtfs.uid=1234\nvirtfs.gid=5678\nvirtfs.mode=${S_IFREG | 0o4755}\n`);
  expect(md('dir/.virtfs_metadata/bdev')).toBe(`virtfs.uid=0\nvirtfs.gid=0\nvirtfs.mode=${S_IFBLK | 0o644}\nvirtfs.rdev=2049\n`);
  expect(fs.statSync(path.join(exportDir, 'dir/.virtfs_metadata/hard')).ino).toBe(fs.statSync(path.join(exportDir, '.virtfs_metadata/plain')).ino);
  fs.mkdirSync(path.join(mnt, 'dir/sub'));
  fs.renameSync(path.join(mnt, 'dir/cdev'), path.join(mnt, 'dir/sub/cdev2'));
  expect(fs.existsSync(path.join(exportDir, 'dir/.virtfs_metadata/cdev'))).toBe(false);
  expect(md('dir/sub/.virtfs_metadata/cdev2')).toContain(`virtfs.mode=${S_IFCHR | 0o644}`);
  expect(fs.lstatSync(path.join(mnt, 'dir/sub/cdev2')).isCharacterDevice()).toBe(true);
  fs.unlinkSync(path.join(mnt, 'dir/sub/cdev2'));
  fs.rmdirSync(path.join(mnt, 'dir/sub'));
  expect(fs.existsSync(path.join(exportDir, 'dir/sub'))).toBe(false);
  expect(fs.existsSync(path.join(exportDir, 'dir/.virtfs_metadata/sub'))).toBe(false);
});

describe('hostile metadata falls back to the host values and the daemon keeps serving', () => {
  test('mapped-xattr: truncated, oversized and wrong-type attributes', async () => {
    fs.writeFileSync(path.join(exportDir, 'short'), '');
    fs.writeFileSync(path.join(exportDir, 'wrongtype'), '');
    fs.mkdirSync(path.join(exportDir, 'dirasfile'));
    execFileSync('setfattr', ['-n', 'user.virtfs.uid', '-v', '0x0102', path.join(exportDir, 'short')]);
    execFileSync('setfattr', [
      '-n',
      'user.virtfs.mode',
      '-v',
      `0x${Buffer.from([0xa4, 0x81, 0, 0]).toString('hex')}`,
      path.join(exportDir, 'dirasfile'),
    ]);
    execFileSync('setfattr', ['-n', 'user.virtfs.gid', '-v', '0x0102030405', path.join(exportDir, 'wrongtype')]);
    await serve('mapped-xattr');
    expect(fs.statSync(path.join(mnt, 'short')).uid).toBe(0);
    expect(fs.statSync(path.join(mnt, 'wrongtype')).gid).toBe(0);
    expect(fs.statSync(path.join(mnt, 'dirasfile')).isDirectory()).toBe(true);
    await expectLog(/unusable security-model metadata/);
    fs.writeFileSync(path.join(mnt, 'still-works'), 'ok');
    expect(fs.readFileSync(path.join(exportDir, 'still-works'), 'utf8')).toBe('ok');
  });

  test('mapped-file: garbage, oversized, symlinked and directory metadata entries', async () => {
    for (const n of ['garbage', 'big', 'linked', 'isdir', 'neg']) fs.writeFileSync(path.join(exportDir, n), '');
    const md = path.join(exportDir, '.virtfs_metadata');
    fs.mkdirSync(md);
    fs.writeFileSync(path.join(md, 'garbage'), 'virtfs.uid=abc\nnonsense\nvirtfs.gid=42\n');
    fs.writeFileSync(path.join(md, 'big'), 'virtfs.uid=7\n'.repeat(1000));
    fs.symlinkSync('/etc/passwd', path.join(md, 'linked'));
    fs.mkdirSync(path.join(md, 'isdir'));
    fs.writeFileSync(path.join(md, 'neg'), 'virtfs.uid=-2\n');
    await serve('mapped-file');
    expect(fs.statSync(path.join(mnt, 'garbage')).uid).toBe(0);
    expect(fs.statSync(path.join(mnt, 'garbage')).gid).toBe(42);
    expect(fs.statSync(path.join(mnt, 'big')).uid).toBe(0);
    expect(fs.statSync(path.join(mnt, 'linked')).uid).toBe(0);
    expect(fs.statSync(path.join(mnt, 'isdir')).uid).toBe(0);
    expect(fs.statSync(path.join(mnt, 'neg')).uid).toBe(4294967294);
    expect(fs.readlinkSync(path.join(md, 'linked'))).toBe('/etc/passwd'); // left alone
    await expectLog(/unusable security-model metadata/);
  });
});

test('passthrough: the host inode is the truth, owners are real', async () => {
  await serve('passthrough');
  fs.writeFileSync(path.join(mnt, 'f'), 'x');
  fs.chownSync(path.join(mnt, 'f'), 1000, 1001);
  execFileSync('mknod', [path.join(mnt, 'c'), 'c', '1', '3']);
  const st = fs.lstatSync(path.join(exportDir, 'f'));
  expect([st.uid, st.gid]).toEqual([1000, 1001]);
  expect(fs.lstatSync(path.join(exportDir, 'c')).isCharacterDevice()).toBe(true);
  expect(execFileSync('getfattr', ['-d', '-m', '-', path.join(exportDir, 'f')]).toString()).not.toContain('virtfs');
});
