// duofs-virtiofsd: duofs started with virtiofsd's command line, so libvirt's
// <binary path='.../duofs-virtiofsd'/> (or any script written for virtiofsd)
// runs duofs. Exit status as virtiofsd's: 0 after --help, --version and
// --print-capabilities; 2 (clap's usage error) with one line on stderr for
// a command line duofs refuses (an unknown or unsupported option, a bad
// value, a conflict); 1 when it cannot start (no such directory, socket in
// use, unknown --socket-group).
//
// DUOFS_VIRTIOFSD_DRY_RUN=1 in the environment makes it print the serve
// options it would start with (JSON on stdout) and exit 0 without serving:
// a way to check what a given argv (e.g. libvirt's) means to duofs.
import { chmodSync, chownSync, fstatSync } from 'node:fs';
import { packageVersion } from '../../src/version.js';
import { startDuofs, type ServeOptions } from '../../src/server.js';
import { createLogger } from '../../src/log.js';
import { StartupError } from '../../src/listeners.js';
import { SysError } from '../../src/sys/index.js';
import { c, errno } from '../../src/sys/libc.js';
import { groupId } from '../../src/sys/syslog.js';
import { CompatError } from '../errors.js';
import { parseVirtiofsdArgs, type VirtiofsdArgs } from './args.js';
import { capabilitiesJson } from './capabilities.js';
import { helpText } from './help.js';
import { insideNamespaces, supervised } from '../../src/sandbox/mode.js';
import { superviseInNamespaces } from '../../src/sandbox/supervisor.js';
import { confine } from '../../src/sandbox/confine.js';
import { prepareRoot } from '../../src/sandbox/root.js';
import { checkUsernsMapsAllowed } from '../../src/sandbox/userns.js';
import { formatUsernsRange } from '../../src/sandbox/userns-map.js';
import { realpathSync } from 'node:fs';

const NAME = 'duofs-virtiofsd';

/** setrlimit(RLIMIT_NOFILE, {n, n}) as virtiofsd's --rlimit-nofile does; 0 leaves it alone. */
function setNofile(n: number): void {
  if (n === 0) return;
  const want = Buffer.alloc(16);
  want.writeBigUInt64LE(BigInt(n), 0);
  want.writeBigUInt64LE(BigInt(n), 8);
  if (c.prlimit(0, 7 /* RLIMIT_NOFILE */, want, null) < 0) {
    throw new StartupError(`--rlimit-nofile=${n}: cannot set the open-file limit (${new SysError(errno(), 'prlimit').code})`);
  }
}

/** The ServeOptions startDuofs gets from a parse (every virtiofsd rule kind, one-way ones included). */
export function toServeOptions(a: VirtiofsdArgs): ServeOptions {
  return { ...a.options, sharedDir: a.options.sharedDir! };
}

/**
 * --socket-group as virtiofsd: the socket's group becomes GROUP (getgrnam,
 * so NSS groups count) and group members may connect (mode 0660; duofs
 * creates it 0600, so the socket only ever widens).
 */
function applySocketGroup(path: string, group: string): void {
  const gid = groupId(group);
  if (gid === undefined) throw new StartupError(`--socket-group ${group}: no such group (getgrnam found none)`);
  try {
    chownSync(path, -1, gid);
    chmodSync(path, 0o660);
  } catch (e) {
    throw new StartupError(`--socket-group ${group}: cannot give ${path} to group ${gid}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0) {
    process.stderr.write(helpText(NAME));
    return 2; // clap's arg_required_else_help
  }
  const args = parseVirtiofsdArgs(argv);
  if (args.help) {
    process.stdout.write(helpText(NAME));
    return 0;
  }
  if (args.version) {
    process.stdout.write(`${NAME} ${packageVersion()} (virtiofsd-compatible command line)\n`);
    return 0;
  }
  if (args.printCapabilities) {
    process.stdout.write(capabilitiesJson());
    return 0;
  }
  const serve = toServeOptions(args);
  if (process.env['DUOFS_VIRTIOFSD_DRY_RUN'] === '1') {
    const { rlimitNofile, socketGroup, syslog, logFormat, notes, usernsMaps } = args;
    const maps = { uidMap: usernsMaps.uid.map(formatUsernsRange), gidMap: usernsMaps.gid.map(formatUsernsRange) };
    process.stdout.write(
      JSON.stringify(
        { options: serve, rlimitNofile: rlimitNofile ?? null, socketGroup: socketGroup ?? null, syslog, logFormat, ...maps, notes },
        null,
        2,
      ) + '\n',
    );
    return 0;
  }
  if (serve.virtiofsFd !== undefined) {
    let isSocket = false;
    try {
      isSocket = fstatSync(serve.virtiofsFd).isSocket();
    } catch {
      throw new StartupError(`--fd=${serve.virtiofsFd}: no such open file descriptor (it must be an inherited listening unix socket)`);
    }
    if (!isSocket) throw new StartupError(`--fd=${serve.virtiofsFd}: not a socket (it must be an inherited listening unix socket)`);
  }
  if (args.rlimitNofile !== undefined) setNofile(args.rlimitNofile);

  const log = createLogger(serve.logLevel ?? 'info', {
    format: args.logFormat,
    target: NAME,
    syslog: args.syslog,
    quietSyslogFallback: supervised(),
  });
  // virtiofsd: --uid-map/--gid-map only unprivileged, in a namespace (exit 1).
  if (!supervised()) checkUsernsMapsAllowed(args.usernsMaps, args.sandbox, process.geteuid?.() ?? 0);
  if (args.sandbox === 'namespace' && !insideNamespaces()) {
    // As virtiofsd's parent: this process supervises, the server runs inside.
    return superviseInNamespaces({
      argv: process.argv.slice(1),
      log,
      newNet: true,
      inheritFds: serve.virtiofsFd !== undefined ? [serve.virtiofsFd] : [],
      usernsMaps: args.usernsMaps,
    });
  }
  for (const note of args.notes) log.info({ compat: 'virtiofsd' }, note);
  // Handlers first: a signal during start-up is acted on once the server is up
  // (as the init of its pid namespace it would otherwise be ignored).
  let early: string | undefined;
  const earlyHandlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => {
    const h = (): void => {
      early ??= sig;
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  prepareRoot(args.sandbox, serve.sharedDir);
  const d = await startDuofs({
    ...serve,
    log,
    confine: (made) => {
      // The socket's group is set by name, before the root changes.
      if (args.socketGroup !== undefined && serve.virtiofsSocket !== undefined) applySocketGroup(String(serve.virtiofsSocket), args.socketGroup);
      return confine(
        {
          mode: args.sandbox,
          seccomp: args.seccomp,
          exportPath: realpathSync(serve.sharedDir),
          securityModel: serve.securityModel ?? 'passthrough',
          modcaps: args.modcaps,
          log,
          logFormat: args.logFormat,
          logTarget: NAME,
        },
        made,
      );
    },
  });
  log.info({ export: serve.sharedDir, fd: serve.virtiofsFd, socket: serve.virtiofsSocket }, `${NAME} started`);

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) process.exit(1);
      stopping = true;
      log.info({ signal }, 'shutting down');
      void d.close().then(resolve);
    };
    for (const [sig, h] of earlyHandlers) process.off(sig, h);
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, () => stop(s));
    if (early) stop(early);
  });
  return 0;
}

/** Runs main() and exits: one line on stderr for errors an operator can fix. */
export function run(argv: string[]): void {
  main(argv).then(
    (code) => process.exit(code),
    (e: unknown) => {
      if (e instanceof CompatError) {
        process.stderr.write(`${NAME}: ${e.message}\n`);
        process.exit(2); // a command-line error, as clap's
      }
      if (e instanceof StartupError || e instanceof SysError) {
        process.stderr.write(`${NAME}: ${e.message}\n`);
      } else {
        process.stderr.write(`${NAME}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      }
      process.exit(1);
    },
  );
}
