// virtiofsd's --translate-uid/--translate-gid rules and their mapping both ways.
import { ForbiddenIdError, IdMap, IdMapError, asIdTranslations, formatIdRule, parseIdRule, parseIdRules } from '../../security/id-map.js';

test('every rule type parses into guest/host/count the way virtiofsd orders the fields', () => {
  expect(parseIdRule('map:1000:100000:65536')).toEqual({ kind: 'map', guest: 1000, host: 100000, count: 65536 });
  expect(parseIdRule('guest:0:1000:1')).toEqual({ kind: 'guest', guest: 0, host: 1000, count: 1 });
  expect(parseIdRule('host:1000:0:1')).toEqual({ kind: 'host', host: 1000, guest: 0, count: 1 });
  expect(parseIdRule('squash-guest:0:1000:65536')).toEqual({ kind: 'squash-guest', guest: 0, host: 1000, count: 65536 });
  expect(parseIdRule('squash-host:0:65534:1000')).toEqual({ kind: 'squash-host', host: 0, guest: 65534, count: 1000 });
  expect(parseIdRule('forbid-guest:0:1')).toEqual({ kind: 'forbid-guest', guest: 0, host: 0, count: 1 });
});

test('virtiofsd quirks: any separator after the type, case-insensitive type, +digits', () => {
  expect(parseIdRule('MAP/5/6/7')).toEqual({ kind: 'map', guest: 5, host: 6, count: 7 });
  expect(parseIdRule('squash-guest,0,+1000,1')).toEqual({ kind: 'squash-guest', guest: 0, host: 1000, count: 1 });
});

test('formatIdRule gives the canonical spelling back', () => {
  for (const s of ['map:1:2:3', 'guest:1:2:3', 'host:1:2:3', 'squash-guest:1:2:3', 'squash-host:1:2:3', 'forbid-guest:1:3']) {
    expect(formatIdRule(parseIdRule(s))).toBe(s);
  }
});

test.each([
  ['map', /expected TYPE/],
  ['map:1:2', /takes 3 numbers, got 2/],
  ['forbid-guest:1:2:3', /takes 2 numbers, got 3/],
  ['swap:1:2:3', /invalid ID map type "swap"/],
  ['map:a:2:3', /invalid value "a"/],
  ['map:-1:2:3', /invalid value "-1"/],
  ['map:1:2:3:', /takes 3 numbers, got 4/],
  ['map:4294967296:0:1', /not a 32-bit id/],
  ['map:4294967295:0:2', /range overflow/],
  ['map:0:4294967295:2', /host range overflow/],
  ['forbid-guest:4294967290:100', /range overflow/],
])('%s is refused', (rule, msg) => {
  expect(() => parseIdRule(rule)).toThrow(IdMapError);
  expect(() => parseIdRule(rule)).toThrow(msg);
});

test('map is bidirectional; ids outside every rule pass through unchanged', () => {
  const m = new IdMap([parseIdRule('map:1000:101000:10')]);
  expect(m.toHost(1000)).toBe(101000);
  expect(m.toHost(1009)).toBe(101009);
  expect(m.toHost(1010)).toBe(1010);
  expect(m.toHost(999)).toBe(999);
  expect(m.toGuest(101005)).toBe(1005);
  expect(m.toGuest(1005)).toBe(1005); // host 1005 is outside the host range
  expect(m.isIdentity).toBe(false);
  expect(new IdMap([]).isIdentity).toBe(true);
});

test('guest: and host: are one-way', () => {
  const m = new IdMap([parseIdRule('guest:0:1000:1'), parseIdRule('host:1000:0:1')]);
  expect(m.toHost(0)).toBe(1000);
  expect(m.toGuest(1000)).toBe(0);
  const oneWay = new IdMap([parseIdRule('guest:0:1000:1')]);
  expect(oneWay.toGuest(1000)).toBe(1000);
});

test('squash-guest folds a guest range onto one host id; squash-host folds host ids onto one guest id', () => {
  const m = new IdMap(parseIdRules(['squash-guest:0:1000:65536', 'squash-host:0:65534:1000']));
  expect(m.toHost(0)).toBe(1000);
  expect(m.toHost(65535)).toBe(1000);
  expect(m.toHost(65536)).toBe(65536);
  expect(m.toGuest(0)).toBe(65534);
  expect(m.toGuest(999)).toBe(65534);
  expect(m.toGuest(1000)).toBe(1000);
});

test('forbid-guest refuses with an EPERM signal; host->guest is unaffected', () => {
  const m = new IdMap([parseIdRule('forbid-guest:0:1000')]);
  expect(() => m.toHost(0)).toThrow(ForbiddenIdError);
  expect(m.tryToHost(999)).toBe('forbid');
  expect(m.toHost(1000)).toBe(1000);
  expect(m.toGuest(0)).toBe(0);
  try {
    m.toHost(5);
  } catch (e) {
    expect((e as ForbiddenIdError).errno).toBe(1);
    expect((e as ForbiddenIdError).id).toBe(5);
  }
});

test('overlapping source ranges in one direction are refused, as virtiofsd refuses them', () => {
  expect(() => parseIdRules(['map:0:1000:10', 'squash-guest:5:0:1'])).toThrow(
    /Guest-to-host mapping 'squash-guest:5:0:1' intersects previously added entry 'map:0:1000:10'/,
  );
  expect(() => parseIdRules(['map:0:1000:10', 'host:1005:0:1'])).toThrow(/Host-to-guest/);
  // Different directions may cover the same numbers.
  expect(() => parseIdRules(['squash-guest:0:1000:10', 'squash-host:0:5:10'])).not.toThrow();
  // Adjacent ranges do not overlap.
  expect(() => parseIdRules(['map:0:1000:10', 'map:10:2000:10'])).not.toThrow();
});

test('a count of 0 maps nothing', () => {
  expect(new IdMap([parseIdRule('map:0:1000:0')]).toHost(0)).toBe(0);
});

test('many rules: lookups hit the right range', () => {
  const rules = Array.from({ length: 100 }, (_, i) => parseIdRule(`map:${i * 100}:${100000 + i * 100}:50`));
  const m = new IdMap(rules);
  for (let i = 0; i < 100; i++) {
    expect(m.toHost(i * 100 + 49)).toBe(100000 + i * 100 + 49);
    expect(m.toHost(i * 100 + 50)).toBe(i * 100 + 50);
    expect(m.toGuest(100000 + i * 100)).toBe(i * 100);
  }
});

test('asIdTranslations carries every rule kind to src/server.ts IdTranslation, the one-way ones included', () => {
  expect(asIdTranslations([parseIdRule('map:1:2:3'), parseIdRule('forbid-guest:0:1')])).toEqual([
    { kind: 'map', guest: 1, host: 2, count: 3 },
    { kind: 'forbid-guest', guest: 0, host: 0, count: 1 },
  ]);
  expect(asIdTranslations([parseIdRule('guest:1:2:3'), parseIdRule('host:7:8:9')])).toEqual([
    { kind: 'guest', guest: 1, host: 2, count: 3 },
    { kind: 'host', host: 7, guest: 8, count: 9 },
  ]);
});
