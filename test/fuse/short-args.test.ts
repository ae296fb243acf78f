// A request one byte shorter than its opcode's struct (linux/fuse.h) gets
// EINVAL and one log line naming the operation and the field that ran
// short, from the wire codec's ArgReader; never a RangeError (the suite
// fails on any "failed unexpectedly" line) and never a served request.
import { describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { OP, ROOT, errnoOf } from './client.js';
import { useFuse } from './fixture.js';

const ctx = useFuse({ logLimits: false });

/** [op name, opcode, node id, full argument bytes, the field that is cut] (`file` = a regular file's node id) */
type Case = [string, number, 'root' | 'file' | 'none', Buffer, string];

const z = (n: number): Buffer => Buffer.alloc(n);
const name = (s: string): Buffer => Buffer.from(`${s}\0`);

const cases: Case[] = [
  ['INIT', OP.INIT, 'none', z(16), 'flags'],
  ['SETATTR', OP.SETATTR, 'file', z(88), 'fuse_setattr_in.unused5'],
  ['MKNOD', OP.MKNOD, 'root', z(16), 'fuse_mknod_in.padding'],
  ['MKDIR', OP.MKDIR, 'root', z(8), 'fuse_mkdir_in.umask'],
  ['RENAME', OP.RENAME, 'root', z(8), 'fuse_rename_in.newdir'],
  ['RENAME2', OP.RENAME2, 'root', z(16), 'fuse_rename2_in.padding'],
  ['LINK', OP.LINK, 'root', z(8), 'fuse_link_in.oldnodeid'],
  ['OPEN', OP.OPEN, 'file', z(8), 'fuse_open_in.open_flags'],
  ['CREATE', OP.CREATE, 'root', z(16), 'fuse_create_in.open_flags'],
  ['TMPFILE', OP.TMPFILE, 'root', z(16), 'fuse_create_in.open_flags'],
  ['READ', OP.READ, 'none', z(40), 'fuse_read_in.padding'],
  ['WRITE', OP.WRITE, 'none', z(40), 'fuse_write_in.padding'],
  ['RELEASE', OP.RELEASE, 'none', z(24), 'fuse_release_in.lock_owner'],
  ['RELEASEDIR', OP.RELEASEDIR, 'none', z(24), 'fuse_release_in.lock_owner'],
  ['FLUSH', OP.FLUSH, 'none', z(24), 'fuse_flush_in.lock_owner'],
  ['FSYNC', OP.FSYNC, 'none', z(16), 'fuse_fsync_in.padding'],
  ['FSYNCDIR', OP.FSYNCDIR, 'none', z(16), 'fuse_fsync_in.padding'],
  ['FALLOCATE', OP.FALLOCATE, 'none', z(32), 'fuse_fallocate_in.padding'],
  ['LSEEK', OP.LSEEK, 'none', z(24), 'fuse_lseek_in.padding'],
  ['COPY_FILE_RANGE', OP.COPY_FILE_RANGE, 'none', z(56), 'fuse_copy_file_range_in.flags'],
  ['READDIR', OP.READDIR, 'none', z(24), 'fuse_read_in.read_flags'],
  ['READDIRPLUS', OP.READDIRPLUS, 'none', z(24), 'fuse_read_in.read_flags'],
  ['SETXATTR', OP.SETXATTR, 'file', z(8), 'fuse_setxattr_in.flags'],
  ['GETXATTR', OP.GETXATTR, 'file', z(8), 'fuse_getxattr_in.padding'],
  ['LISTXATTR', OP.LISTXATTR, 'file', z(8), 'fuse_getxattr_in.padding'],
  ['ACCESS', OP.ACCESS, 'file', z(8), 'fuse_access_in.padding'],
  ['GETLK', OP.GETLK, 'none', z(48), 'fuse_lk_in.padding'],
  ['SETLK', OP.SETLK, 'none', z(48), 'fuse_lk_in.padding'],
  ['SETLKW', OP.SETLKW, 'none', z(48), 'fuse_lk_in.padding'],
  ['STATX', OP.STATX, 'file', z(24), 'fuse_statx_in.sx_mask'],
  ['INTERRUPT', OP.INTERRUPT, 'none', z(8), 'fuse_interrupt_in.unique'],
  // Names: one byte short is the missing NUL.
  ['LOOKUP', OP.LOOKUP, 'root', name('x'), 'name'],
  ['UNLINK', OP.UNLINK, 'root', name('x'), 'name'],
  ['RMDIR', OP.RMDIR, 'root', name('x'), 'name'],
  ['SYMLINK', OP.SYMLINK, 'root', Buffer.concat([name('x'), name('t')]), 'target'],
  ['REMOVEXATTR', OP.REMOVEXATTR, 'file', name('user.x'), 'name'],
];

describe('a request one byte short of its opcode\'s arguments', () => {
  test('is EINVAL with a log line naming the operation and the field, for every opcode', async () => {
    const { c, fx } = ctx;
    fx.lines.length = 0;
    const made = await c.create(ROOT, 'short-target', 2, 0o100644);
    await c.release(made.open.fh);
    const nodes = { root: ROOT, file: made.entry.nodeid, none: 0n };
    const got: Record<string, string> = {};
    const want: Record<string, string> = {};
    for (const [op, opcode, node, full, field] of cases) {
      const before = fx.lines.length;
      const errno = await errnoOf(c.call(opcode, [full.subarray(0, full.length - 1)], { nodeid: nodes[node] }));
      const lines = fx.lines.slice(before).filter((l) => l.level >= 40).map((l) => l.msg);
      const named = lines.filter((m) => m.includes(`FUSE ${op} ${field}`));
      want[op] = `EINVAL, one line naming FUSE ${op} ${field}`;
      got[op] = errno === 'EINVAL' && named.length === 1 ? want[op] : `${errno}, log: ${lines.join(' | ') || '(none)'}`;
    }
    expect(got).toEqual(want);
    expect(fs.existsSync(fx.p('x'))).toBe(false);
  });

  test('FORGET and BATCH_FORGET (no reply) log the field too', async () => {
    const { c, fx } = ctx;
    const before = fx.lines.length;
    expect(await c.noReply(OP.FORGET, [z(7)], { nodeid: ROOT })).toBe(0);
    expect(await c.noReply(OP.BATCH_FORGET, [z(7)])).toBe(0);
    const lines = fx.lines.slice(before).filter((l) => l.level >= 40).map((l) => l.msg);
    expect(lines.filter((m) => m.includes('FUSE FORGET fuse_forget_in.nlookup'))).toHaveLength(1);
    expect(lines.filter((m) => m.includes('FUSE BATCH_FORGET fuse_batch_forget_in.dummy'))).toHaveLength(1);
  });
});
