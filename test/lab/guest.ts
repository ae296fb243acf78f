// Boots a real Linux guest under QEMU (TCG) whose root filesystem is the lab
// root (.lab/root) served read-only by its own virtiofsd, attaches the file
// servers under test, runs a scenario script on each mount and returns what
// the guest printed between marker lines on its serial console.
//
// How it is put together (details in docs/lab.md):
//   node ── setpriv --pdeathsig KILL ── unshare --mount --pid --fork --kill-child
//              └─ sh launch.sh   (PID 1 of a new PID namespace, private mounts)
//                   ├─ binds the lab root, scripts, trees and socket folders
//                   │  into the chroot (visible only in this namespace)
//                   ├─ chroot virtiofsd (guest root), virtiofsd / diod (servers)
//                   └─ chroot qemu-system-x86_64 ... (console on stdout)
// When the launcher exits, the kernel kills everything left in its PID
// namespace and the mount namespace (with all its mounts) disappears; when
// node dies, pdeathsig kills the launcher. No mount is ever made on the host.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, existsSync, writeFileSync, readdirSync, readlinkSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { guestScriptsDir, keepWorkDir, labRoot, labStamp, makeWorkDir, removeWorkDir, sq, stopProcess, tail, trackProcess } from './lab.js';
import { parseConsole, type Section, type ParsedConsole } from './console.js';

export type SecurityModel = 'passthrough' | 'mapped-xattr' | 'mapped-file' | 'none';

/** One file system the guest mounts at /mnt/<name> (name is also the virtio tag). */
export type MountSpec =
  /** QEMU's built-in 9p server: `-fsdev local` + virtio-9p-pci, guest trans=virtio. */
  | { kind: 'qemu-9p'; name: string; dir: string; securityModel?: SecurityModel; msize?: number; fsdevOptions?: string; mountOptions?: string }
  /** A virtiofsd from the lab root serving `dir`, guest `mount -t virtiofs`. */
  | { kind: 'virtiofsd'; name: string; dir: string; args?: string[]; mountOptions?: string }
  /** Any vhost-user-fs backend already listening on a host socket (e.g. duofs). */
  | { kind: 'vhost-user-fs'; name: string; socket: string; tag?: string; queueSize?: number; mountOptions?: string; chardevOptions?: string }
  /** A virtio-9p device served over vhost-user (duofs --9p-vhost-socket) behind QEMU's
   *  vhost-user-test-device-pci; guest trans=virtio. */
  | { kind: 'vhost-user-9p'; name: string; socket: string; tag?: string; msize?: number; queueSize?: number; mountOptions?: string }
  /** A 9P server listening on a host unix stream socket (e.g. duofs --9p-socket):
   *  QEMU connects a virtio-serial port to it; in the guest socat relays a unix
   *  socket to the port and the kernel mounts it with trans=unix. */
  | { kind: '9p-stream'; name: string; socket: string; msize?: number; mountOptions?: string }
  /** diod from the lab root serving `dir` on a unix socket, reached like 9p-stream. */
  | { kind: 'diod'; name: string; dir: string; args?: string[]; msize?: number; mountOptions?: string }
  /** A bare virtio-serial port (guest /dev/vportNpM named `lab.<name>`) connected
   *  to a listening host socket; nothing is mounted. */
  | { kind: 'serial-port'; name: string; socket: string }
  /** A virtio-fs device that the `vmm` replacement attaches itself (e.g. a
   *  libvirt <filesystem>): the harness only mounts `tag` in the guest. */
  | { kind: 'vmm-virtiofs'; name: string; tag: string; mountOptions?: string };

export interface GuestOptions {
  /** Shown in logs and used for the work folder's name. */
  label?: string;
  mounts: MountSpec[];
  /** Script under test/lab/guest/scenarios/ (.py, .sh or .pl); omitted = boot and mount only. */
  scenario?: string;
  /** Extra arguments after the mount directory. */
  scenarioArgs?: string[];
  /** Mount names the scenario runs on, one after the other (default: every mounted file system). */
  scenarioOn?: string[];
  /** Per-mount limit inside the guest (coreutils timeout); the scenario's END line then says rc=124. */
  scenarioTimeoutSec?: number;
  /** Wall-clock limit for the whole guest; QEMU and every helper are killed when it passes. */
  timeoutMs: number;
  memoryMiB?: number;
  cpus?: number;
  kernelArgs?: string[];
  /** Exported in the guest before the scenario runs. */
  env?: Record<string, string>;
  /** Use this folder (e.g. one holding the trees) instead of a fresh one under .lab/work. */
  workDir?: string;
  /** Keep the work folder afterwards (also: DUOFS_LAB_KEEP=1). */
  keepWorkDir?: boolean;
  /** Do not throw when a mount fails; the failure is reported in the result. */
  allowMountFailure?: boolean;
  /** Interactive: console on this terminal, a shell after the mounts (Ctrl-A X quits QEMU). */
  shell?: boolean;
  /** Called with each chunk of console output (e.g. to stream it). */
  onConsole?: (text: string) => void;
  /** More QEMU arguments, after the devices (e.g. `-qmp`, `-incoming defer`). */
  qemuArgs?: string[];
  /** A host folder bound at /duofs-lab/host/ctl for QEMU (QMP and migration sockets): `qemuArgs` name paths under it. */
  controlDir?: string;
  /** Use this folder's plan.sh for /duofs-lab/run instead of writing one (a migration destination shares its source's). */
  planDir?: string;
  /** Return (instead of throwing) when QEMU exits before the guest printed DONE (a migration source). */
  allowIncomplete?: boolean;
  /**
   * Boot from this device instead of the lab root (rootfs.test.ts): a backend
   * already listening on `socket` (e.g. duofs) becomes the root device, and the
   * kernel command line's root arguments are `kernelArgs` (e.g. `root=TAG
   * rootfstype=virtiofs rw init=/x`). `initrd` is a host file passed with
   * -initrd. No root virtiofsd is started and init.sh does not run: the root's
   * own init prints the marker lines.
   */
  root?: { kind: 'vhost-user-9p' | 'vhost-user-fs'; socket: string; tag: string; kernelArgs: string[]; initrd?: string; queueSize?: number };
  /**
   * Shell text that runs instead of `chroot "$R" qemu-system-x86_64 ...`, in
   * the launcher's namespaces after every bind and helper daemon (e.g. a real
   * libvirt that starts QEMU itself). It finds $R (the lab root), $H (the
   * chroot's private tmpfs), $LAB_KERNEL, $LAB_CMDLINE, $LAB_MEM_MIB and
   * $LAB_ROOT_SOCK (the guest root's vhost-user-fs socket, tag rootfs; paths
   * inside the chroot). Its stdout is taken as the guest console, its exit
   * status as QEMU's.
   */
  vmm?: string;
}

export interface GuestRun extends ParsedConsole {
  /** Everything QEMU wrote on the serial console. */
  console: string;
  /** Launcher and QEMU stderr. */
  stderr: string;
  /** Wall time from spawn to QEMU exit. */
  wallMs: number;
  /** Wall time from spawn to the guest's BOOTED line. */
  bootMs: number | undefined;
  workDir: string;
  /** Processes of the guest's PID namespace still alive after teardown (always [] unless the harness is broken; they are killed). */
  leftoverPids: number[];
}

export class GuestError extends Error {}

const NAME_RE = /^[a-z][a-z0-9_-]{0,30}$/;
const MAX_CONSOLE = 32 * 1024 * 1024;

/** A fresh, empty directory for one mount's export (mode 0755, owned by root). */
export function freshTree(workDir: string, name: string): string {
  const dir = join(workDir, 'trees', name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  return dir;
}

interface Plan {
  launch: string;
  guestPlan: string;
  logs: Map<string, string>;
}

/** Builds the namespace launcher (host side) and plan.sh (guest side). */
function buildPlan(opts: GuestOptions, workDir: string): Plan {
  const stamp = labStamp();
  const R = labRoot;
  const names = new Set<string>();
  for (const m of opts.mounts) {
    if (!NAME_RE.test(m.name)) throw new GuestError(`mount name ${JSON.stringify(m.name)} must match ${NAME_RE}`);
    if (names.has(m.name)) throw new GuestError(`mount name ${m.name} used twice`);
    names.add(m.name);
  }
  const logs = new Map<string, string>();
  const binds: string[] = [];
  const daemons: string[] = [];
  const qemu: string[] = [];
  const guestMounts: string[] = [];
  let serial = false;
  const H = '/duofs-lab/host'; // inside the chroot: a tmpfs private to this namespace
  const bindHost = (hostPath: string, as: string) => {
    const abs = resolve(hostPath);
    if (!existsSync(abs)) throw new GuestError(`${abs} does not exist`);
    binds.push(`mkdir -p "$R${H}/${as}" && mount --bind ${sq(abs)} "$R${H}/${as}"`);
    return `${H}/${as}`;
  };
  const startDaemon = (name: string, sock: string, argv: string[]) => {
    const log = join(workDir, 'logs', `${name}.log`);
    logs.set(name, log);
    daemons.push(`start_daemon ${sq(name)} ${sq(sock)} ${sq(log)} ${argv.map(sq).join(' ')}`);
  };
  const vhostUserFs = (id: string, sock: string, tag: string, queueSize = 1024, chardevOptions?: string) => {
    qemu.push(
      '-chardev',
      `socket,id=${id},path=${sock}${chardevOptions ? `,${chardevOptions}` : ''}`,
      '-device',
      `vhost-user-fs-pci,chardev=${id},tag=${tag},queue-size=${queueSize}`,
    );
  };
  const serialPort = (id: string, sock: string, portName: string) => {
    if (!serial) qemu.push('-device', 'virtio-serial-pci,id=vser');
    serial = true;
    qemu.push('-chardev', `socket,id=${id},path=${sock}`, '-device', `virtserialport,bus=vser.0,chardev=${id},name=${portName}`);
  };
  const p9opts = (msize: number, extra?: string) => `version=9p2000.L,msize=${msize}${extra ? ',' + extra : ''}`;

  let initrd: string | undefined;
  if (opts.root) {
    const r = opts.root;
    const sock = `${bindHost(dirname(r.socket), 'root-dev')}/${basename(r.socket)}`;
    if (r.kind === 'vhost-user-fs') vhostUserFs('rootfs', sock, r.tag, r.queueSize);
    else
      qemu.push(
        '-chardev',
        `socket,id=rootfs,path=${sock}`,
        '-device',
        `vhost-user-test-device-pci,chardev=rootfs,virtio-id=9,num_vqs=1,vq_size=${r.queueSize ?? 1024},config_size=${2 + Buffer.byteLength(r.tag)}`,
      );
    if (r.initrd) initrd = `${bindHost(dirname(r.initrd), 'root-initrd')}/${basename(r.initrd)}`;
  } else {
    // The guest root, served read-only by its own virtiofsd.
    startDaemon('virtiofsd-root', `${H}/sock/root.sock`, [
      stamp.virtiofsd,
      `--socket-path=${H}/sock/root.sock`,
      '--shared-dir=/duofs-lab/guestroot',
      '--sandbox=none',
      '--readonly',
      '--inode-file-handles=never',
      '--cache=always',
      '--log-level=warn',
      '--rlimit-nofile=20000',
    ]);
    vhostUserFs('rootfs', `${H}/sock/root.sock`, 'rootfs');
  }

  for (const m of opts.mounts) {
    const id = `m-${m.name}`;
    switch (m.kind) {
      case 'qemu-9p': {
        const p = bindHost(m.dir, id);
        qemu.push(
          '-fsdev',
          `local,id=${id},path=${p},security_model=${m.securityModel ?? 'passthrough'}${m.fsdevOptions ? ',' + m.fsdevOptions : ''}`,
          '-device',
          `virtio-9p-pci,fsdev=${id},mount_tag=${m.name}`,
        );
        guestMounts.push(`  ${m.name}) { mount -t 9p -o trans=virtio,${p9opts(m.msize ?? 512000, m.mountOptions)} ${m.name} "$2"; };;`);
        break;
      }
      case 'virtiofsd': {
        const p = bindHost(m.dir, id);
        const sock = `${H}/sock/${m.name}.sock`;
        startDaemon(`virtiofsd-${m.name}`, sock, [
          stamp.virtiofsd,
          `--socket-path=${sock}`,
          `--shared-dir=${p}`,
          ...(m.args ?? ['--sandbox=chroot', '--xattr', '--log-level=warn', '--rlimit-nofile=20000']),
        ]);
        vhostUserFs(id, sock, m.name);
        guestMounts.push(`  ${m.name}) { mount -t virtiofs${m.mountOptions ? ' -o ' + m.mountOptions : ''} ${m.name} "$2"; };;`);
        break;
      }
      case 'vhost-user-fs': {
        const sock = `${bindHost(dirname(m.socket), id)}/${basename(m.socket)}`;
        const tag = m.tag ?? m.name;
        vhostUserFs(id, sock, tag, m.queueSize, m.chardevOptions);
        guestMounts.push(`  ${m.name}) { mount -t virtiofs${m.mountOptions ? ' -o ' + m.mountOptions : ''} ${tag} "$2"; };;`);
        break;
      }
      case 'vhost-user-9p': {
        const sock = `${bindHost(dirname(m.socket), id)}/${basename(m.socket)}`;
        const tag = m.tag ?? m.name;
        qemu.push(
          '-chardev',
          `socket,id=${id},path=${sock}`,
          '-device',
          `vhost-user-test-device-pci,chardev=${id},virtio-id=9,num_vqs=1,vq_size=${m.queueSize ?? 1024},config_size=${2 + Buffer.byteLength(tag)}`,
        );
        guestMounts.push(`  ${m.name}) { mount -t 9p -o trans=virtio,${p9opts(m.msize ?? 512000, m.mountOptions)} ${tag} "$2"; };;`);
        break;
      }
      case '9p-stream':
      case 'diod': {
        let sock: string;
        if (m.kind === 'diod') {
          const p = bindHost(m.dir, id);
          sock = `${H}/sock/${m.name}.sock`;
          startDaemon(`diod-${m.name}`, sock, ['/usr/sbin/diod', '-f', '-l', sock, '-e', p, '-L', 'stderr', ...(m.args ?? ['-n', '-N'])]);
        } else {
          sock = `${bindHost(dirname(m.socket), id)}/${basename(m.socket)}`;
        }
        serialPort(id, sock, `lab.${m.name}`);
        guestMounts.push(
          `  ${m.name}) { lab_relay lab.${m.name} /run/lab/${m.name}.sock && ` +
            `mount -t 9p -o trans=unix,${p9opts(m.msize ?? 512000, m.mountOptions)} /run/lab/${m.name}.sock "$2"; };;`,
        );
        break;
      }
      case 'serial-port': {
        const sock = `${bindHost(dirname(m.socket), id)}/${basename(m.socket)}`;
        serialPort(id, sock, `lab.${m.name}`);
        break;
      }
      case 'vmm-virtiofs':
        guestMounts.push(`  ${m.name}) { mount -t virtiofs${m.mountOptions ? ' -o ' + m.mountOptions : ''} ${m.tag} "$2"; };;`);
        break;
    }
  }

  if (opts.controlDir) bindHost(opts.controlDir, 'ctl');

  const mem = opts.memoryMiB ?? 1024;
  const cmdline = [
    'console=ttyS0',
    ...(opts.root ? opts.root.kernelArgs : ['rootfstype=virtiofs', 'root=rootfs', 'ro', 'init=/duofs-lab/scripts/init.sh']),
    'panic=-1',
    'loglevel=4',
    'mitigations=off',
    ...(opts.kernelArgs ?? []),
  ].join(' ');
  const qemuArgv = [
    'qemu-system-x86_64',
    '-accel',
    'tcg',
    '-cpu',
    'max',
    '-smp',
    String(opts.cpus ?? 1),
    '-m',
    `${mem}M`,
    '-object',
    `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa',
    'node,memdev=mem',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-serial',
    opts.shell ? 'mon:stdio' : 'stdio',
    ...(opts.shell ? [] : ['-monitor', 'none']),
    '-kernel',
    stamp.kernel,
    '-append',
    cmdline,
    ...(initrd ? ['-initrd', initrd] : []),
    ...qemu,
    ...(opts.qemuArgs ?? []),
  ];

  const launch = `#!/bin/sh
# Generated by test/lab/guest.ts; runs as PID 1 of a private PID + mount namespace.
set -eu
R=${sq(R)}
H=${sq(H)}
say() { echo "lab-host: $*" >&2; }
G="$R/duofs-lab/guestroot"
mount --bind "$R" "$G"
mount -o remount,bind,ro "$G"
mount --bind ${sq(guestScriptsDir)} "$G/duofs-lab/scripts"
mount -o remount,bind,ro "$G/duofs-lab/scripts"
mount --bind ${sq(opts.planDir ?? join(workDir, 'guest'))} "$G/duofs-lab/run"
mount -o remount,bind,ro "$G/duofs-lab/run"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755,size=16m tmpfs "$R${H}"
mkdir "$R${H}/sock"
${binds.join('\n')}
start_daemon() { # name socket log argv...
  n=$1; s=$2; l=$3; shift 3
  chroot "$R" "$@" >"$l" 2>&1 </dev/null &
  p=$!
  i=0
  while [ ! -S "$R$s" ]; do
    if ! kill -0 $p 2>/dev/null; then say "$n exited before creating $s:"; tail -n 20 "$l" >&2; exit 97; fi
    i=$((i+1)); if [ $i -gt 400 ]; then say "$n did not create $s within 20 s:"; tail -n 20 "$l" >&2; exit 97; fi
    sleep 0.05
  done
}
${daemons.join('\n')}
set +e
LAB_KERNEL=${sq(stamp.kernel)} LAB_CMDLINE=${sq(cmdline)} LAB_MEM_MIB=${mem} LAB_ROOT_SOCK=${sq(`${H}/sock/root.sock`)}
${opts.vmm ?? `chroot "$R" ${qemuArgv.map(sq).join(' ')}`}
rc=$?
[ $rc -eq 0 ] || say "qemu exited with status $rc"
exit $rc
`;

  const on = opts.scenarioOn ?? opts.mounts.filter((m) => m.kind !== 'serial-port').map((m) => m.name);
  for (const n of on) if (!names.has(n)) throw new GuestError(`scenarioOn names unknown mount ${n}`);
  let scenarioFn = 'lab_scenario() { :; }';
  if (opts.scenario) {
    const file = join(guestScriptsDir, 'scenarios', opts.scenario);
    if (!existsSync(file)) throw new GuestError(`no scenario ${file}`);
    const interp = ({ '.py': 'python3 -u', '.sh': 'sh', '.pl': 'perl' } as Record<string, string>)[extname(file)];
    if (!interp) throw new GuestError(`scenario ${opts.scenario}: unknown interpreter for ${extname(file)}`);
    scenarioFn = `lab_scenario() { ${interp} /duofs-lab/scripts/scenarios/${opts.scenario} "$@" ${(opts.scenarioArgs ?? []).map(sq).join(' ')}; }`;
  }
  const guestPlan = `# Generated by test/lab/guest.ts; sourced by /duofs-lab/scripts/init.sh in the guest.
LAB_LABEL=${sq(opts.label ?? 'guest')}
LAB_MOUNTS=${sq(
    opts.mounts
      .filter((m) => m.kind !== 'serial-port')
      .map((m) => m.name)
      .join(' '),
  )}
LAB_RUN_ON=${sq(opts.scenario ? on.join(' ') : '')}
LAB_SCENARIO_TIMEOUT=${opts.scenarioTimeoutSec ?? 0}
LAB_SHELL=${opts.shell ? 1 : 0}
${Object.entries(opts.env ?? {})
  .map(([k, v]) => `export ${k}=${sq(v)}`)
  .join('\n')}
# lab_mount NAME DIR
lab_mount() {
  case "$1" in
${guestMounts.join('\n')}
  *) echo "lab-guest: no mount named $1"; return 1;;
  esac
}
${scenarioFn}
`;
  return { launch, guestPlan, logs };
}

function daemonLogs(logs: Map<string, string>): string {
  let out = '';
  for (const [name, file] of logs) {
    try {
      const text = readFileSync(file, 'utf8').trim();
      if (text) out += `\n--- ${name} log (tail) ---\n${tail(text, 20)}`;
    } catch {
      /* never started */
    }
  }
  return out;
}

/**
 * Boots a guest, runs the scenario on each mount and returns the parsed
 * console. Throws GuestError (with the console tail, launcher stderr and
 * helper daemon logs) on timeout, when the guest dies without finishing,
 * prints too much, or a mount fails. Always tears everything down.
 */
export async function runGuest(opts: GuestOptions): Promise<GuestRun> {
  const workDir = opts.workDir ?? makeWorkDir(opts.label ?? 'guest');
  const ownWorkDir = !opts.workDir;
  mkdirSync(join(workDir, 'guest'), { recursive: true });
  mkdirSync(join(workDir, 'host'), { recursive: true });
  mkdirSync(join(workDir, 'logs'), { recursive: true });
  const plan = buildPlan(opts, workDir);
  if (!opts.planDir) writeFileSync(join(workDir, 'guest', 'plan.sh'), plan.guestPlan);
  const launchPath = join(workDir, 'host', 'launch.sh');
  writeFileSync(launchPath, plan.launch, { mode: 0o755 });

  const t0 = Date.now();
  const child = spawn(
    'setpriv',
    ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--pid', '--fork', '--kill-child', '--propagation', 'private', '/bin/sh', launchPath],
    {
      stdio: opts.shell ? 'inherit' : ['ignore', 'pipe', 'pipe'],
      detached: !opts.shell,
    },
  );
  trackProcess(child);

  let consoleText = '';
  let stderr = '';
  let bootMs: number | undefined;
  let failure: string | undefined;
  let pidNs: string | undefined;
  const nsProbe = setInterval(() => {
    if (child.pid !== undefined) pidNs ??= childPidNs(child.pid);
    if (pidNs) clearInterval(nsProbe);
  }, 20);
  child.stdout?.on('data', (b: Buffer) => {
    const s = b.toString('utf8');
    if (bootMs === undefined && consoleText.length < 1e6 && (consoleText.slice(-200) + s).includes('@@DUOFS-LAB BOOTED')) bootMs = Date.now() - t0;
    consoleText += s;
    opts.onConsole?.(s);
    if (consoleText.length > MAX_CONSOLE && !failure) {
      failure = `guest printed more than ${MAX_CONSOLE} bytes on its console`;
      void stopProcess(child, 0);
    }
  });
  child.stderr?.on('data', (b: Buffer) => {
    if (stderr.length < 1e6) stderr += b.toString('utf8');
  });

  const exitCode = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const timer = setTimeout(() => {
    if (!failure) failure = `timed out after ${opts.timeoutMs} ms`;
    void stopProcess(child, 0);
  }, opts.timeoutMs);
  let leftoverPids: number[] = [];
  try {
    const code = await exitCode;
    const wallMs = Date.now() - t0;
    clearInterval(nsProbe);
    leftoverPids = await reapNamespace(pidNs);
    const parsed = parseConsole(consoleText);
    const describe = (why: string) =>
      new GuestError(
        `lab guest ${opts.label ?? ''} ${why}\n--- console (tail) ---\n${tail(consoleText, 60)}` +
          `${stderr.trim() ? `\n--- launcher/qemu stderr (tail) ---\n${tail(stderr, 20)}` : ''}${daemonLogs(plan.logs)}` +
          `\n(work folder: ${workDir}${opts.keepWorkDir || process.env.DUOFS_LAB_KEEP === '1' ? '' : ', removed; DUOFS_LAB_KEEP=1 keeps it'})`,
      );
    if (failure) throw describe(failure);
    if (opts.shell) return { ...parsed, console: '', stderr, wallMs, bootMs, workDir, leftoverPids };
    if (!parsed.done && !opts.allowIncomplete) throw describe(`ended (exit status ${code}) before printing its DONE line`);
    const failed = Object.keys(parsed.mountFailures);
    if (failed.length && !opts.allowMountFailure) throw describe(`could not mount ${failed.join(', ')}`);
    return { ...parsed, console: consoleText, stderr, wallMs, bootMs, workDir, leftoverPids };
  } finally {
    clearTimeout(timer);
    clearInterval(nsProbe);
    await stopProcess(child, 0);
    await reapNamespace(pidNs);
    if (opts.keepWorkDir) keepWorkDir(workDir);
    else if (ownWorkDir) removeWorkDir(workDir);
  }
}

/** The PID namespace (e.g. "pid:[4026532871]") of the launcher's child, once it runs. */
function childPidNs(pid: number): string | undefined {
  try {
    const own = readlinkSync('/proc/self/ns/pid');
    for (const k of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
      const ns = readlinkSync(`/proc/${k}/ns/pid`);
      if (ns !== own) return ns;
    }
  } catch {
    /* not started yet, or gone */
  }
  return undefined;
}

/** PIDs whose PID namespace is ns. */
function pidsInNs(ns: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readlinkSync(`/proc/${d}/ns/pid`) === ns) out.push(Number(d));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** Waits (bounded) until the namespace is empty; kills and returns whatever is left. */
async function reapNamespace(ns: string | undefined): Promise<number[]> {
  if (!ns) return [];
  const deadline = Date.now() + 5000;
  let left = pidsInNs(ns);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = pidsInNs(ns);
  }
  for (const p of left) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return left;
}

/** Throws (with the section's output) unless every scenario section exited 0. */
export function expectScenarioOk(run: GuestRun): void {
  const bad = run.sections.filter((s: Section) => s.rc !== 0);
  if (bad.length) {
    throw new GuestError(
      bad
        .map((s) => `scenario on ${s.mount} exited with ${s.rc}${s.rc === 124 ? ' (timed out in the guest)' : ''}:\n${tail(s.output, 40)}`)
        .join('\n\n'),
    );
  }
}

/** The kernel path of the lab root, for messages and docs. */
export function labKernel(): string {
  return labStamp().kernel;
}

/** Names of the scenarios available under test/lab/guest/scenarios. */
export function scenarios(): string[] {
  return readdirSync(join(guestScriptsDir, 'scenarios')).sort();
}
