// The config file of `duofs serve --config FILE`: many devices (one per
// guest or client) on one daemon, each rooted at a directory of an export.
//
// The format is TOML, read with smol-toml (a small, dependency-free,
// TOML 1.0 conformant parser that is actively kept). TOML rather than YAML
// because a config file an administrator writes by hand should mean one
// thing: TOML has no implicit typing (YAML 1.1 readers turn `no` into false
// and `0755` into 493 or 755 depending on the reader), no anchors or
// aliases (a hostile file cannot make a small document expand), duplicate
// keys are an error, and octal is spelt explicitly (`0o755`). diod's own
// config is Lua; virtiofsd has none; TOML is what systemd-adjacent tools
// (and Rust ones such as the vhost-user daemons) use.
//
// Everything is validated before anything is served; an error names the
// file and the key (`devices.guest1.dir`), and unknown keys are refused so
// that a typo ("read-only" for "readonly") cannot silently serve a
// writable tree.
import { readFileSync } from 'node:fs';
import { basename, isAbsolute, normalize } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { SECURITY_MODELS, type SecurityModelName } from '../../security/model.js';
import type { NinepPermissions } from '../../protocols/9p/session.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const DEVICE_TYPES = ['virtiofs', 'virtio-9p', '9p-unix', '9p-tcp'] as const;
export type DeviceType = (typeof DEVICE_TYPES)[number];

export interface ExportConfig {
  name: string;
  /** absolute host path of the export root */
  path: string;
  securityModel: SecurityModelName;
  readonly: boolean;
  /** mapped models: host modes of created files and directories */
  fmode?: number;
  dmode?: number;
}

export interface CreateSpec {
  uid: number;
  gid: number;
  mode: number;
}

export interface DeviceConfig {
  name: string;
  type: DeviceType;
  export: string;
  /** the device's root, relative to the export root ('.' = the export root); never leaves the export */
  dir: string;
  /** read-only for this device (the export's readonly also applies) */
  readonly: boolean;
  /** virtiofs, virtio-9p, 9p-unix: the unix socket path */
  socket?: string;
  /** 9p-tcp: HOST:PORT or PORT (loopback) */
  listen?: string;
  /** virtiofs and virtio-9p: the mount tag */
  tag?: string;
  /** virtiofs: request queues */
  queues?: number;
  /** 9P transports: who decides permissions in passthrough */
  permissions?: NinepPermissions;
  /** create `dir` when it is missing, with this owner and mode */
  create?: CreateSpec;
}

export interface DuofsConfig {
  /** the file it was read from */
  file: string;
  /** the control socket `duofs status` talks to */
  controlSocket: string;
  exports: Map<string, ExportConfig>;
  devices: Map<string, DeviceConfig>;
}

const TOP_KEYS = ['control-socket', 'exports', 'devices'];
const EXPORT_KEYS = ['path', 'security-model', 'readonly', 'fmode', 'dmode'];
const DEVICE_KEYS = ['type', 'export', 'dir', 'readonly', 'socket', 'listen', 'tag', 'queues', 'permissions', 'create'];
const CREATE_KEYS = ['uid', 'gid', 'mode'];
/** a name is a key of its table and appears in logs and status: keep it plain */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** virtio-fs tags live in a 36-byte config field; the 9p tag has a u16 length but QEMU caps it at 31 */
const MAX_TAG = { virtiofs: 36, 'virtio-9p': 31 } as const;
/** unix socket paths: sun_path is 108 bytes with its NUL */
const MAX_SUN_PATH = 107;
/** most devices one file may declare (each is a listener and a session) */
export const MAX_DEVICES = 4096;

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

class Reader {
  constructor(readonly file: string) {}

  fail(key: string, msg: string): never {
    throw new ConfigError(`${this.file}: ${key}: ${msg}`);
  }

  table(v: unknown, key: string): Table {
    if (!isTable(v)) this.fail(key, `expected a table, got ${kind(v)}`);
    return v;
  }

  keys(t: Table, key: string, allowed: readonly string[]): void {
    for (const k of Object.keys(t)) {
      if (!allowed.includes(k)) this.fail(key ? `${key}.${k}` : k, `unknown key (allowed here: ${allowed.join(', ')})`);
    }
  }

  string(t: Table, key: string, k: string, required: true): string;
  string(t: Table, key: string, k: string, required?: false): string | undefined;
  string(t: Table, key: string, k: string, required = false): string | undefined {
    const v = t[k];
    if (v === undefined) {
      if (required) this.fail(`${key}.${k}`, 'missing (required)');
      return undefined;
    }
    if (typeof v !== 'string') this.fail(`${key}.${k}`, `expected a string, got ${kind(v)}`);
    if (v.includes('\0')) this.fail(`${key}.${k}`, 'contains a NUL byte');
    return v;
  }

  bool(t: Table, key: string, k: string): boolean | undefined {
    const v = t[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') this.fail(`${key}.${k}`, `expected true or false, got ${kind(v)}`);
    return v;
  }

  int(t: Table, key: string, k: string, min: number, max: number): number | undefined {
    const v = t[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(`${key}.${k}`, `expected a whole number, got ${kind(v)}`);
    if (v < min || v > max) this.fail(`${key}.${k}`, `${v} is out of range (${min} to ${max})`);
    return v;
  }

  /** A mode: an integer (write it 0o755) or an octal string ("0755"). */
  mode(t: Table, key: string, k: string, max: number): number | undefined {
    const v = t[k];
    if (v === undefined) return undefined;
    if (typeof v === 'string') {
      if (!/^0?[0-7]{1,4}$/.test(v)) this.fail(`${key}.${k}`, `${JSON.stringify(v)} is not an octal mode such as "0755" or 0o755`);
      const m = parseInt(v, 8);
      if (m > max) this.fail(`${key}.${k}`, `${v} is out of range (at most 0${max.toString(8)})`);
      return m;
    }
    return this.int(t, key, k, 0, max);
  }

  absolutePath(t: Table, key: string, k: string, required: true): string;
  absolutePath(t: Table, key: string, k: string, required?: false): string | undefined;
  absolutePath(t: Table, key: string, k: string, required = false): string | undefined {
    const v = this.string(t, key, k, required as false);
    if (v === undefined) return undefined;
    if (!isAbsolute(v)) this.fail(`${key}.${k}`, `${JSON.stringify(v)} is not an absolute path`);
    return normalize(v);
  }
}

function kind(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (v === null) return 'null';
  if (isTable(v)) return 'a table';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/**
 * The device's directory inside its export, checked without the file
 * system: relative, no `..`, nothing a guest name could not be. Symlinks
 * on the way are checked where it is opened (src/config/daemon.ts).
 */
function checkDir(r: Reader, key: string, v: string): string {
  if (v === '' || v === '.') return '.';
  if (isAbsolute(v)) r.fail(key, `${JSON.stringify(v)}: give a path relative to the export root (an absolute path would leave the export)`);
  const parts = v.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) r.fail(key, `${JSON.stringify(v)}: ".." would leave the export`);
  for (const p of parts) if (Buffer.byteLength(p) > 255) r.fail(key, `${JSON.stringify(v)}: a component is longer than 255 bytes`);
  return parts.length ? parts.join('/') : '.';
}

function socketPath(r: Reader, t: Table, key: string): string {
  const p = r.absolutePath(t, key, 'socket', true);
  if (Buffer.byteLength(p) > MAX_SUN_PATH) r.fail(`${key}.socket`, `longer than ${MAX_SUN_PATH} bytes (a unix socket address cannot hold it)`);
  return p;
}

/** The default control socket: /run/duofs/<file name without extension>.ctl */
export function defaultControlSocket(file: string): string {
  const stem = basename(file).replace(/\.[^.]*$/, '') || 'duofs';
  return `/run/duofs/${stem}.ctl`;
}

/** Parses and validates a config text; `file` names it in errors. */
export function parseConfig(text: string, file: string): DuofsConfig {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (e) {
    if (e instanceof TomlError) throw new ConfigError(`${file}: not valid TOML: ${e.message.split('\n')[0]} (line ${e.line}, column ${e.column})`);
    throw e;
  }
  const r = new Reader(file);
  r.keys(doc, '', TOP_KEYS);
  const controlSocket = r.absolutePath(doc, '', 'control-socket') ?? defaultControlSocket(file);
  if (Buffer.byteLength(controlSocket) > MAX_SUN_PATH) r.fail('control-socket', `longer than ${MAX_SUN_PATH} bytes`);

  const exports = new Map<string, ExportConfig>();
  const exportsTable = r.table(doc.exports ?? r.fail('exports', 'missing: declare at least one [exports.NAME] with a path'), 'exports');
  for (const [name, v] of Object.entries(exportsTable)) {
    const key = `exports.${name}`;
    if (!NAME_RE.test(name)) r.fail(key, 'a name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit');
    const t = r.table(v, key);
    r.keys(t, key, EXPORT_KEYS);
    const model = r.string(t, key, 'security-model') ?? 'passthrough';
    if (!(SECURITY_MODELS as readonly string[]).includes(model))
      r.fail(`${key}.security-model`, `${JSON.stringify(model)} is not one of ${SECURITY_MODELS.join(', ')}`);
    const securityModel = model as SecurityModelName;
    const mapped = securityModel === 'mapped-xattr' || securityModel === 'mapped-file';
    for (const k of ['fmode', 'dmode']) if (t[k] !== undefined && !mapped) r.fail(`${key}.${k}`, 'only applies to the mapped security models');
    exports.set(name, {
      name,
      path: r.absolutePath(t, key, 'path', true),
      securityModel,
      readonly: r.bool(t, key, 'readonly') ?? false,
      fmode: r.mode(t, key, 'fmode', 0o777),
      dmode: r.mode(t, key, 'dmode', 0o777),
    });
  }
  if (!exports.size) r.fail('exports', 'declare at least one [exports.NAME] with a path');

  const devices = new Map<string, DeviceConfig>();
  const devicesTable = r.table(doc.devices ?? r.fail('devices', 'missing: declare at least one [devices.NAME]'), 'devices');
  const names = Object.keys(devicesTable);
  if (names.length > MAX_DEVICES) r.fail('devices', `${names.length} devices; at most ${MAX_DEVICES}`);
  const sockets = new Map<string, string>();
  const listens = new Map<string, string>();
  for (const [name, v] of Object.entries(devicesTable)) {
    const key = `devices.${name}`;
    if (!NAME_RE.test(name)) r.fail(key, 'a name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit');
    const t = r.table(v, key);
    r.keys(t, key, DEVICE_KEYS);
    const type = r.string(t, key, 'type', true);
    if (!(DEVICE_TYPES as readonly string[]).includes(type))
      r.fail(`${key}.type`, `${JSON.stringify(type)} is not one of ${DEVICE_TYPES.join(', ')}`);
    const dt = type as DeviceType;
    const exp = r.string(t, key, 'export', true);
    if (!exports.has(exp)) r.fail(`${key}.export`, `no export named ${JSON.stringify(exp)} (declared: ${[...exports.keys()].join(', ')})`);
    const dev: DeviceConfig = {
      name,
      type: dt,
      export: exp,
      dir: checkDir(r, `${key}.dir`, r.string(t, key, 'dir') ?? '.'),
      readonly: r.bool(t, key, 'readonly') ?? false,
    };
    const only = (k: string, types: readonly DeviceType[]): void => {
      if (t[k] !== undefined && !types.includes(dt)) r.fail(`${key}.${k}`, `does not apply to a ${dt} device (only to ${types.join(', ')})`);
    };
    only('socket', ['virtiofs', 'virtio-9p', '9p-unix']);
    only('listen', ['9p-tcp']);
    only('tag', ['virtiofs', 'virtio-9p']);
    only('queues', ['virtiofs']);
    only('permissions', ['virtio-9p', '9p-unix', '9p-tcp']);
    if (dt === '9p-tcp') {
      const l = r.string(t, key, 'listen', true);
      if (!/^(?:(?:\[[^\]]+\]|[^:[\]]+):)?\d{1,5}$/.test(l) || Number(l.replace(/^.*:/, '')) > 65535)
        r.fail(`${key}.listen`, `${JSON.stringify(l)}: expected HOST:PORT or PORT`);
      const other = listens.get(l);
      if (other && !l.endsWith(':0') && l !== '0') r.fail(`${key}.listen`, `${l} is devices.${other}'s address too`);
      listens.set(l, name);
      dev.listen = l;
    } else {
      dev.socket = socketPath(r, t, key);
      const other = sockets.get(dev.socket);
      if (other) r.fail(`${key}.socket`, `${dev.socket} is devices.${other}'s socket too`);
      if (dev.socket === controlSocket) r.fail(`${key}.socket`, `${dev.socket} is the control socket`);
      sockets.set(dev.socket, name);
    }
    if (dt === 'virtiofs' || dt === 'virtio-9p') {
      const tag = r.string(t, key, 'tag') ?? (dt === 'virtiofs' ? 'duofs' : 'duofs9p');
      if (!tag || Buffer.byteLength(tag) > MAX_TAG[dt]) r.fail(`${key}.tag`, `1 to ${MAX_TAG[dt]} bytes`);
      dev.tag = tag;
    }
    if (dt === 'virtiofs') dev.queues = r.int(t, key, 'queues', 1, 64) ?? 1;
    const perm = r.string(t, key, 'permissions') as NinepPermissions | undefined;
    if (perm !== undefined) {
      if (perm !== 'guest' && perm !== 'host') r.fail(`${key}.permissions`, `${JSON.stringify(perm)} is not guest or host`);
      dev.permissions = perm;
    }
    if (t.create !== undefined) {
      const ck = `${key}.create`;
      const c = r.table(t.create, ck);
      r.keys(c, ck, CREATE_KEYS);
      if (dev.dir === '.') r.fail(ck, 'the export root exists already; create applies to a dir below it');
      dev.create = {
        uid: r.int(c, ck, 'uid', 0, 0xfffffffe) ?? r.fail(`${ck}.uid`, 'missing (required)'),
        gid: r.int(c, ck, 'gid', 0, 0xfffffffe) ?? r.fail(`${ck}.gid`, 'missing (required)'),
        mode: r.mode(c, ck, 'mode', 0o7777) ?? 0o700,
      };
    }
    devices.set(name, dev);
  }
  if (!devices.size) r.fail('devices', 'declare at least one [devices.NAME]');
  return { file, controlSocket, exports, devices };
}

/** Reads and validates the file at `file`. */
export function loadConfig(file: string): DuofsConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read the config file (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseConfig(text, file);
}

/**
 * What identifies a device across reloads: its own settings and its
 * export's. A device whose identity is unchanged keeps running untouched;
 * any change replaces it.
 */
export function deviceIdentity(cfg: DuofsConfig, d: DeviceConfig): string {
  return JSON.stringify({ d, e: cfg.exports.get(d.export) });
}
