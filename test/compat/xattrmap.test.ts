// virtiofsd's --xattrmap rule syntax and meaning, against the examples of
// virtiofsd's doc/xattr-mapping.md and the cases of its xattrmap.rs tests.
import { describe, expect, test } from '@jest/globals';
import { XattrMap, XattrMapError } from '../../protocols/fuse/xattr-map.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const host = (m: XattrMap, name: string): string => {
  const r = m.toHost(b(name));
  return 'errno' in r ? r.errno : r.name.toString('latin1');
};
const list = (m: XattrMap, names: string[]): string[] => m.listToGuest(names.map(b)).map((n) => n.toString('latin1'));

function parseError(text: string): XattrMapError {
  try {
    XattrMap.parse(text);
  } catch (e) {
    if (e instanceof XattrMapError) return e;
    throw e;
  }
  throw new Error(`${JSON.stringify(text)} parsed`);
}

describe('parsing', () => {
  test('one rule: type, scope, key, prepend', () => {
    const m = XattrMap.parse(':prefix:client:trusted.:user.virtiofs.:');
    expect(m.rules).toEqual([{ type: 'prefix', client: true, server: false, key: b('trusted.'), prepend: b('user.virtiofs.') }]);
  });

  test('rules back to back, or separated by white space and new lines, each with its own separator', () => {
    expect(XattrMap.parse(':prefix:all::user.virtiofs.::bad:all:::').rules).toHaveLength(2);
    const m = XattrMap.parse(`
        /prefix/all/trusted./user.virtiofs./
        /bad/server//trusted./
        /bad/client/user.virtiofs.//
        /ok/all///
    `);
    expect(m.rules.map((r) => [r.type, r.client, r.server, r.key.toString(), r.prepend.toString()])).toEqual([
      ['prefix', true, true, 'trusted.', 'user.virtiofs.'],
      ['bad', false, true, '', 'trusted.'],
      ['bad', true, false, 'user.virtiofs.', ''],
      ['ok', true, true, '', ''],
    ]);
    const two = XattrMap.parse(':prefix:all:trusted.:user.virtiofs.: /prefix/all/trusted./user.virtiofs./');
    expect(two.rules[0]).toEqual(two.rules[1]);
  });

  test('map expands as virtiofsd does: with an empty key to prefix + bad; with a key to prefix + bad + ok', () => {
    expect(XattrMap.parse(':map::user.virtiofs.:').rules).toEqual(XattrMap.parse(':prefix:all::user.virtiofs.::bad:all:::').rules);
    expect(XattrMap.parse('/map/trusted./user.virtiofs./').rules).toEqual(
      XattrMap.parse(`
      /prefix/all/trusted./user.virtiofs./ /bad/all/user.virtiofs./trusted./ /ok/all///`).rules,
    );
  });

  test('errors name the rule, as virtiofsd counts them', () => {
    expect(parseError(':prefix:client:hi').message).toMatch(/^rule 1: incomplete rule/);
    expect(parseError(':ok:all::: :prefix:all:trusted.:user.vm.').rule).toBe(2);
    expect(parseError(':map:trusted.:virtiofs.user.::map:trusted.:virtiofs.user.:').message).toMatch(/^rule 1: a map rule must be the last/);
    expect(parseError(':TOMATOPIRATE:trusted.:virtiofs.user.:').message).toMatch(/invalid type "TOMATOPIRATE"/);
    expect(parseError('/prefix/helloworld///').message).toMatch(/invalid scope "helloworld"/);
    expect(parseError(' ').message).toBe('no rules given');
    expect(parseError('').rule).toBeUndefined();
    expect(parseError(':ok:all:é::').message).toMatch(/ASCII/);
  });

  test('a map with no catch-all rule is flagged unterminated', () => {
    expect(XattrMap.parse(':ok:all:::').unterminated).toBe(false);
    expect(XattrMap.parse(':prefix:client:trusted.:user.virtiofs.:').unterminated).toBe(true);
    expect(XattrMap.parse(':map:trusted.:user.virtiofs.:').unterminated).toBe(false);
  });
});

describe('mapping', () => {
  test("example 1: everything under user.virtiofs. on the host, the host's own names hidden", () => {
    for (const text of [':prefix:all::user.virtiofs.::bad:all:::', ':map::user.virtiofs.:']) {
      const m = XattrMap.parse(text);
      expect(host(m, 'trusted.x')).toBe('user.virtiofs.trusted.x');
      expect(host(m, 'user.y')).toBe('user.virtiofs.user.y');
      expect(list(m, ['user.virtiofs.trusted.x', 'security.selinux', 'user.hostonly'])).toEqual(['trusted.x']);
    }
  });

  test('example 2: trusted. prefixed, unprefixed trusted. hidden, user.virtiofs. refused, the rest passes', () => {
    const m = XattrMap.parse('/prefix/all/trusted./user.virtiofs./ /bad/server//trusted./ /bad/client/user.virtiofs.// /ok/all///');
    expect(host(m, 'trusted.secret')).toBe('user.virtiofs.trusted.secret');
    expect(host(m, 'user.virtiofs.trusted.secret')).toBe('EPERM');
    expect(host(m, 'user.other')).toBe('user.other');
    expect(list(m, ['user.virtiofs.trusted.a', 'trusted.hostone', 'user.other'])).toEqual(['trusted.a', 'user.other']);
    // the map shorthand means the same for these names
    const short = XattrMap.parse('/map/trusted./user.virtiofs./');
    for (const n of ['trusted.secret', 'user.virtiofs.trusted.secret', 'user.other']) expect(host(short, n)).toBe(host(m, n));
    expect(list(short, ['user.virtiofs.trusted.a', 'trusted.hostone', 'user.other'])).toEqual(['trusted.a', 'user.other']);
  });

  test('example 3: security. hidden and refused both ways, everything else passes', () => {
    const m = XattrMap.parse('/bad/all/security./security./ /ok/all///');
    expect(host(m, 'security.selinux')).toBe('EPERM');
    expect(host(m, 'user.a')).toBe('user.a');
    expect(list(m, ['security.secret', 'boring_attr'])).toEqual(['boring_attr']);
  });

  test('unsupported: ENOTSUP for the client, hidden from the list', () => {
    const m = XattrMap.parse(':unsupported:all:security.:security.: :ok:all:::');
    expect(host(m, 'security.x')).toBe('ENOTSUP');
    expect(list(m, ['security.secret', 'boring_attr'])).toEqual(['boring_attr']);
  });

  test('the documented single rules', () => {
    expect(host(XattrMap.parse(':prefix:client:trusted.:user.virtiofs.:'), 'trusted.a')).toBe('user.virtiofs.trusted.a');
    expect(list(XattrMap.parse(':prefix:server::user.virtiofs.:'), ['user.virtiofs.x'])).toEqual(['x']);
    expect(host(XattrMap.parse(':ok:client:user.::'), 'user.a')).toBe('user.a');
    expect(list(XattrMap.parse(':ok:server::security.:'), ['security.a'])).toEqual(['security.a']);
    expect(list(XattrMap.parse(':bad:server::security.: :ok:all:::'), ['security.a', 'user.b'])).toEqual(['user.b']);
  });

  test('a name no rule matches: refused (EPERM) from the guest, hidden from the list (virtiofsd panics)', () => {
    const m = XattrMap.parse(':prefix:client:trusted.:user.virtiofs.:');
    expect(host(m, 'user.a')).toBe('EPERM');
    expect(list(m, ['user.a'])).toEqual([]);
  });

  test('names are bytes: a non-UTF-8 name maps byte for byte', () => {
    const m = XattrMap.parse(':map::user.virtiofs.:');
    const r = m.toHost(Buffer.from([0x75, 0x73, 0x65, 0x72, 0x2e, 0xff]));
    expect('name' in r && r.name).toEqual(Buffer.concat([b('user.virtiofs.'), Buffer.from([0x75, 0x73, 0x65, 0x72, 0x2e, 0xff])]));
  });
});
