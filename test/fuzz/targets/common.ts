// What the server-side fuzz targets share: a scratch export with a few files
// in it, and a logger that keeps the lines that mean the server hit a bug.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { Finding } from '../engine.js';

export interface Scratch {
  base: string;
  dir: string;
  cleanup(): void;
}

/** An export (with an "outside" sibling holding a secret the fuzzer must never change). */
export function scratchExport(prefix: string): Scratch {
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
  const dir = path.join(base, 'export');
  fs.mkdirSync(dir);
  fs.mkdirSync(path.join(base, 'outside'));
  fs.writeFileSync(path.join(base, 'outside', 'secret'), 'outside-secret\n');
  fs.writeFileSync(path.join(dir, 'hello'), 'hello world\n');
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub', 'f'), Buffer.alloc(5000, 0x61));
  fs.symlinkSync('../outside/secret', path.join(dir, 'escape'));
  return { base, dir, cleanup: () => fs.rmSync(base, { recursive: true, force: true }) };
}

/** Throws a Finding when something outside the export changed. */
export function checkOutside(s: Scratch): void {
  const names = fs.readdirSync(s.base).sort();
  if (names.join(',') !== 'export,outside') throw new Finding('escape', `the export's parent now holds ${names.join(', ')}`);
  const inside = fs.readdirSync(path.join(s.base, 'outside'));
  if (inside.join(',') !== 'secret' || fs.readFileSync(path.join(s.base, 'outside', 'secret'), 'utf8') !== 'outside-secret\n') {
    throw new Finding('escape', `outside/ changed: ${inside.join(', ')}`);
  }
}

export interface BugLog {
  log: Logger;
  /** error lines that mean an exception the server did not expect */
  take(): string[];
}

const BUG = /unexpectedly|device failed|handler failed|reset failed|onQueueStop failed/;

export function bugLog(): BugLog {
  let bugs: string[] = [];
  const log = pino(
    { level: 'error' },
    {
      write: (s: string) => {
        const l = JSON.parse(s) as { level: number; msg: string; err?: { message?: string; stack?: string } };
        if (l.level >= 50 && BUG.test(l.msg)) bugs.push(`${l.msg}: ${l.err?.stack ?? l.err?.message ?? ''}`.slice(0, 800));
      },
    },
  );
  return {
    log,
    take: () => {
      const b = bugs;
      bugs = [];
      return b;
    },
  };
}

export function throwBugs(b: BugLog): void {
  const bugs = b.take();
  if (bugs.length) throw new Finding('crash', bugs.join('\n'));
}

const PY_LATE_UNBLOCK = `
import os, sys, time, stat
pid, root, marker = sys.argv[1], sys.argv[2], sys.argv[3]
since = None
while True:
    try:
        w = open('/proc/%s/task/%s/wchan' % (pid, pid)).read()
    except OSError:
        break
    if 'fifo' in w or 'wait_for_partner' in w or 'pipe' in w:
        since = since or time.time()
        if time.time() - since > 1.3:
            with open(marker, 'a') as m:
                m.write(w + '\\n')
            for d, subdirs, files in os.walk(root):
                for n in files:
                    p = os.path.join(d, n)
                    try:
                        if stat.S_ISFIFO(os.lstat(p).st_mode):
                            fd = os.open(p, os.O_RDWR | os.O_NONBLOCK)
                            time.sleep(0.05)
                            os.close(fd)
                    except OSError:
                        pass
            since = None
    else:
        since = None
    time.sleep(0.05)
`;

/**
 * Lets a FIFO open that wedged this process's main thread complete, after
 * it has slept in the kernel's FIFO open for 1.3 s, and says so: blocked()
 * is true once that happened (a FIFO open on the event loop is a finding:
 * no other client is served meanwhile). Deterministic, unlike a timer,
 * which a loaded machine can make late.
 */
export function lateFifoUnblocker(root: string): { stop(): void; blocked(): boolean } {
  const marker = path.join(os.tmpdir(), `duofs-fifo-blocked-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const p = spawn('python3', ['-c', PY_LATE_UNBLOCK, String(process.pid), root, marker], { stdio: 'ignore' });
  return {
    stop: () => {
      p.kill('SIGKILL');
      fs.rmSync(marker, { force: true });
    },
    blocked: () => {
      if (!fs.existsSync(marker)) return false;
      fs.rmSync(marker, { force: true });
      return true;
    },
  };
}
