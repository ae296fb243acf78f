// The export lock protocol between duofs servers and duofs convert. OFD locks
// belong to open file descriptions, so two fds in this one process contend
// exactly as two processes would.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireConvertLock, acquireServeLock, ExportInUseError, findProcessesUsing, serveLockHeld } from '../../src/convert/in-use.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let dir: string;
beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-inuse-')));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

test('servers share an export; convert is refused while any holds it', () => {
  const a = acquireServeLock(dir);
  const b = acquireServeLock(dir);
  expect(serveLockHeld(dir)).toBe(true);
  expect(() => acquireConvertLock(dir)).toThrow(ExportInUseError);
  a.release();
  expect(() => acquireConvertLock(dir)).toThrow(/a duofs server is serving this export/);
  b.release();
  b.release(); // idempotent
  expect(serveLockHeld(dir)).toBe(false);
  acquireConvertLock(dir).release();
});

test('a server is refused while convert holds the export; two converts exclude each other', () => {
  const c = acquireConvertLock(dir);
  expect(() => acquireServeLock(dir)).toThrow(/duofs convert` is rewriting this export/);
  expect(() => acquireConvertLock(dir)).toThrow(/another `duofs convert`/);
  c.release();
  acquireServeLock(dir).release();
});

test('nothing is created in the export', () => {
  const l = acquireServeLock(dir);
  expect(fs.readdirSync(dir)).toEqual([]);
  l.release();
});

test('the lock dies with the process that held it', async () => {
  const script = `
    const { acquireServeLock } = await import(${JSON.stringify(path.join(root, 'dist/src/convert/in-use.js'))});
    acquireServeLock(process.argv[1]);
    process.stdout.write('held\\n');
    setInterval(() => {}, 1000);`;
  const c = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      c.stdout!.on('data', (d: Buffer) => (d.toString().includes('held') ? resolve() : undefined));
      c.once('exit', (code) => reject(new Error(`child exited ${code}`)));
    });
    expect(serveLockHeld(dir)).toBe(true);
    // The holder shows up in the process scan too (it has an fd on the root).
    expect(findProcessesUsing(dir).holders.some((h) => h.pid === c.pid && h.how === 'fd')).toBe(true);
  } finally {
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
  }
  expect(serveLockHeld(dir)).toBe(false);
});

test('the process scan does not count this process and finds open files beneath the export', async () => {
  fs.mkdirSync(path.join(dir, 'a'));
  fs.writeFileSync(path.join(dir, 'a', 'f'), '');
  const fd = fs.openSync(path.join(dir, 'a', 'f'), 'r');
  try {
    expect(findProcessesUsing(dir).holders).toEqual([]);
  } finally {
    fs.closeSync(fd);
  }
  const c = spawn('sh', ['-c', 'exec 9<"$1"; sleep 30', 'sh', path.join(dir, 'a', 'f')], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const h = findProcessesUsing(dir).holders.find((x) => x.pid === c.pid);
    expect(h).toMatchObject({ how: 'fd', target: path.join(dir, 'a', 'f') });
  } finally {
    c.kill('SIGKILL');
  }
});
