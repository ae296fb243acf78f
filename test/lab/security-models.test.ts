// QEMU's -fsdev local security models, both directions, on real guests:
// for passthrough, mapped-xattr and mapped-file, a corpus (owners, setuid/
// setgid/sticky, devices, fifos, a socket node, symlinks, hard links, user
// xattrs, POSIX ACLs, umask and default-ACL creation, nested directories;
// test/lab/guest/scenarios/corpus-build.py) is built
//   A: through QEMU's built-in 9p (-fsdev local,security_model=M), in c1
//      (c2 only made, so that the roots look alike), and
//   B: through duofs (one duofs per tree, --security-model M, serving both
//      protocols): c1 over duofs-9p (vhost-user, trans=virtio), c2 over
//      duofs-virtiofs (--xattr);
// then every tree is read through all three at once (QEMU 9p, duofs-9p,
// duofs-virtiofs; duofs started afresh, for A with the VM's -fsdev string)
// and the guest's stat / ls -ln / getfattr -d / getfacl / readlink / md5sum
// output (corpus-dump.sh) must be the same text everywhere. Then what duofs
// built over 9p (B/c1) and over virtio-fs (B/c2) must be what QEMU built
// (A/c1), as QEMU's 9p shows it and byte for byte on the host
// (xattrs, .virtfs_metadata files, host types/modes/owners/rdev, symlink and
// metadata file contents, hard-link structure); and reading must not have
// changed any tree. Expected values pin down what QEMU itself shows and
// stores, so agreement on something wrong cannot pass.
//
// Two guests in all: boot 1 builds the six trees (three QEMU mounts, six
// duofs mounts), boot 2 reads them (18 mounts, one after the other; dumping
// them in parallel did not help: the single TCG vCPU is the bottleneck). The dumps go to a virtiofsd
// "out" mount; dumps, host snapshots and diffs land in
// .lab/results/security-models/.
//
// 9p mounts use `posixacl`: without it the guest's 9p client refuses POSIX
// ACLs (setfacl and getxattr give EOPNOTSUPP), whoever serves.
//
// Normalised, and why:
// * inode numbers (stat %i) become "ino#N" by first appearance. One file
//   shows three numbers: QEMU (multidevs=remap, its default) remaps host
//   inode numbers into qid paths (seen: 2*ino+1), duofs-9p uses the host
//   inode number, the guest's 9p client adds 2 to the qid path, and
//   virtio-fs shows the host number. Which names share an inode is the
//   guest-visible fact, and that is kept.
// * when trees A and B (or c1 and c2) are compared, times are dropped and the
//   subtree's name becomes SUB: they differ by construction. Servers reading
//   one tree must agree on mtimes to the nanosecond (they do).
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { freshTree, runGuest, type GuestRun, type MountSpec, type SecurityModel } from './guest.js';
import { labAvailable, labDir, makeWorkDir, removeWorkDir, tail } from './lab.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { c, cstr } from '../../src/sys/libc.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

const MODELS = ['passthrough', 'mapped-xattr', 'mapped-file'] as const satisfies readonly SecurityModel[];
type Model = (typeof MODELS)[number];
const SHORT: Record<Model, string> = { passthrough: 'px', 'mapped-xattr': 'mx', 'mapped-file': 'mf' };
type Server = 'q' | 'd9' | 'dv'; // QEMU 9p, duofs-9p, duofs-virtiofs
const SERVER_NAME: Record<Server, string> = { q: 'qemu-9p', d9: 'duofs-9p', dv: 'duofs-virtiofs' };
/** The guest's 9p client refuses POSIX ACLs (EOPNOTSUPP from setfacl and getxattr) unless mounted with posixacl. */
const P9_OPTIONS = 'posixacl';
const resultsDir = join(labDir, 'results', 'security-models');

// ------------------------------------------------------------ host side: on-disk metadata

/** lgetxattr/llistxattr through the project's libc binding (Node has no xattr API). */
function hostXattrs(path: string): Array<[string, string]> {
  const list = Buffer.alloc(65536);
  const n = Number(c.llistxattr(cstr(path), list, list.length));
  if (n < 0) return [['(llistxattr failed)', '']];
  const names = list.subarray(0, n).toString('latin1').split('\0').filter(Boolean).sort();
  const val = Buffer.alloc(65536);
  return names.map((name) => {
    const m = Number(c.lgetxattr(cstr(path), cstr(Buffer.from(name, 'latin1')), val, val.length));
    return [name, m < 0 ? '(lgetxattr failed)' : val.subarray(0, m).toString('hex')];
  });
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

interface SnapEntry {
  path: string;
  line: string;
  ino: bigint;
  times: string;
}

/**
 * Every host object under root (symlinks not followed), in byte order of the
 * path: type, mode, owner, rdev, size, links, xattrs (hex), symlink target,
 * and the content of small files (all of .virtfs_metadata's). Times separate.
 */
function snapshot(root: string): SnapEntry[] {
  const out: SnapEntry[] = [];
  const walk = (rel: string) => {
    const abs = rel ? join(root, rel) : root;
    const st = lstatSync(abs, { bigint: true });
    const type = TYPE[Number(st.mode) & 0o170000] ?? 'unknown';
    let extra = '';
    if (type === 'link') extra = ` -> ${readlinkSync(abs, { encoding: 'buffer' }).toString('latin1')}`;
    if (type === 'reg') {
      const data = readFileSync(abs);
      extra = rel.includes('.virtfs_metadata')
        ? ` content=${JSON.stringify(data.toString('latin1'))}`
        : ` md5=${createHash('md5').update(data).digest('hex')}`;
    }
    const dev = type === 'chr' || type === 'blk' ? ` rdev=${(st.rdev >> 8n) & 0xfffn}:${(st.rdev & 0xffn) | ((st.rdev >> 12n) & 0xfff00n)}` : '';
    const size = type === 'dir' ? '' : ` size=${st.size}`;
    const xattrs = hostXattrs(abs)
      .map(([k, v]) => ` ${k}=${v}`)
      .join('');
    out.push({
      path: rel || '.',
      line: `${rel || '.'} ${type} mode=${(Number(st.mode) & 0o7777).toString(8)} ${st.uid}:${st.gid}${dev}${size} nlink=${st.nlink}${extra}${xattrs}`,
      ino: st.ino,
      times: `mtime=${st.mtimeNs} ctime=${st.ctimeNs}`,
    });
    if (type === 'dir') {
      const names = readdirSync(abs, { encoding: 'buffer' })
        .map((b) => b.toString('latin1'))
        .sort();
      for (const n of names) walk(rel ? `${rel}/${Buffer.from(n, 'latin1').toString()}` : Buffer.from(n, 'latin1').toString());
    }
  };
  walk('');
  return out;
}

/** A snapshot as text: inode numbers as ordinals (hard-link groups), optionally with times. */
function snapText(s: SnapEntry[], withTimes: boolean): string {
  const ord = new Map<bigint, number>();
  return (
    s
      .map((e) => {
        if (!ord.has(e.ino)) ord.set(e.ino, ord.size);
        return `${e.line} ino#${ord.get(e.ino)}${withTimes ? ` ${e.times}` : ''}`;
      })
      .join('\n') + '\n'
  );
}

// ------------------------------------------------------------ guest dumps

/** A corpus-dump.sh output with inode numbers replaced by ordinals; times dropped when asked. */
function normaliseDump(text: string, withTimes: boolean): string {
  const ord = new Map<string, number>();
  let section = '';
  return text
    .split('\n')
    .map((line) => {
      if (line.startsWith('== ')) {
        section = line.slice(3);
        return line;
      }
      if (section === 'stat') {
        const f = line.split('|');
        if (f.length >= 13) {
          const ino = f[11];
          if (!ord.has(ino)) ord.set(ino, ord.size);
          f[11] = `ino#${ord.get(ino)}`;
          if (!withTimes) f[12] = 'TIME';
          return f.join('|');
        }
      }
      if (section === 'ls' && !withTimes) return line.replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [+-]\d{4}/, 'TIME');
      return line;
    })
    .join('\n');
}

/** diff -u of two texts (both written under results/), or '' when equal. */
function diffTexts(aName: string, a: string, bName: string, b: string): string {
  if (a === b) return '';
  mkdirSync(resultsDir, { recursive: true });
  const fa = join(resultsDir, `${aName}.txt`);
  const fb = join(resultsDir, `${bName}.txt`);
  writeFileSync(fa, a);
  writeFileSync(fb, b);
  const r = spawnSync('diff', ['-u', fa, fb], { encoding: 'utf8' });
  const out = r.stdout || '(diff printed nothing)';
  writeFileSync(join(resultsDir, `${aName}--${bName}.diff`), out);
  return out.split('\n').slice(0, 150).join('\n');
}

/** The corpus subtree a path (relative, './'-prefixed or not) belongs to: '.' for the root and the model's root bookkeeping. */
function subtreeOf(path: string): string {
  const p = path.replace(/^\.\//, '');
  if (p === '.' || p === '' || p === '.virtfs_metadata' || p === '.virtfs_metadata_root') return '.';
  const parts = p.split('/');
  return parts[0] === '.virtfs_metadata' ? parts[1] : parts[0];
}

/** Replaces the subtree's name in a path by SUB, so c1 and c2 (or A's c1 and B's c1) compare line by line. */
function renameSubtree(line: string, key: string): string {
  if (key === '.') return line;
  const k = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return line
    .replace(new RegExp(`(^|[\\s:|])\\./${k}(?=[/:|\\s]|$)`, 'g'), '$1./SUB')
    .replace(new RegExp(`(^|[\\s])(\\.virtfs_metadata/)?${k}(?=[/\\s]|$)`, 'g'), '$1$2SUB');
}

/**
 * Splits a corpus-dump.sh output into one dump per corpus subtree (c1, c2,
 * and '.' for the mount root), each with its own sections and with the
 * subtree's name replaced by SUB. Every line is assigned by the path it is
 * about: stat/readlink/md5 lines name it, getfattr/getfacl lines follow a
 * "# file:" line, ls lines follow a "DIR:" header (entries of the root
 * listing go with the entry), stderr lines start with it.
 */
function splitDump(text: string): Map<string, string> {
  const parts = new Map<string, Map<string, string[]>>();
  const put = (key: string, section: string, line: string) => {
    if (!parts.has(key)) parts.set(key, new Map());
    const m = parts.get(key)!;
    if (!m.has(section)) m.set(section, []);
    m.get(section)!.push(renameSubtree(line, key));
  };
  let section = '';
  let cur = '.';
  for (const line of text.split('\n')) {
    if (line.startsWith('== ')) {
      section = line.slice(3);
      cur = '.';
      continue;
    }
    if (line === '') continue;
    let key: string;
    if (section.endsWith('stderr')) key = subtreeOf(/^(\S+?):/.exec(line)?.[1] ?? '.');
    else if (section === 'stat' || section === 'readlink') key = subtreeOf(line.split('|')[0]);
    else if (section === 'md5') key = subtreeOf(line.slice(34));
    else if (section === 'getfattr' || section === 'getfacl') {
      const f = /^# file: (.*)$/.exec(line);
      if (f) cur = subtreeOf(f[1]);
      key = cur;
    } else if (section === 'ls') {
      const h = /^(\.[^:]*):$/.exec(line);
      if (h) cur = h[1] === '.' ? '.' : subtreeOf(h[1]);
      const name = line.split(' ').pop() ?? '';
      key = cur === '.' && !h && !line.startsWith('total') ? subtreeOf(name) : cur;
    } else key = '.';
    put(key, section, line);
  }
  const out = new Map<string, string>();
  for (const [key, m] of parts) out.set(key, [...m].map(([sec, lines]) => `== ${sec}\n${lines.join('\n')}\n`).join(''));
  return out;
}

/** A snapshot split the same way (paths rewritten with SUB). */
function splitSnapshot(s: SnapEntry[]): Map<string, SnapEntry[]> {
  const out = new Map<string, SnapEntry[]>();
  for (const e of s) {
    const key = subtreeOf(e.path);
    if (!out.has(key)) out.set(key, []);
    out.get(key)!.push({ ...e, line: renameSubtree(e.line, key) });
  }
  return out;
}

/** The stat line of PATH in a dump as fields: name|hexmode|mode|symbolic|type|uid|gid|major|minor|size|links|ino|mtime. */
function statFields(dump: string, path: string): string | undefined {
  const start = dump.indexOf('== stat\n');
  for (const line of dump.slice(start).split('\n')) {
    const f = line.split('|');
    if (f[0] === path && f.length >= 13) return f.slice(0, 11).join('|');
  }
  return undefined;
}

/** glibc's makedev, for the bytes QEMU stores. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}
const le32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b.toString('hex');
};
const le64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b.toString('hex');
};

// ------------------------------------------------------------ the run

interface Duofs {
  d: HostDaemon;
  sock9: string;
  sockV: string;
}

/** One duofs serving `tree` as duofs-9p (vhost-user) and duofs-virtiofs (with --xattr) at once. */
async function startBoth(sockDir: string, name: string, modelArgs: string[]): Promise<Duofs> {
  mkdirSync(sockDir, { recursive: true });
  const sock9 = join(sockDir, `${name}-9p.sock`);
  const sockV = join(sockDir, `${name}-fs.sock`);
  const d = await startDuofs(
    [
      'serve',
      ...modelArgs,
      '--9p-vhost-socket',
      sock9,
      '--9p-tag',
      `${name}-9`,
      '--virtiofs-socket',
      sockV,
      '--tag',
      `${name}-v`,
      '--xattr',
      '--log-level',
      'info',
    ],
    [sock9, sockV],
  );
  return { d, sock9, sockV };
}

function duofsMounts(name: string, s: Duofs): MountSpec[] {
  return [
    { kind: 'vhost-user-9p', name: `${name}-9`, socket: s.sock9, tag: `${name}-9`, mountOptions: P9_OPTIONS },
    { kind: 'vhost-user-fs', name: `${name}-v`, socket: s.sockV, tag: `${name}-v` },
  ];
}

/** Runs fn, then stops the daemons; their output goes to `logs` (and into an error's message). */
async function withDaemons<T>(daemons: Duofs[], logs: Map<string, string>, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof Error) for (const x of daemons) e.message += `\n--- duofs (${x.sock9}) output (tail) ---\n${tail(x.d.output(), 30)}`;
    throw e;
  } finally {
    await Promise.all(daemons.map((x) => x.d.stop()));
    for (const x of daemons) logs.set(x.sock9, x.d.output());
  }
}

function buildErrors(run: GuestRun): string[] {
  const errs: string[] = [];
  for (const s of run.sections) {
    for (const [k, v] of s.checks) if (v !== 'ok' && !k.startsWith('dump.')) errs.push(`${s.mount}: ${k} ${v}`);
    if (s.rc !== 0) errs.push(`${s.mount}: scenario exited ${s.rc}\n${tail(s.output, 20)}`);
  }
  return errs;
}

d('security models: QEMU -fsdev local and duofs (9p and virtio-fs) read and write the same exports', () => {
  let work = '';
  const trees = new Map<string, string>(); // 'a-px' -> host dir
  const dumps = new Map<string, string>(); // 'a-px-q' -> corpus-dump.sh output
  const snap1 = new Map<string, SnapEntry[]>();
  const snap2 = new Map<string, SnapEntry[]>();
  const buildErrs = new Map<string, string[]>(); // 'a' | 'b' -> failed steps
  const timing: string[] = [];
  const duofsLogs = new Map<string, string>(); // 9p socket -> everything that duofs printed

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    work = makeWorkDir('secmodels');
    for (const m of MODELS) for (const side of ['a', 'b']) trees.set(`${side}-${SHORT[m]}`, freshTree(work, `${side}-${SHORT[m]}`));
    const out1 = freshTree(work, 'out1');
    const out2 = freshTree(work, 'out2');

    // Boot 1: QEMU builds the A trees (c1; c2 only made), duofs the B trees (c1 over 9p, c2 over virtio-fs).
    const t1 = Date.now();
    const b = await Promise.all(
      MODELS.map((m) => startBoth(join(work, 'sock1'), `b-${SHORT[m]}`, ['--shared-dir', trees.get(`b-${SHORT[m]}`)!, '--security-model', m])),
    );
    const run1 = await withDaemons(b, duofsLogs, () =>
      runGuest({
        label: 'secmodels-build',
        workDir: work,
        timeoutMs: 420_000,
        scenario: 'corpus-run.sh',
        scenarioTimeoutSec: 240,
        mounts: [
          ...MODELS.map(
            (m): MountSpec => ({
              kind: 'qemu-9p',
              name: `a-${SHORT[m]}-q`,
              dir: trees.get(`a-${SHORT[m]}`)!,
              securityModel: m,
              mountOptions: P9_OPTIONS,
            }),
          ),
          ...MODELS.flatMap((m, i) => duofsMounts(`b-${SHORT[m]}`, b[i])),
          { kind: 'virtiofsd', name: 'out', dir: out1 },
        ],
        scenarioOn: MODELS.flatMap((m) => [`a-${SHORT[m]}-q`, `b-${SHORT[m]}-9`, `b-${SHORT[m]}-v`]),
        env: {
          CORPUS_OUT: '/mnt/out',
          CORPUS_PLAN: MODELS.flatMap((m) => [`a-${SHORT[m]}-q=build:c1+c2=empty`, `b-${SHORT[m]}-9=build:c1`, `b-${SHORT[m]}-v=build:c2`]).join(' '),
        },
      }),
    );
    const errs1 = buildErrors(run1);
    buildErrs.set(
      'a',
      errs1.filter((e) => e.startsWith('a-')),
    );
    buildErrs.set(
      'b',
      errs1.filter((e) => !e.startsWith('a-')),
    );
    timing.push(
      `boot 1 (build): wall ${((Date.now() - t1) / 1000).toFixed(1)} s, boot ${((run1.bootMs ?? NaN) / 1000).toFixed(1)} s, guest ${run1.sections.map((s) => `${s.mount} ${s.guestSeconds}s`).join(', ')}`,
    );
    for (const [k, dir] of trees) snap1.set(k, snapshot(dir));

    // Boot 2: every tree through QEMU 9p, duofs-9p and duofs-virtiofs at once, read only.
    const t2 = Date.now();
    const readers = await Promise.all(
      [...trees.entries()].map(([k, dir]) => {
        const m = MODELS.find((x) => k.endsWith(SHORT[x]))!;
        // A trees: duofs takes the model from the VM's -fsdev string, as an operator migrating would.
        return startBoth(
          join(work, 'sock2'),
          k,
          k.startsWith('a-') ? ['--fsdev', `local,id=fsdev0,path=${dir},security_model=${m}`] : ['--shared-dir', dir, '--security-model', m],
        );
      }),
    );
    const keys = [...trees.keys()];
    const run2 = await withDaemons(readers, duofsLogs, () =>
      runGuest({
        label: 'secmodels-read',
        workDir: work,
        timeoutMs: 420_000,
        scenario: 'corpus-run.sh',
        scenarioTimeoutSec: 120,
        mounts: [
          ...keys.map(
            (k): MountSpec => ({
              kind: 'qemu-9p',
              name: `${k}-q`,
              dir: trees.get(k)!,
              securityModel: MODELS.find((x) => k.endsWith(SHORT[x]))!,
              mountOptions: P9_OPTIONS,
            }),
          ),
          ...keys.flatMap((k, i) => duofsMounts(k, readers[i])),
          { kind: 'virtiofsd', name: 'out', dir: out2 },
        ],
        scenarioOn: keys.flatMap((k) => [`${k}-q`, `${k}-9`, `${k}-v`]),
        env: { CORPUS_OUT: '/mnt/out', CORPUS_PLAN: keys.flatMap((k) => [`${k}-q=dump`, `${k}-9=dump`, `${k}-v=dump`]).join(' ') },
      }),
    );
    for (const s of run2.sections) if (s.rc !== 0) throw new Error(`dump on ${s.mount} exited ${s.rc}:\n${tail(s.output, 20)}`);
    timing.push(
      `boot 2 (read): wall ${((Date.now() - t2) / 1000).toFixed(1)} s, boot ${((run2.bootMs ?? NaN) / 1000).toFixed(1)} s, guest ${run2.sections.reduce((a, s) => a + s.guestSeconds, 0).toFixed(1)} s of dumps (${run2.sections.map((s) => `${s.mount} ${s.guestSeconds}`).join(', ')})`,
    );
    for (const k of keys) {
      for (const [s, suffix] of [
        ['q', 'q'],
        ['d9', '9'],
        ['dv', 'v'],
      ] as const) {
        const f = join(out2, `${k}-${suffix}.txt`);
        dumps.set(`${k}-${s}`, existsSync(f) ? readFileSync(f, 'latin1') : '');
      }
    }
    for (const [k, dir] of trees) snap2.set(k, snapshot(dir));
    mkdirSync(resultsDir, { recursive: true });
    for (const [k, v] of dumps) writeFileSync(join(resultsDir, `dump-${k}.txt`), v);
    for (const [k, v] of snap2) writeFileSync(join(resultsDir, `host-${k}.txt`), snapText(v, true));
    process.stderr.write(`lab: security-models: ${timing.join('; ')}\n`);
  }, 900_000);

  afterAll(() => {
    if (work) removeWorkDir(work);
  });

  /** QEMU's view of subtree `sub` of tree `k`, without times (they are when the tree was built). */
  const qemuView = (k: string, sub: string) => normaliseDump(splitDump(dumps.get(`${k}-q`) ?? '').get(sub) ?? '', false);
  const hostView = (k: string, sub: string) => snapText(splitSnapshot(snap2.get(k) ?? []).get(sub) ?? [], false);

  test('QEMU builds the whole corpus in every model (the reference is complete)', () => {
    expect(buildErrs.get('a')).toEqual([]);
    for (const m of MODELS) expect(qemuView(`a-${SHORT[m]}`, 'c1')).toContain('./SUB/setuid|');
  });

  test('duofs builds the whole corpus in every model, over 9p and over virtio-fs, without an error', () => {
    expect(buildErrs.get('b')).toEqual([]);
  });

  test('no duofs logged a warning or an error (QEMU-made metadata is read as valid, nothing failed)', () => {
    expect(duofsLogs.size).toBe(9);
    const bad = [...duofsLogs].flatMap(([sock, out]) =>
      out
        .split('\n')
        .filter((l) => /"level":(40|50|60)/.test(l))
        .map((l) => `${sock}: ${l}`),
    );
    expect(bad).toEqual([]);
  });

  for (const m of MODELS) {
    const s = SHORT[m];
    test(`${m}: QEMU's 9p shows the guest what the model stores (owners, setuid, devices, fifos, links, umask)`, () => {
      const dump = dumps.get(`a-${s}-q`) ?? '';
      // name|hexmode|mode|symbolic|type|uid|gid|major|minor|size|links
      expect(statFields(dump, './c1/setuid')).toBe('./c1/setuid|89ed|4755|-rwsr-xr-x|regular file|1000|1000|0|0|18|1');
      expect(statFields(dump, './c1/setuid_setgid')).toBe('./c1/setuid_setgid|8de8|6750|-rwsr-s---|regular empty file|1001|1001|0|0|0|1');
      expect(statFields(dump, './c1/chr_big')).toBe('./c1/chr_big|2180|600|crw-------|character special file|0|0|12c|11170|0|1');
      expect(statFields(dump, './c1/blk_big')).toBe('./c1/blk_big|61a0|640|brw-r-----|block special file|0|0|103|fffff|0|1');
      expect(statFields(dump, './c1/chr_tty')).toBe('./c1/chr_tty|2190|620|crw--w----|character special file|0|5|4|40|0|2');
      expect(statFields(dump, './c1/fifo')).toBe('./c1/fifo|11a4|644|prw-r--r--|fifo|1000|1000|0|0|0|2');
      expect(statFields(dump, './c1/socket_node')).toBe('./c1/socket_node|c1ed|755|srwxr-xr-x|socket|0|0|0|0|0|1');
      expect(statFields(dump, './c1/link_owned')).toBe('./c1/link_owned|a1ff|777|lrwxrwxrwx|symbolic link|1000|1001|0|0|10|1');
      expect(statFields(dump, './c1/hard_b')).toBe('./c1/hard_b|81b4|664|-rw-rw-r--|regular file|1001|1001|0|0|5|3');
      // a directory's link count is the host's: in mapped-file it counts the hidden .virtfs_metadata too
      expect(statFields(dump, './c1/dir_sticky')).toBe(`./c1/dir_sticky|43ff|1777|drwxrwxrwt|directory|0|0|0|0|4096|${m === 'mapped-file' ? 4 : 3}`);
      expect(statFields(dump, './c1/dir_setgid/sub')).toBe('./c1/dir_setgid/sub|45e8|2750|drwxr-s---|directory|0|1000|0|0|4096|2');
      expect(statFields(dump, './c1/umask_file')).toBe('./c1/umask_file|81a0|640|-rw-r-----|regular file|0|0|0|0|1|1');
      expect(statFields(dump, './c1/acl_dir/umask_ignored')).toBe('./c1/acl_dir/umask_ignored|81b4|664|-rw-rw-r--|regular file|0|0|0|0|1|1');
      expect(dump).toContain('./c1/link_rel|plain\n');
      expect(dump).toContain('./c1/link_long|segment00/segment01/');
      expect(dump).toMatch(
        /# file: \.\/c1\/acl_file\n# owner: 0\n# group: 0\nuser::rw-\nuser:1000:rw-\nuser:1001:r--\ngroup::r--\ngroup:100:rw-\nmask::rw-\nother::---\n/,
      );
      expect(dump).toMatch(/# file: \.\/c1\/xattr_file\nuser\.big=0x000102[0-9a-f]+656e64\nuser\.binary=0x0001feff00\n/);
    });

    test(`${m}: on disk, QEMU stored the guest's view in ${m === 'passthrough' ? 'the real inodes' : m === 'mapped-xattr' ? 'user.virtfs.* xattrs on regular files' : '.virtfs_metadata files beside regular files'}`, () => {
      const host = snapText(snap2.get(`a-${s}`) ?? [], false);
      const line = (p: string) => host.split('\n').find((l) => l.startsWith(`${p} `)) ?? `(no ${p})`;
      if (m === 'passthrough') {
        expect(line('c1/chr_big')).toMatch(/^c1\/chr_big chr mode=600 0:0 rdev=300:70000 /);
        expect(line('c1/setuid')).toMatch(/^c1\/setuid reg mode=4755 1000:1000 /);
        expect(line('c1/link_owned')).toMatch(/^c1\/link_owned link mode=777 1000:1001 .* -> owned_1000 /);
        expect(line('c1/fifo')).toMatch(/^c1\/fifo fifo mode=644 1000:1000 /);
      } else if (m === 'mapped-xattr') {
        expect(line('c1/chr_big')).toMatch(
          new RegExp(
            `^c1/chr_big reg mode=600 0:0 size=0 nlink=1 md5=\\S+ user\\.virtfs\\.gid=${le32(0)} user\\.virtfs\\.mode=${le32(0o20600)} user\\.virtfs\\.rdev=${le64(makedev(300, 70000))} user\\.virtfs\\.uid=${le32(0)} `,
          ),
        );
        expect(line('c1/setuid')).toContain(
          `reg mode=600 0:0 size=18 nlink=1 md5=46bbbe8aa98cc0714426e948474eaaf4 user.virtfs.gid=${le32(1000)} user.virtfs.mode=${le32(0o104755)} user.virtfs.uid=${le32(1000)} `,
        );
        expect(line('c1/link_owned')).toContain(
          `reg mode=600 0:0 size=10 nlink=1 md5=${createHash('md5').update('owned_1000').digest('hex')} user.virtfs.gid=${le32(1001)} user.virtfs.mode=${le32(0o120777)} user.virtfs.uid=${le32(1000)} `,
        );
        expect(line('c1/acl_file')).toContain(' user.virtfs.system.posix_acl_access=02000000');
      } else {
        expect(line('c1/chr_big')).toMatch(/^c1\/chr_big reg mode=600 0:0 size=0 nlink=1 /);
        expect(line('c1/.virtfs_metadata/chr_big')).toContain(
          `reg mode=600 0:0 size=65 nlink=1 content="virtfs.uid=0\\nvirtfs.gid=0\\nvirtfs.mode=${0o20600}\\nvirtfs.rdev=${makedev(300, 70000)}\\n"`,
        );
        expect(line('c1/.virtfs_metadata/blk_big')).toContain(
          `content="virtfs.uid=0\\nvirtfs.gid=0\\nvirtfs.mode=${0o60640}\\nvirtfs.rdev=${Number(BigInt.asIntN(32, makedev(259, 1048575)))}\\n"`,
        );
        expect(line('c1/.virtfs_metadata')).toMatch(/^c1\/\.virtfs_metadata dir mode=700 0:0 /);
        expect(line('.virtfs_metadata_root')).toContain('content="virtfs.uid=0\\nvirtfs.gid=10\\nvirtfs.mode=16873\\n"');
        // hard links share one metadata file (QEMU links it too)
        expect(line('c1/.virtfs_metadata/hard_b')).toMatch(/nlink=3 content="virtfs.uid=1001\\nvirtfs.gid=1001\\nvirtfs.mode=33204\\n" ino#(\d+)$/);
        expect(line('c1/acl_file')).toContain(' system.posix_acl_access=02000000');
      }
    });

    for (const side of ['a', 'b'] as const) {
      const k = `${side}-${s}`;
      const what = side === 'a' ? 'built through QEMU 9p' : 'built through duofs';
      for (const srv of ['d9', 'dv'] as const) {
        test(`${m}, ${what}: ${SERVER_NAME[srv]} shows the guest exactly what QEMU's 9p shows`, () => {
          const ref = dumps.get(`${k}-q`) ?? '';
          expect(ref).toContain('== end');
          const diff = diffTexts(`${k}-q`, normaliseDump(ref, true), `${k}-${srv}`, normaliseDump(dumps.get(`${k}-${srv}`) ?? '', true));
          expect(diff).toBe('');
        });
      }
    }

    for (const [sub, srv] of [
      ['c1', 'd9'],
      ['c2', 'dv'],
    ] as const) {
      test(`${m}: what duofs builds over ${srv === 'd9' ? '9p' : 'virtio-fs'} is what QEMU's 9p builds, as guests see it and byte for byte on disk`, () => {
        const guest = diffTexts(`a-${s}-c1-q`, qemuView(`a-${s}`, 'c1'), `b-${s}-${sub}-q`, qemuView(`b-${s}`, sub));
        const root = sub === 'c1' ? diffTexts(`a-${s}-root-q`, qemuView(`a-${s}`, '.'), `b-${s}-root-q`, qemuView(`b-${s}`, '.')) : '';
        const disk = diffTexts(`host-a-${s}-c1`, hostView(`a-${s}`, 'c1'), `host-b-${s}-${sub}`, hostView(`b-${s}`, sub));
        const diskRoot = sub === 'c1' ? diffTexts(`host-a-${s}-root`, hostView(`a-${s}`, '.'), `host-b-${s}-root`, hostView(`b-${s}`, '.')) : '';
        expect({ guest, root, disk, diskRoot }).toEqual({ guest: '', root: '', disk: '', diskRoot: '' });
      });
    }

    test(`${m}: reading through three servers at once changed nothing on disk`, () => {
      for (const side of ['a', 'b']) {
        const k = `${side}-${s}`;
        expect(
          diffTexts(`host-${k}-after-build`, snapText(snap1.get(k) ?? [], true), `host-${k}-after-read`, snapText(snap2.get(k) ?? [], true)),
        ).toBe('');
      }
    });
  }
});
