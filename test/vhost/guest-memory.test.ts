// GuestMemory on its own: translation bounds, 1 GiB view windows, host
// addresses for iovecs, and unmapping deferred by pins.
import { afterEach, expect, test } from '@jest/globals';
import { readdirSync } from 'node:fs';
import { GuestMemory, GuestMemoryError, hostAddressOf, type MappedRegion } from '../../protocols/virtqueue/guest-memory.js';
import { closeFd } from '../../src/sys/fd.js';
import { createMemfd } from '../../src/sys/mem.js';
import { mmapShared, munmap, viewOf } from '../../src/sys/mem.js';
import { dupFd } from './sys-extra.js';

const GiB = 2 ** 30;
const mems: GuestMemory[] = [];
const fds: number[] = [];
afterEach(() => {
  for (const m of mems.splice(0)) m.clear();
  for (const f of fds.splice(0)) closeFd(f);
});

function memfd(size: number): number {
  const fd = createMemfd('duofs-test-guest', size);
  fds.push(fd);
  return fd;
}

function memory(): GuestMemory {
  const m = new GuestMemory();
  mems.push(m);
  return m;
}

test('a range crossing a 1 GiB window becomes two contiguous views with their host addresses', () => {
  const size = GiB + 8192;
  const fd = memfd(size);
  const m = memory();
  m.add({ guestAddr: 0x1_0000_0000, size, userAddr: 0x7000_0000_0000, mmapOffset: 0 }, dupFd(fd));
  const views: Buffer[] = [];
  const pins: MappedRegion[] = [];
  expect(m.translate(0x1_0000_0000 + GiB - 100, 200, views, pins)).toBe(true);
  expect(views.map((v) => v.length)).toEqual([100, 100]);
  expect(hostAddressOf(views[1]!)! - hostAddressOf(views[0]!)!).toBe(100);
  views[0]!.fill(0xaa);
  views[1]!.fill(0xbb);
  // The bytes are in the shared memory, seen through an independent mapping.
  const base = mmapShared(fd, size, 0);
  const check = Buffer.from(viewOf(base + BigInt(GiB - 100), 200));
  expect([check[0], check[99], check[100], check[199]]).toEqual([0xaa, 0xaa, 0xbb, 0xbb]);
  munmap(base, size);
  for (const p of pins) p.unpin();
  expect(hostAddressOf(Buffer.alloc(4))).toBeUndefined();
});

test('translation refuses anything outside the regions, including the byte just past the end', () => {
  const m = memory();
  m.add({ guestAddr: 0x10000, size: 0x10000, userAddr: 0x5000_0000_0000, mmapOffset: 4096 }, dupFd(memfd(0x11000)));
  const out: Buffer[] = [];
  const pins: MappedRegion[] = [];
  expect(m.translate(0x10000, 0x10000, out, pins)).toBe(true);
  expect(m.translate(0x10000, 0x10001, [], pins)).toBe(false);
  expect(m.translate(0xffff, 2, [], pins)).toBe(false);
  expect(m.translate(0x20000, 1, [], pins)).toBe(false);
  expect(m.translate(Number.MAX_SAFE_INTEGER - 1, 1, [], pins)).toBe(false);
  expect(m.userToGuest(0x5000_0000_0000 + 5)).toBe(0x10005);
  expect(m.viewUserRange(0x5000_0000_0000 + 0xfff0, 32)).toBeUndefined();
  for (const p of pins) p.unpin();
});

test('bad region specs are refused and their fd closed', () => {
  const m = memory();
  const fd = memfd(4096);
  const open = () => readdirSync('/proc/self/fd').length;
  const before = open();
  expect(() => m.add({ guestAddr: 0, size: 0, userAddr: 0, mmapOffset: 0 }, dupFd(fd))).toThrow(GuestMemoryError);
  expect(() => m.add({ guestAddr: Number.MAX_SAFE_INTEGER - 10, size: 4096, userAddr: 0, mmapOffset: 0 }, dupFd(fd))).toThrow(/wraps past 2\^53/);
  expect(() => m.add({ guestAddr: 0, size: 4096, userAddr: 0, mmapOffset: 4096 }, dupFd(fd))).toThrow(/needs 8192 bytes of its fd, which has 4096/);
  expect(open()).toBe(before);
  m.add({ guestAddr: 0, size: 4096, userAddr: 0x1000_0000, mmapOffset: 0 }, dupFd(fd));
  expect(() => m.add({ guestAddr: 2048, size: 4096, userAddr: 0x2000_0000, mmapOffset: 0 }, dupFd(memfd(4096)))).toThrow(/overlaps/);
  expect(m.regionCount).toBe(1);
});

test('a removed region stays mapped while pinned', () => {
  const m = memory();
  const r = m.add({ guestAddr: 0, size: 4096, userAddr: 0x1000_0000, mmapOffset: 0 }, dupFd(memfd(4096)));
  const pins: MappedRegion[] = [];
  const views: Buffer[] = [];
  m.translate(0, 16, views, pins);
  expect(m.remove({ guestAddr: 0, size: 4096, userAddr: 0x1000_0000 })).toBe(true);
  expect(r.isMapped).toBe(true);
  views[0]!.fill(1); // still safe to touch
  pins[0]!.unpin();
  expect(r.isMapped).toBe(false);
  expect(m.remove({ guestAddr: 0, size: 4096, userAddr: 0x1000_0000 })).toBe(false);
});
