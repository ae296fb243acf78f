// The lab's conformance scenario on the host kernel's own FUSE client:
// duofs serves an export with --fuse-mount, the scenario runs on the mount
// and on a plain local directory, and every check must agree except the
// differences listed here with their reasons.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, repoRoot, type Daemon } from '../support/daemon.js';

const scenario = path.join(repoRoot, 'test/lab/guest/scenarios/conformance.py');

const intended: Record<string, { fuse: string; reason: string }> = {
  'statfs.type': { fuse: '0x65735546', reason: 'every FUSE mount reports the FUSE magic, as virtiofs does' },
  'mknod.char_opens_guest_device': {
    fuse: 'EACCES',
    reason: '--fuse-mount mounts nodev,nosuid: a device node in an export must not open host devices for whoever browses the mount',
  },
  'xattr.trusted_as_root': {
    fuse: 'EPERM',
    reason: 'the sandboxed server keeps no CAP_SYS_ADMIN, as virtiofsd (docs/operator-guide.md "Sandbox"): trusted.* needs --modcaps +sys_admin',
  },
};

function checks(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const r = /^CHECK (\S+) ?(.*)$/.exec(line);
    if (r) m.set(r[1]!, r[2]!);
  }
  return m;
}

let tmp: string;
let daemon: Daemon | undefined;

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join('/var/tmp', 'duofs-fuse-conf-'));
  for (const d of ['local', 'export', 'mnt']) fs.mkdirSync(path.join(tmp, d));
});

afterEach(async () => {
  await daemon?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('the conformance scenario on --fuse-mount matches the local filesystem, check by check', async () => {
  daemon = await startDaemon(['--shared-dir', path.join(tmp, 'export'), '--fuse-mount', path.join(tmp, 'mnt'), '--xattr', '--log-level', 'warn'], {
    mount: path.join(tmp, 'mnt'),
  });
  const run = (dir: string): Map<string, string> =>
    checks(execFileSync('python3', [scenario, dir], { encoding: 'utf8', timeout: 240_000, maxBuffer: 64 << 20 }));
  const local = run(path.join(tmp, 'local'));
  const fuse = run(path.join(tmp, 'mnt'));
  expect(local.size).toBeGreaterThan(200);
  expect([...fuse.keys()].sort()).toEqual([...local.keys()].sort());
  const unexplained: string[] = [];
  for (const [name, want] of local) {
    const got = fuse.get(name);
    if (got === want) continue;
    if (intended[name]?.fuse === got) continue;
    unexplained.push(`${name}: local ${want} / fuse ${got}`);
  }
  expect(unexplained).toEqual([]);
  // A listed difference that no longer shows is stale.
  for (const [name, d] of Object.entries(intended)) expect([name, fuse.get(name)]).toEqual([name, d.fuse]);
}, 300_000);
