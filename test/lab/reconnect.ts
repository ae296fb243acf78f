// The reconnect check shared by the virtio-fs and virtio-9p lab tests: one
// running duofs, two guest boots one after the other through the same
// vhost-user socket (reconnect-rw.sh). The second boot must mount again and
// see what the first wrote, and both boots' writes must reach the host.
// The caller checks what is particular to its device in `check`.
import { expect } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk, freshTree, runGuest, type GuestRun, type MountSpec } from './guest.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { makeWorkDir, removeWorkDir, tail } from './lab.js';

/** The 4 MiB every boot of reconnect-rw.sh writes (its sha256, first 16 hex digits). */
export function reconnectBinSha(): string {
  const line = Buffer.from('duofs reconnect test data 0123456789abcdef\n');
  const buf = Buffer.alloc(4 * 1024 * 1024);
  for (let o = 0; o < buf.length; o += line.length) line.copy(buf, o);
  return createHash('sha256').update(buf).digest('hex').slice(0, 16);
}

/** JSON log lines of a duofs whose msg is `msg`. */
export function logLines(daemon: HostDaemon, msg: string): Record<string, unknown>[] {
  return daemon
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    })
    .filter((o) => o.msg === msg);
}

/** Appends the tail of each daemon's output to an error's message. */
export function withLogs(e: unknown, ...daemons: HostDaemon[]): unknown {
  if (e instanceof Error) for (const dm of daemons) e.message += `\n--- duofs output (tail) ---\n${tail(dm.output(), 30)}`;
  return e;
}

export interface ReconnectCase {
  /** work folder and guest label prefix, e.g. vfs-reconnect */
  label: string;
  /** what the progress line says, e.g. virtio-fs */
  what: string;
  /** `duofs serve` arguments after --shared-dir TREE, given the socket path */
  serve: (sock: string) => string[];
  mount: (sock: string) => MountSpec;
  /** device-specific checks, with duofs still running */
  check: (runs: GuestRun[], duofs: HostDaemon, sha: string) => void;
}

export async function runReconnect(c: ReconnectCase): Promise<void> {
  const work = makeWorkDir(c.label);
  const tree = freshTree(work, 'export');
  mkdirSync(join(work, 'sock'));
  const sock = join(work, 'sock', 'dev.sock');
  const token = `tok${process.pid}x${Date.now()}`;
  const duofs = await startDuofs(['serve', '--shared-dir', tree, ...c.serve(sock), '--log-level', 'info'], [sock]);
  try {
    const runs: GuestRun[] = [];
    for (const boot of [1, 2]) {
      const bootDir = join(work, `boot${boot}`);
      mkdirSync(bootDir);
      const run = await runGuest({
        label: `${c.label}-${boot}`,
        workDir: bootDir,
        timeoutMs: 120_000,
        scenario: 'reconnect-rw.sh',
        scenarioTimeoutSec: 60,
        env: { LAB_BOOT: String(boot), LAB_TOKEN: token },
        mounts: [c.mount(sock)],
      });
      expectScenarioOk(run);
      runs.push(run);
      // The same duofs process is still serving once the guest (and its QEMU) is gone.
      expect(duofs.process.exitCode).toBeNull();
      expect(duofs.process.signalCode).toBeNull();
    }
    const sha = reconnectBinSha();
    const [c1, c2] = runs.map((r) => r.sections[0].checks);
    expect(c1!.get('boot1.wrote')).toBe('ok');
    expect(c1!.get('boot1.wrote_bin')).toBe(sha);
    expect(Object.fromEntries([...c2!].filter(([k]) => k.startsWith('boot2.')))).toEqual({
      'boot2.reads_boot1.txt': `${token}_boot_1,`,
      'boot2.reads_boot1.bin': sha,
      'boot2.reads_boot1.link': 'boot-1.txt',
      'boot2.reads_boot1.dir': 'directory',
      'boot2.listing': 'boot-1.bin,boot-1.txt,dir-1,link-1,',
      'boot2.wrote_bin': sha,
      'boot2.wrote': 'ok',
    });
    // Both boots' writes reached the host.
    for (const boot of [1, 2]) {
      expect(readFileSync(join(tree, 'reconnect', `boot-${boot}.txt`), 'utf8')).toBe(`${token} boot ${boot}\n`);
      expect(
        createHash('sha256')
          .update(readFileSync(join(tree, 'reconnect', `boot-${boot}.bin`)))
          .digest('hex')
          .slice(0, 16),
      ).toBe(sha);
    }
    // duofs saw two frontends, one after the other.
    expect(logLines(duofs, 'vhost-user: frontend connected').length).toBe(2);
    c.check(runs, duofs, sha);
    process.stderr.write(`lab: ${c.what} reconnect: boots ${runs.map((r) => `${(r.wallMs / 1000).toFixed(1)} s`).join(', ')} wall\n`);
  } catch (e) {
    throw withLogs(e, duofs);
  } finally {
    await duofs.stop();
    removeWorkDir(work);
  }
}
