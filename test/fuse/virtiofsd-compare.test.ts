// Side by side with the reference: the same FUSE requests, through the same
// test frontend, to duofs and to the Rust virtiofsd (1.14, from the lab
// root) serving identical trees; the errno and the key fields of every reply
// must agree, except for the differences listed (and explained) below.
// Skipped when the lab root has not been built or we are not root.
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  FATTR,
  FuseClient,
  FuseError,
  INIT_FLAGS as F,
  IN_HEADER,
  OP,
  ROOT,
  RENAME_NOREPLACE,
  S_IFMT,
  SEEK_DATA,
  SEEK_HOLE,
  cstr,
  replyErrno,
  type Dirent,
} from './client.js';
import { FuseFixture } from './fixture.js';
import { VhostUserFrontend } from '../vhost/driver.js';
import { repoRoot } from '../support/daemon.js';

jest.setTimeout(30_000);

const labRoot = path.join(repoRoot, '.lab/root');
const loader = path.join(labRoot, 'lib64/ld-linux-x86-64.so.2');
const binary = path.join(labRoot, 'usr/libexec/virtiofsd');
const available = fs.existsSync(loader) && fs.existsSync(binary) && process.getuid?.() === 0;

/** The same starting tree in each export. */
function populate(dir: string): void {
  // Explicit modes: duofs sets the process umask to 0 once it runs in this process.
  fs.writeFileSync(path.join(dir, 'file'), 'hello world\n', { mode: 0o644 });
  fs.chmodSync(path.join(dir, 'file'), 0o644);
  fs.mkdirSync(path.join(dir, 'dir'));
  fs.writeFileSync(path.join(dir, 'dir', 'inner'), 'inner');
  fs.symlinkSync('file', path.join(dir, 'link'));
  fs.writeFileSync(path.join(dir, 'suid'), 'x');
  fs.chmodSync(path.join(dir, 'suid'), 0o4755);
  fs.writeFileSync(path.join(dir, 'sgid-nox'), 'x');
  fs.chmodSync(path.join(dir, 'sgid-nox'), 0o2744);
  for (const f of ['suid-keep', 'suid-write']) {
    fs.writeFileSync(path.join(dir, f), 'x');
    fs.chmodSync(path.join(dir, f), 0o4755);
  }
  fs.writeFileSync(path.join(dir, 'trunc-suid'), 'x');
  fs.chmodSync(path.join(dir, 'trunc-suid'), 0o6755);
  fs.writeFileSync(path.join(dir, 'locked'), 'lock');
  const fd = fs.openSync(path.join(dir, 'sparse'), 'w');
  fs.writeSync(fd, 'A'.repeat(4096), 0);
  fs.writeSync(fd, 'B'.repeat(4096), 1 << 20);
  fs.closeSync(fd);
  fs.mkdirSync(path.join(dir, 'full'));
  fs.writeFileSync(path.join(dir, 'full', 'x'), '');
}

interface Target {
  name: string;
  dir: string;
  c: FuseClient;
  /** what GETATTR answered before INIT (asked on the same connection, first thing) */
  beforeInit: string;
}

/** What a request answered: its errno name, or the key fields of the reply. */
type Outcome = string;

const errOf = (e: unknown): string => {
  if (e instanceof FuseError) return e.code;
  if (e instanceof Error && /^timed out/.test(e.message)) return 'no reply';
  throw e;
};
async function outcome(f: () => Promise<string>): Promise<Outcome> {
  try {
    return await f();
  } catch (e) {
    return errOf(e);
  }
}

const kind = (mode: number): string =>
  (({ 0o100000: 'reg', 0o040000: 'dir', 0o120000: 'lnk', 0o010000: 'fifo', 0o020000: 'chr' }) as Record<number, string>)[mode & S_IFMT] ?? '?';

/** The cases: each returns a short description of the reply. */
const cases: [string, (t: Target) => Promise<string>][] = [
  [
    'INIT: version and max_write',
    async (t) => {
      const r = t.c.init!;
      return `${r.major}.${Math.min(r.minor, 38)} max_write ${r.maxWrite >= 128 * 1024 ? '>=128K' : r.maxWrite}`;
    },
  ],
  [
    'INIT: lock, readdirplus and killpriv flags',
    async (t) => {
      const f = t.c.init!.flags;
      return [
        ['POSIX_LOCKS', F.POSIX_LOCKS],
        ['FLOCK_LOCKS', F.FLOCK_LOCKS],
        ['DO_READDIRPLUS', F.DO_READDIRPLUS],
        ['HANDLE_KILLPRIV_V2', F.HANDLE_KILLPRIV_V2],
        ['ASYNC_READ', F.ASYNC_READ],
        ['BIG_WRITES', F.BIG_WRITES],
        ['WRITEBACK_CACHE', F.WRITEBACK_CACHE],
      ]
        .filter(([, v]) => (f & (v as bigint)) !== 0n)
        .map(([n]) => n)
        .join(' ');
    },
  ],
  ['GETATTR before INIT', async (t) => t.beforeInit],
  [
    'LOOKUP file',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'file');
      return `${kind(e.attr.mode)} ${(e.attr.mode & 0o7777).toString(8)} size ${e.attr.size} nlink ${e.attr.nlink}`;
    },
  ],
  [
    'LOOKUP missing',
    async (t) =>
      outcome(async () => {
        await t.c.lookup(ROOT, 'missing');
        return 'OK';
      }),
  ],
  [
    'LOOKUP symlink',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'link');
      return `${kind(e.attr.mode)} size ${e.attr.size}`;
    },
  ],
  [
    'LOOKUP "a/b"',
    async (t) =>
      outcome(async () => {
        await t.c.lookup(ROOT, 'dir/inner');
        return 'OK';
      }),
  ],
  [
    'GETATTR of a node id never given out',
    async (t) =>
      outcome(async () => {
        await t.c.getattr(987_654n);
        return 'OK';
      }),
  ],
  [
    'MKDIR new, mode 0750',
    async (t) => {
      const e = await t.c.mkdir(ROOT, 'newdir', 0o750);
      return `${kind(e.attr.mode)} ${(e.attr.mode & 0o7777).toString(8)} nlink ${e.attr.nlink}`;
    },
  ],
  [
    'MKDIR existing',
    async (t) =>
      outcome(async () => {
        await t.c.mkdir(ROOT, 'dir');
        return 'OK';
      }),
  ],
  [
    'CREATE O_EXCL existing',
    async (t) =>
      outcome(async () => {
        await t.c.create(ROOT, 'file', 0o302);
        return 'OK';
      }),
  ],
  [
    'CREATE + WRITE + READ',
    async (t) => {
      const r = await t.c.create(ROOT, 'created', 0o102, 0o640);
      const n = await t.c.write(r.open.fh, 0n, Buffer.from('payload'));
      const back = await t.c.read(r.open.fh, 2n, 100);
      await t.c.release(r.open.fh);
      return `mode ${(r.entry.attr.mode & 0o7777).toString(8)} wrote ${n} read "${back.toString()}" host "${fs.readFileSync(path.join(t.dir, 'created'), 'utf8')}"`;
    },
  ],
  [
    'READ short at EOF, empty past it',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'file');
      const o = await t.c.open(e.nodeid, 0);
      const a = await t.c.read(o.fh, 6n, 100);
      const b = await t.c.read(o.fh, 100n, 100);
      await t.c.release(o.fh);
      return `"${a.toString().trim()}" ${a.length} / ${b.length}`;
    },
  ],
  [
    'READ with a handle never opened',
    async (t) =>
      outcome(async () => {
        await t.c.read(4242n, 0n, 10);
        return 'OK';
      }),
  ],
  [
    'OPEN a symlink',
    async (t) =>
      outcome(async () => {
        await t.c.open((await t.c.lookup(ROOT, 'link')).nodeid, 0);
        return 'OK';
      }),
  ],
  [
    'OPEN a directory for writing',
    async (t) =>
      outcome(async () => {
        await t.c.open(ROOT, 1);
        return 'OK';
      }),
  ],
  [
    'SETATTR size 3',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'file');
      const a = await t.c.setattr(e.nodeid, { valid: FATTR.SIZE, size: 3n });
      return `size ${a.attr.size} host ${fs.statSync(path.join(t.dir, 'file')).size}`;
    },
  ],
  [
    'SETATTR size+KILL_SUIDGID as uid 0, 04755',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'suid');
      await t.c.setattr(e.nodeid, { valid: FATTR.SIZE | FATTR.KILL_SUIDGID, size: 0n }, { uid: 0, gid: 0 });
      return (fs.statSync(path.join(t.dir, 'suid')).mode & 0o7777).toString(8);
    },
  ],
  [
    'SETATTR size+KILL_SUIDGID as uid 1000, 02744',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'sgid-nox');
      await t.c.setattr(e.nodeid, { valid: FATTR.SIZE | FATTR.KILL_SUIDGID, size: 0n }, { uid: 1000, gid: 1000 });
      return (fs.statSync(path.join(t.dir, 'sgid-nox')).mode & 0o7777).toString(8);
    },
  ],
  [
    'SETATTR size without KILL_SUIDGID as uid 1000, 04755',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'suid-keep');
      await t.c.setattr(e.nodeid, { valid: FATTR.SIZE, size: 0n }, { uid: 1000, gid: 1000 });
      return (fs.statSync(path.join(t.dir, 'suid-keep')).mode & 0o7777).toString(8);
    },
  ],
  [
    'WRITE with WRITE_KILL_SUIDGID as uid 0, 04755',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'suid-write');
      const o = await t.c.open(e.nodeid, 1);
      await t.c.write(o.fh, 0n, Buffer.from('y'), { writeFlags: 4, uid: 0, gid: 0 });
      await t.c.release(o.fh);
      return (fs.statSync(path.join(t.dir, 'suid-write')).mode & 0o7777).toString(8);
    },
  ],
  [
    'OPEN O_TRUNC with FUSE_OPEN_KILL_SUIDGID, 06755',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'trunc-suid');
      const o = await t.c.open(e.nodeid, 0o1001, { openFlags: 1, uid: 1000, gid: 1000 });
      await t.c.release(o.fh);
      return (fs.statSync(path.join(t.dir, 'trunc-suid')).mode & 0o7777).toString(8);
    },
  ],
  ['READLINK', async (t) => (await t.c.readlink((await t.c.lookup(ROOT, 'link')).nodeid)).toString()],
  [
    'READLINK of a file',
    async (t) =>
      outcome(async () => {
        await t.c.readlink((await t.c.lookup(ROOT, 'file')).nodeid);
        return 'OK';
      }),
  ],
  [
    'UNLINK a directory',
    async (t) =>
      outcome(async () => {
        await t.c.unlink(ROOT, 'dir');
        return 'OK';
      }),
  ],
  [
    'RMDIR non-empty',
    async (t) =>
      outcome(async () => {
        await t.c.rmdir(ROOT, 'full');
        return 'OK';
      }),
  ],
  [
    'RENAME2 NOREPLACE onto an existing name',
    async (t) =>
      outcome(async () => {
        await t.c.rename2(ROOT, 'file', ROOT, 'locked', RENAME_NOREPLACE);
        return 'OK';
      }),
  ],
  [
    'GETXATTR missing',
    async (t) =>
      outcome(async () => {
        await t.c.getxattr(ROOT, 'user.none', 10);
        return 'OK';
      }),
  ],
  [
    'SETXATTR, size-0 GETXATTR, ERANGE, LISTXATTR size',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'file');
      await t.c.setxattr(e.nodeid, 'user.k', Buffer.from('value'));
      const size = await t.c.getxattr(e.nodeid, 'user.k', 0);
      const small = await outcome(async () => {
        await t.c.getxattr(e.nodeid, 'user.k', 2);
        return 'OK';
      });
      const list = await t.c.listxattr(e.nodeid, 0);
      return `size ${String(size)} small ${small} list ${String(list)}`;
    },
  ],
  [
    'LSEEK SEEK_DATA/SEEK_HOLE, past EOF',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'sparse');
      const o = await t.c.open(e.nodeid, 0);
      const r = [await t.c.lseek(o.fh, 0n, SEEK_HOLE), await t.c.lseek(o.fh, 4096n, SEEK_DATA)].join(' ');
      const past = await outcome(async () => {
        await t.c.lseek(o.fh, 2n << 20n, SEEK_DATA);
        return 'OK';
      });
      await t.c.release(o.fh);
      return `${r} ${past}`;
    },
  ],
  ['STATFS namelen', async (t) => `namelen ${(await t.c.statfs(ROOT)).namelen}`],
  [
    'READDIR names',
    async (t) => {
      const h = await t.c.opendir(ROOT);
      const l = (await t.c.readdirAll(h.fh)) as Dirent[];
      await t.c.releasedir(h.fh);
      return l
        .map((d) => d.name.toString())
        .filter((n) => !['created', 'newdir', 'suid-keep', 'suid-write'].includes(n))
        .sort()
        .join(',');
    },
  ],
  [
    'SETLK conflict, GETLK',
    async (t) => {
      const e = await t.c.lookup(ROOT, 'locked');
      const o = await t.c.open(e.nodeid, 2);
      await t.c.setlk(e.nodeid, o.fh, 1n, { type: 1, start: 0n, end: 9n });
      const conflict = await outcome(async () => {
        await t.c.setlk(e.nodeid, o.fh, 2n, { type: 1, start: 5n, end: 5n });
        return 'OK';
      });
      const g = await t.c.getlk(e.nodeid, o.fh, 2n, { type: 0 });
      await t.c.release(o.fh);
      return `${conflict} holder type ${g.type} ${g.start}-${g.end}`;
    },
  ],
];

/**
 * Malformed requests. virtiofsd stops serving a queue after some of these,
 * so each runs on a virtiofsd of its own; "no reply" means the request never
 * came back (the queue is dead for the guest).
 */
const hostileCases: [string, (t: Target) => Promise<string>][] = [
  [
    'LOOKUP name without NUL',
    async (t) =>
      outcome(async () => {
        await t.c.call(OP.LOOKUP, [Buffer.from('file')], { nodeid: ROOT });
        return 'OK';
      }),
  ],
  [
    'unknown opcode 4096',
    async (t) =>
      outcome(async () => {
        await t.c.call(4096, [Buffer.alloc(16)], { nodeid: ROOT });
        return 'OK';
      }),
  ],
  [
    'RENAME with a short argument',
    async (t) =>
      outcome(async () => {
        await t.c.call(OP.RENAME, [Buffer.alloc(4)], { nodeid: ROOT });
        return 'OK';
      }),
  ],
  ['header len beyond the chain', async (t) => replyErrno(t.c.send(OP.GETATTR, [Buffer.alloc(16)], { nodeid: ROOT, len: IN_HEADER + 4096 }).reply)],
  [
    'READ above 1 MiB + 128 KiB',
    async (t) => {
      const o = await t.c.open((await t.c.lookup(ROOT, 'file')).nodeid, 0);
      const r = await outcome(async () => {
        await t.c.read(o.fh, 0n, (1 << 20) + (1 << 17) + 1, { in: [16, 4096] });
        return 'OK';
      });
      await t.c.release(o.fh);
      return r;
    },
  ],
  ['LOOKUP reply buffer too small', async (t) => replyErrno(t.c.send(OP.LOOKUP, [cstr('file')], { nodeid: ROOT, in: [16, 40] }).reply)],
];

/**
 * Where duofs deliberately differs from virtiofsd 1.14, and why. Every
 * other case must agree; a listed case must still differ (so the list stays true).
 */
const knownDifferences: Record<string, string> = {
  'GETATTR of a node id never given out': 'duofs: ESTALE (what the kernel expects for a stale node id); virtiofsd: EBADF',
  'GETATTR before INIT': 'duofs: EIO (as libfuse); virtiofsd: EBADF (no inode table yet)',
  'LOOKUP "a/b"': 'duofs refuses a name with "/" (EINVAL); virtiofsd resolves it as a path (sandboxing is its wall)',
  'INIT: lock, readdirplus and killpriv flags': 'duofs implements POSIX and flock locks on host OFD locks; virtiofsd 1.14 has none (ENOSYS)',
  'SETLK conflict, GETLK': 'duofs implements POSIX locks; virtiofsd 1.14 answers ENOSYS',
  'OPEN a symlink': 'duofs: ELOOP, as open(O_NOFOLLOW) says (the kernel never opens a symlink); virtiofsd: EBADF',
  'READLINK of a file': 'duofs: EINVAL, as readlink(2) says; virtiofsd: ENOENT (readlinkat with an empty path)',
  'READ above 1 MiB + 128 KiB': 'duofs refuses a READ above max_write (EINVAL); virtiofsd reads what fits in the buffers',
  'LOOKUP name without NUL': 'duofs: EINVAL; virtiofsd drops the request and stops serving the queue',
  'RENAME with a short argument': 'duofs: an error reply; virtiofsd drops the request and stops serving the queue',
  'header len beyond the chain': 'duofs: EINVAL; virtiofsd ignores the header length and answers',
  'LOOKUP reply buffer too small': 'duofs: EOVERFLOW in the reply header; virtiofsd drops the request and stops serving the queue',
};

interface Vfsd {
  target: Target;
  stop(): void;
}

/** A virtiofsd on a fresh copy of the tree, connected and (after the before-INIT probe) initialized. */
async function startVirtiofsd(frontends: VhostUserFrontend[]): Promise<Vfsd> {
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-fuse-vfsd-')));
  const shared = path.join(base, 'export');
  fs.mkdirSync(shared);
  fs.chmodSync(shared, 0o755);
  populate(shared);
  const sock = path.join(base, 'vfsd.sock');
  let stderr = '';
  const proc = spawn(
    loader,
    [
      '--library-path',
      path.join(labRoot, 'usr/lib/x86_64-linux-gnu'),
      binary,
      `--socket-path=${sock}`,
      `--shared-dir=${shared}`,
      '--sandbox=none',
      '--xattr',
      '--cache=auto',
      '--killpriv-v2',
      '--log-level=error',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const stop = (): void => {
    proc.kill('SIGKILL');
    fs.rmSync(base, { recursive: true, force: true });
  };
  for (let i = 0; i < 500 && !fs.existsSync(sock) && proc.exitCode === null; i++) await new Promise((r) => setTimeout(r, 20));
  if (!fs.existsSync(sock)) {
    stop();
    throw new Error(`virtiofsd did not start: ${stderr}`);
  }
  // The socket file appears just before virtiofsd listens on it: retry a refused connect.
  let fe: VhostUserFrontend | undefined;
  for (let i = 0; !fe; i++) {
    try {
      fe = await VhostUserFrontend.connect({ socketPath: sock });
    } catch (e) {
      if (i >= 100 || !/ECONNREFUSED/.test(String(e))) {
        stop();
        throw e;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  frontends.push(fe);
  const c = new FuseClient(fe);
  const beforeInit = await replyErrno(c.send(OP.GETATTR, [Buffer.alloc(16)], { nodeid: ROOT }).reply);
  await c.doInit();
  return { target: { name: 'virtiofsd', dir: shared, c, beforeInit }, stop };
}

(available ? describe : describe.skip)('duofs and virtiofsd 1.14 side by side', () => {
  const targets: Target[] = [];
  const frontends: VhostUserFrontend[] = [];
  let fx: FuseFixture;
  const stops: (() => void)[] = [];
  const results: { name: string; duofs: Outcome; virtiofsd: Outcome }[] = [];

  async function connect(sock: string): Promise<FuseClient> {
    const fe = await VhostUserFrontend.connect({ socketPath: sock });
    frontends.push(fe);
    return new FuseClient(fe);
  }

  beforeAll(async () => {
    fx = new FuseFixture();
    populate(fx.dir);
    await fx.start({ fuse: { xattr: true, cache: 'auto' } });

    const c = await connect(fx.socketPath);
    const beforeInit = await replyErrno(c.send(OP.GETATTR, [Buffer.alloc(16)], { nodeid: ROOT }).reply);
    await c.doInit();
    targets.push({ name: 'duofs', dir: fx.dir, c, beforeInit });
    const v = await startVirtiofsd(frontends);
    stops.push(v.stop);
    targets.push(v.target);
  });

  afterAll(async () => {
    if (results.length) {
      const w = Math.max(...results.map((r) => r.name.length));
      const rows = results.map((r) => `${r.duofs === r.virtiofsd ? ' ' : '≠'} ${r.name.padEnd(w)} | ${r.duofs} | ${r.virtiofsd}`);
      console.log(`duofs vs virtiofsd 1.14 (case | duofs | virtiofsd):\n${rows.join('\n')}`);
    }
    for (const fe of frontends) fe.close();
    for (const stop of stops) stop();
    await fx?.close();
  });

  test.each(cases.map(([name]) => [name]))('%s', async (name) => {
    const run = cases.find(([n]) => n === name)![1];
    const [d, v] = targets;
    const r = { name, duofs: await outcome(() => run(d!)), virtiofsd: await outcome(() => run(v!)) };
    results.push(r);
    if (knownDifferences[name]) expect(r.duofs).not.toBe(r.virtiofsd);
    else expect(r.duofs).toBe(r.virtiofsd);
  });

  test.each(hostileCases.map(([name]) => [name]))('malformed: %s', async (name) => {
    const run = hostileCases.find(([n]) => n === name)![1];
    const d = targets[0]!;
    d.c.timeoutMs = 2000;
    const v = await startVirtiofsd(frontends);
    stops.push(v.stop);
    v.target.c.timeoutMs = 500;
    const r = { name, duofs: await outcome(() => run(d)), virtiofsd: await outcome(() => run(v.target)) };
    results.push(r);
    expect(r.duofs).not.toBe('no reply'); // duofs always answers
    if (knownDifferences[name]) expect(r.duofs).not.toBe(r.virtiofsd);
    else expect(r.duofs).toBe(r.virtiofsd);
  });
});
