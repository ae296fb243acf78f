// The FUSE side of virtiofsd's options that duofs-virtiofsd honours:
// -o no_posix_lock / no_flock (not offered in INIT, lock requests ENOSYS,
// no host lock taken), --no-readdirplus, --allow-mmap
// (FUSE_DIRECT_IO_ALLOW_MMAP), --posix-acl=never|auto|always, and
// --xattrmap applied to SET/GET/LIST/REMOVEXATTR, checked on the host.
import { afterEach, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { ALL_INIT_FLAGS, F_WRLCK, FUSE_LK_FLOCK, INIT_FLAGS as F, ROOT, errnoOf, secctxExt } from './client.js';
import { FuseFixture } from './fixture.js';
import type { FuseOptions } from '../../protocols/fuse/options.js';
import { XattrMap } from '../../protocols/fuse/xattr-map.js';

let fx: FuseFixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

async function serve(fuse: Partial<FuseOptions>): Promise<FuseFixture> {
  fx = await new FuseFixture().start({ fuse, numRequestQueues: 1 });
  return fx;
}

const O_RDWR = 2;

/** Can a host process take an exclusive lock of that kind right now? */
function hostCanLock(p: string, kind: 'posix' | 'flock'): boolean {
  const py = `import fcntl,sys\nfd=open(sys.argv[1],'r+')\ntry:\n  (fcntl.lockf(fd, fcntl.LOCK_EX|fcntl.LOCK_NB) if sys.argv[2]=='posix' else fcntl.flock(fd, fcntl.LOCK_EX|fcntl.LOCK_NB))\n  print('yes')\nexcept OSError:\n  print('no')\n`;
  return execFileSync('/usr/bin/python3', ['-c', py, p, kind]).toString().trim() === 'yes';
}

const hostXattrs = (p: string): string[] =>
  execFileSync('getfattr', ['-h', '-d', '-m', '-', '--absolute-names', p])
    .toString()
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split('=')[0]!)
    .sort();

describe('-o no_posix_lock / -o no_flock', () => {
  test('defaults: both lock kinds offered and taken on the host', async () => {
    const f = await serve({});
    const g = await f.guest();
    expect(g.init!.flags & F.POSIX_LOCKS).toBe(F.POSIX_LOCKS);
    expect(g.init!.flags & F.FLOCK_LOCKS).toBe(F.FLOCK_LOCKS);
    fs.writeFileSync(f.p('l'), 'x');
    const n = (await g.c.lookup(ROOT, 'l')).nodeid;
    const fh = (await g.c.open(n, O_RDWR)).fh;
    await g.c.setlk(n, fh, 1n, { type: F_WRLCK });
    expect(hostCanLock(f.p('l'), 'posix')).toBe(false);
  });

  test('no_posix_lock: POSIX_LOCKS not offered, GETLK/SETLK ENOSYS, no host lock; flock still served', async () => {
    const f = await serve({ posixLocks: false });
    const g = await f.guest();
    expect(g.init!.flags & F.POSIX_LOCKS).toBe(0n);
    expect(g.init!.flags & F.FLOCK_LOCKS).toBe(F.FLOCK_LOCKS);
    fs.writeFileSync(f.p('l'), 'x');
    const n = (await g.c.lookup(ROOT, 'l')).nodeid;
    const fh = (await g.c.open(n, O_RDWR)).fh;
    expect(await errnoOf(g.c.setlk(n, fh, 1n, { type: F_WRLCK }))).toBe('ENOSYS');
    expect(await errnoOf(g.c.getlk(n, fh, 1n, { type: F_WRLCK }))).toBe('ENOSYS');
    expect(hostCanLock(f.p('l'), 'posix')).toBe(true);
    await g.c.setlk(n, fh, 1n, { type: F_WRLCK }, FUSE_LK_FLOCK);
    expect(hostCanLock(f.p('l'), 'flock')).toBe(false);
  });

  test('no_flock: FLOCK_LOCKS not offered, flock requests ENOSYS, no host lock', async () => {
    const f = await serve({ flockLocks: false });
    const g = await f.guest();
    expect(g.init!.flags & F.FLOCK_LOCKS).toBe(0n);
    expect(g.init!.flags & F.POSIX_LOCKS).toBe(F.POSIX_LOCKS);
    fs.writeFileSync(f.p('l'), 'x');
    const n = (await g.c.lookup(ROOT, 'l')).nodeid;
    const fh = (await g.c.open(n, O_RDWR)).fh;
    expect(await errnoOf(g.c.setlk(n, fh, 1n, { type: F_WRLCK }, FUSE_LK_FLOCK))).toBe('ENOSYS');
    expect(hostCanLock(f.p('l'), 'flock')).toBe(true);
  });
});

describe('INIT switches', () => {
  test('--no-readdirplus: neither DO_READDIRPLUS nor READDIRPLUS_AUTO', async () => {
    const g = await (await serve({ readdirplus: false })).guest();
    expect(g.init!.flags & (F.DO_READDIRPLUS | F.READDIRPLUS_AUTO)).toBe(0n);
  });

  test('--allow-mmap: FUSE_DIRECT_IO_ALLOW_MMAP (bit 36) only when asked and offered', async () => {
    const ALLOW_MMAP = 1n << 36n;
    const f = await serve({ allowMmap: true, cache: 'never' });
    const g = await f.guest({ init: false });
    expect((await g.c.doInit({ minor: 39, flags: ALL_INIT_FLAGS | ALLOW_MMAP })).flags & ALLOW_MMAP).toBe(ALLOW_MMAP);
    expect((await g.c.doInit({ minor: 39, flags: ALL_INIT_FLAGS })).flags & ALLOW_MMAP).toBe(0n);
    const other = await new FuseFixture().start({ numRequestQueues: 1 });
    try {
      const h = await other.guest({ init: false });
      expect((await h.c.doInit({ minor: 39, flags: ALL_INIT_FLAGS | ALLOW_MMAP })).flags & ALLOW_MMAP).toBe(0n);
    } finally {
      await other.close();
    }
  });
});

describe('--posix-acl', () => {
  const acl = F.POSIX_ACL | F.DONT_MASK;

  test('never: ACLs not offered, system.posix_acl_* refused with ENOTSUP and hidden from LISTXATTR', async () => {
    const f = await serve({ xattr: true, posixAcl: 'never' });
    const g = await f.guest();
    expect(g.init!.flags & acl).toBe(0n);
    fs.writeFileSync(f.p('a'), 'x');
    // setfacl -m u:1234:r, as the raw xattr (setfacl is not installed everywhere)
    const e = (tag: number, perm: number, id: number): string => Buffer.from([tag, 0, perm, 0, id & 0xff, (id >> 8) & 0xff, 0, 0]).toString('hex');
    const blob = '02000000' + e(1, 6, 0xffff) + e(2, 4, 1234) + e(4, 4, 0xffff) + e(0x10, 4, 0xffff) + e(0x20, 4, 0xffff);
    execFileSync('setfattr', ['-n', 'system.posix_acl_access', '-v', `0x${blob}`, f.p('a')]);
    const n = (await g.c.lookup(ROOT, 'a')).nodeid;
    expect(await errnoOf(g.c.getxattr(n, 'system.posix_acl_access', 256))).toBe('EOPNOTSUPP');
    expect(await errnoOf(g.c.setxattr(n, 'system.posix_acl_access', Buffer.alloc(4)))).toBe('EOPNOTSUPP');
    expect(await errnoOf(g.c.removexattr(n, 'system.posix_acl_access'))).toBe('EOPNOTSUPP');
    const list = (await g.c.listxattr(n, 4096)) as Buffer;
    expect(list.toString('latin1')).not.toMatch(/posix_acl/);
    expect(hostXattrs(f.p('a'))).toContain('system.posix_acl_access'); // untouched on the host
  });

  test('auto: on when the kernel offers it, off (INIT succeeds) when not', async () => {
    const f = await serve({ xattr: true, posixAcl: 'auto' });
    const g = await f.guest({ init: false });
    expect((await g.c.doInit({ flags: ALL_INIT_FLAGS })).flags & acl).toBe(acl);
    expect((await g.c.doInit({ flags: ALL_INIT_FLAGS & ~F.POSIX_ACL })).flags & acl).toBe(0n);
  });

  test('always: INIT fails with EPROTO when the kernel lacks POSIX_ACL', async () => {
    const f = await serve({ xattr: true, posixAcl: 'always' });
    const g = await f.guest({ init: false });
    expect(await errnoOf(g.c.doInit({ flags: ALL_INIT_FLAGS & ~F.POSIX_ACL }))).toBe('EPROTO');
    expect((await g.c.doInit({ flags: ALL_INIT_FLAGS })).flags & acl).toBe(acl);
  });
});

describe('--security-label', () => {
  const label = Buffer.from('system_u:object_r:container_file_t:s0\0');
  const hostLabel = (p: string): string =>
    execFileSync('getfattr', ['-h', '--only-values', '-n', 'security.selinux', '--absolute-names', p]).toString('latin1');

  test('always: INIT fails with EPROTO when the kernel lacks FUSE_SECURITY_CTX; auto: INIT goes on without it', async () => {
    const f = await serve({ xattr: true, securityLabel: 'always' });
    const g = await f.guest({ init: false });
    expect(await errnoOf(g.c.doInit({ flags: ALL_INIT_FLAGS & ~F.SECURITY_CTX }))).toBe('EPROTO');
    expect((await g.c.doInit({ flags: ALL_INIT_FLAGS })).flags & F.SECURITY_CTX).toBe(F.SECURITY_CTX);
    await f.close();
    const a = await serve({ xattr: true, securityLabel: 'auto' });
    const h = await a.guest({ init: false });
    expect((await h.c.doInit({ flags: ALL_INIT_FLAGS & ~F.SECURITY_CTX })).flags & F.SECURITY_CTX).toBe(0n);
  });

  test("new files, directories and nodes carry the guest LSM's context on the host, set for an unprivileged caller", async () => {
    const f = await serve({ xattr: true, securityLabel: 'always' });
    const g = await f.guest();
    fs.chmodSync(f.dir, 0o777);
    const as = { uid: 1000, gid: 1000, ext: secctxExt('security.selinux', label) };
    await g.c.mkdir(ROOT, 'd', 0o755, as);
    await g.c.create(ROOT, 'f', O_RDWR, 0o644, as);
    await g.c.mknod(ROOT, 'p', 0o010644, 0, as);
    for (const n of ['d', 'f', 'p']) expect(hostLabel(f.p(n))).toBe(label.toString('latin1'));
    expect(fs.statSync(f.p('f')).uid).toBe(1000);
    // nr_secctx 0: no LSM labelled it; the object is made, unlabelled
    await g.c.mkdir(ROOT, 'plain', 0o755, { ext: secctxExt() });
    expect(hostXattrs(f.p('plain'))).not.toContain('security.selinux');
  });

  test('a malformed context fails with EINVAL before anything is made; one that cannot be set removes the new object', async () => {
    const f = await serve({ xattr: true, securityLabel: 'always' });
    const g = await f.guest();
    const bad = secctxExt('security.selinux', label);
    bad.writeUInt32LE(0, 8); // fuse_secctx.size 0
    expect(await errnoOf(g.c.mkdir(ROOT, 'bad', 0o755, { ext: bad }))).toBe('EINVAL');
    expect(fs.existsSync(f.p('bad'))).toBe(false);
    const long = secctxExt(`security.${'x'.repeat(300)}`, label); // longer than XATTR_NAME_MAX: ERANGE
    expect(await errnoOf(g.c.mkdir(ROOT, 'd', 0o755, { ext: long }))).toBe('ERANGE');
    expect(await errnoOf(g.c.create(ROOT, 'f', O_RDWR, 0o644, { ext: long }))).toBe('ERANGE');
    expect(fs.readdirSync(f.dir).filter((n) => n === 'd' || n === 'f')).toEqual([]);
    // and the session goes on
    await g.c.mkdir(ROOT, 'ok', 0o755, { ext: secctxExt('security.selinux', label) });
    expect(hostLabel(f.p('ok'))).toBe(label.toString('latin1'));
  });

  test('without it the context is ignored and FUSE_SECURITY_CTX is not offered', async () => {
    const f = await serve({ xattr: true });
    const g = await f.guest();
    expect(g.init!.flags & F.SECURITY_CTX).toBe(0n);
    await g.c.mkdir(ROOT, 'd', 0o755, { ext: secctxExt('security.selinux', label) });
    expect(hostXattrs(f.p('d'))).not.toContain('security.selinux');
  });
});

describe('one-way --translate-uid/--translate-gid kinds', () => {
  test('guest:1000:2000:1 maps what the guest creates to host 2000, and shows host ids unmapped', async () => {
    fx = await new FuseFixture().start({
      numRequestQueues: 1,
      serve: {
        translateUid: [{ kind: 'guest', guest: 1000, host: 2000, count: 1 }],
        translateGid: [{ kind: 'host', host: 3000, guest: 100, count: 1 }],
      },
    });
    const g = await fx.guest();
    fs.chmodSync(fx.dir, 0o777);
    const e = await g.c.mkdir(ROOT, 'd', 0o755, { uid: 1000, gid: 1000 });
    const st = fs.statSync(fx.p('d'));
    expect(st.uid).toBe(2000);
    expect(e.attr.uid).toBe(2000); // no host -> guest rule for 2000: shown as is
    fs.writeFileSync(fx.p('h'), 'x');
    fs.chownSync(fx.p('h'), 4000, 3000);
    const h = await g.c.lookup(ROOT, 'h');
    expect([h.attr.uid, h.attr.gid]).toEqual([4000, 100]); // host:3000 -> guest 100
  });
});

describe('--xattrmap', () => {
  test('example 1 (:map::user.virtiofs.:): every guest name lives under user.virtiofs. on the host; host-only names are hidden', async () => {
    const f = await serve({ xattr: true, xattrMap: XattrMap.parse(':map::user.virtiofs.:') });
    const g = await f.guest();
    fs.writeFileSync(f.p('m'), 'x');
    execFileSync('setfattr', ['-n', 'user.hostonly', '-v', 'h', f.p('m')]);
    const n = (await g.c.lookup(ROOT, 'm')).nodeid;
    await g.c.setxattr(n, 'user.color', Buffer.from('blue'));
    expect(hostXattrs(f.p('m'))).toEqual(['user.hostonly', 'user.virtiofs.user.color']);
    expect(await g.c.getxattr(n, 'user.color', 64)).toEqual(Buffer.from('blue'));
    expect(((await g.c.listxattr(n, 4096)) as Buffer).toString('latin1')).toBe('user.color\0');
    expect(await g.c.listxattr(n, 0)).toBe('user.color\0'.length); // the size of the mapped list
    expect(await errnoOf(g.c.listxattr(n, 5))).toBe('ERANGE');
    await g.c.removexattr(n, 'user.color');
    expect(hostXattrs(f.p('m'))).toEqual(['user.hostonly']);
  });

  test('example 2: trusted. remapped, user.virtiofs. refused to the guest (EPERM), the rest passes', async () => {
    const map = XattrMap.parse(`/prefix/all/trusted./user.virtiofs./
      /bad/server//trusted./
      /bad/client/user.virtiofs.//
      /ok/all///`);
    const f = await serve({ xattr: true, xattrMap: map });
    const g = await f.guest();
    fs.writeFileSync(f.p('t'), 'x');
    const n = (await g.c.lookup(ROOT, 't')).nodeid;
    await g.c.setxattr(n, 'trusted.x', Buffer.from('1'));
    await g.c.setxattr(n, 'user.plain', Buffer.from('2'));
    expect(hostXattrs(f.p('t'))).toEqual(['user.plain', 'user.virtiofs.trusted.x']);
    expect(await errnoOf(g.c.setxattr(n, 'user.virtiofs.trusted.y', Buffer.from('3')))).toBe('EPERM');
    expect(await errnoOf(g.c.getxattr(n, 'user.virtiofs.trusted.x', 64))).toBe('EPERM');
    expect(((await g.c.listxattr(n, 4096)) as Buffer).toString('latin1').split('\0').filter(Boolean).sort()).toEqual(['trusted.x', 'user.plain']);
  });

  test('unsupported rules answer ENOTSUP', async () => {
    const f = await serve({ xattr: true, xattrMap: XattrMap.parse(':unsupported:all:security.:security.: :ok:all:::') });
    const g = await f.guest();
    fs.writeFileSync(f.p('s'), 'x');
    const n = (await g.c.lookup(ROOT, 's')).nodeid;
    expect(await errnoOf(g.c.setxattr(n, 'security.foo', Buffer.from('1')))).toBe('EOPNOTSUPP');
  });
});

describe('--allow-direct-io', () => {
  const O_DIRECT = 0o40000;
  const O_PATH = 0o10000000;
  const O_CREAT = 0o100;

  /** open(2) flags of the fds this process (the server) holds on `p`, O_PATH ones left out. */
  const hostOpenFlags = (p: string): number[] => {
    const out: number[] = [];
    for (const fd of fs.readdirSync('/proc/self/fd')) {
      let target: string;
      let info: string;
      try {
        target = fs.readlinkSync(`/proc/self/fd/${fd}`);
        info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
      } catch {
        continue; // the fd of readdirSync itself, or closed meanwhile
      }
      const flags = Number.parseInt(/^flags:\s+([0-7]+)/m.exec(info)?.[1] ?? '', 8);
      if (target === p && !(flags & O_PATH)) out.push(flags);
    }
    return out;
  };

  test("off (virtiofsd's default): a guest's O_DIRECT is dropped, so an unaligned read succeeds", async () => {
    const f = await serve({});
    const g = await f.guest();
    fs.writeFileSync(f.p('d'), Buffer.alloc(16384, 'a'));
    const n = (await g.c.lookup(ROOT, 'd')).nodeid;
    const fh = (await g.c.open(n, O_RDWR | O_DIRECT)).fh;
    const flags = hostOpenFlags(f.p('d'));
    expect(flags).toHaveLength(1);
    expect(flags[0]! & O_DIRECT).toBe(0);
    expect((await g.c.read(fh, 1n, 4096)).toString()).toBe('a'.repeat(4096));
  });

  test('on: the host fd keeps O_DIRECT (OPEN and CREATE) and the host filesystem refuses an unaligned read with EINVAL', async () => {
    const f = await serve({ allowDirectIo: true });
    const g = await f.guest();
    fs.writeFileSync(f.p('d'), Buffer.alloc(16384, 'a'));
    const n = (await g.c.lookup(ROOT, 'd')).nodeid;
    const fh = (await g.c.open(n, O_RDWR | O_DIRECT)).fh;
    const flags = hostOpenFlags(f.p('d'));
    expect(flags).toHaveLength(1);
    expect(flags[0]! & O_DIRECT).toBe(O_DIRECT);
    expect(await errnoOf(g.c.read(fh, 1n, 4096))).toBe('EINVAL'); // ext4: offset not block-aligned
    // A plain open of the same file stays buffered.
    await g.c.open(n, O_RDWR);
    expect(
      hostOpenFlags(f.p('d'))
        .map((x) => x & O_DIRECT)
        .sort(),
    ).toEqual([0, O_DIRECT]);
    await g.c.create(ROOT, 'c', O_RDWR | O_CREAT | O_DIRECT, 0o644);
    expect(hostOpenFlags(f.p('c')).map((x) => x & O_DIRECT)).toEqual([O_DIRECT]);
  });
});
