// duofs as a virtio-fs device on real guests (issue 4, "Lab:" items other
// than the conformance comparison, which is in conformance.test.ts):
// * a second boot against the same running duofs (reconnect) mounts and
//   sees what the first boot wrote;
// * two guests at once lock the same file and exclude each other, with
//   POSIX (fcntl) locks and with flock.
// One duofs process serves everything: one vhost-user device (one guest)
// per --virtiofs-socket / --9p-vhost-socket, all on one backend.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk, freshTree, runGuest } from './guest.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { labAvailable, makeWorkDir, removeWorkDir, tail } from './lab.js';
import { logLines, runReconnect, withLogs } from './reconnect.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

d('duofs virtio-fs on real guests', () => {
  test("a second boot against the same running duofs mounts and sees the first boot's writes", async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    await runReconnect({
      label: 'vfs-reconnect',
      what: 'virtio-fs',
      serve: (sock) => ['--virtiofs-socket', sock, '--tag', 'vfs'],
      mount: (sock) => ({ kind: 'vhost-user-fs', name: 'v', socket: sock, tag: 'vfs' }),
      check: (runs, duofs) => {
        expect(runs[0]!.sections[0].checks.get('mount.fstype')).toBe('virtiofs');
        // the device was reset between the two frontends
        expect(
          logLines(duofs, 'vhost-user: frontend disconnected; device reset').length +
            logLines(duofs, 'vhost-user: frontend connection ended; device reset').length,
        ).toBe(2);
      },
    });
  }, 300_000);

  test('two guests lock the same file: POSIX and flock locks exclude each other, a blocked lock waits for the release', async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const work = makeWorkDir('vfs-locks');
    const tree = freshTree(work, 'export');
    // Turn-taking markers for the two guests, outside the export under test (each guest
    // reaches it through its own virtiofsd with --cache=never).
    const syncDir = freshTree(work, 'sync');
    mkdirSync(join(work, 'sock'));
    const s = (n: string) => join(work, 'sock', `${n}.sock`);
    const daemons: HostDaemon[] = [];
    try {
      // One process: virtio-fs for guest A; virtio-fs and virtio-9p for guest B.
      daemons.push(
        await startDuofs(
          [
            'serve',
            '--shared-dir',
            tree,
            '--virtiofs-socket',
            s('fa'),
            '--virtiofs-socket',
            s('fb'),
            '--tag',
            'lk',
            '--9p-vhost-socket',
            s('pb'),
            '--9p-tag',
            'pb',
            '--log-level',
            'info',
          ],
          [s('fa'), s('fb'), s('pb')],
        ),
      );
      const sync = { kind: 'virtiofsd' as const, name: 'sync', dir: syncDir, args: ['--sandbox=chroot', '--cache=never', '--log-level=warn'] };
      // Rounds name:kind:mount. A always locks through virtio-fs; B through 9p, then virtio-fs.
      const roundsA = ['p9:posix:/mnt/fa', 'pvfs:posix:/mnt/fa', 'fvfs:flock:/mnt/fa'];
      const roundsB = ['p9:posix:/mnt/pb', 'pvfs:posix:/mnt/fb', 'fvfs:flock:/mnt/fb'];
      const args = (role: string, rounds: string[]) => ['--role', role, '--sync', '/mnt/sync', ...rounds.flatMap((r) => ['--round', r])];
      const [a, b] = await Promise.all([
        runGuest({
          label: 'locks-a',
          workDir: join(work, 'a'),
          timeoutMs: 300_000,
          scenario: 'locks-two-guests.py',
          scenarioTimeoutSec: 240,
          scenarioOn: ['fa'],
          scenarioArgs: args('holder', roundsA),
          mounts: [{ kind: 'vhost-user-fs', name: 'fa', socket: s('fa'), tag: 'lk' }, sync],
        }),
        runGuest({
          label: 'locks-b',
          workDir: join(work, 'b'),
          timeoutMs: 300_000,
          scenario: 'locks-two-guests.py',
          scenarioTimeoutSec: 240,
          scenarioOn: ['pb'],
          scenarioArgs: args('contender', roundsB),
          mounts: [
            // locktimeout=1: the guest's 9p client retries a blocked F_SETLKW every second (9P2000.L has no wake-up)
            { kind: 'vhost-user-9p', name: 'pb', socket: s('pb'), tag: 'pb', msize: 512000, mountOptions: 'locktimeout=1' },
            { kind: 'vhost-user-fs', name: 'fb', socket: s('fb'), tag: 'lk' },
            sync,
          ],
        }),
      ]);
      const out = `--- guest A ---\n${tail(a.sections[0]?.output ?? a.console, 30)}\n--- guest B ---\n${tail(b.sections[0]?.output ?? b.console, 30)}`;
      try {
        expectScenarioOk(a);
        expectScenarioOk(b);
        const got = { ...Object.fromEntries(a.sections[0].checks), ...Object.fromEntries(b.sections[0].checks) };
        const want: Record<string, string> = {};
        for (const r of ['p9', 'pvfs', 'fvfs']) {
          Object.assign(want, {
            [`${r}.holder_lock`]: 'ok',
            [`${r}.contender_trylock`]: 'EAGAIN',
            ...(r === 'fvfs' ? {} : { [`${r}.contender_getlk`]: 'wr' }),
            [`${r}.contender_wait`]: 'granted_after_release,waited',
            [`${r}.holder_trylock_while_held`]: 'EAGAIN',
            [`${r}.holder_trylock_after_release`]: 'ok',
          });
        }
        expect(got).toEqual(want);
      } catch (e) {
        if (e instanceof Error) e.message += `\n${out}`;
        throw e;
      }
      process.stderr.write(`lab: virtio-fs locks: guests ${(a.wallMs / 1000).toFixed(1)} s and ${(b.wallMs / 1000).toFixed(1)} s wall\n`);
    } catch (e) {
      throw withLogs(e, ...daemons);
    } finally {
      for (const dm of daemons) await dm.stop();
      removeWorkDir(work);
    }
  }, 360_000);
});
