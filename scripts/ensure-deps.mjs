// Installs npm packages when node_modules is missing or older than the lock
// file. Idempotent and fast when nothing changed: it compares a hash of
// package-lock.json with the one recorded after the last successful install.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export function ensureDeps() {
  const lock = join(root, 'package-lock.json');
  const stamp = join(root, 'node_modules', '.duofs-lock-hash');
  const want = createHash('sha256').update(readFileSync(lock)).digest('hex');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return;
  // `npm install` rather than `npm ci`: npm 11 writes lock files without
  // other platforms' optional packages and then `npm ci` refuses them.
  console.error('duofs: installing npm packages (npm install)...');
  // stdout goes to stderr: under `npm pack --json` (prepack) stdout must stay the JSON.
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: root, stdio: [0, 2, 2] });
  if (r.status !== 0) {
    console.error('duofs: npm install failed; check access to the npm registry');
    process.exit(r.status ?? 1);
  }
  // npm may have normalised the lock file; record what is there now.
  writeFileSync(stamp, createHash('sha256').update(readFileSync(lock)).digest('hex'));
}

/** Compiles TypeScript to dist/ when any source is newer than the last build. */
export function ensureBuild() {
  const r = spawnSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', root], { stdio: [0, 2, 2] });
  if (r.status !== 0) {
    console.error('duofs: build failed');
    process.exit(r.status ?? 1);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  ensureDeps();
  if (process.argv.includes('--build')) ensureBuild();
}
