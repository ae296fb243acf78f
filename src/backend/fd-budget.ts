// File-descriptor budgets: how the process's RLIMIT_NOFILE is shared, so
// that no session (a 9P connection, a virtio-fs or virtio-9p guest, the
// FUSE mount) can take the fds that the others, new connections and the
// server itself need.
//
// The limit is split three ways:
//   reserve      never handed to sessions: listening and accepted sockets,
//                vhost-user sockets, eventfds and memory fds, logs, Node's
//                own fds, transient fds inside one request (statfs, mapped
//                metadata files), the inode table's overshoot until its
//                next eviction;
//   inode share  the inode table's O_PATH fds (walk-only 9P fids and FUSE
//                lookups use these, shared by everyone; past this share the
//                least used become file handles where the daemon may
//                reopen them);
//   pool         open files and directory streams, charged to the session
//                that opened them.
// A session may hold at most `perSession` of the pool; besides, every live
// session below `floor` open fds can always get up to `floor`, and `floor`
// more are kept for each of the next NEWCOMERS sessions (floors together
// keep at most half the pool), so one session at its cap never leaves
// another with nothing. A refused open is EMFILE on
// that session only, with one warn line per episode (not per refusal).
import { Errno, SysError } from '../sys/index.js';
import type { Logger } from '../log.js';

/** Sessions that may still arrive and find `floor` fds waiting for them. */
const NEWCOMERS = 2;

export interface FdBudgetLimits {
  /** RLIMIT_NOFILE (soft) the split starts from */
  limit: number;
  /** fds never handed to sessions */
  reserve: number;
  /** fds kept for the inode table */
  inodeShare: number;
  /** open files + directories one session may hold */
  perSession: number;
  /** open fds every session can count on */
  floor: number;
}

/**
 * The default split of `limit`: a reserve of 1/8 (64 to 4096), half of the
 * rest for the inode table, the other half as the pool; one session may hold
 * half of the pool (or `perSession` if given, at most the pool).
 */
export function defaultFdLimits(limit: number, perSession?: number): FdBudgetLimits {
  const reserve = Math.min(4096, Math.max(64, Math.floor(limit / 8)));
  const rest = Math.max(0, limit - reserve);
  const inodeShare = Math.max(32, Math.floor(rest / 2));
  const pool = Math.max(0, rest - inodeShare);
  const floor = Math.max(4, Math.min(32, Math.floor(pool / 16)));
  const cap = perSession ?? Math.max(floor, Math.floor(pool / 2));
  return { limit, reserve, inodeShare, perSession: Math.min(cap, Math.max(pool, floor)), floor };
}

export class FdBudget {
  private used = 0;
  /** sum over live sessions of max(0, floor - held) */
  private owedToSessions = 0;
  private readonly accounts = new Set<FdAccount>();

  constructor(
    readonly limits: FdBudgetLimits,
    private readonly log: Logger,
    /** fds the inode table holds right now (it may exceed its share when it cannot evict) */
    private readonly inodeFds: () => number = () => 0,
  ) {}

  /** fds sessions may hold between them right now. */
  get pool(): number {
    const { limit, reserve, inodeShare } = this.limits;
    return Math.max(0, limit - reserve - Math.max(inodeShare, this.inodeFds()));
  }

  /** Open fds charged to sessions. */
  get inUse(): number {
    return this.used;
  }

  get sessions(): number {
    return this.accounts.size;
  }

  /** A new session's account; close it when the session ends. */
  account(label: string): FdAccount {
    const a = new FdAccount(this, label);
    this.accounts.add(a);
    this.owedToSessions += this.limits.floor;
    return a;
  }

  /** @internal */
  take(a: FdAccount): 'ok' | 'session' | 'pool' {
    const { perSession, floor } = this.limits;
    if (a.held >= perSession) return 'session';
    const pool = this.pool;
    if (a.held < floor) {
      // Its floor is counted in owedToSessions already: only the pool itself stops it.
      if (this.used >= pool) return 'pool';
      this.owedToSessions--;
    } else {
      // Floors are kept for at most half the pool, so that many idle
      // connections cannot hold everyone else at their floor.
      const kept = Math.min(this.owedToSessions + NEWCOMERS * floor, Math.floor(pool / 2));
      if (this.used + 1 + kept > pool) return 'pool';
    }
    this.used++;
    return 'ok';
  }

  /** @internal called before `a.held` goes down by one */
  give(a: FdAccount): void {
    this.used--;
    if (this.accounts.has(a) && a.held - 1 < this.limits.floor) this.owedToSessions++;
  }

  /** @internal */
  closed(a: FdAccount): void {
    if (!this.accounts.delete(a)) return;
    this.owedToSessions -= Math.max(0, this.limits.floor - a.held);
  }

  /** @internal one line when a session starts being refused */
  refusedLine(a: FdAccount, why: 'session' | 'pool', op: string, what: string): void {
    const l = this.limits;
    this.log.warn(
      {
        session: a.label,
        op,
        object: what,
        errno: 'EMFILE',
        held: a.held,
        perSession: l.perSession,
        poolInUse: this.used,
        pool: this.pool,
        sessions: this.accounts.size,
      },
      why === 'session'
        ? `${a.label} is over its open-file budget (${a.held} of ${l.perSession} open): its opens get EMFILE until it closes some`
        : `${a.label}: open-file budget pool exhausted (${this.used} of ${this.pool} in use by ${this.accounts.size} sessions): its opens get EMFILE`,
    );
  }

  /** @internal */
  recoveredLine(a: FdAccount, refused: number): void {
    this.log.info(
      { session: a.label, held: a.held, refused },
      `${a.label} is back under its open-file budget (${refused} opens were refused with EMFILE)`,
    );
  }
}

/** A handle whose fd is charged to an account (OpenFile, DirStream). */
export interface Charged {
  account: FdAccount | undefined;
}

/** One session's share of the open-fd pool. */
export class FdAccount {
  /** open fds charged to this session */
  held = 0;
  private refused = 0;
  /** held when the current refusal episode began; -1 = no episode */
  private refusedAt = -1;
  private refusedFor: 'session' | 'pool' = 'session';
  private closed = false;

  constructor(
    private readonly budget: FdBudget,
    readonly label: string,
  ) {}

  /**
   * Charges one fd for `op` on `what`; throws SysError(EMFILE) when the
   * session is over its budget or the pool is exhausted. Every successful
   * charge must be given back with give() when its fd is closed.
   */
  charge(op: string, what: string): void {
    const r = this.closed ? 'session' : this.budget.take(this);
    if (r !== 'ok') {
      if (this.refusedAt < 0) {
        this.refusedAt = this.held;
        this.refusedFor = r;
        this.budget.refusedLine(this, r, op, what);
      }
      this.refused++;
      throw new SysError(
        Errno.EMFILE,
        op,
        r === 'session' ? `${what}: ${this.label} holds ${this.held} open files (its budget)` : `${what}: the open-file pool is exhausted`,
      );
    }
    this.held++;
    // Refused for the pool, not for itself: it ends when room is back.
    if (this.refusedAt >= 0 && this.refusedFor === 'pool') this.endEpisode();
  }

  private endEpisode(): void {
    this.budget.recoveredLine(this, this.refused);
    this.refused = 0;
    this.refusedAt = -1;
  }

  give(): void {
    if (this.held <= 0) return;
    this.budget.give(this);
    this.held--;
    // The episode ends once the session is well below where it was refused
    // (hysteresis: a client hovering at the limit gets no line per request).
    if (this.refusedAt >= 0 && this.refusedFor === 'session' && this.held <= Math.floor((this.refusedAt * 3) / 4)) this.endEpisode();
  }

  /** Charges one fd around `open`; the handle gives it back when its fd closes. */
  open<T extends Charged>(op: string, what: string, open: () => T): T;
  open<T extends Charged>(op: string, what: string, open: () => T | Promise<T>): T | Promise<T>;
  open<T extends Charged>(op: string, what: string, open: () => T | Promise<T>): T | Promise<T> {
    return this.openWith<T>(op, what, open, (h) => h);
  }

  /** open() for calls whose result carries the handle (`handleOf`); the open may complete later. */
  openWith<T>(op: string, what: string, open: () => T, handleOf: (r: T) => Charged): T;
  openWith<T>(op: string, what: string, open: () => T | Promise<T>, handleOf: (r: T) => Charged): T | Promise<T>;
  openWith<T>(op: string, what: string, open: () => T | Promise<T>, handleOf: (r: T) => Charged): T | Promise<T> {
    this.charge(op, what);
    let r: T | Promise<T>;
    try {
      r = open();
    } catch (e) {
      this.give();
      throw e;
    }
    const charge = (v: T): T => {
      handleOf(v).account = this;
      return v;
    };
    if (!(r instanceof Promise)) return charge(r);
    return r.then(charge, (e: unknown) => {
      this.give();
      throw e;
    });
  }

  /** The session ended. Handles still open give their fds back as they close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.budget.closed(this);
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
