// The config file of `duofs serve --config`: what it accepts, and every
// mistake refused with the key named.
import { describe, expect, test } from '@jest/globals';
import { ConfigError, defaultControlSocket, deviceIdentity, parseConfig } from '../../src/config/config.js';

const base = `
[exports.shared]
path = "/srv/class/shared"
readonly = true

[exports.homes]
path = "/srv/class/homes"
security-model = "mapped-xattr"
fmode = "0640"
dmode = 0o750

[devices.shared-1]
type = "virtiofs"
socket = "/run/duofs/g1-shared.sock"
export = "shared"
tag = "shared"

[devices.home-1]
type = "virtio-9p"
socket = "/run/duofs/g1-home.sock"
export = "homes"
dir = "g1/"
create = { uid = 1001, gid = 1001, mode = "0700" }

[devices.lab]
type = "9p-tcp"
listen = "0.0.0.0:5640"
export = "homes"
readonly = true
permissions = "host"
`;

const parse = (text: string) => parseConfig(text, '/etc/duofs/class.toml');
const fails = (text: string) => {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('accepted');
};

describe('a valid file', () => {
  test('is read into exports and devices with their defaults', () => {
    const c = parse(base);
    expect(c.controlSocket).toBe('/run/duofs/class.ctl');
    expect(c.exports.get('homes')).toEqual({
      name: 'homes',
      path: '/srv/class/homes',
      securityModel: 'mapped-xattr',
      readonly: false,
      fmode: 0o640,
      dmode: 0o750,
    });
    expect(c.exports.get('shared')).toMatchObject({ securityModel: 'passthrough', readonly: true });
    expect(c.devices.get('shared-1')).toEqual({
      name: 'shared-1',
      type: 'virtiofs',
      export: 'shared',
      dir: '.',
      readonly: false,
      socket: '/run/duofs/g1-shared.sock',
      tag: 'shared',
      queues: 1,
    });
    expect(c.devices.get('home-1')).toMatchObject({ dir: 'g1', tag: 'duofs9p', create: { uid: 1001, gid: 1001, mode: 0o700 } });
    expect(c.devices.get('lab')).toMatchObject({ listen: '0.0.0.0:5640', readonly: true, permissions: 'host' });
  });

  test('control-socket from the file, else /run/duofs/<name>.ctl', () => {
    expect(parse(`control-socket = "/run/x/y.ctl"\n${base}`).controlSocket).toBe('/run/x/y.ctl');
    expect(defaultControlSocket('/etc/duofs/lab.conf')).toBe('/run/duofs/lab.ctl');
  });

  test("a device's identity changes with its own settings and its export's, not with others'", () => {
    const a = parse(base);
    const b = parse(base.replace('path = "/srv/class/shared"', 'path = "/srv/class/shared2"'));
    const c = parse(base.replace('tag = "shared"', 'tag = "other"'));
    const id = (cfg: ReturnType<typeof parse>, n: string) => deviceIdentity(cfg, cfg.devices.get(n)!);
    expect(id(b, 'home-1')).toBe(id(a, 'home-1'));
    expect(id(b, 'shared-1')).not.toBe(id(a, 'shared-1'));
    expect(id(c, 'shared-1')).not.toBe(id(a, 'shared-1'));
  });
});

describe('mistakes, refused with the key named', () => {
  test.each([
    ['an unknown top-level key', `sockets = 1\n${base}`, /class\.toml: sockets: unknown key/],
    [
      'an unknown export key (a typo)',
      base.replace('readonly = true\n\n[exports.homes]', 'read-only = true\n\n[exports.homes]'),
      /exports\.shared\.read-only: unknown key/,
    ],
    ['an unknown device key', base.replace('tag = "shared"', 'tga = "shared"'), /devices\.shared-1\.tga: unknown key/],
    ['an unknown create key', base.replace('mode = "0700" }', 'mode = "0700", owner = 1 }'), /devices\.home-1\.create\.owner: unknown key/],
    ['no exports', '[devices.x]\ntype = "9p-tcp"\nlisten = "1"\nexport = "e"\n', /exports: missing/],
    ['no devices', '[exports.e]\npath = "/srv"\n', /devices: missing/],
    ['an export without a path', base.replace('path = "/srv/class/shared"\n', ''), /exports\.shared\.path: missing/],
    ['a relative export path', base.replace('"/srv/class/shared"', '"srv/shared"'), /exports\.shared\.path: "srv\/shared" is not an absolute path/],
    ['a bad security model', base.replace('"mapped-xattr"', '"mapped-acl"'), /exports\.homes\.security-model: "mapped-acl" is not one of/],
    [
      'fmode on passthrough',
      base.replace('readonly = true\n\n[exports.homes]', 'fmode = 0o644\n\n[exports.homes]'),
      /exports\.shared\.fmode: only applies to the mapped/,
    ],
    ['a bad octal mode', base.replace('fmode = "0640"', 'fmode = "0968"'), /exports\.homes\.fmode: "0968" is not an octal mode/],
    [
      'readonly as a string',
      base.replace('readonly = true\n\n[exports.homes]', 'readonly = "yes"\n\n[exports.homes]'),
      /exports\.shared\.readonly: expected true or false, got string "yes"/,
    ],
    [
      'an unknown device type',
      base.replace('type = "virtiofs"', 'type = "nfs"'),
      /devices\.shared-1\.type: "nfs" is not one of virtiofs, virtio-9p, 9p-unix, 9p-tcp/,
    ],
    ['a device without a type', base.replace('type = "virtiofs"\n', ''), /devices\.shared-1\.type: missing/],
    [
      'an unknown export',
      base.replace('export = "shared"', 'export = "sahred"'),
      /devices\.shared-1\.export: no export named "sahred" \(declared: shared, homes\)/,
    ],
    ['a dir with ..', base.replace('dir = "g1/"', 'dir = "g1/../../etc"'), /devices\.home-1\.dir: "g1\/..\/..\/etc": ".." would leave the export/],
    ['an absolute dir', base.replace('dir = "g1/"', 'dir = "/etc"'), /devices\.home-1\.dir: "\/etc": give a path relative to the export root/],
    ['a NUL in a dir', base.replace('dir = "g1/"', 'dir = "g1\\u0000x"'), /devices\.home-1\.dir: contains a NUL byte/],
    ['create on the export root', base.replace('dir = "g1/"', 'dir = "."'), /devices\.home-1\.create: the export root exists already/],
    ['create without a uid', base.replace('uid = 1001, ', ''), /devices\.home-1\.create\.uid: missing/],
    ['a negative uid', base.replace('uid = 1001', 'uid = -1'), /devices\.home-1\.create\.uid: -1 is out of range/],
    ['a mode past 07777', base.replace('mode = "0700"', 'mode = 0o17777'), /devices\.home-1\.create\.mode: 8191 is out of range/],
    [
      'a socket for a TCP device',
      base.replace('listen = "0.0.0.0:5640"', 'listen = "0.0.0.0:5640"\nsocket = "/x"'),
      /devices\.lab\.socket: does not apply to a 9p-tcp device/,
    ],
    [
      'a listen address for a socket device',
      base.replace('tag = "shared"', 'tag = "shared"\nlisten = "1"'),
      /devices\.shared-1\.listen: does not apply to a virtiofs device/,
    ],
    ['a tag for a 9P listener', base.replace('permissions = "host"', 'tag = "x"'), /devices\.lab\.tag: does not apply to a 9p-tcp device/],
    ['a bad TCP address', base.replace('"0.0.0.0:5640"', '"0.0.0.0:99999"'), /devices\.lab\.listen: "0\.0\.0\.0:99999": expected HOST:PORT or PORT/],
    ['a virtio-fs tag past 36 bytes', base.replace('tag = "shared"', `tag = "${'t'.repeat(37)}"`), /devices\.shared-1\.tag: 1 to 36 bytes/],
    [
      'two devices on one socket',
      base.replace('"/run/duofs/g1-home.sock"', '"/run/duofs/g1-shared.sock"'),
      /devices\.home-1\.socket: \/run\/duofs\/g1-shared\.sock is devices\.shared-1's socket too/,
    ],
    [
      'a socket path past sun_path',
      base.replace('"/run/duofs/g1-home.sock"', `"/${'s'.repeat(120)}"`),
      /devices\.home-1\.socket: longer than 107 bytes/,
    ],
    ['a device on the control socket', `control-socket = "/run/duofs/g1-home.sock"\n${base}`, /devices\.home-1\.socket: .* is the control socket/],
    [
      'a bad permissions word',
      base.replace('permissions = "host"', 'permissions = "root"'),
      /devices\.lab\.permissions: "root" is not guest or host/,
    ],
    ['queues out of range', base.replace('tag = "shared"', 'tag = "shared"\nqueues = 0'), /devices\.shared-1\.queues: 0 is out of range/],
    ['a device name with a slash-like character', base.replace('[devices.lab]', '[devices."../lab"]'), /devices\.\.\.\/lab: a name is 1 to 64/],
    ['a device that is not a table', '[exports.e]\npath = "/srv"\n[devices]\nx = 1\n', /devices\.x: expected a table, got number 1/],
    ['devices as an array of tables', '[exports.e]\npath = "/srv"\n[[devices]]\ntype = "9p-tcp"\n', /devices: expected a table, got an array/],
  ])('%s', (_what, text, message) => {
    expect(fails(text)).toMatch(message);
  });

  test('a file that is not TOML names the line', () => {
    expect(fails('[exports.e]\npath = /srv\n')).toMatch(/class\.toml: not valid TOML: .*\(line 2, column \d+\)/);
  });

  test('a key given twice is refused (TOML itself)', () => {
    expect(fails(`${base}\n[devices.lab]\ntype = "9p-tcp"\n`)).toMatch(/not valid TOML/);
  });
});
