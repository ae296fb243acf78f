// The duofs command line.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { LevelWithSilent } from 'pino';
import { createLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat } from './log.js';
import { packageVersion } from './version.js';
import { DEFAULT_LOG_LIMITS, type LogLimits } from './log-limit.js';
import { startDuofs, DEFAULT_9P_MAX_FIDS, DEFAULT_9P_MAX_MSIZE } from './server.js';
import { StartupError } from './listeners.js';
import { SysError } from './sys/index.js';
import type { CacheMode } from '../protocols/fuse/options.js';
import { SECURITY_MODELS, type SecurityModelName } from '../security/model.js';
import type { NinepPermissions } from '../protocols/9p/session.js';

const NINEP_PERMISSIONS: readonly NinepPermissions[] = ['guest', 'host'];
import { parseFsdevSpec } from '../compat/qemu/fsdev.js';
import { CompatError } from '../compat/errors.js';
import { IdMapError, asIdTranslations, parseIdRules } from '../security/id-map.js';
import { ConvertError, convertExport, formatSummary } from './convert/convert.js';
import { ExportInUseError } from './convert/in-use.js';
import { ENGINE_CHOICES, type EngineChoice } from './io/select.js';
import { benchOptions, runBench, type BenchArgs } from './bench/main.js';
import {
  DEFAULT_SANDBOX,
  DEFAULT_SECCOMP,
  FUSE_FD_ENV,
  LISTEN_ENV,
  SANDBOX_MODES,
  SECCOMP_MODES,
  supervised,
  type SandboxMode,
  type SeccompMode,
} from './sandbox/mode.js';
import { reportToSupervisor, superviseInNamespaces } from './sandbox/supervisor.js';
import {
  ActivationError,
  assignListenFds,
  decodeActivated,
  encodeActivated,
  listenFds,
  remainingFlags,
  type ActivatedSocket,
  type ListenerFlags,
} from './systemd/activation.js';
import { ServiceNotifier } from './systemd/notify.js';
import { setCloseOnExec } from './sys/fd.js';
import { confine } from './sandbox/confine.js';
import { prepareRoot } from './sandbox/root.js';
import { checkUsernsMapsAllowed } from './sandbox/userns.js';
import type { UsernsMaps } from './sandbox/userns-map.js';
import { parseUsernsOption } from '../compat/virtiofsd/args.js';
import { checkMountpoint } from './server.js';
import { defaultFuseOptions } from '../protocols/fuse/options.js';
import { realpathSync } from 'node:fs';
import { ConfigError, loadConfig } from './config/config.js';
import { serveConfig } from './config/serve.js';
import { ControlError, formatStatus, queryStatus } from './config/control.js';

/** QEMU's fmode/dmode: octal, masked with 0777, only for the mapped models. */
function parseOctalMode(flag: string, v: string | undefined, model: SecurityModelName): number | undefined {
  if (v === undefined) return undefined;
  if (!/^0?[0-7]{1,4}$/.test(v)) throw new StartupError(`${flag} ${v}: expected an octal mode such as 0644`);
  if (model !== 'mapped-xattr' && model !== 'mapped-file') throw new StartupError(`${flag} only applies to the mapped security models`);
  return parseInt(v, 8) & 0o777;
}

/** --log-burst N --log-rate PER_MINUTE; a burst of 0 turns the limit off. */
function parseLogLimits(burst: number, perMinute: number): LogLimits | false {
  if (!Number.isInteger(burst) || burst < 0) throw new StartupError(`--log-burst ${burst}: expected a whole number of lines (0: no limit)`);
  if (!Number.isFinite(perMinute) || perMinute < 0) throw new StartupError(`--log-rate ${perMinute}: expected lines per minute, 0 or more`);
  return burst === 0 ? false : { burst, perSecond: perMinute / 60 };
}

function positive(flag: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new StartupError(`${flag} ${v}: expected a positive whole number`);
  return v;
}

/** --thread-pool-size: libuv's pool takes 1 to 1024 threads. */
function poolSize(v: number): number {
  if (!Number.isSafeInteger(v) || v < 1 || v > 1024) throw new StartupError(`--thread-pool-size ${v}: expected 1 to 1024 threads`);
  return v;
}

async function serve(argv: {
  config?: string;
  controlSocket?: string;
  sharedDir?: string;
  fsdev?: string;
  translateUid?: string[];
  translateGid?: string[];
  '9pSocket'?: string;
  '9pTcp'?: string;
  '9pFd'?: number;
  '9pMaxMsize': number;
  readonly: boolean;
  logLevel: string;
  logFormat?: LogFormat;
  syslog: boolean;
  logBurst: number;
  logRate: number;
  fuseMount?: string;
  cache: CacheMode;
  writeback: boolean;
  xattr: boolean;
  announceSubmounts: boolean;
  securityModel?: SecurityModelName;
  virtiofsSocket?: string[];
  virtiofsFd?: number;
  tag: string;
  numRequestQueues: number;
  '9pVhostSocket'?: string[];
  '9pTag'?: string;
  fmode?: string;
  dmode?: string;
  '9pPermissions'?: NinepPermissions;
  '9pMaxFids': number;
  rlimitNofile?: number;
  sessionMaxOpen?: number;
  ioEngine?: EngineChoice;
  threadPoolSize?: number;
  debugIoLatencyMs?: number;
  sandbox?: SandboxMode;
  seccomp?: SeccompMode;
  modcaps?: string;
  landlock: boolean;
  uidMap?: string[];
  gidMap?: string[];
}): Promise<void> {
  const log = createLogger(argv.logLevel as LevelWithSilent, { format: argv.logFormat, syslog: argv.syslog });

  const logLimits = parseLogLimits(argv.logBurst, argv.logRate);
  if (argv.config !== undefined) {
    // The export and the front-ends come from the file; a flag that names one would be ignored, so it is refused.
    const named: [string, unknown][] = [
      ['--shared-dir', argv.sharedDir],
      ['--fsdev', argv.fsdev],
      ['--virtiofs-socket', argv.virtiofsSocket],
      ['--virtiofs-fd', argv.virtiofsFd],
      ['--9p-vhost-socket', argv['9pVhostSocket']],
      ['--9p-socket', argv['9pSocket']],
      ['--9p-tcp', argv['9pTcp']],
      ['--9p-fd', argv['9pFd']],
      ['--fuse-mount', argv.fuseMount],
      ['--security-model', argv.securityModel],
      ['--translate-uid', argv.translateUid],
      ['--translate-gid', argv.translateGid],
      ['--uid-map', argv.uidMap],
      ['--gid-map', argv.gidMap],
      ['--modcaps', argv.modcaps],
    ];
    for (const [flag, v] of named)
      if (v !== undefined) throw new ConfigError(`${flag} cannot be used with --config: the file declares exports and devices`);
    // The default is --sandbox namespace: say so rather than serve unconfined unasked.
    if (argv.sandbox !== 'none')
      throw new ConfigError(
        `--sandbox ${argv.sandbox ?? 'namespace'}${argv.sandbox === undefined ? ' (the default)' : ''} is not available with --config yet (devices come and go on SIGHUP, on many exports): give --sandbox none`,
      );
    if (argv.seccomp !== undefined && argv.seccomp !== 'none') throw new ConfigError(`--seccomp ${argv.seccomp} is not available with --config yet`);
    if (listenFds().fds.length) throw new ConfigError('socket activation (LISTEN_FDS) is not available with --config yet');
    await serveConfig({
      file: argv.config,
      controlSocket: argv.controlSocket,
      log,
      logLimits,
      ioEngine: argv.ioEngine,
      threadPoolSize: argv.threadPoolSize === undefined ? undefined : poolSize(argv.threadPoolSize),
      rlimitNofile: argv.rlimitNofile === undefined ? undefined : positive('--rlimit-nofile', argv.rlimitNofile),
      sessionMaxOpen: argv.sessionMaxOpen === undefined ? undefined : positive('--session-max-open', argv.sessionMaxOpen),
      ninepMaxMsize: argv['9pMaxMsize'],
      ninepMaxFids: positive('--9p-max-fids', argv['9pMaxFids']),
      fuse: { cache: argv.cache, writeback: argv.writeback, xattr: argv.xattr, announceSubmounts: argv.announceSubmounts },
    });
    return;
  }
  if (argv.controlSocket !== undefined) throw new ConfigError('--control-socket is for --config');
  // Socket activation: read (and unset) LISTEN_* in the process systemd
  // started; a server under the supervisor gets the assignment handed down.
  const flags: ListenerFlags = {
    virtiofsSocket: argv.virtiofsSocket ?? [],
    ninepVhostSocket: argv['9pVhostSocket'] ?? [],
    ninepSocket: argv['9pSocket'],
    ninepTcp: argv['9pTcp'],
  };
  let activated: ActivatedSocket[];
  if (supervised()) {
    activated = decodeActivated(process.env[LISTEN_ENV]);
    delete process.env[LISTEN_ENV];
    for (const a of activated) setCloseOnExec(a.fd, true);
  } else {
    const inherited = listenFds();
    if (inherited.ignored) log.info(inherited.ignored);
    activated = assignListenFds(inherited.fds, flags);
    for (const [flag, fd] of [['--9p-fd', argv['9pFd']] as const, ['--virtiofs-fd', argv.virtiofsFd] as const])
      if (fd !== undefined && activated.some((a) => a.fd === fd))
        throw new ActivationError(`${flag} ${fd}: that fd is a socket-activated listener already (LISTEN_FDS); drop the flag`);
    for (const a of activated) log.info({ fd: a.fd, frontEnd: a.frontEnd, socket: a.where }, 'socket activation: inherited listener');
  }
  const left = remainingFlags(flags, activated);
  if (
    !activated.length &&
    !argv['9pSocket'] &&
    !argv['9pTcp'] &&
    argv['9pFd'] === undefined &&
    !argv.fuseMount &&
    !argv.virtiofsSocket?.length &&
    argv.virtiofsFd === undefined &&
    !argv['9pVhostSocket']?.length
  ) {
    throw new StartupError('nothing to serve on: give --virtiofs-socket, --9p-vhost-socket, --9p-socket, --9p-tcp, --9p-fd or --fuse-mount');
  }
  // A QEMU -fsdev/-virtfs option string supplies what it names; explicit flags win.
  const spec = argv.fsdev ? parseFsdevSpec(argv.fsdev) : undefined;
  const fsdev = spec?.options ?? {};
  const sharedDir = argv.sharedDir ?? fsdev.sharedDir;
  if (!sharedDir) throw new StartupError('give the export: --shared-dir DIR or --fsdev "local,path=DIR,..."');
  const sandbox = argv.sandbox ?? DEFAULT_SANDBOX;
  // virtiofsd's --uid-map/--gid-map: its syntax and messages (exit 2), and its rule (exit 1).
  const usernsMaps: UsernsMaps = {
    uid: (argv.uidMap ?? []).map((v) => parseUsernsOption('--uid-map', String(v))),
    gid: (argv.gidMap ?? []).map((v) => parseUsernsOption('--gid-map', String(v))),
  };
  if (!supervised()) checkUsernsMapsAllowed(usernsMaps, sandbox, process.geteuid?.() ?? 0);
  if ((sandbox === 'namespace' || argv.fuseMount) && !supervised()) {
    // This process stays outside as the supervisor; the server runs in the
    // namespaces (or, for --fuse-mount alone, beside it: a confined server
    // could not unmount).
    const code = await superviseInNamespaces({
      namespaces: sandbox === 'namespace',
      argv: process.argv.slice(1),
      log,
      inheritFds: [argv['9pFd'], argv.virtiofsFd, ...activated.map((a) => a.fd)].filter((fd): fd is number => fd !== undefined),
      // An inherited TCP socket keeps working in a new network namespace; one duofs must bind there would not.
      newNet: !left.ninepTcp,
      env: activated.length ? { [LISTEN_ENV]: encodeActivated(activated) } : {},
      notifier: ServiceNotifier.fromEnv(log, { connect: false }),
      fuse: argv.fuseMount ? { mountpoint: checkMountpoint(argv.fuseMount, sharedDir), maxWrite: defaultFuseOptions.maxWrite } : undefined,
      usernsMaps,
    });
    process.exit(code);
  }
  // The process systemd started notifies; connected now, before the root changes.
  const notifier = supervised() ? undefined : ServiceNotifier.fromEnv(log, { connect: true });
  for (const note of spec?.notes ?? []) log.info({ fsdev: argv.fsdev }, note); // each option once: accepted, and how duofs differs
  const model = argv.securityModel ?? fsdev.securityModel ?? 'passthrough';
  // Handlers first: a signal during start-up (the sandbox takes a moment) is
  // acted on once the server is up. Under a supervisor this process is the
  // init of its pid namespace, which would simply ignore it.
  let early: string | undefined;
  const onEarly = (signal: string) => (): void => {
    early ??= signal;
  };
  const earlyInt = onEarly('SIGINT');
  const earlyTerm = onEarly('SIGTERM');
  process.on('SIGINT', earlyInt);
  process.on('SIGTERM', earlyTerm);
  prepareRoot(sandbox, sharedDir);
  const d = await startDuofs({
    ...fsdev,
    sharedDir,
    ninepSocket: left.ninepSocket,
    ninepTcp: left.ninepTcp,
    ninepFd: argv['9pFd'],
    activated,
    ninepMaxMsize: argv['9pMaxMsize'],
    ninepPermissions: argv['9pPermissions'],
    ninepMaxFids: positive('--9p-max-fids', argv['9pMaxFids']),
    rlimitNofile: argv.rlimitNofile === undefined ? undefined : positive('--rlimit-nofile', argv.rlimitNofile),
    sessionMaxOpen: argv.sessionMaxOpen === undefined ? undefined : positive('--session-max-open', argv.sessionMaxOpen),
    readonly: argv.readonly || fsdev.readonly === true,
    ioEngine: argv.ioEngine,
    threadPoolSize: argv.threadPoolSize === undefined ? undefined : poolSize(argv.threadPoolSize),
    ioLatencyMs: argv.debugIoLatencyMs,
    securityModel: model,
    fmode: parseOctalMode('--fmode', argv.fmode, model) ?? fsdev.fmode,
    dmode: parseOctalMode('--dmode', argv.dmode, model) ?? fsdev.dmode,
    translateUid: argv.translateUid ? asIdTranslations(parseIdRules(argv.translateUid)) : undefined,
    translateGid: argv.translateGid ? asIdTranslations(parseIdRules(argv.translateGid)) : undefined,
    fuseMount: argv.fuseMount,
    fuseFd: supervised() && process.env[FUSE_FD_ENV] !== undefined ? Number(process.env[FUSE_FD_ENV]) : undefined,
    confine: (made) =>
      confine(
        {
          mode: sandbox,
          seccomp: argv.seccomp ?? DEFAULT_SECCOMP,
          exportPath: realpathSync(sharedDir),
          securityModel: model,
          modcaps: argv.modcaps,
          landlock: argv.landlock,
          log,
          logFormat: argv.logFormat,
        },
        made,
      ),
    virtiofsSocket: left.virtiofsSocket,
    virtiofsFd: argv.virtiofsFd,
    tag: argv.tag,
    numRequestQueues: argv.numRequestQueues,
    ninepVhostSocket: left.ninepVhostSocket,
    ninepTag: argv['9pTag'] ?? fsdev.ninepTag ?? 'duofs9p',
    fuse: { cache: argv.cache, writeback: argv.writeback, xattr: argv.xattr, announceSubmounts: argv.announceSubmounts },
    log,
    logLimits,
  });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    notifier?.stopping();
    log.info({ signal }, 'shutting down: closing listeners and finishing requests');
    void d.close().then(() => process.exit(0));
  };
  process.off('SIGINT', earlyInt);
  process.off('SIGTERM', earlyTerm);
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // Every front-end listens and the server is confined and accepting: ready.
  const status = `serving ${sharedDir} on ${d.frontEnds.join(', ')}`;
  if (supervised()) reportToSupervisor({ ready: status });
  else notifier?.ready(status);
  if (early) stop(early);
}

/**
 * A flag given twice takes its last value, as in most daemons' command lines.
 * yargs makes an array of a repeated scalar, which its `choices` check lets
 * through: `--sandbox none --sandbox none` came out as a sandbox mode
 * "none,none". Options declared as arrays keep every value.
 */
function lastValueWins(argv: Record<string, unknown>, y: { getOptions(): { array: string[]; alias: Record<string, string[]> } }): void {
  const o = y.getOptions();
  const arrays = new Set<string>();
  const camel = (k: string): string => k.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  for (const k of o.array) for (const n of [k, ...(o.alias[k] ?? [])]) arrays.add(n).add(camel(n));
  for (const k of Object.keys(argv)) {
    const v = argv[k];
    if (k !== '_' && Array.isArray(v) && v.length > 0 && !arrays.has(k)) argv[k] = v[v.length - 1];
  }
}

export async function main(args: string[]): Promise<void> {
  await yargs(args)
    .middleware(lastValueWins as never, true)
    .scriptName('duofs')
    .usage('$0 <command> [options]\n\nServe one host directory to virtual machines over 9P2000.L (and virtio-fs).')
    .command(
      'serve',
      'serve an export',
      (y) =>
        y
          .option('config', {
            type: 'string',
            describe:
              'serve every export and device a TOML file declares (many guests on one daemon; SIGHUP re-reads it and adds or removes devices, the others undisturbed; duofs status reports): see docs/operator-guide.md',
          })
          .option('control-socket', {
            type: 'string',
            describe:
              "with --config: the control socket duofs status talks to (mode 0600); default: the file's control-socket, else /run/duofs/NAME.ctl",
          })
          .option('shared-dir', { type: 'string', describe: 'the host directory to export (the export root)' })
          .option('fsdev', {
            type: 'string',
            describe:
              "take the export and its security model from a QEMU -fsdev/-virtfs option string as it appears in a VM definition, e.g. 'local,id=x,path=/srv/x,security_model=mapped-xattr,fmode=0644,dmode=0755,readonly=on'; options with no meaning here are refused by name",
          })
          .option('translate-uid', {
            type: 'string',
            array: true,
            describe:
              'virtiofsd-style uid translation rule (repeatable): map:GUEST:HOST:COUNT, squash-guest:GUEST:HOST:COUNT, squash-host:GUEST:HOST:COUNT, forbid-guest:GUEST:COUNT, guest:GUEST:HOST:COUNT, host:GUEST:HOST:COUNT',
          })
          .option('translate-gid', { type: 'string', array: true, describe: 'the same for gids' })
          .option('virtiofs-socket', {
            type: 'string',
            array: true,
            describe:
              'serve virtio-fs as a vhost-user-fs device on this unix socket (repeatable: one device per socket, one guest each, all on the same export) (QEMU: -chardev socket,id=c,path=PATH[,reconnect=1] -device vhost-user-fs-pci,chardev=c,tag=TAG); duofs keeps serving when the guest goes away and accepts the next connection',
          })
          .option('virtiofs-fd', {
            type: 'number',
            describe:
              'virtio-fs on an inherited, already listening unix socket fd (libvirt); systemd socket activation (LISTEN_FDS) needs no flag: FileDescriptorName=virtiofs, 9p-vhost or 9p, see docs/operator-guide.md',
          })
          .option('tag', {
            type: 'string',
            default: 'duofs',
            describe: 'virtio-fs mount tag in the device config space (guests: mount -t virtiofs TAG DIR); at most 36 bytes',
          })
          .option('num-request-queues', { type: 'number', default: 1, describe: 'virtio-fs request queues (queue 0 is the hiprio queue)' })
          .option('9p-vhost-socket', {
            type: 'string',
            array: true,
            describe:
              'serve 9P2000.L as a virtio-9p device over vhost-user on this unix socket (repeatable) (QEMU: -chardev socket,id=c,path=PATH -device vhost-user-test-device-pci,chardev=c,virtio-id=9,num_vqs=1,vq_size=1024,config_size=N; guests: mount -t 9p -o trans=virtio TAG DIR)',
          })
          .option('9p-tag', { type: 'string', describe: 'virtio-9p mount tag (config space; default duofs9p, or the mount_tag of --fsdev)' })
          .option('9p-socket', {
            type: 'string',
            describe:
              'serve 9P2000.L on a unix socket at this path (guests: trans=unix, or QEMU -chardev socket for a virtio-serial relay); created 0600, a stale socket is replaced',
          })
          .option('9p-tcp', {
            type: 'string',
            describe: 'serve 9P2000.L over TCP at HOST:PORT; a bare PORT listens on 127.0.0.1 only (guests: trans=tcp,port=PORT)',
          })
          .option('9p-fd', { type: 'number', describe: 'serve 9P2000.L on an inherited, already connected stream fd (one client; guests: trans=fd)' })
          .option('9p-max-msize', {
            type: 'number',
            default: DEFAULT_9P_MAX_MSIZE,
            describe: 'largest 9P msize offered; clients asking for more get this',
          })
          .option('9p-permissions', {
            choices: NINEP_PERMISSIONS,
            describe:
              "passthrough: who decides 9P permissions. guest = the client kernel (as QEMU's 9p: duofs acts as itself and gives new files the ids the request names; a guest's own supplementary groups work; any client that reaches the transport is trusted fully); host = the host kernel, as the attached uid with the host's groups of that uid (as diod). Default: guest on --9p-vhost-socket, host on --9p-socket/--9p-tcp/--9p-fd; see docs/operator-guide.md",
          })
          .option('9p-max-fids', {
            type: 'number',
            default: DEFAULT_9P_MAX_FIDS,
            describe: 'most fids one 9P session may hold; a walk-only fid costs memory, not an fd (past the limit: EMFILE)',
          })
          .option('rlimit-nofile', {
            type: 'number',
            describe:
              'set the open-file limit (soft and hard) to N first, as virtiofsd; default: raise the soft limit to the hard one. Sessions share it as docs/operator-guide.md describes',
          })
          .option('session-max-open', {
            type: 'number',
            describe:
              'most files and directories one session (a 9P connection, a virtio-fs or virtio-9p guest, the FUSE mount) may hold open; past it, and when the shared pool runs out, its opens get EMFILE (default: half the pool)',
          })
          .option('io-engine', {
            choices: ENGINE_CHOICES,
            describe:
              'where reads, writes, fsync, fallocate and copy_file_range run, so a slow disk, NFS or FUSE filesystem under the export stalls no other request: io_uring (submission rings, completions in the event loop), threads (a thread pool; what the page cache answers stays inline), sync (everything inline on the one thread); auto = io_uring where the kernel allows it, else threads. Default: auto, or DUOFS_IO_ENGINE',
          })
          .option('thread-pool-size', {
            type: 'number',
            describe: "threads in the pool the threads engine (and copy_file_range) uses, as virtiofsd's flag; default 16 (or UV_THREADPOOL_SIZE)",
          })
          .option('debug-io-latency-ms', {
            type: 'number',
            hidden: true,
            describe: 'tests and benchmarks: start every read, write and fsync this many ms late (a simulated slow disk)',
          })
          .option('security-model', {
            choices: SECURITY_MODELS,
            describe:
              'how guest owners, modes and file types map onto the host, as QEMU -fsdev local: passthrough (real owners; run as root), mapped-xattr (alias mapped; guest view in user.virtfs.* xattrs), mapped-file (in .virtfs_metadata files), none (like passthrough, ownership changes may fail silently)',
          })
          .option('fmode', { type: 'string', describe: 'mapped models: host mode of created files, octal (default 0600)' })
          .option('dmode', { type: 'string', describe: 'mapped models: host mode of created directories, octal (default 0700)' })
          .option('fuse-mount', {
            type: 'string',
            describe:
              'also mount the export on the host through /dev/fuse at this directory (outside the export), to see it exactly as a virtio-fs guest does; unmounted on exit',
          })
          .option('cache', {
            choices: ['auto', 'always', 'metadata', 'never'] as const,
            default: 'auto' as const,
            describe:
              'FUSE caching, as virtiofsd: never = no caching (direct I/O), auto = 1 s attribute/entry timeouts, metadata = long metadata timeouts with direct I/O, always = long timeouts and kept page cache',
          })
          .option('writeback', { type: 'boolean', default: false, describe: 'FUSE: let the client kernel cache writes (writeback cache)' })
          .option('xattr', { type: 'boolean', default: false, describe: 'FUSE: pass extended attributes through (9P always does)' })
          .option('announce-submounts', {
            type: 'boolean',
            default: false,
            describe: 'FUSE: give each host filesystem mounted inside the export its own st_dev and announce it as a submount',
          })
          .option('readonly', { type: 'boolean', default: false, describe: 'refuse every change to the export with EROFS' })
          .option('sandbox', {
            choices: SANDBOX_MODES,
            describe:
              "confine the server once it is set up, as virtiofsd's --sandbox: namespace = new mount, pid, ipc, uts (and net, unless --9p-tcp) namespaces with the export as the root (pivot_root), a user namespace too when not run as root; chroot = chroot into the export (containers that made their namespaces already); none = the host's root. Default: namespace. See docs/operator-guide.md",
          })
          .option('modcaps', {
            type: 'string',
            describe:
              "change the capabilities the server keeps, as virtiofsd's --modcaps: +cap adds, -cap drops, joined by ':' (e.g. +sys_admin:-mknod). Default: what the security model needs (passthrough as root: chown, dac_override, dac_read_search, fowner, fsetid, mknod, setfcap, setgid, setuid; mapped models: dac_override, dac_read_search, fowner; as a user: none)",
          })
          .option('uid-map', {
            type: 'string',
            array: true,
            requiresArg: true,
            describe:
              "with --sandbox namespace as a non-root user: map host uids into the server's user namespace, as virtiofsd's --uid-map: :NAMESPACE_UID:HOST_UID:COUNT: (repeatable, one range each; libvirt's session mode passes :0:UID:1: and :1:SUBUID:COUNT:). Written with newuidmap (the uidmap package), checked against /etc/subuid; the server runs as uid 0 of the namespace. Default: only the own uid, as root of the namespace",
          })
          .option('gid-map', {
            type: 'string',
            array: true,
            requiresArg: true,
            describe: 'the same for gids (:NAMESPACE_GID:HOST_GID:COUNT:, newgidmap, /etc/subgid)',
          })
          .option('landlock', {
            type: 'boolean',
            default: true,
            describe:
              'with --sandbox namespace or chroot: also restrict the server with Landlock to the export, where the kernel has it (--no-landlock: not)',
          })
          .option('seccomp', {
            choices: SECCOMP_MODES,
            describe:
              "a system-call allow-list on every thread once the server is confined, as virtiofsd's --seccomp: kill = a call outside it ends the server (the supervisor and the kernel log say which), log = the kernel logs it and lets it run, trap = the server logs it and exits, none = no filter. Default: kill",
          })
          .option('log-level', { choices: LOG_LEVELS, default: 'info', describe: 'log verbosity (trace logs every request)' })
          .option('log-format', {
            choices: LOG_FORMATS,
            describe:
              "json: pino's JSON lines (the default when stderr is not a terminal); text: virtiofsd's '[time LEVEL duofs] message key=value' lines",
          })
          .option('syslog', {
            type: 'boolean',
            default: false,
            describe:
              'log to syslog (/dev/log: journald or rsyslog) instead of stderr; falls back to stderr, saying so, when /dev/log cannot be reached',
          })
          .option('log-burst', {
            type: 'number',
            default: DEFAULT_LOG_LIMITS.burst,
            describe:
              'lines of one kind (bad requests, broken chains, ...) one peer (9P connection, vhost-user socket, FUSE mount) may cause at once; after that they are counted ("suppressed": N); 0: no limit. Trace lines are never limited',
          })
          .option('log-rate', {
            type: 'number',
            default: DEFAULT_LOG_LIMITS.perSecond * 60,
            describe: 'lines of one kind per peer per minute once the burst is spent',
          })
          .example('$0 serve --shared-dir /srv/share --9p-socket /run/duofs/share.sock', 'serve /srv/share over a unix socket')
          .example('$0 serve --shared-dir /srv/share --9p-tcp 5640', 'serve on 127.0.0.1:5640 (mount -t 9p -o trans=tcp,port=5640)')
          .example(
            'systemd-socket-activate -l /run/vfs.sock --fdname=virtiofs $0 serve --shared-dir /srv/share',
            'virtio-fs on a socket-activated listener (share/systemd/ has units); READY=1 goes to $NOTIFY_SOCKET',
          ),
      (argv) => serve(argv as never),
    )
    .command(
      'status',
      'list the devices of a running duofs serve --config: connected guests and clients, queues, requests in flight, open files, operation counts',
      (y) =>
        y
          .option('config', { type: 'string', describe: "the daemon's config file (its control-socket, or /run/duofs/NAME.ctl)" })
          .option('control-socket', { type: 'string', describe: 'the control socket to ask (overrides --config)' })
          .option('json', { type: 'boolean', default: false, describe: 'print the status as one JSON object' }),
      async (argv) => {
        let path = argv.controlSocket;
        if (path === undefined && argv.config !== undefined) path = loadConfig(argv.config).controlSocket;
        if (path === undefined) throw new ConfigError('give --config FILE or --control-socket PATH');
        const s = await queryStatus(path);
        process.stdout.write(argv.json ? `${JSON.stringify(s, null, 2)}\n` : formatStatus(s));
      },
    )
    .command(
      'convert <export>',
      "rewrite an export's security-model metadata offline (refused while any server or process uses it)",
      (y) =>
        y
          .positional('export', { type: 'string', demandOption: true, describe: 'the export root' })
          .option('from', {
            choices: ['passthrough', 'mapped-xattr', 'mapped-file'] as const,
            demandOption: true,
            describe: 'the model the export is in now (passthrough: import a plain tree)',
          })
          .option('to', { choices: ['mapped-xattr', 'mapped-file'] as const, demandOption: true, describe: 'the model to convert to' })
          .option('dry-run', { type: 'boolean', default: false, describe: 'check and count everything, write nothing' })
          .option('fmode', { type: 'string', describe: 'also set the host mode of every regular file (octal)' })
          .option('dmode', { type: 'string', describe: 'also set the host mode of every directory (octal)' }),
      async (argv) => {
        const summary = await convertExport({
          dir: argv.export as string,
          from: argv.from,
          to: argv.to,
          dryRun: argv.dryRun,
          fmode: parseOctalMode('--fmode', argv.fmode, argv.to),
          dmode: parseOctalMode('--dmode', argv.dmode, argv.to),
        });
        console.log(formatSummary(summary));
      },
    )
    .command(
      'bench',
      'compare protocol and server throughput on one tree (lab guests, or --host without a guest)',
      (y) => benchOptions(y),
      async (argv) => {
        process.exitCode = await runBench(argv as BenchArgs);
      },
    )
    .demandCommand(1, 'give a command: serve, status, convert or bench')
    .strict()
    .help()
    .alias('h', 'help')
    .version('version', 'print the version and exit', `duofs ${packageVersion()}`)
    .fail((msg, err, y) => {
      // yargs' own usage errors (a missing value) come as a YError: usage, exit 2 too
      if (err && err.name !== 'YError') throw err;
      msg ??= err?.message;
      console.error(`${y.help()}\n\n${msg}`);
      process.exit(2);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((e: unknown) => {
  // A command line duofs cannot take (a refused --fsdev option, a bad
  // --translate-uid rule) is a usage error, exit 2 like yargs' own; a
  // failure to start or to convert is 1.
  if (e instanceof CompatError || e instanceof IdMapError || e instanceof ActivationError || e instanceof ConfigError) {
    console.error(`duofs: ${e.message}`);
    process.exit(2);
  }
  if (e instanceof StartupError || e instanceof ControlError || e instanceof SysError || e instanceof ConvertError || e instanceof ExportInUseError)
    console.error(`duofs: ${e.message}`);
  else console.error('duofs:', e);
  process.exit(1);
});
