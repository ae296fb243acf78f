// The lab harness itself: real guests boot, mount every kind of server the
// harness knows, carry 9P over the stream relay, and are torn down whatever
// the guest does (hang, panic, garbage). Needs root and `npm run lab:setup`;
// DUOFS_SKIP_LAB=1 skips.
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk, freshTree, GuestError, runGuest, type GuestRun } from './guest.js';
import { labAvailable, labDir, makeWorkDir, removeWorkDir } from './lab.js';
import { P9Stub, p9str, T } from './p9stub.js';
import { DaemonError, startHostDaemon } from './daemons.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

function requireLab(): void {
  if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
}

/** No mount of the harness is ever visible on the host, and no guest process outlives its run. */
function expectCleanTeardown(run: GuestRun): void {
  expect(run.leftoverPids).toEqual([]);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m) => m?.startsWith(labDir));
  expect(mounts).toEqual([]);
}

d('lab harness (real guests under QEMU TCG)', () => {
  let work = '';
  beforeEach(() => {
    requireLab();
    work = makeWorkDir('harness');
  });
  afterEach(() => removeWorkDir(work));

  test('a guest mounts QEMU 9p (passthrough and mapped-xattr) and virtiofsd, and files flow both ways', async () => {
    const trees = { pt: freshTree(work, 'pt'), mx: freshTree(work, 'mx'), vfs: freshTree(work, 'vfs') };
    for (const t of Object.values(trees)) writeFileSync(join(t, 'from-host.txt'), 'hello-from-host');
    const run = await runGuest({
      label: 'smoke',
      workDir: work,
      timeoutMs: 120_000,
      scenario: 'smoke.sh',
      scenarioTimeoutSec: 60,
      mounts: [
        { kind: 'qemu-9p', name: 'pt', dir: trees.pt, securityModel: 'passthrough' },
        { kind: 'qemu-9p', name: 'mx', dir: trees.mx, securityModel: 'mapped-xattr' },
        { kind: 'virtiofsd', name: 'vfs', dir: trees.vfs },
      ],
    });
    expectScenarioOk(run);
    expect(run.mounted).toEqual(['pt', 'mx', 'vfs']);
    expect(run.sections.map((s) => s.mount)).toEqual(['pt', 'mx', 'vfs']);
    for (const s of run.sections) {
      expect(s.checks.get('fstype')).toBe(s.mount === 'vfs' ? 'virtiofs' : '9p');
      expect(s.checks.get('read_host_file')).toBe('hello-from-host');
      expect(s.checks.get('write')).toBe('ok');
      expect(s.checks.get('chown_seen')).toBe('1234:1234');
      expect(readFileSync(join(trees[s.mount as keyof typeof trees], 'from-guest.txt'), 'utf8')).toBe(`guest wrote to ${s.mount}\n`);
    }
    // passthrough and virtiofsd chown the host directory; mapped-xattr keeps the guest's owner in xattrs.
    expect(statSync(join(trees.pt, 'dir')).uid).toBe(1234);
    expect(statSync(join(trees.vfs, 'dir')).uid).toBe(1234);
    expect(statSync(join(trees.mx, 'dir')).uid).toBe(0);
    expect(run.bootMs).toBeLessThan(60_000);
    expectCleanTeardown(run);
  }, 150_000);

  test('9P over a byte stream: virtio-serial port + in-guest socat relay reach a host unix socket', async () => {
    mkdirSync(join(work, 'sock'));
    const stub = new P9Stub(join(work, 'sock', 'p9.sock'), 1 /* EPERM: EACCES would make mount(8) retry read-only on a second, refused connection */);
    await stub.listen();
    try {
      const run = await runGuest({
        label: 'relay',
        workDir: work,
        timeoutMs: 90_000,
        allowMountFailure: true,
        mounts: [{ kind: '9p-stream', name: 'stream', socket: stub.path, msize: 65536 }],
      });
      // QEMU connected once; the kernel's Tversion came through the relay intact,
      // our Rversion went back (the kernel then attached), and our Rlerror(EPERM)
      // came back too and failed the mount.
      expect(stub.connections).toBe(1);
      const [v, a] = stub.messages;
      expect(v.type).toBe(T.version);
      expect(v.body.readUInt32LE(0)).toBe(65536);
      expect(p9str(v.body, 4)).toBe('9P2000.L');
      expect(a.type).toBe(T.attach);
      expect(run.mountFailures.stream).toMatch(/permission denied|not permitted/i);
      expect(run.mountFailures.stream).not.toMatch(/Connection refused/);
      expectCleanTeardown(run);
    } finally {
      await stub.close();
    }
  }, 120_000);

  test('a hung guest is killed at the timeout, with the console tail in the error', async () => {
    const t0 = Date.now();
    const err = await runGuest({
      label: 'hang',
      workDir: work,
      timeoutMs: 45_000,
      scenario: 'misbehave.sh',
      scenarioArgs: ['hang'],
      mounts: [{ kind: 'qemu-9p', name: 'h', dir: freshTree(work, 'h') }],
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GuestError);
    expect((err as Error).message).toMatch(/timed out after 45000 ms/);
    expect((err as Error).message).toMatch(/CHECK about_to_hang yes/);
    expect(Date.now() - t0).toBeLessThan(60_000);
  }, 90_000);

  test('a guest kernel panic ends the run at once, with the panic in the error', async () => {
    const err = await runGuest({
      label: 'panic',
      workDir: work,
      timeoutMs: 90_000,
      scenario: 'misbehave.sh',
      scenarioArgs: ['panic'],
      mounts: [{ kind: 'virtiofsd', name: 'p', dir: freshTree(work, 'p') }],
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GuestError);
    expect((err as Error).message).toMatch(/before printing its DONE line/);
    expect((err as Error).message).toMatch(/Kernel panic|sysrq: Trigger a crash/);
  }, 120_000);

  test('garbage on the console and a failing scenario are reported, not misparsed', async () => {
    const run = await runGuest({
      label: 'garbage',
      workDir: work,
      timeoutMs: 90_000,
      scenario: 'misbehave.sh',
      scenarioArgs: ['garbage'],
      mounts: [{ kind: 'qemu-9p', name: 'g', dir: freshTree(work, 'g') }],
    });
    const [s] = run.sections;
    expect(s.rc).toBe(0);
    expect(s.checks.get('after_garbage')).toBe('yes');
    expect(s.duplicates).toEqual(['after_garbage']);
    const failing = await runGuest({
      label: 'fail',
      workDir: work,
      timeoutMs: 90_000,
      scenario: 'misbehave.sh',
      scenarioArgs: ['fail'],
      mounts: [{ kind: 'qemu-9p', name: 'f', dir: freshTree(work, 'f') }],
    });
    expect(failing.sections[0].rc).toBe(3);
    expect(() => expectScenarioOk(failing)).toThrow(/scenario on f exited with 3[\s\S]*about_to_fail/);
    expectCleanTeardown(failing);
  }, 180_000);
});

d('host daemons for lab guests', () => {
  let work = '';
  beforeEach(() => {
    work = makeWorkDir('daemons');
  });
  afterEach(() => removeWorkDir(work));

  const server = (sock: string, extra = '') =>
    `const s = require('node:net').createServer(() => {}); ${extra} s.listen(${JSON.stringify(sock)}, () => console.error('listening'));`;

  test('startHostDaemon waits for the socket, captures output and stops the process', async () => {
    const sock = join(work, 'd.sock');
    const dmn = await startHostDaemon({ name: 'fake', command: process.execPath, args: ['-e', server(sock)], waitFor: [sock] });
    expect(statSync(sock).isSocket()).toBe(true);
    // The socket file exists from bind(); the line comes after listen() returns.
    for (let i = 0; i < 200 && !/listening/.test(dmn.output()); i++) await new Promise((r) => setTimeout(r, 25));
    await dmn.stop();
    expect(dmn.process.exitCode !== null || dmn.process.signalCode !== null).toBe(true);
    expect(dmn.output()).toMatch(/listening/);
  }, 30_000);

  test('a daemon that dies before its socket exists fails with its stderr', async () => {
    const sock = join(work, 'never.sock');
    const err = await startHostDaemon({
      name: 'broken',
      command: process.execPath,
      args: ['-e', 'console.error("bad flag --frobnicate"); process.exit(2)'],
      waitFor: [sock],
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DaemonError);
    expect((err as Error).message).toMatch(/broken exited \(2\)[\s\S]*bad flag --frobnicate/);
  }, 30_000);
});
