// duofs as an ordinary host user with mapped-xattr: a guest chowns, chmods,
// makes setuid/setgid files, char and block devices, fifos, a socket node and
// symlinks, over duofs-9p (vhost-user, trans=virtio) and duofs-virtiofs —
// all of it recorded in user.virtfs.* xattrs, none of it real on the host:
// every host object is a regular file or a directory owned by that user,
// without setuid/setgid/sticky bits.
//
// One guest: the corpus (test/lab/guest/scenarios/corpus-build.py) is built
// in c1 over duofs-9p and in c2 over duofs-virtiofs; then the whole export is
// dumped (corpus-dump.sh: stat, ls -ln, getfattr, getfacl, readlink, md5)
// through duofs-9p, duofs-virtiofs and QEMU's own 9p (mapped-xattr, as root)
// on the same export, and the three views must be the same text.
//
// The user is a bare uid/gid without a passwd entry (setpriv --reuid/--regid
// --clear-groups, through startDuofs's `user` option); nothing is added to
// the host's user database. /dev/fuse needs root, so only vhost-user sockets
// are served; QEMU runs as root and can connect to them.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun } from './guest.js';
import { labAvailable, labDir, makeWorkDir, removeWorkDir, tail } from './lab.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { c, cstr } from '../../src/sys/libc.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

/** The unprivileged user duofs runs as (no passwd entry needed). */
const UID = 64123;
const GID = 64123;
const resultsDir = join(labDir, 'results', 'unprivileged');

interface HostEntry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  xattrs: Map<string, Buffer>;
  content?: Buffer;
}

const TYPE: Record<number, string> = {
  0o140000: 'sock',
  0o120000: 'link',
  0o100000: 'reg',
  0o060000: 'blk',
  0o040000: 'dir',
  0o020000: 'chr',
  0o010000: 'fifo',
};

function hostXattrs(path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const list = Buffer.alloc(65536);
  const n = Number(c.llistxattr(cstr(path), list, list.length));
  if (n < 0) return out;
  const val = Buffer.alloc(65536);
  for (const name of list.subarray(0, n).toString('latin1').split('\0').filter(Boolean)) {
    const k = Number(c.lgetxattr(cstr(path), cstr(Buffer.from(name, 'latin1')), val, val.length));
    if (k >= 0) out.set(name, Buffer.from(val.subarray(0, k)));
  }
  return out;
}

/** Every host object under root (symlinks not followed). */
function walk(root: string): HostEntry[] {
  const out: HostEntry[] = [];
  const visit = (rel: string) => {
    const abs = rel ? join(root, rel) : root;
    const st = lstatSync(abs);
    const type = TYPE[st.mode & 0o170000] ?? 'unknown';
    out.push({
      path: rel || '.',
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      xattrs: hostXattrs(abs),
      content: type === 'reg' ? readFileSync(abs) : undefined,
    });
    if (type === 'dir') for (const n of readdirSync(abs).sort()) visit(rel ? `${rel}/${n}` : n);
  };
  visit('');
  return out;
}

const u32 = (b: Buffer | undefined) => (b && b.length === 4 ? b.readUInt32LE(0) : undefined);
const u64 = (b: Buffer | undefined) => (b && b.length === 8 ? b.readBigUInt64LE(0) : undefined);
/** glibc's makedev (the encoding QEMU and duofs store in user.virtfs.rdev). */
const makedev = (ma: number, mi: number) =>
  ((BigInt(ma) & 0xfffff000n) << 32n) | ((BigInt(ma) & 0xfffn) << 8n) | ((BigInt(mi) & 0xffffff00n) << 12n) | (BigInt(mi) & 0xffn);

/** The guest-visible fields of PATH's stat line in a dump: name|hexmode|mode|symbolic|type|uid|gid|major|minor|size|links. */
function statFields(dump: string, path: string): string | undefined {
  for (const line of dump.slice(dump.indexOf('== stat\n')).split('\n')) {
    const f = line.split('|');
    if (f[0] === path && f.length >= 13) return f.slice(0, 11).join('|');
  }
  return undefined;
}

/** Inode numbers (stat %i) as ordinals: QEMU's qid paths and duofs's inode numbers differ; which names share one does not. */
function normaliseInodes(dump: string): string {
  const ord = new Map<string, number>();
  return dump
    .split('\n')
    .map((l) => {
      const f = l.split('|');
      if (f.length !== 13 || !f[0].startsWith('.')) return l;
      if (!ord.has(f[11])) ord.set(f[11], ord.size);
      f[11] = `ino#${ord.get(f[11])}`;
      return f.join('|');
    })
    .join('\n');
}

function procIds(pid: number): { uid: string; gid: string; groups: string } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k: string) => (new RegExp(`^${k}:[ \\t]*(.*)$`, 'm').exec(st)?.[1] ?? '').trim().split(/\s+/).join(' ');
  return { uid: get('Uid'), gid: get('Gid'), groups: get('Groups') };
}

d('duofs as an unprivileged user with mapped-xattr (real guest)', () => {
  let work = '';
  let tree = '';
  let run: GuestRun | undefined;
  let ids: ReturnType<typeof procIds> | undefined;
  const dumps = new Map<string, string>();
  let host: HostEntry[] = [];
  let duofsLog = '';

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    work = makeWorkDir('unpriv');
    tree = freshTree(work, 'u');
    chownSync(tree, UID, GID);
    const sockDir = join(work, 'sock-u');
    mkdirSync(sockDir, { mode: 0o755 });
    chownSync(sockDir, UID, GID);
    const out = freshTree(work, 'out');
    const s9 = join(sockDir, 'u-9.sock');
    const sv = join(sockDir, 'u-v.sock');
    const t0 = Date.now();
    let daemon: HostDaemon | undefined;
    try {
      daemon = await startDuofs(
        [
          'serve',
          '--shared-dir',
          tree,
          '--security-model',
          'mapped-xattr',
          '--9p-vhost-socket',
          s9,
          '--9p-tag',
          'u-9',
          '--virtiofs-socket',
          sv,
          '--tag',
          'u-v',
          '--xattr',
          '--log-level',
          'info',
        ],
        [s9, sv],
        { user: { uid: UID, gid: GID } },
      );
      ids = procIds(daemon.process.pid!);
      run = await runGuest({
        label: 'unpriv',
        workDir: work,
        timeoutMs: 240_000,
        scenario: 'corpus-run.sh',
        scenarioTimeoutSec: 120,
        mounts: [
          { kind: 'vhost-user-9p', name: 'u-9', socket: s9, tag: 'u-9', mountOptions: 'posixacl' },
          { kind: 'vhost-user-fs', name: 'u-v', socket: sv, tag: 'u-v' },
          { kind: 'qemu-9p', name: 'u-q', dir: tree, securityModel: 'mapped-xattr', mountOptions: 'posixacl' },
          { kind: 'virtiofsd', name: 'out', dir: out },
        ],
        scenarioOn: ['u-9', 'u-v', 'u-q'],
        env: { CORPUS_OUT: '/mnt/out', CORPUS_PLAN: 'u-9=build:c1 u-v=build:c2 u-q=dump:u-9,dump:u-v,dump' },
      });
    } catch (e) {
      if (e instanceof Error && daemon) e.message += `\n--- duofs (uid ${UID}) output (tail) ---\n${tail(daemon.output(), 30)}`;
      throw e;
    } finally {
      duofsLog = daemon?.output() ?? '';
      await daemon?.stop();
    }
    for (const n of ['u-9', 'u-v', 'u-q']) {
      const f = join(out, `${n}.txt`);
      dumps.set(n, existsSync(f) ? readFileSync(f, 'latin1') : '');
    }
    host = walk(tree);
    mkdirSync(resultsDir, { recursive: true });
    for (const [n, t] of dumps) writeFileSync(join(resultsDir, `dump-${n}.txt`), t);
    process.stderr.write(
      `lab: unprivileged: wall ${((Date.now() - t0) / 1000).toFixed(1)} s, boot ${((run.bootMs ?? NaN) / 1000).toFixed(1)} s, ` +
        `${run.sections.map((s) => `${s.mount} ${s.guestSeconds}s`).join(', ')}\n`,
    );
  }, 300_000);

  afterAll(() => {
    if (work) removeWorkDir(work);
  });

  test(`duofs ran as uid/gid ${UID} with no supplementary groups`, () => {
    expect(ids).toEqual({ uid: `${UID} ${UID} ${UID} ${UID}`, gid: `${GID} ${GID} ${GID} ${GID}`, groups: '' });
    expect(duofsLog).not.toMatch(/"level":(50|60)/); // no error or fatal lines
  });

  test('the guest chowns, chmods, makes setuid files, devices, fifos and symlinks over 9p and virtio-fs without an error', () => {
    const failed: string[] = [];
    for (const s of run!.sections) {
      if (s.rc !== 0) failed.push(`${s.mount}: exited ${s.rc}\n${tail(s.output, 15)}`);
      for (const [k, v] of s.checks) if (v !== 'ok' && !k.startsWith('dump.')) failed.push(`${s.mount}: ${k} ${v}`);
    }
    expect(failed).toEqual([]);
    const steps = [...run!.sections.find((s) => s.mount === 'u-9')!.checks.keys(), ...run!.sections.find((s) => s.mount === 'u-v')!.checks.keys()];
    for (const step of [
      'c1.owned_1000',
      'c1.setuid',
      'c1.chr_big',
      'c1.blk_sda1',
      'c1.fifo',
      'c1.link_owned',
      'c2.owned_1000',
      'c2.setuid',
      'c2.chr_big',
      'c2.blk_sda1',
      'c2.fifo',
      'c2.link_owned',
    ]) {
      expect(steps).toContain(step);
    }
  });

  test("the guest sees what it made, the same through duofs-9p, duofs-virtiofs and QEMU's 9p", () => {
    const want: Record<string, string> = {
      setuid: 'setuid|89ed|4755|-rwsr-xr-x|regular file|1000|1000|0|0|18|1',
      setuid_setgid: 'setuid_setgid|8de8|6750|-rwsr-s---|regular empty file|1001|1001|0|0|0|1',
      setgid: 'setgid|85c9|2711|-rwx--s--x|regular file|0|1000|0|0|1|1',
      owned_1001_100: 'owned_1001_100|8184|604|-rw----r--|regular file|1001|100|0|0|1|1',
      owned_nobody: 'owned_nobody|8180|600|-rw-------|regular empty file|65534|65534|0|0|0|1',
      chr_big: 'chr_big|2180|600|crw-------|character special file|0|0|12c|11170|0|1',
      chr_tty: 'chr_tty|2190|620|crw--w----|character special file|0|5|4|40|0|2',
      blk_sda1: 'blk_sda1|61b0|660|brw-rw----|block special file|0|6|8|1|0|1',
      blk_big: 'blk_big|61a0|640|brw-r-----|block special file|0|0|103|fffff|0|1',
      fifo: 'fifo|11a4|644|prw-r--r--|fifo|1000|1000|0|0|0|2',
      socket_node: 'socket_node|c1ed|755|srwxr-xr-x|socket|0|0|0|0|0|1',
      link_owned: 'link_owned|a1ff|777|lrwxrwxrwx|symbolic link|1000|1001|0|0|10|1',
      dir_owned: 'dir_owned|41e8|750|drwxr-x---|directory|1000|1000|0|0|4096|2',
      dir_sticky: 'dir_sticky|43ff|1777|drwxrwxrwt|directory|0|0|0|0|4096|3',
      all_bits: 'all_bits|8fff|7777|-rwsrwsrwt|regular empty file|0|0|0|0|0|1',
    };
    const bad: string[] = [];
    for (const [mount, dump] of dumps) {
      expect(dump).toContain('== end');
      for (const sub of ['c1', 'c2']) {
        for (const [name, fields] of Object.entries(want)) {
          const got = statFields(dump, `./${sub}/${name}`);
          if (got !== `./${sub}/${fields}`) bad.push(`${mount} ./${sub}/${name}: got ${got}, want ./${sub}/${fields}`);
        }
        if (!dump.includes(`./${sub}/link_owned|owned_1000\n`)) bad.push(`${mount}: readlink ./${sub}/link_owned is not owned_1000`);
      }
    }
    expect(bad).toEqual([]);
    const q = normaliseInodes(dumps.get('u-q')!);
    expect(normaliseInodes(dumps.get('u-9')!)).toBe(q);
    expect(normaliseInodes(dumps.get('u-v')!)).toBe(q);
  });

  test(`on the host, everything is a regular file or directory of uid ${UID}, without setuid/setgid/sticky bits`, () => {
    expect(host.length).toBeGreaterThan(100);
    const bad = host
      .filter((e) => !['reg', 'dir'].includes(e.type) || e.uid !== UID || e.gid !== GID || (e.mode & 0o7000) !== 0)
      .map((e) => `${e.path}: ${e.type} ${e.mode.toString(8)} ${e.uid}:${e.gid}`);
    expect(bad).toEqual([]);
    // no host device numbers, no guest-visible metadata leaking into host modes
    expect(host.filter((e) => e.type === 'reg' && (e.mode & 0o7777) !== 0o600).map((e) => `${e.path} ${e.mode.toString(8)}`)).toEqual([]);
  });

  test("on the host, the guest's owners, modes, file types and device numbers are in user.virtfs.* xattrs", () => {
    const byPath = new Map(host.map((e) => [e.path, e]));
    const meta = (p: string) => {
      const x = byPath.get(p)?.xattrs;
      return {
        uid: u32(x?.get('user.virtfs.uid')),
        gid: u32(x?.get('user.virtfs.gid')),
        mode: u32(x?.get('user.virtfs.mode')),
        rdev: u64(x?.get('user.virtfs.rdev')),
      };
    };
    for (const sub of ['c1', 'c2']) {
      expect(meta(`${sub}/setuid`)).toMatchObject({ uid: 1000, gid: 1000, mode: 0o104755 });
      expect(meta(`${sub}/setuid_setgid`)).toMatchObject({ uid: 1001, gid: 1001, mode: 0o106750 });
      expect(meta(`${sub}/owned_nobody`)).toMatchObject({ uid: 65534, gid: 65534, mode: 0o100600 });
      expect(meta(`${sub}/chr_big`)).toMatchObject({ uid: 0, gid: 0, mode: 0o020600, rdev: makedev(300, 70000) });
      expect(meta(`${sub}/chr_tty`)).toMatchObject({ uid: 0, gid: 5, mode: 0o020620, rdev: makedev(4, 64) });
      expect(meta(`${sub}/blk_sda1`)).toMatchObject({ uid: 0, gid: 6, mode: 0o060660, rdev: makedev(8, 1) });
      expect(meta(`${sub}/blk_big`)).toMatchObject({ mode: 0o060640, rdev: makedev(259, 1048575) });
      expect(meta(`${sub}/fifo`)).toMatchObject({ uid: 1000, gid: 1000, mode: 0o010644 });
      expect(meta(`${sub}/socket_node`)).toMatchObject({ mode: 0o140755 });
      expect(meta(`${sub}/link_owned`)).toMatchObject({ uid: 1000, gid: 1001, mode: 0o120777 });
      expect(meta(`${sub}/dir_owned`)).toMatchObject({ uid: 1000, gid: 1000, mode: 0o040750 });
      expect(meta(`${sub}/all_bits`)).toMatchObject({ mode: 0o107777 });
      // symlinks are regular files holding the target; devices, fifos, sockets are empty
      expect(byPath.get(`${sub}/link_owned`)?.content?.toString()).toBe('owned_1000');
      expect(byPath.get(`${sub}/link_long`)?.content?.toString()).toMatch(/^segment00\/segment01\//);
      for (const n of ['chr_big', 'blk_sda1', 'fifo', 'socket_node']) expect(byPath.get(`${sub}/${n}`)?.content?.length).toBe(0);
      // the ACL set with setfacl is stored under the model's name
      expect(byPath.get(`${sub}/acl_file`)?.xattrs.has('user.virtfs.system.posix_acl_access')).toBe(true);
      expect(byPath.get(`${sub}/acl_file`)?.xattrs.has('system.posix_acl_access')).toBe(false);
    }
    expect(meta('.')).toMatchObject({ uid: 0, gid: 10, mode: 0o040751 });
  });
});
