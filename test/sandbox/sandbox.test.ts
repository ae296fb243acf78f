// --sandbox as an operator sees it, and as a guest that took over the server
// would: the CLI serves from inside its sandbox (9P, the host FUSE mount,
// convert's in-use check, SIGTERM, a killed supervisor), and the escape probe
// (DUOFS_TEST_ESCAPE, a test-only hook) tries from inside what such a guest
// would — each attempt must fail, and nothing outside the export changes.
// The control run (--sandbox none) shows the same attempts succeed there,
// so the probe can tell.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { P9Client } from '../p9/client.js';
import { SeccompWatch } from '../../src/sandbox/seccomp-log.js';
import { fuseMountWorkload, ninepWorkload, virtiofsWorkload } from './workload.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.join(root, 'bin', 'duofs.js');
const isRoot = process.geteuid?.() === 0;
const haveUnshare = spawnSync('unshare', ['--version']).status === 0;
const maybe = isRoot && haveUnshare ? test : test.skip;

let tmp: string;
let exportDir: string;
let outside: string;
const children: ChildProcess[] = [];

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-sandbox-'));
  fs.chmodSync(tmp, 0o755);
  exportDir = path.join(tmp, 'export');
  fs.mkdirSync(exportDir);
  fs.writeFileSync(path.join(exportDir, 'hello.txt'), 'hello\n');
  outside = path.join(tmp, 'outside.txt');
  fs.writeFileSync(outside, 'untouched\n');
});

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  spawnSync('umount', ['-l', path.join(tmp, 'mnt')], { stdio: 'ignore' });
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Server {
  proc: ChildProcess;
  err: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(args: string[], env: NodeJS.ProcessEnv = {}, asUser?: number): Server {
  const argv = [bin, 'serve', '--log-format', 'text', ...args];
  const proc =
    asUser === undefined
      ? spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
      : spawn('setpriv', [`--reuid=${asUser}`, `--regid=${asUser}`, '--clear-groups', process.execPath, ...argv], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, ...env },
        });
  children.push(proc);
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  return { proc, err: () => err, exited };
}

async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The server's pid: the supervisor's grandchild (unshare --fork's child), or the process itself. */
function serverPid(s: Server): number {
  const kids = (pid: number): number[] => {
    try {
      return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const unshare = kids(s.proc.pid!)[0];
  return unshare === undefined ? s.proc.pid! : (kids(unshare)[0] ?? unshare);
}

/** What each escape attempt came to, from the probe's log lines. */
function outcomes(err: string): Record<string, string> {
  const r: Record<string, string> = {};
  for (const m of err.matchAll(/escape probe: (\S+) (?:failed|SUCCEEDED) escapeAttempt=\S+ result=(\S+)/g)) r[m[1]!] = m[2]!;
  return r;
}

const ALL = ['read-shadow', 'write-outside', 'ptrace', 'mount', 'init-module', 'raw-socket', 'file-capability', 'exec-shell'];

async function probe(
  mode: string,
  opts: { asUser?: number; model?: string; seccomp?: string; attempts?: string[]; mountAt?: string; args?: string[] } = {},
) {
  const sleeper = spawn('sleep', ['60']);
  children.push(sleeper);
  const sock = path.join(tmp, `${mode}.sock`);
  const s = start(
    [
      '--shared-dir',
      exportDir,
      '--9p-socket',
      sock,
      '--sandbox',
      mode,
      '--seccomp',
      opts.seccomp ?? 'none',
      ...(opts.model ? ['--security-model', opts.model] : []),
      ...(opts.args ?? []),
    ],
    {
      DUOFS_TEST_ESCAPE: (opts.attempts ?? ALL).join(','),
      DUOFS_TEST_ESCAPE_OUTSIDE: outside,
      DUOFS_TEST_ESCAPE_PID: String(sleeper.pid),
      DUOFS_TEST_ESCAPE_MOUNT: opts.mountAt ?? '/',
    },
    opts.asUser,
  );
  const done = await Promise.race([
    waitFor(
      () => /escape probe: exec-shell (failed|SUCC)/.test(s.err()) || Object.keys(outcomes(s.err())).length === (opts.attempts ?? ALL).length,
      'the probe',
    ).then(() => 'probed'),
    s.exited.then(() => 'exited'),
  ]);
  if (done === 'probed') {
    s.proc.kill('SIGTERM');
  }
  const end = await s.exited;
  return { results: outcomes(s.err()), err: s.err(), end };
}

maybe(
  'namespace: served from inside new namespaces with the export as the root; SIGTERM cleans up',
  async () => {
    const sock = path.join(tmp, '9p.sock');
    const mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(mnt);
    const s = start(['--shared-dir', exportDir, '--9p-socket', sock, '--fuse-mount', mnt, '--sandbox', 'namespace']);
    await waitFor(() => s.err().includes('sandbox: namespace, the export is the root'), 'the sandbox');
    const pid = serverPid(s);
    expect(pid).not.toBe(s.proc.pid);
    // Its root is the export, its mount and pid namespaces are new, for every thread.
    expect(fs.readdirSync(`/proc/${pid}/root`).sort()).toEqual(fs.readdirSync(exportDir).sort());
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      expect(fs.readdirSync(`/proc/${pid}/task/${t}/root`)).toContain('hello.txt');
      expect(fs.readlinkSync(`/proc/${pid}/task/${t}/ns/mnt`)).not.toBe(fs.readlinkSync('/proc/self/ns/mnt'));
    }
    expect(fs.readlinkSync(`/proc/${pid}/ns/pid`)).not.toBe(fs.readlinkSync('/proc/self/ns/pid'));
    expect(fs.readlinkSync(`/proc/${pid}/ns/net`)).not.toBe(fs.readlinkSync('/proc/self/ns/net'));

    // 9P works, xattrs (through the kept /proc/self/fd) included.
    const { c, root: r } = await P9Client.session(sock);
    const f = c.newFid();
    await c.walk(r, f, ['hello.txt']);
    await c.lopen(f, 0);
    expect((await c.read(f, 0, 100)).toString()).toBe('hello\n');
    const d = c.newFid();
    await c.walk(r, d, []);
    await c.lcreate(d, 'new.txt', 0o1 | 0o100, 0o644, 0);
    await c.write(d, 0, Buffer.from('written inside\n'));
    await c.fsync(d);
    await c.clunk(d);
    const x = c.newFid();
    await expect(c.xattrwalk(f, x, 'user.none')).rejects.toThrow(/ENODATA/);
    await c.close();
    expect(fs.readFileSync(path.join(exportDir, 'new.txt'), 'utf8')).toBe('written inside\n');

    // The FUSE mount made by the supervisor is on the host, served from inside.
    expect(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8')).toBe('hello\n');
    fs.writeFileSync(path.join(mnt, 'via-fuse.txt'), 'fuse\n');
    expect(fs.readFileSync(path.join(exportDir, 'via-fuse.txt'), 'utf8')).toBe('fuse\n');

    // convert sees the export in use.
    const conv = spawnSync(process.execPath, [bin, 'convert', exportDir, '--from', 'passthrough', '--to', 'mapped-xattr', '--dry-run'], {
      encoding: 'utf8',
    });
    expect(conv.status).not.toBe(0);
    expect(conv.stderr).toMatch(/in use/);

    s.proc.kill('SIGTERM');
    expect((await s.exited).code).toBe(0);
    expect(s.err()).toMatch(/duofs stopped/);
    expect(fs.existsSync(sock)).toBe(false); // removed by the supervisor
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(mnt);
  },
  60_000,
);

maybe(
  'a killed supervisor takes the server with it',
  async () => {
    const sock = path.join(tmp, 'k.sock');
    const s = start(['--shared-dir', exportDir, '--9p-socket', sock, '--sandbox', 'namespace']);
    await waitFor(() => s.err().includes('sandbox: namespace'), 'the sandbox');
    const pid = serverPid(s);
    s.proc.kill('SIGKILL');
    await waitFor(() => !fs.existsSync(`/proc/${pid}`) || fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z'), 'the server to end', 10_000);
  },
  30_000,
);

const attemptsFail = (results: Record<string, string>, attempts = ALL): void => {
  for (const a of attempts) {
    expect([a, results[a]]).toEqual([a, expect.stringMatching(/^E[A-Z]+$/)]);
  }
};

maybe(
  'control: without a sandbox the probe does escape (so the checks below can fail)',
  async () => {
    const mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(mnt);
    // No root change, no Landlock, and the capabilities the attempts need kept.
    const { results, end } = await probe('none', {
      mountAt: mnt,
      args: ['--no-landlock', '--modcaps', '+sys_admin:+net_raw:+sys_ptrace'],
      attempts: ['read-shadow', 'write-outside', 'ptrace', 'mount', 'raw-socket', 'file-capability', 'exec-shell'],
    });
    for (const a of ['read-shadow', 'write-outside', 'ptrace', 'mount', 'raw-socket', 'file-capability'])
      expect([a, results[a]]).toEqual([a, 'succeeded']);
    expect(end.code).toBe(97); // the shell ran and exited
    expect(fs.readFileSync(outside, 'utf8')).toMatch(/escaped/);
  },
  60_000,
);

for (const mode of ['namespace', 'chroot']) {
  maybe(
    `${mode}: every escape attempt fails and nothing outside the export changes`,
    async () => {
      const before = fs.readFileSync('/proc/self/mountinfo', 'utf8');
      const { results, err } = await probe(mode);
      expect(err).toMatch(new RegExp(`sandbox: ${mode}, the export is the root`));
      attemptsFail(results);
      expect(fs.readFileSync(outside, 'utf8')).toBe('untouched\n');
      expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).toBe(before);
    },
    60_000,
  );
}

maybe(
  'unprivileged namespace (a user namespace, mapped-xattr): every escape attempt fails',
  async () => {
    fs.chownSync(exportDir, 65534, 65534);
    fs.chownSync(tmp, 65534, 65534);
    const { results, err } = await probe('namespace', { asUser: 65534, model: 'mapped-xattr' });
    expect(err).toMatch(/sandbox: namespace, the export is the root.*userNamespace=true/);
    attemptsFail(results);
    expect(fs.readFileSync(outside, 'utf8')).toBe('untouched\n');
  },
  60_000,
);

maybe(
  '--seccomp log: 9P, virtio-fs and the FUSE mount served from the namespace make no call outside the list',
  async () => {
    const watch = SeccompWatch.open();
    if (!watch) throw new Error('cannot read the audit multicast group (CAP_AUDIT_READ): the check would see nothing');
    try {
      const p9 = path.join(tmp, 'l9.sock');
      const vfs = path.join(tmp, 'lv.sock');
      const mnt = path.join(tmp, 'mnt');
      fs.mkdirSync(mnt);
      for (const engine of ['io_uring', 'threads']) {
        const s = start([
          '--shared-dir',
          exportDir,
          '--9p-socket',
          p9,
          '--virtiofs-socket',
          vfs,
          '--fuse-mount',
          mnt,
          '--xattr',
          '--sandbox',
          'namespace',
          '--seccomp',
          'log',
          '--io-engine',
          engine,
        ]);
        await waitFor(() => s.err().includes('seccomp: '), 'the filter');
        expect(s.err()).toMatch(/seccomp: log/);
        const pid = serverPid(s);
        await ninepWorkload(p9, exportDir, `p9-${engine}`);
        await virtiofsWorkload(vfs, `vfs-${engine}`);
        await fuseMountWorkload(mnt, `fuse-${engine}`);
        s.proc.kill('SIGTERM');
        expect((await s.exited).code).toBe(0);
        const records = await watch.wait(pid, 1, 500);
        expect([engine, records.map((r) => r.name)]).toEqual([engine, []]);
      }
    } finally {
      watch.close();
    }
  },
  120_000,
);

maybe(
  '--seccomp kill: a forbidden call ends the server, and the supervisor names it',
  async () => {
    const { end, err, results } = await probe('namespace', { seccomp: 'kill', attempts: ['ptrace'] });
    expect(results['ptrace']).toBeUndefined(); // it never returned
    expect(end.code).toBe(128 + 31);
    expect(err).toMatch(/killed by seccomp: it made the forbidden system call ptrace \(101\)|died of SIGSYS/);
  },
  60_000,
);

maybe(
  '--seccomp kill: each forbidden attempt of the probe ends the server (or fails) — never succeeds',
  async () => {
    for (const a of ['mount', 'init-module', 'raw-socket', 'exec-shell']) {
      const { end, results } = await probe('namespace', { seccomp: 'kill', attempts: [a] });
      expect([a, results[a] === undefined ? end.code : results[a]]).toEqual([
        a,
        results[a] === undefined ? 128 + 31 : expect.stringMatching(/^E[A-Z]+$/),
      ]);
    }
  },
  120_000,
);
