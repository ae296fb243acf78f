// duofs as a virtio-9p device over vhost-user on real guests (issue 5):
// QEMU's vhost-user-test-device-pci (virtio-id 9) backed by
//   duofs serve --shared-dir T --9p-vhost-socket S --9p-tag TAG
// and the guest's `mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 TAG`.
// The conformance comparison with QEMU's built-in 9p is in conformance.test.ts
// (server duofs-9pv); the cross-protocol scenario in cross-protocol.test.ts.
// Here: the mount really is trans=virtio at msize 512000, 4 MiB files (many
// requests of msize each) go both ways intact, and a second boot against
// the same running duofs mounts again and sees the first boot's writes.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk, freshTree, runGuest, type GuestRun } from './guest.js';
import { startDuofs } from './daemons.js';
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

d('duofs virtio-9p (vhost-user) on real guests', () => {
  test('trans=virtio at msize 512000; a second boot against the same running duofs sees the first boot\'s writes', async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const work = makeWorkDir('v9p-reconnect');
    const tree = freshTree(work, 'export');
    mkdirSync(join(work, 'sock'));
    const sock = join(work, 'sock', 'v9p.sock');
    const token = `tok${process.pid}x${Date.now()}`;
    const duofs = await startDuofs(['serve', '--shared-dir', tree, '--9p-vhost-socket', sock, '--9p-tag', 'v9p', '--log-level', 'info'], [sock]);
    try {
      const runs: GuestRun[] = [];
      for (const boot of [1, 2]) {
        const run = await runGuest({
          label: `v9p-reconnect-${boot}`, workDir: join(work, `boot${boot}`), timeoutMs: 120_000, scenario: 'reconnect-rw.sh', scenarioTimeoutSec: 60,
          env: { LAB_BOOT: String(boot), LAB_TOKEN: token },
          mounts: [{ kind: 'vhost-user-9p', name: 'n', socket: sock, tag: 'v9p', msize: 512000 }],
        });
        expectScenarioOk(run);
        runs.push(run);
        expect(duofs.process.exitCode).toBeNull();
        expect(duofs.process.signalCode).toBeNull();
      }
      const sha = reconnectBinSha();
      for (const r of runs) {
        const c = r.sections[0].checks;
        expect([c.get('mount.fstype'), c.get('mount.trans'), c.get('mount.msize')]).toEqual(['9p', 'virtio', '512000']);
      }
      const c2 = runs[1].sections[0].checks;
      expect(runs[0].sections[0].checks.get('boot1.wrote_bin')).toBe(sha);
      expect(Object.fromEntries([...c2].filter(([k]) => k.startsWith('boot2.')))).toEqual({
        'boot2.reads_boot1.txt': `${token}_boot_1,`,
        'boot2.reads_boot1.bin': sha,
        'boot2.reads_boot1.link': 'boot-1.txt',
        'boot2.reads_boot1.dir': 'directory',
        'boot2.listing': 'boot-1.bin,boot-1.txt,dir-1,link-1,',
        'boot2.wrote_bin': sha,
        'boot2.wrote': 'ok',
      });
      for (const boot of [1, 2]) {
        expect(readFileSync(join(tree, 'reconnect', `boot-${boot}.txt`), 'utf8')).toBe(`${token} boot ${boot}\n`);
        expect(createHash('sha256').update(readFileSync(join(tree, 'reconnect', `boot-${boot}.bin`))).digest('hex').slice(0, 16)).toBe(sha);
      }
      const connects = duofs.output().split('\n').filter((l) => l.includes('"msg":"vhost-user: frontend connected"'));
      expect(connects.length).toBe(2);
      process.stderr.write(`lab: virtio-9p reconnect: boots ${runs.map((r) => `${(r.wallMs / 1000).toFixed(1)} s`).join(', ')} wall\n`);
    } catch (e) {
      if (e instanceof Error) e.message += `\n--- duofs output (tail) ---\n${tail(duofs.output(), 30)}`;
      throw e;
    } finally {
      await duofs.stop();
      removeWorkDir(work);
    }
  }, 300_000);
});
