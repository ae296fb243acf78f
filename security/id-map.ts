// virtiofsd's --translate-uid / --translate-gid (virtiofsd 1.11+,
// src/soft_idmap): user and group ids translated by the server itself, in
// each direction independently.
//
//   map:GUEST:HOST:COUNT           guest [GUEST, GUEST+COUNT) <-> host [HOST, HOST+COUNT)
//   guest:GUEST:HOST:COUNT         guest -> host only, 1:1
//   host:HOST:GUEST:COUNT          host -> guest only, 1:1
//   squash-guest:GUEST:HOST:COUNT  guest [GUEST, GUEST+COUNT) -> the one host id HOST
//   squash-host:HOST:GUEST:COUNT   host [HOST, HOST+COUNT) -> the one guest id GUEST
//   forbid-guest:GUEST:COUNT       guest [GUEST, GUEST+COUNT) refused (EPERM)
//
// As virtiofsd parses them: the type is letters, digits, '-' and '_'
// (case-insensitive); the separator is whatever character follows it (':' in
// practice, but any other one works if all fields use it); the numbers are
// unsigned 32-bit. Source ranges of one direction must not overlap
// ("Guest-to-host mapping ... intersects previously added entry"), and
// BASE+COUNT must not pass 2^32 ("Range overflow"). Ids that no rule covers
// pass through unchanged, in both directions.
//
// Guest -> host applies to the ids a guest acts with and asks for: request
// credentials, the owner of files it creates, chown targets. Host -> guest
// applies to the ids the guest is shown: getattr/stat owners.
/** One rule of virtiofsd's --translate-uid/--translate-gid, as ServeOptions carries it. */
export interface IdTranslation {
  kind: 'map' | 'squash-guest' | 'squash-host' | 'forbid-guest' | 'guest' | 'host';
  /** first guest id of the range (for squash-host: the single guest id) */
  guest: number;
  /** first host id of the range (for squash-guest: the single host id) */
  host: number;
  count: number;
}

/**
 * One parsed rule. `IdTranslation` lacks the one-way 1:1
 * kinds 'guest' and 'host'; this type adds them so every virtiofsd rule can
 * be carried.
 */
export interface IdRule extends Omit<IdTranslation, 'kind'> {
  kind: IdTranslation['kind'] | 'guest' | 'host';
}

export class IdMapError extends Error {
  override name = 'IdMapError';
}

/** A guest id that a forbid-guest rule refuses; the request must fail with EPERM. */
export class ForbiddenIdError extends Error {
  override name = 'ForbiddenIdError';
  readonly errno = 1; // EPERM
  constructor(readonly id: number) {
    super(`use of guest id ${id} has been configured to fail`);
  }
}

const MAX = 0x1_0000_0000; // 2^32: ids are u32, ranges end at most here

function parseU32(field: string, what: string, rule: string): number {
  // Rust's u32::from_str: optional '+', decimal digits only.
  if (!/^\+?\d+$/.test(field)) throw new IdMapError(`${rule}: invalid value ${JSON.stringify(field)} for ${what}`);
  const n = Number(field.replace(/^\+/, ''));
  if (!Number.isSafeInteger(n) || n >= MAX) throw new IdMapError(`${rule}: ${what} ${field} is not a 32-bit id`);
  return n;
}

/** Parses one rule in virtiofsd's syntax. */
export function parseIdRule(text: string): IdRule {
  const m = /^[\p{L}\p{N}_-]*/u.exec(text)!;
  const kind = m[0].toLowerCase();
  const rest = text.slice(m[0].length);
  if (rest === '') throw new IdMapError(`${JSON.stringify(text)}: expected TYPE:...:COUNT`);
  const sep = rest[0]!;
  const fields = rest.slice(1).split(sep);
  const want = kind === 'forbid-guest' ? 2 : 3;
  const known = ['map', 'guest', 'host', 'squash-guest', 'squash-host', 'forbid-guest'];
  if (!known.includes(kind)) {
    throw new IdMapError(`${JSON.stringify(text)}: invalid ID map type ${JSON.stringify(kind)}; valid: ${known.join(', ')}`);
  }
  if (fields.length !== want) {
    throw new IdMapError(`${JSON.stringify(text)}: ${kind} takes ${want} numbers, got ${fields.length}`);
  }
  let rule: IdRule;
  switch (kind) {
    case 'map':
    case 'guest':
    case 'squash-guest':
      rule = {
        kind: kind as IdRule['kind'],
        guest: parseU32(fields[0]!, 'guest id', text),
        host: parseU32(fields[1]!, 'host id', text),
        count: parseU32(fields[2]!, 'count', text),
      };
      break;
    case 'host':
    case 'squash-host':
      rule = {
        kind: kind as IdRule['kind'],
        host: parseU32(fields[0]!, 'host id', text),
        guest: parseU32(fields[1]!, 'guest id', text),
        count: parseU32(fields[2]!, 'count', text),
      };
      break;
    default: // forbid-guest
      rule = { kind: 'forbid-guest', guest: parseU32(fields[0]!, 'guest id', text), host: 0, count: parseU32(fields[1]!, 'count', text) };
  }
  checkRanges(rule, text);
  return rule;
}

function checkRanges(r: IdRule, text: string): void {
  const over = (base: number): boolean => base + r.count > MAX;
  const src = r.kind === 'host' || r.kind === 'squash-host' ? r.host : r.guest;
  if (over(src)) throw new IdMapError(`${text}: range overflow (base + count passes 2^32)`);
  // The target range of a 1:1 rule must fit too (virtiofsd would wrap).
  if ((r.kind === 'map' || r.kind === 'guest') && over(r.host)) throw new IdMapError(`${text}: host range overflow (base + count passes 2^32)`);
  if (r.kind === 'host' && over(r.guest)) throw new IdMapError(`${text}: guest range overflow (base + count passes 2^32)`);
}

/** The rule in virtiofsd's canonical spelling. */
export function formatIdRule(r: IdRule): string {
  switch (r.kind) {
    case 'map':
    case 'guest':
    case 'squash-guest':
      return `${r.kind}:${r.guest}:${r.host}:${r.count}`;
    case 'host':
    case 'squash-host':
      return `${r.kind}:${r.host}:${r.guest}:${r.count}`;
    case 'forbid-guest':
      return `forbid-guest:${r.guest}:${r.count}`;
  }
}

interface Entry {
  from: number;
  /** exclusive */
  to: number;
  map: (id: number) => number | 'forbid';
  rule: IdRule;
}

/** Translates ids both ways under a list of rules (one list for uids, one for gids). */
export class IdMap {
  private readonly g2h: Entry[] = [];
  private readonly h2g: Entry[] = [];

  constructor(readonly rules: readonly IdRule[]) {
    for (const r of rules) {
      if (r.count === 0) continue; // an empty range maps nothing (virtiofsd accepts it)
      switch (r.kind) {
        case 'map':
          this.add(this.g2h, 'Guest-to-host', r, r.guest, (id) => r.host + (id - r.guest));
          this.add(this.h2g, 'Host-to-guest', r, r.host, (id) => r.guest + (id - r.host));
          break;
        case 'guest':
          this.add(this.g2h, 'Guest-to-host', r, r.guest, (id) => r.host + (id - r.guest));
          break;
        case 'host':
          this.add(this.h2g, 'Host-to-guest', r, r.host, (id) => r.guest + (id - r.host));
          break;
        case 'squash-guest':
          this.add(this.g2h, 'Guest-to-host', r, r.guest, () => r.host);
          break;
        case 'squash-host':
          this.add(this.h2g, 'Host-to-guest', r, r.host, () => r.guest);
          break;
        case 'forbid-guest':
          this.add(this.g2h, 'Guest-to-host', r, r.guest, () => 'forbid');
          break;
      }
    }
  }

  private add(list: Entry[], dir: string, rule: IdRule, from: number, map: Entry['map']): void {
    const to = from + rule.count;
    if (from < 0 || to > MAX) throw new IdMapError(`${formatIdRule(rule)}: range overflow`);
    for (const e of list) {
      if (from < e.to && e.from < to) {
        throw new IdMapError(`${dir} mapping '${formatIdRule(rule)}' intersects previously added entry '${formatIdRule(e.rule)}'`);
      }
    }
    list.push({ from, to, map, rule });
    list.sort((a, b) => a.from - b.from);
  }

  /** True when no rule changes anything (every id passes through). */
  get isIdentity(): boolean {
    return this.g2h.length === 0 && this.h2g.length === 0;
  }

  /**
   * The host id for a guest id; throws ForbiddenIdError for a forbidden one
   * (the caller answers the request with EPERM).
   */
  toHost(guestId: number): number {
    const r = this.tryToHost(guestId);
    if (r === 'forbid') throw new ForbiddenIdError(guestId);
    return r;
  }

  /** Like toHost, but returns 'forbid' instead of throwing. */
  tryToHost(guestId: number): number | 'forbid' {
    const e = find(this.g2h, guestId);
    return e ? e.map(guestId) : guestId;
  }

  /** The guest id a host id is shown as. */
  toGuest(hostId: number): number {
    const e = find(this.h2g, hostId);
    const r = e ? e.map(hostId) : hostId;
    return r === 'forbid' ? hostId : r;
  }
}

function find(list: Entry[], id: number): Entry | undefined {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const e = list[mid]!;
    if (id < e.from) hi = mid - 1;
    else if (id >= e.to) lo = mid + 1;
    else return e;
  }
  return undefined;
}

/** Parses every --translate-uid (or -gid) value and checks the set as virtiofsd does at start-up. */
export function parseIdRules(texts: readonly string[]): IdRule[] {
  const rules = texts.map(parseIdRule);
  new IdMap(rules); // overlap check
  return rules;
}

/**
 * Rules as src/server.ts's IdTranslation carries them. Every kind fits now
 * (the one-way 'guest'/'host' ones included: IdMap applies them); this
 * used to return undefined for those, which `duofs serve` took as "no rules".
 */
export function asIdTranslations(rules: readonly IdRule[]): IdTranslation[] {
  return rules.map((r) => ({ kind: r.kind, guest: r.guest, host: r.host, count: r.count }));
}
