// Extended attributes through virtio-fs: SETXATTR, GETXATTR, LISTXATTR,
// REMOVEXATTR with --xattr (size-0 queries, ERANGE, create/replace flags,
// binary values), checked on the host; ENOSYS without --xattr.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { OP, ROOT, cstr, errnoOf, type FuseClient } from './client.js';
import { FuseFixture, useFuse } from './fixture.js';

const ctx = useFuse({ fuse: { xattr: true } });

const hostGet = (p: string, name: string): Buffer | undefined => {
  try {
    return execFileSync('getfattr', ['--only-values', '-h', '-n', name, p], { stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
};

async function file(name: string): Promise<bigint> {
  fs.writeFileSync(ctx.fx.p(name), 'x');
  return (await ctx.c.lookup(ROOT, name)).nodeid;
}

describe('with --xattr', () => {
  test('SETXATTR stores on the host; GETXATTR with size 0 gives the length, then the value', async () => {
    const { c, fx } = ctx;
    const n = await file('x1');
    await c.setxattr(n, 'user.color', Buffer.from('blue'));
    expect(hostGet(fx.p('x1'), 'user.color')?.toString()).toBe('blue');
    expect(await c.getxattr(n, 'user.color', 0)).toBe(4);
    expect(await c.getxattr(n, 'user.color', 4)).toEqual(Buffer.from('blue'));
    expect(await c.getxattr(n, 'user.color', 4096)).toEqual(Buffer.from('blue')); // reply is the value, not the buffer
    expect(await errnoOf(c.getxattr(n, 'user.color', 3))).toBe('ERANGE');
    expect(await errnoOf(c.getxattr(n, 'user.missing', 100))).toBe('ENODATA');
    expect(await errnoOf(c.getxattr(n, 'user.missing', 0))).toBe('ENODATA');
  });

  test('binary values with NULs, and a 4000-byte value', async () => {
    const { c, fx } = ctx;
    const n = await file('x2');
    const bin = Buffer.from([0, 1, 2, 0, 255, 0]);
    await c.setxattr(n, 'user.bin', bin);
    expect(await c.getxattr(n, 'user.bin', 64)).toEqual(bin);
    const big = Buffer.alloc(4000, 0x5a);
    await c.setxattr(n, 'user.big', big);
    expect(await c.getxattr(n, 'user.big', 0)).toBe(4000);
    expect(await c.getxattr(n, 'user.big', 4000)).toEqual(big);
    expect(hostGet(fx.p('x2'), 'user.big')?.length).toBe(4000);
    await c.setxattr(n, 'user.empty', Buffer.alloc(0));
    expect(await c.getxattr(n, 'user.empty', 0)).toBe(0);
  });

  test('XATTR_CREATE on an existing name is EEXIST; XATTR_REPLACE on a missing one ENODATA', async () => {
    const { c, fx } = ctx;
    const n = await file('x3');
    await c.setxattr(n, 'user.a', Buffer.from('1'), 1);
    expect(await errnoOf(c.setxattr(n, 'user.a', Buffer.from('2'), 1))).toBe('EEXIST');
    await c.setxattr(n, 'user.a', Buffer.from('3'), 2);
    expect(hostGet(fx.p('x3'), 'user.a')?.toString()).toBe('3');
    expect(await errnoOf(c.setxattr(n, 'user.b', Buffer.from('2'), 2))).toBe('ENODATA');
  });

  test('LISTXATTR: size 0 gives the length; the NUL-separated list; ERANGE when too small', async () => {
    const { c } = ctx;
    const n = await file('x4');
    await c.setxattr(n, 'user.one', Buffer.from('1'));
    await c.setxattr(n, 'user.two', Buffer.from('2'));
    const len = await c.listxattr(n, 0);
    expect(len).toBe('user.one\0user.two\0'.length);
    const list = (await c.listxattr(n, 4096)) as Buffer;
    expect(list.toString().split('\0').filter(Boolean).sort()).toEqual(['user.one', 'user.two']);
    expect(list.length).toBe(len);
    expect(await errnoOf(c.listxattr(n, 5))).toBe('ERANGE');
    // A file without attributes: empty list
    expect(await c.listxattr(await file('x4-none'), 0)).toBe(0);
  });

  test('REMOVEXATTR removes on the host; a second time ENODATA', async () => {
    const { c, fx } = ctx;
    const n = await file('x5');
    await c.setxattr(n, 'user.gone', Buffer.from('soon'));
    await c.removexattr(n, 'user.gone');
    expect(hostGet(fx.p('x5'), 'user.gone')).toBeUndefined();
    expect(await errnoOf(c.removexattr(n, 'user.gone'))).toBe('ENODATA');
  });

  test('on a directory, and the root', async () => {
    const { c, fx } = ctx;
    const d = await c.mkdir(ROOT, 'xdir');
    await c.setxattr(d.nodeid, 'user.d', Buffer.from('dir'));
    expect(hostGet(fx.p('xdir'), 'user.d')?.toString()).toBe('dir');
    await c.setxattr(ROOT, 'user.r', Buffer.from('root'));
    expect(await c.getxattr(ROOT, 'user.r', 10)).toEqual(Buffer.from('root'));
    await c.removexattr(ROOT, 'user.r');
  });

  test('a name longer than 255 bytes is ERANGE; an empty name EINVAL; an unknown namespace EOPNOTSUPP', async () => {
    const { c } = ctx;
    const n = await file('x6');
    expect(await errnoOf(c.setxattr(n, `user.${'n'.repeat(260)}`, Buffer.from('v')))).toBe('ERANGE');
    expect(await errnoOf(c.getxattr(n, '', 10))).toBe('EINVAL');
    expect(await errnoOf(c.setxattr(n, 'bogus.name', Buffer.from('v')))).toBe('EOPNOTSUPP');
  });

  test('a value size larger than the bytes sent is EINVAL (no read past the request)', async () => {
    const { c, fx } = ctx;
    const n = await file('x7');
    const args = Buffer.alloc(8);
    args.writeUInt32LE(1000, 0); // claims 1000 bytes of value
    expect(await errnoOf(c.call(OP.SETXATTR, [args, cstr('user.liar'), Buffer.from('short')], { nodeid: n, in: [16] }))).toBe('EINVAL');
    expect(hostGet(fx.p('x7'), 'user.liar')).toBeUndefined();
  });

  // A guest kernel never sends these for an unprivileged caller; a raw
  // client may, and the server (CAP_SYS_ADMIN, CAP_SETFCAP) must refuse as
  // the kernel would refuse that caller.
  test('an unprivileged caller cannot set or remove trusted.*, security.* or security.capability; trusted.* is hidden from it', async () => {
    const { c, fx } = ctx;
    const n = await file('xpriv');
    fs.chmodSync(fx.p('xpriv'), 0o777);
    execFileSync('setfattr', ['-n', 'trusted.keep', '-v', 'k', fx.p('xpriv')]);
    const nobody = { uid: 65534, gid: 65534 };
    for (const name of ['trusted.evil', 'security.evil', 'security.capability']) {
      expect(await errnoOf(c.setxattr(n, name, Buffer.from('01000002ffffffff00000000ffffffff00000000', 'hex'), 0, nobody))).toBe('EPERM');
      expect(hostGet(fx.p('xpriv'), name)).toBeUndefined();
    }
    expect(await errnoOf(c.call(OP.REMOVEXATTR, [cstr('trusted.keep')], { nodeid: n, ...nobody }))).toBe('EPERM');
    expect(await errnoOf(c.getxattr(n, 'trusted.keep', 100, nobody))).toBe('ENODATA');
    const list = (await c.listxattr(n, 4096, nobody)) as Buffer;
    expect(list.toString('latin1').split('\0')).not.toContain('trusted.keep');
    // root keeps them
    expect(((await c.getxattr(n, 'trusted.keep', 100)) as Buffer).toString()).toBe('k');
  });
});

describe('without --xattr', () => {
  let fx: FuseFixture;
  let c: FuseClient;
  beforeAll(async () => {
    fx = await new FuseFixture().start({ fuse: { xattr: false } });
    fs.writeFileSync(fx.p('f'), 'x');
    c = (await fx.guest()).c;
  });
  afterAll(() => fx.close());

  test('all four are ENOSYS (the kernel then stops asking) and nothing reaches the host', async () => {
    const n = (await c.lookup(ROOT, 'f')).nodeid;
    expect(await errnoOf(c.setxattr(n, 'user.a', Buffer.from('1')))).toBe('ENOSYS');
    expect(await errnoOf(c.getxattr(n, 'user.a', 0))).toBe('ENOSYS');
    expect(await errnoOf(c.listxattr(n, 0))).toBe('ENOSYS');
    expect(await errnoOf(c.removexattr(n, 'user.a'))).toBe('ENOSYS');
    expect(hostGet(fx.p('f'), 'user.a')).toBeUndefined();
  });
});
