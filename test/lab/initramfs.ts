// The initramfs a guest needs to boot with its root on 9p: Debian's kernel has
// 9p, 9pnet, 9pnet_virtio and netfs as modules (virtio-pci and virtiofs are
// built in), so something must load them before the root can be mounted.
// This builds, from the lab root, a newc cpio archive holding busybox-static,
// those modules (found through modules.dep, minus what modules.builtin says is
// built in, decompressed: busybox's insmod takes plain .ko files) and
// guest/rootfs/initramfs-init.sh as /init, which mounts root=TAG
// rootfstype=9p rootflags=... and switch_roots into it.
//
// Reproducible: entries in a fixed order, mtime 0, owner 0:0, inode numbers
// by position; the same inputs give the same bytes. Cached in
// .lab/initramfs/<hash of the inputs>.cpio (kernel version, module and
// busybox contents, init script), so a new lab root or a changed script makes
// a new one.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { guestScriptsDir, labDir, labRoot, labStamp } from './lab.js';

/** What the 9p root needs, by module name; their dependencies are added from modules.dep. */
export const ROOT_9P_MODULES = ['9pnet_virtio', '9p'];

interface Entry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}
const pad4 = (n: number) => (4 - (n % 4)) % 4;

/** A newc ("070701") cpio archive of entries, in the order given. */
export function cpioNewc(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  const put = (e: Entry, ino: number) => {
    const name = Buffer.from(`${e.name}\0`);
    const data = e.data ?? Buffer.alloc(0);
    const [rmaj, rmin] = e.rdev ?? [0, 0];
    const fields = [ino, e.mode, 0, 0, (e.mode & 0o170000) === 0o040000 ? 2 : 1, 0, data.length, 0, 0, rmaj, rmin, name.length, 0];
    const head = Buffer.from(`070701${fields.map(hex8).join('')}`, 'ascii');
    parts.push(head, name, Buffer.alloc(pad4(head.length + name.length)), data, Buffer.alloc(pad4(data.length)));
  };
  entries.forEach((e, i) => put(e, i + 1));
  put({ name: 'TRAILER!!!', mode: 0 }, 0);
  return Buffer.concat(parts);
}

/** modules.dep paths (relative to lib/modules/KVER) of `names` and what they need, dependencies first. */
export function moduleClosure(modDir: string, names: string[]): { paths: string[]; builtin: string[] } {
  const dep = new Map<string, string[]>();
  for (const line of readFileSync(join(modDir, 'modules.dep'), 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0)
      dep.set(
        line.slice(0, i),
        line
          .slice(i + 1)
          .trim()
          .split(/\s+/)
          .filter(Boolean),
      );
  }
  const builtinSet = new Set(
    readFileSync(join(modDir, 'modules.builtin'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((p) => modName(p)),
  );
  const byName = new Map([...dep.keys()].map((p) => [modName(p), p]));
  const out: string[] = [];
  const builtin: string[] = [];
  const visit = (name: string, chain: string[]) => {
    if (builtinSet.has(name)) {
      if (!builtin.includes(name)) builtin.push(name);
      return;
    }
    const p = byName.get(name);
    if (!p) throw new Error(`initramfs: module ${name} is neither in modules.dep nor in modules.builtin of ${modDir}`);
    if (out.includes(p)) return;
    if (chain.includes(name)) throw new Error(`initramfs: dependency loop ${[...chain, name].join(' -> ')}`);
    for (const d of dep.get(p) ?? []) visit(modName(d), [...chain, name]);
    out.push(p);
  };
  for (const n of names) visit(n, []);
  return { paths: out, builtin };
}

/** kernel/net/9p/9pnet_virtio.ko.xz -> 9pnet_virtio (modprobe treats - and _ alike). */
function modName(path: string): string {
  return path
    .replace(/^.*\//, '')
    .replace(/\.ko(\.(xz|gz|zst))?$/, '')
    .replace(/-/g, '_');
}

function decompress(file: string): Buffer {
  const raw = readFileSync(file);
  const tool = file.endsWith('.xz') ? ['xz', '-dc'] : file.endsWith('.zst') ? ['zstd', '-dc'] : file.endsWith('.gz') ? ['gzip', '-dc'] : null;
  if (!tool) return raw;
  // The host's tool if it has one, else the lab root's (same Debian tools).
  for (const argv of [tool, ['chroot', labRoot, ...tool]]) {
    const r = spawnSync(argv[0], argv.slice(1), { input: raw, maxBuffer: 256 * 1024 * 1024 });
    if (r.status === 0 && r.stdout.length > 0) return r.stdout;
  }
  throw new Error(`initramfs: could not decompress ${file} with ${tool[0]}`);
}

export interface Initramfs {
  path: string;
  /** Module files in load order (relative to lib/modules/KVER). */
  modules: string[];
  /** Modules asked for (or needed) that the kernel has built in. */
  builtin: string[];
  bytes: number;
  /** True when this call built it (false: taken from the cache). */
  built: boolean;
}

/** The 9p-root initramfs for the lab kernel, built once per set of inputs. */
export function ensureRoot9pInitramfs(): Initramfs {
  const stamp = labStamp();
  const modDir = join(labRoot, 'lib/modules', stamp.kernelVersion);
  const { paths, builtin } = moduleClosure(modDir, ROOT_9P_MODULES);
  const init = readFileSync(join(guestScriptsDir, 'rootfs', 'initramfs-init.sh'));
  const busybox = readFileSync(join(labRoot, 'usr/bin/busybox'));
  const h = createHash('sha256').update(`v1\0${stamp.kernelVersion}\0`).update(init).update(busybox);
  for (const p of paths) h.update(`\0${p}\0`).update(readFileSync(join(modDir, p)));
  const hash = h.digest('hex').slice(0, 16);
  const dir = join(labDir, 'initramfs');
  const path = join(dir, `9p-root-${hash}.cpio`);
  const modules = paths.map((p) => p.replace(/\.(xz|gz|zst)$/, ''));
  if (existsSync(path)) return { path, modules, builtin, bytes: readFileSync(path).length, built: false };
  const entries: Entry[] = [
    { name: 'bin', mode: 0o040755 },
    { name: 'bin/busybox', mode: 0o100755, data: busybox },
    { name: 'dev', mode: 0o040755 },
    // the kernel opens /dev/console for init before anything is mounted
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    { name: 'init', mode: 0o100755, data: init },
    { name: 'lib', mode: 0o040755 },
    { name: 'lib/modules', mode: 0o040755 },
  ];
  const dirs = new Set<string>();
  paths.forEach((p, i) => {
    const parts = modules[i].split('/');
    for (let k = 1; k < parts.length; k++) {
      const d = `lib/modules/${parts.slice(0, k).join('/')}`;
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ name: d, mode: 0o040755 });
      }
    }
    entries.push({ name: `lib/modules/${modules[i]}`, mode: 0o100644, data: decompress(join(modDir, p)) });
  });
  entries.push({ name: 'modules.order', mode: 0o100644, data: Buffer.from(modules.map((m) => `${m}\n`).join('')) });
  entries.push({ name: 'newroot', mode: 0o040755 }, { name: 'proc', mode: 0o040755 }, { name: 'sys', mode: 0o040755 });
  const cpio = cpioNewc(entries);
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${path}.tmp`, cpio);
  renameSync(`${path}.tmp`, path);
  return { path, modules, builtin, bytes: cpio.length, built: true };
}
