// QEMU -fsdev / -virtfs option strings as operators copy them from a VM definition.
import { parseFsdev, parseFsdevSpec } from '../../compat/qemu/fsdev.js';
import { parseQemuOpts, parseQemuNumber } from '../../compat/qemu/opts.js';
import { CompatError } from '../../compat/errors.js';

function refusal(spec: string): CompatError {
  try {
    parseFsdev(spec);
  } catch (e) {
    expect(e).toBeInstanceOf(CompatError);
    expect((e as Error).message).not.toContain('\n');
    return e as CompatError;
  }
  throw new Error(`accepted: ${spec}`);
}

test('the example from the issue', () => {
  expect(parseFsdev('local,id=x,path=/srv/x,security_model=mapped-xattr,fmode=0644,dmode=0755,readonly=on')).toEqual({
    sharedDir: '/srv/x',
    securityModel: 'mapped-xattr',
    fmode: 0o644,
    dmode: 0o755,
    readonly: true,
  });
});

test('-virtfs: mount_tag becomes the 9P tag, mapped is mapped-xattr, the id is the tag', () => {
  const r = parseFsdevSpec('local,path=/srv/share,mount_tag=share0,security_model=mapped');
  expect(r.options).toEqual({ sharedDir: '/srv/share', ninepTag: 'share0', securityModel: 'mapped-xattr' });
  expect(r.virtfs).toBe(true);
  expect(r.id).toBe('share0');
  expect(() => parseFsdev('-virtfs local,path=/a,security_model=none')).toThrow(/mount_tag/);
});

test('a pasted "-fsdev " prefix is allowed; fsdriver= spelled out works', () => {
  expect(parseFsdev('-fsdev fsdriver=local,id=f,path=/a,security_model=none')).toEqual({ sharedDir: '/a', securityModel: 'none' });
});

test('doubled commas are literal commas in values (QEMU escaping)', () => {
  expect(parseFsdev('local,id=f,path=/srv/a,,b,,,security_model=passthrough').sharedDir).toBe('/srv/a,b,');
  expect(parseQemuOpts('local,path=x,,y,readonly', 'fsdriver')).toEqual([
    { name: 'fsdriver', value: 'local', flag: false },
    { name: 'path', value: 'x,y', flag: false },
    { name: 'readonly', value: 'on', flag: true },
  ]);
});

test.each([
  ['readonly', true],
  ['readonly=on', true],
  ['readonly=off', false],
  ['readonly=true', true],
  ['readonly=false', false],
  ['readonly=yes', true],
  ['noreadonly', false],
])('%s', (opt, want) => {
  expect(parseFsdev(`local,id=f,path=/a,security_model=none,${opt}`).readonly).toBe(want);
});

test('readonly with a bad value is refused', () => {
  expect(refusal('local,id=f,path=/a,security_model=none,readonly=maybe').option).toBe('readonly');
});

test('a later option wins, as in QEMU', () => {
  expect(parseFsdev('local,path=/a,path=/b,security_model=none,security_model=mapped-file').sharedDir).toBe('/b');
  expect(parseFsdev('local,path=/a,security_model=none,security_model=mapped-file').securityModel).toBe('mapped-file');
});

test('fmode/dmode: QEMU number syntax, masked with 0777', () => {
  expect(parseFsdev('local,path=/a,security_model=mapped-file,fmode=0x1ff').fmode).toBe(0o777);
  const r = parseFsdevSpec('local,path=/a,security_model=mapped,fmode=644,dmode=04755');
  expect(r.options.fmode).toBe(644 & 0o777); // decimal, as QEMU reads it
  expect(r.options.dmode).toBe(0o755);
  expect(r.notes.join('\n')).toMatch(/fmode=644 is decimal/);
  expect(r.notes.join('\n')).toMatch(/dmode=04755.*0755/);
  expect(parseQemuNumber('fmode', '0')).toBe(0);
  expect(() => parseQemuNumber('fmode', '-1')).toThrow(CompatError);
  expect(() => parseQemuNumber('fmode', '0999')).toThrow(CompatError);
});

test('fmode/dmode are refused for non-mapped models, as QEMU does', () => {
  expect(refusal('local,path=/a,security_model=passthrough,fmode=0600').message).toMatch(/fmode is only valid for mapped security models/);
  expect(refusal('local,path=/a,security_model=none,dmode=0700').option).toBe('dmode');
});

test('security_model and path are required; unknown models are refused', () => {
  expect(refusal('local,id=f,path=/a').option).toBe('security_model');
  expect(refusal('local,id=f,security_model=none').option).toBe('path');
  expect(refusal('local,path=/a,security_model=mapped-acl').message).toMatch(/invalid/);
});

test('multidevs: remap accepted, warn accepted with an explanation, forbid refused with one', () => {
  expect(parseFsdev('local,path=/a,security_model=none,multidevs=remap').sharedDir).toBe('/a');
  expect(parseFsdevSpec('local,path=/a,security_model=none,multidevs=warn').notes.join()).toMatch(/always remaps/);
  expect(refusal('local,path=/a,security_model=none,multidevs=forbid').message).toMatch(/always remaps/);
  expect(refusal('local,path=/a,security_model=none,multidevs=sometimes').option).toBe('multidevs');
});

test('writeout=immediate is accepted and reported; other values refused', () => {
  const r = parseFsdevSpec('local,path=/a,security_model=none,writeout=immediate');
  expect(r.writeoutImmediate).toBe(true);
  expect(r.notes.length).toBe(1);
  expect(refusal('local,path=/a,security_model=none,writeout=later').option).toBe('writeout');
});

test('other drivers are refused by name', () => {
  expect(refusal('proxy,id=f,sock_fd=3,security_model=none').message).toMatch(/fsdriver proxy: not supported/);
  expect(refusal('synth,id=f').message).toMatch(/fsdriver synth/);
  expect(refusal('handle,id=f,path=/a').message).toMatch(/fsdriver handle/);
  expect(refusal('nfs,id=f,path=/a').message).toMatch(/unknown driver/);
  expect(refusal('id=f,path=/a,security_model=none').option).toBe('fsdriver');
});

test('options without meaning here are refused, naming the option', () => {
  expect(refusal('local,path=/a,security_model=none,throttling.bps-total=1000').option).toBe('throttling.bps-total');
  expect(refusal('local,path=/a,security_model=none,socket=/run/x').option).toBe('socket');
  expect(refusal('local,path=/a,security_model=none,cache=loose').message).toMatch(/Invalid parameter 'cache'/);
});

test('ids must be QEMU ids', () => {
  expect(refusal('local,id=9bad,path=/a,security_model=none').option).toBe('id');
});

test('malformed strings are one clear line', () => {
  expect(refusal('').message).toMatch(/empty/);
  expect(refusal('local,=x,path=/a,security_model=none').message).toMatch(/without an option name/);
});

test('max_xattr (QEMU 11.1): a QEMU number up to 2^32-1, accepted with a note saying how duofs bounds xattr fids', () => {
  const r = parseFsdevSpec('local,id=x,path=/srv/x,security_model=mapped-xattr,max_xattr=1024');
  expect(r.options).toEqual({ sharedDir: '/srv/x', securityModel: 'mapped-xattr' });
  expect(r.notes).toEqual([expect.stringMatching(/^max_xattr=1024: accepted; duofs does not count .*fid limit/)]);
  expect(parseFsdevSpec('local,path=/a,security_model=none,max_xattr=0x10').notes[0]).toMatch(/^max_xattr=16:/);
  expect(parseFsdevSpec('local,path=/a,security_model=none,max_xattr=4294967295').notes).toHaveLength(1);
  expect(refusal('local,path=/a,security_model=none,max_xattr=4294967296').message).toMatch(/max_xattr value '4294967296' too large/);
  expect(refusal('local,path=/a,security_model=none,max_xattr=abc').option).toBe('max_xattr');
});

test('every option QEMU 11.1 lists for -fsdev local is accepted or refused by name, never "unknown"', () => {
  // qemu-system-x86_64 -fsdev help (11.1.3): the options of qemu_fsdev_opts
  const known = ['id=f', 'writeout=immediate', 'readonly=on', 'multidevs=remap', 'max_xattr=8', 'mount_tag=t'];
  expect(() => parseFsdevSpec(`local,path=/a,security_model=mapped,fmode=0600,dmode=0700,${known.join(',')}`)).not.toThrow();
  const throttles = [
    'bps-total',
    'bps-read',
    'bps-write',
    'iops-total',
    'iops-read',
    'iops-write',
    'bps-total-max',
    'bps-read-max',
    'bps-write-max',
    'iops-total-max',
    'iops-read-max',
    'iops-write-max',
    'bps-total-max-length',
    'bps-read-max-length',
    'bps-write-max-length',
    'iops-total-max-length',
    'iops-read-max-length',
    'iops-write-max-length',
    'iops-size',
    'group',
  ];
  for (const t of throttles) expect(refusal(`local,path=/a,security_model=none,throttling.${t}=1`).message).toMatch(/no I\/O throttling/);
  for (const o of ['socket=/s', 'sock_fd=3']) expect(refusal(`local,path=/a,security_model=none,${o}`).message).toMatch(/proxy driver/);
});
