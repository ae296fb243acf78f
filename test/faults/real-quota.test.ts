// A real disk quota: the export is a btrfs subvolume with a 1 MiB qgroup
// limit, on an image file through a loop device (this kernel has no tmpfs
// quotas and no quota format for ext4; btrfs qgroups hold for root as well,
// so the daemon needs no capability dropped). Writes through 9P and
// virtio-fs until the quota is out keep every acknowledged byte and fail
// with EDQUOT; creating files, directories and symlinks and setting xattrs
// at the limit fail with EDQUOT through both protocols; and the host
// kernel's FUSE client on the /dev/fuse path (with and without --writeback)
// reports EDQUOT to an application doing write(2) + fsync(2), every byte
// both acknowledged being on the host.
//
// Needs root and mkfs.btrfs (btrfs-progs; `npm test` installs it).
import { afterAll, afterEach, beforeAll, expect, jest, test } from '@jest/globals';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDuofs, type Duofs } from '../../src/server.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { FuseClient, ROOT } from '../fuse/client.js';
import { P9Client } from '../p9/client.js';
import { O } from '../p9/proto.js';

jest.setTimeout(90_000);
const root = process.getuid?.() === 0;
const maybe = root ? test : test.skip;
const LIMIT = 1 << 20;

let base: string;
let top: string; // the btrfs mount
let img: string;

function btrfs(...args: string[]): string {
  return execFileSync('btrfs', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Deletes what a test left and commits the transaction, so the qgroup counts the space free again. */
function emptyOut(dir: string): void {
  for (const n of fs.readdirSync(dir)) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  btrfs('filesystem', 'sync', top);
}

beforeAll(() => {
  if (!root) return;
  if (spawnSync('sh', ['-c', 'command -v mkfs.btrfs && command -v btrfs'], { stdio: 'ignore' }).status !== 0) {
    throw new Error('mkfs.btrfs/btrfs not found: `npm test` installs btrfs-progs, or apt-get install btrfs-progs');
  }
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-quota-')));
  img = path.join(base, 'btrfs.img');
  top = path.join(base, 'top');
  fs.mkdirSync(top);
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 128 << 20); // sparse: a few MiB on disk
  execFileSync('mkfs.btrfs', ['-q', '-f', img], { stdio: 'ignore' });
  execFileSync('mount', ['-o', 'loop', img, top]);
  btrfs('quota', 'enable', top);
  for (const sub of ['export', 'wb']) {
    btrfs('subvolume', 'create', path.join(top, sub));
    btrfs('qgroup', 'limit', String(LIMIT), path.join(top, sub));
  }
});

// What a test left (a failed one too) goes, so the next starts with the quota free.
afterEach(() => {
  if (root && top) for (const sub of ['export', 'wb']) emptyOut(path.join(top, sub));
});

afterAll(async () => {
  await srv?.close();
  if (!root || !base) return;
  // Lazy: a closed Duofs still holds its backend's fds on the export (the backend has no close);
  // the loop device goes when the last of them does.
  spawnSync('umount', ['-l', top]);
  fs.rmSync(base, { recursive: true, force: true });
});

// Node's fs has no name for EDQUOT (libuv: "UNKNOWN", errno -122); the protocol clients name it.
const codeOf = (e: unknown): string => ((e as { errno?: unknown }).errno === -122 ? 'EDQUOT' : String((e as { code?: unknown }).code ?? e));
const outcome = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', codeOf);
const chunk = (i: number, n: number): Buffer => Buffer.alloc(n, 0x41 + (i % 26));

/** 9P and virtio-fs on the `export` subvolume, in this process. */
async function serveBoth(): Promise<{
  duofs: Duofs;
  fe: VhostUserFrontend;
  fuse: FuseClient;
  p9: P9Client;
  p9root: number;
  exp: string;
  close(): Promise<void>;
}> {
  const exp = path.join(top, 'export');
  const duofs = await startDuofs({
    sharedDir: exp,
    virtiofsSocket: path.join(base, 'vfs.sock'),
    ninepSocket: path.join(base, '9p.sock'),
    tag: 'quota',
    fuse: { cache: 'never', xattr: true },
    logLevel: 'silent',
  });
  const fe = await VhostUserFrontend.connect({ socketPath: path.join(base, 'vfs.sock') });
  const fuse = new FuseClient(fe);
  await fuse.doInit();
  const s = await P9Client.session({ path: path.join(base, '9p.sock') }, { aname: exp });
  return {
    duofs,
    fe,
    fuse,
    p9: s.c,
    p9root: s.root,
    exp,
    async close() {
      await s.c.close();
      fe.close();
      await duofs.close();
    },
  };
}

let srv: Awaited<ReturnType<typeof serveBoth>> | undefined;

async function fillUntilError(write: (off: number, data: Buffer) => Promise<number>, size: number): Promise<{ acked: Buffer; error: string }> {
  const acked: Buffer[] = [];
  let off = 0;
  let error = '';
  for (let i = 0; i < 100 && !error; i++) {
    const data = chunk(i, size);
    try {
      const n = await write(off, data);
      if (n === 0) error = 'a write of 0 bytes';
      acked.push(data.subarray(0, n));
      off += n;
    } catch (e) {
      error = codeOf(e);
    }
  }
  return { acked: Buffer.concat(acked), error };
}

maybe('9P: writes until the quota is out keep every acknowledged byte, and the error is EDQUOT', async () => {
  srv ??= await serveBoth();
  const { p9, p9root, exp } = srv;
  const f = p9.newFid();
  await p9.walk(p9root, f, []);
  await p9.lcreate(f, 'nine', O.RDWR | O.CREAT | O.EXCL, 0o644, 0);
  const r = await fillUntilError((off, d) => p9.write(f, off, d), 40_000);
  await p9.fsync(f);
  await p9.clunk(f);
  expect(r.error).toBe('EDQUOT');
  expect(r.acked.length).toBeGreaterThan(LIMIT / 2);
  expect(r.acked.length).toBeLessThanOrEqual(LIMIT);
  const host = fs.readFileSync(path.join(exp, 'nine'));
  expect(host.subarray(0, r.acked.length).equals(r.acked)).toBe(true);
});

maybe('virtio-fs: writes until the quota is out keep every acknowledged byte, and the error is EDQUOT', async () => {
  srv ??= await serveBoth();
  const { fuse, exp } = srv;
  const { entry, open } = await fuse.create(ROOT, 'vfs', O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 });
  const r = await fillUntilError((off, d) => fuse.write(open.fh, BigInt(off), d), 100_609);
  await fuse.fsync(open.fh);
  await fuse.release(open.fh);
  await fuse.forget(entry.nodeid, 1n);
  expect(r.error).toBe('EDQUOT');
  expect(r.acked.length).toBeGreaterThan(LIMIT / 2);
  const host = fs.readFileSync(path.join(exp, 'vfs'));
  expect(host.subarray(0, r.acked.length).equals(r.acked)).toBe(true);
});

maybe('at the limit, create, mkdir, symlink and setxattr fail with EDQUOT through both protocols; freed quota is usable at once', async () => {
  srv ??= await serveBoth();
  const { p9, p9root, fuse, exp } = srv;
  fs.writeFileSync(path.join(exp, 'keep'), 'x');
  // The host fills the quota.
  const fd = fs.openSync(path.join(exp, 'filler'), 'w');
  let hostError = '';
  for (let off = 0; off <= 2 * LIMIT && !hostError; off += 65536) {
    try {
      fs.writeSync(fd, chunk(0, 65536), 0, 65536, off);
    } catch (e) {
      hostError = codeOf(e);
    }
  }
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  expect(hostError).toBe('EDQUOT');
  const dir = p9.newFid();
  await p9.walk(p9root, dir, []);
  const keep9 = p9.newFid();
  await p9.walk(p9root, keep9, ['keep']);
  const keepNode = (await fuse.lookup(ROOT, 'keep')).nodeid;
  const got = {
    '9p lcreate': await outcome(p9.lcreate(dir, 'f9', O.RDWR | O.CREAT | O.EXCL, 0o644, 0)),
    '9p mkdir': await outcome(p9.mkdir(p9root, 'd9', 0o755, 0)),
    '9p symlink': await outcome(p9.symlink(p9root, 's9', 'keep', 0)),
    '9p xattr': await outcome(
      p9
        .xattrcreate(keep9, 'user.k', 3, 0)
        .then(() => p9.write(keep9, 0, Buffer.from('abc')))
        .then(() => p9.clunk(keep9)),
    ),
    'fuse create': await outcome(fuse.create(ROOT, 'ff', O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 })),
    'fuse mkdir': await outcome(fuse.mkdir(ROOT, 'df', 0o755, { umask: 0 })),
    'fuse symlink': await outcome(fuse.symlink(ROOT, 'sf', 'keep')),
    'fuse setxattr': await outcome(fuse.setxattr(keepNode, 'user.k', Buffer.from('abc'))),
  };
  const all = (v: string) => Object.fromEntries(Object.keys(got).map((k) => [k, v]));
  expect(got).toEqual(all('EDQUOT'));
  expect(fs.readdirSync(exp).sort()).toEqual(['filler', 'keep']);
  // Freed space counts again once the transaction commits; both protocols create at once.
  fs.unlinkSync(path.join(exp, 'filler'));
  btrfs('filesystem', 'sync', top);
  const f = p9.newFid();
  await p9.walk(p9root, f, []);
  await p9.lcreate(f, 'after9', O.RDWR | O.CREAT | O.EXCL, 0o644, 0);
  expect(await p9.write(f, 0, Buffer.from('ok'))).toBe(2);
  await p9.clunk(f);
  const c = await fuse.create(ROOT, 'afterf', O.RDWR | O.CREAT | O.EXCL, 0o644, { umask: 0 });
  expect(await fuse.write(c.open.fh, 0n, Buffer.from('ok'))).toBe(2);
  await fuse.release(c.open.fh);
  await fuse.setxattr(keepNode, 'user.k', Buffer.from('abc'));
  expect(fs.readFileSync(path.join(exp, 'after9'), 'utf8') + fs.readFileSync(path.join(exp, 'afterf'), 'utf8')).toBe('okok');
  await p9.clunk(dir);
});

// The application: write(2) then fsync(2), chunk after chunk, until one fails;
// prints how many bytes both acknowledged and the error.
const APP = `
import os, sys
path, chunk, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes((i * 7 + 3) % 251 for i in range(total))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
acked, pos, err = 0, 0, 'none'
try:
    while pos < total:
        n = os.write(fd, data[pos:pos + chunk])
        pos += n
        os.fsync(fd)
        acked = pos
except OSError as e:
    err = e.strerror
try:
    os.close(fd)
except OSError:
    pass
print(acked, err)
`;

/** Runs the app in a child (this process serves the mount: it must never touch it itself). */
function app(file: string, chunkSize: number, total: number): Promise<{ acked: number; err: string }> {
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', APP, file, String(chunkSize), String(total)], { encoding: 'utf8', timeout: 60_000 }, (e, out) => {
      if (e) return reject(e);
      const s = out.trim();
      resolve({ acked: Number(s.slice(0, s.indexOf(' '))), err: s.slice(s.indexOf(' ') + 1) });
    });
  });
}

test.each([
  ['--writeback', true],
  ['no writeback', false],
])(
  '/dev/fuse path (%s): the host kernel reports EDQUOT to write+fsync, and every byte both acknowledged is on the host',
  async (_label, writeback) => {
    if (!root) return;
    const exp = path.join(top, 'wb');
    const mnt = path.join(base, `mnt-${writeback ? 'wb' : 'plain'}`);
    fs.mkdirSync(mnt);
    const duofs = await startDuofs({ sharedDir: exp, fuseMount: mnt, fuse: { cache: 'auto', writeback, xattr: false }, logLevel: 'silent' });
    let r: { acked: number; err: string };
    try {
      r = await app(path.join(mnt, 'f'), 100_609, 2 * LIMIT);
    } finally {
      await duofs.close();
    }
    expect(r.err).toBe('Disk quota exceeded');
    expect(r.acked).toBeGreaterThan(LIMIT / 2);
    const host = fs.readFileSync(path.join(exp, 'f'));
    expect(host.length).toBeGreaterThanOrEqual(r.acked);
    const want = Buffer.from(Array.from({ length: r.acked }, (_, i) => (i * 7 + 3) % 251));
    expect(host.subarray(0, r.acked).equals(want)).toBe(true);
  },
);
