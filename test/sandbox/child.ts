// The serving process's side of the sandbox tests, run as its own node
// process (dist/test/sandbox/child.js; built by the suites' global setup):
// applies the drop and/or Landlock given as JSON in argv[2], tries what a
// compromised server would, prints one JSON line of results, then stays
// alive until stdin closes so the test can read /proc/<pid>/task/*.
import fs from 'node:fs';
import path from 'node:path';
import { dropCapabilities, type CapsReport } from '../../src/sandbox/caps.js';
import { applyLandlock, type LandlockReport } from '../../src/sandbox/landlock.js';
import { onEveryPoolThread } from '../../src/sandbox/every-thread.js';
import { c, cstr, errno } from '../../src/sys/libc.js';
import type { CapName } from '../../src/sys/caps.js';
import {
  AT_FDCWD,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_PATH,
  O_RDONLY,
  O_WRONLY,
  SysError,
  close,
  getxattr,
  linkFd,
  mount,
  nameToHandle,
  openByHandle,
  openat,
  renameat2,
  reopen,
  setxattr,
  umount2,
  linkat,
} from '../../src/sys/index.js';

export interface ChildConfig {
  /** drop to this set */
  caps?: CapName[];
  /** apply Landlock with this export directory */
  landlock?: string;
  /** a scratch directory (in the export for Landlock runs) */
  dir: string;
  /** a directory outside the export */
  outside?: string;
}

export interface ChildResult {
  pid: number;
  caps?: CapsReport;
  landlock?: LandlockReport;
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
  const run = await onEveryPoolThread(
    [
      {
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
      },
    ],
    { poolSize: Number(process.env['UV_THREADPOOL_SIZE'] ?? 4) },
  );
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
  let exportFd = -1;
  if (cfg.landlock) {
    exportFd = openat(AT_FDCWD, cfg.landlock, O_PATH | O_DIRECTORY);
    out.landlock = await applyLandlock(exportFd);
  }

  const k = out.checks;
  k['chownOther'] = attempt(() => fs.chownSync(path.join(d, 'own'), 4321, 4321));
  k['readOthers0600'] = attempt(() => rawOpen(path.join(d, 'others'), O_RDONLY));
  k['openByHandle'] = attempt(() => close(openByHandle(handleDirFd, handle, O_RDONLY | O_DIRECTORY)));
  k['mount'] = attempt(() => {
    mount('none', path.join(d, 'mnt'), 'tmpfs', 0, '');
    umount2(path.join(d, 'mnt'), 0);
  });
  out.poolChecks['chownOther'] = await onEachPoolThread(cstr(path.join(d, 'own')), 'chown');

  if (cfg.landlock && cfg.outside) {
    const o = cfg.outside;
    const e = cfg.landlock;
    k['openOutside'] = attempt(() => rawOpen(path.join(o, 'secret'), O_RDONLY));
    k['createOutside'] = attempt(() => rawOpen(path.join(o, 'new'), O_WRONLY | O_CREAT));
    k['openInside'] = attempt(() => rawOpen(path.join(e, 'file'), O_RDONLY));
    k['createInside'] = attempt(() => rawOpen(path.join(e, 'new'), O_WRONLY | O_CREAT));
    const eFd = openat(AT_FDCWD, e, O_PATH | O_DIRECTORY);
    const oFd = openat(AT_FDCWD, o, O_PATH | O_DIRECTORY);
    k['renameOut'] = attempt(() => renameat2(eFd, Buffer.from('file'), oFd, Buffer.from('file'), 0));
    if (k['renameOut'] === 0) renameat2(oFd, Buffer.from('file'), eFd, Buffer.from('file'), 0); // unconfined: put it back
    k['linkOut'] = attempt(() => linkat(eFd, Buffer.from('file'), oFd, Buffer.from('link')));
    k['renameIn'] = attempt(() => renameat2(eFd, Buffer.from('a'), eFd, Buffer.from('b'), 0));
    const fileFd = openat(eFd, 'file', O_PATH);
    k['xattrProcFd'] = attempt(() => {
      setxattr(fileFd, Buffer.from('user.duofs.test'), Buffer.from('v1'), 0, 'file');
      if (getxattr(fileFd, Buffer.from('user.duofs.test')).toString() !== 'v1') throw new SysError(5, 'getxattr');
    });
    k['reopenProcFd'] = attempt(() => close(reopen(fileFd, O_RDONLY)));
    k['linkProcFd'] = attempt(() => linkFd(fileFd, eFd, Buffer.from('hardlink')));
    const outsideFd = openat(oFd, 'secret', O_PATH);
    k['reopenOutsideProcFd'] = attempt(() => close(reopen(outsideFd, O_RDONLY)));
    k['readProc'] = attempt(() => rawOpen('/proc/self/status', O_RDONLY));
    out.poolChecks['openOutside'] = await onEachPoolThread(cstr(path.join(o, 'secret')), 'open');
    out.poolChecks['openInside'] = await onEachPoolThread(cstr(path.join(e, 'file')), 'open');
  }

  process.stdout.write(JSON.stringify(out, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

main().catch((e: unknown) => {
  process.stderr.write(`child failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
