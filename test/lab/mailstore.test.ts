// A mail store shared by two VMs (issue 16): two lab guests run Debian's
// dovecot (2.4) on one maildir and one mdbox tree through ONE duofs process,
// deliver at the same time into the same mailboxes (dovecot-lda and `doveadm
// save`), read everything back over IMAP, and `doveadm force-resync` finds
// nothing to repair (test/lab/guest/scenarios/mailstore.py).
//
// The export is what libvirt's
//   <filesystem type='mount' accessmode='passthrough'>
//     <driver type='virtiofs' queue='1024'/>
//     <binary path='.../duofs-virtiofsd' xattr='on'><cache mode='always'/><lock posix='on' flock='on'/></binary>
//     <source dir='SRC'/><target dir='mailstore'/>
//   </filesystem>
// asks for: libvirt runs `duofs-virtiofsd --fd=N -o
// source=SRC,cache=always,xattr,flock,posix_lock` (test/lab/libvirt-virtiofsd.test.ts).
// One such process serves one guest (one vhost-user device per listening
// socket), so two guests on one process take `duofs serve` with two
// --virtiofs-socket (and a --9p-vhost-socket for the mixed case) and exactly
// the options duofs-virtiofsd derives from libvirt's argv: the test reads them
// from `DUOFS_VIRTIOFSD_DRY_RUN=1 duofs-virtiofsd <libvirt's argv>` and fails
// if they cannot be expressed that way. QEMU gets queue-size=1024, the guest
// `mount -t virtiofs mailstore`.
//
// Cases: both guests on virtio-fs; one on virtio-fs and one on virtio-9p
// (vhost-user, trans=virtio) of the same process on the same export; a guest
// whose QEMU is SIGKILLed halfway through its deliveries (the other's
// delivery and the store stay intact). duofs logs at warn: any line it prints
// fails the case.
//
// The cache mode: with <cache mode='always'/> each guest keeps its own page
// cache and attributes of dovecot's index files and does not see the other's
// appends; measured: "Corrupted transaction log file ... Unexpected garbage at
// EOF", deliveries failing with 75, messages missing, an imap process dying.
// That is what `always` promises (no server can make a guest drop its cache),
// so the CI cases use <cache mode='none'/> (-o cache=none, duofs --cache
// never); `npm run lab:mailstore:always` runs the XML's `always`, and fails.
// docs/operator-guide.md "Several guests on one export" says so.
//
// Messages per guest and format: DUOFS_MAILSTORE_COUNT (default 12, to keep
// npm test short on 2 cores; 25 and more by hand, `npm run
// lab:mailstore:big` runs 200). Needs root and `npm run lab:setup`;
// DUOFS_SKIP_LAB=1 skips.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun, type MountSpec } from './guest.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { labAvailable, makeWorkDir, removeWorkDir, repoRoot, tail } from './lab.js';
import { withLogs } from './reconnect.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;
const COUNT = Number(process.env.DUOFS_MAILSTORE_COUNT ?? 12);
/** libvirt's <cache mode='...'/>: none (the CI cases) or always (DUOFS_MAILSTORE_CACHE=always, see the header). */
const CACHE = process.env.DUOFS_MAILSTORE_CACHE ?? 'none';
const GUEST_MS = Math.max(300_000, COUNT * 4_000);

/** duofs serve's flags for what duofs-virtiofsd makes of libvirt's argv for the XML above. */
function libvirtServeFlags(src: string): string[] {
  const argv = ['--fd=3', '-o', `source=${src.replaceAll(',', ',,')},cache=${CACHE},xattr,flock,posix_lock`];
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin', 'duofs-virtiofsd.js'), ...argv], {
    env: { ...process.env, DUOFS_VIRTIOFSD_DRY_RUN: '1' },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`duofs-virtiofsd ${argv.join(' ')} (dry run) exited ${r.status}: ${r.stderr}`);
  const { options } = JSON.parse(r.stdout) as { options: Record<string, unknown> & { fuse: Record<string, unknown> } };
  const { sharedDir, virtiofsFd, securityModel, numRequestQueues, fuse, ...rest } = options;
  const { cache, xattr, announceSubmounts, flockLocks, posixLocks, posixAcl, ...fuseRest } = fuse;
  // Everything must map onto serve's flags (or be serve's default): otherwise this test would not run what libvirt runs.
  expect({ sharedDir, virtiofsFd, rest, fuseRest, flockLocks, posixLocks, posixAcl }).toEqual({
    sharedDir: src,
    virtiofsFd: 3,
    rest: {},
    fuseRest: {},
    flockLocks: true, // serve's default: guest locks are host OFD locks / flocks
    posixLocks: true,
    posixAcl: 'never', // serve's default
  });
  return [
    '--shared-dir',
    src,
    '--security-model',
    String(securityModel),
    '--num-request-queues',
    String(numRequestQueues),
    '--cache',
    String(cache),
    ...(xattr ? ['--xattr'] : []),
    ...(announceSubmounts ? ['--announce-submounts'] : []),
  ];
}

/** The PID of the QEMU a runGuest with this work folder runs (a child of its launcher), or undefined. */
function qemuOf(workDir: string): number | undefined {
  const launch = `${workDir}/host/launch.sh`;
  const procs = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  const read = (p: string, f: string) => {
    try {
      return readFileSync(`/proc/${p}/${f}`, 'utf8');
    } catch {
      return '';
    }
  };
  // setpriv, unshare and the sh under it all name launch.sh; QEMU is the sh's child
  const launchers = new Set(procs.filter((p) => read(p, 'cmdline').split('\0').includes(launch)));
  const q = procs.find((p) => read(p, 'comm').trim() === 'qemu-system-x86' && launchers.has(/^\d+ \(.*\) \S (\d+)/.exec(read(p, 'stat'))?.[1] ?? ''));
  return q === undefined ? undefined : Number(q);
}

/** Lines duofs printed (at --log-level warn every line is a warning or an error). */
const duofsLines = (dm: HostDaemon) =>
  dm
    .output()
    .split('\n')
    .filter((l) => l.trim() !== '');

interface Pair {
  a: GuestRun;
  b: GuestRun;
  checks: Record<string, string>;
  figures: Record<string, number>;
  duofs: string[];
}

function collect(...runs: GuestRun[]): { checks: Record<string, string>; figures: Record<string, number> } {
  const checks: Record<string, string> = {};
  const figures: Record<string, number> = {};
  for (const r of runs) {
    for (const line of r.console.split('\n')) {
      const c = /^CHECK (\S+) (.*?)\s*$/.exec(line.replace(/\r/g, ''));
      if (c) checks[c[1]] = c[2];
      const f = /^FIGURE (\S+) ([\d.]+)/.exec(line);
      if (f) figures[f[1]] = Number(f[2]);
    }
  }
  return { checks, figures };
}

// maildir with fcntl index locks (and its dotlocked dovecot-uidlist), mdbox with flock.
const FORMATS = ['maildir:fcntl', 'mdbox:flock'];

/** What a clean run of mailstore.py on FORMATS prints. */
function cleanChecks(formats: string[], count: number): Record<string, string> {
  const want: Record<string, string> = {};
  const all = `total=${2 * count},unique=${2 * count},missing=0,duplicates=0,unknown=0,bad_body=0,wrong_box=0`;
  for (const f of formats) {
    const n = f.replace(':', '-');
    for (const r of ['a', 'b']) {
      Object.assign(want, {
        [`${n}.${r}.delivered`]: String(count),
        [`${n}.${r}.dovecot_log`]: 'clean',
        [`${n}.${r}.imap`]: all,
        [`${n}.${r}.imap_log`]: 'clean',
      });
    }
    Object.assign(want, { [`${n}.a.force_resync`]: 'clean', [`${n}.a.after_resync`]: all });
  }
  return want;
}

interface PairOptions {
  formats: string[];
  /** Guest b is the victim: its QEMU is SIGKILLed halfway through its deliveries (one format only). */
  kill?: boolean;
  /** Guest a's mount (default: duofs's first virtio-fs socket). */
  mountA?: Mount;
  /** No duofs: the mounts are reference servers the guests start themselves. */
  noDuofs?: boolean;
}

type Mount = (s: (n: string) => string, src: string) => MountSpec;
const duofsVfs =
  (sock: string): Mount =>
  (s) => ({ kind: 'vhost-user-fs', name: 'm', socket: s(sock), tag: 'mailstore', queueSize: 1024 });

async function twoGuests(label: string, mountB: Mount, o: PairOptions): Promise<Pair & { killedQemu?: number; killedAfterMs?: number }> {
  const work = makeWorkDir(label);
  const src = freshTree(work, 'mailstore');
  const syncDir = freshTree(work, 'sync');
  mkdirSync(join(work, 'sock'));
  const s = (n: string) => join(work, 'sock', `${n}.sock`);
  let duofs: HostDaemon | undefined;
  try {
    if (!o.noDuofs)
      duofs = await startDuofs(
        [
          'serve',
          ...libvirtServeFlags(src),
          '--virtiofs-socket',
          s('fa'),
          '--virtiofs-socket',
          s('fb'),
          '--tag',
          'mailstore',
          '--9p-vhost-socket',
          s('pb'),
          '--9p-tag',
          'mailstore9p',
          '--log-level',
          'warn',
        ],
        [s('fa'), s('fb'), s('pb')],
      );
    const sync = { kind: 'virtiofsd' as const, name: 'sync', dir: syncDir, args: ['--sandbox=chroot', '--cache=never', '--log-level=warn'] };
    const args = (role: string) => [
      '--role',
      role,
      '--sync',
      '/mnt/sync',
      '--count',
      String(COUNT),
      ...o.formats.flatMap((f) => ['--format', f]),
      ...(o.kill ? [role === 'a' ? '--peer-may-die' : '--victim'] : []),
    ];
    // The kill: once b says it is halfway, let it deliver on for a moment (so the
    // kill lands inside a delivery, maybe holding a lock), SIGKILL its QEMU, then tell a.
    let killedQemu: number | undefined;
    let killedAfterMs: number | undefined;
    let seen = '';
    let killing = false;
    const t0 = Date.now();
    const onConsoleB = (text: string) => {
      seen = (seen + text).slice(-4096);
      if (!o.kill || killing || !seen.includes('MAILSTORE-KILL-ME')) return;
      killing = true;
      setTimeout(() => {
        killedQemu = qemuOf(join(work, 'b'));
        if (killedQemu !== undefined) process.kill(killedQemu, 'SIGKILL');
        killedAfterMs = Date.now() - t0;
        writeFileSync(join(syncDir, `${o.formats[0].replace(':', '-')}-peer-gone`), `${killedQemu}\n`);
      }, 2500);
    };
    const [a, b] = await Promise.all([
      runGuest({
        label: `${label}-a`,
        workDir: join(work, 'a'),
        timeoutMs: GUEST_MS,
        scenario: 'mailstore.py',
        scenarioTimeoutSec: GUEST_MS / 1000 - 60,
        scenarioOn: ['m'],
        scenarioArgs: args('a'),
        mounts: [(o.mountA ?? duofsVfs('fa'))(s, src), sync],
      }),
      runGuest({
        label: `${label}-b`,
        workDir: join(work, 'b'),
        timeoutMs: GUEST_MS,
        scenario: 'mailstore.py',
        scenarioTimeoutSec: GUEST_MS / 1000 - 60,
        scenarioOn: ['m'],
        scenarioArgs: args('b'),
        mounts: [mountB(s, src), sync],
        allowIncomplete: o.kill,
        onConsole: onConsoleB,
      }),
    ]);
    const { checks, figures } = collect(a, b);
    process.stderr.write(
      `lab: mailstore ${label}: ${COUNT} messages per guest and format; guests ${(a.wallMs / 1000).toFixed(1)} s and ${(b.wallMs / 1000).toFixed(1)} s wall; ` +
        `${JSON.stringify(figures)}\n`,
    );
    return { a, b, checks, figures, duofs: duofs ? duofsLines(duofs) : [], killedQemu, killedAfterMs };
  } catch (e) {
    throw duofs ? withLogs(e, duofs) : e;
  } finally {
    await duofs?.stop();
    removeWorkDir(work);
  }
}

function expectClean(p: Pair, formats: string[]): void {
  const out = `--- guest a ---\n${tail(p.a.sections[0]?.output ?? p.a.console, 40)}\n--- guest b ---\n${tail(p.b.sections[0]?.output ?? p.b.console, 40)}`;
  try {
    expect(p.checks).toEqual(cleanChecks(formats, COUNT));
    expect(p.a.sections[0]?.rc).toBe(0);
    expect(p.b.sections[0]?.rc).toBe(0);
    expect(p.duofs).toEqual([]);
  } catch (e) {
    if (e instanceof Error) e.message += `\n${out}\n--- duofs ---\n${p.duofs.slice(0, 40).join('\n')}`;
    throw e;
  }
}

d('a mail store shared by two VMs through one duofs (dovecot, maildir and mdbox)', () => {
  beforeAll(() => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
  });

  test(
    'two virtio-fs guests deliver at once into the same mailboxes: every message once, force-resync clean, no hang, no duofs warning',
    async () => {
      const p = await twoGuests('mail-vfs', duofsVfs('fb'), {
        formats: FORMATS,
      });
      expectClean(p, FORMATS);
    },
    3 * GUEST_MS,
  );

  test(
    'one guest on virtio-fs, the other on virtio-9p of the same duofs and export: the same',
    async () => {
      const p = await twoGuests(
        'mail-mixed',
        // locktimeout=1: the 9p client retries a blocked lock every second (9P2000.L has no wake-up)
        (s) => ({ kind: 'vhost-user-9p', name: 'm', socket: s('pb'), tag: 'mailstore9p', msize: 512000, mountOptions: 'locktimeout=1' }),
        { formats: FORMATS },
      );
      expect(p.b.console).toContain('@@DUOFS-LAB MOUNTED m@@');
      expectClean(p, FORMATS);
    },
    3 * GUEST_MS,
  );

  test(
    "a guest killed (QEMU SIGKILL) halfway through its deliveries leaves the other's delivery and the store intact",
    async () => {
      const f = 'mdbox:fcntl';
      const n = f.replace(':', '-');
      const p = await twoGuests('mail-kill', duofsVfs('fb'), {
        formats: [f],
        kill: true,
      });
      const out = `--- guest a ---\n${tail(p.a.sections[0]?.output ?? p.a.console, 40)}\n--- guest b ---\n${tail(p.b.console, 30)}\n--- duofs ---\n${p.duofs.slice(0, 40).join('\n')}`;
      try {
        expect(p.killedQemu).toBeDefined();
        expect(p.b.done).toBe(false); // it never finished: it was killed
        const before = Number(p.checks[`${n}.b.delivered_before_kill`]);
        expect(before).toBe(Math.floor(COUNT / 2));
        const victim = /^unique=(\d+),duplicates=(\d+)$/.exec(p.checks[`${n}.a.victim_messages`] ?? '');
        expect(victim).not.toBeNull();
        // what b delivered before the kill is there once; what it was delivering when killed is there at most once
        expect(Number(victim![1])).toBeGreaterThanOrEqual(before);
        expect(Number(victim![1])).toBeLessThan(COUNT);
        expect(Number(victim![2])).toBe(0);
        const rest = { ...p.checks };
        delete rest[`${n}.b.delivered_before_kill`];
        delete rest[`${n}.a.victim_messages`];
        expect(rest).toEqual({
          [`${n}.a.delivered`]: String(COUNT),
          [`${n}.a.dovecot_log`]: 'clean',
          [`${n}.a.force_resync`]: 'clean',
          [`${n}.a.own_after_kill`]: `total=${COUNT},unique=${COUNT},missing=0`,
          [`${n}.a.after_kill`]: 'unknown=0,bad_body=0,wrong_box=0',
          [`${n}.a.imap_log`]: 'clean',
          [`${n}.a.deliver_after_kill`]: 'rc=0',
        });
        expect(p.a.sections[0]?.rc).toBe(0);
        expect(p.duofs).toEqual([]);
        process.stderr.write(
          `lab: mailstore kill: QEMU ${p.killedQemu} killed ${((p.killedAfterMs ?? 0) / 1000).toFixed(1)} s in; b had delivered ${before}, ${victim![1]} of its messages in the store\n`,
        );
      } catch (e) {
        if (e instanceof Error) e.message += `\n${out}`;
        throw e;
      }
    },
    3 * GUEST_MS,
  );
});

// The reference servers on the same scenario (`npm run lab:mailstore:reference`, not in CI):
// each guest has its own virtiofsd 1.14 (one serves one guest) on the same tree,
// with libvirt's cache mode. virtiofsd keeps guest locks inside each guest's
// kernel (no posix_lock/flock: it refuses them), so the two dovecots do not
// exclude each other. Measured with --cache=never: maildir came through, mdbox
// (flock) did not (index log synchronization errors, 2 of 50 missing, one bad
// body), so this case fails; it is there to compare, not to pass.
(process.env.DUOFS_MAILSTORE_REFERENCE === '1' && !skip ? describe : describe.skip)('the same mail store on reference servers', () => {
  test(
    'two guests, each with its own virtiofsd on the same tree',
    async () => {
      if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
      const vfsd: Mount = (_s, src) => ({
        kind: 'virtiofsd',
        name: 'm',
        dir: src,
        args: ['--sandbox=chroot', `--cache=${CACHE === 'none' ? 'never' : CACHE}`, '--xattr', '--log-level=warn', '--rlimit-nofile=20000'],
      });
      const p = await twoGuests('mail-ref', vfsd, { formats: FORMATS, mountA: vfsd, noDuofs: true });
      expectClean(p, FORMATS);
    },
    3 * GUEST_MS,
  );
});
