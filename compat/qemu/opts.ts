// QEMU's "QemuOpts" option strings (util/qemu-option.c), as used by -fsdev,
// -virtfs, -device and friends: comma-separated `name=value` pairs where a
// doubled comma inside a value stands for one literal comma, an optional
// first positional value for the list's implied option (e.g. `local` for
// `fsdriver=local`), and legacy bare flags (`readonly` = `readonly=on`,
// `noreadonly` = `readonly=off`). A later occurrence of an option wins, as
// qemu_opt_get() returns the last one.
import { CompatError } from '../errors.js';

export interface QemuOpt {
  name: string;
  value: string;
  /** true when the option was a bare flag (`readonly`, `noreadonly`) */
  flag: boolean;
}

/** Reads a value up to the next single comma; `,,` is a literal comma. */
function readValue(s: string, at: number): { value: string; next: number } {
  let value = '';
  let i = at;
  while (i < s.length) {
    const ch = s[i]!;
    if (ch === ',') {
      if (s[i + 1] === ',') {
        value += ',';
        i += 2;
        continue;
      }
      break;
    }
    value += ch;
    i++;
  }
  return { value, next: i };
}

/**
 * Splits a QemuOpts string into its options, in order. `impliedName` is the
 * name a leading positional value gets (QEMU's implied_opt_name).
 */
export function parseQemuOpts(spec: string, impliedName?: string): QemuOpt[] {
  const out: QemuOpt[] = [];
  let i = 0;
  let first = true;
  while (i < spec.length) {
    // The name runs to the first '=' or ',' (names cannot contain commas).
    let j = i;
    while (j < spec.length && spec[j] !== '=' && spec[j] !== ',') j++;
    const head = spec.slice(i, j);
    if (first && impliedName !== undefined && head !== '' && spec[j] !== '=') {
      const { value, next } = readValue(spec, i);
      out.push({ name: impliedName, value, flag: false });
      i = next + 1;
    } else if (spec[j] === '=') {
      if (head === '') throw new CompatError(`option string ${JSON.stringify(spec)}: a value without an option name at position ${i + 1}`);
      const { value, next } = readValue(spec, j + 1);
      out.push({ name: head, value, flag: false });
      i = next + 1;
    } else {
      if (head === '') throw new CompatError(`option string ${JSON.stringify(spec)}: empty option at position ${i + 1}`);
      // QEMU's legacy short-form booleans.
      if (head.startsWith('no') && head.length > 2) out.push({ name: head.slice(2), value: 'off', flag: true });
      else out.push({ name: head, value: 'on', flag: true });
      i = j + 1;
    }
    first = false;
  }
  return out;
}

/** QEMU's boolean spellings (qapi_bool_parse). */
export function parseQemuBool(name: string, value: string): boolean {
  switch (value) {
    case 'on':
    case 'yes':
    case 'true':
    case 'y':
      return true;
    case 'off':
    case 'no':
    case 'false':
    case 'n':
      return false;
    default:
      throw new CompatError(`${name}=${value}: expected on/off, yes/no or true/false`, name);
  }
}

/**
 * QEMU's QEMU_OPT_NUMBER: strtoull with base 0, so `0644` is octal, `0x1a4`
 * hexadecimal and `644` decimal. Negative and non-numeric values are refused.
 */
export function parseQemuNumber(name: string, value: string): number {
  const m = /^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(value.trim());
  if (!m) throw new CompatError(`${name}=${value}: not a number (QEMU reads 0644 as octal, 0x1a4 as hex, 420 as decimal)`, name);
  const s = m[1]!;
  const n =
    s.startsWith('0x') || s.startsWith('0X')
      ? parseInt(s.slice(2), 16)
      : s.length > 1 && s.startsWith('0')
        ? parseInt(s.slice(1), 8)
        : parseInt(s, 10);
  if (!Number.isSafeInteger(n)) throw new CompatError(`${name}=${value}: number out of range`, name);
  return n;
}

/** Escapes a value for a QemuOpts string (a comma becomes `,,`). */
export function escapeQemuValue(value: string): string {
  return value.replaceAll(',', ',,');
}
