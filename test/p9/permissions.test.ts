// --9p-permissions (passthrough): who decides a 9P request's permissions.
//  guest  QEMU's 9p: the client's kernel has checked them with the calling
//         process's groups; duofs acts with its own privileges and gives a
//         new file the uid and gid the request names.
//  host   diod's: the host kernel checks as the attached uid with the host's
//         supplementary groups of that uid (setfsuid/setfsgid/setgroups).
// A guest process in a group the host does not know (gid 4242 here: in the
// guest through setgroups(), absent from the host's /etc/group) works in a
// directory of that group under `guest`, and is refused under `host`.
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDuofs, type Duofs, type ServeOptions } from '../../src/server.js';
import { P9Client } from './client.js';
import { O, SETATTR } from './proto.js';

jest.setTimeout(30_000);

const UID = 1000;
const GUEST_GROUP = 4242; // not in the host's group database
const OTHER_GUEST_GROUP = 4243;

const hostKnowsGroup = (gid: number): boolean =>
  fs
    .readFileSync('/etc/group', 'utf8')
    .split('\n')
    .some((l) => l.split(':')[2] === String(gid));

interface Served {
  dir: string;
  duofs: Duofs;
  clients: P9Client[];
  session(uid?: number): Promise<{ c: P9Client; root: number }>;
}

function serve(o: Partial<ServeOptions>): Served {
  const s = { clients: [] } as unknown as Served;
  beforeAll(async () => {
    const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-perm-')));
    fs.chmodSync(base, 0o755);
    s.dir = path.join(base, 'export');
    fs.mkdirSync(s.dir, { mode: 0o755 });
    // grp: root:4242, writable by the group only
    fs.mkdirSync(path.join(s.dir, 'grp'));
    fs.chownSync(path.join(s.dir, 'grp'), 0, GUEST_GROUP);
    fs.chmodSync(path.join(s.dir, 'grp'), 0o770);
    fs.writeFileSync(path.join(s.dir, 'grp', 'shared'), 'group data');
    fs.chownSync(path.join(s.dir, 'grp', 'shared'), 0, GUEST_GROUP);
    fs.chmodSync(path.join(s.dir, 'grp', 'shared'), 0o660);
    fs.writeFileSync(path.join(s.dir, 'rootfile'), 'root only');
    fs.chmodSync(path.join(s.dir, 'rootfile'), 0o600);
    s.duofs = await startDuofs({ sharedDir: s.dir, ninepTcp: '127.0.0.1:0', logLevel: 'silent', ...o });
    s.session = async (uid = UID) => {
      const a = s.duofs.ninepTcpAddress!;
      const r = await P9Client.session(`${a.host}:${a.port}`, { aname: s.dir, uid });
      s.clients.push(r.c);
      return r;
    };
  });
  afterAll(async () => {
    for (const c of s.clients) await c.close();
    await s.duofs?.close();
    if (s.dir) fs.rmSync(path.dirname(s.dir), { recursive: true, force: true });
  });
  return s;
}

async function walk(c: P9Client, from: number, p: string): Promise<number> {
  const f = c.newFid();
  await c.walkPath(from, f, p);
  return f;
}

const owner = (p: string) => {
  const st = fs.lstatSync(p);
  return `${st.uid}:${st.gid}:${(st.mode & 0o7777).toString(8)}`;
};

test('the host does not know the guest-only groups (the premise of these tests)', () => {
  expect(hostKnowsGroup(GUEST_GROUP) || hostKnowsGroup(OTHER_GUEST_GROUP)).toBe(false);
  expect(process.geteuid?.()).toBe(0); // passthrough needs root
});

describe('--9p-permissions guest', () => {
  const s = serve({ ninepPermissions: 'guest' });

  test("a caller in a guest-only group creates in that group's directory; the new objects are the caller's", async () => {
    const { c, root } = await s.session();
    const g = (n: string) => path.join(s.dir, 'grp', n);
    // The new objects' group is the caller's primary one (1000), as v9fs names it outside setgid directories.
    await c.lcreate(await walk(c, root, 'grp'), 'file', O.RDWR | O.CREAT | O.EXCL, 0o640, UID);
    // The mode the request names is the mode it gets, bits mkdir(2) or chown(2) would drop included
    // (v9fs adds S_ISGID to a directory made in a setgid directory).
    await c.mkdir(await walk(c, root, 'grp'), 'dir', 0o2750, UID);
    await c.symlink(await walk(c, root, 'grp'), 'link', 'file', UID);
    await c.mknod(await walk(c, root, 'grp'), 'fifo', 0o010620, 0, 0, UID);
    await c.lcreate(await walk(c, root, 'grp'), 'suid', O.RDWR | O.CREAT | O.EXCL, 0o4750, UID);
    expect({
      file: owner(g('file')),
      dir: owner(g('dir')),
      link: owner(g('link')).split(':').slice(0, 2).join(':'),
      fifo: owner(g('fifo')),
      suid: owner(g('suid')),
    }).toEqual({
      file: `${UID}:${UID}:640`,
      dir: `${UID}:${UID}:2750`,
      link: `${UID}:${UID}`,
      fifo: `${UID}:${UID}:620`,
      suid: `${UID}:${UID}:4750`,
    });
  });

  test('it writes a group-writable file, chowns its own file to another guest-only group and sets setgid', async () => {
    const { c, root } = await s.session();
    const f = c.newFid();
    await c.walkPath(root, f, 'grp/shared');
    await c.lopen(f, O.WRONLY);
    expect(await c.write(f, 0, Buffer.from('GROUP'))).toBe(5);
    expect(fs.readFileSync(path.join(s.dir, 'grp', 'shared'), 'utf8')).toBe('GROUP data');
    await c.lcreate(await walk(c, root, 'grp'), 'mine', O.RDWR | O.CREAT | O.EXCL, 0o640, UID);
    const mine = await walk(c, root, 'grp/mine');
    await c.setattr(mine, { valid: SETATTR.GID, gid: OTHER_GUEST_GROUP });
    await c.setattr(mine, { valid: SETATTR.MODE, mode: 0o2640 });
    expect(owner(path.join(s.dir, 'grp', 'mine'))).toBe(`${UID}:${OTHER_GUEST_GROUP}:2640`);
  });

  test('Tlcreate without O_EXCL of an existing file opens it and leaves its owner alone', async () => {
    const { c, root } = await s.session();
    const before = owner(path.join(s.dir, 'grp', 'shared'));
    await c.lcreate(await walk(c, root, 'grp'), 'shared', O.RDWR | O.CREAT, 0o600, UID);
    expect(owner(path.join(s.dir, 'grp', 'shared'))).toBe(before);
  });

  test("the server checks nothing itself: what the guest kernel allowed happens (the mode's risk)", async () => {
    const { c, root } = await s.session();
    const f = await walk(c, root, 'rootfile');
    await c.lopen(f, O.RDONLY);
    expect((await c.read(f, 0, 100)).toString()).toBe('root only');
  });
});

describe('--9p-permissions host (the default over TCP)', () => {
  const s = serve({});

  test('the host kernel refuses what only a guest-only group allows; nothing is created', async () => {
    const { c, root } = await s.session();
    await expect(c.lcreate(await walk(c, root, 'grp'), 'file', O.RDWR | O.CREAT | O.EXCL, 0o640, UID)).rejects.toMatchObject({ code: 'EACCES' });
    // no search permission in grp: the walk stops before 'shared'
    await expect(walk(c, root, 'grp/shared')).rejects.toThrow(/partial: 1\/2/);
    await expect(c.lopen(await walk(c, root, 'rootfile'), O.RDONLY)).rejects.toMatchObject({ code: 'EACCES' });
    expect(fs.readdirSync(path.join(s.dir, 'grp'))).toEqual(['shared']);
  });

  test('a root attach still creates with the ids it names', async () => {
    const { c, root } = await s.session(0);
    await c.lcreate(await walk(c, root, 'grp'), 'byroot', O.RDWR | O.CREAT | O.EXCL, 0o644, GUEST_GROUP);
    expect(owner(path.join(s.dir, 'grp', 'byroot'))).toBe(`0:${GUEST_GROUP}:644`);
  });
});
