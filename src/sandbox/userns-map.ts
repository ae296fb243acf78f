// The id mappings of the server's user namespace: virtiofsd's --uid-map and
// --gid-map (1.14: src/idmap.rs parses them, src/sandbox.rs applies them).
//
// `:namespace_id:host_id:count:` maps COUNT host ids from HOST_ID on into the
// namespace as NAMESPACE_ID on. The first and last character is the
// delimiter (any character that is not a letter or a digit, the same at both
// ends); the option repeats, one range each. libvirt in session mode passes
// `--uid-map=:0:UID:1: --uid-map=:1:SUBUID_START:SUBUID_COUNT:` (and the same
// for gids): the user itself becomes root in the namespace, its /etc/subuid
// range the ids from 1 on.
//
// An unprivileged process may map only its own id, once (it writes
// /proc/PID/uid_map itself); anything more goes through newuidmap(1) and
// newgidmap(1) (Debian's uidmap package: setuid root, they check the ranges
// against /etc/subuid and /etc/subgid). virtiofsd decides the same way.

export interface UsernsRange {
  /** first id inside the namespace */
  inside: number;
  /** first id outside (on the host) */
  outside: number;
  count: number;
}

/** A value that is not a map; the message is virtiofsd's (IdMapError's Display, or Rust's ParseIntError). */
export class UsernsMapError extends Error {
  override name = 'UsernsMapError';
}

const INVALID_DELIMITER = 'A delimiter has been found that does not match the delimiter the map started with';
const INCOMPLETE_MAP = 'The map is empty or incorrect number of values are provided';

/** Rust's char::is_alphanumeric: Alphabetic or in a Numeric category. */
const ALNUM = /^[\p{Alphabetic}\p{N}]$/u;

/** Rust's u32::from_str, with its three error messages, checked left to right as Rust does. */
function parseU32(v: string): number {
  if (v === '') throw new UsernsMapError('cannot parse integer from empty string');
  let digits = v;
  if (v === '+' || v === '-') throw new UsernsMapError('invalid digit found in string');
  if (digits.startsWith('+')) digits = digits.slice(1);
  let n = 0;
  for (const ch of digits) {
    if (ch < '0' || ch > '9') throw new UsernsMapError('invalid digit found in string');
    n = n * 10 + (ch.charCodeAt(0) - 48);
    if (n > 0xffffffff) throw new UsernsMapError('number too large to fit in target type');
  }
  return n;
}

/** One --uid-map/--gid-map value, exactly as virtiofsd 1.14 parses it. */
export function parseUsernsRange(s: string): UsernsRange {
  const chars = Array.from(s); // code points, as Rust's chars
  const delimiter = chars.pop();
  if (delimiter === undefined) throw new UsernsMapError(INCOMPLETE_MAP);
  if (ALNUM.test(delimiter)) throw new UsernsMapError(INVALID_DELIMITER);
  const rest = chars.join('');
  if (!rest.startsWith(delimiter)) throw new UsernsMapError(INVALID_DELIMITER);
  const values = rest.slice(delimiter.length).split(delimiter);
  if (values.length !== 3) throw new UsernsMapError(INCOMPLETE_MAP);
  const [inside, outside, count] = values.map(parseU32) as [number, number, number];
  return { inside, outside, count };
}

/** How a range is written back (virtiofsd's Display): `:inside:outside:count:`. */
export function formatUsernsRange(r: UsernsRange): string {
  return `:${r.inside}:${r.outside}:${r.count}:`;
}

/** The mappings a server's user namespace gets; an empty list means virtiofsd's default, the own id 1:1. */
export interface UsernsMaps {
  uid: UsernsRange[];
  gid: UsernsRange[];
}

/** The ranges actually written: the given ones, or the own id mapped to itself. */
export function effectiveRanges(given: readonly UsernsRange[], ownId: number): UsernsRange[] {
  return given.length ? [...given] : [{ inside: ownId, outside: ownId, count: 1 }];
}

/** virtiofsd's rule: one range of one id, the own one, needs no helper; anything else needs newuidmap/newgidmap. */
export function needsHelper(ranges: readonly UsernsRange[], ownId: number): boolean {
  return ranges.length !== 1 || ranges[0]!.outside !== ownId || ranges[0]!.count > 1;
}

/** Whether id 0 inside the namespace is mapped (the server then becomes that root, as virtiofsd's setresuid(0, 0, 0)). */
export function mapsRoot(ranges: readonly UsernsRange[]): boolean {
  return ranges.some((r) => r.inside === 0 && r.count > 0);
}

/** newuidmap/newgidmap's arguments for PID: the pid, then inside outside count per range. */
export function helperArgs(pid: number, ranges: readonly UsernsRange[]): string[] {
  return [String(pid), ...ranges.flatMap((r) => [String(r.inside), String(r.outside), String(r.count)])];
}
