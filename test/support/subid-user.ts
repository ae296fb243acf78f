// A throwaway host user with /etc/subuid and /etc/subgid ranges, for tests
// of --uid-map/--gid-map (newuidmap and newgidmap look the caller up by
// name, so a bare uid does not do). useradd allocates the ranges
// (login.defs SUB_UID_MIN...), userdel removes them again with the user and
// its group. Needs root and the shadow tools (passwd, uidmap packages).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface SubidRange {
  start: number;
  count: number;
}

export interface SubidUser {
  name: string;
  uid: number;
  gid: number;
  subuid: SubidRange;
  subgid: SubidRange;
  /** userdel: the user, its group and its ranges go */
  remove(): void;
}

const haveTool = (t: string): boolean => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status === 0;

/** Why a test needing newuidmap/newgidmap and a subid user cannot run here, or undefined. */
export function subidUnavailable(): string | undefined {
  if (process.geteuid?.() !== 0) return 'needs root (to add a user)';
  for (const t of ['useradd', 'userdel', 'newuidmap', 'newgidmap', 'unshare', 'setpriv']) {
    if (!haveTool(t)) return `${t} is not installed${t.startsWith('new') ? ' (Debian package uidmap; npm test installs it)' : ''}`;
  }
  return undefined;
}

function range(file: string, name: string): SubidRange {
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [who, start, count] = line.split(':');
    if (who === name && start && count) return { start: Number(start), count: Number(count) };
  }
  throw new Error(`useradd gave ${name} no range in ${file}`);
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message || `status ${r.status}`}`);
}

/** Adds user `duofs-<tag>-<pid>` (no home, no login shell) with 65536 subordinate uids and gids. */
export function createSubidUser(tag: string): SubidUser {
  const name = `duofs-${tag}-${process.pid}`.slice(0, 32);
  spawnSync('userdel', [name], { stdio: 'ignore' }); // a leftover of a killed run
  run('useradd', [
    '--no-create-home',
    '--user-group',
    '--shell',
    '/usr/sbin/nologin',
    '-K',
    'SUB_UID_COUNT=65536',
    '-K',
    'SUB_GID_COUNT=65536',
    name,
  ]);
  const pw = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`))!
    .split(':');
  const user: SubidUser = {
    name,
    uid: Number(pw[2]),
    gid: Number(pw[3]),
    subuid: range('/etc/subuid', name),
    subgid: range('/etc/subgid', name),
    remove: () => run('userdel', [name]),
  };
  return user;
}

/** libvirt's session-mode maps for `u` (qemuVirtioFSPrepareIdMap): itself as 0, its subordinate range from 1 on. */
export function libvirtSessionMaps(u: SubidUser): string[] {
  return [
    `--uid-map=:0:${u.uid}:1:`,
    `--uid-map=:1:${u.subuid.start}:${u.subuid.count}:`,
    `--gid-map=:0:${u.gid}:1:`,
    `--gid-map=:1:${u.subgid.start}:${u.subgid.count}:`,
  ];
}
