// virtiofsd's command line as duofs-virtiofsd reads it.
import { parseVirtiofsdArgs, NO_EFFECT, REFUSED } from '../../compat/virtiofsd/args.js';
import { capabilitiesJson, CAPABILITY_FEATURES } from '../../compat/virtiofsd/capabilities.js';
import { CompatError } from '../../compat/errors.js';

const base = ['--socket-path', '/run/vfs.sock', '--shared-dir', '/srv/x'];

function refused(argv: string[]): CompatError {
  try {
    parseVirtiofsdArgs(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(CompatError);
    expect((e as Error).message).not.toContain('\n');
    return e as CompatError;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}

test('the plain form: socket, export, defaults as virtiofsd 1.14 has them', () => {
  const r = parseVirtiofsdArgs(base);
  expect(r.options).toEqual({
    sharedDir: '/srv/x',
    virtiofsSocket: '/run/vfs.sock',
    securityModel: 'passthrough',
    numRequestQueues: 1,
    fuse: { announceSubmounts: true, posixAcl: 'never' },
  });
  expect(r.syslog).toBe(false);
  expect(r.logFormat).toBe('text');
  expect(r.printCapabilities).toBe(false);
});

test('--opt=value and --opt value are the same', () => {
  const a = parseVirtiofsdArgs(['--socket-path=/s', '--shared-dir=/d', '--cache=never', '--log-level=debug', '--tag=t']);
  const b = parseVirtiofsdArgs(['--socket-path', '/s', '--shared-dir', '/d', '--cache', 'never', '--log-level', 'debug', '--tag', 't']);
  expect(a.options).toEqual(b.options);
  expect(a.options).toMatchObject({ sharedDir: '/d', tag: 't', logLevel: 'debug', fuse: { cache: 'never' } });
});

test('a repeated option keeps its last value (clap args_override_self)', () => {
  expect(parseVirtiofsdArgs([...base, '--cache', 'never', '--cache', 'always']).options.fuse?.cache).toBe('always');
});

test('FUSE switches', () => {
  const r = parseVirtiofsdArgs([...base, '--xattr', '--writeback', '--readonly', '--no-announce-submounts', '--log-level', 'off']);
  expect(r.options).toMatchObject({ readonly: true, logLevel: 'silent', fuse: { xattr: true, writeback: true, announceSubmounts: false } });
  expect(parseVirtiofsdArgs([...base, '--no-announce-submounts', '--announce-submounts']).options.fuse?.announceSubmounts).toBe(true);
});

test('--fd instead of a socket path; they conflict', () => {
  expect(parseVirtiofsdArgs(['--fd=7', '--shared-dir', '/d']).options).toMatchObject({ virtiofsFd: 7, sharedDir: '/d' });
  expect(parseVirtiofsdArgs(['--fd=7', '--shared-dir', '/d']).options.virtiofsSocket).toBeUndefined();
  expect(refused(['--fd=7', '--socket-path', '/s', '--shared-dir', '/d']).message).toMatch(/--fd cannot be used with --socket-path/);
  expect(refused(['--fd=x', '--shared-dir', '/d']).option).toBe('--fd');
});

test('the deprecated --socket still works', () => {
  const r = parseVirtiofsdArgs(['--socket', '/s', '--shared-dir', '/d']);
  expect(r.options.virtiofsSocket).toBe('/s');
  expect(r.notes.join()).toMatch(/deprecated/);
});

test('required options', () => {
  expect(refused(['--shared-dir', '/d']).message).toMatch(/--socket-path PATH or --fd N/);
  expect(refused(['--socket-path', '/s']).message).toMatch(/--shared-dir is required/);
  expect(refused(['--fd=3', '-o', 'cache=always']).message).toBe('missing "--shared-dir" or "-o source" option');
});

test('--tag is 1 to 36 bytes', () => {
  expect(parseVirtiofsdArgs([...base, '--tag', 'x'.repeat(36)]).options.tag).toHaveLength(36);
  expect(refused([...base, '--tag', 'x'.repeat(37)]).option).toBe('--tag');
  expect(refused([...base, '--tag=']).option).toBe('--tag');
});

test('legacy -o: source with escaped commas, cache=none is never, xattr, locks', () => {
  const r = parseVirtiofsdArgs(['--fd=3', '-o', 'source=/srv/a,,b,cache=none,xattr,flock,posix_lock,sandbox=chroot', '-o', 'loglevel=warn']);
  expect(r.options).toMatchObject({
    sharedDir: '/srv/a,b',
    logLevel: 'warn',
    fuse: { cache: 'never', xattr: true, flockLocks: true, posixLocks: true },
  });
  expect(parseVirtiofsdArgs(['--fd=3', '-osource=/d,no_xattr,no_flock,no_posix_lock']).options.fuse).toMatchObject({
    xattr: false,
    flockLocks: false,
    posixLocks: false,
  });
  expect(parseVirtiofsdArgs(['--fd=3', '-o=source=/d']).options.sharedDir).toBe('/d');
  expect(refused(['--fd=3', '-o', 'source=/d,cache=never']).option).toBe('-o cache');
  expect(refused(['--fd=3', '-o', 'source=/d,norace']).message).toMatch(/-o norace: not a virtiofsd -o option/);
  expect(refused(['--fd=3', '-o', 'source=/d,vhost_user_socket=/s']).option).toBe('-o vhost_user_socket');
  expect(refused(['--fd=3', '-o', 'source=/d,xattrmap=:x']).message).toMatch(/^invalid value ":x" for -o xattrmap: rule 1: incomplete rule/);
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,security_label']).options.fuse).toMatchObject({ securityLabel: 'always', xattr: true });
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,allow_direct_io']).options.fuse?.allowDirectIo).toBe(true);
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,allow_direct_io,no_allow_direct_io']).options.fuse?.allowDirectIo).toBe(false);
  expect(parseVirtiofsdArgs(['--fd=3', '--allow-direct-io', '-o', 'source=/d']).options.fuse?.allowDirectIo).toBe(true);
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d']).options.fuse?.allowDirectIo).toBeFalsy();
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,modcaps=+sys_admin']).modcaps).toBe('+sys_admin');
  expect(refused(['--fd=3', '-o', 'source=/d,modcaps=+bogus']).option).toBe('-o modcaps');
  const quiet = parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,no_allow_direct_io,no_security_label,no_killpriv_v2,killpriv_v2']);
  expect(quiet.notes.map((n) => n.split(':')[0])).toEqual(['-o no_security_label', '-o no_killpriv_v2', '-o killpriv_v2']);
});

test('legacy -o forms of the implemented options: posix_acl, xattrmap=, no_readdirplus, readdirplus', () => {
  const r = parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,posix_acl,xattrmap=:ok:all:::,no_readdirplus']);
  expect(r.options.fuse).toMatchObject({ posixAcl: 'always', xattr: true, readdirplus: false });
  expect(r.options.fuse?.xattrMap?.toJSON()).toBe(':ok:all:::');
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,no_readdirplus,readdirplus']).options.fuse?.readdirplus).toBe(true);
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,posix_acl,no_posix_acl']).options.fuse).toMatchObject({ posixAcl: 'never' });
  // QEMU-style escaping lets a rule carry a comma
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/d,xattrmap=:ok:all:a,,b::']).options.fuse?.xattrMap?.toJSON()).toBe(':ok:all:a,b::');
});

test('-d is debug, -f is accepted and noted', () => {
  const r = parseVirtiofsdArgs([...base, '-d', '-f']);
  expect(r.options.logLevel).toBe('debug');
  expect(r.notes.some((n) => n.startsWith('-f'))).toBe(true);
  expect(parseVirtiofsdArgs([...base, '-df']).options.logLevel).toBe('debug');
});

test('options accepted without effect are noted, with a reason from the table', () => {
  const r = parseVirtiofsdArgs([
    ...base,
    '--inode-file-handles=never',
    '--inode-file-handles=prefer',
    '--no-killpriv-v2',
    '--killpriv-v2',
    '--preserve-noatime',
    '--security-label=never',
  ]);
  expect(r.notes).toHaveLength(5); // once each, though --inode-file-handles came twice: with its last value
  expect(r.notes[0]).toMatch(/^--inode-file-handles=prefer: /);
  for (const n of r.notes) expect(n).toMatch(/accepted, no effect in duofs: \S/);
});

test('--sandbox and --seccomp mean what they mean to virtiofsd (default namespace and kill); -o sandbox= too', () => {
  expect(parseVirtiofsdArgs(base)).toMatchObject({ sandbox: 'namespace', seccomp: 'kill' });
  expect(parseVirtiofsdArgs([...base, '--sandbox', 'none', '--seccomp=kill', '--seccomp=log'])).toMatchObject({
    sandbox: 'none',
    seccomp: 'log',
    notes: [],
  });
  expect(parseVirtiofsdArgs([...base, '--sandbox=chroot', '--seccomp', 'trap'])).toMatchObject({ sandbox: 'chroot', seccomp: 'trap' });
  expect(parseVirtiofsdArgs(['--fd=3', '-o', 'source=/srv/a,sandbox=chroot'])).toMatchObject({ sandbox: 'chroot' });
  expect(refused([...base, '--sandbox', 'jail']).option).toBe('--sandbox');
  expect(refused([...base, '--seccomp', 'maybe']).option).toBe('--seccomp');
  expect(parseVirtiofsdArgs([...base, '--modcaps=+sys_admin:-mknod']).modcaps).toBe('+sys_admin:-mknod');
  expect(refused([...base, '--modcaps', '+nonsense']).message).toMatch(/NONSENSE|nonsense/);
});

test('--thread-pool-size sizes the pool of the threads engine; 0 (virtiofsd: no pool) keeps the default, noted', () => {
  expect(parseVirtiofsdArgs([...base, '--thread-pool-size=64', '--thread-pool-size=8']).options.threadPoolSize).toBe(8);
  expect(parseVirtiofsdArgs([...base, '--thread-pool-size', '1']).options.threadPoolSize).toBe(1);
  const zero = parseVirtiofsdArgs([...base, '--thread-pool-size=0']);
  expect(zero.options.threadPoolSize).toBeUndefined();
  expect(zero.notes).toEqual([expect.stringMatching(/^--thread-pool-size=0: duofs still runs blocking I\/O off its event loop/)]);
  const huge = parseVirtiofsdArgs([...base, '--thread-pool-size=5000']);
  expect(huge.options.threadPoolSize).toBe(1024);
  expect(huge.notes[0]).toMatch(/at most 1024/);
  expect(refused([...base, '--thread-pool-size=-1']).option).toBe('--thread-pool-size');
});

test.each([['--migration-mode=file-handles'], ['--migration-verify-handles'], ['--inode-file-handles=mandatory']])(
  '%s is refused by name',
  (...opt) => {
    const e = refused([...base, ...opt]);
    expect(e.message).toMatch(/not supported by duofs: \S/);
    expect(e.message.startsWith(opt[0]!.split('=')[0]!)).toBe(true);
  },
);

test('--security-label as virtiofsd 1.14: never (default), auto, always (bare); it implies --xattr', () => {
  expect(parseVirtiofsdArgs(base).options.fuse?.securityLabel).toBeUndefined();
  expect(parseVirtiofsdArgs([...base, '--security-label']).options.fuse).toMatchObject({ securityLabel: 'always', xattr: true });
  expect(parseVirtiofsdArgs([...base, '--security-label=auto']).options.fuse).toMatchObject({ securityLabel: 'auto', xattr: true });
  const never = parseVirtiofsdArgs([...base, '--security-label=never']);
  expect(never.options.fuse?.securityLabel).toBeUndefined();
  expect(never.notes).toEqual([expect.stringMatching(/^--security-label=never: accepted, no effect in duofs: the default/)]);
  expect(refused([...base, '--security-label=sometimes']).message).toMatch(/^--security-label=sometimes: invalid \(never, auto, always\)/);
});

test('--migration-* as virtiofsd 1.14: find-paths, on-error abort|guest-error, confirm-paths accepted; file handles refused', () => {
  expect(parseVirtiofsdArgs(base).options.fuse?.migrationOnError).toBeUndefined();
  expect(parseVirtiofsdArgs([...base, '--migration-on-error', 'guest-error']).options.fuse?.migrationOnError).toBe('guest-error');
  expect(parseVirtiofsdArgs([...base, '--migration-on-error=abort']).options.fuse?.migrationOnError).toBe('abort');
  const a = parseVirtiofsdArgs([...base, '--migration-mode', 'find-paths', '--migration-confirm-paths']);
  expect(a.notes).toEqual([
    expect.stringMatching(/^--migration-mode=find-paths: accepted, no effect in duofs: the default/),
    expect.stringMatching(/^--migration-confirm-paths: accepted, no effect in duofs: duofs finds the paths when the device state is saved/),
  ]);
  expect(refused([...base, '--migration-on-error', 'retry']).message).toMatch(/^--migration-on-error retry: invalid \(abort, guest-error\)/);
  expect(refused([...base, '--migration-mode', 'magic']).message).toMatch(/^--migration-mode magic: invalid/);
  expect(refused([...base, '--migration-mode', 'file-handles']).message).toMatch(
    /^--migration-mode=file-handles: not supported by duofs: duofs migrates inodes by path/,
  );
});

test("--uid-map/--gid-map: libvirt's session maps, repeatable, in order, any non-alphanumeric delimiter (virtiofsd 1.14)", () => {
  const r = parseVirtiofsdArgs([
    '--fd=3',
    '-o',
    'source=/srv/x,xattr',
    '--uid-map=:0:1000:1:',
    '--uid-map=:1:100000:65536:',
    '--gid-map=:0:1000:1:',
    '--gid-map',
    ':1:100000:65536:',
  ]);
  expect(r.usernsMaps).toEqual({
    uid: [
      { inside: 0, outside: 1000, count: 1 },
      { inside: 1, outside: 100000, count: 65536 },
    ],
    gid: [
      { inside: 0, outside: 1000, count: 1 },
      { inside: 1, outside: 100000, count: 65536 },
    ],
  });
  expect(r.notes).toEqual([]);
  expect(parseVirtiofsdArgs(base).usernsMaps).toEqual({ uid: [], gid: [] });
  // accepted by virtiofsd too (checked against its binary): other delimiters, a leading +, u32's maximum
  for (const [v, want] of [
    ['/0/1000/1/', [0, 1000, 1]],
    ['_5_6_7_', [5, 6, 7]],
    ['×0×1×2×', [0, 1, 2]],
    [':0:+5:1:', [0, 5, 1]],
    [':4294967295:0:1:', [4294967295, 0, 1]],
  ] as const) {
    const m = parseVirtiofsdArgs([...base, `--uid-map=${v}`]).usernsMaps.uid[0]!;
    expect([v, m.inside, m.outside, m.count]).toEqual([v, ...want]);
  }
});

test.each([
  // [value, virtiofsd 1.14's message for it (read from its binary)]
  [':0:1000', 'A delimiter has been found that does not match the delimiter the map started with'],
  ['', 'The map is empty or incorrect number of values are provided'],
  [':', 'A delimiter has been found that does not match the delimiter the map started with'],
  ['::', 'The map is empty or incorrect number of values are provided'],
  ['0:1000:1:', 'A delimiter has been found that does not match the delimiter the map started with'],
  [':0:1000:1', 'A delimiter has been found that does not match the delimiter the map started with'],
  ['a0a1a2a', 'A delimiter has been found that does not match the delimiter the map started with'],
  ['é0é1é1é', 'A delimiter has been found that does not match the delimiter the map started with'],
  [':0:1000:1:2:', 'The map is empty or incorrect number of values are provided'],
  [' :0:1:1: ', 'The map is empty or incorrect number of values are provided'],
  [':0:x:1:', 'invalid digit found in string'],
  [':0:-1:1:', 'invalid digit found in string'],
  [':0:0x1:1:', 'invalid digit found in string'],
  [':0:+:1:', 'invalid digit found in string'],
  [':0::1:', 'cannot parse integer from empty string'],
  [':0:99999999999:1:', 'number too large to fit in target type'],
  [':4294967296:0:1:', 'number too large to fit in target type'],
])('--uid-map=%j is refused as virtiofsd refuses it: %s', (v, why) => {
  const e = refused([...base, `--uid-map=${v}`]);
  expect(e.message).toBe(`invalid value '${v}' for '--uid-map <UID_MAP>': ${why}`);
  expect(e.option).toBe('--uid-map');
  expect(refused([...base, '--gid-map', v]).message).toBe(`invalid value '${v}' for '--gid-map <GID_MAP>': ${why}`);
});

test("--uid-map and --gid-map without a value: clap's words", () => {
  expect(refused([...base, '--uid-map']).message).toBe("a value is required for '--uid-map <UID_MAP>' but none was supplied");
  expect(refused([...base, '--gid-map']).message).toBe("a value is required for '--gid-map <GID_MAP>' but none was supplied");
});

test('--socket-group is carried for the socket duofs creates, and conflicts with --fd', () => {
  expect(parseVirtiofsdArgs([...base, '--socket-group', 'kvm']).socketGroup).toBe('kvm');
  expect(refused(['--fd=3', '--shared-dir', '/d', '--socket-group', 'kvm']).message).toMatch(/cannot be used with --fd/);
  expect(refused([...base, '--socket-group=']).option).toBe('--socket-group');
});

test('--syslog, --allow-mmap, --no-readdirplus, --log-format', () => {
  const r = parseVirtiofsdArgs([...base, '--syslog', '--allow-mmap', '--no-readdirplus', '--log-format', 'json']);
  expect(r).toMatchObject({ syslog: true, logFormat: 'json', options: { fuse: { allowMmap: true, readdirplus: false } } });
  expect(refused([...base, '--log-format', 'xml']).option).toBe('--log-format');
});

test('--posix-acl modes: bare is always, implies --xattr unless never; conflicts with id translation', () => {
  expect(parseVirtiofsdArgs([...base, '--posix-acl']).options.fuse).toMatchObject({ posixAcl: 'always', xattr: true });
  expect(parseVirtiofsdArgs([...base, '--posix-acl=auto']).options.fuse).toMatchObject({ posixAcl: 'auto', xattr: true });
  expect(parseVirtiofsdArgs([...base, '--posix-acl=never']).options.fuse).toEqual({ announceSubmounts: true, posixAcl: 'never' });
  expect(refused([...base, '--posix-acl=sometimes']).option).toBe('--posix-acl');
  // virtiofsd checks this at start-up (exit 1), not in clap
  expect(() => parseVirtiofsdArgs([...base, '--posix-acl', '--translate-uid', 'map:0:1:1'])).toThrow(
    /Cannot use --translate-uid or --translate-gid with --posix-acl=always/,
  );
  expect(parseVirtiofsdArgs([...base, '--posix-acl=never', '--translate-uid', 'map:0:1:1']).options.translateUid).toHaveLength(1);
});

test("--xattrmap: virtiofsd's rules, parsed; implies --xattr; bad rules are usage errors naming the rule", () => {
  const r = parseVirtiofsdArgs([...base, '--xattrmap', ':map::user.virtiofs.:']);
  expect(r.options.fuse).toMatchObject({ xattr: true });
  expect(r.options.fuse?.xattrMap?.toJSON()).toBe(':prefix:all::user.virtiofs.: :bad:all:::');
  expect(r.notes).toEqual([]);
  expect(refused([...base, '--xattrmap', '/prefix/helloworld///']).message).toMatch(/--xattrmap: rule 1: invalid scope "helloworld"/);
  expect(refused([...base, '--xattrmap', ':map:a:b: :ok:all:::']).message).toMatch(/map rule must be the last/);
  // no catch-all rule: accepted (as virtiofsd), with a note that says what duofs does instead of aborting
  expect(parseVirtiofsdArgs([...base, '--xattrmap', ':prefix:client:trusted.:user.virtiofs.:']).notes.join()).toMatch(/no rule matches every name/);
});

test('unknown options, stray arguments and bad syntax are refused', () => {
  expect(refused([...base, '--bogus']).message).toMatch(/--bogus: not a virtiofsd option/);
  expect(refused([...base, 'extra']).message).toMatch(/positional/);
  expect(refused([...base, '--xattr=yes']).message).toMatch(/takes no value/);
  expect(refused([...base, '--inode-file-handles', 'never']).message).toMatch(/needs a value given with '='/);
  expect(refused([...base, '--posix-acl', 'never']).message).toMatch(/positional/);
  expect(refused([...base, '--cache']).message).toMatch(/needs a value/);
  expect(refused([...base, '-x']).message).toMatch(/-x: not a virtiofsd option/);
});

test('--translate-uid/gid: rules accumulate, are checked, and overlapping ones refused', () => {
  const r = parseVirtiofsdArgs([
    ...base,
    '--translate-uid',
    'map:0:100000:65536',
    '--translate-uid=forbid-guest:65536:1',
    '--translate-gid',
    'squash-guest:0:1000:65536',
  ]);
  expect(r.options.translateUid).toEqual([
    { kind: 'map', guest: 0, host: 100000, count: 65536 },
    { kind: 'forbid-guest', guest: 65536, host: 0, count: 1 },
  ]);
  expect(r.options.translateGid).toEqual([{ kind: 'squash-guest', guest: 0, host: 1000, count: 65536 }]);
  expect(refused([...base, '--translate-uid', 'map:0:1:10', '--translate-uid', 'map:5:100:1']).message).toMatch(/--translate-uid: .*intersects/);
  expect(refused([...base, '--translate-gid', 'map:0:1']).option).toBe('--translate-gid');
});

test('--translate-uid/gid one-way guest: and host: kinds reach the server options', () => {
  const r = parseVirtiofsdArgs([...base, '--translate-uid', 'guest:1000:2000:1', '--translate-gid', 'host:3000:100:1']);
  expect(r.options.translateUid).toEqual([{ kind: 'guest', guest: 1000, host: 2000, count: 1 }]);
  expect(r.options.translateGid).toEqual([{ kind: 'host', host: 3000, guest: 100, count: 1 }]);
});

test('--rlimit-nofile is carried', () => {
  expect(parseVirtiofsdArgs([...base, '--rlimit-nofile=4096']).rlimitNofile).toBe(4096);
});

test('duofs extensions: --security-model, --fmode, --dmode', () => {
  const r = parseVirtiofsdArgs([...base, '--security-model', 'mapped-xattr', '--fmode', '0640', '--dmode=750']);
  expect(r.options).toMatchObject({ securityModel: 'mapped-xattr', fmode: 0o640, dmode: 0o750 });
  expect(refused([...base, '--security-model', 'mapped']).option).toBe('--security-model');
  expect(refused([...base, '--fmode', '0640']).message).toMatch(/only valid with --security-model mapped-xattr or mapped-file/);
  expect(refused([...base, '--security-model=mapped-file', '--fmode', '0999']).option).toBe('--fmode');
});

test('--print-capabilities, --help and --version need nothing else', () => {
  expect(parseVirtiofsdArgs(['--print-capabilities']).printCapabilities).toBe(true);
  expect(parseVirtiofsdArgs(['-h']).help).toBe(true);
  expect(parseVirtiofsdArgs(['-V']).version).toBe(true);
  // ...but a bad option next to them is still refused, as clap refuses it.
  expect(refused(['--print-capabilities', '--nope']).option).toBe('--nope');
});

test("the capabilities JSON has virtiofsd's shape and lists only what duofs supports", () => {
  const j = JSON.parse(capabilitiesJson()) as { type: string; features: string[] };
  expect(j.type).toBe('fs');
  expect(Array.isArray(j.features)).toBe(true);
  expect(j.features).toEqual([...CAPABILITY_FEATURES]);
  // Listing it would make libvirt refuse <lock> (compat/virtiofsd/capabilities.ts).
  expect(j.features).not.toContain('separate-options');
  expect(capabilitiesJson()).toBe(
    '{\n  "type": "fs",\n  "features": [\n    "migrate-precopy",\n    "posix-acl-negotiation-mode",\n    "security-label-negotiation-mode"\n  ]\n}\n',
  );
});

test('every documented table entry has a reason', () => {
  for (const [k, why] of [...Object.entries(NO_EFFECT), ...Object.entries(REFUSED)]) {
    expect(k).toMatch(/^-/);
    expect(why.length).toBeGreaterThan(10);
  }
});
