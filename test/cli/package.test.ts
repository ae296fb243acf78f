// The package as an operator installs it: `npm pack`, then `npm install -g`
// of the tarball into a fresh prefix. The bins run from that install, it
// holds nothing of test/, and `duofs bench --host` works from it.
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../support/daemon.js';

jest.setTimeout(300_000);

let tmp: string;
let bin: string;
let files: string[];

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-pack-'));
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', tmp], {
    cwd: repoRoot,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const info = JSON.parse(out.slice(out.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  files = info[0]!.files.map((f) => f.path);
  const tarball = path.join(tmp, path.basename(info[0]!.filename));
  const prefix = path.join(tmp, 'prefix');
  execFileSync('npm', ['install', '-g', '--prefer-offline', '--no-audit', '--no-fund', '--prefix', prefix, tarball], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  bin = path.join(prefix, 'bin');
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('the tarball holds the compiled product and nothing of test/', () => {
  expect(files).toEqual(
    expect.arrayContaining([
      'bin/duofs.js',
      'bin/duofs-virtiofsd.js',
      'dist/src/cli.js',
      'dist/compat/virtiofsd/main.js',
      'dist/src/doubles/p9-client.js',
      'share/systemd/duofs@.service',
      'share/systemd/duofs@.socket',
      'share/systemd/duofs-9p@.socket',
    ]),
  );
  expect(files.filter((f) => f.startsWith('test/') || f.startsWith('dist/test/') || (f.endsWith('.ts') && !f.endsWith('.d.ts')))).toEqual([]);
});

test('duofs and duofs-virtiofsd run from the install', () => {
  expect(execFileSync(path.join(bin, 'duofs'), ['--help'], { encoding: 'utf8' })).toMatch(/duofs <command>/);
  const caps = JSON.parse(execFileSync(path.join(bin, 'duofs-virtiofsd'), ['--print-capabilities'], { encoding: 'utf8' })) as { type: string };
  expect(caps.type).toBe('fs');
});

test('duofs bench --host runs from the install, writing its results where it is told', () => {
  const out = path.join(tmp, 'results');
  const r = spawnSync(
    path.join(bin, 'duofs'),
    ['bench', '--host', '--servers', 'duofs-virtiofs,duofs-9p', '--jobs', 'getattr', '--repeat', '1', '--runtime', '0.5', '--out', out],
    {
      encoding: 'utf8',
      cwd: tmp,
      timeout: 120_000,
      env: { ...process.env, DUOFS_LAB_DIR: path.join(tmp, 'no-lab') },
    },
  );
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/getattr\s+ops\/s/);
  const result = JSON.parse(fs.readFileSync(path.join(out, 'bench.json'), 'utf8')) as { cells: unknown[] };
  expect(result.cells.length).toBe(2);
});
