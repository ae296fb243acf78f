// Workloads that drive a serving duofs from outside (the test's process):
// 9P over its unix socket, virtio-fs over its vhost-user socket (this
// process plays the VMM), and the host's FUSE mount. Each touches every
// kind of request a guest sends: create, write, read, fsync, fallocate,
// getattr/setattr, directories, links, renames, xattrs, locks, mknod,
// statfs, removal. Used by test/sandbox/seccomp.test.ts (the filter must let
// all of it through) and by the measurement (scripts/seccomp-measure.mjs).
import fs from 'node:fs';
import path from 'node:path';
import { P9Client } from '../../src/doubles/p9-client.js';
import { AT_REMOVEDIR, LOCK_TYPE, O, SETATTR } from '../../src/doubles/p9-proto.js';
import { VhostUserFrontend } from '../../src/doubles/vhost-user-frontend.js';
import { FuseClient, ROOT, S_IFIFO } from '../../src/doubles/fuse-client.js';

const fail = (what: string, got: unknown): never => {
  throw new Error(`${what}: got ${String(got)}`);
};

/** A 9P session doing one of everything; returns what it read back. */
export async function ninepWorkload(socketPath: string, exportDir: string, tag = 'p9'): Promise<void> {
  const { c, root } = await P9Client.session({ path: socketPath }, { aname: exportDir });
  try {
    const dir = c.newFid();
    await c.walk(root, dir, []);
    await c.mkdir(dir, `${tag}-d`, 0o755, 0);
    const d = c.newFid();
    await c.walk(root, d, [`${tag}-d`]);
    const f = c.newFid();
    await c.walk(d, f, []);
    await c.lcreate(f, 'file', O.RDWR, 0o644, 0);
    const data = Buffer.alloc(100_000, 7);
    let off = 0;
    while (off < data.length) off += await c.write(f, off, data.subarray(off, off + 32768));
    await c.fsync(f);
    const back = await c.read(f, 0, 32768);
    if (!back.equals(data.subarray(0, 32768))) fail('9p read', back.length);
    await c.lock(f, { type: LOCK_TYPE.WRLCK, start: 0, length: 10, procId: 1, clientId: 'seccomp' });
    await c.getlock(f, { type: LOCK_TYPE.RDLCK, start: 0, length: 10, procId: 2, clientId: 'other' });
    await c.lock(f, { type: LOCK_TYPE.UNLCK, start: 0, length: 10, procId: 1, clientId: 'seccomp' });
    await c.clunk(f);
    const g = c.newFid();
    await c.walk(d, g, ['file']);
    await c.getattr(g);
    await c.setattr(g, {
      valid: SETATTR.MODE | SETATTR.SIZE | SETATTR.MTIME | SETATTR.MTIME_SET,
      mode: 0o600,
      size: 5000,
      mtimeSec: 1_000_000,
      mtimeNsec: 0,
    });
    // xattr: set (clone, xattrcreate, write, clunk), then read it back
    const x = c.newFid();
    await c.walk(g, x, []);
    await c.xattrcreate(x, 'user.seccomp', 3, 0);
    await c.write(x, 0, Buffer.from('yes'));
    await c.clunk(x);
    const xr = c.newFid();
    const n = await c.xattrwalk(g, xr, 'user.seccomp');
    if ((await c.read(xr, 0, Number(n))).toString() !== 'yes') fail('9p xattr', n);
    await c.clunk(xr);
    const xl = c.newFid();
    await c.xattrwalk(g, xl, '');
    await c.clunk(xl);
    await c.symlink(d, 'link', 'file', 0);
    const l = c.newFid();
    await c.walk(d, l, ['link']);
    if ((await c.readlink(l)) !== 'file') fail('9p readlink', '?');
    await c.clunk(l);
    await c.link(d, g, 'hard');
    await c.mknod(d, 'fifo', S_IFIFO | 0o644, 0, 0, 0);
    await c.renameat(d, 'hard', d, 'hard2');
    await c.rename(g, d, 'file2');
    await c.statfs(d);
    const od = c.newFid();
    await c.walk(d, od, []);
    await c.lopen(od, O.RDONLY | O.DIRECTORY);
    const ents = await c.readdir(od, 0, 8192);
    if (ents.length < 5) fail('9p readdir', ents.length);
    await c.clunk(od);
    await c.clunk(g);
    for (const name of ['link', 'hard2', 'fifo', 'file2']) await c.unlinkat(d, name, 0);
    await c.unlinkat(dir, `${tag}-d`, AT_REMOVEDIR);
    await c.clunk(d);
    await c.clunk(dir);
  } finally {
    await c.close();
  }
}

/** A virtio-fs guest (this process plays the VMM) doing one of everything. */
export async function virtiofsWorkload(socketPath: string, tag = 'vfs'): Promise<void> {
  const fe = await VhostUserFrontend.connect({ socketPath });
  try {
    const c = new FuseClient(fe);
    await c.doInit();
    const d = await c.mkdir(ROOT, `${tag}-d`, 0o755);
    const { entry, open } = await c.create(d.nodeid, 'file', 2 /* O_RDWR */, 0o644);
    const data = Buffer.alloc(65536, 3);
    await c.write(open.fh, 0n, data);
    await c.fsync(open.fh);
    await c.fallocate(open.fh, 0n, 1n << 20n);
    const back = await c.read(open.fh, 0n, 65536);
    if (!back.equals(data)) fail('virtio-fs read', back.length);
    await c.lseek(open.fh, 0n, 3 /* SEEK_DATA */);
    const f2 = await c.create(d.nodeid, 'copy', 2, 0o644);
    await c.copyFileRange(open.fh, 0n, f2.entry.nodeid, f2.open.fh, 0n, 4096n);
    await c.release(f2.open.fh);
    await c.getattr(entry.nodeid);
    await c.statx(entry.nodeid);
    await c.setattr(entry.nodeid, { valid: 1 /* FATTR_MODE */, mode: 0o600 });
    await c.setxattr(entry.nodeid, 'user.seccomp', Buffer.from('v'));
    await c.getxattr(entry.nodeid, 'user.seccomp', 64);
    await c.listxattr(entry.nodeid, 256);
    await c.removexattr(entry.nodeid, 'user.seccomp');
    await c.setlk(entry.nodeid, open.fh, 1n, { type: 1, start: 0n, end: 100n, pid: 1 });
    await c.getlk(entry.nodeid, open.fh, 2n, { type: 0, start: 0n, end: 100n, pid: 2 });
    await c.release(open.fh);
    await c.symlink(d.nodeid, 'sym', 'file');
    await c.link(entry.nodeid, d.nodeid, 'hard');
    await c.mknod(d.nodeid, 'fifo', S_IFIFO | 0o644);
    await c.rename(d.nodeid, 'hard', d.nodeid, 'hard2');
    await c.statfs(d.nodeid);
    const dh = await c.opendir(d.nodeid);
    const ents = await c.readdirAll(dh.fh, { plus: true });
    if (ents.length < 5) fail('virtio-fs readdirplus', ents.length);
    await c.releasedir(dh.fh);
    for (const name of ['sym', 'hard2', 'fifo', 'file', 'copy']) await c.unlink(d.nodeid, name);
    await c.rmdir(ROOT, `${tag}-d`);
    await c.syncfs();
  } finally {
    fe.close();
  }
}

/** The host's FUSE mount, through ordinary file calls. */
export async function fuseMountWorkload(mountpoint: string, tag = 'fuse'): Promise<void> {
  const d = path.join(mountpoint, `${tag}-d`);
  await fs.promises.mkdir(d);
  const f = path.join(d, 'file');
  const data = Buffer.alloc(200_000, 9);
  await fs.promises.writeFile(f, data);
  const h = await fs.promises.open(f, 'r+');
  await h.write(Buffer.from('hello'), 0, 5, 100);
  await h.sync();
  await h.truncate(150_000);
  await h.close();
  if ((await fs.promises.readFile(f)).length !== 150_000) fail('fuse read', '?');
  await fs.promises.chmod(f, 0o600);
  await fs.promises.utimes(f, 1000, 2000);
  await fs.promises.symlink('file', path.join(d, 'sym'));
  await fs.promises.readlink(path.join(d, 'sym'));
  await fs.promises.link(f, path.join(d, 'hard'));
  await fs.promises.rename(path.join(d, 'hard'), path.join(d, 'hard2'));
  await fs.promises.copyFile(f, path.join(d, 'copy'));
  const names = await fs.promises.readdir(d);
  if (names.length < 4) fail('fuse readdir', names.length);
  await fs.promises.stat(f);
  await fs.promises.lstat(path.join(d, 'sym'));
  await fs.promises.access(f, fs.constants.R_OK);
  await fs.promises.rm(d, { recursive: true });
}
