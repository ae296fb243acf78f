// Directories through virtio-fs: OPENDIR, READDIR and READDIRPLUS (every
// name exactly once in a 20 000-entry directory, stable offsets, resuming
// at any offset returned earlier, lookup references of READDIRPLUS),
// FSYNCDIR and RELEASEDIR.
import { beforeAll, describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { ROOT, errnoOf, type Dirent, type DirentPlus } from './client.js';
import { useFuse } from './fixture.js';

const ctx = useFuse();
const N = 20_000;
const DT_FIFO = 1;
const DT_DIR = 4;
const DT_REG = 8;
const DT_LNK = 10;

const names = (l: Dirent[]): string[] => l.map((d) => d.name.toString('latin1'));

describe('a 20 000-entry directory', () => {
  let dir: bigint;
  let host: string[];
  let listing: Dirent[];

  beforeAll(async () => {
    const { fx, c } = ctx;
    const d = fx.p('huge');
    fs.mkdirSync(d);
    // Hard links make 20 000 names cheaply (creating inodes is slow here) and
    // keep READDIRPLUS within the fd limit; a few distinct inodes of every type.
    fs.writeFileSync(`${d}/target`, 'shared inode');
    for (let i = 0; i < N - 104; i++) fs.linkSync(`${d}/target`, `${d}/link-${i.toString().padStart(5, '0')}-${'x'.repeat(i % 50)}`);
    for (let i = 0; i < 100; i++) fs.writeFileSync(`${d}/file-${i}`, String(i));
    fs.mkdirSync(`${d}/subdir`);
    fs.symlinkSync('target', `${d}/symlink`);
    fs.writeFileSync(Buffer.concat([Buffer.from(`${d}/non-utf8-`), Buffer.from([0xff, 0xfe])]), ''); // not UTF-8
    host = fs.readdirSync(d, { encoding: 'latin1' }).sort();
    expect(host.length).toBe(N);
    dir = (await c.lookup(ROOT, 'huge')).nodeid;
  });

  test('READDIR in 4 KiB replies: every name once, plus "." and ".."; types from the host', async () => {
    const { c } = ctx;
    const h = await c.opendir(dir);
    listing = (await c.readdirAll(h.fh, { size: 4096 })) as Dirent[];
    const got = names(listing);
    expect(got.length).toBe(N + 2);
    expect(new Set(got).size).toBe(N + 2);
    expect(got.filter((n) => n !== '.' && n !== '..').sort()).toEqual(host);
    const byName = new Map(listing.map((d) => [d.name.toString('latin1'), d]));
    expect(byName.get('subdir')!.type).toBe(DT_DIR);
    expect(byName.get('symlink')!.type).toBe(DT_LNK);
    expect(byName.get('file-7')!.type).toBe(DT_REG);
    expect(byName.get('.')!.type).toBe(DT_DIR);
    expect(byName.get('file-7')!.ino).toBe(fs.statSync(ctx.fx.p('huge', 'file-7'), { bigint: true }).ino);
    // Offsets are distinct cookies (one per position).
    expect(new Set(listing.map((d) => d.off)).size).toBe(N + 2);
    // After the end: nothing more, also when asked again.
    expect(await c.readdir(h.fh, listing[listing.length - 1]!.off)).toEqual([]);
    await c.releasedir(h.fh);
  });

  test('the same listing with 64 KiB and with 1 MiB replies', async () => {
    const { c } = ctx;
    for (const size of [65536, 1 << 20]) {
      const h = await c.opendir(dir);
      const l = (await c.readdirAll(h.fh, { size })) as Dirent[];
      expect(names(l)).toEqual(names(listing));
      expect(l.map((d) => d.off)).toEqual(listing.map((d) => d.off));
      await c.releasedir(h.fh);
    }
  });

  test('resuming at any returned offset, on the same handle and on a fresh one', async () => {
    const { c } = ctx;
    const same = await c.opendir(dir);
    for (let i = 0; i < listing.length - 1; i += 997) {
      const at = listing[i]!.off;
      const s = names(await c.readdir(same.fh, at, 1024));
      expect(s.length).toBeGreaterThan(0);
      expect(s).toEqual(names(listing.slice(i + 1, i + 1 + s.length)));
      const fresh = await c.opendir(dir);
      const got = names(await c.readdir(fresh.fh, at, 4096));
      expect(got.length).toBeGreaterThan(0);
      expect(got).toEqual(names(listing.slice(i + 1, i + 1 + got.length)));
      await c.releasedir(fresh.fh);
    }
    // Going backwards and then reading to the end gives exactly the tail.
    const k = 12_345;
    const tail = (await c.readdirAll(same.fh, { size: 8192, start: listing[k]!.off })) as Dirent[];
    expect(names(tail)).toEqual(names(listing.slice(k + 1)));
    // Offset 0 starts over.
    expect(names(await c.readdir(same.fh, 0n, 4096)).slice(0, 5)).toEqual(names(listing.slice(0, 5)));
    await c.releasedir(same.fh);
  });

  test("READDIRPLUS: every name once, entries with attributes and node ids; the references are the guest's to forget", async () => {
    const { c, fx } = ctx;
    const base = fx.inodeCount;
    const h = await c.opendir(dir);
    const l = (await c.readdirAll(h.fh, { plus: true, size: 4096 })) as DirentPlus[];
    expect(names(l)).toEqual(names(listing));
    expect(l.map((d) => d.off)).toEqual(listing.map((d) => d.off));
    const refs = new Map<bigint, bigint>();
    const bad: string[] = []; // plain checks: 20 000 expect() calls would take seconds
    for (const d of l) {
      const n = d.name.toString('latin1');
      if (n === '.' || n === '..') {
        if (d.entry.nodeid !== 0n) bad.push(`${n}: node id ${d.entry.nodeid} (want 0: no reference, no dentry)`);
        continue;
      }
      if (d.entry.nodeid <= 1n) bad.push(`${n}: node id ${d.entry.nodeid}`);
      if (d.entry.attr.ino !== d.ino) bad.push(`${n}: attr.ino ${d.entry.attr.ino} != dirent ino ${d.ino}`);
      if (d.entry.attr.mode >> 12 !== d.type) bad.push(`${n}: mode ${d.entry.attr.mode.toString(8)} vs type ${d.type}`);
      refs.set(d.entry.nodeid, (refs.get(d.entry.nodeid) ?? 0n) + 1n);
    }
    expect(bad.slice(0, 10)).toEqual([]);
    const file7 = l.find((d) => d.name.toString() === 'file-7')!;
    expect(file7.entry.attr.size).toBe(1n);
    expect((await c.getattr(file7.entry.nodeid)).attr.ino).toBe(file7.ino);
    // 100 files + subdir + symlink + the non-UTF-8 file + the shared target
    expect(fx.inodeCount).toBe(base + 104);
    expect(refs.get(l.find((d) => d.name.toString() === 'target')!.entry.nodeid)).toBe(BigInt(N - 103));
    await c.releasedir(h.fh);
    await c.batchForget([...refs.entries()]);
    expect(fx.inodeCount).toBe(base);
  });

  test('READDIRPLUS resumes at a returned offset too', async () => {
    const { c } = ctx;
    const h = await c.opendir(dir);
    const i = 15_000;
    const got = await c.readdirplus(h.fh, listing[i]!.off, 4096);
    expect(got.length).toBeGreaterThan(3);
    expect(names(got)).toEqual(names(listing.slice(i + 1, i + 1 + got.length)));
    await c.batchForget(got.map((d) => [d.entry.nodeid, 1n] as [bigint, bigint]).filter(([n]) => n !== 0n));
    await c.releasedir(h.fh);
  });
});

describe('small directories', () => {
  test('entry types and a reply buffer that holds one entry at a time', async () => {
    const { c, fx } = ctx;
    fs.mkdirSync(fx.p('small'));
    fs.writeFileSync(fx.p('small', 'f'), '');
    fs.mkdirSync(fx.p('small', 'd'));
    fs.symlinkSync('f', fx.p('small', 'l'));
    await c.mknod((await c.lookup(ROOT, 'small')).nodeid, 'p', 0o010644);
    const d = await c.lookup(ROOT, 'small');
    const h = await c.opendir(d.nodeid);
    const l = (await c.readdirAll(h.fh, { size: 48 })) as Dirent[]; // 24 + name, padded: one entry per reply
    const types = Object.fromEntries(l.map((e) => [e.name.toString(), e.type]));
    expect(types).toEqual({ '.': DT_DIR, '..': DT_DIR, f: DT_REG, d: DT_DIR, l: DT_LNK, p: DT_FIFO });
    await c.fsyncdir(h.fh);
    await c.releasedir(h.fh);
    expect(await errnoOf(c.readdir(h.fh, 0n))).toBe('EBADF');
    expect(await errnoOf(c.releasedir(h.fh))).toBe('EBADF');
  });

  test('an empty directory lists "." and ".." only; a new entry shows up after rewinding', async () => {
    const { c, fx } = ctx;
    const e = await c.mkdir(ROOT, 'empty');
    const h = await c.opendir(e.nodeid);
    expect(names((await c.readdirAll(h.fh)) as Dirent[]).sort()).toEqual(['.', '..']);
    fs.writeFileSync(fx.p('empty', 'late'), '');
    expect(names((await c.readdirAll(h.fh)) as Dirent[]).sort()).toEqual(['.', '..', 'late']);
    await c.releasedir(h.fh);
  });

  test('OPENDIR of a file is ENOTDIR; a file handle is not a directory handle (EBADF) and vice versa', async () => {
    const { c, fx } = ctx;
    fs.writeFileSync(fx.p('plainfile'), 'x');
    const f = await c.lookup(ROOT, 'plainfile');
    expect(await errnoOf(c.opendir(f.nodeid))).toBe('ENOTDIR');
    const o = await c.open(f.nodeid, 0);
    expect(await errnoOf(c.readdir(o.fh, 0n))).toBe('EBADF');
    expect(await errnoOf(c.releasedir(o.fh))).toBe('EBADF');
    const h = await c.opendir(ROOT);
    expect(await errnoOf(c.read(h.fh, 0n, 10))).toBe('EBADF');
    expect(await errnoOf(c.release(h.fh))).toBe('EBADF');
    await c.release(o.fh);
    await c.releasedir(h.fh);
  });
});
