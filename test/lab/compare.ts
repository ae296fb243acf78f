// Compares CHECK results of several servers against a table of intended
// differences (test/lab/intended-differences.json).
//
// Rules: a check without an entry must give the same result on every server.
// A check with an entry must give, on each server, the result the entry names
// for that server, else for its protocol ("9p" or "virtiofs"), else for "*";
// a server the entry does not cover is a failure that asks for the entry to be
// extended. So a new 9p server inherits the protocol-level entries (things
// 9P2000.L or the guest's 9p client cannot do) and must match the other
// servers everywhere else (QEMU's own defects are keyed "qemu-9p"). An entry
// whose check no server printed is stale and fails too.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './lab.js';

export interface IntendedDifference {
  check: string;
  /** Server name, protocol ("9p", "virtiofs") or "*" -> the result, or the list of accepted results. */
  expect: Record<string, string | string[]>;
  reason: string;
}

export const intendedDifferencesPath = join(repoRoot, 'test', 'lab', 'intended-differences.json');

export function loadIntendedDifferences(path = intendedDifferencesPath): IntendedDifference[] {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { differences: IntendedDifference[] };
  const seen = new Set<string>();
  for (const d of doc.differences) {
    if (!d.check || !d.expect || !d.reason) throw new Error(`${path}: every entry needs check, expect and reason: ${JSON.stringify(d)}`);
    if (seen.has(d.check)) throw new Error(`${path}: two entries for ${d.check}`);
    seen.add(d.check);
  }
  return doc.differences;
}

export interface Comparison {
  problems: string[];
  /** Markdown table: check | one column per server | verdict. */
  table: string;
  checks: number;
  intended: number;
}

/**
 * results: server name -> (check -> result), servers in column order;
 * protocols: server name -> protocol (for entries keyed by protocol).
 */
export function compareChecks(results: Map<string, Map<string, string>>, protocols: Map<string, string>, intended: IntendedDifference[]): Comparison {
  const servers = [...results.keys()];
  const byCheck = new Map(intended.map((d) => [d.check, d]));
  const names: string[] = [];
  for (const m of results.values()) for (const k of m.keys()) if (!names.includes(k)) names.push(k);
  const problems: string[] = [];
  const rows: string[] = [];
  let intendedCount = 0;
  for (const check of names) {
    const got = servers.map((s) => results.get(s)!.get(check));
    const entry = byCheck.get(check);
    let verdict = 'same';
    if (!entry) {
      const missing = servers.filter((_, i) => got[i] === undefined);
      if (missing.length) {
        problems.push(`${check}: not printed by ${missing.join(', ')}`);
        verdict = 'MISSING';
      } else if (new Set(got).size > 1) {
        problems.push(
          `${check}: servers differ (${servers.map((s, i) => `${s}=${got[i]}`).join(', ')}) and test/lab/intended-differences.json has no entry for it`,
        );
        verdict = 'DIFFERS';
      }
    } else {
      verdict = new Set(got).size > 1 ? 'intended' : 'same (entry)';
      intendedCount++;
      servers.forEach((s, i) => {
        const proto = protocols.get(s);
        const want = entry.expect[s] ?? (proto !== undefined ? entry.expect[proto] : undefined) ?? entry.expect['*'];
        const ok = want === undefined ? false : Array.isArray(want) ? want.includes(got[i] ?? '') : want === got[i];
        if (want === undefined) {
          problems.push(`${check}: ${s} gave ${got[i]}; the intended-differences entry names no result for ${s} (add "${s}", its protocol, or "*")`);
          verdict = 'UNCOVERED';
        } else if (!ok) {
          problems.push(`${check}: ${s} gave ${got[i] ?? '(nothing)'}, intended ${JSON.stringify(want)} (${entry.reason})`);
          verdict = 'UNEXPECTED';
        }
      });
    }
    rows.push(`| ${check} | ${got.map((g) => (g ?? '—').replace(/\|/g, '\\|')).join(' | ')} | ${verdict} |`);
  }
  for (const d of intended) {
    if (!names.includes(d.check)) problems.push(`${d.check}: intended-differences entry, but no server printed this check (stale entry?)`);
  }
  const table = [`| check | ${servers.join(' | ')} | |`, `|---|${servers.map(() => '---|').join('')}---|`, ...rows].join('\n');
  return { problems, table, checks: names.length, intended: intendedCount };
}
