// The unit files in share/systemd/ as systemd reads them, and as duofs
// reads what they hand over: every FileDescriptorName= is one duofs
// matches to a front-end, every socket starts duofs@%i.service, and the
// service waits for duofs's READY=1 from its main process.
import { expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FD_NAMES } from '../../src/systemd/activation.js';
import { repoRoot } from './harness.js';

const dir = path.join(repoRoot, 'share/systemd');
const read = (name: string): string => fs.readFileSync(path.join(dir, name), 'utf8');
const values = (text: string, key: string): string[] =>
  text
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));

test('every socket unit names a front-end duofs knows and starts duofs@%i.service', () => {
  const sockets = fs.readdirSync(dir).filter((f) => f.endsWith('.socket'));
  expect(sockets.sort()).toEqual(['duofs-9p@.socket', 'duofs@.socket']);
  for (const s of sockets) {
    const t = read(s);
    expect([s, values(t, 'FileDescriptorName').every((n) => n in FD_NAMES)]).toEqual([s, true]);
    expect(values(t, 'FileDescriptorName')).toHaveLength(1);
    expect(values(t, 'Service')).toEqual(['duofs@%i.service']);
    expect(values(t, 'ListenStream').length).toBeGreaterThan(0);
  }
});

test('the service waits for READY=1 from its main process and passes the instance as the export', () => {
  const t = read('duofs@.service');
  expect(values(t, 'Type')).toEqual(['notify']);
  expect(values(t, 'NotifyAccess')).toEqual(['main']);
  expect(values(t, 'ExecStart')[0]).toMatch(/^\/usr\/bin\/duofs serve --shared-dir \$\{DUOFS_SHARED_DIR\} /);
  expect(values(t, 'Environment')).toEqual(['DUOFS_SHARED_DIR=/srv/duofs/%i']);
  // duofs makes these namespaces itself (--sandbox namespace): a RestrictNamespaces= without them breaks it
  expect(values(t, 'RestrictNamespaces')[0]!.split(' ').sort()).toEqual(['ipc', 'mnt', 'net', 'pid', 'uts']);
  expect(values(t, 'CapabilityBoundingSet')[0]).toContain('CAP_SYS_ADMIN');
});

test('the --config service reloads with SIGHUP and runs the file named by the instance, unconfined as --config must be', () => {
  const t = read('duofs-config@.service');
  expect(values(t, 'Type')).toEqual(['notify']);
  expect(values(t, 'ExecStart')[0]).toMatch(/^\/usr\/bin\/duofs serve --config \/etc\/duofs\/%i\.toml --sandbox none /);
  expect(values(t, 'ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
  expect(values(t, 'RuntimeDirectory')).toEqual(['duofs']);
});

const analyze = spawnSync('systemd-analyze', ['--version']).status === 0 ? test : test.skip;
analyze('systemd-analyze verify finds nothing wrong but the uninstalled /usr/bin/duofs', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-units-'));
  try {
    const units = ['duofs@.service', 'duofs@.socket', 'duofs-9p@.socket', 'duofs-config@.service'];
    for (const u of units) fs.copyFileSync(path.join(dir, u), path.join(tmp, u));
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...units.map((u) => path.join(tmp, u.replace('@.', '@share.')))], {
      cwd: tmp,
      encoding: 'utf8',
      env: { ...process.env, SYSTEMD_UNIT_PATH: `${tmp}:`, SYSTEMD_LOG_COLOR: '0' },
    });
    const complaints = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() && !/Command \/usr\/bin\/duofs is not executable/.test(l));
    expect(complaints).toEqual([]);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
