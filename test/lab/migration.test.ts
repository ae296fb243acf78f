// Precopy live migration of a duofs virtio-fs device between two real QEMU
// processes on this machine (issue 14; docs/live-migration.md).
// A guest boots on QEMU A with duofs A, runs migration.py on its mount (a
// writer appending fsync'd numbered lines through one open fd, a directory
// stream read a part at a time, cwds in the mount) and is migrated, while
// its processes run, to QEMU B (`-incoming defer`) with its own duofs B on
// the same export, then back to a new QEMU A2 with a new duofs A2. Both
// QEMUs are driven over QMP; the migration stream goes over a unix socket.
// The guest's root (virtiofsd 1.14) migrates along with it.
// Two more guests pin down the failure paths with a real QEMU: a file the
// guest holds open after unlinking it has no path, so with
// --migration-on-error abort the save fails and the source runs on, and
// with guest-error (duofs-virtiofsd, as libvirt starts it) the migration
// completes and only that fd answers EIO.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
// DUOFS_LAB_MIG_LOG=trace logs every request of every duofs; with
// DUOFS_LAB_KEEP=1 their logs stay in the work folder (duofs-<leg>.log).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConsole, type ParsedConsole } from './console.js';
import { ensureDuofsBuilt, startDuofs, startHostDaemon, type HostDaemon } from './daemons.js';
import { freshTree, runGuest, type GuestRun } from './guest.js';
import { labAvailable, makeWorkDir, removeWorkDir, repoRoot, tail } from './lab.js';
import { migrate, Qmp, waitRunning, type MigrationResult } from './qmp.js';
import { logLines, withLogs } from './reconnect.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

const ENTRIES = 3000;
const TAG = 'mig';
/** Inside each QEMU's chroot: the host folder `ctl` of the work folder. */
const CTL = '/duofs-lab/host/ctl';
const LOG_LEVEL = process.env.DUOFS_LAB_MIG_LOG ?? 'debug';

interface Leg {
  name: string;
  duofs: HostDaemon;
  guest: Promise<GuestRun>;
  console: () => string;
  qmp: Qmp;
}

type Server = 'serve' | 'virtiofsd-guest-error';

/** One migration experiment: an export with mig/dir and mig/ctl, legs (a duofs and a QEMU each), QMP. */
class MigrationLab {
  readonly work: string;
  readonly tree: string;
  readonly legs: Leg[] = [];
  private readonly ctl: string;
  private readonly sockDir: string;
  private readonly t0 = Date.now();

  constructor(
    label: string,
    private readonly env: Record<string, string>,
    private readonly server: Server = 'serve',
  ) {
    this.work = makeWorkDir(label);
    this.tree = freshTree(this.work, 'export');
    this.ctl = join(this.work, 'ctl');
    this.sockDir = join(this.work, 'sock');
    mkdirSync(this.ctl);
    mkdirSync(this.sockDir);
    mkdirSync(join(this.tree, 'mig', 'dir'), { recursive: true });
    mkdirSync(join(this.tree, 'mig', 'ctl'));
    for (let i = 0; i < ENTRIES; i++) writeFileSync(join(this.tree, 'mig', 'dir', `entry-with-a-longish-name-${String(i).padStart(6, '0')}`), '');
  }

  progress(s: string): void {
    process.stderr.write(`lab: migration +${((Date.now() - this.t0) / 1000).toFixed(1)} s: ${s}\n`);
  }

  private startServer(sock: string): Promise<HostDaemon> {
    if (this.server === 'serve') {
      return startDuofs(['serve', '--shared-dir', this.tree, '--virtiofs-socket', sock, '--tag', TAG, '--log-level', LOG_LEVEL], [sock]);
    }
    ensureDuofsBuilt();
    const args = ['--socket-path', sock, '--shared-dir', this.tree, '--tag', TAG, '--migration-on-error', 'guest-error', '--log-level', LOG_LEVEL];
    return startHostDaemon({
      name: 'duofs-virtiofsd',
      command: process.execPath,
      args: [join(repoRoot, 'bin', 'duofs-virtiofsd.js'), ...args],
      waitFor: [sock],
    });
  }

  /** A duofs and a QEMU for it; `incoming`: started with -incoming defer, sharing the first leg's plan. */
  async startLeg(name: string, incoming: boolean): Promise<Leg> {
    const sock = join(this.sockDir, `${name}.sock`);
    const duofs = await this.startServer(sock);
    let text = '';
    const guest = runGuest({
      label: `mig-${name}`,
      workDir: join(this.work, name),
      ...(incoming ? { planDir: join(this.work, this.legs[0]!.name, 'guest') } : {}),
      controlDir: this.ctl,
      qemuArgs: ['-qmp', `unix:${CTL}/${name}.qmp,server=on,wait=off`, ...(incoming ? ['-incoming', 'defer'] : [])],
      allowIncomplete: true,
      memoryMiB: 512,
      timeoutMs: 240_000,
      scenario: 'migration.py',
      env: { LAB_MIG_ENTRIES: String(ENTRIES), ...this.env },
      mounts: [{ kind: 'vhost-user-fs', name: 'm', socket: sock, tag: TAG }],
      onConsole: (s) => {
        text += s;
      },
    });
    guest.catch(() => undefined);
    const leg: Leg = { name, duofs, guest, console: () => text, qmp: undefined as unknown as Qmp };
    this.legs.push(leg);
    leg.qmp = await Qmp.connect(join(this.ctl, `${name}.qmp`), 60_000);
    return leg;
  }

  async waitConsole(leg: Leg, what: string, ms = 120_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!leg.console().includes(what)) {
      if (Date.now() > deadline) throw new Error(`guest on ${leg.name} did not print ${what} within ${ms} ms\n${tail(leg.console(), 30)}`);
      await Promise.race([leg.guest.then(() => undefined), new Promise((r) => setTimeout(r, 200))]);
    }
    this.progress(`guest ready on ${leg.name}`);
  }

  /** Starts leg `toName` and migrates `from` to it; the result, whatever it is. */
  async tryHop(from: Leg, toName: string): Promise<{ to: Leg; result: MigrationResult }> {
    const to = await this.startLeg(toName, true);
    const r = await migrate(from.qmp, to.qmp, `unix:${CTL}/${from.name}-${toName}.mig`);
    const times = r.status === 'completed' ? `, total ${r.totalTimeMs} ms, downtime ${r.downtimeMs} ms` : '';
    this.progress(`${from.name} -> ${toName}: ${r.status}${r.errorDesc ? ` (${r.errorDesc})` : ''}${times}`);
    return { to, result: r };
  }

  /** Migrates `from` to a new leg, checks the destination runs, quits the source and lets the guest go on (go<n>). */
  async hop(from: Leg, toName: string, n: number): Promise<Leg> {
    const { to, result: r } = await this.tryHop(from, toName);
    if (r.status !== 'completed') throw new Error(`migration ${from.name} -> ${toName}: ${r.status}: ${r.errorDesc ?? JSON.stringify(r.info)}`);
    expect(await waitRunning(to.qmp)).toBe('running');
    await from.qmp.quit();
    await from.guest;
    this.go(n);
    return to;
  }

  go(n: number): void {
    writeFileSync(join(this.tree, 'mig', 'ctl', `go${n}`), '');
  }

  /** The whole console of the guest across its QEMUs, parsed; the scenario's checks. */
  async finish(last: Leg): Promise<{ parsed: ParsedConsole; checks: Record<string, string>; run: GuestRun }> {
    const run = await last.guest;
    this.progress(`guest done on ${last.name}`);
    const parsed = parseConsole(this.legs.map((l) => l.console()).join(''));
    expect(parsed.done).toBe(true);
    const section = parsed.sections[0]!;
    expect(section.rc).toBe(0);
    return { parsed, checks: Object.fromEntries(section.checks), run };
  }

  /** The host's copy of the writer's file holds lines 1..acked exactly once, in order. */
  expectLog(acked: number): void {
    const lines = readFileSync(join(this.tree, 'mig', 'w', 'log.txt'), 'utf8')
      .split('\n')
      .slice(0, -1);
    expect(lines.length).toBe(acked);
    expect(lines.every((l, i) => l === String(i + 1).padStart(8, '0'))).toBe(true);
  }

  transfers(l: Leg, ok = true): unknown[] {
    return logLines(l.duofs, ok ? 'vhost-user: device state transfer succeeded' : 'vhost-user: device state transfer failed').map((o) => o.direction);
  }

  annotate(e: unknown): unknown {
    for (const l of this.legs) if (e instanceof Error) e.message += `\n--- console ${l.name} (tail) ---\n${tail(l.console(), 40)}`;
    return withLogs(e, ...this.legs.map((l) => l.duofs));
  }

  async close(): Promise<void> {
    for (const l of this.legs) await l.qmp?.quit();
    for (const l of this.legs) await l.duofs.stop();
    if (process.env.DUOFS_LAB_KEEP === '1') for (const l of this.legs) writeFileSync(join(this.work, `duofs-${l.name}.log`), l.duofs.output());
    await Promise.allSettled(this.legs.map((l) => l.guest));
    removeWorkDir(this.work);
  }
}

/** Checks of a phase after which the guest came back from a migration (or a failed one). */
const phaseChecks = (p: number, cwdList: string) => ({
  [`phase${p}.acked_grows`]: 'yes',
  [`phase${p}.cwd`]: 'mig/cwd',
  [`phase${p}.cwd_file`]: 'cwd',
  [`phase${p}.cwd_list`]: cwdList,
  [`phase${p}.writer_goes_on`]: 'yes',
});
const endChecks = (phases: number) => ({
  [`phase${phases}.acked_grows`]: 'yes',
  'reader.count': String(ENTRIES),
  'reader.unique': String(ENTRIES),
  'reader.names': 'ok',
  'writer.error': 'none',
  'writer.acked': 'many',
  'writer.readback': 'ok',
  'writer.cwd': 'mig/w',
  'writer.status': '0',
  errors: 'none',
});
const summarize = (checks: Record<string, string>) => {
  const acked = Number(checks['writer.acked']);
  return { acked, checks: { ...checks, 'writer.acked': acked > 50 ? 'many' : checks['writer.acked'] } };
};

d('live migration of a duofs virtio-fs device between real QEMUs', () => {
  test('A -> B -> A2 with a writer mid-write, a directory mid-readdir and cwds in the mount', async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const m = new MigrationLab('migration', { LAB_MIG_PHASES: '3' });
    try {
      const a = await m.startLeg('A', false);
      await m.waitConsole(a, 'MIG-WAIT 1');
      const b = await m.hop(a, 'B', 1);
      await m.waitConsole(b, 'MIG-WAIT 2');
      const a2 = await m.hop(b, 'A2', 2);
      const { checks: raw, run } = await m.finish(a2);
      const { acked, checks } = summarize(raw);
      expect(checks).toEqual({
        ...phaseChecks(1, 'after1.txt,here.txt'),
        ...phaseChecks(2, 'after1.txt,after2.txt,here.txt'),
        ...endChecks(3),
      });
      m.expectLog(acked);
      // The state went through duofs: A saved, B loaded and later saved, A2 loaded;
      // each source had QEMU's dirty log mapped while guest memory was copied.
      expect(Object.fromEntries(m.legs.map((l) => [l.name, m.transfers(l)]))).toEqual({ A: ['save'], B: ['load', 'save'], A2: ['load'] });
      expect(m.legs.map((l) => logLines(l.duofs, 'vhost-user: dirty log mapped').length)).toEqual([1, 1, 0]);
      for (const l of m.legs) expect(m.transfers(l, false)).toEqual([]);
      for (const l of m.legs) expect(l.duofs.process.exitCode).toBeNull();
      expect(run.leftoverPids).toEqual([]);
      m.progress(`${acked} lines`);
    } catch (e) {
      throw m.annotate(e);
    } finally {
      await m.close();
    }
  }, 400_000);

  test('--migration-on-error abort: an fd on an unlinked file fails the save, the source runs on', async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const m = new MigrationLab('migration-abort', { LAB_MIG_PHASES: '2', LAB_MIG_UNLINKED: '1' });
    try {
      const a = await m.startLeg('A', false);
      await m.waitConsole(a, 'MIG-WAIT 1');
      const { to: b, result } = await m.tryHop(a, 'B');
      expect(result.status).toBe('failed');
      // QEMU names the device whose state could not be saved
      expect(result.errorDesc).toBe('Save of field vhost-user-fs-backend/back-end failed: put failed');
      expect(await waitRunning(a.qmp)).toBe('running');
      await b.qmp.quit();
      await b.guest;
      m.go(1);
      const { checks: raw } = await m.finish(a);
      const { acked, checks } = summarize(raw);
      expect(checks).toEqual({ ...phaseChecks(1, 'after1.txt,here.txt'), 'phase1.unlinked_fd': 'ok', ...endChecks(2) });
      m.expectLog(acked);
      expect(m.transfers(a, false)).toEqual(['save']);
      expect(m.transfers(b)).toEqual([]);
    } catch (e) {
      throw m.annotate(e);
    } finally {
      await m.close();
    }
  }, 300_000);

  test('duofs-virtiofsd --migration-on-error guest-error: the migration completes, the unlinked fd answers EIO', async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const m = new MigrationLab('migration-guest-error', { LAB_MIG_PHASES: '2', LAB_MIG_UNLINKED: '1' }, 'virtiofsd-guest-error');
    try {
      const a = await m.startLeg('A', false);
      await m.waitConsole(a, 'MIG-WAIT 1');
      const b = await m.hop(a, 'B', 1);
      const { checks: raw } = await m.finish(b);
      const { acked, checks } = summarize(raw);
      expect(checks).toEqual({ ...phaseChecks(1, 'after1.txt,here.txt'), 'phase1.unlinked_fd': 'EIO', ...endChecks(2) });
      m.expectLog(acked);
    } catch (e) {
      throw m.annotate(e);
    } finally {
      await m.close();
    }
  }, 300_000);
});
