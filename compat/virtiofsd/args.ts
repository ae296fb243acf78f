// virtiofsd's command line (the Rust virtiofsd, 1.14: src/main.rs `Opt` and
// `parse_compat`), turned into duofs serve options, so libvirt and scripts can
// run duofs where they ran virtiofsd.
//
// Rules:
// * every virtiofsd option is recognised; one duofs cannot honour is refused
//   by name (CompatError, exit status 2 like clap's usage errors), never
//   silently ignored;
// * options accepted without effect are listed in NO_EFFECT (and in the
//   README beside this file) with the reason;
// * `--opt=value` and `--opt value` both work; options taking a value
//   optionally (`--posix-acl[=MODE]`) or by `=` only (`--inode-file-handles=`)
//   behave as in virtiofsd (clap's require_equals); a repeated option keeps
//   its last value (clap's args_override_self), list options accumulate;
// * the legacy `-o source=...,cache=...,xattr` form is read with QEMU's
//   comma escaping (`,,` is a literal comma: libvirt escapes the source path
//   that way), plus `posix_lock`/`flock`, which virtiofsd itself refuses but
//   duofs honours (it takes real host locks unless told `no_posix_lock` /
//   `no_flock`).
import type { LevelWithSilent } from 'pino';
import type { SecurityModel, ServeOptions } from '../../src/server.js';
import { ENGINE_CHOICES, type EngineChoice } from '../../src/io/select.js';
import type { CacheMode, FuseOptions } from '../../protocols/fuse/options.js';
import { IdMap, IdMapError, parseIdRule, type IdRule } from '../../security/id-map.js';
import { CompatError } from '../errors.js';
import { StartupError } from '../../src/listeners.js';
import { XattrMap, XattrMapError } from '../../protocols/fuse/xattr-map.js';
import { parseQemuOpts } from '../qemu/opts.js';
import { ModcapsError, parseModcaps } from '../../src/sandbox/modcaps.js';
import { DEFAULT_SANDBOX, DEFAULT_SECCOMP, SANDBOX_MODES, SECCOMP_MODES, type SandboxMode, type SeccompMode } from '../../src/sandbox/mode.js';
import { UsernsMapError, parseUsernsRange, type UsernsMaps, type UsernsRange } from '../../src/sandbox/userns-map.js';

/** virtiofsd's MAX_TAG_LEN (the virtio-fs config space tag field). */
export const MAX_TAG_LEN = 36;

export interface VirtiofsdServeOptions extends Omit<Partial<ServeOptions>, 'translateUid' | 'translateGid' | 'fuse'> {
  fuse?: Partial<FuseOptions>;
  /** --translate-uid rules; IdRule is IdTranslation plus the one-way 'guest'/'host' kinds */
  translateUid?: IdRule[];
  translateGid?: IdRule[];
}

export interface VirtiofsdArgs {
  options: VirtiofsdServeOptions;
  /** --print-capabilities: print the vhost-user JSON and exit 0 */
  printCapabilities: boolean;
  help: boolean;
  version: boolean;
  /** --rlimit-nofile N (0 = leave the limit alone) */
  rlimitNofile: number | undefined;
  /** --socket-group NAME: the group given read-write access to the --socket-path socket */
  socketGroup: string | undefined;
  /** --syslog: log to syslog (/dev/log) instead of stderr */
  syslog: boolean;
  /** --log-format json|text (duofs extension; default text, as virtiofsd's lines) */
  logFormat: 'json' | 'text';
  /** --sandbox (default namespace, as virtiofsd) */
  sandbox: SandboxMode;
  /** --seccomp (default kill, as virtiofsd) */
  seccomp: SeccompMode;
  /** --modcaps (+cap:-cap), checked */
  modcaps: string | undefined;
  /** --uid-map/--gid-map (repeatable): the user namespace's maps when started by a non-root user */
  usernsMaps: UsernsMaps;
  /** one line each, logged once at info: accepted options that have no effect in duofs, deprecations */
  notes: string[];
}

/** Accepted options that change nothing in duofs, and why (the documented table). */
export const NO_EFFECT: Readonly<Record<string, string>> = {
  '--inode-file-handles':
    'never, prefer and fallback are accepted: duofs decides per inode whether it keeps an O_PATH fd or a file handle (mandatory is refused: duofs cannot promise it)',
  '--no-killpriv-v2':
    "duofs always offers FUSE_HANDLE_KILLPRIV_V2 and clears setuid/setgid bits itself on write, truncate and chown, as the host kernel would (virtiofsd's default is off)",
  '--killpriv-v2': 'duofs always offers FUSE_HANDLE_KILLPRIV_V2 (what this option asks virtiofsd for)',
  '-o killpriv_v2': 'see --killpriv-v2',
  '--preserve-noatime': 'duofs always passes O_NOATIME through (virtiofsd strips it unless this is given)',
  '--migration-confirm-paths':
    'duofs finds the paths when the device state is saved (every ring stopped) and checks each names its inode then, which is what this option asks virtiofsd for',
  '--migration-mode=find-paths': 'the default',
  '-f': 'virtiofsd itself ignores it (always in the foreground); so does duofs',
  '--security-label=never': 'the default',
  '-o no_security_label': 'the default',
  '-o no_killpriv_v2': 'see --no-killpriv-v2',
};

/** Options duofs refuses, and why (the documented table). */
export const REFUSED: Readonly<Record<string, string>> = {
  '--migration-mode=file-handles':
    'duofs migrates inodes by path only (find-paths, the default); it does not send file handles (docs/live-migration.md)',
  '--migration-verify-handles': 'only meaningful with --migration-mode=file-handles, which duofs does not implement',
  '--inode-file-handles=mandatory': 'duofs cannot promise never to hold O_PATH fds',
};

type Kind = 'flag' | 'value' | 'optional' | 'equals';

/** Every long option virtiofsd 1.14 has, by how it takes its value; plus duofs's own. */
const LONG: Record<string, Kind> = {
  'shared-dir': 'value',
  tag: 'value',
  socket: 'value',
  'socket-path': 'value',
  'socket-group': 'value',
  fd: 'value',
  'thread-pool-size': 'value',
  xattr: 'flag',
  'posix-acl': 'optional',
  xattrmap: 'value',
  sandbox: 'value',
  readonly: 'flag',
  seccomp: 'value',
  'announce-submounts': 'flag',
  'no-announce-submounts': 'flag',
  'inode-file-handles': 'equals',
  cache: 'value',
  'allow-mmap': 'flag',
  'no-readdirplus': 'flag',
  writeback: 'flag',
  'allow-direct-io': 'flag',
  'print-capabilities': 'flag',
  modcaps: 'value',
  'log-level': 'value',
  syslog: 'flag',
  'rlimit-nofile': 'value',
  'no-killpriv-v2': 'flag',
  'killpriv-v2': 'flag',
  'security-label': 'optional',
  'uid-map': 'value',
  'gid-map': 'value',
  'translate-uid': 'value',
  'translate-gid': 'value',
  'preserve-noatime': 'flag',
  'migration-mode': 'value',
  'migration-on-error': 'value',
  'migration-verify-handles': 'flag',
  'migration-confirm-paths': 'flag',
  help: 'flag',
  version: 'flag',
  // duofs extensions (documented in the README beside this file)
  'security-model': 'value',
  fmode: 'value',
  dmode: 'value',
  'log-format': 'value',
  'io-engine': 'value',
};

const SHORT: Record<string, Kind> = { o: 'value', d: 'flag', f: 'flag', h: 'flag', V: 'flag' };

/** clap's names for the values of the options whose errors are clap's word for word. */
const VALUE_NAME: Record<string, string> = { '--uid-map': '<UID_MAP>', '--gid-map': '<GID_MAP>' };

/**
 * One --uid-map/--gid-map value; a bad one is a usage error worded as
 * virtiofsd's (clap's "invalid value" line around the idmap error).
 */
export function parseUsernsOption(flag: '--uid-map' | '--gid-map', v: string): UsernsRange {
  try {
    return parseUsernsRange(v);
  } catch (e) {
    if (e instanceof UsernsMapError) throw new CompatError(`invalid value '${v}' for '${flag} ${VALUE_NAME[flag]}': ${e.message}`, flag);
    throw e;
  }
}

const LOG_LEVELS: Record<string, LevelWithSilent> = {
  error: 'error',
  warn: 'warn',
  info: 'info',
  debug: 'debug',
  trace: 'trace',
  off: 'silent',
};
const CACHE: Record<string, CacheMode> = { auto: 'auto', always: 'always', never: 'never', metadata: 'metadata' };
const MODELS: readonly SecurityModel[] = ['passthrough', 'mapped-xattr', 'mapped-file', 'none'];

interface Raw {
  name: string; // '--shared-dir' or '-o'
  value: string | undefined;
}

/** Splits argv into options and values, clap-style. */
function tokenize(argv: readonly string[]): Raw[] {
  const out: Raw[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      if (i + 1 < argv.length) throw new CompatError(`unexpected argument ${JSON.stringify(argv[i + 1])}: virtiofsd takes no positional arguments`);
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const key = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const inline = eq < 0 ? undefined : a.slice(eq + 1);
      const kind = LONG[key];
      if (!kind) throw new CompatError(`--${key}: not a virtiofsd option (see --help)`, `--${key}`);
      const name = `--${key}`;
      switch (kind) {
        case 'flag':
          if (inline !== undefined) throw new CompatError(`${name} takes no value (got ${JSON.stringify(inline)})`, name);
          out.push({ name, value: undefined });
          break;
        case 'optional':
        case 'equals':
          if (kind === 'equals' && inline === undefined) throw new CompatError(`${name} needs a value given with '=' (${name}=VALUE)`, name);
          out.push({ name, value: inline });
          break;
        case 'value':
          if (inline !== undefined) out.push({ name, value: inline });
          else {
            const v = argv[i + 1];
            if (v === undefined) {
              throw new CompatError(
                VALUE_NAME[name] ? `a value is required for '${name} ${VALUE_NAME[name]}' but none was supplied` : `${name} needs a value`,
                name,
              );
            }
            out.push({ name, value: v });
            i++;
          }
          break;
      }
    } else if (a.startsWith('-') && a.length > 1) {
      const letter = a[1]!;
      const kind = SHORT[letter];
      if (!kind) throw new CompatError(`${a}: not a virtiofsd option (see --help)`, a);
      if (kind === 'value') {
        let v: string | undefined = a.slice(2);
        if (v.startsWith('=')) v = v.slice(1);
        if (v === '') {
          v = argv[i + 1];
          if (v === undefined) throw new CompatError(`-${letter} needs a value`, `-${letter}`);
          i++;
        }
        out.push({ name: `-${letter}`, value: v });
      } else {
        // Combined short flags (-df) as clap allows.
        for (const ch of a.slice(1)) {
          if (SHORT[ch] !== 'flag') throw new CompatError(`${a}: not a virtiofsd option (see --help)`, a);
          out.push({ name: `-${ch}`, value: undefined });
        }
      }
    } else {
      throw new CompatError(`unexpected argument ${JSON.stringify(a)}: virtiofsd takes no positional arguments`);
    }
  }
  return out;
}

/** --modcaps as virtiofsd parses it; a bad one is a usage error naming the capability. */
function checkModcaps(flag: string, v: string): string {
  try {
    parseModcaps(v);
  } catch (e) {
    if (e instanceof ModcapsError) throw new CompatError(`${flag} ${v}: ${e.message}`, flag);
    throw e;
  }
  return v;
}

function refuse(key: string): never {
  const why = REFUSED[key];
  throw new CompatError(`${key}: not supported by duofs: ${why ?? 'no equivalent'}`, key);
}

function uint(name: string, v: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(v)) throw new CompatError(`${name}=${v}: expected a non-negative integer`, name);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n > max) throw new CompatError(`${name}=${v}: out of range`, name);
  return n;
}

function octalMode(name: string, v: string): number {
  if (!/^0?[0-7]{1,4}$/.test(v)) throw new CompatError(`${name}=${v}: expected an octal mode such as 0600`, name);
  return parseInt(v, 8) & 0o777;
}

/**
 * Parses virtiofsd's argv (without the program name). Throws CompatError
 * with a one-line message naming the option on anything duofs refuses.
 */
export function parseVirtiofsdArgs(argv: readonly string[]): VirtiofsdArgs {
  const opts: VirtiofsdServeOptions = {};
  const fuse: Partial<FuseOptions> = { announceSubmounts: true }; // virtiofsd 1.14's default
  const notes: string[] = [];
  const uidRules: IdRule[] = [];
  const gidRules: IdRule[] = [];
  let printCapabilities = false;
  let help = false;
  let version = false;
  let rlimitNofile: number | undefined;
  let socketGroup: string | undefined;
  let socketPath: string | undefined;
  let socketOld: string | undefined;
  let fd: number | undefined;
  let sharedDir: string | undefined;
  let sawCompat = false;
  let fmode: number | undefined;
  let dmode: number | undefined;
  let model: SecurityModel | undefined;
  let syslog = false;
  let logFormat: 'json' | 'text' = 'text';
  let sandbox: SandboxMode = DEFAULT_SANDBOX;
  let seccomp: SeccompMode = DEFAULT_SECCOMP;
  let modcaps: string | undefined;
  let posixAcl: 'never' | 'auto' | 'always' | undefined;
  let securityLabel: 'never' | 'auto' | 'always' | undefined;
  let xattrmap: string | undefined;
  const usernsMaps: UsernsMaps = { uid: [], gid: [] };

  const noted = new Map<string, number>(); // option -> its line in notes: one line per option, its last value
  const noEffect = (key: string, detail?: string): void => {
    const line = `${detail ?? key}: accepted, no effect in duofs: ${NO_EFFECT[key] ?? ''}`;
    const at = noted.get(key);
    if (at === undefined) noted.set(key, notes.push(line) - 1);
    else notes[at] = line;
  };
  const setXattrmap = (name: string, v: string): void => {
    try {
      opts.fuse = fuse;
      fuse.xattrMap = XattrMap.parse(v);
      xattrmap = v;
    } catch (e) {
      if (e instanceof XattrMapError) throw new CompatError(`invalid value ${JSON.stringify(v)} for ${name}: ${e.message}`, name);
      throw e;
    }
  };

  const compat = (spec: string): void => {
    sawCompat = true;
    for (const o of parseQemuOpts(spec)) {
      if (!o.flag) {
        // `key=value` tuples
        switch (o.name) {
          case 'source':
            if (o.value === '') throw new CompatError('-o source= is empty', '-o source');
            sharedDir = o.value;
            break;
          case 'cache': {
            const m = o.value === 'none' ? 'never' : CACHE[o.value];
            if (!m || o.value === 'never') throw new CompatError(`-o cache=${o.value}: invalid (auto, always, none, metadata)`, '-o cache');
            fuse.cache = m;
            break;
          }
          case 'loglevel': {
            const l = ({ debug: 'debug', info: 'info', warn: 'warn', err: 'error' } as const)[o.value as 'debug'];
            if (!l) throw new CompatError(`-o loglevel=${o.value}: invalid (debug, info, warn, err)`, '-o loglevel');
            opts.logLevel = l;
            break;
          }
          case 'sandbox':
            if (o.value !== 'namespace' && o.value !== 'chroot')
              throw new CompatError(`-o sandbox=${o.value}: invalid (namespace, chroot)`, '-o sandbox');
            sandbox = o.value;
            break;
          case 'xattrmap':
            setXattrmap('-o xattrmap', o.value);
            break;
          case 'modcaps':
            modcaps = checkModcaps('-o modcaps', o.value);
            break;
          default:
            throw new CompatError(`-o ${o.name}=${o.value}: not a virtiofsd -o option`, `-o ${o.name}`);
        }
        continue;
      }
      // Single words. parseQemuOpts turned `noX` into X=off; undo that.
      const word = o.value === 'off' ? `no${o.name}` : o.name;
      switch (word) {
        case 'xattr':
          fuse.xattr = true;
          break;
        case 'no_xattr':
          fuse.xattr = false;
          break;
        case 'writeback':
          fuse.writeback = true;
          break;
        case 'announce_submounts':
          fuse.announceSubmounts = true;
          break;
        case 'no_writeback':
          fuse.writeback = false;
          break;
        case 'readdirplus':
          fuse.readdirplus = true;
          break;
        case 'no_readdirplus':
          fuse.readdirplus = false;
          break;
        case 'posix_lock':
          fuse.posixLocks = true;
          break; // virtiofsd refuses it; duofs takes host locks
        case 'no_posix_lock':
          fuse.posixLocks = false;
          break;
        case 'flock':
          fuse.flockLocks = true;
          break; // likewise
        case 'no_flock':
          fuse.flockLocks = false;
          break;
        case 'posix_acl':
          posixAcl = 'always';
          break;
        case 'no_posix_acl':
          posixAcl = 'never';
          break;
        case 'allow_direct_io':
          fuse.allowDirectIo = true;
          break;
        case 'no_allow_direct_io':
          fuse.allowDirectIo = false;
          break;
        case 'no_killpriv_v2':
        case 'killpriv_v2':
          noEffect(`-o ${word}`);
          break;
        case 'security_label':
          securityLabel = 'always';
          break;
        case 'no_security_label':
          securityLabel = 'never';
          noEffect(`-o ${word}`);
          break;
        default:
          throw new CompatError(`-o ${word}: not a virtiofsd -o option`, `-o ${word}`);
      }
    }
  };

  for (const { name, value } of tokenize(argv)) {
    const v = value ?? '';
    switch (name) {
      case '--shared-dir':
        if (v === '') throw new CompatError('--shared-dir is empty', name);
        sharedDir = v;
        break;
      case '--tag':
        if (v === '' || Buffer.byteLength(v) > MAX_TAG_LEN)
          throw new CompatError(`--tag ${JSON.stringify(v)}: must be 1 to ${MAX_TAG_LEN} bytes`, name);
        opts.tag = v;
        break;
      case '--socket':
        socketOld = v;
        notes.push('--socket is deprecated in virtiofsd; use --socket-path');
        break;
      case '--socket-path':
        socketPath = v;
        break;
      case '--socket-group':
        if (v === '') throw new CompatError('--socket-group is empty', name);
        socketGroup = v;
        break;
      case '--fd':
        fd = uint(name, v, 0x7fffffff);
        break;
      case '--thread-pool-size': {
        // virtiofsd: 0 = no pool, requests run on the queue thread. duofs
        // keeps blocking calls off its one thread whatever the size (io_uring
        // needs no pool), so 0 keeps the default pool rather than stalling.
        const n = uint(name, v);
        if (n === 0)
          notes.push(
            `${name}=0: duofs still runs blocking I/O off its event loop (io_uring, or a pool of the default size); 0 does not make it serve inline`,
          );
        else if (n > 1024) notes.push(`${name}=${v}: libuv's pool has at most 1024 threads; using 1024`);
        opts.threadPoolSize = n === 0 ? undefined : Math.min(n, 1024);
        break;
      }
      case '--xattr':
        fuse.xattr = true;
        break;
      case '--posix-acl':
      case '--security-label': {
        const mode = value ?? 'always';
        if (mode !== 'never' && mode !== 'auto' && mode !== 'always') throw new CompatError(`${name}=${mode}: invalid (never, auto, always)`, name);
        if (name === '--posix-acl') posixAcl = mode;
        else {
          securityLabel = mode;
          if (mode === 'never') noEffect('--security-label=never');
        }
        break;
      }
      case '--xattrmap':
        setXattrmap(name, v);
        break;
      case '--allow-mmap':
        fuse.allowMmap = true;
        break;
      case '--allow-direct-io':
        fuse.allowDirectIo = true;
        break;
      case '--no-readdirplus':
        fuse.readdirplus = false;
        break;
      case '--syslog':
        syslog = true;
        break;
      case '--io-engine':
        if (!ENGINE_CHOICES.includes(v as EngineChoice)) throw new CompatError(`--io-engine ${v}: invalid (${ENGINE_CHOICES.join(', ')})`, name);
        opts.ioEngine = v as EngineChoice;
        break;
      case '--log-format':
        if (v !== 'json' && v !== 'text') throw new CompatError(`--log-format ${v}: invalid (json, text)`, name);
        logFormat = v;
        break;
      case '--sandbox':
        if (!SANDBOX_MODES.includes(v as SandboxMode)) throw new CompatError(`--sandbox ${v}: invalid (namespace, chroot, none)`, name);
        sandbox = v as SandboxMode;
        break;
      case '--seccomp':
        if (!SECCOMP_MODES.includes(v as SeccompMode)) throw new CompatError(`--seccomp ${v}: invalid (none, kill, log, trap)`, name);
        seccomp = v as SeccompMode;
        break;
      case '--readonly':
        opts.readonly = true;
        break;
      case '--announce-submounts':
        fuse.announceSubmounts = true;
        break;
      case '--no-announce-submounts':
        fuse.announceSubmounts = false;
        break;
      case '--migration-mode':
        if (v === 'file-handles') refuse('--migration-mode=file-handles');
        if (v !== 'find-paths') throw new CompatError(`--migration-mode ${v}: invalid (find-paths, file-handles)`, name);
        noEffect('--migration-mode=find-paths');
        break;
      case '--migration-on-error':
        if (v !== 'abort' && v !== 'guest-error') throw new CompatError(`--migration-on-error ${v}: invalid (abort, guest-error)`, name);
        fuse.migrationOnError = v;
        break;
      case '--migration-confirm-paths':
        noEffect(name);
        break;
      case '--inode-file-handles':
        if (v === 'mandatory') refuse('--inode-file-handles=mandatory');
        if (!['never', 'prefer', 'fallback'].includes(v))
          throw new CompatError(`--inode-file-handles=${v}: invalid (never, prefer, mandatory)`, name);
        noEffect(name, `--inode-file-handles=${v}`);
        break;
      case '--cache': {
        const m = CACHE[v];
        if (!m) throw new CompatError(`--cache ${v}: invalid (auto, always, never, metadata)`, name);
        fuse.cache = m;
        break;
      }
      case '--writeback':
        fuse.writeback = true;
        break;
      case '--print-capabilities':
        printCapabilities = true;
        break;
      case '--log-level': {
        const l = LOG_LEVELS[v];
        if (!l) throw new CompatError(`--log-level ${v}: invalid (error, warn, info, debug, trace, off)`, name);
        opts.logLevel = l;
        break;
      }
      case '--rlimit-nofile':
        rlimitNofile = uint(name, v);
        break;
      case '-o':
        compat(v);
        break;
      case '-d':
        opts.logLevel = 'debug';
        break;
      case '-f':
        noEffect('-f');
        break;
      case '--no-killpriv-v2':
      case '--killpriv-v2':
        noEffect(name);
        break;
      case '--translate-uid':
      case '--translate-gid':
        try {
          (name === '--translate-uid' ? uidRules : gidRules).push(parseIdRule(v));
        } catch (e) {
          if (e instanceof IdMapError) throw new CompatError(`${name} ${e.message}`, name);
          throw e;
        }
        break;
      case '--preserve-noatime':
        noEffect(name);
        break;
      case '--uid-map':
        usernsMaps.uid.push(parseUsernsOption(name, v));
        break;
      case '--gid-map':
        usernsMaps.gid.push(parseUsernsOption(name, v));
        break;
      case '--security-model':
        if (!MODELS.includes(v as SecurityModel)) throw new CompatError(`--security-model ${v}: invalid (${MODELS.join(', ')})`, name);
        model = v as SecurityModel;
        break;
      case '--modcaps':
        modcaps = checkModcaps(name, v);
        break;
      case '--fmode':
        fmode = octalMode(name, v);
        break;
      case '--dmode':
        dmode = octalMode(name, v);
        break;
      case '-h':
      case '--help':
        help = true;
        break;
      case '-V':
      case '--version':
        version = true;
        break;
      default:
        // Everything left is in REFUSED (the tokenizer knows no other names).
        refuse(name);
    }
  }

  const result: VirtiofsdArgs = {
    options: opts,
    printCapabilities,
    help,
    version,
    rlimitNofile,
    socketGroup,
    syslog,
    logFormat,
    sandbox,
    seccomp,
    modcaps,
    usernsMaps,
    notes,
  };
  if (help || version || printCapabilities) return result;

  // Cross-option rules, as virtiofsd's clap definitions state them.
  if (fd !== undefined && (socketPath !== undefined || socketOld !== undefined)) {
    throw new CompatError('--fd cannot be used with --socket-path (or --socket)', '--fd');
  }
  if (socketGroup !== undefined && fd !== undefined) throw new CompatError('--socket-group cannot be used with --fd', '--socket-group');
  if (fd === undefined && socketPath === undefined && socketOld === undefined) {
    throw new CompatError('give --socket-path PATH or --fd N (the vhost-user listening socket)', '--socket-path');
  }
  if (sharedDir === undefined) {
    throw new CompatError(sawCompat ? 'missing "--shared-dir" or "-o source" option' : '--shared-dir is required', '--shared-dir');
  }
  if ((fmode !== undefined || dmode !== undefined) && model !== 'mapped-xattr' && model !== 'mapped-file') {
    throw new CompatError(
      '--fmode/--dmode are only valid with --security-model mapped-xattr or mapped-file',
      fmode !== undefined ? '--fmode' : '--dmode',
    );
  }
  for (const [rules, flag] of [
    [uidRules, '--translate-uid'],
    [gidRules, '--translate-gid'],
  ] as const) {
    try {
      new IdMap(rules);
    } catch (e) {
      if (e instanceof IdMapError) throw new CompatError(`${flag}: ${e.message}`, flag);
      throw e;
    }
  }

  // virtiofsd: --xattrmap, --posix-acl and --security-label imply --xattr;
  // translated ids would break ACLs (a run-time error there: exit 1).
  if (posixAcl !== undefined) {
    fuse.posixAcl = posixAcl;
    if (posixAcl !== 'never') fuse.xattr = true;
    if (posixAcl !== 'never' && (uidRules.length || gidRules.length)) {
      throw new StartupError(
        `Cannot use --translate-uid or --translate-gid with --posix-acl=${posixAcl}, translating UIDs/GIDs would break posix ACLs`,
      );
    }
  } else {
    fuse.posixAcl = 'never'; // virtiofsd's default: no ACLs, system.posix_acl_* refused
  }
  if (securityLabel !== undefined && securityLabel !== 'never') {
    fuse.securityLabel = securityLabel;
    fuse.xattr = true;
  }
  if (xattrmap !== undefined) {
    fuse.xattr = true;
    if (fuse.xattrMap!.unterminated)
      notes.push(
        `--xattrmap ${JSON.stringify(xattrmap)}: no rule matches every name; duofs refuses unmatched guest names with EPERM and hides unmatched host names (virtiofsd would abort)`,
      );
  }

  opts.sharedDir = sharedDir;
  if (fd !== undefined) opts.virtiofsFd = fd;
  else opts.virtiofsSocket = socketPath ?? socketOld;
  opts.securityModel = model ?? 'passthrough';
  if (fmode !== undefined) opts.fmode = fmode;
  if (dmode !== undefined) opts.dmode = dmode;
  if (uidRules.length) opts.translateUid = uidRules;
  if (gidRules.length) opts.translateGid = gidRules;
  opts.numRequestQueues = 1; // virtiofsd serves one request queue; so does duofs
  opts.fuse = fuse;
  return result;
}
