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
import { runReconnect } from './reconnect.js';
import { labAvailable } from './lab.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

d('duofs virtio-9p (vhost-user) on real guests', () => {
  test("trans=virtio at msize 512000; a second boot against the same running duofs sees the first boot's writes", async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    await runReconnect({
      label: 'v9p-reconnect',
      what: 'virtio-9p',
      serve: (sock) => ['--9p-vhost-socket', sock, '--9p-tag', 'v9p'],
      mount: (sock) => ({ kind: 'vhost-user-9p', name: 'n', socket: sock, tag: 'v9p', msize: 512000 }),
      check: (runs) => {
        for (const r of runs) {
          const c = r.sections[0].checks;
          expect([c.get('mount.fstype'), c.get('mount.trans'), c.get('mount.msize')]).toEqual(['9p', 'virtio', '512000']);
        }
      },
    });
  }, 300_000);
});
