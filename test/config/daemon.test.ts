// `duofs serve --config`: one daemon, several devices from a file, served
// to real 9P clients and a virtio-fs driver over their sockets; SIGHUP adds
// and removes devices while the others' clients keep working; a bad file
// changes nothing; `duofs status` reports what runs.
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { P9Client } from '../p9/client.js';
import { O } from '../p9/proto.js';
import { VhostUserFrontend } from '../../src/doubles/vhost-user-frontend.js';
import { FuseClient, ROOT } from '../../src/doubles/fuse-client.js';
import { NOFID, RLERROR, T } from '../../protocols/9p/constants.js';
import { Writer } from '../../protocols/9p/wire.js';
import { cli, sleep, startConfigDaemon, type ConfigDaemonProc } from './harness.js';
import type { DaemonStatus } from '../../src/config/daemon.js';

jest.setTimeout(120_000);

const MIB = 1 << 20;
let base: string;
let shared: string;
let homes: string;
let configFile: string;
let ctl: string;
let d: ConfigDaemonProc;

/** The file for a set of private devices (g1, g2, ...) plus the shared one and, unless dropped, a virtio-fs device on g1. */
function writeConfig(o: { privates: string[]; sharedDevice?: boolean; vfs?: boolean; extra?: string }): void {
  const parts = [`control-socket = "${ctl}"`, `[exports.shared]\npath = "${shared}"\nreadonly = true`, `[exports.homes]\npath = "${homes}"`];
  if (o.sharedDevice !== false) parts.push(`[devices.shared]\ntype = "9p-unix"\nsocket = "${base}/shared.sock"\nexport = "shared"`);
  for (const g of o.privates)
    parts.push(
      `[devices.${g}]\ntype = "9p-unix"\nsocket = "${base}/${g}.sock"\nexport = "homes"\ndir = "${g}"\ncreate = { uid = ${uidOf(g)}, gid = ${uidOf(g)}, mode = 0o700 }`,
    );
  if (o.vfs !== false) parts.push(`[devices.g1-vfs]\ntype = "virtiofs"\nsocket = "${base}/g1-vfs.sock"\nexport = "homes"\ndir = "g1"\ntag = "home"`);
  parts.push(`[devices.g1-v9p]\ntype = "virtio-9p"\nsocket = "${base}/g1-v9p.sock"\nexport = "homes"\ndir = "g1"\ntag = "home9p"\nreadonly = true`);
  if (o.extra) parts.push(o.extra);
  fs.writeFileSync(configFile, `${parts.join('\n\n')}\n`);
}
const uidOf = (g: string): number => 2000 + Number(g.slice(1));

const dev = (s: DaemonStatus, name: string) => s.devices.find((x) => x.name === name);

async function session(g: string): Promise<{ c: P9Client; root: number }> {
  return P9Client.session(`${base}/${g}.sock`, { uid: 0 });
}

async function readFile(c: P9Client, root: number, names: string[]): Promise<string> {
  const f = c.newFid();
  await c.walk(root, f, names);
  await c.lopen(f, O.RDONLY);
  const b = await c.read(f, 0, 4096);
  await c.clunk(f);
  return b.toString();
}

beforeAll(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-config-'));
  shared = path.join(base, 'shared');
  homes = path.join(base, 'homes');
  fs.mkdirSync(shared);
  fs.mkdirSync(homes);
  fs.writeFileSync(path.join(shared, 'syllabus.txt'), 'week 1: filesystems\n');
  configFile = path.join(base, 'class.toml');
  ctl = path.join(base, 'run', 'class.ctl');
  writeConfig({ privates: ['g1'] });
  d = await startConfigDaemon(configFile, ctl);
});

afterAll(async () => {
  if (process.env.SHOW_LOG) fs.writeFileSync('/tmp/config-daemon.log', d.log());
  await d?.close();
  fs.rmSync(base, { recursive: true, force: true });
});

test('the private dir is created with the owner and mode asked for, and the control socket is 0600', () => {
  const st = fs.statSync(path.join(homes, 'g1'));
  expect(st.isDirectory()).toBe(true);
  expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([2001, 2001, 0o700]);
  const c = fs.statSync(ctl);
  expect(c.isSocket()).toBe(true);
  expect([c.mode & 0o777, c.uid]).toEqual([0o600, process.getuid!()]);
});

test('the shared device serves its export read-only', async () => {
  const { c, root } = await session('shared');
  expect(await readFile(c, root, ['syllabus.txt'])).toBe('week 1: filesystems\n');
  const f = c.newFid();
  await c.walk(root, f, []);
  await expect(c.lcreate(f, 'mine.txt', O.WRONLY | O.CREAT, 0o644, 0)).rejects.toMatchObject({ code: 'EROFS' });
  await c.close();
  expect(fs.existsSync(path.join(shared, 'mine.txt'))).toBe(false);
});

test('a private device is rooted at its dir: .. stays there, and 9P and virtio-fs clients see the same files', async () => {
  fs.mkdirSync(path.join(homes, 'g9'), { mode: 0o700 });
  fs.writeFileSync(path.join(homes, 'g9', 'secret'), 'not yours\n');
  const { c, root } = await session('g1');
  const f = c.newFid();
  await c.walk(root, f, []);
  await c.lcreate(f, 'notes.txt', O.RDWR | O.CREAT, 0o600, 0);
  await c.write(f, 0, Buffer.from('my notes\n'));
  await c.clunk(f);
  expect(fs.readFileSync(path.join(homes, 'g1', 'notes.txt'), 'utf8')).toBe('my notes\n');
  // ".." from the device root is the root itself (9P), so the sibling is out of reach
  const up = c.newFid();
  const qids = await c.walk(root, up, ['..']);
  expect(qids[0]!.path).toBe(fs.statSync(path.join(homes, 'g1'), { bigint: true }).ino);
  // a walk stops at the first name it cannot find: "..", then no g9
  const rootIno = fs.statSync(path.join(homes, 'g1'), { bigint: true }).ino;
  expect((await c.walk(root, c.newFid(), ['..', 'g9', 'secret'])).map((q) => q.path)).toEqual([rootIno]);
  await expect(c.walk(root, c.newFid(), ['g9'])).rejects.toMatchObject({ code: 'ENOENT' });
  await c.close();

  const fe = await VhostUserFrontend.connect({ socketPath: `${base}/g1-vfs.sock`, queueSize: 64, regions: [{ gpa: 0x100000, size: 4 * MIB }] });
  try {
    const v = new FuseClient(fe, 1);
    await v.doInit();
    const e = await v.lookup(ROOT, 'notes.txt');
    const h = await v.open(e.nodeid, fs.constants.O_RDONLY);
    expect((await v.read(h.fh, 0n, 100)).toString()).toBe('my notes\n');
    await expect(v.lookup(ROOT, 'g9')).rejects.toMatchObject({ errno: 2 });
    const s = await d.status();
    expect(dev(s, 'g1-vfs')).toMatchObject({ clients: [expect.objectContaining({ peer: expect.any(String) })], queues: 2, openFiles: 1 });
    expect(dev(s, 'g1-vfs')!.ops).toMatchObject({ lookup: 2, open: 1, read: 1 });
    await v.release(h.fh);
  } finally {
    fe.close();
  }
});

test('a virtio-9p device on the same dir, read-only for itself: walks, reads, and refuses a create with EROFS', async () => {
  const fe = await VhostUserFrontend.connect({ socketPath: `${base}/g1-v9p.sock`, queues: 1, regions: [{ gpa: 0x100000, size: 4 * MIB }] });
  try {
    let tag = 1;
    const rpc = async (type: number, fill: (w: Writer) => Writer): Promise<Buffer> => {
      const c = await fe.request(0, { out: [fill(new Writer()).finish(type, tag++)], in: [8192] });
      return c.data.subarray(0, c.len);
    };
    const ok = (b: Buffer, type: number): Buffer => {
      expect(b[4] === RLERROR ? `Rlerror ${b.readUInt32LE(7)}` : b[4]).toBe(type + 1);
      return b;
    };
    ok(await rpc(T.version, (w) => w.u32(65536).str('9P2000.L')), T.version);
    ok(await rpc(T.attach, (w) => w.u32(1).u32(NOFID).str('root').str('').u32(0)), T.attach);
    const walked = ok(await rpc(T.walk, (w) => w.u32(1).u32(2).u16(1).str('notes.txt')), T.walk);
    expect(walked.readUInt16LE(7)).toBe(1);
    ok(await rpc(T.lopen, (w) => w.u32(2).u32(0)), T.lopen);
    const rd = ok(await rpc(T.read, (w) => w.u32(2).u64(0).u32(100)), T.read);
    expect(rd.subarray(11, 11 + rd.readUInt32LE(7)).toString()).toBe('my notes\n');
    ok(await rpc(T.walk, (w) => w.u32(1).u32(3).u16(0)), T.walk);
    const made = await rpc(T.lcreate, (w) => w.u32(3).str('nope').u32(1).u32(0o644).u32(0));
    expect([made[4], made.readUInt32LE(7)]).toEqual([RLERROR, 30 /* EROFS */]);
    const s = await d.status();
    expect(dev(s, 'g1-v9p')).toMatchObject({ type: 'virtio-9p', tag: 'home9p', readonly: true, queues: 1, openFiles: 1 });
    expect(dev(s, 'g1-v9p')!.clients).toHaveLength(1);
    // the writable devices on the same dir stay writable: a root of its own
    expect(dev(s, 'g1')!.readonly).toBe(false);
  } finally {
    fe.close();
  }
  expect(fs.existsSync(path.join(homes, 'g1', 'nope'))).toBe(false);
});

test('SIGHUP adds a device while a client of another keeps a file open and keeps working; removes one cleanly', async () => {
  const { c, root } = await session('g1');
  const f = c.newFid();
  await c.walk(root, f, []);
  await c.lcreate(f, 'open.txt', O.RDWR | O.CREAT, 0o600, 0);
  await c.write(f, 0, Buffer.from('before '));
  const sh = await session('shared');

  const before = await d.status();
  expect(dev(before, 'g1')).toMatchObject({ openFiles: 1, clients: [expect.anything()] });

  // add g2, drop the shared device
  writeConfig({ privates: ['g1', 'g2'], sharedDevice: false });
  await d.hup();
  const after = await d.status();
  expect(after.devices.map((x) => x.name).sort()).toEqual(['g1', 'g1-v9p', 'g1-vfs', 'g2']);
  expect(after.lastReload).toMatchObject({ added: ['g2'], removed: ['shared'], failed: {} });
  expect(after.lastReload!.kept.sort()).toEqual(['g1', 'g1-v9p', 'g1-vfs']);

  // g1's connection and its open file were not touched
  expect(c.isClosed).toBe(false);
  await c.write(f, 7, Buffer.from('after\n'));
  await c.fsync(f);
  expect(fs.readFileSync(path.join(homes, 'g1', 'open.txt'), 'utf8')).toBe('before after\n');
  expect(dev(after, 'g1')).toMatchObject({ openFiles: 1, clients: [expect.anything()] });

  // the removed device's session ended and its socket is gone
  expect(await sh.c.waitClosed(10_000)).toBe(true);
  expect(fs.existsSync(`${base}/shared.sock`)).toBe(false);

  // the new one serves its own, newly made dir
  const g2 = await session('g2');
  const n = g2.c.newFid();
  await g2.c.walk(g2.root, n, []);
  await g2.c.lcreate(n, 'hello', O.WRONLY | O.CREAT, 0o600, 0);
  await g2.c.close();
  expect(fs.statSync(path.join(homes, 'g2')).uid).toBe(2002);
  expect(fs.existsSync(path.join(homes, 'g2', 'hello'))).toBe(true);
  await c.clunk(f);
  await c.close();
});

test('a bad file on SIGHUP is logged and the running set is kept', async () => {
  const before = (await d.status()).devices.map((x) => x.name).sort();
  const good = fs.readFileSync(configFile, 'utf8');
  fs.writeFileSync(configFile, `${good}\n[devices.g3]\ntype = "9p-unix"\nsocket = "${base}/g3.sock"\nexport = "homes"\ndir = "../g3"\n`);
  await d.hup();
  expect(d.log()).toMatch(/devices\.g3\.dir: \\?"\.\.\/g3\\?": \\?"\.\.\\?" would leave the export/);
  expect((await d.status()).devices.map((x) => x.name).sort()).toEqual(before);
  const { c, root } = await session('g1');
  expect(await readFile(c, root, ['notes.txt'])).toBe('my notes\n');
  await c.close();
  fs.writeFileSync(configFile, good);
});

test('a dir that leads out of the export through a symlink is refused on SIGHUP; the rest goes ahead', async () => {
  const outside = path.join(base, 'outside');
  fs.mkdirSync(outside);
  fs.symlinkSync(outside, path.join(homes, 'evil'));
  writeConfig({
    privates: ['g1', 'g2'],
    sharedDevice: false,
    extra: `[devices.evil]\ntype = "9p-unix"\nsocket = "${base}/evil.sock"\nexport = "homes"\ndir = "evil"\n\n[devices.g4]\ntype = "9p-tcp"\nlisten = "127.0.0.1:0"\nexport = "homes"\ndir = "g4"\ncreate = { uid = 2004, gid = 2004, mode = "0750" }`,
  });
  await d.hup();
  const s = await d.status();
  expect(s.lastReload!.failed.evil).toMatch(/devices\.evil\.dir: evil leads out of export homes .* through a symlink; refused/);
  expect(fs.existsSync(`${base}/evil.sock`)).toBe(false);
  expect(s.lastReload!.added).toEqual(['g4']);
  const g4 = dev(s, 'g4')!;
  expect(g4.address).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
  const { c, root } = await P9Client.session(g4.address.slice(4), { uid: 0 });
  const f = c.newFid();
  await c.walk(root, f, []);
  await c.lcreate(f, 'via-tcp', O.WRONLY | O.CREAT, 0o600, 0);
  await c.close();
  expect(fs.existsSync(path.join(homes, 'g4', 'via-tcp'))).toBe(true);
  expect(fs.statSync(path.join(homes, 'g4')).mode & 0o7777).toBe(0o750);
});

test('duofs status: for people and --json, with clients, open files and operation counts', async () => {
  const { c, root } = await session('g1');
  const f = c.newFid();
  await c.walk(root, f, ['notes.txt']);
  await c.lopen(f, O.RDONLY);
  await c.read(f, 0, 10);
  const json = cli(['status', '--config', configFile, '--json']);
  expect(json.code).toBe(0);
  const s = JSON.parse(json.stdout) as DaemonStatus;
  expect(s.pid).toBe(d.proc.pid);
  expect(s.openFds).toBeGreaterThan(5);
  expect(s.rssBytes).toBeGreaterThan(1 << 20);
  const g1 = dev(s, 'g1')!;
  expect(g1).toMatchObject({ type: '9p-unix', address: `unix:${base}/g1.sock`, root: path.join(homes, 'g1'), readonly: false, openFiles: 1 });
  expect(g1.clients).toHaveLength(1);
  expect(g1.ops.read).toBeGreaterThanOrEqual(1);
  expect(g1.ops.open).toBeGreaterThanOrEqual(1);
  const text = cli(['status', '--control-socket', ctl]);
  expect(text.code).toBe(0);
  expect(text.stdout).toMatch(/^duofs pid \d+, config .*class\.toml, up \d+ s, RSS [\d.]+ MiB, \d+ open fds, 5 devices/);
  expect(text.stdout).toMatch(
    new RegExp(`\\ng1  9p-unix  unix:${base}/g1.sock\\n  root       ${homes}/g1 \\(export homes, dir g1\\)\\n  clients    g1#\\d+\\n`),
  );
  expect(text.stdout).toMatch(/\n {2}open files 1\n {2}operations .*read \d+/);
  await c.close();
  await sleep(100);
  expect(dev(await d.status(), 'g1')).toMatchObject({ openFiles: 0, clients: [] });
});

test('status of no daemon, and flags that conflict with --config, are clear errors', () => {
  const none = cli(['status', '--control-socket', path.join(base, 'nope.ctl')]);
  expect(none.code).toBe(1);
  expect(none.stderr).toMatch(/cannot reach the control socket .*nope\.ctl \(ENOENT\): is duofs serve --config running\?/);
  const both = cli(['serve', '--config', configFile, '--shared-dir', shared]);
  expect(both.code).toBe(2);
  expect(both.stderr).toMatch(/--shared-dir cannot be used with --config/);
  const unasked = cli(['serve', '--config', configFile]);
  expect(unasked.code).toBe(2);
  expect(unasked.stderr).toMatch(/--sandbox namespace \(the default\) is not available with --config yet.*give --sandbox none/);
  const bad = path.join(base, 'bad.toml');
  fs.writeFileSync(bad, '[exports.e]\npath = "/srv"\nsecurity = "x"\n');
  const r = cli(['serve', '--config', bad, '--sandbox', 'none']);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/bad\.toml: exports\.e\.security: unknown key/);
});
