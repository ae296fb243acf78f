// Passthrough credentials: each request runs as the attaching uid (the
// tests run as root, like the daemon), so the host kernel checks permissions
// and new files belong to the caller.
import { expect, jest, test, describe } from '@jest/globals';
import fs from 'node:fs';
import { useServer, walkTo, openAt, uniq } from './fixture.js';
import { O, SETATTR } from './proto.js';

jest.setTimeout(30_000);
const ctx = useServer();
const NOBODY = 65534;

describe('attach as nobody (65534)', () => {
  test('creating in a root-owned 0755 directory is EACCES and nothing appears', async () => {
    const { c, root } = await ctx.session({ uid: NOBODY });
    const n = uniq('nob');
    const wrong: string[] = [];
    const expectEacces = async (what: string, p: Promise<unknown>) => {
      try {
        await p;
        wrong.push(`${what}: succeeded`);
      } catch (e) {
        if ((e as { code?: string }).code !== 'EACCES') wrong.push(`${what}: ${(e as Error).message}`);
      }
    };
    await expectEacces('lcreate', c.lcreate(await walkTo(c, root, 'rootonly'), n, O.RDWR | O.CREAT, 0o644, NOBODY));
    await expectEacces('mkdir', c.mkdir(await walkTo(c, root, 'rootonly'), n, 0o755, NOBODY));
    await expectEacces('symlink', c.symlink(await walkTo(c, root, 'rootonly'), n, 'x', NOBODY));
    await expectEacces('mknod', c.mknod(await walkTo(c, root, 'rootonly'), n, 0o010644, 0, 0, NOBODY));
    await expectEacces('renameat', c.renameat(root, 'hello.txt', await walkTo(c, root, 'rootonly'), n));
    await expectEacces('unlinkat', c.unlinkat(root, 'hello.txt', 0));
    expect(wrong).toEqual([]);
    expect(fs.readdirSync(ctx.tree.p('rootonly'))).toEqual([]);
    expect(fs.existsSync(ctx.tree.p('hello.txt'))).toBe(true);
  });

  test('opening a root-only 0600 file is EACCES; chmod of a root file is EPERM', async () => {
    const n = uniq('secret');
    fs.writeFileSync(ctx.tree.p(n), 'root only');
    fs.chmodSync(ctx.tree.p(n), 0o600);
    const { c, root } = await ctx.session({ uid: NOBODY });
    await expect(c.lopen(await walkTo(c, root, n), O.RDONLY)).rejects.toMatchObject({ code: 'EACCES' });
    await expect(c.setattr(await walkTo(c, root, n), { valid: SETATTR.MODE, mode: 0o666 })).rejects.toMatchObject({ code: 'EPERM' });
    expect(fs.statSync(ctx.tree.p(n)).mode & 0o777).toBe(0o600);
    // World-readable files are fine.
    const f = await openAt(c, root, 'hello.txt', O.RDONLY);
    expect((await c.read(f, 0, 5)).toString()).toBe('hello');
  });

  test('writing a root-owned 0644 file is EACCES', async () => {
    const { c, root } = await ctx.session({ uid: NOBODY });
    await expect(c.lopen(await walkTo(c, root, 'hello.txt'), O.WRONLY)).rejects.toMatchObject({ code: 'EACCES' });
  });

  test('root in a second session is unaffected by the nobody session', async () => {
    const nob = await ctx.session({ uid: NOBODY });
    const n = uniq('mixed');
    const p1 = nob.c.lcreate(await walkTo(nob.c, nob.root, 'rootonly'), n, O.RDWR | O.CREAT, 0o644, 0).catch((e: { code?: string }) => e.code);
    const p2 = ctx.c.lcreate(await walkTo(ctx.c, ctx.root, 'rootonly'), `${n}-root`, O.RDWR | O.CREAT, 0o644, 0);
    const [r1] = await Promise.all([p1, p2]);
    expect(r1).toBe('EACCES');
    expect(fs.existsSync(ctx.tree.p('rootonly', `${n}-root`))).toBe(true);
    expect(fs.statSync(ctx.tree.p('rootonly', `${n}-root`)).uid).toBe(0);
  });
});

describe('attach as uid 1000', () => {
  test('files, directories, symlinks and nodes it creates are owned by 1000 on the host', async () => {
    const { c, root } = await ctx.session({ uid: 1000 });
    const n = uniq('u1000');
    await c.lcreate(await walkTo(c, root, 'scratch'), `${n}-f`, O.RDWR | O.CREAT, 0o644, 1000);
    await c.mkdir(await walkTo(c, root, 'scratch'), `${n}-d`, 0o755, 1000);
    await c.symlink(await walkTo(c, root, 'scratch'), `${n}-l`, 'target', 1000);
    await c.mknod(await walkTo(c, root, 'scratch'), `${n}-p`, 0o010644, 0, 0, 1000);
    for (const s of ['f', 'd', 'l', 'p']) {
      const st = fs.lstatSync(ctx.tree.p('scratch', `${n}-${s}`));
      expect({ s, uid: st.uid, gid: st.gid }).toEqual({ s, uid: 1000, gid: 1000 });
    }
    // It can write what it created, and cannot chown it to someone else.
    const f = await openAt(c, root, `scratch/${n}-f`, O.WRONLY);
    expect(await c.write(f, 0, Buffer.from('mine'))).toBe(4);
    await expect(c.setattr(await walkTo(c, root, `scratch/${n}-f`), { valid: SETATTR.UID, uid: 0 })).rejects.toMatchObject({ code: 'EPERM' });
  });

  test('it cannot create in a root-owned 0755 directory', async () => {
    const { c, root } = await ctx.session({ uid: 1000 });
    await expect(c.mkdir(await walkTo(c, root, 'rootonly'), uniq('no'), 0o755, 1000)).rejects.toMatchObject({ code: 'EACCES' });
  });
});
