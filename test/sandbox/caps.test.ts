// Capabilities of the serving process (src/sandbox/caps.ts, modcaps.ts):
// which set each model keeps, --modcaps as virtiofsd spells it, and the drop
// itself, checked on every thread from the outside (/proc/<pid>/task) and
// from the inside (what the process can still do, on its main thread and on
// each libuv pool thread).
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import { keptCapabilities, modelCaps, VIRTIOFSD_CAPS } from '../../src/sandbox/caps.js';
import { applyModcaps, ModcapsError, parseModcaps } from '../../src/sandbox/modcaps.js';
import { CAP_NAMES, capNumber } from '../../src/sys/caps.js';
import { makeTree, type TempTree } from '../support/tree.js';
import { capMask, runChild, type ChildRun } from './run-child.js';

const EPERM = 1;
const EACCES = 13;
const isRoot = process.geteuid?.() === 0;
const rootTest = isRoot ? test : test.skip;

describe('--modcaps, as virtiofsd parses it', () => {
  test('+ and - apply in order on top of the defaults; names in any case, without cap_', () => {
    expect(parseModcaps('+sys_admin:-chown')).toEqual([
      { action: '+', cap: 'sys_admin' },
      { action: '-', cap: 'chown' },
    ]);
    expect(parseModcaps('+SYS_ADMIN:-Mknod')).toEqual([
      { action: '+', cap: 'sys_admin' },
      { action: '-', cap: 'mknod' },
    ]);
    const r = applyModcaps(VIRTIOFSD_CAPS, '-mknod:-setfcap:+sys_admin');
    expect(r.kept).toEqual(['chown', 'dac_override', 'fowner', 'fsetid', 'setgid', 'setuid', 'sys_admin']);
    expect(r.disabled).toEqual(['mknod', 'setfcap']);
    expect(applyModcaps(VIRTIOFSD_CAPS, '+kill:-kill').kept).not.toContain('kill');
    expect(applyModcaps(VIRTIOFSD_CAPS, '-chown:+chown').kept).toContain('chown');
    expect(applyModcaps(VIRTIOFSD_CAPS, undefined).kept).toEqual([...VIRTIOFSD_CAPS].sort((a, b) => capNumber(a)! - capNumber(b)!));
  });

  test('every capability Linux 6.x has is a valid name', () => {
    expect(CAP_NAMES).toHaveLength(41);
    for (const n of CAP_NAMES) expect(parseModcaps(`+${n}`)).toEqual([{ action: '+', cap: n }]);
  });

  test('an unknown name, a cap_ prefix, a missing action or an empty item is an error naming it', () => {
    const msg = (s: string): string => {
      try {
        parseModcaps(s);
      } catch (e) {
        expect(e).toBeInstanceOf(ModcapsError);
        return (e as Error).message;
      }
      throw new Error(`${s} was accepted`);
    };
    expect(msg('+sys_admin:-frobnicate')).toBe("invalid capability 'FROBNICATE': failed to get the ID for the capability with name FROBNICATE");
    expect(msg('+cap_sys_admin')).toMatch(/'CAP_SYS_ADMIN'/);
    expect(msg('sys_admin')).toBe("invalid modcap action: expecting '+'|'-' but found 's'");
    expect(msg('+chown::-mknod')).toBe('empty modcap found: expected (+|-)capability:...');
    expect(msg('')).toBe('empty modcap found: expected (+|-)capability:...');
    expect(msg('+')).toMatch(/invalid capability ''/);
  });
});

describe('the set each security model keeps', () => {
  test("passthrough as root keeps virtiofsd's 8 plus DAC_READ_SEARCH for file handles", () => {
    expect(keptCapabilities({ model: 'passthrough', euid: 0 })).toEqual([
      'chown',
      'dac_override',
      'dac_read_search',
      'fowner',
      'fsetid',
      'setgid',
      'setuid',
      'mknod',
      'setfcap',
    ]);
    expect(keptCapabilities({ model: 'passthrough', euid: 0, fileHandles: false })).not.toContain('dac_read_search');
  });

  test("none drops SETUID/SETGID, the mapped models keep only what reaching other users' files needs", () => {
    expect(modelCaps('none')).toEqual(['chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'mknod', 'setfcap']);
    expect(modelCaps('mapped-xattr')).toEqual(['dac_override', 'dac_read_search', 'fowner']);
    expect(modelCaps('mapped-file')).toEqual(['dac_override', 'dac_read_search', 'fowner']);
  });

  test('not root: nothing, whatever --modcaps says (which is still checked)', () => {
    expect(keptCapabilities({ model: 'mapped-xattr', euid: 1000 })).toEqual([]);
    expect(keptCapabilities({ model: 'passthrough', euid: 1000, modcaps: '+sys_admin' })).toEqual([]);
    expect(() => keptCapabilities({ model: 'passthrough', euid: 1000, modcaps: '+bogus' })).toThrow(ModcapsError);
  });

  test('--modcaps applies; DAC_READ_SEARCH cannot be removed while file handles are in use', () => {
    expect(keptCapabilities({ model: 'passthrough', euid: 0, modcaps: '+sys_admin:-mknod' })).toEqual([
      'chown',
      'dac_override',
      'dac_read_search',
      'fowner',
      'fsetid',
      'setgid',
      'setuid',
      'sys_admin',
      'setfcap',
    ]);
    expect(() => keptCapabilities({ model: 'passthrough', euid: 0, modcaps: '-dac_read_search' })).toThrow(/DAC_READ_SEARCH/);
    expect(keptCapabilities({ model: 'passthrough', euid: 0, fileHandles: false, modcaps: '-dac_read_search' })).not.toContain('dac_read_search');
  });
});

describe('the drop, on every thread of a serving process', () => {
  let tree: TempTree;
  let kept: ChildRun;
  let none: ChildRun;
  const passthrough = keptCapabilities({ model: 'passthrough', euid: 0 });
  const POOL = 5; // not libuv's default 4, so a drop that assumed 4 would miss one

  beforeAll(async () => {
    if (!isRoot) return;
    tree = makeTree('duofs-caps-');
    fs.mkdirSync(path.join(tree.dir, 'k'));
    fs.mkdirSync(path.join(tree.dir, 'n'));
    [kept, none] = await Promise.all([
      runChild({ caps: passthrough, dir: path.join(tree.dir, 'k') }, POOL),
      runChild({ caps: [], dir: path.join(tree.dir, 'n') }, POOL),
    ]);
  }, 60_000);
  afterAll(() => tree?.cleanup());

  rootTest('the report names the kept set and reaches every pool thread', () => {
    const r = kept.result.caps!;
    expect(r.kept).toEqual(passthrough);
    expect(r.pool).toEqual({ threads: POOL, complete: true });
    expect(r.threads.filter((t) => t.role === 'pool')).toHaveLength(POOL);
    expect(r.threads.filter((t) => t.role === 'main').map((t) => t.tid)).toEqual([kept.result.pid]);
    for (const t of r.threads.filter((x) => x.role !== 'other')) expect(t.extra).toEqual([]);
  });

  rootTest('from the outside: main and pool threads hold exactly the kept set, in every set, bounding included', () => {
    for (const [run, want] of [
      [kept, capMask(passthrough)],
      [none, 0n],
    ] as const) {
      const pool = new Set(run.result.caps!.threads.filter((t) => t.role === 'pool').map((t) => t.tid));
      const reached = run.tasks.filter((t) => t.tid === run.result.pid || pool.has(t.tid));
      expect(reached).toHaveLength(POOL + 1);
      for (const t of reached) {
        expect({ tid: t.tid, prm: t.capPrm, eff: t.capEff, bnd: t.capBnd, inh: t.capInh, amb: t.capAmb }).toEqual({
          tid: t.tid,
          prm: want,
          eff: want,
          bnd: want,
          inh: 0n,
          amb: 0n,
        });
      }
    }
  });

  rootTest("threads out of reach (V8 platform workers, the inspector's signal thread) are reported as such", () => {
    const others = kept.result.caps!.threads.filter((t) => t.role === 'other');
    // Node 20 starts them before any JS runs: 4 V8 workers, a delayed-task scheduler, SignalInspector.
    expect(others.length).toBeGreaterThanOrEqual(1);
    expect(kept.tasks.length).toBe(kept.result.caps!.threads.length);
    for (const t of others) expect(t.extra.length).toBeGreaterThan(0);
  });

  rootTest("from the inside, passthrough's set: chown, DAC override and file handles work, mount does not", () => {
    expect(kept.result.checks).toMatchObject({ chownOther: 0, readOthers0600: 0, openByHandle: 0, mount: EPERM });
    expect(kept.result.poolChecks['chownOther']).toEqual(Array(POOL).fill(0));
  });

  rootTest('from the inside, nothing kept: chown, DAC override, handles and mount all fail, on every pool thread too', () => {
    expect(none.result.checks).toMatchObject({ chownOther: EPERM, readOthers0600: EACCES, openByHandle: EPERM, mount: EPERM });
    expect(none.result.poolChecks['chownOther']).toEqual(Array(POOL).fill(EPERM));
  });
});
