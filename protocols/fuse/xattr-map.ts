// virtiofsd's --xattrmap: rules that rename, hide or refuse extended
// attribute names between the guest ("client") and the host ("server").
// Syntax and meaning as virtiofsd 1.14 (src/passthrough/xattrmap.rs,
// doc/xattr-mapping.md):
//
//   :type:scope:key:prepend:     type prefix|ok|bad|unsupported, scope client|server|all
//   :map:key:prepend:            shorthand, only as the last rule
//
// Each rule picks its own separator (the first character after any white
// space); rules are separated by white space. The first rule that matches
// wins. A client name (SET/GET/REMOVEXATTR) matches when it starts with
// `key`; a server name (each name LISTXATTR returns) when it starts with
// `prepend`. On a match:
//
//   prefix       client: `prepend` + name;  server: name without `prepend`
//   ok           passes unchanged
//   bad          client: EPERM;             server: hidden
//   unsupported  client: ENOTSUP;           server: hidden
//
// `:map:KEY:PREPEND:` expands to `:prefix:all:KEY:PREPEND:` then, with an
// empty KEY, `:bad:all:::`; with a KEY, `:bad:all:PREPEND:KEY:` and
// `:ok:all:::`.
//
// A name that no rule matches (a map without a catch-all rule): virtiofsd
// panics ("unterminated mapping"); duofs refuses a client name with EPERM
// and hides a server name, and says so in the rule set's `unterminated`
// check so the command line can warn.
//
// Names are bytes (Buffers) throughout; rules are parsed from the command
// line's text as virtiofsd does (one char per byte: clap hands it a UTF-8
// string and it pushes `ch as u8`, so only ASCII rules mean what they say;
// duofs refuses non-ASCII rules rather than truncate them).

export type XattrRuleType = 'prefix' | 'ok' | 'bad' | 'unsupported';

export interface XattrRule {
  type: XattrRuleType;
  client: boolean;
  server: boolean;
  key: Buffer;
  prepend: Buffer;
}

export class XattrMapError extends Error {
  override name = 'XattrMapError';
  /** 1-based number of the rule at fault, as virtiofsd counts (expanded map rules included) */
  constructor(
    message: string,
    readonly rule: number | undefined,
  ) {
    super(rule === undefined ? message : `rule ${rule}: ${message}`);
  }
}

/** What the client-side mapping says about one name. */
export type ClientMapping = { name: Buffer } | { errno: 'EPERM' | 'ENOTSUP' };

const TYPES = ['prefix', 'ok', 'bad', 'unsupported', 'map'] as const;

export class XattrMap {
  private constructor(readonly rules: readonly XattrRule[]) {}

  static parse(text: string): XattrMap {
    // Rust's str::trim / is_ascii_whitespace
    const ws = (ch: string): boolean => ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\f';
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the range \x00-\x7f is ASCII itself
    if (/[^\x00-\x7f]/.test(text)) throw new XattrMapError('only ASCII rules are supported', undefined);
    const s = text.replace(/^[\s]+|[\s]+$/g, '');
    const rules: XattrRule[] = [];
    let i = 0;
    while (i < s.length) {
      if (ws(s[i]!)) {
        i++;
        continue;
      }
      const n = rules.length + 1;
      const delim = s[i++]!;
      const field = (): string => {
        const end = s.indexOf(delim, i);
        if (end < 0) throw new XattrMapError('incomplete rule (a field lacks its closing separator)', n);
        const f = s.slice(i, end);
        i = end + 1;
        return f;
      };
      const type = field();
      if (!(TYPES as readonly string[]).includes(type)) {
        throw new XattrMapError(`invalid type ${JSON.stringify(type)} (prefix, ok, bad, unsupported, map)`, n);
      }
      if (type === 'map') {
        const key = Buffer.from(field(), 'latin1');
        const prepend = Buffer.from(field(), 'latin1');
        if (i < s.length) throw new XattrMapError('a map rule must be the last rule', n);
        rules.push({ type: 'prefix', client: true, server: true, key, prepend });
        if (key.length) {
          rules.push({ type: 'bad', client: true, server: true, key: prepend, prepend: key });
          rules.push({ type: 'ok', client: true, server: true, key: Buffer.alloc(0), prepend: Buffer.alloc(0) });
        } else {
          rules.push({ type: 'bad', client: true, server: true, key: Buffer.alloc(0), prepend: Buffer.alloc(0) });
        }
        continue;
      }
      const scope = field();
      if (scope !== 'all' && scope !== 'client' && scope !== 'server') {
        throw new XattrMapError(`invalid scope ${JSON.stringify(scope)} (all, client, server)`, n);
      }
      const key = Buffer.from(field(), 'latin1');
      const prepend = Buffer.from(field(), 'latin1');
      rules.push({ type: type as XattrRuleType, client: scope !== 'server', server: scope !== 'client', key, prepend });
    }
    if (!rules.length) throw new XattrMapError('no rules given', undefined);
    return new XattrMap(rules);
  }

  /** The rules (map expanded) in virtiofsd's syntax, e.g. for a dry run's JSON. */
  toJSON(): string {
    return this.rules
      .map(
        (r) =>
          `:${r.type}:${r.client && r.server ? 'all' : r.client ? 'client' : 'server'}:${r.key.toString('latin1')}:${r.prepend.toString('latin1')}:`,
      )
      .join(' ');
  }

  /** True when some client or some server name can fall through every rule. */
  get unterminated(): boolean {
    const catchAll = (side: 'client' | 'server'): boolean => this.rules.some((r) => r[side] && (side === 'client' ? r.key : r.prepend).length === 0);
    return !catchAll('client') || !catchAll('server');
  }

  /** The host name for a name the guest uses, or the errno to answer. */
  toHost(name: Buffer): ClientMapping {
    const r = this.rules.find((x) => x.client && startsWith(name, x.key));
    if (!r) return { errno: 'EPERM' };
    switch (r.type) {
      case 'ok':
        return { name };
      case 'bad':
        return { errno: 'EPERM' };
      case 'unsupported':
        return { errno: 'ENOTSUP' };
      case 'prefix':
        return { name: Buffer.concat([r.prepend, name]) };
    }
  }

  /** The guest's view of one host name; undefined = hidden. */
  toGuest(name: Buffer): Buffer | undefined {
    const r = this.rules.find((x) => x.server && startsWith(name, x.prepend));
    if (!r) return undefined;
    switch (r.type) {
      case 'ok':
        return name;
      case 'bad':
      case 'unsupported':
        return undefined;
      case 'prefix':
        return name.subarray(r.prepend.length);
    }
  }

  /** LISTXATTR: host names to the names the guest sees (hidden ones dropped, empty results dropped). */
  listToGuest(names: readonly Buffer[]): Buffer[] {
    const out: Buffer[] = [];
    for (const n of names) {
      const g = this.toGuest(n);
      if (g?.length) out.push(g);
    }
    return out;
  }
}

function startsWith(name: Buffer, prefix: Buffer): boolean {
  return name.length >= prefix.length && name.subarray(0, prefix.length).equals(prefix);
}
