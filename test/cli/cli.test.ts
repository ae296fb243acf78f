// The duofs command as an operator runs it: startup errors, signals, the
// socket file's life cycle, an inherited connected fd.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { P9Client } from '../p9/client.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.join(root, 'bin', 'duofs.js');

let tmp: string;
let exportDir: string;
const children: ChildProcess[] = [];

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-cli-'));
  exportDir = path.join(tmp, 'export');
  fs.mkdirSync(exportDir);
  fs.writeFileSync(path.join(exportDir, 'hello.txt'), 'hello\n');
});

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Runs the CLI; `error` is the last stderr line (log lines may come before it). */
function run(args: string[]): { status: number | null; stderr: string; stdout: string; error: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 20_000 });
  const lines = r.stderr.trim().split('\n');
  return { status: r.status, stderr: r.stderr, stdout: r.stdout, error: lines[lines.length - 1] ?? '' };
}

function start(args: string[], extra: { stdio?: unknown[] } = {}): ChildProcess {
  const c = spawn(process.execPath, [bin, ...args], { stdio: (extra.stdio ?? ['ignore', 'pipe', 'pipe']) as never });
  children.push(c);
  return c;
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const exited = (c: ChildProcess): Promise<number | null> =>
  c.exitCode !== null ? Promise.resolve(c.exitCode) : new Promise((r) => c.once('exit', (code) => r(code)));

test('--help explains every serve flag', () => {
  const r = run(['serve', '--help']);
  expect(r.status).toBe(0);
  for (const flag of ['--shared-dir', '--9p-socket', '--9p-tcp', '--9p-fd', '--9p-max-msize', '--readonly', '--log-level']) {
    expect(r.stdout).toContain(flag);
  }
});

test('--9p-permissions takes guest or host and refuses anything else by name', () => {
  expect(run(['serve', '--help']).stdout).toMatch(/--9p-permissions[\s\S]*"guest", "host"/);
  const r = run(['serve', '--shared-dir', '/tmp', '--9p-tcp', '0', '--9p-permissions', 'root']);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/9p-permissions.*Given: "root", Choices: "guest", "host"/);
});

test('--version prints the version and exits 0; usage errors exit 2', () => {
  const v = run(['--version']);
  expect(v.status).toBe(0);
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
  expect(v.stdout.trim()).toBe(`duofs ${pkg.version}`);
  expect(run([]).status).toBe(2);
  expect(run(['serve', '--bogus']).status).toBe(2);
  expect(run(['serve', '--shared-dir', exportDir, '--9p-tcp', '0', '--log-format', 'xml']).status).toBe(2);
  const bad = run(['serve', '--fsdev', `local,path=${exportDir},security_model=none,nope=1`, '--9p-tcp', '0']);
  expect([bad.status, bad.error]).toEqual([2, expect.stringMatching(/^duofs: .*nope/)]);
  expect(run(['serve', '--shared-dir', exportDir, '--9p-tcp', '0', '--translate-uid', 'map:1']).status).toBe(2);
});

test("--uid-map/--gid-map: virtiofsd's syntax and messages, a bad value is a usage error (exit 2)", () => {
  const bad = run(['serve', '--shared-dir', exportDir, '--9p-tcp', '0', '--uid-map', ':0:1000:1:', '--uid-map=:1:x:5:']);
  expect([bad.status, bad.error]).toEqual([2, "duofs: invalid value ':1:x:5:' for '--uid-map <UID_MAP>': invalid digit found in string"]);
  const gid = run(['serve', '--shared-dir', exportDir, '--9p-tcp', '0', '--gid-map', '::']);
  expect([gid.status, gid.error]).toEqual([
    2,
    "duofs: invalid value '::' for '--gid-map <GID_MAP>': The map is empty or incorrect number of values are provided",
  ]);
  const none = run(['serve', '--shared-dir', exportDir, '--9p-tcp', '0', '--gid-map']);
  expect([none.status, none.error]).toEqual([2, 'Not enough arguments following: gid-map']);
  expect(run(['serve', '--help']).stdout).toMatch(/--uid-map[\s\S]*:NAMESPACE_UID:HOST_UID:COUNT:[\s\S]*--gid-map/);
});

test("--log-format text gives virtiofsd-style lines, json (the default off a terminal) pino's", async () => {
  const lines = async (extra: string[]): Promise<string[]> => {
    const d = start(['serve', '--shared-dir', exportDir, '--9p-socket', path.join(tmp, `s${extra.length}.sock`), ...extra]);
    let err = '';
    d.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    await waitFor(() => /serving 9P2000.L/.test(err));
    d.kill('SIGTERM');
    await exited(d); // (may beat the signal handlers: the status is not this test's subject)
    return err
      .trim()
      .split('\n')
      .filter((l) => !/shutting down|closing/.test(l));
  };
  const text = await lines(['--log-format', 'text']);
  for (const l of text) expect(l).toMatch(/^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO |WARN |DEBUG|ERROR) duofs\] /);
  expect(text.join('\n')).toMatch(/INFO  duofs\] serving 9P2000.L on a unix socket .*export=/);
  for (const l of await lines([])) expect(JSON.parse(l)).toMatchObject({ level: expect.any(Number), msg: expect.any(String) });
});

test('--fsdev with max_xattr (QEMU 11.1) serves, and says once at info how duofs treats it', async () => {
  const d = start([
    'serve',
    '--fsdev',
    `local,id=x,path=${exportDir},security_model=mapped-xattr,max_xattr=1024`,
    '--9p-socket',
    path.join(tmp, 'f.sock'),
  ]);
  let err = '';
  d.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  await waitFor(() => /serving 9P2000.L/.test(err));
  d.kill('SIGTERM');
  await exited(d);
  const notes = err
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { level: number; msg: string })
    .filter((l) => /max_xattr/.test(l.msg));
  expect(notes).toEqual([expect.objectContaining({ level: 30, msg: expect.stringMatching(/^max_xattr=1024: accepted; /) })]);
});

test('a flag given twice takes its last value (no "none,none" past the choices); a list flag keeps every value', async () => {
  const d = start([
    'serve',
    '--shared-dir',
    '/nonexistent-first-value',
    '--shared-dir',
    exportDir,
    '--9p-socket',
    path.join(tmp, 'twice.sock'),
    '--sandbox',
    'namespace',
    '--sandbox=none',
    '--translate-uid',
    'map:0:1000:1',
    '--translate-uid',
    'map:5:2000:1',
    '--log-level',
    'info',
  ]);
  let err = '';
  d.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  await waitFor(() => /serving 9P2000.L/.test(err));
  d.kill('SIGTERM');
  expect(await exited(d)).toBe(0);
  const lines = err
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg: string; sandbox?: unknown; export?: string });
  expect(lines.find((l) => l.msg === 'export opened')?.export).toBe(fs.realpathSync(exportDir));
  expect(lines.filter((l) => l.sandbox !== undefined).map((l) => l.sandbox)).toEqual(['none']);
  // both --translate-uid rules were taken: a third one naming guest 0 again would be refused
  const clash = run(['serve', '--shared-dir', exportDir, '--9p-tcp', '0', '--translate-uid', 'map:0:1000:1', '--translate-uid', 'map:0:3000:1']);
  expect(clash.status).not.toBe(0);
});

test('a missing export is one clear line and exit status 1', () => {
  const r = run(['serve', '--shared-dir', path.join(tmp, 'nope'), '--9p-socket', path.join(tmp, 's.sock')]);
  expect(r.status).toBe(1);
  expect(r.error).toBe(`duofs: export ${path.join(tmp, 'nope')} does not exist`);
});

test('an export that is a file is refused', () => {
  const r = run(['serve', '--shared-dir', path.join(exportDir, 'hello.txt'), '--9p-tcp', '0']);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/is not a directory/);
});

test('serving nothing is refused', () => {
  const r = run(['serve', '--shared-dir', exportDir]);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/nothing to serve on/);
});

test('a TCP address in use is one clear line', async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const r = run(['serve', '--shared-dir', exportDir, '--9p-tcp', `127.0.0.1:${port}`]);
    expect(r.status).toBe(1);
    expect(r.error).toBe(`duofs: 127.0.0.1:${port}: address in use`);
  } finally {
    blocker.close();
  }
});

test('a live unix socket is not stolen; a stale one is replaced; SIGTERM removes it', async () => {
  const sock = path.join(tmp, '9p.sock');
  const a = start(['serve', '--shared-dir', exportDir, '--9p-socket', sock, '--log-level', 'info']);
  await waitFor(() => fs.existsSync(sock));
  expect(fs.statSync(sock).mode & 0o777).toBe(0o600);

  const b = run(['serve', '--shared-dir', exportDir, '--9p-socket', sock]);
  expect(b.status).toBe(1);
  expect(b.error).toBe(`duofs: ${sock}: address in use (another server is listening there)`);

  // The first server still works, and a client's in-flight session ends cleanly on SIGTERM.
  const { c, root: rootFid } = await P9Client.session(sock);
  expect((await c.walk(rootFid, c.newFid(), ['hello.txt'])).length).toBe(1);
  a.kill('SIGTERM');
  expect(await exited(a)).toBe(0);
  expect(fs.existsSync(sock)).toBe(false);
  await c.close();

  // Leave a stale socket behind (SIGKILL), then start again on the same path.
  const k = start(['serve', '--shared-dir', exportDir, '--9p-socket', sock]);
  await waitFor(() => fs.existsSync(sock));
  k.kill('SIGKILL');
  await exited(k);
  expect(fs.existsSync(sock)).toBe(true);
  const d = start(['serve', '--shared-dir', exportDir, '--9p-socket', sock]);
  let err = '';
  d.stderr!.on('data', (x: Buffer) => {
    err += x.toString();
  });
  await waitFor(() => err.includes('serving 9P2000.L on a unix socket'));
  const s2 = await P9Client.session(sock);
  expect((await s2.c.walk(s2.root, s2.c.newFid(), ['hello.txt'])).length).toBe(1);
  await s2.c.close();
  d.kill('SIGINT');
  expect(await exited(d)).toBe(0);
  expect(fs.existsSync(sock)).toBe(false);
}, 30_000);

test('a path that is not a socket is refused', () => {
  const p = path.join(tmp, 'plain');
  fs.writeFileSync(p, '');
  const r = run(['serve', '--shared-dir', exportDir, '--9p-socket', p]);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/exists and is not a socket/);
  expect(fs.readFileSync(p, 'utf8')).toBe('');
});

test('serves one client on an inherited connected fd (trans=fd)', async () => {
  // A connected unix socket pair: our end is `mine`, the server gets the other as fd 3.
  const sock = path.join(tmp, 'pair.sock');
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(sock, () => r()));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const theirs = net.connect(sock);
  await new Promise<void>((r) => theirs.once('connect', () => r()));
  const mine = await accepted;
  const child = start(['serve', '--shared-dir', exportDir, '--9p-fd', '3', '--log-level', 'warn'], {
    stdio: ['ignore', 'pipe', 'pipe', theirs],
  });
  theirs.destroy();
  // The client's constructor is private (it normally dials); wrap our end directly.
  const c = new (P9Client as unknown as new (s: net.Socket, o: object) => P9Client)(mine, {});
  await c.version(65536);
  const rootFid = c.newFid();
  await c.attach(rootFid, 0xffffffff, '', '', 0);
  const f = c.newFid();
  await c.walk(rootFid, f, ['hello.txt']);
  await c.lopen(f, 0);
  expect((await c.read(f, 0, 100)).toString()).toBe('hello\n');
  await c.close();
  srv.close();
  child.kill('SIGTERM');
  await exited(child);
});

test('--log-burst and --log-rate bound the lines a client can cause; --log-burst 0 lifts the limit', async () => {
  const badWalk = (tag: number): Buffer => {
    const b = Buffer.alloc(17);
    b.writeUInt32LE(17, 0);
    b[4] = 110; // Twalk
    b.writeUInt16LE(tag, 5);
    b.writeUInt32LE(5000 + tag, 7); // a fid never bound: EBADF
    b.writeUInt32LE(9000 + tag, 11);
    return b;
  };
  const flood = async (limitArgs: string[]): Promise<string[]> => {
    const sock = path.join(tmp, `flood-${limitArgs.join('')}.sock`);
    const d = start(['serve', '--shared-dir', exportDir, '--9p-socket', sock, '--log-level', 'warn', ...limitArgs]);
    let err = '';
    d.stderr!.on('data', (x: Buffer) => {
      err += x.toString();
    });
    await waitFor(() => fs.existsSync(sock));
    const { c } = await P9Client.session(sock);
    for (let t = 1; t <= 50; t++) await expect(c.rawRequest(badWalk(t))).rejects.toThrow(/EBADF/);
    await c.close();
    d.kill('SIGTERM');
    expect(await exited(d)).toBe(0);
    return err
      .trim()
      .split('\n')
      .filter((l) => /bad 9p request/.test(l));
  };
  const limited = await flood(['--log-burst', '3', '--log-rate', '0']);
  expect(limited).toHaveLength(4); // three lines, then the summary at the end of the session
  expect(JSON.parse(limited[3]!)).toMatchObject({ suppressed: 47, kind: '9p.bad-request' });
  expect(await flood(['--log-burst', '0'])).toHaveLength(50);
  const r = run(['serve', '--shared-dir', exportDir, '--9p-tcp', '0', '--log-burst', '-1']);
  expect(r.status).toBe(1);
  expect(r.error).toMatch(/--log-burst -1: expected a whole number/);
}, 30_000);
