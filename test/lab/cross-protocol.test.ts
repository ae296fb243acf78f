// One duofs process serves one export over virtio-fs and virtio-9p at once
// (issue 5); one guest mounts both and runs the cross-protocol scenario
// (test/lab/guest/scenarios/xproto-coherence.py): data written and fsynced
// through one mount is read through the other, POSIX locks and flock()s
// taken through one exclude the other, rename and unlink through one leave handles open
// through the other working, and both show the same inode numbers.
//   duofs serve --shared-dir T --virtiofs-socket S1 --tag xf --9p-vhost-socket S2 --9p-tag x9 --xattr
// The scenario's header explains which guest caches each check relies on.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { lstatSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk, freshTree, runGuest } from './guest.js';
import { startDuofs } from './daemons.js';
import { labAvailable, makeWorkDir, removeWorkDir, tail } from './lab.js';

const GUEST_LIMIT_MS = 240_000;
const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

/** What the scenario must print. */
const EXPECTED: Record<string, string> = {
  'setup.9p_sees_vfs_mkdir': 'True',
  // data: write + fsync through one mount, read through the other
  'data.vfs_write_9p_read': 'same',
  'data.9p_write_vfs_read': 'same',
  'data.vfs_overwrite_9p_open_fd': 'same',
  'data.9p_overwrite_vfs_reopen': 'same',
  'data.9p_overwrite_vfs_open_fd_after_attr_timeout': 'same',
  'data.9p_append_vfs_size': '4',
  'data.9p_append_vfs_tail': 'tail',
  'data.vfs_truncate_9p_size': '1000',
  'data.vfs_mmap_9p_read': 'MMAP',
  // locks: one process holds a write lock on the whole file through one mount, another process tries through the other
  'lock.vfs_getlk_no_lock': 'un,start=0,len=0',
  'lock.9p_getlk_no_lock': 'un,start=0,len=0',
  'lock.9p_holds_vfs.trylock': 'EAGAIN',
  'lock.9p_holds_vfs.getlk': 'wr,start=0,len=0',
  'lock.9p_holds_vfs.read_lock': 'EAGAIN',
  'lock.9p_holds_vfs.setlkw': 'granted_after_release,waited',
  'lock.vfs_holds_9p.trylock': 'EAGAIN',
  'lock.vfs_holds_9p.getlk': 'wr,start=0,len=0',
  'lock.vfs_holds_9p.read_lock': 'EAGAIN',
  'lock.vfs_holds_9p.setlkw': 'granted_after_release,waited',
  'lock.range_9p_0_100_vfs_100_200': 'ok',
  'lock.range_9p_0_100_vfs_99_1': 'EAGAIN',
  // flock(): the guest's 9p client sends it as a whole-file POSIX lock, virtio-fs as a FUSE flock
  'flock.9p_holds_vfs.trylock': 'EAGAIN',
  'flock.9p_holds_vfs.shared': 'EAGAIN',
  'flock.9p_holds_vfs.blocking': 'granted_after_release,waited',
  'flock.vfs_holds_9p.trylock': 'EAGAIN',
  'flock.vfs_holds_9p.shared': 'EAGAIN',
  'flock.vfs_holds_9p.blocking': 'granted_after_release,waited',
  // rename / unlink through one mount while a handle is open through the other
  'rename.9p_renames_vfs_fd_read': 'before',
  'rename.9p_renames_vfs_fd_write': 'ok',
  'rename.9p_renames_vfs_new_name_reads': 'after!',
  'rename.9p_renames_vfs_old_name': 'ENOENT',
  'rename.9p_renames_vfs_new_name_same_inode': 'True',
  'rename.vfs_renames_9p_fd_read': 'before',
  'rename.vfs_renames_9p_fd_write': 'ok',
  'rename.vfs_renames_9p_new_name_reads': 'after!',
  'rename.vfs_renames_9p_listing': 'none',
  'rename.vfs_renames_9p_fstat_size': '6',
  'rename.9p_replaces_vfs_fd_reads_old': 'old_file',
  'rename.9p_replaces_vfs_reopen_reads_new': 'new_file',
  'unlink.9p_unlinks_9p_name': 'ENOENT',
  'unlink.9p_unlinks_vfs_fd_read': 'unlinked_data',
  'unlink.9p_unlinks_vfs_fd_write': 'UNLINKED_data',
  'unlink.9p_unlinks_vfs_fd_ftruncate': '4',
  'unlink.9p_unlinks_vfs_fstat_nlink': '0',
  'unlink.9p_unlinks_vfs_name': 'ENOENT',
  'unlink.vfs_unlinks_vfs_name': 'ENOENT',
  'unlink.vfs_unlinks_9p_listing': 'none',
  'unlink.vfs_unlinks_9p_fd_read': 'unlinked_data',
  'unlink.vfs_unlinks_9p_fd_write': 'UNLINKED_data',
  'unlink.vfs_unlinks_9p_fstat_nlink': '0',
  // inode numbers: the guest's 9p client shows qid.path + 2 (v9fs_qid2ino), virtio-fs attr.ino as is
  'ino.i-file': 'qid+2',
  'ino.i-dir': 'qid+2',
  'ino.i-link': 'qid+2',
  'ino.i-fifo': 'qid+2',
  'ino.mount_root': 'qid+2',
  'ino.fstat_open_9p_vs_vfs': 'qid+2',
  'ino.after_rename': 'qid+2',
  'ino.hardlink_through_9p_seen_by_vfs': 'same,nlink=2',
  // metadata through one mount, seen through the other
  'meta.readdir_vfs_lists_9p_names': 'i-dir,i-fifo,i-file,i-hard,i-link',
  'meta.readdir_9p_lists_vfs_names': 'i-dir,i-fifo,i-file,i-hard,i-link',
  'meta.9p_chmod_chown_vfs_sees': '640,1234:5678',
  'meta.vfs_chmod_9p_sees': '1750',
  'meta.vfs_utime_9p_sees': '1000000000000,2000000000000',
  'meta.9p_setxattr_vfs_gets': 'nine',
  'meta.vfs_setxattr_9p_gets': 'fuse',
};

d('one duofs, one export, virtio-fs and virtio-9p in one guest', () => {
  test(
    'the cross-protocol scenario passes',
    async () => {
      if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
      const work = makeWorkDir('xproto');
      const tree = freshTree(work, 'export');
      mkdirSync(join(work, 'sock'));
      const fsSock = join(work, 'sock', 'xf.sock');
      const p9Sock = join(work, 'sock', 'x9.sock');
      const duofs = await startDuofs(
        [
          'serve',
          '--shared-dir',
          tree,
          '--virtiofs-socket',
          fsSock,
          '--tag',
          'xf',
          '--9p-vhost-socket',
          p9Sock,
          '--9p-tag',
          'x9',
          '--xattr',
          '--log-level',
          'info',
        ],
        [fsSock, p9Sock],
      );
      try {
        const run = await runGuest({
          label: 'xproto',
          workDir: work,
          timeoutMs: GUEST_LIMIT_MS,
          scenario: 'xproto-coherence.py',
          scenarioTimeoutSec: 180,
          // the scenario runs once, on the virtio-fs mount, and is given the 9p mount as its second argument
          scenarioOn: ['f'],
          scenarioArgs: ['/mnt/p'],
          mounts: [
            { kind: 'vhost-user-fs', name: 'f', socket: fsSock, tag: 'xf' },
            // locktimeout=1: a blocked F_SETLKW through 9p is retried every second (9P2000.L has no wake-up)
            { kind: 'vhost-user-9p', name: 'p', socket: p9Sock, tag: 'x9', msize: 512000, mountOptions: 'locktimeout=1' },
          ],
        });
        const section = run.sections.find((s) => s.mount === 'f');
        if (!section) throw new Error(`no scenario output\n${tail(run.console, 40)}`);
        process.stderr.write(
          `lab: cross-protocol: ${section.checks.size} checks, ${section.guestSeconds} s guest time, wall ${(run.wallMs / 1000).toFixed(1)} s\n`,
        );
        expectScenarioOk(run);
        expect(section.duplicates).toEqual([]);
        // Host-side facts join the guest's checks, so that one failure shows every difference.
        const hostIno = lstatSync(join(tree, 'xproto', 'i-file')).ino;
        const got = {
          ...Object.fromEntries([...section.checks].filter(([k]) => !k.startsWith('ino.i-file.'))),
          // the numbers are the host's: virtio-fs st_ino is the host inode number, 9p's is qid.path + 2
          'host.ino_vfs': String(Number(section.checks.get('ino.i-file.vfs')) === hostIno),
          'host.ino_9p': String(Number(section.checks.get('ino.i-file.9p')) === hostIno + 2),
          // what the guest wrote through open handles is on the host
          'host.r1-renamed': readFileSync(join(tree, 'xproto', 'r1-renamed'), 'utf8'),
          'host.r2-renamed': readFileSync(join(tree, 'xproto', 'sub', 'r2-renamed'), 'utf8'),
          'host.unlinked_gone':
            readdirSync(join(tree, 'xproto'))
              .filter((n) => n.startsWith('u'))
              .join(',') || 'none',
        };
        expect(got).toEqual({
          ...EXPECTED,
          'host.ino_vfs': 'true',
          'host.ino_9p': 'true',
          'host.r1-renamed': 'after!',
          'host.r2-renamed': 'after!',
          'host.unlinked_gone': 'none',
        });
        expect(duofs.process.exitCode).toBeNull();
      } catch (e) {
        if (e instanceof Error) e.message += `\n--- duofs output (tail) ---\n${tail(duofs.output(), 30)}`;
        throw e;
      } finally {
        await duofs.stop();
        removeWorkDir(work);
      }
    },
    GUEST_LIMIT_MS + 30_000,
  );
});
