// --modcaps, as virtiofsd 1.14 reads it (parse_modcaps in its main.rs): a
// ':'-separated list, each item '+name' (keep it) or '-name' (drop it), applied
// in order on top of the default set; names are libcap-ng's, without `cap_`,
// in any case (virtiofsd upper-cases them, libcap-ng compares ignoring
// case). The messages are virtiofsd's, so scripts that grep them still work.
import { capNumber, CAP_NAMES, type CapName } from '../sys/caps.js';

export class ModcapsError extends Error {
  override name = 'ModcapsError';
}

export interface ModcapsOp {
  action: '+' | '-';
  cap: CapName;
}

/** The operations of a --modcaps value, in order; throws ModcapsError naming what is wrong. */
export function parseModcaps(spec: string): ModcapsOp[] {
  const ops: ModcapsOp[] = [];
  for (const item of spec.split(':')) {
    if (item === '') throw new ModcapsError('empty modcap found: expected (+|-)capability:...');
    const action = String.fromCodePoint(item.codePointAt(0)!);
    const name = item.slice(action.length).toUpperCase();
    if (action !== '+' && action !== '-') {
      throw new ModcapsError(`invalid modcap action: expecting '+'|'-' but found '${action}'`);
    }
    const n = capNumber(name);
    if (n === undefined) {
      throw new ModcapsError(`invalid capability '${name}': failed to get the ID for the capability with name ${name}`);
    }
    ops.push({ action, cap: CAP_NAMES[n]! });
  }
  return ops;
}

export interface ModcapsResult {
  kept: CapName[];
  /** what a '-' removed (and no later '+' put back) */
  disabled: CapName[];
}

/** `defaults` with a --modcaps value applied (undefined: no --modcaps). */
export function applyModcaps(defaults: readonly CapName[], spec: string | undefined): ModcapsResult {
  const kept = new Set<CapName>(defaults);
  const disabled = new Set<CapName>();
  for (const op of spec === undefined ? [] : parseModcaps(spec)) {
    if (op.action === '+') {
      disabled.delete(op.cap);
      kept.add(op.cap);
    } else {
      kept.delete(op.cap);
      disabled.add(op.cap);
    }
  }
  const order = (s: Set<CapName>): CapName[] => CAP_NAMES.filter((c) => s.has(c));
  return { kept: order(kept), disabled: order(disabled) };
}
