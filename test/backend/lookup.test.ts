// Lookup of a name whose inode is already in the table takes a one-statx
// path; these check that it still answers what the name means right now.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DAEMON, LocalBackend } from '../../src/backend/backend.js';
import { Errno } from '../../src/sys/index.js';
import { now } from '../support/now.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-lookup-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const name = (s: string): Buffer => Buffer.from(s);

test('a repeated lookup returns the same inode with one more reference', () => {
  fs.writeFileSync(path.join(dir, 'a'), 'x');
  const b = new LocalBackend({ sharedDir: dir });
  const first = now(b.lookup(DAEMON, b.root, name('a')));
  const again = now(b.lookup(DAEMON, b.root, name('a')));
  expect(again.inode).toBe(first.inode);
  expect(first.inode.refs).toBe(2);
  expect(again.stat.size).toBe(1);
  b.release(first.inode, 2);
  expect(b.inodes.size).toBe(1);
});

test('a name replaced on the host resolves to the new file; the old inode still works', () => {
  fs.writeFileSync(path.join(dir, 'a'), 'old');
  fs.writeFileSync(path.join(dir, 'b'), 'newer');
  const b = new LocalBackend({ sharedDir: dir });
  const old = now(b.lookup(DAEMON, b.root, name('a'))).inode;
  const other = now(b.lookup(DAEMON, b.root, name('b'))).inode;
  fs.renameSync(path.join(dir, 'b'), path.join(dir, 'a'));
  const after = now(b.lookup(DAEMON, b.root, name('a')));
  expect(after.inode).not.toBe(old);
  expect(after.inode).toBe(other); // known already: found by the statx alone
  expect(after.stat.size).toBe(5);
  expect(now(b.getattr(old)).size).toBe(3);
  expect(now(b.getattr(old)).nlink).toBe(0);
});

test('a name removed on the host is ENOENT even while its inode is held', () => {
  fs.writeFileSync(path.join(dir, 'a'), 'x');
  const b = new LocalBackend({ sharedDir: dir });
  const held = now(b.lookup(DAEMON, b.root, name('a'))).inode;
  fs.unlinkSync(path.join(dir, 'a'));
  expect(() => now(b.lookup(DAEMON, b.root, name('a')))).toThrow(expect.objectContaining({ errno: Errno.ENOENT }));
  expect(held.refs).toBe(1);
});

test('an inode traded for a file handle is found again by the full path', async () => {
  for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(dir, `f${i}`), `c${i}`);
  const b = new LocalBackend({ sharedDir: dir, inodeFdBudget: 10 });
  const held = [];
  for (let i = 0; i < 30; i++) held.push(now(b.lookup(DAEMON, b.root, name(`f${i}`))).inode);
  await tick();
  expect(held[0]!.rawFd).toBe(-1); // evicted
  const again = now(b.lookup(DAEMON, b.root, name('f0')));
  expect(again.inode).toBe(held[0]);
  expect(again.stat.size).toBe(2);
  expect(held[0]!.refs).toBe(2);
});
