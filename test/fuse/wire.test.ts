// The FUSE wire codec: every truncation of an argument block is EINVAL
// naming the operation and the field (never a RangeError), and the reply
// encoders put each field where linux/fuse.h says.
import { describe, expect, test } from '@jest/globals';
import { ArgReader, attrOut, encodeAttr, entryOut, openOut, outHeader, statfsOut, type FuseAttr } from '../../protocols/fuse/wire.js';
import { ATTR_OUT_SIZE, ENTRY_OUT_SIZE, OPEN_OUT_SIZE, OUT_HEADER_SIZE } from '../../protocols/fuse/constants.js';
import { SysError } from '../../src/sys/index.js';

const attr: FuseAttr = {
  ino: 0x1122334455667788n,
  size: 2n ** 40n,
  blocks: 9,
  atime: { sec: -5, nsec: 1 },
  mtime: { sec: 2n ** 33n, nsec: 2 },
  ctime: { sec: 7, nsec: 999_999_999 },
  mode: 0o100644,
  nlink: 3,
  uid: 0xfffffffe,
  gid: 4,
  rdev: 0x12345,
  blksize: 4096,
  flags: 1,
};

describe('ArgReader', () => {
  // struct fuse_write_in: fh u64, offset u64, size u32, write_flags u32, lock_owner u64, flags u32, padding u32
  const fields = ['fh', 'offset', 'size', 'write_flags', 'lock_owner', 'flags'] as const;
  const block = Buffer.alloc(40);
  block.writeBigUInt64LE(7n, 0);
  block.writeBigUInt64LE(123n, 8);
  block.writeUInt32LE(4096, 16);

  const readAll = (r: ArgReader) => {
    const fh = r.u64('fh');
    const off = r.offset('offset');
    const size = r.u32('size');
    r.u32('write_flags');
    r.u64('lock_owner');
    r.u32('flags');
    return { fh, off, size };
  };

  test('reads a whole block', () => {
    expect(readAll(new ArgReader(block, 'WRITE'))).toEqual({ fh: 7n, off: 123, size: 4096 });
  });

  test('every truncation is EINVAL naming the op and the field that ran short', () => {
    const ends = [8, 16, 20, 24, 32, 36];
    for (let len = 0; len < 36; len++) {
      const short = fields[ends.findIndex((e) => len < e)]!;
      let err: unknown;
      try {
        readAll(new ArgReader(block.subarray(0, len), 'WRITE'));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SysError);
      expect((err as SysError).code).toBe('EINVAL');
      expect((err as SysError).message).toContain('FUSE WRITE');
      expect((err as SysError).message).toContain(`${short}:`);
    }
  });

  test('offsets past off_t are EINVAL; past 2^53 they stay exact as bigint', () => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(2n ** 63n);
    expect(() => new ArgReader(b, 'READ').offset('offset')).toThrow(/offset .* beyond off_t/);
    b.writeBigUInt64LE(2n ** 53n + 1n);
    expect(new ArgReader(b, 'READ').offset('offset')).toBe(2n ** 53n + 1n);
  });

  test('names must be NUL-terminated', () => {
    const r = new ArgReader(Buffer.from('old\0new\0'), 'RENAME');
    expect(r.name('oldname').toString()).toBe('old');
    expect(r.name('newname').toString()).toBe('new');
    expect(() => new ArgReader(Buffer.from('abc'), 'LOOKUP').name('name')).toThrow(/FUSE LOOKUP.*name is not NUL-terminated/);
  });
});

describe('reply encoders', () => {
  test('fuse_attr fields at their offsets', () => {
    const b = Buffer.alloc(88);
    encodeAttr(b, 0, attr);
    expect(b.readBigUInt64LE(0)).toBe(attr.ino);
    expect(b.readBigUInt64LE(8)).toBe(2n ** 40n);
    expect(b.readBigInt64LE(24)).toBe(-5n);
    expect(b.readBigInt64LE(32)).toBe(2n ** 33n);
    expect(b.readUInt32LE(56)).toBe(999_999_999);
    expect(b.readUInt32LE(60)).toBe(0o100644);
    expect(b.readUInt32LE(68)).toBe(0xfffffffe);
    expect(b.readUInt32LE(76)).toBe(0x12345);
    expect(b.readUInt32LE(80)).toBe(4096);
    expect(b.readUInt32LE(84)).toBe(1);
  });

  test('entry, attr, open, statfs replies and the out header', () => {
    const e = entryOut(42n, { entry: 1, attr: 2 }, attr);
    expect(e.length).toBe(ENTRY_OUT_SIZE);
    expect([e.readBigUInt64LE(0), e.readBigUInt64LE(8), e.readBigUInt64LE(16), e.readBigUInt64LE(24)]).toEqual([42n, 0n, 1n, 2n]);
    expect(e.readBigUInt64LE(40)).toBe(attr.ino);
    const into = Buffer.alloc(ENTRY_OUT_SIZE + 10, 0xff);
    entryOut(42n, { entry: 1, attr: 2 }, attr, into, 10);
    expect(into.subarray(10).equals(e)).toBe(true);
    const a = attrOut(5, attr);
    expect(a.length).toBe(ATTR_OUT_SIZE);
    expect(a.readBigUInt64LE(0)).toBe(5n);
    expect(a.readBigUInt64LE(16)).toBe(attr.ino);
    const o = openOut(9n, 3);
    expect(o.length).toBe(OPEN_OUT_SIZE);
    expect([o.readBigUInt64LE(0), o.readUInt32LE(8)]).toEqual([9n, 3]);
    const s = statfsOut({ blocks: 1n, bfree: 2n, bavail: 3n, files: 4n, ffree: 5n, bsize: 6, namelen: 255, frsize: 8 } as never);
    expect(s.length).toBe(80);
    expect([s.readBigUInt64LE(32), s.readUInt32LE(44), s.readUInt32LE(48)]).toEqual([5n, 255, 8]);
    const h = outHeader(16, 2, 77n);
    expect(h.length).toBe(OUT_HEADER_SIZE);
    expect([h.readUInt32LE(0), h.readInt32LE(4), h.readBigUInt64LE(8)]).toEqual([16, -2, 77n]);
  });
});
