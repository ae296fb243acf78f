// Precopy live migration of a duofs virtio-fs device between two real QEMU
// processes on this machine (issue 14; docs/live-migration.md).
// A guest boots on QEMU A with duofs A, runs migration.py on its mount (a
// writer appending fsync'd numbered lines through one open fd, a directory
// stream read a part at a time, cwds in the mount) and is migrated, while
// its processes run, to QEMU B (`-incoming defer`) with its own duofs B on
// the same export, then back to a new QEMU A' with a new duofs A'. Both
// QEMUs are driven over QMP; the migration stream goes over a unix socket.
// The guest's root (virtiofsd 1.14) migrates along with it.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConsole } from './console.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { freshTree, runGuest, type GuestRun, type MountSpec } from './guest.js';
import { labAvailable, makeWorkDir, removeWorkDir, tail } from './lab.js';
import { migrate, Qmp, waitRunning, type MigrationResult } from './qmp.js';
import { logLines, withLogs } from './reconnect.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

const ENTRIES = 3000;
const TAG = 'mig';
/** Inside each QEMU's chroot: the host folder `ctl` of the work folder. */
const CTL = '/duofs-lab/host/ctl';

interface Leg {
  name: string;
  duofs: HostDaemon;
  guest: Promise<GuestRun>;
  console: () => string;
  qmp: Qmp;
}

d('live migration of a duofs virtio-fs device between real QEMUs', () => {
  test('A -> B -> A2 with a writer mid-write, a directory mid-readdir and cwds in the mount', async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const work = makeWorkDir('migration');
    const tree = freshTree(work, 'export');
    const ctl = join(work, 'ctl');
    const sockDir = join(work, 'sock');
    mkdirSync(ctl);
    mkdirSync(sockDir);
    mkdirSync(join(tree, 'mig', 'dir'), { recursive: true });
    mkdirSync(join(tree, 'mig', 'ctl'));
    for (let i = 0; i < ENTRIES; i++) writeFileSync(join(tree, 'mig', 'dir', `entry-with-a-longish-name-${String(i).padStart(6, '0')}`), '');
    const legs: Leg[] = [];
    const results: MigrationResult[] = [];
    const planDir = join(work, 'A', 'guest');
    const t0 = Date.now();
    const progress = (s: string) => process.stderr.write(`lab: migration +${((Date.now() - t0) / 1000).toFixed(1)} s: ${s}\n`);

    const startLeg = async (name: string, incoming: boolean): Promise<Leg> => {
      const sock = join(sockDir, `${name}.sock`);
      const duofs = await startDuofs(
        ['serve', '--shared-dir', tree, '--virtiofs-socket', sock, '--tag', TAG, '--log-level', process.env.DUOFS_LAB_MIG_LOG ?? 'debug'],
        [sock],
      );
      let text = '';
      const mount: MountSpec = { kind: 'vhost-user-fs', name: 'm', socket: sock, tag: TAG };
      const guest = runGuest({
        label: `mig-${name}`,
        workDir: join(work, name),
        ...(incoming ? { planDir } : {}),
        controlDir: ctl,
        qemuArgs: ['-qmp', `unix:${CTL}/${name}.qmp,server=on,wait=off`, ...(incoming ? ['-incoming', 'defer'] : [])],
        allowIncomplete: true,
        memoryMiB: 512,
        timeoutMs: 240_000,
        scenario: 'migration.py',
        env: { LAB_MIG_ENTRIES: String(ENTRIES), LAB_MIG_PHASES: '3' },
        mounts: [mount],
        onConsole: (s) => {
          text += s;
        },
      });
      guest.catch(() => undefined);
      const qmp = await Qmp.connect(join(ctl, `${name}.qmp`), 60_000);
      const leg = { name, duofs, guest, console: () => text, qmp };
      legs.push(leg);
      return leg;
    };
    const waitConsole = async (leg: Leg, what: string, ms: number) => {
      const deadline = Date.now() + ms;
      while (!leg.console().includes(what)) {
        if (Date.now() > deadline) throw new Error(`guest on ${leg.name} did not print ${what} within ${ms} ms\n${tail(leg.console(), 30)}`);
        await Promise.race([leg.guest.then(() => undefined), new Promise((r) => setTimeout(r, 200))]);
      }
    };
    const hop = async (from: Leg, toName: string, n: number): Promise<Leg> => {
      const to = await startLeg(toName, true);
      const r = await migrate(from.qmp, to.qmp, `unix:${CTL}/${from.name}-${toName}.mig`);
      results.push(r);
      progress(
        `${from.name} -> ${toName}: ${r.status}${r.errorDesc ? ` (${r.errorDesc})` : ''}, total ${r.totalTimeMs} ms, downtime ${r.downtimeMs} ms`,
      );
      if (r.status !== 'completed') throw new Error(`migration ${from.name} -> ${toName}: ${r.status}: ${r.errorDesc ?? JSON.stringify(r.info)}`);
      expect(await waitRunning(to.qmp)).toBe('running');
      await from.qmp.quit();
      await from.guest;
      writeFileSync(join(tree, 'mig', 'ctl', `go${n}`), '');
      return to;
    };

    try {
      const a = await startLeg('A', false);
      await waitConsole(a, 'MIG-WAIT 1', 120_000);
      progress('guest ready on A');
      const b = await hop(a, 'B', 1);
      await waitConsole(b, 'MIG-WAIT 2', 120_000);
      progress('guest ready on B');
      const a2 = await hop(b, 'A2', 2);
      const last = await a2.guest;
      progress('guest done on A2');
      const all = parseConsole(legs.map((l) => l.console()).join(''));
      expect(all.done).toBe(true);
      const section = all.sections[0]!;
      const checks = Object.fromEntries(section.checks);
      const acked = Number(checks['writer.acked']);
      expect({ ...checks, 'writer.acked': acked > 100 ? 'many' : checks['writer.acked'] }).toEqual({
        'phase1.acked_grows': 'yes',
        'phase1.cwd': 'mig/cwd',
        'phase1.cwd_file': 'cwd',
        'phase1.cwd_list': 'after1.txt,here.txt',
        'phase1.writer_goes_on': 'yes',
        'phase2.acked_grows': 'yes',
        'phase2.cwd': 'mig/cwd',
        'phase2.cwd_file': 'cwd',
        'phase2.cwd_list': 'after1.txt,after2.txt,here.txt',
        'phase2.writer_goes_on': 'yes',
        'phase3.acked_grows': 'yes',
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
      expect(section.rc).toBe(0);
      // The host file holds every acknowledged line exactly once, in order.
      const lines = readFileSync(join(tree, 'mig', 'w', 'log.txt'), 'utf8')
        .split('\n')
        .slice(0, -1);
      expect(lines.length).toBe(acked);
      expect(lines.every((l, i) => l === String(i + 1).padStart(8, '0'))).toBe(true);
      // The state went through duofs: A saved, B loaded and later saved, A2 loaded;
      // each source had QEMU's dirty log mapped while guest memory was copied.
      const transfers = (l: Leg) => logLines(l.duofs, 'vhost-user: device state transfer succeeded').map((o) => o.direction);
      expect(Object.fromEntries(legs.map((l) => [l.name, transfers(l)]))).toEqual({ A: ['save'], B: ['load', 'save'], A2: ['load'] });
      expect(legs.map((l) => logLines(l.duofs, 'vhost-user: dirty log mapped').length)).toEqual([1, 1, 0]);
      for (const l of legs) expect(logLines(l.duofs, 'vhost-user: device state transfer failed')).toEqual([]);
      for (const l of legs) expect(l.duofs.process.exitCode).toBeNull();
      expect(last.leftoverPids).toEqual([]);
      progress(`${acked} lines; legs ${legs.map((l) => l.name).join(', ')}`);
    } catch (e) {
      for (const l of legs) if (e instanceof Error) e.message += `\n--- console ${l.name} (tail) ---\n${tail(l.console(), 40)}`;
      throw withLogs(e, ...legs.map((l) => l.duofs));
    } finally {
      for (const l of legs) await l.qmp.quit();
      for (const l of legs) await l.duofs.stop();
      if (process.env.DUOFS_LAB_KEEP === '1') for (const l of legs) writeFileSync(join(work, `duofs-${l.name}.log`), l.duofs.output());
      await Promise.allSettled(legs.map((l) => l.guest));
      removeWorkDir(work);
    }
  }, 400_000);
});
