// The serving process's side of the sandbox tests, run as its own node
// process (dist/test/sandbox/child.js; built by the suites' global setup):
// applies the drop given as JSON in argv[2], tries what a
// compromised server would, prints one JSON line of results, then stays
// alive until stdin closes so the test can read /proc/<pid>/task/*.
import fs from 'node:fs';
import path from 'node:path';
import { dropCapabilities, type CapsReport } from '../../src/sandbox/caps.js';
import { onEveryPoolThread } from '../../src/sandbox/every-thread.js';
import { c, cstr, errno } from '../../src/sys/libc.js';
import type { CapName } from '../../src/sys/caps.js';
import {
  AT_FDCWD, O_CLOEXEC, O_DIRECTORY, O_RDONLY, SysError, close, mount, nameToHandle, openByHandle, openat, umount2,
} from '../../src/sys/index.js';

export interface ChildConfig {
  /** drop to this set */
  caps?: CapName[];
  /** a scratch directory */
  dir: string;
}

export interface ChildResult {
  pid: number;
  caps?: CapsReport;
  /** 0 or the errno of each attempt, on the main thread */
  checks: Record<string, number>;
  /** 0 or the errno of each attempt, once per pool thread */
  poolChecks: Record<string, number[]>;
}

const cfg = JSON.parse(process.argv[2]!) as ChildConfig;

function attempt(fn: () => void): number {
  try {
    fn();
    return 0;
  } catch (e) {
    if (e instanceof SysError) return e.errno;
    const n = (e as NodeJS.ErrnoException).errno; // node:fs reports -errno
    if (typeof n === 'number') return -n;
    throw e;
  }
}

const rawOpen = (p: string, flags: number): void => {
  const fd = c.openat(AT_FDCWD, cstr(p), flags | O_CLOEXEC, 0o600);
  if (fd < 0) throw new SysError(errno(), 'open', p);
  c.close(fd);
};

async function onEachPoolThread(pathBuf: Buffer, call: 'open' | 'chown'): Promise<number[]> {
  const run = await onEveryPoolThread([{
    what: call,
    run: (done) => {
      const cb = (err: unknown, r: number): void => {
        const res = err ? -5 : r < 0 ? -errno() : r;
        if (call === 'open' && res >= 0) c.close(res);
        done(res >= 0 ? 0 : res);
      };
      if (call === 'open') c.openat.async(AT_FDCWD, pathBuf, O_RDONLY | O_CLOEXEC, 0, cb);
      else c.fchownat.async(AT_FDCWD, pathBuf, 4321, 4321, 0, cb);
    },
  }], { poolSize: Number(process.env['UV_THREADPOOL_SIZE'] ?? 4) });
  // A failure is reported as {tid, errno}; a success leaves no trace: rebuild one result per thread.
  return run.tids.map((tid) => run.failures.find((f) => f.tid === tid)?.errno ?? 0);
}

async function main(): Promise<void> {
  const out: ChildResult = { pid: process.pid, checks: {}, poolChecks: {} };
  const d = cfg.dir;
  fs.writeFileSync(path.join(d, 'own'), 'x');
  const others = path.join(d, 'others');
  fs.writeFileSync(others, 'secret', { mode: 0o600 });
  fs.chmodSync(others, 0o600);
  fs.chownSync(others, 4321, 4321);
  const handleDirFd = openat(AT_FDCWD, d, O_RDONLY | O_DIRECTORY);
  const handle = nameToHandle(handleDirFd);
  fs.mkdirSync(path.join(d, 'mnt'), { recursive: true });

  if (cfg.caps) out.caps = await dropCapabilities(cfg.caps);

  const k = out.checks;
  k['chownOther'] = attempt(() => fs.chownSync(path.join(d, 'own'), 4321, 4321));
  k['readOthers0600'] = attempt(() => rawOpen(path.join(d, 'others'), O_RDONLY));
  k['openByHandle'] = attempt(() => close(openByHandle(handleDirFd, handle, O_RDONLY | O_DIRECTORY)));
  k['mount'] = attempt(() => {
    mount('none', path.join(d, 'mnt'), 'tmpfs', 0, '');
    umount2(path.join(d, 'mnt'), 0);
  });
  out.poolChecks['chownOther'] = await onEachPoolThread(cstr(path.join(d, 'own')), 'chown');


  process.stdout.write(JSON.stringify(out, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

main().catch((e: unknown) => {
  process.stderr.write(`child failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
