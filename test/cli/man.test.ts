// The man pages are generated from the commands' own --help (scripts/gen-man.mjs):
// they must be current, installed by npm (package.json "man"), and render.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('share/man/man1 pages match what the CLIs print now', () => {
  const r = spawnSync(process.execPath, [path.join(root, 'scripts/gen-man.mjs'), '--check'], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
});

test('package.json installs both pages, and each names every option its --help names', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { man: string[] };
  expect(pkg.man.sort()).toEqual(['share/man/man1/duofs-virtiofsd.1', 'share/man/man1/duofs.1']);
  const vfs = fs.readFileSync(path.join(root, pkg.man[0]!), 'utf8');
  for (const o of ['--xattrmap', '--posix-acl', '--syslog', '--socket-group', '--log-format', 'no_posix_lock']) expect(vfs).toContain(o);
  const duofs = fs.readFileSync(path.join(root, pkg.man[1]!), 'utf8');
  for (const o of ['--fsdev', '--log-format', '--syslog', '--version', '.SH EXIT STATUS']) expect(duofs).toContain(o);
});

test('the pages render with man(1) when it is installed', () => {
  if (spawnSync('man', ['--version']).status !== 0) return;
  const r = spawnSync('man', ['-l', path.join(root, 'share/man/man1/duofs-virtiofsd.1')], {
    encoding: 'utf8',
    env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' },
  });
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/DUOFS-VIRTIOFSD\(1\)/);
  expect(r.stdout).toMatch(/--shared-dir <DIR>/);
});
