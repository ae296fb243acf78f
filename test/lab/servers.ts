// The file servers a lab comparison runs a scenario against. Each server gets
// a fresh, empty export folder of its own and returns the guest mount for it;
// servers that run on the host (duofs) start here and stop after the guest.
//
// Adding a server to the conformance comparison is one line in
// test/lab/conformance.test.ts, e.g.  duofs9pStream('duofs-9p'),
// (duofsVirtiofs('duofs-vfs'), duofs9pVhost('duofs-9pv') likewise).
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { freshTree, runGuest, GuestError, type GuestOptions, type GuestRun, type MountSpec, type SecurityModel } from './guest.js';
import { startDuofs } from './daemons.js';
import { makeWorkDir, removeWorkDir, tail } from './lab.js';
import type { Section } from './console.js';

export interface ServerContext {
  /** The run's work folder (for sockets, logs). */
  workDir: string;
  /** A fresh, empty export folder on the host. */
  tree: string;
}

export interface Prepared {
  mount: MountSpec;
  /** Stops what prepare() started (called after the guest, also on failure). */
  stop?: () => Promise<void>;
  /** Output of host-side daemons, appended to failure messages. */
  logs?: () => string;
}

export type Protocol = '9p' | 'virtiofs';

export interface LabServer {
  /** Column name in comparisons and the guest's mount name (/mnt/<name>). */
  name: string;
  /** What the guest mounts; intended differences may name a protocol instead of a server. */
  protocol: Protocol;
  prepare(ctx: ServerContext): Promise<Prepared>;
}

/** QEMU's built-in 9p server (-fsdev local), guest trans=virtio. */
export function qemu9p(
  name: string,
  o: { securityModel?: SecurityModel; msize?: number; fsdevOptions?: string; mountOptions?: string } = {},
): LabServer {
  return {
    name,
    protocol: '9p',
    prepare: async ({ tree }) => ({
      mount: {
        kind: 'qemu-9p',
        name,
        dir: tree,
        securityModel: o.securityModel ?? 'passthrough',
        msize: o.msize ?? 512000,
        fsdevOptions: o.fsdevOptions,
        mountOptions: o.mountOptions,
      },
    }),
  };
}

/** virtiofsd 1.14 from the lab root (default: --sandbox=chroot --xattr). */
export function virtiofsd(name: string, args?: string[]): LabServer {
  return { name, protocol: 'virtiofs', prepare: async ({ tree }) => ({ mount: { kind: 'virtiofsd', name, dir: tree, args } }) };
}

/** diod from the lab root over the 9P stream relay (see LAB.md: attach is refused). */
export function diod(name: string, args?: string[]): LabServer {
  return { name, protocol: '9p', prepare: async ({ tree }) => ({ mount: { kind: 'diod', name, dir: tree, args } }) };
}

/**
 * duofs serving the tree as 9P2000.L on a unix socket, reached from the guest
 * over a virtio-serial port and the in-guest socat relay (trans=unix):
 *   node bin/duofs.js serve --shared-dir TREE --9p-socket SOCK --log-level info [extraArgs]
 */
export function duofs9pStream(name: string, extraArgs: string[] = [], o: { msize?: number; mountOptions?: string } = {}): LabServer {
  return duofsServer(
    name,
    '9p',
    (tree, sock) => ['serve', '--shared-dir', tree, '--9p-socket', sock, '--log-level', 'info', ...extraArgs],
    (sock) => ({ kind: '9p-stream', name, socket: sock, msize: o.msize ?? 512000, mountOptions: o.mountOptions }),
  );
}

/** Starts duofs with `args(tree, socket)` and returns the guest mount built from the socket. */
function duofsServer(
  name: string,
  protocol: Protocol,
  args: (tree: string, sock: string) => string[],
  mount: (sock: string) => MountSpec,
): LabServer {
  return {
    name,
    protocol,
    async prepare({ workDir, tree }) {
      const sockDir = join(workDir, 'sock');
      mkdirSync(sockDir, { recursive: true });
      const sock = join(sockDir, `${name}.sock`);
      const d = await startDuofs(args(tree, sock), [sock]);
      return { mount: mount(sock), stop: () => d.stop(), logs: () => d.output() };
    },
  };
}

/**
 * duofs serving virtio-fs on a vhost-user socket (vhost-user-fs-pci, guest `mount -t virtiofs`):
 *   node bin/duofs.js serve --shared-dir TREE --virtiofs-socket SOCK --tag NAME --log-level info [extraArgs]
 */
export function duofsVirtiofs(name: string, extraArgs: string[] = [], o: { mountOptions?: string } = {}): LabServer {
  return duofsServer(
    name,
    'virtiofs',
    (tree, sock) => ['serve', '--shared-dir', tree, '--virtiofs-socket', sock, '--tag', name, '--log-level', 'info', ...extraArgs],
    (sock) => ({ kind: 'vhost-user-fs', name, socket: sock, tag: name, mountOptions: o.mountOptions }),
  );
}

/**
 * duofs serving a virtio-9p device over vhost-user (vhost-user-test-device-pci, guest trans=virtio):
 *   node bin/duofs.js serve --shared-dir TREE --9p-vhost-socket SOCK --9p-tag NAME --log-level info [extraArgs]
 */
export function duofs9pVhost(name: string, extraArgs: string[] = [], o: { msize?: number; mountOptions?: string } = {}): LabServer {
  return duofsServer(
    name,
    '9p',
    (tree, sock) => ['serve', '--shared-dir', tree, '--9p-vhost-socket', sock, '--9p-tag', name, '--log-level', 'info', ...extraArgs],
    (sock) => ({ kind: 'vhost-user-9p', name, socket: sock, tag: name, msize: o.msize ?? 512000, mountOptions: o.mountOptions }),
  );
}

export interface ServerRun {
  server: string;
  /** The scenario's section (rc, checks, output). */
  section: Section;
  run: GuestRun;
  /** what the host-side daemon logged (duofs: its sandbox lines among them) */
  daemonLog?: string;
}

/**
 * Boots one guest for one server: a fresh export folder, the server started,
 * the scenario run on its mount, everything stopped and removed again.
 */
export async function runScenarioOn(server: LabServer, o: Omit<GuestOptions, 'mounts' | 'workDir' | 'label'>): Promise<ServerRun> {
  const workDir = makeWorkDir(server.name);
  let prepared: Prepared | undefined;
  try {
    prepared = await server.prepare({ workDir, tree: freshTree(workDir, server.name) });
    const run = await runGuest({ ...o, label: server.name, mounts: [prepared.mount], workDir });
    const section = run.sections.find((s) => s.mount === prepared!.mount.name);
    if (!section) throw new GuestError(`no scenario output for ${server.name}\n${tail(run.console, 40)}`);
    return { server: server.name, section, run, daemonLog: prepared.logs?.() };
  } catch (e) {
    const logs = prepared?.logs?.();
    if (e instanceof Error && logs) e.message += `\n--- ${server.name} daemon output (tail) ---\n${tail(logs, 40)}`;
    throw e;
  } finally {
    await prepared?.stop?.();
    if (!o.keepWorkDir) removeWorkDir(workDir);
  }
}
