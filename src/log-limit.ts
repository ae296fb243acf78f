// Rate limiting of the log lines a peer (a guest, a client) can cause, so
// the log is not a denial-of-service channel: one token bucket per
// (peer, kind, level). A peer spends a token per line; once the burst is
// spent, lines of that kind are counted instead of written, and the next
// line written for that key carries `suppressed: N`; so does a summary line
// when the flood stops (once a token is back) and when the session ends
// (`flush()`).
//
// Kinds are fixed call-site names (a `LogKind`), never guest values, so a
// peer holds at most one bucket per kind and level; levels are apart so
// that debug noise never spends the allowance of warnings. Trace lines
// (per-request tracing) do not go through here: an operator who asks for
// trace gets every request. A line whose level is off costs neither a
// token nor a count, and callers test `wants()` before building the fields
// of lines that good requests can cause, so those allocate nothing.
import type { Level } from 'pino';
import type { Logger } from './log.js';

/** The kinds of line a peer can cause. One bucket per (peer, kind, level). */
export type LogKind =
  | '9p.frame'
  | '9p.bad-request'
  | '9p.failed'
  | '9p.unexpected'
  | '9p.version'
  | '9p.attach'
  | 'virtio-9p.chain'
  | 'virtio-9p.reply'
  | 'fuse.bad-request'
  | 'fuse.failed'
  | 'fuse.unexpected'
  | 'fuse.init'
  | 'fuse.forget'
  | 'fuse.migration'
  | 'virtio-fs.chain'
  | 'virtio-fs.reply'
  | 'dev-fuse.write'
  | 'vhost-user.connection'
  | 'vhost-user.refused'
  | 'vhost-user.dropped'
  | 'vhost-user.unexpected'
  | 'vhost-user.queue'
  | 'vhost-user.memory'
  | 'vhost-user.migration'
  | '9p.stream';

export interface LogLimits {
  /** lines of one kind a peer may cause at once */
  burst: number;
  /** lines per second after that (the refill rate) */
  perSecond: number;
}

/** 20 lines of a kind at once, then one every 10 s, per peer. */
export const DEFAULT_LOG_LIMITS: LogLimits = { burst: 20, perSecond: 0.1 };

/** The limiter's view of time and timers (a fake in tests). */
export interface LogClock {
  /** milliseconds, monotonic */
  now(): number;
  /** runs `fn` once after `ms`; must not keep the process alive */
  later(fn: () => void, ms: number): { cancel(): void };
}

export const realClock: LogClock = {
  now: () => performance.now(),
  later: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

type LimitedLevel = Exclude<Level, 'trace'>;

class Bucket {
  tokens: number;
  at: number;
  suppressed = 0;
  /** the message of the last suppressed line, for the summary */
  msg = '';
  constructor(
    readonly level: LimitedLevel,
    burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }
}

/**
 * The log lines of one peer. Shared by everything that serves that peer
 * (a vhost-user device keeps one across guest resets and reconnections, so
 * resetting the device does not buy a fresh allowance).
 */
export class PeerLog {
  /** by level, then kind */
  private readonly buckets: Record<LimitedLevel, Map<LogKind, Bucket>> = {
    fatal: new Map(),
    error: new Map(),
    warn: new Map(),
    info: new Map(),
    debug: new Map(),
  };
  private readonly burst: number;
  private readonly perMs: number;
  private readonly unlimited: boolean;
  private timer: { cancel(): void } | null = null;
  private pending = 0;

  constructor(
    readonly log: Logger,
    /** names the peer in summary lines */
    readonly peer: string,
    limits: LogLimits | false = DEFAULT_LOG_LIMITS,
    private readonly clock: LogClock = realClock,
  ) {
    this.unlimited = limits === false;
    this.burst = limits ? Math.max(1, limits.burst) : Infinity;
    this.perMs = limits ? Math.max(0, limits.perSecond) / 1000 : 0;
  }

  /** True when lines at `level` are written at all (test before building a line's fields). */
  wants(level: LimitedLevel): boolean {
    return this.log.isLevelEnabled(level);
  }

  error(kind: LogKind, fields: Record<string, unknown>, msg: string): void {
    this.write('error', kind, fields, msg);
  }

  warn(kind: LogKind, fields: Record<string, unknown>, msg: string): void {
    this.write('warn', kind, fields, msg);
  }

  info(kind: LogKind, fields: Record<string, unknown>, msg: string): void {
    this.write('info', kind, fields, msg);
  }

  debug(kind: LogKind, fields: Record<string, unknown>, msg: string): void {
    this.write('debug', kind, fields, msg);
  }

  /** Lines suppressed and not yet reported, over all kinds. */
  get unreported(): number {
    let n = 0;
    for (const m of Object.values(this.buckets)) for (const b of m.values()) n += b.suppressed;
    return n;
  }

  /** Writes the line unless the peer spent its allowance for `kind`; then counts it. */
  write(level: LimitedLevel, kind: LogKind, fields: Record<string, unknown>, msg: string): void {
    if (!this.log.isLevelEnabled(level)) return;
    if (this.unlimited) {
      this.log[level](fields, msg);
      return;
    }
    const b = this.bucket(level, kind);
    if (!this.take(b)) {
      b.suppressed++;
      b.msg = msg;
      this.pending++;
      this.timer ??= this.clock.later(() => this.sweep(), this.refillMs());
      return;
    }
    if (b.suppressed === 0) {
      this.log[level](fields, msg);
      return;
    }
    const n = b.suppressed;
    this.pending -= n;
    b.suppressed = 0;
    this.log[level]({ ...fields, kind, suppressed: n }, msg);
  }

  /**
   * Reports every count still pending, allowance or not: the session ends
   * (the peer is gone or reset its device). The buckets stay as they are:
   * a peer that comes back gets no fresh allowance.
   */
  flush(): void {
    this.timer?.cancel();
    this.timer = null;
    if (this.pending === 0) return;
    for (const m of Object.values(this.buckets)) for (const [kind, b] of m) if (b.suppressed) this.summary(kind, b);
    this.pending = 0;
  }

  private bucket(level: LimitedLevel, kind: LogKind): Bucket {
    const m = this.buckets[level];
    let b = m.get(kind);
    if (!b) {
      b = new Bucket(level, this.burst, this.clock.now());
      m.set(kind, b);
    }
    return b;
  }

  private take(b: Bucket): boolean {
    const now = this.clock.now();
    if (b.tokens < this.burst) b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Time for one token to come back (the summary's period), at least 1 s. */
  private refillMs(): number {
    return this.perMs > 0 ? Math.max(1000, 1 / this.perMs) : 60_000;
  }

  /**
   * The flood stopped (or paused): each kind with a pending count gets one
   * summary line, paid for with a token like any line, so a peer's lines
   * stay within its allowance; kinds still without a token wait for the next
   * sweep.
   */
  private sweep(): void {
    this.timer = null;
    for (const m of Object.values(this.buckets)) {
      for (const [kind, b] of m) {
        if (b.suppressed && this.take(b)) {
          this.pending -= b.suppressed;
          this.summary(kind, b);
        }
      }
    }
    if (this.pending > 0) this.timer = this.clock.later(() => this.sweep(), this.refillMs());
  }

  private summary(kind: LogKind, b: Bucket): void {
    this.log[b.level]({ peer: this.peer, kind, suppressed: b.suppressed }, `log lines suppressed (rate limit), the last: ${b.msg}`);
    b.suppressed = 0;
  }
}
