// Host-side probes for the protocol tests: OFD locks and xattrs as a
// separate process sees them (python3's fcntl and os modules).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

const PY_GETLK = `
import fcntl, struct, os, sys, json
path, t, start, ln = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
r = fcntl.fcntl(fd, 36, struct.pack('hhqqi4x', t, 0, start, ln, 0))  # F_OFD_GETLK
lt, wh, s, l, pid = struct.unpack('hhqqi4x', r)
print(json.dumps({'type': lt, 'start': s, 'len': l, 'pid': pid}))
`;

/** F_RDLCK, F_WRLCK, F_UNLCK on Linux. */
export const F = { RDLCK: 0, WRLCK: 1, UNLCK: 2 } as const;

export interface HostLock {
  type: number;
  start: number;
  len: number;
  pid: number;
}

/** What F_OFD_GETLK in another process reports for [start, start+len) (len 0 = to EOF). */
export function hostGetlk(path: string, type: number, start: number, len: number): HostLock {
  const r = spawnSync('python3', ['-c', PY_GETLK, path, String(type), String(start), String(len)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3 getlk failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as HostLock;
}

const PY_HOLD = `
import fcntl, struct, os, sys
path, t, start, ln = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
fcntl.fcntl(fd, 37, struct.pack('hhqqi4x', t, 0, start, ln, 0))  # F_OFD_SETLK
print('locked', flush=True)
sys.stdin.read()
`;

/** A host process holding an OFD lock until release(). */
export async function hostHoldLock(
  path: string,
  type: number,
  start: number,
  len: number,
): Promise<{ proc: ChildProcess; release(): Promise<void> }> {
  const proc = spawn('python3', ['-c', PY_HOLD, path, String(type), String(start), String(len)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('locked')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`lock holder exited ${code}: ${err}`)));
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    proc,
    release: async () => {
      proc.stdin!.end();
      await exited;
    },
  };
}

const PY_XATTR = `
import os, sys, json, base64
op, path = sys.argv[1], sys.argv[2]
if op == 'list':
    print(json.dumps(os.listxattr(path, follow_symlinks=False)))
elif op == 'get':
    try:
        print(json.dumps(base64.b64encode(os.getxattr(path, sys.argv[3], follow_symlinks=False)).decode()))
    except OSError as e:
        print(json.dumps(None))
elif op == 'set':
    os.setxattr(path, sys.argv[3], base64.b64decode(sys.argv[4]), follow_symlinks=False)
    print('null')
`;

export function hostListxattr(path: string): string[] {
  const r = spawnSync('python3', ['-c', PY_XATTR, 'list', path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as string[];
}
export function hostGetxattr(path: string, name: string): Buffer | null {
  const r = spawnSync('python3', ['-c', PY_XATTR, 'get', path, name], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  const v = JSON.parse(r.stdout) as string | null;
  return v === null ? null : Buffer.from(v, 'base64');
}
export function hostSetxattr(path: string, name: string, value: Buffer): void {
  const r = spawnSync('python3', ['-c', PY_XATTR, 'set', path, name, value.toString('base64')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
}

const PY_UNBLOCK = `
import os, sys, time, stat
root = sys.argv[1]
while True:
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
    time.sleep(0.2)
`;

/**
 * A host process that keeps opening every FIFO below root with O_RDWR, which
 * completes any open(2) of that FIFO blocked waiting for a peer. A server
 * that (wrongly) opens FIFOs synchronously on its event loop would otherwise
 * hang the test process for good; with this it only stalls, which the tests
 * measure.
 */
export function startFifoUnblocker(root: string): { stop(): void } {
  const p = spawn('python3', ['-c', PY_UNBLOCK, root], { stdio: 'ignore', detached: false });
  return {
    stop: () => {
      p.kill('SIGKILL');
    },
  };
}

/** A host process that opens the FIFO with O_RDWR once after ms (completing any blocked open of it). */
export function unblockFifoAfter(path: string, ms: number): { stop(): void } {
  const py = `import os, time, sys\ntime.sleep(${ms / 1000})\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)\ntime.sleep(1)\nos.close(fd)\n`;
  const p = spawn('python3', ['-c', py, path], { stdio: 'ignore' });
  return {
    stop: () => {
      p.kill('SIGKILL');
    },
  };
}
