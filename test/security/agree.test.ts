// One rule for stored metadata: it must agree with the host object it
// describes (security/agree.ts), used by the server's mapped models and by
// `duofs convert` alike. A stored mode whose file type is no file type at all
// must not reach a guest: its kernel cannot show such an inode.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { jest } from '@jest/globals';
import { metadataMisfit } from '../../security/agree.js';
import { startDaemon, type Daemon } from '../support/daemon.js';

jest.setTimeout(60_000);

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFIFO = 0o010000;
const S_IFCHR = 0o020000;
const NO_TYPE = 0o030000; // between S_IFCHR and S_IFDIR: no file type

test('the rule: a host regular file may be any type but a directory, others only their own', () => {
  expect(metadataMisfit(S_IFREG, S_IFLNK | 0o777)).toBeUndefined();
  expect(metadataMisfit(S_IFREG, S_IFCHR | 0o644)).toBeUndefined();
  expect(metadataMisfit(S_IFREG, S_IFDIR | 0o755)).toMatch(/says directory but the host file is a regular file/);
  expect(metadataMisfit(S_IFDIR, S_IFDIR | 0o755)).toBeUndefined();
  expect(metadataMisfit(S_IFDIR, S_IFREG | 0o644)).toMatch(/says regular but the host file is a directory/);
  expect(metadataMisfit(S_IFIFO, S_IFIFO | 0o644)).toBeUndefined();
  expect(metadataMisfit(S_IFIFO, S_IFREG | 0o644)).toMatch(/says regular but the host file is a fifo/);
  expect(metadataMisfit(S_IFREG, 0o644)).toMatch(/has no valid file type/);
  expect(metadataMisfit(S_IFREG, NO_TYPE | 0o644)).toMatch(/mode 030644 has no valid file type/);
});

describe('a stored mode with no valid file type shows the host values', () => {
  let tmp: string;
  let daemon: Daemon | undefined;

  beforeAll(() => {
    try {
      execFileSync('setfattr', ['--version'], { stdio: 'ignore' });
    } catch {
      execFileSync('apt-get', ['install', '-y', '-qq', 'attr'], { stdio: 'ignore' });
    }
  });

  beforeEach(() => {
    // Not under /tmp: user.* xattrs need a filesystem that keeps them.
    tmp = fs.mkdtempSync(path.join('/var/tmp', 'duofs-agree-'));
  });

  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function serve(model: string, exportDir: string, mnt: string): Promise<void> {
    daemon = await startDaemon(['--shared-dir', exportDir, '--security-model', model, '--fuse-mount', mnt, '--log-level', 'warn'], { mount: mnt });
  }

  async function expectLog(re: RegExp): Promise<void> {
    const end = Date.now() + 3000;
    while (!re.test(daemon!.stderr()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(daemon!.stderr()).toMatch(re);
  }

  test.each(['mapped-xattr', 'mapped-file'])('%s', async (model) => {
    const exportDir = path.join(tmp, 'export');
    const mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(exportDir);
    fs.mkdirSync(mnt);
    fs.writeFileSync(path.join(exportDir, 'notype'), 'data');
    fs.chmodSync(path.join(exportDir, 'notype'), 0o640);
    const mode = NO_TYPE | 0o755;
    if (model === 'mapped-xattr') {
      const le = Buffer.alloc(4);
      le.writeUInt32LE(mode);
      execFileSync('setfattr', ['-n', 'user.virtfs.mode', '-v', `0x${le.toString('hex')}`, path.join(exportDir, 'notype')]);
    } else {
      fs.mkdirSync(path.join(exportDir, '.virtfs_metadata'));
      fs.writeFileSync(path.join(exportDir, '.virtfs_metadata', 'notype'), `virtfs.mode=${mode}\n`);
    }
    await serve(model, exportDir, mnt);
    const st = fs.statSync(path.join(mnt, 'notype'));
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o640);
    expect(fs.readFileSync(path.join(mnt, 'notype'), 'utf8')).toBe('data');
    await expectLog(/unusable security-model metadata.*no valid file type|no valid file type.*unusable security-model metadata/);
  });
});
