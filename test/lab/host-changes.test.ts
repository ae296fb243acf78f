// Changes from the host (issue 16): the share a container platform updates
// (KubeVirt's ConfigMaps and Secrets). The host replaces a file the guest has
// cached, as such platforms do (a temp file renamed over the old name; and
// Kubernetes's projected-volume layout, whose ..data symlink is swapped to a
// new timestamped folder), and the guest reads it by path until it sees the
// new content (guest/scenarios/host-changes.sh). One guest, one export, a
// mount per server and cache mode:
//   duofs virtio-fs  --cache never | auto | metadata | always
//   virtiofsd 1.14   --cache never | auto | metadata | always   (the reference)
//   duofs 9p (vhost-user virtio-9p)   guest cache=none | loose | mmap
// Asserted are only the promises of each mode, with generous slack (timings
// are measured and printed, written to .lab/results/host-changes.md, and
// described in docs/operator-guide.md "Changes made on the host"):
//   never, 9p none and mmap: the first read after the host's rename returns the new content;
//   auto: the new content within 1 s (entry/attribute timeout) plus slack;
//   metadata, always, 9p loose: no promise within a test's time (timeouts of
//   a day, or none at all); after the guest drops its dentry cache the next
//   read returns the new content (the server answers a fresh lookup with the
//   new file).
// duofs runs at log level warn; any warning or error fails the test.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun, type MountSpec } from './guest.js';
import { labAvailable, labDir, makeWorkDir, removeWorkDir, tail } from './lab.js';
import { startDuofs, type HostDaemon } from './daemons.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

type Promised = 'at-once' | 'within-1s' | 'none';
interface Target {
  name: string;
  server: string;
  mode: string;
  promise: Promised;
}
const VFS_MODES: [string, Promised][] = [
  ['never', 'at-once'],
  ['auto', 'within-1s'],
  ['metadata', 'none'],
  ['always', 'none'],
];
const P9_MODES: [string, Promised][] = [
  ['none', 'at-once'],
  ['mmap', 'at-once'],
  ['loose', 'none'],
];
/** DUOFS_LAB_HOSTCHG=dv-auto,vd-always,... narrows the run down (by hand); DUOFS_LAB_HOSTCHG_ARGS adds duofs arguments. */
const only = process.env.DUOFS_LAB_HOSTCHG?.split(',').filter(Boolean);
const TARGETS: Target[] = [
  ...VFS_MODES.map(([mode, promise]) => ({ name: `dv-${mode}`, server: 'duofs virtio-fs', mode, promise })),
  ...VFS_MODES.map(([mode, promise]) => ({ name: `vd-${mode}`, server: 'virtiofsd', mode, promise })),
  ...P9_MODES.map(([mode, promise]) => ({ name: `d9-${mode}`, server: 'duofs 9p', mode, promise })),
].filter((t) => !only || only.includes(t.name));
/** How long the guest polls (ms): the promise plus generous slack, or a short look where nothing is promised. */
const LIMIT: Record<Promised, number> = { 'at-once': 2000, 'within-1s': 5000, none: 2000 };
const KINDS = ['rename1', 'data1', 'rename2'];

/** The host's side of one change, as a container platform makes it. */
function hostChange(dir: string, kind: string, n: number): void {
  if (kind === 'rename') {
    const tmp = join(dir, `.config.tmp${n}`);
    writeFileSync(tmp, `v${n}\n`);
    renameSync(tmp, join(dir, 'config'));
  } else {
    // Kubernetes's AtomicWriter: a new timestamped folder, ..data_tmp -> it, renamed over ..data, the old folder removed.
    const proj = join(dir, 'proj');
    mkdirSync(join(proj, `..v${n}`));
    writeFileSync(join(proj, `..v${n}`, 'key'), `v${n}\n`);
    symlinkSync(`..v${n}`, join(proj, '..data_tmp'));
    renameSync(join(proj, '..data_tmp'), join(proj, '..data'));
    rmSync(join(proj, `..v${n - 1}`), { recursive: true });
  }
}

function prepare(dir: string): void {
  mkdirSync(dir);
  writeFileSync(join(dir, 'config'), 'v0\n');
  const proj = join(dir, 'proj');
  mkdirSync(join(proj, '..v0'), { recursive: true });
  writeFileSync(join(proj, '..v0', 'key'), 'v0\n');
  symlinkSync('..v0', join(proj, '..data'));
  symlinkSync('..data/key', join(proj, 'key'));
}

d('changes made on the host, seen by a guest per cache mode', () => {
  let run: GuestRun | undefined;
  const daemons: HostDaemon[] = [];
  const handled: string[] = [];
  const hostErrors: string[] = [];

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const work = makeWorkDir('host-changes');
    try {
      const tree = freshTree(work, 'share');
      const ctl = freshTree(work, 'ctl');
      for (const t of TARGETS) prepare(join(tree, t.name));
      const sock = join(work, 'sock');
      mkdirSync(sock);
      const mounts: MountSpec[] = [{ kind: 'virtiofsd', name: 'ctl', dir: ctl, args: ['--sandbox=chroot', '--cache=never', '--log-level=warn'] }];
      const logLevel = process.env.DUOFS_LAB_HOSTCHG_LOG ?? 'warn';
      for (const [mode] of VFS_MODES) {
        const s = join(sock, `dv-${mode}.sock`);
        const p9 = mode === 'never' ? P9_MODES.map(([m]) => join(sock, `d9-${m}.sock`)) : [];
        daemons.push(
          await startDuofs(
            [
              'serve',
              '--shared-dir',
              tree,
              '--virtiofs-socket',
              s,
              '--tag',
              `dv-${mode}`,
              '--cache',
              mode,
              ...p9.flatMap((p) => ['--9p-vhost-socket', p]),
              ...(p9.length ? ['--9p-tag', 'd9'] : []),
              '--log-level',
              logLevel,
              ...(process.env.DUOFS_LAB_HOSTCHG_ARGS?.split(' ').filter(Boolean) ?? []),
            ],
            [s, ...p9],
          ),
        );
        mounts.push({ kind: 'vhost-user-fs', name: `dv-${mode}`, socket: s });
      }
      for (const [mode] of VFS_MODES) {
        mounts.push({
          kind: 'virtiofsd',
          name: `vd-${mode}`,
          dir: tree,
          args: ['--sandbox=chroot', `--cache=${mode}`, '--log-level=warn', '--rlimit-nofile=20000'],
        });
      }
      for (const [mode] of P9_MODES) {
        mounts.push({ kind: 'vhost-user-9p', name: `d9-${mode}`, socket: join(sock, `d9-${mode}.sock`), tag: 'd9', mountOptions: `cache=${mode}` });
      }
      let pending = '';
      const onConsole = (text: string) => {
        pending += text;
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          const m = /HOSTCHG REQ ([a-z0-9-]+) (rename|data) (\d+)/.exec(line);
          if (!m) continue;
          const [, name, kind, n] = m;
          try {
            if (!TARGETS.some((t) => t.name === name)) throw new Error(`unknown mount ${name}`);
            hostChange(join(tree, name), kind, Number(n));
            writeFileSync(join(ctl, '.ack'), '');
            renameSync(join(ctl, '.ack'), join(ctl, `done-${name}-${kind}-${n}`));
            handled.push(`${name} ${kind}${n}`);
          } catch (e) {
            hostErrors.push(`${line.trim()}: ${(e as Error).message}`);
          }
        }
      };
      const t0 = Date.now();
      run = await runGuest({
        label: 'host-changes',
        workDir: work,
        timeoutMs: 300_000,
        memoryMiB: 768,
        mounts,
        scenario: 'host-changes.sh',
        scenarioOn: TARGETS.map((t) => t.name),
        scenarioTimeoutSec: 60,
        env: { HC_LIMITS: TARGETS.map((t) => `${t.name}=${LIMIT[t.promise]}`).join(' ') },
        onConsole,
      });
      const rows = TARGETS.map((t) => {
        const c = run!.sections.find((s) => s.mount === t.name)?.checks ?? new Map<string, string>();
        const cell = (k: string) => {
          const seen = c.get(`${k}.seen_ms`);
          const ino = c.get(`${k}.first_inode`) === 'new' ? ', new inode at once' : '';
          return seen === 'none' ? `not within ${LIMIT[t.promise] / 1000} s (after drop_caches: ${c.get(`${k}.after_drop`)})` : `${seen} ms${ino}`;
        };
        return `| ${t.server} | ${t.mode} | ${KINDS.map(cell).join(' | ')} |`;
      });
      const table = [
        `host changes, guest time from the host's acknowledgement to the new content (${new Date().toISOString()}, guest ${((Date.now() - t0) / 1000).toFixed(0)} s wall):`,
        `| server | cache | ${KINDS.join(' | ')} |`,
        `|---|---|${KINDS.map(() => '---|').join('')}`,
        ...rows,
      ].join('\n');
      process.stderr.write(`lab: ${table}\n`);
      mkdirSync(join(labDir, 'results'), { recursive: true });
      writeFileSync(join(labDir, 'results', 'host-changes.md'), `${table}\n`);
    } catch (e) {
      if (e instanceof Error) for (const dm of daemons) e.message += `\n--- duofs output (tail) ---\n${tail(dm.output(), 20)}`;
      throw e;
    } finally {
      for (const dm of daemons) await dm.stop();
      if (process.env.DUOFS_LAB_HOSTCHG_LOG) {
        mkdirSync(join(labDir, 'results'), { recursive: true });
        daemons.forEach((dm, i) => writeFileSync(join(labDir, 'results', `host-changes-duofs-${VFS_MODES[i][0]}.log`), dm.output()));
      }
      removeWorkDir(work);
    }
  }, 400_000);

  test('the host made every change the guest asked for', () => {
    expect(hostErrors).toEqual([]);
    expect(handled.length).toBe(TARGETS.length * KINDS.length);
  });

  for (const t of TARGETS) {
    const what =
      t.promise === 'at-once'
        ? 'the first read after the host replaced the file returns the new content'
        : t.promise === 'within-1s'
          ? 'the new content within 1 s plus slack'
          : 'no promise; after the guest drops its caches the new content';
    test(`${t.server} cache=${t.mode}: ${what}`, () => {
      const s = run!.sections.find((x) => x.mount === t.name);
      expect(s?.rc).toBe(0);
      const c = Object.fromEntries(s!.checks);
      for (const k of KINDS) {
        const n = Number(k.slice(-1));
        expect([k, c[`${k}.before`]]).toEqual([k, `v${n - 1}`]);
        if (t.promise === 'at-once') expect([k, c[`${k}.first`]]).toEqual([k, `v${n}`]);
        else if (t.promise === 'within-1s') expect([k, c[`${k}.seen_ms`]]).not.toEqual([k, 'none']);
        else if (c[`${k}.seen_ms`] === 'none') expect([k, c[`${k}.after_drop`]]).toEqual([k, `v${n}`]);
      }
    });
  }

  test('duofs logged no warning or error', () => {
    const lines = daemons.flatMap((dm) => dm.output().split('\n')).filter((l) => /"level":(40|50|60)|\b(WARN|ERROR)\b/.test(l));
    expect(lines).toEqual([]);
  });
});
