// A guest can keep more inodes referenced than the process may have fds:
// past the budget, idle inodes trade their O_PATH fd for a file handle and
// reopen transparently.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DAEMON, LocalBackend } from '../../src/backend/backend.js';
import { now } from '../support/now.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-budget-'));
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(dir, `f${i}`), `content ${i}`);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

test('inodes beyond the budget are evicted and reopened on use', async () => {
  const b = new LocalBackend({ sharedDir: dir, inodeFdBudget: 50 });
  const entries = [];
  for (let i = 0; i < 300; i++) entries.push(now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`))).inode);
  await tick();
  expect(b.inodes.openFds).toBeLessThanOrEqual(50);
  expect(b.inodes.evictions).toBeGreaterThan(200);
  // Every inode still answers, through its handle.
  for (let i = 0; i < 300; i++) {
    const st = now(b.getattr(entries[i]!));
    expect(st.size).toBe(`content ${i}`.length);
    expect(st.ino).toBe(BigInt(fs.statSync(path.join(dir, `f${i}`)).ino));
  }
  // Opening reads the right file.
  const f = now(b.open(DAEMON, entries[123]!, 0));
  const buf = Buffer.alloc(64);
  expect(fs.readSync(f.fd, buf, 0, 64, 0)).toBe('content 123'.length);
  b.closeFile(f);
  for (const e of entries) b.release(e);
  await tick();
  expect(b.inodes.size).toBe(1); // only the root remains
});

test('an open file keeps its inode fd (an unlinked file stays reachable)', async () => {
  const b = new LocalBackend({ sharedDir: dir, inodeFdBudget: 10 });
  const victim = now(b.lookup(DAEMON, b.root, Buffer.from('f0'))).inode;
  const file = now(b.open(DAEMON, victim, 2));
  b.unlink(DAEMON, b.root, Buffer.from('f0'), 0);
  const others = [];
  for (let i = 1; i < 100; i++) others.push(now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`))).inode);
  await tick();
  expect(victim.rawFd).toBeGreaterThanOrEqual(0);
  expect(now(b.getattr(victim)).nlink).toBe(0);
  b.closeFile(file);
});

test('no budget (unprivileged daemon): nothing is evicted', async () => {
  const b = new LocalBackend({ sharedDir: dir });
  for (let i = 0; i < 300; i++) now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`)));
  await tick();
  expect(b.inodes.evictions).toBe(0);
});

test('open inodes count against the budget: the others make room, and closed ones can be evicted again', async () => {
  const b = new LocalBackend({ sharedDir: dir, inodeFdBudget: 50 });
  const opened = [];
  for (let i = 0; i < 30; i++) {
    const e = now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`))).inode;
    opened.push(now(b.open(DAEMON, e, 0)));
    b.release(e);
  }
  const walked = [];
  for (let i = 30; i < 200; i++) walked.push(now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`))).inode);
  await tick();
  // 30 open inodes keep their fds; the walked ones share what is left.
  expect(b.inodes.fdsHeld).toBeLessThanOrEqual(50);
  for (const f of opened) b.closeFile(f);
  for (let i = 200; i < 300; i++) walked.push(now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`))).inode);
  await tick();
  expect(b.inodes.fdsHeld).toBeLessThanOrEqual(50);
  for (const e of walked) expect(now(b.getattr(e)).size).toBeGreaterThan(0);
  for (const e of walked) b.release(e);
  await tick();
  expect(b.inodes.fdsHeld).toBe(1); // the root
});

test('a burst of requests past the hard cap evicts at once, never what the current request uses', () => {
  const b = new LocalBackend({ sharedDir: dir, inodeFdBudget: 50, inodeFdCap: 80 });
  const entries = [];
  let most = 0;
  // 150 requests in one go: the deferred eviction never gets to run.
  for (let i = 0; i < 150; i++) {
    b.beginRequest();
    entries.push(now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`))).inode);
    most = Math.max(most, b.inodes.fdsHeld);
  }
  expect(most).toBeLessThanOrEqual(80);
  for (let i = 0; i < 150; i++) expect(now(b.getattr(entries[i]!)).size).toBe(`content ${i}`.length);
  // One request that alone wants more than the cap: ENFILE past it, the table stays within it.
  b.beginRequest();
  let refused = '';
  const mine = [];
  for (let i = 150; i < 300 && !refused; i++) {
    try {
      mine.push(now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`))).inode);
    } catch (e) {
      refused = (e as Error).message;
    }
  }
  expect(refused).toMatch(/ENFILE/);
  expect(mine.length).toBeGreaterThan(70); // the older requests' entries made room
  expect(b.inodes.fdsHeld).toBeLessThanOrEqual(80);
  for (const e of mine) expect(e.rawFd).toBeGreaterThanOrEqual(0); // none evicted under the request
  for (const e of [...entries, ...mine]) b.release(e);
});

test("a new file that reuses an evicted, deleted inode's host number is a new inode, not the stale entry", async () => {
  // The guest still holds f0 (a lookup reference) after its fd was traded for a
  // handle; f0 is unlinked, so nothing keeps the host inode and its number is
  // free. New files may get that number (ext4 and tmpfs reuse them): each must
  // come back as itself, never as f0's entry (whose handle is stale).
  const b = new LocalBackend({ sharedDir: dir, inodeFdBudget: 10 });
  const victim = now(b.lookup(DAEMON, b.root, Buffer.from('f0'))).inode;
  for (let i = 1; i < 100; i++) now(b.lookup(DAEMON, b.root, Buffer.from(`f${i}`)));
  await tick();
  expect(victim.rawFd).toBe(-1); // evicted
  const freed = victim.ino;
  b.unlink(DAEMON, b.root, Buffer.from('f0'), 0);
  // ext4 allocates the lowest free number of the group, so older holes come
  // first: keep every new file until the freed number comes round (unlinking
  // them would hand the same hole out again and again). Without a journal ext4
  // also passes over an inode deleted in the last few seconds
  // (recently_deleted()), hence the pauses; 20 s at most.
  spawnSync('sync');
  let reused = 0;
  const until = Date.now() + 20_000;
  for (let k = 0; !reused && Date.now() < until; k++) {
    const name = `n${k}`;
    const e = now(b.mknod(DAEMON, b.root, Buffer.from(name), 0o100644, 0n));
    if (e.stat.ino === freed) reused++;
    expect(e.inode.id).not.toBe(victim.id); // not the deleted f0's entry
    expect(now(b.getattr(e.inode)).ino).toBe(BigInt(fs.statSync(path.join(dir, name)).ino));
    expect(now(b.lookup(DAEMON, b.root, Buffer.from(name))).inode.id).toBe(e.inode.id);
    b.release(e.inode);
    if (k % 1000 === 999) await new Promise((r) => setTimeout(r, 250));
  }
  if (reused === 0) throw new Error(`the host did not reuse inode ${freed} in 20 s: this test proves nothing here`);
  // The guest's old reference still names the deleted file.
  expect(() => now(b.getattr(victim))).toThrow(/ESTALE/);
}, 30_000);
