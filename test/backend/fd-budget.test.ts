// The open-fd budget: how sessions share the pool RLIMIT_NOFILE leaves
// after the reserve and the inode table's share.
import { Writable } from 'node:stream';
import pino from 'pino';
import { Errno, SysError } from '../../src/sys/index.js';
import { FdBudget, defaultFdLimits, type FdAccount } from '../../src/backend/fd-budget.js';

function logged(): { log: pino.Logger; lines: () => { level: number; msg: string; session?: string; refused?: number }[] } {
  const out: string[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(c, _e, cb) {
        out.push(String(c));
        cb();
      },
    }),
  );
  return {
    log,
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
  };
}

/** Charges until refused; returns how many succeeded and the refusal's errno. */
function fill(a: FdAccount, max = 10_000): { n: number; errno: number | undefined } {
  for (let n = 0; n < max; n++) {
    try {
      a.charge('open', `file ${n}`);
    } catch (e) {
      return { n, errno: e instanceof SysError ? e.errno : -1 };
    }
  }
  return { n: max, errno: undefined };
}

test('the default split of a limit leaves a reserve, an inode share and a pool; one session gets half the pool', () => {
  expect(defaultFdLimits(256)).toEqual({ limit: 256, reserve: 64, inodeShare: 96, perSession: 48, floor: 6 });
  expect(defaultFdLimits(1_048_576)).toMatchObject({ reserve: 4096, inodeShare: 522_240, perSession: 261_120, floor: 32 });
  expect(defaultFdLimits(1024, 100).perSession).toBe(100);
  expect(defaultFdLimits(1024, 1e9).perSession).toBe(448); // never more than the pool
});

test('a session is refused with EMFILE at its cap, and others still get fds', () => {
  const { log } = logged();
  const b = new FdBudget(defaultFdLimits(256), log);
  const hog = b.account('hog');
  const other = b.account('other');
  expect(fill(hog)).toEqual({ n: 48, errno: Errno.EMFILE });
  expect(fill(other).n).toBe(48 - 2 * 6); // its cap, minus the floors kept for two newcomers
  const late = b.account('late');
  expect(fill(late).n).toBe(6); // its floor was kept for it
});

test('many sessions cannot drain the pool below the floor of a session that holds nothing yet', () => {
  const { log } = logged();
  const b = new FdBudget({ limit: 1000, reserve: 100, inodeShare: 100, perSession: 800, floor: 10 }, log);
  const quiet = b.account('quiet');
  const hogs = [b.account('h1'), b.account('h2'), b.account('h3')];
  for (const h of hogs) expect(fill(h).errno).toBe(Errno.EMFILE);
  expect(fill(quiet).n).toBe(10);
  expect(b.inUse).toBeLessThanOrEqual(800); // never past the pool
});

test('idle sessions keep at most half the pool for their floors', () => {
  const { log } = logged();
  const b = new FdBudget({ limit: 1000, reserve: 100, inodeShare: 100, perSession: 800, floor: 10 }, log);
  for (let i = 0; i < 200; i++) b.account(`idle${i}`); // 2000 fds of floors: more than the pool
  expect(fill(b.account('busy')).n).toBe(400);
  expect(fill(b.account('late')).n).toBe(10); // still its floor
});

test('the pool shrinks when the inode table holds more than its share (no file handles)', () => {
  const { log } = logged();
  let inodeFds = 0;
  const b = new FdBudget({ limit: 1000, reserve: 100, inodeShare: 100, perSession: 800, floor: 10 }, log, () => inodeFds);
  expect(b.pool).toBe(800);
  inodeFds = 500;
  expect(b.pool).toBe(400);
  const a = b.account('a');
  expect(fill(a).n).toBe(400 - 2 * 10);
});

test('one warn line per refusal episode names the session; closing a quarter ends it with a count', () => {
  const { log, lines } = logged();
  const b = new FdBudget({ limit: 1000, reserve: 100, inodeShare: 100, perSession: 40, floor: 4 }, log);
  const a = b.account('tcp:10.0.0.1:999');
  expect(fill(a).n).toBe(40);
  for (let i = 0; i < 100; i++) expect(fill(a).n).toBe(0);
  for (let i = 0; i < 5; i++) a.give(); // hovering at the limit: still the same episode
  expect(fill(a).n).toBe(5);
  let warns = lines().filter((l) => l.level === 40);
  expect(warns).toHaveLength(1);
  expect(warns[0]!.session).toBe('tcp:10.0.0.1:999');
  expect(warns[0]!.msg).toContain('open-file budget');
  for (let i = 0; i < 10; i++) a.give();
  const info = lines().filter((l) => l.level === 30);
  expect(info).toHaveLength(1);
  expect(info[0]!.refused).toBe(102);
  fill(a);
  warns = lines().filter((l) => l.level === 40);
  expect(warns).toHaveLength(2); // a new episode
});

test('fds given back after the session closed go back to the pool; a closed account opens nothing', () => {
  const { log } = logged();
  const b = new FdBudget({ limit: 1000, reserve: 100, inodeShare: 100, perSession: 800, floor: 10 }, log);
  const a = b.account('a');
  fill(a, 50);
  a.close();
  expect(b.sessions).toBe(0);
  for (let i = 0; i < 50; i++) a.give();
  expect(b.inUse).toBe(0);
  expect(() => a.charge('open', 'x')).toThrow(SysError);
  const c = b.account('c');
  expect(fill(c).n).toBe(800 - 2 * 10);
});

test('open() gives the fd back when the open itself fails', () => {
  const { log } = logged();
  const b = new FdBudget({ limit: 1000, reserve: 100, inodeShare: 100, perSession: 800, floor: 10 }, log);
  const a = b.account('a');
  expect(() =>
    a.open('open', 'x', () => {
      throw new SysError(Errno.EACCES, 'open', 'x');
    }),
  ).toThrow('EACCES');
  expect(a.held).toBe(0);
  expect(b.inUse).toBe(0);
  const h = a.open('open', 'y', () => ({ account: undefined as FdAccount | undefined }));
  expect(h.account).toBe(a);
  expect(a.held).toBe(1);
});
