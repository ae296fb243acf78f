// The per-(peer, kind) log rate limiter on a fake clock: the burst, the
// refill, the suppressed counts on the next line and in summaries, the
// flush at session end, levels, and isolation between kinds and peers.
import { describe, expect, test } from '@jest/globals';
import { pino } from 'pino';
import { PeerLog, type LogClock, type LogLimits } from '../../src/log-limit.js';

interface Line {
  level: number;
  msg: string;
  peer?: string;
  kind?: string;
  suppressed?: number;
  n?: number;
}

class FakeClock implements LogClock {
  t = 0;
  private timers: { at: number; fn: () => void; live: boolean }[] = [];
  now(): number {
    return this.t;
  }
  later(fn: () => void, ms: number): { cancel(): void } {
    const timer = { at: this.t + ms, fn, live: true };
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.live = false;
      },
    };
  }
  /** Moves time on, firing due timers in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((x) => x.live && x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.live = false;
      this.t = due.at;
      due.fn();
    }
    this.t = end;
    this.timers = this.timers.filter((x) => x.live);
  }
  get armed(): number {
    return this.timers.filter((x) => x.live).length;
  }
}

function setup(limits: LogLimits | false = { burst: 3, perSecond: 1 }, level = 'debug') {
  const lines: Line[] = [];
  const log = pino(
    { level },
    {
      write: (s: string) => {
        lines.push(JSON.parse(s) as Line);
      },
    },
  );
  const clock = new FakeClock();
  const peer = new PeerLog(log, 'peer-a', limits, clock);
  return { lines, clock, peer, log };
}

/** Lines written for the flood, and the suppressed total they (and summaries) report. */
const tally = (lines: Line[]) => ({
  written: lines.filter((l) => !/suppressed/.test(l.msg)).length,
  suppressed: lines.reduce((n, l) => n + (l.suppressed ?? 0), 0),
});

describe('PeerLog', () => {
  test('writes the burst, then counts; the next allowed line carries the count', () => {
    const { lines, clock, peer } = setup();
    for (let n = 0; n < 10; n++) peer.warn('9p.bad-request', { n }, 'bad');
    expect(lines.map((l) => l.n)).toEqual([0, 1, 2]);
    expect(peer.unreported).toBe(7);
    clock.t += 1000; // one token back (the timer has not fired: time was set, not advanced)
    peer.warn('9p.bad-request', { n: 10 }, 'bad');
    expect(lines).toHaveLength(4);
    expect(lines[3]).toMatchObject({ n: 10, suppressed: 7, kind: '9p.bad-request', msg: 'bad' });
    expect(peer.unreported).toBe(0);
  });

  test('the refill is the rate: over a long flood, lines stay within burst + rate x time', () => {
    const { lines, clock, peer } = setup({ burst: 5, perSecond: 2 });
    // 100 lines per second for 60 s.
    for (let i = 0; i < 6000; i++) {
      peer.warn('fuse.bad-request', {}, 'bad');
      clock.advance(10);
    }
    peer.flush();
    expect(lines.length).toBeLessThanOrEqual(5 + 2 * 60 + 1);
    expect(lines.length).toBeGreaterThanOrEqual(2 * 60);
    const t = tally(lines);
    expect(t.written + t.suppressed).toBe(6000);
  });

  test('when the flood stops, a summary line reports the count once a token is back', () => {
    const { lines, clock, peer } = setup({ burst: 2, perSecond: 0.5 });
    for (let i = 0; i < 50; i++) peer.error('vhost-user.queue', { i }, 'queue broken');
    expect(lines).toHaveLength(2);
    expect(clock.armed).toBe(1);
    clock.advance(1999);
    expect(lines).toHaveLength(2);
    clock.advance(1);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ peer: 'peer-a', kind: 'vhost-user.queue', suppressed: 48, level: 50 });
    expect(lines[2]!.msg).toMatch(/suppressed.*queue broken/);
    expect(clock.armed).toBe(0); // nothing pending: no timer left behind
    clock.advance(60_000);
    expect(lines).toHaveLength(3);
  });

  test('flush at the end of a session reports every pending count, tokens or not', () => {
    const { lines, peer, clock } = setup({ burst: 1, perSecond: 0.001 });
    for (let i = 0; i < 5; i++) peer.warn('9p.bad-request', {}, 'bad');
    for (let i = 0; i < 4; i++) peer.debug('9p.failed', {}, 'enoent');
    expect(lines).toHaveLength(2);
    peer.flush();
    expect(lines.slice(2)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: '9p.bad-request', suppressed: 4, level: 40 }),
        expect.objectContaining({ kind: '9p.failed', suppressed: 3, level: 20 }),
      ]),
    );
    expect(lines).toHaveLength(4);
    expect(clock.armed).toBe(0);
    peer.flush(); // nothing twice
    expect(lines).toHaveLength(4);
    // The allowance is not given back by a flush (a reset device buys nothing).
    peer.warn('9p.bad-request', {}, 'bad');
    expect(lines).toHaveLength(4);
  });

  test('kinds are limited separately', () => {
    const { lines, peer } = setup({ burst: 2, perSecond: 0 });
    for (let i = 0; i < 10; i++) peer.warn('9p.bad-request', {}, 'bad');
    peer.warn('9p.frame', {}, 'frame');
    expect(lines.map((l) => l.msg)).toEqual(['bad', 'bad', 'frame']);
  });

  test('levels are limited separately: debug lines never spend the allowance of warnings', () => {
    const { lines, peer } = setup({ burst: 2, perSecond: 0 });
    for (let i = 0; i < 10; i++) peer.debug('fuse.forget', {}, 'noise');
    peer.warn('fuse.forget', {}, 'real');
    expect(lines.map((l) => l.msg)).toEqual(['noise', 'noise', 'real']);
    peer.flush();
    expect(lines[3]).toMatchObject({ kind: 'fuse.forget', suppressed: 8, level: 20 });
  });

  test('peers are limited separately', () => {
    const { lines, log, clock, peer } = setup({ burst: 2, perSecond: 0 });
    const other = new PeerLog(log, 'peer-b', { burst: 2, perSecond: 0 }, clock);
    for (let i = 0; i < 10; i++) peer.warn('9p.bad-request', { who: 'a' }, 'bad');
    other.warn('9p.bad-request', { who: 'b' }, 'bad');
    expect(lines.map((l) => (l as { who?: string }).who)).toEqual(['a', 'a', 'b']);
  });

  test('a line below the level costs no token and is not counted', () => {
    const { lines, peer } = setup({ burst: 2, perSecond: 0 }, 'info');
    expect(peer.wants('debug')).toBe(false);
    expect(peer.wants('warn')).toBe(true);
    for (let i = 0; i < 10; i++) peer.debug('9p.bad-request', {}, 'quiet');
    expect(peer.unreported).toBe(0);
    peer.warn('9p.bad-request', {}, 'loud');
    peer.warn('9p.bad-request', {}, 'loud');
    expect(lines.map((l) => l.msg)).toEqual(['loud', 'loud']);
  });

  test('limits off: every line is written', () => {
    const { lines, peer, clock } = setup(false);
    for (let i = 0; i < 500; i++) peer.warn('9p.bad-request', {}, 'bad');
    expect(lines).toHaveLength(500);
    expect(clock.armed).toBe(0);
  });
});
