// The FUSE reply encoders (protocols/fuse/wire.ts) against bytes built field
// by field from linux/fuse.h's own struct text (test/fuse/layout.ts), and
// every size constant against sizeof of its struct: a field at a wrong
// offset, a wrong width or a size off by one fails here, with the field named.
import { describe, expect, test } from '@jest/globals';
import * as C from '../../protocols/fuse/constants.js';
import {
  direntplusSize,
  direntSize,
  dtToMode,
  encodeDirent,
  encodeGetxattrOut,
  encodeInitOut,
  encodeLkOut,
  encodeLseekOut,
  encodeStatxOut,
  encodeWriteOut,
  entryOut,
  newDecodeDev,
  newEncodeDev,
  noEntryOut,
  type FuseAttr,
} from '../../protocols/fuse/wire.js';
import { makedev } from '../../src/sys/index.js';
import { build, offsetOf, sizeOf } from './layout.js';

/** Compares as hex, so a failure shows the bytes. */
const hex = (b: Buffer): string => b.toString('hex');

describe('size constants are sizeof their linux/fuse.h struct', () => {
  const sizes: [string, number, string][] = [
    ['IN_HEADER_SIZE', C.IN_HEADER_SIZE, 'fuse_in_header'],
    ['OUT_HEADER_SIZE', C.OUT_HEADER_SIZE, 'fuse_out_header'],
    ['ATTR_SIZE', C.ATTR_SIZE, 'fuse_attr'],
    ['ENTRY_OUT_SIZE', C.ENTRY_OUT_SIZE, 'fuse_entry_out'],
    ['ATTR_OUT_SIZE', C.ATTR_OUT_SIZE, 'fuse_attr_out'],
    ['OPEN_OUT_SIZE', C.OPEN_OUT_SIZE, 'fuse_open_out'],
    ['DIRENT_SIZE', C.DIRENT_SIZE, 'fuse_dirent'],
    ['DIRENTPLUS_SIZE', C.DIRENTPLUS_SIZE, 'fuse_direntplus'],
    ['WRITE_OUT_SIZE', C.WRITE_OUT_SIZE, 'fuse_write_out'],
    ['LSEEK_OUT_SIZE', C.LSEEK_OUT_SIZE, 'fuse_lseek_out'],
    ['GETXATTR_OUT_SIZE', C.GETXATTR_OUT_SIZE, 'fuse_getxattr_out'],
    ['FILE_LOCK_SIZE', C.FILE_LOCK_SIZE, 'fuse_file_lock'],
    ['LK_OUT_SIZE', C.LK_OUT_SIZE, 'fuse_lk_out'],
    ['INIT_OUT_SIZE', C.INIT_OUT_SIZE, 'fuse_init_out'],
    ['STATX_SIZE', C.STATX_SIZE, 'fuse_statx'],
    ['STATX_OUT_SIZE', C.STATX_OUT_SIZE, 'fuse_statx_out'],
    ['INIT_IN_SIZE', C.INIT_IN_SIZE, 'fuse_init_in'],
    ['FORGET_IN_SIZE', C.FORGET_IN_SIZE, 'fuse_forget_in'],
    ['BATCH_FORGET_IN_SIZE', C.BATCH_FORGET_IN_SIZE, 'fuse_batch_forget_in'],
    ['FORGET_ONE_SIZE', C.FORGET_ONE_SIZE, 'fuse_forget_one'],
    ['GETATTR_IN_SIZE', C.GETATTR_IN_SIZE, 'fuse_getattr_in'],
    ['STATX_IN_SIZE', C.STATX_IN_SIZE, 'fuse_statx_in'],
    ['SETATTR_IN_SIZE', C.SETATTR_IN_SIZE, 'fuse_setattr_in'],
    ['MKNOD_IN_SIZE', C.MKNOD_IN_SIZE, 'fuse_mknod_in'],
    ['MKDIR_IN_SIZE', C.MKDIR_IN_SIZE, 'fuse_mkdir_in'],
    ['RENAME_IN_SIZE', C.RENAME_IN_SIZE, 'fuse_rename_in'],
    ['RENAME2_IN_SIZE', C.RENAME2_IN_SIZE, 'fuse_rename2_in'],
    ['LINK_IN_SIZE', C.LINK_IN_SIZE, 'fuse_link_in'],
    ['OPEN_IN_SIZE', C.OPEN_IN_SIZE, 'fuse_open_in'],
    ['CREATE_IN_SIZE', C.CREATE_IN_SIZE, 'fuse_create_in'],
    ['READ_IN_SIZE', C.READ_IN_SIZE, 'fuse_read_in'],
    ['WRITE_IN_SIZE', C.WRITE_IN_SIZE, 'fuse_write_in'],
    ['RELEASE_IN_SIZE', C.RELEASE_IN_SIZE, 'fuse_release_in'],
    ['FLUSH_IN_SIZE', C.FLUSH_IN_SIZE, 'fuse_flush_in'],
    ['FSYNC_IN_SIZE', C.FSYNC_IN_SIZE, 'fuse_fsync_in'],
    ['SETXATTR_IN_SIZE', C.SETXATTR_IN_SIZE, 'fuse_setxattr_in'],
    ['GETXATTR_IN_SIZE', C.GETXATTR_IN_SIZE, 'fuse_getxattr_in'],
    ['ACCESS_IN_SIZE', C.ACCESS_IN_SIZE, 'fuse_access_in'],
    ['LK_IN_SIZE', C.LK_IN_SIZE, 'fuse_lk_in'],
    ['INTERRUPT_IN_SIZE', C.INTERRUPT_IN_SIZE, 'fuse_interrupt_in'],
    ['FALLOCATE_IN_SIZE', C.FALLOCATE_IN_SIZE, 'fuse_fallocate_in'],
    ['LSEEK_IN_SIZE', C.LSEEK_IN_SIZE, 'fuse_lseek_in'],
    ['COPY_FILE_RANGE_IN_SIZE', C.COPY_FILE_RANGE_IN_SIZE, 'fuse_copy_file_range_in'],
    ['SYNCFS_IN_SIZE', C.SYNCFS_IN_SIZE, 'fuse_syncfs_in'],
    ['EXT_HEADER_SIZE', C.EXT_HEADER_SIZE, 'fuse_ext_header'],
    ['SUPP_GROUPS_SIZE', C.SUPP_GROUPS_SIZE, 'fuse_supp_groups'],
  ];
  test.each(sizes)('%s', (_name, value, struct) => {
    expect({ [struct]: value }).toEqual({ [struct]: sizeOf(struct) });
  });

  test('fuse_setxattr_in without SETXATTR_EXT ends where setxattr_flags begins (fuse.h: 8)', () => {
    expect(C.FUSE_COMPAT_SETXATTR_IN_SIZE).toBe(offsetOf('fuse_setxattr_in', 'setxattr_flags'));
  });

  test('the compat fuse_init_out sizes end where 7.5 and 7.23 added fields (fuse.h: 8 and 24)', () => {
    expect([C.FUSE_COMPAT_INIT_OUT_SIZE, C.FUSE_COMPAT_22_INIT_OUT_SIZE]).toEqual([
      offsetOf('fuse_init_out', 'max_readahead'),
      offsetOf('fuse_init_out', 'time_gran'),
    ]);
  });
});

describe('small replies', () => {
  test('fuse_write_out', () => {
    expect(hex(encodeWriteOut(0x12345678))).toBe(hex(build('fuse_write_out', { size: 0x12345678 })));
    expect(hex(encodeWriteOut(0))).toBe(hex(build('fuse_write_out', {})));
  });

  test('fuse_lseek_out', () => {
    expect(hex(encodeLseekOut(0x1_0000_2000))).toBe(hex(build('fuse_lseek_out', { offset: 0x1_0000_2000 })));
    expect(hex(encodeLseekOut(2n ** 62n + 1n))).toBe(hex(build('fuse_lseek_out', { offset: 2n ** 62n + 1n })));
  });

  test('fuse_getxattr_out', () => {
    expect(hex(encodeGetxattrOut(65536))).toBe(hex(build('fuse_getxattr_out', { size: 65536 })));
  });
});

describe('locks', () => {
  test('fuse_lk_out: a conflicting lock to the end of the file', () => {
    const lk = { start: 0x1122334455n, end: C.OFFSET_MAX, type: 1, pid: 4242 };
    expect(hex(encodeLkOut(lk))).toBe(hex(build('fuse_lk_out', { 'lk.start': lk.start, 'lk.end': lk.end, 'lk.type': 1, 'lk.pid': 4242 })));
  });

  test('fuse_lk_out: no conflict (F_UNLCK, pid 0)', () => {
    expect(hex(encodeLkOut({ start: 10n, end: 20n, type: 2, pid: 0 }))).toBe(
      hex(build('fuse_lk_out', { 'lk.start': 10, 'lk.end': 20, 'lk.type': 2 })),
    );
  });
});

describe('fuse_init_out', () => {
  const init = {
    major: 7,
    minor: 39,
    maxReadahead: 0x20000,
    flags: (1n << 34n) | (1n << 30n) | 0x8000_0001n,
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: 0x100000,
    timeGran: 1,
    maxPages: 256,
    mapAlignment: 12,
  };
  const want = build('fuse_init_out', {
    major: 7,
    minor: 39,
    max_readahead: 0x20000,
    flags: 0xc000_0001,
    flags2: 0x4,
    max_background: 64,
    congestion_threshold: 48,
    max_write: 0x100000,
    time_gran: 1,
    max_pages: 256,
    map_alignment: 12,
  });

  test('every field where fuse.h puts it; the 64 flags split into flags and flags2', () => {
    expect(hex(encodeInitOut(init))).toBe(hex(want));
  });

  test('fields left out are zero (the 8-byte answer to a newer major is major and minor alone)', () => {
    expect(hex(encodeInitOut({ major: 7, minor: 39 }))).toBe(hex(build('fuse_init_out', { major: 7, minor: 39 })));
    expect(hex(encodeInitOut({ major: 7, minor: 39 }).subarray(0, C.FUSE_COMPAT_INIT_OUT_SIZE))).toBe('0700000027000000');
  });
});

describe('fuse_statx_out', () => {
  const x = {
    mask: 0xfff,
    blksize: 4096,
    attributes: 0x20n,
    nlink: 3,
    uid: 0xfffffffe,
    gid: 5,
    mode: 0o120777,
    ino: 0x1122334455667788n,
    size: 2n ** 40n + 1n,
    blocks: 17,
    attributesMask: 0x30n,
    atime: { sec: -5, nsec: 1 },
    btime: { sec: 2n ** 33n, nsec: 2 },
    ctime: { sec: 7, nsec: 999_999_999 },
    mtime: { sec: 8, nsec: 4 },
    rdevMajor: 259,
    rdevMinor: 0x12345,
    devMajor: 8,
    devMinor: 1,
  };
  const time = (f: string, t: { sec: number | bigint; nsec: number }): Record<string, number | bigint> => ({
    [`stat.${f}.tv_sec`]: BigInt(t.sec),
    [`stat.${f}.tv_nsec`]: t.nsec,
  });

  test('every field of fuse_statx where fuse.h 7.39 puts it, after the attribute timeout', () => {
    const want = build('fuse_statx_out', {
      attr_valid: 86400,
      'stat.mask': 0xfff,
      'stat.blksize': 4096,
      'stat.attributes': 0x20n,
      'stat.nlink': 3,
      'stat.uid': 0xfffffffe,
      'stat.gid': 5,
      'stat.mode': 0o120777,
      'stat.ino': x.ino,
      'stat.size': x.size,
      'stat.blocks': 17,
      'stat.attributes_mask': 0x30n,
      ...time('atime', x.atime),
      ...time('btime', x.btime),
      ...time('ctime', x.ctime),
      ...time('mtime', x.mtime),
      'stat.rdev_major': 259,
      'stat.rdev_minor': 0x12345,
      'stat.dev_major': 8,
      'stat.dev_minor': 1,
    });
    expect(hex(encodeStatxOut(86400, x))).toBe(hex(want));
  });

  test('a time left out (no birth time) and the optional fields stay zero', () => {
    const { btime: _b, attributes: _a, attributesMask: _m, devMajor: _j, devMinor: _n, ...rest } = x;
    const want = build('fuse_statx_out', {
      'stat.mask': 0xfff,
      'stat.blksize': 4096,
      'stat.nlink': 3,
      'stat.uid': 0xfffffffe,
      'stat.gid': 5,
      'stat.mode': 0o120777,
      'stat.ino': x.ino,
      'stat.size': x.size,
      'stat.blocks': 17,
      ...time('atime', x.atime),
      ...time('ctime', x.ctime),
      ...time('mtime', x.mtime),
      'stat.rdev_major': 259,
      'stat.rdev_minor': 0x12345,
    });
    expect(hex(encodeStatxOut(0, rest))).toBe(hex(want));
  });
});

describe('fuse_dirent and fuse_direntplus', () => {
  /** A name and its zero padding up to FUSE_DIRENT_ALIGN, as the kernel reads it after the fixed part. */
  const padded = (name: string, fixed: number): Buffer => {
    const n = Buffer.from(name);
    return Buffer.concat([n, Buffer.alloc(((fixed + n.length + 7) & ~7) - fixed - n.length)]);
  };
  const attr: FuseAttr = {
    ino: 0x99n,
    size: 12,
    blocks: 8,
    atime: { sec: 1, nsec: 2 },
    mtime: { sec: 3, nsec: 4 },
    ctime: { sec: 5, nsec: 6 },
    mode: 0o100644,
    nlink: 1,
    uid: 7,
    gid: 8,
    rdev: 0,
    blksize: 4096,
    flags: 0,
  };

  test('FUSE_DIRENT_SIZE and FUSE_DIRENTPLUS_SIZE: the fixed part plus the name, to 64 bits', () => {
    const sizes = [0, 1, 7, 8, 9, 255].map((n) => [direntSize(n), direntplusSize(n)]);
    const want = [0, 1, 7, 8, 9, 255].map((n) => [sizeOf('fuse_dirent'), sizeOf('fuse_direntplus')].map((f) => Math.ceil((f + n) / 8) * 8));
    expect(sizes).toEqual(want);
  });

  test('a dirent, its name and zeroed padding; nothing written past the record', () => {
    const b = Buffer.alloc(64, 0xff);
    const n = encodeDirent(b, 0, { ino: 0x1122334455667788n, off: 3n, type: 8, name: Buffer.from('abc') });
    const want = build('fuse_dirent', { ino: 0x1122334455667788n, off: 3, namelen: 3, type: 8 }, padded('abc', 24));
    expect(n).toBe(want.length);
    expect(hex(b.subarray(0, n))).toBe(hex(want));
    expect(b.subarray(n).every((x) => x === 0xff)).toBe(true);
  });

  test('a name that fills the record exactly, and a negative d_off as the u64 the kernel reads', () => {
    const b = Buffer.alloc(32, 0xff);
    expect(encodeDirent(b, 0, { ino: 1n, off: -1n, type: 4, name: Buffer.from('8 bytes!') })).toBe(32);
    expect(hex(b)).toBe(hex(build('fuse_dirent', { ino: 1, off: 2n ** 64n - 1n, namelen: 8, type: 4 }, Buffer.from('8 bytes!'))));
  });

  test('direntplus of "..": node id 0 and nothing but the file type in attr.mode', () => {
    const b = Buffer.alloc(200, 0xff);
    noEntryOut(dtToMode(4), b, 8);
    const n = encodeDirent(b, 8 + C.ENTRY_OUT_SIZE, { ino: 2n, off: 9n, type: 4, name: Buffer.from('..') });
    const want = build(
      'fuse_direntplus',
      {
        'entry_out.attr.mode': 0o040000,
        'dirent.ino': 2,
        'dirent.off': 9,
        'dirent.namelen': 2,
        'dirent.type': 4,
      },
      padded('..', 152),
    );
    expect(C.ENTRY_OUT_SIZE + n).toBe(direntplusSize(2));
    expect(hex(b.subarray(8, 8 + direntplusSize(2)))).toBe(hex(want));
  });

  test('direntplus of a file: its fuse_entry_out, then the dirent', () => {
    const b = Buffer.alloc(direntplusSize(4));
    entryOut(42n, { entry: 1, attr: 2 }, attr, b, 0);
    encodeDirent(b, C.ENTRY_OUT_SIZE, { ino: 0x99n, off: 10n, type: 8, name: Buffer.from('file') });
    const want = build(
      'fuse_direntplus',
      {
        'entry_out.nodeid': 42,
        'entry_out.entry_valid': 1,
        'entry_out.attr_valid': 2,
        'entry_out.attr.ino': 0x99,
        'entry_out.attr.size': 12,
        'entry_out.attr.blocks': 8,
        'entry_out.attr.atime': 1,
        'entry_out.attr.mtime': 3,
        'entry_out.attr.ctime': 5,
        'entry_out.attr.atimensec': 2,
        'entry_out.attr.mtimensec': 4,
        'entry_out.attr.ctimensec': 6,
        'entry_out.attr.mode': 0o100644,
        'entry_out.attr.nlink': 1,
        'entry_out.attr.uid': 7,
        'entry_out.attr.gid': 8,
        'entry_out.attr.blksize': 4096,
        'dirent.ino': 0x99,
        'dirent.off': 10,
        'dirent.namelen': 4,
        'dirent.type': 8,
      },
      padded('file', 152),
    );
    expect(hex(b)).toBe(hex(want));
  });

  test('DTTOIF: each DT_* becomes its S_IFMT bits', () => {
    // DT_FIFO 1, DT_CHR 2, DT_DIR 4, DT_BLK 6, DT_REG 8, DT_LNK 10, DT_SOCK 12
    expect([1, 2, 4, 6, 8, 10, 12].map(dtToMode)).toEqual([0o010000, 0o020000, 0o040000, 0o060000, 0o100000, 0o120000, 0o140000]);
  });
});

describe("device numbers (fuse_attr.rdev, fuse_mknod_in.rdev: the kernel's new_encode_dev form)", () => {
  // new_encode_dev(MKDEV(ma, mi)) = (mi & 0xff) | (ma << 8) | ((mi & ~0xff) << 12), ma < 2^12, mi < 2^20
  const kernel = (ma: number, mi: number): number => ((mi & 0xff) | (ma << 8) | ((mi & ~0xff) << 12)) >>> 0;
  const devs: [number, number][] = [
    [0, 0],
    [1, 3],
    [8, 17],
    [259, 0x12345],
    [0xfff, 0xfffff],
    [136, 256],
  ];

  test.each(devs)('makedev(%i, %i) both ways', (ma, mi) => {
    expect(newEncodeDev(makedev(ma, mi))).toBe(BigInt(kernel(ma, mi)));
    expect(newDecodeDev(kernel(ma, mi))).toBe(makedev(ma, mi));
  });
});
