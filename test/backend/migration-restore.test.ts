// The destination side of a migration finds the guest's inodes again by
// path and checks they are the same files. Device numbers are each host's
// own (an NFS export has another st_dev on every client), so they must
// correspond one to one from the roots, not be equal; inode numbers and
// types must be equal (shared storage keeps them).
import { afterEach, beforeEach, expect, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalBackend, SysError } from '../../src/backend/backend.js';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
let dir: string;
let b: LocalBackend;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-restore-'));
  fs.mkdirSync(path.join(dir, 'd'));
  fs.writeFileSync(path.join(dir, 'd', 'f'), 'x');
  b = new LocalBackend({ sharedDir: dir });
});
afterEach(() => {
  b.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ino = (p: string): bigint => fs.statSync(path.join(dir, p), { bigint: true }).ino;
const SRC_DEV = 0xabcdn; // the source host's number for the export's filesystem: not this host's
const root = () => ({ id: 1, path: [], dev: SRC_DEV, ino: 7n, kind: S_IFDIR, refs: 1 });
const node = (id: number, p: string, o: { dev?: bigint; ino?: bigint; kind?: number } = {}) => ({
  id,
  path: p.split('/').map((c) => Buffer.from(c)),
  dev: o.dev ?? SRC_DEV,
  ino: o.ino ?? ino(p),
  kind: o.kind ?? (fs.statSync(path.join(dir, p)).isDirectory() ? S_IFDIR : S_IFREG),
  refs: 1,
});

test('another host: the files are found under other device numbers (and another root inode)', async () => {
  const [r, d, f] = await b.restore([root(), node(5, 'd'), node(9, 'd/f')]);
  expect(r).toBe(b.root);
  expect(d).not.toBeInstanceOf(SysError);
  expect(f).not.toBeInstanceOf(SysError);
  expect(b.inodeById(9)).toBe(f);
});

test('a file the source had on another device than the root is not the same file here', async () => {
  const [, d, f] = await b.restore([root(), node(5, 'd'), node(9, 'd/f', { dev: SRC_DEV + 1n })]);
  expect(d).not.toBeInstanceOf(SysError);
  expect(f).toBeInstanceOf(SysError);
  expect((f as SysError).code).toBe('ESTALE');
});

test('another inode number or another type at the path is not the same file', async () => {
  const [, f, d] = await b.restore([root(), node(9, 'd/f', { ino: ino('d/f') + 1000n }), node(5, 'd', { kind: S_IFREG })]);
  expect((f as SysError).message).toMatch(/is now another file/);
  expect((d as SysError).code).toBe('ESTALE');
});
