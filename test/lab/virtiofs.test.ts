// duofs as a virtio-fs device on real guests (issue 4, "Lab:" items other
// than the conformance comparison, which is in conformance.test.ts):
// * a second boot against the same running duofs (reconnect) mounts and
//   sees what the first boot wrote;
// * two guests at once lock the same file and exclude each other, with
//   POSIX (fcntl) locks and with flock.
// One duofs process serves everything: one vhost-user device (one guest)
// per --virtiofs-socket / --9p-vhost-socket, all on one backend.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk, freshTree, runGuest, type GuestRun } from './guest.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { labAvailable, makeWorkDir, removeWorkDir, tail } from './lab.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

/** The 4 MiB every boot of reconnect-rw.sh writes (its sha256, first 16 hex digits). */
function reconnectBinSha(): string {
  const line = Buffer.from('duofs reconnect test data 0123456789abcdef\n');
  const buf = Buffer.alloc(4 * 1024 * 1024);
  for (let o = 0; o < buf.length; o += line.length) line.copy(buf, o);
  return createHash('sha256').update(buf).digest('hex').slice(0, 16);
}

/** JSON log lines of a duofs whose msg is `msg`. */
function logLines(daemon: HostDaemon, msg: string): Record<string, unknown>[] {
  return daemon.output().split('\n').filter((l) => l.startsWith('{')).map((l) => {
    try { return JSON.parse(l) as Record<string, unknown>; } catch { return {}; }
  }).filter((o) => o.msg === msg);
}

function withLogs(e: unknown, ...daemons: HostDaemon[]): unknown {
  if (e instanceof Error) for (const dm of daemons) e.message += `\n--- duofs output (tail) ---\n${tail(dm.output(), 30)}`;
  return e;
}

d('duofs virtio-fs on real guests', () => {
  test('a second boot against the same running duofs mounts and sees the first boot\'s writes', async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const work = makeWorkDir('vfs-reconnect');
    const tree = freshTree(work, 'export');
    mkdirSync(join(work, 'sock'));
    const sock = join(work, 'sock', 'vfs.sock');
    const token = `tok${process.pid}x${Date.now()}`;
    const duofs = await startDuofs(['serve', '--shared-dir', tree, '--virtiofs-socket', sock, '--tag', 'vfs', '--log-level', 'info'], [sock]);
    try {
      const runs: GuestRun[] = [];
      for (const boot of [1, 2]) {
        const bootDir = join(work, `boot${boot}`);
        mkdirSync(bootDir);
        const run = await runGuest({
          label: `vfs-reconnect-${boot}`, workDir: bootDir, timeoutMs: 120_000, scenario: 'reconnect-rw.sh', scenarioTimeoutSec: 60,
          env: { LAB_BOOT: String(boot), LAB_TOKEN: token },
          mounts: [{ kind: 'vhost-user-fs', name: 'v', socket: sock, tag: 'vfs' }],
        });
        expectScenarioOk(run);
        runs.push(run);
        // The same duofs process is still serving once the guest (and its QEMU) is gone.
        expect(duofs.process.exitCode).toBeNull();
        expect(duofs.process.signalCode).toBeNull();
      }
      const sha = reconnectBinSha();
      const [c1, c2] = runs.map((r) => r.sections[0].checks);
      expect(c1.get('mount.fstype')).toBe('virtiofs');
      expect(c1.get('boot1.wrote')).toBe('ok');
      expect(c1.get('boot1.wrote_bin')).toBe(sha);
      expect(Object.fromEntries([...c2].filter(([k]) => k.startsWith('boot2.')))).toEqual({
        'boot2.reads_boot1.txt': `${token}_boot_1,`,
        'boot2.reads_boot1.bin': sha,
        'boot2.reads_boot1.link': 'boot-1.txt',
        'boot2.reads_boot1.dir': 'directory',
        'boot2.listing': 'boot-1.bin,boot-1.txt,dir-1,link-1,',
        'boot2.wrote_bin': sha,
        'boot2.wrote': 'ok',
      });
      // Both boots' writes reached the host.
      for (const boot of [1, 2]) {
        expect(readFileSync(join(tree, 'reconnect', `boot-${boot}.txt`), 'utf8')).toBe(`${token} boot ${boot}\n`);
        expect(createHash('sha256').update(readFileSync(join(tree, 'reconnect', `boot-${boot}.bin`))).digest('hex').slice(0, 16)).toBe(sha);
      }
      // duofs saw two frontends, one after the other, and reset the device in between.
      expect(logLines(duofs, 'vhost-user: frontend connected').length).toBe(2);
      expect(logLines(duofs, 'vhost-user: frontend disconnected; device reset').length +
        logLines(duofs, 'vhost-user: frontend connection ended; device reset').length).toBe(2);
      process.stderr.write(`lab: virtio-fs reconnect: boots ${runs.map((r) => `${(r.wallMs / 1000).toFixed(1)} s`).join(', ')} wall\n`);
    } catch (e) {
      throw withLogs(e, duofs);
    } finally {
      await duofs.stop();
      removeWorkDir(work);
    }
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
      daemons.push(await startDuofs(['serve', '--shared-dir', tree, '--virtiofs-socket', s('fa'), '--virtiofs-socket', s('fb'), '--tag', 'lk',
        '--9p-vhost-socket', s('pb'), '--9p-tag', 'pb', '--log-level', 'info'], [s('fa'), s('fb'), s('pb')]));
      const sync = { kind: 'virtiofsd' as const, name: 'sync', dir: syncDir, args: ['--sandbox=chroot', '--cache=never', '--log-level=warn'] };
      // Rounds name:kind:mount. A always locks through virtio-fs; B through 9p, then virtio-fs.
      const roundsA = ['p9:posix:/mnt/fa', 'pvfs:posix:/mnt/fa', 'fvfs:flock:/mnt/fa'];
      const roundsB = ['p9:posix:/mnt/pb', 'pvfs:posix:/mnt/fb', 'fvfs:flock:/mnt/fb'];
      const args = (role: string, rounds: string[]) => ['--role', role, '--sync', '/mnt/sync', ...rounds.flatMap((r) => ['--round', r])];
      const [a, b] = await Promise.all([
        runGuest({
          label: 'locks-a', workDir: join(work, 'a'), timeoutMs: 300_000, scenario: 'locks-two-guests.py', scenarioTimeoutSec: 240,
          scenarioOn: ['fa'], scenarioArgs: args('holder', roundsA),
          mounts: [{ kind: 'vhost-user-fs', name: 'fa', socket: s('fa'), tag: 'lk' }, sync],
        }),
        runGuest({
          label: 'locks-b', workDir: join(work, 'b'), timeoutMs: 300_000, scenario: 'locks-two-guests.py', scenarioTimeoutSec: 240,
          scenarioOn: ['pb'], scenarioArgs: args('contender', roundsB),
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
