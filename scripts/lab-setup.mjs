#!/usr/bin/env node
// Builds (once) and then reuses the lab root: a Debian sid chroot at
// <repo>/.lab/root holding QEMU, virtiofsd, diod, a guest kernel with its
// modules and the userland the guest scenarios use (python3, socat, ...).
// The lab tests boot real Linux guests whose root filesystem is this chroot,
// served read-only over virtiofs (see docs/lab.md).
//
// Idempotent: .lab/stamp.json is written only after everything succeeded and
// records a hash of the recipe (suite, package list, layout version). When
// the stamp matches and the root looks sane, a run takes well under a second.
// Otherwise a new root is built from scratch in .lab/build/root and swapped in
// only when complete, so a half-finished root is never used. Every chroot
// operation runs in a private mount namespace (unshare -m), so an interrupted
// run leaves no mounts behind on the host.
//
// Usage: node scripts/lab-setup.mjs [--force] [--quiet]
//   --force  rebuild even when the stamp matches
// Needs root, Debian's package mirrors (the default mirror of debootstrap).
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
export const labDir = join(repoRoot, '.lab');
export const labRoot = join(labDir, 'root');
export const stampPath = join(labDir, 'stamp.json');

const SUITE = 'sid';
/** Bump when the layout inside the root changes (mount points, config files). */
const LAYOUT_VERSION = 2;
/** What the guests and the host-side helpers need inside the chroot. */
export const PACKAGES = [
  'linux-image-amd64', // guest kernel; virtiofs built in, 9p + 9pnet_virtio modules
  'kmod', // modprobe in the guest
  'qemu-system-x86', // the VMM, and the reference 9p server (-fsdev local)
  'virtiofsd', // reference virtiofs server; also serves the guest's root
  'diod', // a third 9P server (stream transport)
  'busybox-static',
  'util-linux', // mount, setpriv, ...
  'procps',
  'python3', // the conformance scenario
  'perl',
  'fio',
  'socat', // guest relay: unix socket <-> virtio-serial port (9P over a stream)
  'attr', // getfattr/setfattr
  'acl', // getfacl/setfacl
  'strace', // debugging by hand
  // the "CI on a share" scenario (test/lab/share-ci.test.ts): git, and a C toolchain for make -j2
  'git',
  'make',
  'gcc',
  'libc6-dev',
  'libvirt-daemon', // a real libvirt (libvirtd/virtqemud) launching duofs-virtiofsd (test/lab/libvirt-real.test.ts)
  'libvirt-daemon-driver-qemu',
  'libvirt-clients', // virsh
  'dovecot-imapd', // the mail store scenario: two guests on one maildir/mdbox tree (test/lab/mailstore.test.ts)
  'dovecot-lmtpd',
];
/**
 * Debian source packages fetched (apt-get source --download-only, from a
 * deb-src line for the same mirror) into /duofs-lab/src of the root, so that
 * guests build real C projects without any network: test/lab/share-ci.test.ts.
 */
export const SOURCES = ['hello'];
/**
 * Each SOURCES package is also configured here, natively, and kept as
 * /duofs-lab/src/<pkg>-configured.tar.gz: ./configure run in the chroot at
 * /tmp/ci/<dir>, the path the guest builds at. Under TCG, configure alone
 * takes ~400 s (thousands of emulated fork+exec), so the guests can run
 * `make -j2` on a tree configured for them. Bump when this recipe changes.
 */
const SOURCE_PREP = 'configure --disable-nls at /tmp/ci, v1';
/** Mount points the harness binds inside the chroot (see test/lab/guest.ts). */
const LAYOUT_DIRS = ['duofs-lab/guestroot', 'duofs-lab/host', 'duofs-lab/scripts', 'duofs-lab/run'];
const SANITY = ['usr/bin/qemu-system-x86_64', 'usr/sbin/diod', 'usr/bin/socat', 'usr/bin/python3', 'sbin/modprobe'];

const quiet = process.argv.includes('--quiet');
const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(1) + 's';
const say = (msg) => {
  if (!quiet) process.stderr.write(`lab-setup: ${msg}\n`);
};
const fail = (msg) => {
  process.stderr.write(`lab-setup: ERROR: ${msg}\n`);
  process.exitCode = 1;
  throw new LabSetupError(msg);
};
class LabSetupError extends Error {}

export function recipeHash() {
  return createHash('sha256')
    .update(JSON.stringify({ SUITE, LAYOUT_VERSION, PACKAGES, SOURCES, SOURCE_PREP, variant: 'minbase' }))
    .digest('hex');
}

/** Reads the stamp if the root is complete and current; null otherwise. */
export function readyStamp() {
  try {
    const stamp = JSON.parse(readFileSync(stampPath, 'utf8'));
    if (stamp.hash !== recipeHash()) return null;
    for (const f of [...SANITY, stamp.kernel.replace(/^\//, ''), stamp.virtiofsd.replace(/^\//, '')]) {
      if (!existsSync(join(labRoot, f))) return null;
    }
    for (const d of LAYOUT_DIRS) if (!existsSync(join(labRoot, d))) return null;
    return stamp;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- mounts

function unescapeMount(s) {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}
/** Mount points at or below dir, in this mount namespace, deepest first. */
function mountsUnder(dir) {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const out = [];
  for (const l of lines) {
    const f = l.split(' ');
    if (f.length < 5) continue;
    const mp = unescapeMount(f[4]);
    if (mp === dir || mp.startsWith(dir + '/')) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}
/** rm -rf that first detaches any mount below dir and never crosses into one. */
function safeRemove(dir) {
  if (!existsSync(dir)) return;
  for (const mp of mountsUnder(dir)) {
    say(`detaching leftover mount ${mp}`);
    spawnSync('umount', ['-l', mp], { stdio: 'inherit' });
  }
  const left = mountsUnder(dir);
  if (left.length) fail(`refusing to delete ${dir}: still mounted: ${left.join(', ')}`);
  const r = spawnSync('rm', ['-rf', '--one-file-system', dir], { stdio: 'inherit' });
  if (r.status !== 0 || existsSync(dir)) fail(`could not delete ${dir}`);
}

// ---------------------------------------------------------------- lock

const lockDir = join(labDir, 'setup.lock');
function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}
async function takeLock() {
  mkdirSync(labDir, { recursive: true });
  const deadline = Date.now() + 30 * 60_000;
  let told = false;
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(join(lockDir, 'pid'), String(process.pid));
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      let pid = 0;
      try {
        pid = Number(readFileSync(join(lockDir, 'pid'), 'utf8'));
      } catch {
        /* being written */
      }
      if (pid && !pidAlive(pid)) {
        rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (!pid) {
        // Created but no pid yet: give the owner a moment, then treat as stale.
        const age = Date.now() - statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs;
        if (age > 10_000) {
          rmSync(lockDir, { recursive: true, force: true });
          continue;
        }
      }
      if (!told) {
        say(`waiting for another lab setup (pid ${pid || '?'}) to finish`);
        told = true;
      }
      if (Date.now() > deadline) fail('timed out waiting for another lab setup');
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
function dropLock() {
  rmSync(lockDir, { recursive: true, force: true });
}

// ---------------------------------------------------------------- running

/**
 * Runs a command, logs all of its output to .lab/setup.log and shows a
 * progress line on stderr at most every few seconds (errors and warnings
 * always). Resolves with { status, output }.
 */
function run(label, cmd, args, { env = {}, quietOk = false } = {}) {
  return new Promise((resolve) => {
    const log = openSync(join(labDir, 'setup.log'), 'a');
    writeFileSync(log, `\n### ${new Date().toISOString()} ${label}: ${cmd} ${args.join(' ')}\n`);
    // setpriv --pdeathsig: if this script dies (even by SIGKILL), so does the step.
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let output = '';
    let lastShown = 0;
    let partial = '';
    const onData = (buf) => {
      const s = buf.toString('utf8');
      writeFileSync(log, s);
      if (output.length < 4_000_000) output += s;
      const lines = (partial + s).split(/\r?\n|\r/);
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const t = line.trim();
        if (!t) continue;
        const important = /^(E:|W:|Err:|dpkg: error|error)/i.test(t) && !quietOk;
        if (important || Date.now() - lastShown > 3000) {
          lastShown = Date.now();
          say(`[${label} ${secs()}] ${t.slice(0, 160)}`);
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => {
      output += `\nspawn error: ${e.message}\n`;
    });
    child.on('close', (status, signal) => {
      closeSync(log);
      resolve({ status: status ?? (signal ? 128 : 1), output });
    });
  });
}

/** A command inside the chroot, in a private mount namespace with /proc and /dev. */
function chrootArgs(root, script) {
  const setup = [
    'set -e',
    `R='${root}'`,
    'mount -t proc proc "$R/proc"',
    'mount --rbind /dev "$R/dev"',
    'mount -t sysfs sysfs "$R/sys" || true',
    `exec chroot "$R" /bin/sh -c '${script.replace(/'/g, `'\\''`)}'`,
  ].join('\n');
  return ['--mount', '--propagation', 'private', '--fork', '--kill-child', '/bin/sh', '-c', setup];
}

/** Names the packages apt or debootstrap could not fetch, from their output. */
function failedPackages(output) {
  const names = new Set();
  for (const m of output.matchAll(/Failed to fetch \S*\/([^/_\s]+)_[^/\s]*\.deb/g)) names.add(m[1]);
  for (const m of output.matchAll(/Unable to locate package (\S+)/g)) names.add(m[1]);
  for (const m of output.matchAll(/Package '?([^'\s]+)'? has no installation candidate/g)) names.add(m[1]);
  for (const m of output.matchAll(/Couldn't download package (\S+)/g)) names.add(m[1]);
  for (const m of output.matchAll(/Depends: (\S+) but it is not (?:going to be installed|installable)/g)) names.add(m[1]);
  return [...names];
}
function lastLines(s, n = 25) {
  return s.trim().split('\n').slice(-n).join('\n');
}

// ---------------------------------------------------------------- steps

async function ensureHostDebootstrap() {
  const has = () => existsSync('/usr/sbin/debootstrap') || spawnSync('sh', ['-c', 'command -v debootstrap'], { stdio: 'ignore' }).status === 0;
  if (has()) return;
  say('installing debootstrap on the host (apt-get)');
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  let r = await run('host-apt', 'apt-get', ['install', '-y', '--no-install-recommends', 'debootstrap'], { env, quietOk: true });
  if (r.status !== 0) {
    say('apt-get install failed; running apt-get update once and retrying');
    await run('host-apt', 'apt-get', ['update'], { env, quietOk: true });
    r = await run('host-apt', 'apt-get', ['install', '-y', '--no-install-recommends', 'debootstrap'], { env });
  }
  if (r.status !== 0 || !has()) fail(`could not install debootstrap on the host:\n${lastLines(r.output)}`);
}

/** SOURCES into <root>/duofs-lab/src: a deb-src line beside each deb line, then apt-get source --download-only. */
async function fetchSources(root, env) {
  if (!SOURCES.length) return;
  say(`apt-get source --download-only ${SOURCES.join(' ')}`);
  const script = [
    'set -e',
    // deb-src beside every deb entry of the mirror debootstrap configured (one-line or deb822 format)
    "grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed 's/^deb /deb-src /' > /etc/apt/sources.list.d/duofs-lab-src.list || true",
    'for f in /etc/apt/sources.list.d/*.sources; do if [ -f "$f" ]; then sed -i \'s/^Types: deb$/Types: deb deb-src/\' "$f"; fi; done',
    'apt-get -o Acquire::Check-Valid-Until=false update',
    'mkdir -p /duofs-lab/src',
    'cd /duofs-lab/src',
    `apt-get -o Acquire::Check-Valid-Until=false source --download-only ${SOURCES.join(' ')}`,
    ...SOURCES.flatMap((p) => [
      `rm -rf /tmp/ci && mkdir -p /tmp/ci && cd /tmp/ci && tar xf "$(ls /duofs-lab/src/${p}_*.orig.tar.* | grep -v 'asc$' | head -n 1)"`,
      'cd /tmp/ci/* && if [ -x configure ]; then ./configure --quiet --disable-nls; fi',
      `cd /tmp/ci && tar czf /duofs-lab/src/${p}-configured.tar.gz * && rm -rf /tmp/ci`,
    ]),
    'ls -l /duofs-lab/src',
  ].join('\n');
  const r = await run('apt-source', 'unshare', chrootArgs(root, script), { env });
  const got = existsSync(join(root, 'duofs-lab/src')) ? readdirSync(join(root, 'duofs-lab/src')) : [];
  const missing = SOURCES.filter(
    (p) => !got.includes(`${p}-configured.tar.gz`) || !got.some((f) => f.startsWith(`${p}_`) && /\.orig\.tar\./.test(f)),
  );
  if (r.status !== 0 || missing.length) {
    fail(
      `apt-get source inside the lab root failed${missing.length ? ` (no upstream tarball or no configured tree for ${missing.join(', ')})` : ''}; see .lab/setup.log. Last lines:\n${lastLines(r.output)}`,
    );
  }
}

async function build() {
  const buildDir = join(labDir, 'build');
  const root = join(buildDir, 'root');
  safeRemove(buildDir);
  mkdirSync(buildDir, { recursive: true });

  say(`debootstrap --variant=minbase ${SUITE} (about 30 s)`);
  let r = await run('debootstrap', 'unshare', [
    '--mount',
    '--propagation',
    'private',
    '--fork',
    '--kill-child',
    'debootstrap',
    '--variant=minbase',
    SUITE,
    root,
  ]);
  if (r.status !== 0) {
    const pk = failedPackages(r.output);
    fail(
      `debootstrap failed${pk.length ? ` (could not fetch package${pk.length > 1 ? 's' : ''}: ${pk.join(', ')})` : ''}; ` +
        `see .lab/setup.log. Last lines:\n${lastLines(r.output)}`,
    );
  }

  // Configuration inside the root before installing anything.
  writeFileSync(join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  writeFileSync(
    join(root, 'etc/apt/apt.conf.d/90duofs-lab'),
    [
      'Acquire::Check-Valid-Until "false";', // the mirror is a frozen snapshot
      'APT::Install-Recommends "false";',
      'APT::Install-Suggests "false";',
      'Acquire::Retries "3";',
      'Dpkg::Use-Pty "false";',
      '',
    ].join('\n'),
  );
  mkdirSync(join(root, 'etc/dpkg/dpkg.cfg.d'), { recursive: true });
  writeFileSync(
    join(root, 'etc/dpkg/dpkg.cfg.d/90duofs-lab'),
    [
      'force-unsafe-io',
      'path-exclude=/usr/share/doc/*',
      'path-exclude=/usr/share/man/*',
      'path-exclude=/usr/share/info/*',
      'path-exclude=/usr/share/locale/*',
      'path-include=/usr/share/locale/locale.alias',
      '',
    ].join('\n'),
  );
  // No initramfs is needed (the root is virtiofs, built into the kernel); keep
  // initramfs-tools (a dependency of the kernel package) from building one.
  mkdirSync(join(root, 'etc/initramfs-tools'), { recursive: true });
  writeFileSync(join(root, 'etc/initramfs-tools/update-initramfs.conf'), 'update_initramfs=no\nbackup_initramfs=no\n');
  if (!existsSync(join(root, 'etc/resolv.conf')) && existsSync('/etc/resolv.conf')) {
    writeFileSync(join(root, 'etc/resolv.conf'), readFileSync('/etc/resolv.conf'));
  }

  const env = { DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
  say('apt-get update inside the root');
  r = await run('apt-update', 'unshare', chrootArgs(root, 'apt-get -o Acquire::Check-Valid-Until=false update'), { env });
  if (r.status !== 0 || /^(E:|Err:)/m.test(r.output)) {
    fail(`apt-get update inside the lab root failed; see .lab/setup.log. Last lines:\n${lastLines(r.output)}`);
  }

  say(`apt-get install ${PACKAGES.length} packages and their dependencies (about 1-2 min, ~600 MB)`);
  const install = `apt-get -o Acquire::Check-Valid-Until=false install -y --no-install-recommends ${PACKAGES.join(' ')}`;
  r = await run('apt-install', 'unshare', chrootArgs(root, install), { env });
  if (r.status !== 0) {
    const pk = failedPackages(r.output);
    fail(
      `apt-get install inside the lab root failed${pk.length ? ` (cannot fetch or install package${pk.length > 1 ? 's' : ''}: ${pk.join(', ')})` : ''}; ` +
        `see .lab/setup.log. Last lines:\n${lastLines(r.output)}`,
    );
  }
  await fetchSources(root, env);
  await run('apt-clean', 'unshare', chrootArgs(root, 'apt-get clean; rm -rf /var/lib/apt/lists/*'), { env, quietOk: true });

  // Facts the harness needs.
  const kernels = readdirSync(join(root, 'boot'))
    .filter((f) => f.startsWith('vmlinuz-'))
    .sort();
  if (!kernels.length) fail('no kernel in the lab root (/boot/vmlinuz-*)');
  const kernel = kernels[kernels.length - 1];
  const kver = kernel.slice('vmlinuz-'.length);
  const modDir = join(root, 'lib/modules', kver);
  const find = spawnSync('find', [modDir, '-name', '9p.ko*', '-o', '-name', '9pnet_virtio.ko*'], { encoding: 'utf8' });
  if (find.stdout.trim().split('\n').filter(Boolean).length < 2) fail(`9p / 9pnet_virtio modules missing under ${modDir}`);
  if (!existsSync(join(modDir, 'modules.dep'))) {
    r = await run('depmod', 'unshare', chrootArgs(root, `depmod -a ${kver}`), { env });
    if (r.status !== 0) fail(`depmod failed:\n${lastLines(r.output)}`);
  }
  const virtiofsd = ['usr/libexec/virtiofsd', 'usr/bin/virtiofsd', 'usr/lib/qemu/virtiofsd'].find((p) => existsSync(join(root, p)));
  if (!virtiofsd) fail('virtiofsd binary not found in the lab root');
  for (const f of SANITY) if (!existsSync(join(root, f))) fail(`missing in the lab root after install: /${f}`);
  for (const d of LAYOUT_DIRS) mkdirSync(join(root, d), { recursive: true });

  const versions = spawnSync(
    'unshare',
    chrootArgs(root, `qemu-system-x86_64 --version | head -1; /${virtiofsd} --version | head -1; python3 --version`),
    { encoding: 'utf8' },
  );
  const [qemuVersion = '?', virtiofsdVersion = '?', pythonVersion = '?'] = versions.stdout.trim().split('\n');

  // Swap in the finished root, then stamp it.
  rmSync(stampPath, { force: true });
  safeRemove(labRoot);
  renameSync(root, labRoot);
  safeRemove(buildDir);
  const stamp = {
    hash: recipeHash(),
    suite: SUITE,
    layout: LAYOUT_VERSION,
    packages: PACKAGES,
    sources: readdirSync(join(labRoot, 'duofs-lab/src'))
      .filter((f) => /(\.orig\.tar|-configured\.tar)\.[a-z0-9]+$/.test(f))
      .sort(),
    kernel: `/boot/${kernel}`,
    kernelVersion: kver,
    virtiofsd: `/${virtiofsd}`,
    qemuVersion,
    virtiofsdVersion,
    pythonVersion,
    builtAt: new Date().toISOString(),
    buildSeconds: Math.round((Date.now() - t0) / 1000),
  };
  writeFileSync(stampPath, JSON.stringify(stamp, null, 2) + '\n');
  return stamp;
}

export async function labSetup({ force = false } = {}) {
  if (process.getuid?.() !== 0) fail('the lab needs root (debootstrap, chroot, mount namespaces)');
  let stamp = !force && readyStamp();
  if (stamp) {
    say(`lab root ready (${stamp.kernelVersion}, ${stamp.qemuVersion}) in ${secs()}`);
    return stamp;
  }
  await takeLock();
  try {
    stamp = !force && readyStamp(); // another setup may have finished meanwhile
    if (stamp) {
      say(`lab root ready (built by another run) in ${secs()}`);
      return stamp;
    }
    if (existsSync(labRoot) || existsSync(stampPath)) say('lab root missing, stale or half-finished: rebuilding from scratch');
    else say('building the lab root (first run; about 2-3 minutes)');
    await ensureHostDebootstrap();
    stamp = await build();
    say(`lab root built in ${secs()}: kernel ${stamp.kernelVersion}; ${stamp.qemuVersion}; ${stamp.virtiofsdVersion}`);
    return stamp;
  } finally {
    dropLock();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  labSetup({ force: process.argv.includes('--force') }).catch((e) => {
    if (!(e instanceof LabSetupError)) process.stderr.write(`lab-setup: ERROR: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}
