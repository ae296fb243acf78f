// Nothing acknowledged is lost when the disk fills: the host kernel's FUSE
// client with --writeback (and without) on a nearly full filesystem under
// the export. With the writeback cache the kernel counts pages as written
// once a WRITE succeeds, so a short host write answered as a short success
// loses data that write(2) and fsync(2) both acknowledged.
import { afterEach, beforeEach, expect, jest, test } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, type Daemon } from '../support/daemon.js';

jest.setTimeout(60_000);

// The application: write(2) then fsync(2), chunk after chunk, until one
// fails; prints how many bytes were acknowledged by both.
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

let tmp: string;
let daemon: Daemon | undefined;

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join('/var/tmp', 'duofs-full-'));
  for (const d of ['export', 'mnt']) fs.mkdirSync(path.join(tmp, d));
  fs.mkdirSync(path.join(tmp, 'export', 'full'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0777', 'tmpfs', path.join(tmp, 'export', 'full')]);
});

afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  spawnSync('umount', ['-l', path.join(tmp, 'export', 'full')]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.each([
  ['--writeback', ['--writeback']],
  ['no writeback', []],
])('on a filling disk (%s) every byte write and fsync acknowledged is on the host, and the error reaches the application', async (_label, extra) => {
  const exp = path.join(tmp, 'export');
  const mnt = path.join(tmp, 'mnt');
  daemon = await startDaemon(['--shared-dir', exp, '--fuse-mount', mnt, '--log-level', 'warn', ...extra], { mount: mnt });
  // 100609-byte writes: not page aligned, so a write straddles the point where the disk fills.
  const total = 1 << 20;
  const out = execFileSync('python3', ['-c', APP, path.join(mnt, 'full', 'f'), '100609', String(total)], {
    encoding: 'utf8',
    timeout: 30_000,
  }).trim();
  const acked = Number(out.slice(0, out.indexOf(' ')));
  const err = out.slice(out.indexOf(' ') + 1);
  expect(err).toMatch(/space/i); // ENOSPC reached the application
  expect(acked).toBeLessThan(total);
  const host = fs.readFileSync(path.join(exp, 'full', 'f'));
  expect(host.length).toBeGreaterThanOrEqual(acked);
  const want = Buffer.from(Array.from({ length: acked }, (_, i) => (i * 7 + 3) % 251));
  expect(host.subarray(0, acked).equals(want)).toBe(true);
});
