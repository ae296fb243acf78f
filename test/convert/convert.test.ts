// duofs convert on real trees with real xattrs (user.* works on the temp
// filesystem here; the tests run as root, as the conversion of other users'
// files must).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convertExport, formatSummary, ConvertError } from '../../src/convert/convert.js';
import { acquireServeLock, ExportInUseError } from '../../src/convert/in-use.js';
import { AT_FDCWD, O_NOFOLLOW, O_PATH, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK, makedev } from '../../src/sys/constants.js';
import { close, mknodat, openat } from '../../src/sys/fs.js';
import { getxattr, setxattr } from '../../src/sys/xattr.js';
import { isSysError, Errno } from '../../src/sys/errno.js';
import { decodeRdev, decodeU32, encodeRdev, encodeU32 } from '../../security/formats/mapped-xattr.js';
import { formatMetadata, parseMetadata } from '../../security/formats/mapped-file.js';

let base: string;
let ex: string;
const children: ChildProcess[] = [];

beforeEach(() => {
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-convert-')));
  ex = path.join(base, 'export');
  fs.mkdirSync(ex, { mode: 0o755 });
  fs.chmodSync(ex, 0o755);
});

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  fs.rmSync(base, { recursive: true, force: true });
});

const p = (...parts: string[]): string => path.join(ex, ...parts);

function xget(file: string, name: string): Buffer | undefined {
  const fd = openat(AT_FDCWD, file, O_PATH | O_NOFOLLOW);
  try {
    return getxattr(fd, Buffer.from(name));
  } catch (e) {
    if (isSysError(e, Errno.ENODATA)) return undefined;
    throw e;
  } finally {
    close(fd);
  }
}

function xset(file: string, name: string, value: Buffer): void {
  const fd = openat(AT_FDCWD, file, O_PATH | O_NOFOLLOW);
  try {
    setxattr(fd, Buffer.from(name), value, 0);
  } finally {
    close(fd);
  }
}

function xmeta(file: string): { uid?: number; gid?: number; mode?: number; rdev?: bigint } {
  const o: { uid?: number; gid?: number; mode?: number; rdev?: bigint } = {};
  const u = decodeU32(xget(file, 'user.virtfs.uid'));
  const g = decodeU32(xget(file, 'user.virtfs.gid'));
  const m = decodeU32(xget(file, 'user.virtfs.mode'));
  const r = decodeRdev(xget(file, 'user.virtfs.rdev'));
  if (u !== undefined) o.uid = u;
  if (g !== undefined) o.gid = g;
  if (m !== undefined) o.mode = m;
  if (r !== undefined) o.rdev = r;
  return o;
}

/** What QEMU's mapped-xattr writes for a guest-created entry. */
function qemuXattr(file: string, m: { uid: number; gid: number; mode: number; rdev?: bigint }): void {
  xset(file, 'user.virtfs.uid', encodeU32(m.uid));
  xset(file, 'user.virtfs.gid', encodeU32(m.gid));
  xset(file, 'user.virtfs.mode', encodeU32(m.mode));
  if (m.rdev !== undefined) xset(file, 'user.virtfs.rdev', encodeRdev(m.rdev));
}

function mknod(file: string, mode: number, dev = 0n): void {
  mknodat(AT_FDCWD, Buffer.from(file), mode, dev);
  fs.chmodSync(file, mode & 0o7777); // past the umask
}

/** An extended POSIX ACL in the kernel's xattr format: u::rw-, u:1000:r--, g::r--, m::r--, o::---. */
function aclXattr(): Buffer {
  const entries: [number, number, number][] = [
    [0x01, 6, 0xffffffff],
    [0x02, 4, 1000],
    [0x04, 4, 0xffffffff],
    [0x10, 4, 0xffffffff],
    [0x20, 0, 0xffffffff],
  ];
  const b = Buffer.alloc(4 + entries.length * 8);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + i * 8);
    b.writeUInt16LE(perm, 6 + i * 8);
    b.writeUInt32LE(id, 8 + i * 8);
  });
  return b;
}

/** A passthrough tree with every kind of file, several owners and odd modes. */
function buildPassthroughTree(): void {
  fs.writeFileSync(p('plain'), 'data');
  fs.chownSync(p('plain'), 1001, 2002);
  fs.chmodSync(p('plain'), 0o4755);
  fs.mkdirSync(p('dir'));
  fs.chownSync(p('dir'), 1002, 1002);
  fs.chmodSync(p('dir'), 0o1777);
  fs.writeFileSync(p('dir', 'nested'), 'x');
  fs.symlinkSync('../plain', p('dir', 'link'));
  fs.lchownSync(p('dir', 'link'), 1003, 1003);
  mknod(p('tty'), S_IFCHR | 0o620, makedev(4, 1));
  fs.chownSync(p('tty'), 0, 5);
  mknod(p('disk'), S_IFBLK | 0o660, makedev(8, 17));
  fs.linkSync(p('disk'), p('disk-alias'));
  mknod(p('fifo'), S_IFIFO | 0o644);
  mknod(p('sock'), S_IFSOCK | 0o755);
  fs.writeFileSync(p('hard1'), 'h');
  fs.linkSync(p('hard1'), p('hard2'));
}

test('passthrough -> mapped-xattr: host owners/modes/devices become metadata, specials become QEMU stand-ins', async () => {
  buildPassthroughTree();
  const diskMtime = fs.lstatSync(p('disk')).mtimeMs;
  const s = await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-xattr' });

  expect(xmeta(p('plain'))).toEqual({ uid: 1001, gid: 2002, mode: S_IFREG | 0o4755 });
  expect(fs.readFileSync(p('plain'), 'utf8')).toBe('data');
  expect(xmeta(p('dir'))).toEqual({ uid: 1002, gid: 1002, mode: S_IFDIR | 0o1777 });

  // A symlink becomes a regular file holding the target (no NUL), mode S_IFLNK.
  expect(fs.lstatSync(p('dir', 'link')).isFile()).toBe(true);
  expect(fs.readFileSync(p('dir', 'link'), 'utf8')).toBe('../plain');
  expect(xmeta(p('dir', 'link'))).toMatchObject({ uid: 1003, gid: 1003 });
  expect(xmeta(p('dir', 'link')).mode! & 0o170000).toBe(S_IFLNK);

  // Devices, fifos, sockets: empty regular files, type in mode, number in rdev.
  for (const [n, type, dev] of [
    ['tty', S_IFCHR, makedev(4, 1)],
    ['disk', S_IFBLK, makedev(8, 17)],
    ['fifo', S_IFIFO, 0n],
    ['sock', S_IFSOCK, 0n],
  ] as const) {
    const st = fs.lstatSync(p(n));
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(0);
    expect(st.mode & 0o777).toBe(0o600); // QEMU's default fmode
    const m = xmeta(p(n));
    expect(m.mode! & 0o170000).toBe(type);
    expect(m.rdev).toBe(dev);
  }
  expect(xmeta(p('tty'))).toEqual({ uid: 0, gid: 5, mode: S_IFCHR | 0o620, rdev: makedev(4, 1) });
  // The stand-in keeps the node's host owner and times.
  expect(fs.lstatSync(p('tty')).gid).toBe(5);
  expect(Math.abs(fs.lstatSync(p('disk')).mtimeMs - diskMtime)).toBeLessThan(1);
  // Both names of the hard-linked device are one stand-in.
  expect(fs.lstatSync(p('disk')).ino).toBe(fs.lstatSync(p('disk-alias')).ino);
  expect(fs.lstatSync(p('disk')).nlink).toBe(2);
  expect(fs.lstatSync(p('hard1')).ino).toBe(fs.lstatSync(p('hard2')).ino);

  expect(s.replaced).toBe(6);
  expect(s.kinds).toMatchObject({ 'char-device': 1, 'block-device': 2, fifo: 1, socket: 1, symlink: 1, directory: 2 });
  expect(s.problemCount).toBe(0);
  expect(s.entries).toBe(12); // the root and 11 entries
  // The root itself gets metadata too.
  expect(xmeta(ex).mode).toBe(S_IFDIR | 0o755);
  expect(formatSummary(s)).toMatch(/passthrough -> mapped-xattr/);
  // Nothing is left behind.
  expect(fs.readdirSync(ex).filter((n) => n.includes('duofs-convert'))).toEqual([]);
});

test('--dry-run writes nothing and reports the same summary', async () => {
  buildPassthroughTree();
  const before = snapshot();
  const dry = await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-file', dryRun: true });
  expect(snapshot()).toEqual(before);
  expect(fs.existsSync(p('.virtfs_metadata'))).toBe(false);
  const real = await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-file' });
  expect({ ...dry, dryRun: false }).toEqual(real);
  expect(formatSummary(dry)).toMatch(/dry run: nothing written/);
});

function snapshot(): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d)) {
      const f = path.join(d, n);
      const st = fs.lstatSync(f);
      out[path.relative(ex, f)] = `${st.mode}:${st.uid}:${st.gid}:${st.ino}:${st.size}:${st.mtimeMs}`;
      if (st.isDirectory()) walk(f);
    }
  };
  walk(ex);
  return out;
}

test("passthrough -> mapped-file writes QEMU's text files, 0700/0600, hard links share one", async () => {
  buildPassthroughTree();
  const s = await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-file' });
  expect(s.problemCount).toBe(0);
  expect(fs.readFileSync(p('.virtfs_metadata', 'plain'), 'latin1')).toBe(`virtfs.uid=1001\nvirtfs.gid=2002\nvirtfs.mode=${S_IFREG | 0o4755}\n`);
  expect(parseMetadata(fs.readFileSync(p('.virtfs_metadata', 'tty'))).meta).toEqual({ uid: 0, gid: 5, mode: S_IFCHR | 0o620, rdev: makedev(4, 1) });
  expect(parseMetadata(fs.readFileSync(p('dir', '.virtfs_metadata', 'link'))).meta.mode! & 0o170000).toBe(S_IFLNK);
  expect(parseMetadata(fs.readFileSync(p('.virtfs_metadata_root'))).meta.mode).toBe(S_IFDIR | 0o755);
  expect(fs.statSync(p('.virtfs_metadata')).mode & 0o7777).toBe(0o700);
  expect(fs.statSync(p('.virtfs_metadata', 'plain')).mode & 0o7777).toBe(0o600);
  expect(fs.statSync(p('.virtfs_metadata', 'hard1')).ino).toBe(fs.statSync(p('.virtfs_metadata', 'hard2')).ino);
  // mapped-file has no xattrs of its own.
  expect(xget(p('plain'), 'user.virtfs.uid')).toBeUndefined();
});

test('mapped-xattr -> mapped-file -> mapped-xattr round trip keeps every guest view and leaves no old format behind', async () => {
  // What QEMU's mapped-xattr leaves after a guest made these.
  fs.writeFileSync(p('file'), 'x', { mode: 0o600 });
  qemuXattr(p('file'), { uid: 1000, gid: 1000, mode: S_IFREG | 0o2750 });
  fs.mkdirSync(p('d'), { mode: 0o700 });
  qemuXattr(p('d'), { uid: 33, gid: 33, mode: S_IFDIR | 0o755 });
  fs.writeFileSync(p('d', 'null'), '', { mode: 0o600 });
  qemuXattr(p('d', 'null'), { uid: 0, gid: 0, mode: S_IFCHR | 0o666, rdev: makedev(1, 3) });
  fs.writeFileSync(p('d', 'sym'), '/etc/passwd', { mode: 0o600 });
  qemuXattr(p('d', 'sym'), { uid: 1000, gid: 1000, mode: S_IFLNK | 0o777 });
  fs.writeFileSync(p('hostmade'), 'no metadata'); // made on the host: shows host values in both models
  fs.linkSync(p('file'), p('file-link'));
  xset(p('file'), 'user.virtfs.system.posix_acl_access', aclXattr());
  xset(p('file'), 'user.comment', Buffer.from('guest xattr'));

  const toFile = await convertExport({ dir: ex, from: 'mapped-xattr', to: 'mapped-file' });
  expect(toFile.problemCount).toBe(0);
  expect(toFile.unchanged).toBe(2); // the root and hostmade carried nothing
  expect(xget(p('file'), 'user.virtfs.uid')).toBeUndefined();
  expect(xget(p('file'), 'user.virtfs.system.posix_acl_access')).toBeUndefined();
  expect(xget(p('file'), 'system.posix_acl_access')).toEqual(aclXattr()); // mapped-file keeps ACLs as real ACLs
  expect(xget(p('file'), 'user.comment')!.toString()).toBe('guest xattr');
  expect(fs.readFileSync(p('d', '.virtfs_metadata', 'null'))).toEqual(formatMetadata({ uid: 0, gid: 0, mode: S_IFCHR | 0o666, rdev: makedev(1, 3) }));
  expect(fs.readFileSync(p('.virtfs_metadata', 'd'))).toEqual(formatMetadata({ uid: 33, gid: 33, mode: S_IFDIR | 0o755 }));
  expect(fs.existsSync(p('.virtfs_metadata', 'hostmade'))).toBe(false);
  expect(fs.statSync(p('.virtfs_metadata', 'file')).ino).toBe(fs.statSync(p('.virtfs_metadata', 'file-link')).ino);

  const back = await convertExport({ dir: ex, from: 'mapped-file', to: 'mapped-xattr' });
  expect(back.problemCount).toBe(0);
  expect(xmeta(p('file'))).toEqual({ uid: 1000, gid: 1000, mode: S_IFREG | 0o2750 });
  expect(xmeta(p('d', 'null'))).toEqual({ uid: 0, gid: 0, mode: S_IFCHR | 0o666, rdev: makedev(1, 3) });
  expect(xmeta(p('d', 'sym')).mode).toBe(S_IFLNK | 0o777);
  expect(xmeta(p('hostmade'))).toEqual({});
  expect(xget(p('file'), 'user.virtfs.system.posix_acl_access')).toEqual(aclXattr());
  expect(xget(p('file'), 'system.posix_acl_access')).toBeUndefined();
  expect(fs.existsSync(p('.virtfs_metadata'))).toBe(false);
  expect(fs.existsSync(p('d', '.virtfs_metadata'))).toBe(false);
});

test('hostile mapped-xattr metadata is reported with its path and left alone', async () => {
  fs.writeFileSync(p('short'), '');
  xset(p('short'), 'user.virtfs.uid', Buffer.from([1, 2, 3]));
  fs.writeFileSync(p('long'), '');
  xset(p('long'), 'user.virtfs.rdev', Buffer.alloc(16));
  fs.mkdirSync(p('dirAsFile'));
  qemuXattr(p('dirAsFile'), { uid: 1, gid: 1, mode: S_IFREG | 0o644 });
  fs.writeFileSync(p('fileAsDir'), '');
  qemuXattr(p('fileAsDir'), { uid: 1, gid: 1, mode: S_IFDIR | 0o755 });
  fs.writeFileSync(p('noType'), '');
  qemuXattr(p('noType'), { uid: 1, gid: 1, mode: 0o644 });
  fs.writeFileSync(p('good'), '');
  qemuXattr(p('good'), { uid: 7, gid: 7, mode: S_IFREG | 0o640 });

  const s = await convertExport({ dir: ex, from: 'mapped-xattr', to: 'mapped-file' });
  const byPath = Object.fromEntries(s.problems.map((x) => [x.path, x.problem]));
  expect(byPath['/short']).toMatch(/user.virtfs.uid is 3 bytes/);
  expect(byPath['/long']).toMatch(/user.virtfs.rdev is 16 bytes/);
  expect(byPath['/dirAsFile']).toMatch(/host file is a directory/);
  expect(byPath['/fileAsDir']).toMatch(/says directory/);
  expect(byPath['/noType']).toMatch(/no valid file type/);
  expect(s.problemCount).toBe(5);
  expect(s.converted).toBe(1);
  // Left alone: their xattrs are still there, no metadata file was made.
  expect(xget(p('short'), 'user.virtfs.uid')).toEqual(Buffer.from([1, 2, 3]));
  expect(xmeta(p('fileAsDir')).mode).toBe(S_IFDIR | 0o755);
  for (const n of ['short', 'long', 'dirAsFile', 'fileAsDir', 'noType']) expect(fs.existsSync(p('.virtfs_metadata', n))).toBe(false);
  expect(fs.readFileSync(p('.virtfs_metadata', 'good'))).toEqual(formatMetadata({ uid: 7, gid: 7, mode: S_IFREG | 0o640 }));
});

test('hostile mapped-file metadata: symlinks, directories, garbage, oversize; a symlinked .virtfs_metadata', async () => {
  fs.mkdirSync(p('.virtfs_metadata'), { mode: 0o700 });
  const md = (...x: string[]): string => p('.virtfs_metadata', ...x);
  fs.writeFileSync(p('viaLink'), '');
  fs.writeFileSync(path.join(base, 'outside-meta'), 'virtfs.uid=0\n');
  fs.symlinkSync(path.join(base, 'outside-meta'), md('viaLink'));
  fs.writeFileSync(p('viaDir'), '');
  fs.mkdirSync(md('viaDir'));
  fs.writeFileSync(p('garbage'), '');
  fs.writeFileSync(md('garbage'), 'virtfs.uid=abc\n');
  fs.writeFileSync(p('huge'), '');
  fs.writeFileSync(md('huge'), 'virtfs.uid=1\n'.repeat(1000));
  fs.writeFileSync(p('good'), '');
  fs.writeFileSync(md('good'), formatMetadata({ uid: 5, gid: 6, mode: S_IFREG | 0o600 }));
  fs.mkdirSync(p('sub'));
  fs.writeFileSync(p('sub', 'f'), '');
  fs.symlinkSync(path.join(base, 'elsewhere'), p('sub', '.virtfs_metadata'));
  fs.mkdirSync(path.join(base, 'elsewhere'));
  fs.writeFileSync(path.join(base, 'elsewhere', 'f'), formatMetadata({ uid: 0, gid: 0, mode: S_IFREG | 0o4777 }));

  const s = await convertExport({ dir: ex, from: 'mapped-file', to: 'mapped-xattr' });
  const byPath = Object.fromEntries(s.problems.map((x) => [x.path, x.problem]));
  expect(byPath['/.virtfs_metadata/viaLink']).toMatch(/is a symlink, not a regular file/);
  expect(byPath['/.virtfs_metadata/viaDir']).toMatch(/is a directory/);
  expect(byPath['/.virtfs_metadata/garbage']).toMatch(/unreadable line/);
  expect(byPath['/.virtfs_metadata/huge']).toMatch(/bytes/);
  expect(byPath['/sub/.virtfs_metadata']).toMatch(/is a symlink, not a directory/);
  expect(xmeta(p('good'))).toEqual({ uid: 5, gid: 6, mode: S_IFREG | 0o600 });
  for (const n of ['viaLink', 'viaDir', 'garbage', 'huge']) expect(xmeta(p(n))).toEqual({});
  expect(xmeta(p('sub', 'f'))).toEqual({});
  // Nothing outside the export was read into metadata or touched.
  expect(fs.readFileSync(path.join(base, 'outside-meta'), 'utf8')).toBe('virtfs.uid=0\n');
  expect(fs.existsSync(path.join(base, 'elsewhere', 'f'))).toBe(true);
  // The metadata directory stays: it still holds what was not converted.
  expect(fs.existsSync(md('garbage'))).toBe(true);
  expect(s.problems.some((x) => x.path === '/.virtfs_metadata' && /kept/.test(x.problem))).toBe(true);
});

test('symlinks are never followed out of the export', async () => {
  fs.mkdirSync(path.join(base, 'outside'));
  fs.writeFileSync(path.join(base, 'outside', 'secret'), 's');
  fs.symlinkSync(path.join(base, 'outside'), p('escape'));
  await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-xattr' });
  expect(xmeta(path.join(base, 'outside', 'secret'))).toEqual({});
  expect(xmeta(path.join(base, 'outside'))).toEqual({});
  expect(fs.readFileSync(p('escape'), 'utf8')).toBe(path.join(base, 'outside'));
});

test('a name mapped-file reserves stops the conversion before anything is written', async () => {
  fs.writeFileSync(p('a'), '');
  qemuXattr(p('a'), { uid: 1, gid: 1, mode: S_IFREG | 0o644 });
  fs.mkdirSync(p('.virtfs_metadata')); // a guest-visible name under mapped-xattr
  await expect(convertExport({ dir: ex, from: 'mapped-xattr', to: 'mapped-file' })).rejects.toThrow(/reserved by mapped-file.*nothing was changed/);
  expect(xmeta(p('a')).uid).toBe(1);
});

test('metadata already present in a tree said to be passthrough is reported', async () => {
  fs.writeFileSync(p('f'), '');
  qemuXattr(p('f'), { uid: 1, gid: 1, mode: S_IFREG | 0o644 });
  const s = await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-xattr' });
  expect(s.problems[0]!.problem).toMatch(/said to be passthrough/);
  expect(xmeta(p('f')).uid).toBe(1);
});

test('fmode/dmode set host modes as QEMU would have created them', async () => {
  fs.writeFileSync(p('f'), '', { mode: 0o644 });
  fs.chmodSync(p('f'), 0o644);
  fs.mkdirSync(p('d'), { mode: 0o755 });
  fs.chmodSync(p('d'), 0o755);
  mknod(p('n'), S_IFCHR | 0o666, makedev(1, 3));
  const s = await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-xattr', fmode: 0o640, dmode: 0o750 });
  expect(fs.statSync(p('f')).mode & 0o777).toBe(0o640);
  expect(fs.statSync(p('d')).mode & 0o777).toBe(0o750);
  expect(fs.statSync(p('n')).mode & 0o777).toBe(0o640);
  expect(xmeta(p('f')).mode).toBe(S_IFREG | 0o644); // the guest still sees its own mode
  expect(s.modesSet).toBeGreaterThanOrEqual(3);
});

test('impossible requests are refused', async () => {
  await expect(convertExport({ dir: ex, from: 'mapped-xattr', to: 'passthrough' as never })).rejects.toThrow(ConvertError);
  await expect(convertExport({ dir: ex, from: 'mapped-file', to: 'mapped-file' })).rejects.toThrow(/nothing to convert/);
  await expect(convertExport({ dir: p('missing'), from: 'passthrough', to: 'mapped-file' })).rejects.toThrow(/ENOENT/);
  await expect(convertExport({ dir: ex, from: 'passthrough', to: 'mapped-file', fmode: 0o1000 })).rejects.toThrow(/fmode/);
});

test('refused while a duofs server holds the export, accepted after it lets go', async () => {
  fs.writeFileSync(p('f'), '');
  const lock = acquireServeLock(ex);
  try {
    await expect(convertExport({ dir: ex, from: 'passthrough', to: 'mapped-xattr' })).rejects.toThrow(ExportInUseError);
    expect(xmeta(p('f'))).toEqual({});
  } finally {
    lock.release();
  }
  await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-xattr' });
  expect(xmeta(p('f')).mode).toBeDefined();
});

test('refused while another process has something in the export open, naming it', async () => {
  fs.mkdirSync(p('work'));
  const c = spawn('sleep', ['30'], { cwd: p('work'), stdio: 'ignore' });
  children.push(c);
  await new Promise((r) => setTimeout(r, 200));
  const err = await convertExport({ dir: ex, from: 'passthrough', to: 'mapped-xattr' }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ExportInUseError);
  expect((err as Error).message).toMatch(new RegExp(`process ${c.pid} \\(sleep\\) has as its cwd`));
  c.kill('SIGKILL');
});
