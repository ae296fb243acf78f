// CPU profile summaries (self and total time per function, idle excluded).
import { describe, expect, test } from '@jest/globals';
import { formatProfileSummary, summarizeProfile, type CpuProfile } from '../../src/bench/profile.js';

const frame = (functionName: string, url = '', lineNumber = 0) => ({ functionName, url, lineNumber, columnNumber: 0, scriptId: '0' });

// (root) -> serve (a.js:10) -> pread (native)
//        -> (idle)
//        -> (garbage collector)
const profile: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame('(root)'), children: [2, 4, 5] },
    { id: 2, callFrame: frame('serve', 'file:///repo/dist/a.js', 9), children: [3] },
    { id: 3, callFrame: frame('pread') },
    { id: 4, callFrame: frame('(idle)') },
    { id: 5, callFrame: frame('(garbage collector)') },
  ],
  startTime: 0,
  endTime: 10_000,
  // sample i lasts until sample i+1: serve 1 ms, pread 3 ms, idle 5 ms, gc 0 ms (the last sample has no successor)
  samples: [2, 3, 3, 3, 4, 4, 4, 4, 4, 5],
  timeDeltas: [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
};

describe('summarizeProfile', () => {
  test('self and total time, idle kept apart, paths relative to the repository', () => {
    const s = summarizeProfile(profile, { root: '/repo' });
    expect(s.durationMs).toBe(10);
    expect(s.idleMs).toBe(5);
    expect(s.gcMs).toBe(0);
    expect(s.busyMs).toBe(5);
    expect(s.bySelf.map((h) => [h.where, h.selfMs])).toEqual([
      ['pread (native)', 3],
      ['serve (dist/a.js:10)', 1],
    ]);
    const serve = s.byTotal.find((h) => h.where === 'serve (dist/a.js:10)')!;
    expect(serve.totalMs).toBe(4);
    expect(serve.totalPct).toBeCloseTo(80);
    expect(s.byTotal.some((h) => h.where === '(idle)')).toBe(false);
  });

  test('without timeDeltas, hit counts share the duration', () => {
    const p: CpuProfile = {
      ...profile,
      samples: undefined,
      timeDeltas: undefined,
      nodes: profile.nodes.map((n) => ({ ...n, hitCount: n.id === 3 ? 3 : n.id === 4 ? 1 : 0 })),
    };
    const s = summarizeProfile(p);
    expect(s.bySelf[0]!.where).toBe('pread (native)');
    expect(s.bySelf[0]!.selfMs).toBeCloseTo(7.5);
    expect(s.idleMs).toBeCloseTo(2.5);
  });

  test('formats a readable summary', () => {
    const text = formatProfileSummary(summarizeProfile(profile, { root: '/repo' }), 'duofs');
    expect(text).toMatch(/^duofs: 0\.0 s profiled, busy 0\.0 s \(50%\)/);
    expect(text).toContain('   60.0%  pread (native)');
    expect(text).toContain('   80.0%  serve (dist/a.js:10)');
  });
});
