// Live migration, precopy: the virtio-fs device state (DEVICE_STATE,
// SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE). Server A serves a guest that
// looked names up, opened a file and read a directory partway; the frontend
// stops A's rings and saves its state through a pipe, loads it into server
// B (a second duofs on the same export), and the guest goes on there with
// the same node ids and handles. The state is hostile input on B: a
// truncated, corrupted, oversized or forged blob is refused, and a path that
// now names another file fails the load (abort) or answers EIO (guest-error).
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { ProtocolFeature } from '../../protocols/vhost-user/protocol.js';
import { startDuofs, type Duofs } from '../../src/server.js';
import { DEFAULT_PROTOCOL_FEATURES, VhostUserFrontend } from '../vhost/driver.js';
import { FuseClient, ROOT, errnoOf, type Dirent } from './client.js';
import { FuseFixture, type LogLine } from './fixture.js';
import { encodeState, decodeState, STATE_MAGIC } from '../../protocols/fuse/migration-state.js';

const PF = DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.DEVICE_STATE;
const O_RDWR = 2;
let fx: FuseFixture;

interface Server {
  duofs: Duofs;
  socket: string;
  lines: LogLine[];
}

const servers: Server[] = [];
const frontends: VhostUserFrontend[] = [];

/** Server B: another duofs on A's export. */
async function startB(onError: 'abort' | 'guest-error' = 'abort'): Promise<Server> {
  const lines: LogLine[] = [];
  const socket = path.join(fx.base, `b${servers.length}.sock`);
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  const duofs = await startDuofs({
    sharedDir: fx.dir,
    virtiofsSocket: socket,
    tag: 'fusetest',
    numRequestQueues: 2,
    fuse: { cache: 'auto', xattr: true, migrationOnError: onError },
    readonly: false,
    log,
  });
  const s = { duofs, socket, lines };
  servers.push(s);
  return s;
}

/** The destination's frontend: features and memory first, then the state, then the rings (QEMU's order). */
async function destination(b: Server, state: Buffer): Promise<{ fe: VhostUserFrontend; check: bigint }> {
  const fe = await VhostUserFrontend.connect({ socketPath: b.socket, protocolFeatures: PF, queues: 0 });
  frontends.push(fe);
  const check = await fe.loadDeviceState(state);
  for (let i = 0; i < fe.queueNum; i++) await fe.startQueue(i, 256);
  return { fe, check };
}

/** Stops every ring of a guest (QEMU does before saving) and saves its device state. */
async function save(fe: VhostUserFrontend): Promise<Buffer> {
  for (let i = 0; i < fe.queueNum; i++) await fe.getVringBase(i);
  const { state, check } = await fe.saveDeviceState();
  expect(check).toBe(0n);
  return state;
}

beforeAll(async () => {
  fx = await new FuseFixture().start();
  fs.mkdirSync(fx.p('d'));
  for (let i = 0; i < 40; i++) fs.writeFileSync(fx.p('d', `entry-${String(i).padStart(2, '0')}`), `${i}`);
  fs.writeFileSync(fx.p('f'), 'hello from the source\n');
});
afterAll(async () => {
  for (const fe of frontends) fe.close();
  for (const s of servers) await s.duofs.close();
  await fx.close();
});

const names = (ds: Dirent[]): string[] => ds.map((d) => d.name.toString()).filter((n) => n !== '.' && n !== '..');

describe('device state (DEVICE_STATE)', () => {
  test('the guest goes on on server B with the same node ids and handles', async () => {
    const a = await fx.guest({ protocolFeatures: PF });
    expect(a.fe.offeredProtocolFeatures & ProtocolFeature.DEVICE_STATE).toBe(ProtocolFeature.DEVICE_STATE);
    const c = a.c;
    const d = await c.lookup(ROOT, 'd');
    const f = await c.lookup(ROOT, 'f');
    await c.lookup(ROOT, 'f'); // two lookups of f
    const e7 = await c.lookup(d.nodeid, 'entry-07');
    const file = await c.open(f.nodeid, O_RDWR);
    const dir = await c.opendir(d.nodeid);
    const first = await c.readdir(dir.fh, 0n, 512); // partway
    expect(first.length).toBeGreaterThan(2);
    expect(first.length).toBeLessThan(42);
    const state = await save(a.fe);
    a.fe.close();
    expect(state.subarray(0, 8).equals(STATE_MAGIC)).toBe(true);

    const b = await startB();
    const { fe, check } = await destination(b, state);
    expect(check).toBe(0n);
    const cb = new FuseClient(fe);
    // The same node ids name the same files; the same handles read, write and list on.
    expect((await cb.getattr(f.nodeid)).attr.ino).toBe(f.attr.ino);
    expect((await cb.getattr(e7.nodeid)).attr.ino).toBe(e7.attr.ino);
    const e8 = await cb.lookup(d.nodeid, 'entry-08'); // new lookups under a migrated node get fresh ids
    expect(e8.attr.ino).toBe(BigInt(fs.statSync(fx.p('d', 'entry-08')).ino));
    expect(e8.nodeid).toBeGreaterThan(e7.nodeid);
    expect((await cb.read(file.fh, 0n, 100)).toString()).toBe('hello from the source\n');
    expect(await cb.write(file.fh, 0n, Buffer.from('HELLO'))).toBe(5);
    expect(fs.readFileSync(fx.p('f'), 'utf8')).toBe('HELLO from the source\n');
    const rest = await cb.readdirAll(dir.fh, { start: first[first.length - 1]!.off });
    const all = [...names(first), ...names(rest as Dirent[])].sort();
    expect(all).toEqual(fs.readdirSync(fx.p('d')).sort());
    // References: FORGET gives back exactly what the guest held; the handles release.
    expect(b.duofs.backend.inodes.size).toBe(5); // root, d, f, entry-07, entry-08
    await cb.forget(e8.nodeid, 1n);
    await cb.forget(e7.nodeid, 1n);
    await cb.forget(d.nodeid, 1n);
    await cb.forget(f.nodeid, 2n);
    await cb.release(file.fh);
    await cb.releasedir(dir.fh);
    await cb.forget(d.nodeid + 1000n, 1n); // unknown: ignored
    expect(await errnoOf(cb.read(file.fh, 0n, 10))).toBe('EBADF');
    expect(b.duofs.backend.inodes.size).toBe(1); // only the root: every reference came back
    expect(cb.violations).toEqual([]);
    fe.close();
  });

  test('hostile blobs are refused with a failed CHECK_DEVICE_STATE; the device stays fresh', async () => {
    const a = await fx.guest({ protocolFeatures: PF });
    const f = await a.c.lookup(ROOT, 'f');
    const state = await save(a.fe);
    a.fe.close();
    const b = await startB();
    const flipped = Buffer.from(state);
    flipped[20]! ^= 0xff;
    const parsed = decodeState(state, 1n);
    const dotdot = encodeState({ ...parsed, nodes: parsed.nodes.map((n) => ({ ...n, path: [Buffer.from('..'), Buffer.from('outside')] })) });
    const huge = encodeState({ ...parsed, nodes: parsed.nodes.map((n) => ({ ...n, lookups: 2n ** 60n })) });
    const cases: [string, Buffer, RegExp][] = [
      ['truncated', state.subarray(0, state.length - 9), /corrupted \(checksum mismatch\) or truncated/],
      ['corrupted', flipped, /corrupted/],
      ['empty', Buffer.alloc(0), /truncated/],
      ['bad magic', Buffer.concat([Buffer.from('NOTDUOFS'), state.subarray(8)]), /bad magic/],
      ['oversized', Buffer.alloc(64 * 1024 * 1024 + 1), /more than 67108864 bytes/],
      ['a path with ..', dotdot, /path has a '\.' or '\.\.' component/],
      ['a lookup count beyond 2^53', huge, /lookup count 1152921504606846976 is out of range/],
    ];
    for (const [what, blob, why] of cases) {
      const { fe, check } = await destination(b, blob);
      expect([what, check]).toEqual([what, 1n]);
      expect([what, b.lines.some((l) => why.test(String(l.fault ?? '')))]).toEqual([what, true]);
      // Nothing was loaded: the node id is unknown and the session needs an INIT.
      const cb = new FuseClient(fe);
      expect(await errnoOf(cb.getattr(f.nodeid))).toBe('EIO');
      await cb.doInit();
      expect(await errnoOf(cb.getattr(f.nodeid))).toBe('ESTALE');
      fe.close();
    }
    expect(b.duofs.backend.inodes.size).toBe(1);
  });

  test('a path that now names another file: abort fails the load, guest-error answers EIO there', async () => {
    fs.writeFileSync(fx.p('g'), 'old g');
    fs.writeFileSync(fx.p('h'), 'h stays');
    const a = await fx.guest({ protocolFeatures: PF });
    const g = await a.c.lookup(ROOT, 'g');
    const h = await a.c.lookup(ROOT, 'h');
    const gf = await a.c.open(g.nodeid, O_RDWR);
    const hf = await a.c.open(h.nodeid, 0);
    const state = await save(a.fe);
    a.fe.close();
    // Between save and load the host replaces g.
    fs.renameSync(fx.p('g'), fx.p('g.old'));
    fs.writeFileSync(fx.p('g'), 'new g');

    const b = await startB('abort');
    const r1 = await destination(b, state);
    expect(r1.check).toBe(1n);
    expect(b.lines.some((l) => /is now another file/.test(String(l.fault ?? '')))).toBe(true);
    expect(b.duofs.backend.inodes.size).toBe(1); // nothing kept from the failed load
    r1.fe.close();

    const b2 = await startB('guest-error');
    const r2 = await destination(b2, state);
    expect(r2.check).toBe(0n);
    const cb = new FuseClient(r2.fe);
    expect(await errnoOf(cb.getattr(g.nodeid))).toBe('EIO');
    expect(await errnoOf(cb.read(gf.fh, 0n, 10))).toBe('EIO');
    expect((await cb.read(hf.fh, 0n, 10)).toString()).toBe('h stays');
    expect((await cb.getattr(h.nodeid)).attr.ino).toBe(h.attr.ino);
    await cb.release(gf.fh); // a lost handle releases cleanly
    await cb.forget(g.nodeid, 1n);
    expect(await errnoOf(cb.getattr(g.nodeid))).toBe('ESTALE');
    expect(fs.readFileSync(fx.p('g'), 'utf8')).toBe('new g'); // never the wrong file
    r2.fe.close();
  });

  test('on the source, a node that cannot be found fails the save under abort', async () => {
    fs.writeFileSync(fx.p('doomed'), 'x');
    const a = await fx.guest({ protocolFeatures: PF });
    await a.c.lookup(ROOT, 'doomed');
    fs.unlinkSync(fx.p('doomed'));
    for (let i = 0; i < a.fe.queueNum; i++) await a.fe.getVringBase(i);
    const { state, check } = await a.fe.saveDeviceState();
    expect(check).toBe(1n);
    expect(state.length).toBe(0);
    expect(
      fx.lines.some((l) =>
        /CHECK_DEVICE_STATE: saving the device state: migration: save node \d+, inode \d+: its last path "doomed \(deleted\)" leads nowhere now \(openat ENOENT\): ENOENT/.test(
          String(l.fault ?? ''),
        ),
      ),
    ).toBe(true);
    a.fe.close();
  });
});
