// The virtio-9p device at the driver level: 9P frames in descriptor chains
// through the real vhost-user path, as the Linux 9p client lays them out
// (request in the readable part, reply room in the writable part). Twrite
// data is written to the file from guest memory, Rread data read into it;
// frames that disagree with their descriptors, replies that do not fit and
// requests before Tversion get an Rlerror, and the device keeps serving.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { startDuofs, type Duofs } from '../../src/server.js';
import { Errno } from '../../src/sys/index.js';
import { NOFID, NONUNAME, NOTAG, RLERROR, T } from '../../protocols/9p/constants.js';
import { Writer } from '../../protocols/9p/wire.js';
import { VhostUserFrontend, type Completion } from './driver.js';
import { DEFAULT_LOG_LIMITS } from '../../src/log-limit.js';

const MSIZE = 512 * 1024;
let base: string;
let dir: string;
let duofs: Duofs;
let fe: VhostUserFrontend;
const warnings: { msg: string; [k: string]: unknown }[] = [];
let nextTag = 1;

beforeAll(async () => {
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-v9p-')));
  dir = path.join(base, 'export');
  fs.mkdirSync(dir);
  const log = pino(
    { level: 'warn' },
    {
      write: (s: string) => {
        warnings.push(JSON.parse(s));
      },
    },
  );
  duofs = await startDuofs({ sharedDir: dir, ninepVhostSocket: path.join(base, '9p.sock'), ninepTag: 'v9p', log });
  fe = await VhostUserFrontend.connect({ socketPath: path.join(base, '9p.sock'), queues: 1, regions: [{ gpa: 0x100000, size: 32 << 20 }] });
});

afterAll(async () => {
  fe?.close();
  await duofs?.close();
  fs.rmSync(base, { recursive: true, force: true });
});

/** Sends `frame` split into `pieces` readable descriptors, with `room` bytes of writable space in 4 KiB descriptors. */
function send(frame: Buffer, room = 8192, pieces = 1): Promise<Completion> {
  const out: Buffer[] = [];
  const step = Math.ceil(frame.length / pieces);
  for (let at = 0; at < frame.length; at += step) out.push(frame.subarray(at, at + step));
  const ins: number[] = [];
  for (let left = room; left > 0; left -= 4096) ins.push(Math.min(4096, left));
  return fe.request(0, { out, in: ins, indirect: out.length + ins.length > 16 });
}

function reply(c: Completion, type: number): Buffer {
  const b = c.data;
  expect(c.len).toBe(b.readUInt32LE(0));
  if (b[4] === RLERROR && type !== RLERROR) throw new Error(`Rlerror ${b.readUInt32LE(7)}`);
  expect(b[4]).toBe(type);
  return b;
}

const errnoOf = (c: Completion): number => {
  expect(c.data[4]).toBe(RLERROR);
  return c.data.readUInt32LE(7);
};

async function rpc(type: number, fill: (w: Writer) => Writer, room = 8192, pieces = 1): Promise<Buffer> {
  const frame = fill(new Writer()).finish(type, nextTag++);
  return reply(await send(frame, room, pieces), type + 1);
}

test('a request before Tversion gets an Rlerror; then version, attach and a file work', async () => {
  const early = await send(new Writer().u32(1).u32(NOFID).str('root').str(dir).u32(NONUNAME).finish(T.attach, 5));
  expect(errnoOf(early)).toBe(Errno.EPROTO);
  const v = reply(await send(new Writer().u32(MSIZE).str('9P2000.L').finish(T.version, NOTAG)), T.version + 1);
  expect(v.readUInt32LE(7)).toBe(MSIZE);
  await rpc(T.attach, (w) => w.u32(1).u32(NOFID).str('root').str(dir).u32(0));
  await rpc(T.walk, (w) => w.u32(1).u32(2).u16(0));
  await rpc(T.lcreate, (w) => w.u32(2).str('data').u32(0o2 /* O_RDWR */).u32(0o644).u32(0));
});

test('a Twrite spread over many descriptors lands in the file whole and in order', async () => {
  const data = Buffer.alloc(300_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
  const frame = new Writer(data.length + 64).u32(2).u64(1000).u32(data.length).bytes(data).finish(T.write, nextTag++);
  const r = reply(await send(frame, 4096, 75), T.write + 1);
  expect(r.readUInt32LE(7)).toBe(data.length);
  const onDisk = fs.readFileSync(path.join(dir, 'data'));
  expect(onDisk.length).toBe(1000 + data.length);
  expect(onDisk.subarray(1000).equals(data)).toBe(true);
  // and reads back through Tread into scattered guest pages
  const rd = reply(await send(new Writer().u32(2).u64(1000).u32(data.length).finish(T.read, nextTag++), data.length + 11), T.read + 1);
  expect(rd.readUInt32LE(7)).toBe(data.length);
  expect(rd.subarray(11, 11 + data.length).equals(data)).toBe(true);
});

test('a Twrite whose count runs past its frame is refused; nothing is written', async () => {
  const before = fs.statSync(path.join(dir, 'data')).size;
  const frame = new Writer().u32(2).u64(0).u32(5000).bytes(Buffer.alloc(100, 1)).finish(T.write, nextTag++);
  expect(errnoOf(await send(frame, 4096, 3))).toBe(Errno.EPROTO);
  expect(fs.statSync(path.join(dir, 'data')).size).toBe(before);
});

test('a frame whose size field disagrees with its descriptors gets an Rlerror and a log line', async () => {
  const frame = new Writer().u32(2).u64(0).u32(10).bytes(Buffer.alloc(10)).finish(T.write, nextTag++);
  frame.writeUInt32LE(frame.length + 4096, 0); // claims more than the chain carries
  expect(errnoOf(await send(frame))).toBe(Errno.EPROTO);
  expect(warnings.some((l) => /frame size disagrees/.test(l.msg))).toBe(true);
});

test('a reply that does not fit the writable buffers becomes an Rlerror that does', async () => {
  const big = new Writer().u32(2).u64(0).u32(64).finish(T.read, nextTag++);
  // room for the Rread header only: the read itself is capped to the room
  const capped = reply(await send(big, 11), T.read + 1);
  expect(capped.readUInt32LE(7)).toBe(0);
  // Rgetattr (160 bytes) into 64 bytes of room
  const ga = new Writer().u32(2).u64(0x3fff).finish(T.getattr, nextTag++);
  expect(errnoOf(await send(ga, 64))).toBe(Errno.ENOBUFS);
  expect(warnings.some((l) => /does not fit/.test(l.msg))).toBe(true);
  // and the device still serves
  await rpc(T.clunk, (w) => w.u32(2));
});

test("by default the device leaves permissions to the guest kernel, as QEMU's 9p: a guest-only group works", async () => {
  // grp is writable only by gid 4242, a group uid 1000 has only inside the guest
  fs.mkdirSync(path.join(dir, 'grp'));
  fs.chownSync(path.join(dir, 'grp'), 0, 4242);
  fs.chmodSync(path.join(dir, 'grp'), 0o770);
  await rpc(T.attach, (w) => w.u32(10).u32(NOFID).str('').str(dir).u32(1000));
  await rpc(T.walk, (w) => w.u32(10).u32(11).u16(1).str('grp'));
  await rpc(T.lcreate, (w) => w.u32(11).str('mine').u32(0o2 /* O_RDWR */).u32(0o640).u32(1000));
  const st = fs.statSync(path.join(dir, 'grp', 'mine'));
  expect(`${st.uid}:${st.gid}:${(st.mode & 0o7777).toString(8)}`).toBe('1000:1000:640');
  await rpc(T.clunk, (w) => w.u32(11));
  await rpc(T.clunk, (w) => w.u32(10));
});

// Last: it ends with the guest leaving (the device is reset).
test('a flood of broken chains and bad requests gets bounded, counted log lines; the device keeps serving', async () => {
  const before = warnings.length;
  /** events of a kind so far: lines written for them plus the suppressed counts reported */
  const events = (re: RegExp): number =>
    warnings
      .filter((l) => re.test(l.msg))
      .reduce((n, l) => n + (typeof l.suppressed === 'number' ? l.suppressed : 0) + (/suppressed/.test(l.msg) ? 0 : 1), 0);
  const chainEvents = events(/frame size disagrees/);
  const requestEvents = events(/bad 9p request/);
  const N = 1500;
  for (let i = 0; i < N; i += 25) {
    const batch: Promise<Completion>[] = [];
    for (let j = 0; j < 25; j++) {
      const frame = new Writer().u32(2).u64(0).u32(10).bytes(Buffer.alloc(10)).finish(T.write, nextTag++);
      frame.writeUInt32LE(frame.length + 4096, 0); // claims more than the chain carries
      batch.push(send(frame));
      batch.push(
        send(
          new Writer()
            .u32(900_000 + i + j)
            .u32(900_001)
            .u16(0)
            .finish(T.walk, nextTag++),
        ),
      ); // no such fid: EBADF
    }
    for (const c of await Promise.all(batch)) expect([Errno.EPROTO, Errno.EBADF]).toContain(errnoOf(c));
  }
  const flood = warnings.slice(before);
  const chains = flood.filter((l) => /frame size disagrees/.test(l.msg));
  const requests = flood.filter((l) => /bad 9p request/.test(l.msg));
  expect(chains.length).toBeGreaterThan(0);
  expect(chains.length).toBeLessThanOrEqual(DEFAULT_LOG_LIMITS.burst);
  expect(requests.length).toBeGreaterThan(0);
  expect(requests.length).toBeLessThanOrEqual(DEFAULT_LOG_LIMITS.burst);
  await rpc(T.walk, (w) => w.u32(1).u32(3).u16(0));
  await rpc(T.clunk, (w) => w.u32(3));
  // The guest goes: the device is reset, and the counts come out complete.
  fe.close();
  const until = Date.now() + 5000;
  while (events(/frame size disagrees/) < chainEvents + N) {
    if (Date.now() > until) throw new Error('no complete count after the device reset');
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(events(/frame size disagrees/)).toBe(chainEvents + N);
  expect(events(/bad 9p request/)).toBe(requestEvents + N);
});
