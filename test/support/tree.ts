// Temporary export trees for protocol tests.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';

export interface TempTree {
  /** The export directory (realpath). */
  dir: string;
  /** The directory holding the export and siblings such as an "outside" dir. */
  base: string;
  p(...parts: string[]): string;
  cleanup(): void;
}

/**
 * Makes base/export (the export) and base/outside (a sibling that a guest
 * must never reach) under the system temp dir.
 */
export function makeTree(prefix = 'duofs-p9-'): TempTree {
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
  const dir = path.join(base, 'export');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chmodSync(dir, 0o755);
  fs.chmodSync(base, 0o755);
  fs.mkdirSync(path.join(base, 'outside'), { mode: 0o755 });
  fs.writeFileSync(path.join(base, 'outside', 'secret'), 'outside-secret\n', { mode: 0o644 });
  return {
    dir,
    base,
    p: (...parts: string[]) => path.join(dir, ...parts),
    cleanup: () => {
      // Unmount anything a test left mounted below base before removing it.
      try {
        const mounts = fs
          .readFileSync('/proc/self/mounts', 'utf8')
          .split('\n')
          .map((l) => l.split(' ')[1] ?? '')
          .filter((m) => m.startsWith(base + '/'))
          .sort()
          .reverse();
        for (const m of mounts) {
          try {
            lazyUmount(m);
          } catch {
            /* ignore */
          }
        }
      } catch {
        /* ignore */
      }
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

function lazyUmount(m: string): void {
  spawnSync('umount', ['-l', m.replace(/\\040/g, ' ')], { stdio: 'ignore' });
}

/**
 * Fills a small standard tree used by several suites. Modes are set
 * explicitly: an in-process server may have changed the process umask
 * (duofs sets it to 0 so that create modes are exact).
 */
export function populate(dir: string): void {
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hello, world\n');
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.mkdirSync(path.join(dir, 'sub', 'deeper'));
  fs.writeFileSync(path.join(dir, 'sub', 'deeper', 'leaf.bin'), Buffer.alloc(3000, 7));
  fs.writeFileSync(path.join(dir, 'big.bin'), bigContent());
  fs.symlinkSync('hello.txt', path.join(dir, 'link-in'));
  fs.symlinkSync('/etc', path.join(dir, 'escape'));
  fs.symlinkSync('../outside', path.join(dir, 'escape-rel'));
  fs.mkdirSync(path.join(dir, 'scratch'), { mode: 0o777 });
  fs.chmodSync(path.join(dir, 'scratch'), 0o777);
  fs.mkdirSync(path.join(dir, 'rootonly'), { mode: 0o755 });
  for (const f of ['hello.txt', 'sub/deeper/leaf.bin', 'big.bin']) fs.chmodSync(path.join(dir, f), 0o644);
  for (const d of ['sub', 'sub/deeper', 'rootonly']) fs.chmodSync(path.join(dir, d), 0o755);
  fs.chmodSync(path.join(dir, 'scratch'), 0o777);
}

/** 1 MiB + 123 bytes of deterministic content. */
export function bigContent(): Buffer {
  const b = Buffer.alloc((1 << 20) + 123);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + (i >> 8)) & 0xff;
  return b;
}

/** A snapshot of every path below dir with type, size, mode, and a content hash, for "unchanged" checks. */
export function snapshot(dir: string, skip: (rel: string) => boolean = () => false): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    const abs = path.join(dir, rel);
    for (const name of fs.readdirSync(abs)) {
      const r = rel ? `${rel}/${name}` : name;
      if (skip(r)) continue;
      const st = fs.lstatSync(path.join(dir, r));
      let v = `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size}`;
      if (st.isFile()) v += ` ${hash(fs.readFileSync(path.join(dir, r)))}`;
      if (st.isSymbolicLink()) v += ` -> ${fs.readlinkSync(path.join(dir, r))}`;
      out.set(r, v);
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

function hash(b: Buffer): string {
  return createHash('sha1').update(b).digest('hex');
}
