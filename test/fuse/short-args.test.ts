// A request one byte shorter than its opcode's struct (linux/fuse.h) gets
// EINVAL and one log line naming the operation and the field that ran
// short, from the wire codec's ArgReader; never a RangeError (the suite
// fails on any "failed unexpectedly" line) and never a served request.
import { describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import { OP, ROOT, errnoOf } from './client.js';
import { useFuse } from './fixture.js';
import { fieldsOf, sizeOf } from './layout.js';
import { FUSE_COMPAT_SETXATTR_IN_SIZE } from '../../protocols/fuse/constants.js';

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

describe("a request one byte short of its opcode's arguments", () => {
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
      const lines = fx.lines
        .slice(before)
        .filter((l) => l.level >= 40)
        .map((l) => l.msg);
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
    const lines = fx.lines
      .slice(before)
      .filter((l) => l.level >= 40)
      .map((l) => l.msg);
    expect(lines.filter((m) => m.includes('FUSE FORGET fuse_forget_in.nlookup'))).toHaveLength(1);
    expect(lines.filter((m) => m.includes('FUSE BATCH_FORGET fuse_batch_forget_in.dummy'))).toHaveLength(1);
  });
});

// The same for every truncation, with the structs taken from linux/fuse.h
// (test/fuse/layout.ts) rather than written here: a body of n bytes, for
// every n short of the struct, is EINVAL naming the first field that does
// not fit. And every opcode the session serves is in this table or says
// why it has no fixed struct, so a new handler cannot skip the check.

/** [op name, opcode, node id, the linux/fuse.h struct, its size when not sizeof (an older form)] */
type StructCase = [string, number, 'root' | 'file' | 'none', string, number?];

const structCases: StructCase[] = [
  ['GETATTR', OP.GETATTR, 'file', 'fuse_getattr_in'],
  ['SETATTR', OP.SETATTR, 'file', 'fuse_setattr_in'],
  ['MKNOD', OP.MKNOD, 'root', 'fuse_mknod_in'],
  ['MKDIR', OP.MKDIR, 'root', 'fuse_mkdir_in'],
  ['RENAME', OP.RENAME, 'root', 'fuse_rename_in'],
  ['RENAME2', OP.RENAME2, 'root', 'fuse_rename2_in'],
  ['LINK', OP.LINK, 'root', 'fuse_link_in'],
  ['OPEN', OP.OPEN, 'file', 'fuse_open_in'],
  ['OPENDIR', OP.OPENDIR, 'root', 'fuse_open_in'],
  ['CREATE', OP.CREATE, 'root', 'fuse_create_in'],
  ['TMPFILE', OP.TMPFILE, 'root', 'fuse_create_in'],
  ['READ', OP.READ, 'none', 'fuse_read_in'],
  ['READDIR', OP.READDIR, 'none', 'fuse_read_in'],
  ['READDIRPLUS', OP.READDIRPLUS, 'none', 'fuse_read_in'],
  ['WRITE', OP.WRITE, 'none', 'fuse_write_in'],
  ['RELEASE', OP.RELEASE, 'none', 'fuse_release_in'],
  ['RELEASEDIR', OP.RELEASEDIR, 'none', 'fuse_release_in'],
  ['FLUSH', OP.FLUSH, 'none', 'fuse_flush_in'],
  ['FSYNC', OP.FSYNC, 'none', 'fuse_fsync_in'],
  ['FSYNCDIR', OP.FSYNCDIR, 'none', 'fuse_fsync_in'],
  // duofs does not ask for SETXATTR_EXT: the kernel sends the 8-byte form.
  ['SETXATTR', OP.SETXATTR, 'file', 'fuse_setxattr_in', FUSE_COMPAT_SETXATTR_IN_SIZE],
  ['GETXATTR', OP.GETXATTR, 'file', 'fuse_getxattr_in'],
  ['LISTXATTR', OP.LISTXATTR, 'file', 'fuse_getxattr_in'],
  ['ACCESS', OP.ACCESS, 'file', 'fuse_access_in'],
  ['GETLK', OP.GETLK, 'none', 'fuse_lk_in'],
  ['SETLK', OP.SETLK, 'none', 'fuse_lk_in'],
  ['SETLKW', OP.SETLKW, 'none', 'fuse_lk_in'],
  ['INTERRUPT', OP.INTERRUPT, 'none', 'fuse_interrupt_in'],
  ['FALLOCATE', OP.FALLOCATE, 'none', 'fuse_fallocate_in'],
  ['LSEEK', OP.LSEEK, 'none', 'fuse_lseek_in'],
  ['COPY_FILE_RANGE', OP.COPY_FILE_RANGE, 'none', 'fuse_copy_file_range_in'],
  ['SYNCFS', OP.SYNCFS, 'root', 'fuse_syncfs_in'],
  ['STATX', OP.STATX, 'file', 'fuse_statx_in'],
];

/** Served opcodes with no fixed struct to cut, and why. */
const noStruct: Record<string, string> = {
  LOOKUP: 'a name only (its missing NUL is checked above)',
  UNLINK: 'a name only',
  RMDIR: 'a name only',
  SYMLINK: 'two names only',
  REMOVEXATTR: 'a name only',
  READLINK: 'no arguments',
  STATFS: 'no arguments',
  DESTROY: 'no arguments',
  INIT: 'fuse_init_in grew in 7.36; the 16 bytes every kernel sends are checked above',
  FORGET: 'no reply; checked below',
  BATCH_FORGET: 'no reply; checked below',
};

/** The field a body of `n` bytes runs short in: the first that does not fit. */
const shortField = (struct: string, n: number): string => {
  const f = fieldsOf(struct).find((x) => x.offset + { u8: 1, u16: 2, u32: 4, i32: 4, u64: 8, i64: 8 }[x.type] > n);
  return `${struct}.${f!.name}`;
};

describe('every truncation of every fixed argument struct (linux/fuse.h)', () => {
  test('is EINVAL with one log line naming the first field that does not fit', async () => {
    const { c, fx } = ctx;
    const made = await c.create(ROOT, 'short-structs', 2, 0o100644);
    await c.release(made.open.fh);
    const nodes = { root: ROOT, file: made.entry.nodeid, none: 0n };
    const bad: string[] = [];
    let sent = 0;
    for (const [op, opcode, node, struct, size] of structCases) {
      for (let n = 0; n < (size ?? sizeOf(struct)); n++) {
        const before = fx.lines.length;
        const errno = await errnoOf(c.call(opcode, n ? [Buffer.alloc(n)] : [], { nodeid: nodes[node] }));
        const lines = fx.lines
          .slice(before)
          .filter((l) => l.level >= 40)
          .map((l) => l.msg);
        const want = `FUSE ${op} ${shortField(struct, n)}:`;
        sent++;
        if (errno !== 'EINVAL' || lines.filter((m) => m.includes(want)).length !== 1 || lines.length !== 1) {
          bad.push(`${op} with ${n} bytes: ${errno}, log: ${lines.join(' | ') || '(none)'} (want EINVAL and "${want}")`);
        }
      }
    }
    expect(bad).toEqual([]);
    expect(sent).toBeGreaterThanOrEqual(800); // the table is there and walked
    expect(fs.readdirSync(fx.dir).sort()).toEqual(['short-structs', ...(fs.existsSync(fx.p('short-target')) ? ['short-target'] : [])].sort());
  });

  test('FORGET and BATCH_FORGET: every truncation is logged naming the field, and nothing is forgotten', async () => {
    const { c, fx } = ctx;
    const e = await c.lookup(ROOT, 'short-structs');
    for (const [op, opcode, struct] of [
      ['FORGET', OP.FORGET, 'fuse_forget_in'],
      ['BATCH_FORGET', OP.BATCH_FORGET, 'fuse_batch_forget_in'],
    ] as const) {
      for (let n = 0; n < sizeOf(struct); n++) {
        const before = fx.lines.length;
        expect(await c.noReply(opcode, n ? [Buffer.alloc(n, 0xff)] : [], { nodeid: e.nodeid })).toBe(0);
        const lines = fx.lines
          .slice(before)
          .filter((l) => l.level >= 40)
          .map((l) => l.msg);
        expect({ op, n, lines: lines.filter((m) => m.includes(`FUSE ${op} ${shortField(struct, n)}:`)).length }).toEqual({ op, n, lines: 1 });
      }
    }
    // The lookup reference is still held: the node id still answers.
    expect((await c.getattr(e.nodeid)).attr.ino).toBeGreaterThan(0n);
  });

  test('every opcode the session serves has a row above or a reason here; the rest are ENOSYS', async () => {
    const { c } = ctx;
    const covered = new Set([...structCases.map(([op]) => op), ...Object.keys(noStruct)]);
    const unserved: string[] = [];
    for (const [name, opcode] of Object.entries(OP)) {
      if (covered.has(name)) continue;
      const errno = await errnoOf(c.call(opcode, [], { nodeid: ROOT }));
      if (errno !== 'ENOSYS') unserved.push(`${name}: ${errno} (served, but in no row)`);
    }
    expect(unserved).toEqual([]);
  });
});
