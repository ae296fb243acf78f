// A user namespace with the operator's --uid-map/--gid-map, for a server
// started by an ordinary user (libvirt's session mode), as virtiofsd 1.14
// makes one (src/sandbox.rs enter_namespace and setup_id_mappings).
//
// Only a process outside the namespace can write its maps, and only through
// newuidmap/newgidmap for more than the own id. virtiofsd forks a helper
// that waits on a pipe until the parent has unshared, maps the parent's pid,
// and says "done"; the parent then becomes root of the namespace
// (setresuid/setresgid 0) and forks the server. duofs cannot fork (Node),
// so the supervisor starts the chain below and plays the helper:
//
//   unshare --user --keep-caps --mount --pid --fork --kill-child --mount-proc --ipc --uts [--net] --
//     /bin/sh -c WAIT duofs-userns  [setpriv --reuid=0 --regid=0 --keep-groups --]  node ARGV
//
//  1. unshare(1) makes the namespaces; its forked child (pid 1 of the new
//     pid namespace) keeps every capability of the new user namespace across
//     exec as ambient capabilities (--keep-caps): its ids are not mapped yet,
//     so a plain exec would drop them;
//  2. the shell (WAIT) writes {"userns":"waiting"} on the supervisor's
//     channel and blocks reading it;
//  3. the supervisor runs newuidmap/newgidmap on unshare's pid (the maps are
//     per namespace) and writes "go";
//  4. the shell execs setpriv, which makes the process uid/gid 0 of the
//     namespace where 0 is mapped (virtiofsd's setresuid(0, 0, 0)), which
//     execs node: as root of the namespace it has the namespace's full
//     capability set, which confine() then cuts to what the model needs.
// The shell reads exactly one line (sh's read takes a byte at a time), so
// the channel the server inherits is as before.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import { StartupError } from '../listeners.js';
import type { SandboxMode } from './mode.js';
import { effectiveRanges, formatUsernsRange, helperArgs, mapsRoot, needsHelper, type UsernsMaps, type UsernsRange } from './userns-map.js';

/** The channel line the waiting shell writes. */
export const USERNS_WAITING = 'waiting';

/**
 * virtiofsd's check before it enters its sandbox (a start-up error, exit 1):
 * --uid-map/--gid-map only for an unprivileged user with --sandbox namespace.
 */
export function checkUsernsMapsAllowed(maps: UsernsMaps, mode: SandboxMode, euid: number): void {
  const why = (kind: 'uid' | 'gid') =>
    `Error entering sandbox: ${kind}_map can only be used by unprivileged user where sandbox mod is namespace (Use '--sandbox namespace' instead)`;
  if (maps.uid.length && (euid === 0 || mode !== 'namespace')) throw new StartupError(why('uid'));
  if (maps.gid.length && (euid === 0 || mode !== 'namespace')) throw new StartupError(why('gid'));
}

/** Whether the operator gave any map (else the supervisor keeps unshare's --map-root-user). */
export function hasUsernsMaps(maps: UsernsMaps | undefined): maps is UsernsMaps {
  return maps !== undefined && (maps.uid.length > 0 || maps.gid.length > 0);
}

export interface UsernsLaunch {
  /** the unshare(1) options (before `--`) */
  unshare: string[];
  /** what unshare runs: the waiting shell, setpriv where it applies, then `command` */
  command: string[];
}

/**
 * The command line of the chain above. `channelFd` is the supervisor's
 * channel in the server (the shell needs it as a single digit: POSIX sh
 * redirections take one).
 */
export function usernsLaunch(o: {
  maps: UsernsMaps;
  euid: number;
  egid: number;
  newNet: boolean;
  channelFd: number;
  setpriv: string;
  command: string[];
  log: Logger;
}): UsernsLaunch {
  if (o.channelFd > 9) {
    throw new StartupError(
      `--uid-map/--gid-map: too many inherited file descriptors (the sandbox channel would be fd ${o.channelFd}; the start-up shell takes 3 to 9)`,
    );
  }
  const n = o.channelFd;
  const wait = `printf '%s\\n' '{"userns":"${USERNS_WAITING}"}' >&${n} && read -r go <&${n} && [ "$go" = go ] || exit 1; exec "$@"`;
  const uidRoot = mapsRoot(effectiveRanges(o.maps.uid, o.euid));
  const gidRoot = mapsRoot(effectiveRanges(o.maps.gid, o.egid));
  // virtiofsd warns and goes on as the id it has (setresuid/setresgid fail).
  if (!uidRoot)
    o.log.warn('sandbox: uid 0 is not mapped in the user namespace (--uid-map): the server keeps the uid it has there, without capabilities');
  if (!gidRoot) o.log.warn('sandbox: gid 0 is not mapped in the user namespace (--gid-map): the server keeps the gid it has there');
  const setpriv = uidRoot || gidRoot ? [o.setpriv, ...(uidRoot ? ['--reuid=0'] : []), ...(gidRoot ? ['--regid=0', '--keep-groups'] : []), '--'] : [];
  return {
    unshare: [
      '--user',
      '--keep-caps',
      '--mount',
      '--pid',
      '--fork',
      '--kill-child',
      '--mount-proc',
      '--ipc',
      '--uts',
      ...(o.newNet ? ['--net'] : []),
    ],
    command: ['/bin/sh', '-c', wait, 'duofs-userns', ...setpriv, ...o.command],
  };
}

/** One map, as virtiofsd's setup_id_mappings writes it; throws StartupError with virtiofsd's texts. */
function writeMap(
  kind: 'uid' | 'gid',
  pid: number,
  ranges: readonly UsernsRange[],
  ownId: number,
  findTool: (name: string) => string | undefined,
): void {
  const tool = kind === 'uid' ? 'newuidmap' : 'newgidmap';
  const fail = (msg: string): never => {
    throw new StartupError(`sandbox: couldn't setup id mappings: write to ${kind} map failed: ${msg}`);
  };
  if (needsHelper(ranges, ownId)) {
    const path = findTool(tool);
    if (path === undefined) fail(`failed to execute ${tool}: No such file or directory (os error 2) (install the uidmap package: it has ${tool})`);
    const r = spawnSync(path!, helperArgs(pid, ranges), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
    if (r.error) fail(`failed to execute ${tool}: ${r.error.message}`);
    if (r.status !== 0) fail(r.stderr.trim() || `${tool} exited with status ${r.status ?? r.signal}`);
    return;
  }
  // The own id alone: the namespace's owner may write it itself.
  const r = ranges[0]!;
  try {
    if (kind === 'gid') writeFileSync(`/proc/${pid}/setgroups`, 'deny');
    writeFileSync(`/proc/${pid}/${kind}_map`, `${r.inside} ${r.outside} 1`);
  } catch (e) {
    fail((e as Error).message);
  }
}

/** Step 3: the maps of the namespace `pid` is in (the operator's, or the own id 1:1 for a kind not given). */
export function applyUsernsMaps(
  pid: number,
  o: { maps: UsernsMaps; euid: number; egid: number; findTool: (name: string) => string | undefined; log: Logger },
): void {
  const uid = effectiveRanges(o.maps.uid, o.euid);
  const gid = effectiveRanges(o.maps.gid, o.egid);
  writeMap('uid', pid, uid, o.euid, o.findTool);
  writeMap('gid', pid, gid, o.egid, o.findTool);
  o.log.info(
    { uidMap: uid.map(formatUsernsRange).join(' '), gidMap: gid.map(formatUsernsRange).join(' ') },
    'sandbox: user namespace mapped (--uid-map/--gid-map)',
  );
}
