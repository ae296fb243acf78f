// QEMU's `-fsdev` and `-virtfs` option strings, as they appear in an existing
// VM definition, turned into duofs serve options. Only QEMU's `local` driver
// has a duofs equivalent. The rules follow QEMU (fsdev/qemu-fsdev-opts.c,
// fsdev/qemu-fsdev.c, hw/9pfs/9p-local.c local_parse_opts, system/vl.c):
//
// * security_model is required: passthrough | mapped-xattr (alias mapped) |
//   mapped-file | none;
// * fmode/dmode are read like QEMU_OPT_NUMBER (base 0: 0644 is octal, 644 is
//   decimal), masked with 0777, and only valid for the mapped models;
// * readonly is a QEMU boolean (readonly, readonly=on|off|yes|no|true|false);
// * multidevs=remap|forbid|warn, writeout=immediate;
// * max_xattr=N (QEMU 11.1: a cap on one 9P session's open xattr fids,
//   QEMU_OPT_NUMBER up to 2^32-1): accepted, noted; duofs bounds the same
//   thing its own way (see MAX_XATTR_NOTE);
// * -virtfs needs mount_tag, which becomes the 9P mount tag.
//
// That is every option QEMU 11.1's `-fsdev local` takes (its help: fsdriver,
// id, path, security_model, writeout, readonly, fmode, dmode, multidevs,
// max_xattr, throttling.*; socket and sock_fd of the removed proxy driver).
// throttling.*, socket and sock_fd have no meaning for duofs and are refused
// by name; unknown names are refused the way QEMU refuses them.
import type { SecurityModel, ServeOptions } from '../../src/server.js';
import { CompatError } from '../errors.js';
import { parseQemuBool, parseQemuNumber, parseQemuOpts } from './opts.js';

/** QEMU's defaults for the mapped models (SM_LOCAL_MODE_BITS, SM_LOCAL_DIR_MODE_BITS). */
export const QEMU_DEFAULT_FMODE = 0o600;
export const QEMU_DEFAULT_DMODE = 0o700;

export interface FsdevParse {
  options: Partial<ServeOptions>;
  /** the fsdev id (for -virtfs QEMU uses the mount tag) */
  id: string | undefined;
  /** true when the string was a -virtfs one (it had mount_tag) */
  virtfs: boolean;
  /** QEMU's writeout=immediate (sync_file_range after each write); no ServeOptions field yet */
  writeoutImmediate: boolean;
  /** one line each: accepted options whose effect differs in duofs, and doubtful values */
  notes: string[];
}

const MODELS: Record<string, SecurityModel> = {
  passthrough: 'passthrough',
  'mapped-xattr': 'mapped-xattr',
  mapped: 'mapped-xattr',
  'mapped-file': 'mapped-file',
  none: 'none',
};

/** Why max_xattr is accepted but does not change duofs's limits. */
export const MAX_XATTR_NOTE =
  "accepted; duofs does not count a 9P session's open xattr fids: every fid counts against the session's fid limit, and pending Txattrcreate values against an 8 MiB budget, which bound the memory a guest can pin through xattr fids as max_xattr does in QEMU";

/** QEMU drivers duofs refuses by name, with the reason. */
const OTHER_DRIVERS: Record<string, string> = {
  proxy: 'the proxy driver (virtfs-proxy-helper) was removed from QEMU 8.1+ and has no duofs equivalent; use local',
  synth: "the synth driver is QEMU's in-memory test filesystem; duofs serves host directories only (use local)",
  handle: 'the handle driver was removed from QEMU 4.0; use local',
};

/** Options QEMU accepts that mean nothing to duofs. */
const REFUSED: Record<string, string> = {
  socket: 'belongs to the removed proxy driver',
  sock_fd: 'belongs to the removed proxy driver',
};

function isThrottling(name: string): boolean {
  return name.startsWith('throttling.');
}

/** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
function checkId(id: string): void {
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id)) {
    throw new CompatError(`id=${id}: QEMU ids start with a letter and hold only letters, digits, '-', '.' and '_'`, 'id');
  }
}

/**
 * Parses a -fsdev or -virtfs option string. A leading "-fsdev " or
 * "-virtfs " (as copied from a command line) is allowed.
 */
export function parseFsdevSpec(spec: string): FsdevParse {
  let s = spec.trim();
  let saidVirtfs = false;
  const prefix = /^--?(fsdev|virtfs)(\s+|=)/.exec(s);
  if (prefix) {
    saidVirtfs = prefix[1] === 'virtfs';
    s = s.slice(prefix[0].length);
  }
  if (s === '') throw new CompatError('empty -fsdev option string');

  const values = new Map<string, { value: string; flag: boolean }>();
  for (const o of parseQemuOpts(s, 'fsdriver')) values.set(o.name, { value: o.value, flag: o.flag });
  const get = (n: string): string | undefined => values.get(n)?.value;

  const driver = get('fsdriver');
  if (driver === undefined) throw new CompatError('no fsdriver: the string must start with "local," (or give fsdriver=local)', 'fsdriver');
  if (driver !== 'local') {
    const why = OTHER_DRIVERS[driver];
    throw new CompatError(
      why
        ? `fsdriver ${driver}: not supported by duofs: ${why}`
        : `fsdriver ${driver}: unknown driver (QEMU: fsdriver ${driver} not found); duofs supports local`,
      'fsdriver',
    );
  }

  for (const [name] of values) {
    if (isThrottling(name)) {
      throw new CompatError(
        `${name}: duofs has no I/O throttling; remove the throttling.* options (or throttle the guest's device in QEMU instead)`,
        name,
      );
    }
    if (name in REFUSED) throw new CompatError(`${name}: not supported by duofs (${REFUSED[name]})`, name);
    if (
      !['fsdriver', 'id', 'path', 'security_model', 'writeout', 'readonly', 'multidevs', 'fmode', 'dmode', 'mount_tag', 'max_xattr'].includes(name)
    ) {
      throw new CompatError(`${name}: not a -fsdev/-virtfs option QEMU knows (Invalid parameter '${name}')`, name);
    }
  }

  const notes: string[] = [];
  const options: Partial<ServeOptions> = {};

  const id = get('id');
  if (id !== undefined) checkId(id);
  const tag = get('mount_tag');
  const virtfs = saidVirtfs || tag !== undefined;
  if (saidVirtfs && tag === undefined) throw new CompatError('-virtfs needs mount_tag=TAG', 'mount_tag');
  if (tag !== undefined) {
    if (tag === '') throw new CompatError('mount_tag is empty', 'mount_tag');
    options.ninepTag = tag;
  }

  const path = get('path');
  if (path === undefined || path === '') throw new CompatError('path property not set (path=/host/dir)', 'path');
  options.sharedDir = path;

  const sm = get('security_model');
  if (sm === undefined) throw new CompatError('security_model property not set: passthrough, mapped-xattr, mapped-file or none', 'security_model');
  const model = MODELS[sm];
  if (!model)
    throw new CompatError(`security_model=${sm}: invalid; valid: passthrough, mapped-xattr (or mapped), mapped-file, none`, 'security_model');
  options.securityModel = model;

  for (const which of ['fmode', 'dmode'] as const) {
    const v = get(which);
    if (v === undefined) continue;
    if (model !== 'mapped-xattr' && model !== 'mapped-file') {
      throw new CompatError(`${which} is only valid for mapped security models (security_model=${sm})`, which);
    }
    const n = parseQemuNumber(which, v);
    const masked = n & 0o777;
    if (!/^0/.test(v.trim()) && n > 7) {
      notes.push(`${which}=${v} is decimal to QEMU (= 0${masked.toString(8)} after masking); write 0${v.trim()} for octal`);
    } else if (masked !== n) {
      notes.push(`${which}=${v}: QEMU keeps only the permission bits (0${masked.toString(8)})`);
    }
    options[which] = masked;
  }

  const ro = values.get('readonly');
  if (ro !== undefined) options.readonly = parseQemuBool('readonly', ro.value);

  let writeoutImmediate = false;
  const wo = get('writeout');
  if (wo !== undefined) {
    if (wo !== 'immediate') throw new CompatError(`writeout=${wo}: the only value is immediate`, 'writeout');
    writeoutImmediate = true;
    notes.push(
      'writeout=immediate: duofs does not start writeback after each write (it has no effect on data integrity in QEMU either: it is not a sync)',
    );
  }

  const mx = get('max_xattr');
  if (mx !== undefined) {
    const n = parseQemuNumber('max_xattr', mx);
    if (n > 0xffffffff) throw new CompatError(`max_xattr value '${mx}' too large (QEMU takes at most 4294967295)`, 'max_xattr');
    notes.push(`max_xattr=${n}: ${MAX_XATTR_NOTE}`);
  }

  const md = get('multidevs');
  if (md !== undefined) {
    switch (md) {
      case 'remap':
        break;
      case 'warn':
        notes.push(
          'multidevs=warn: duofs always remaps inode numbers of files on other host filesystems (multidevs=remap), so guests never see colliding inode numbers and nothing needs warning about',
        );
        break;
      case 'forbid':
        throw new CompatError(
          'multidevs=forbid: duofs cannot forbid access to host filesystems mounted inside the export; it always remaps their inode numbers (multidevs=remap). Remove the option, or unmount what the export should not show',
          'multidevs',
        );
      default:
        throw new CompatError(`multidevs=${md}: invalid; valid: remap, forbid, warn`, 'multidevs');
    }
  }

  return { options, id: virtfs ? (tag ?? id) : id, virtfs, writeoutImmediate, notes };
}

/** The serve options a -fsdev/-virtfs string stands for; throws CompatError on anything duofs cannot honour. */
export function parseFsdev(spec: string): Partial<ServeOptions> {
  return parseFsdevSpec(spec).options;
}
