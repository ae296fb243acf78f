// "CI on a share" (issue 16): git and a C build in one lab guest, on one
// export per server, the servers side by side. Used by
// test/lab/share-ci.test.ts (small, in CI) and test/lab/share-ci-cli.ts
// (`npm run lab:share-ci`, full size, prints the table).
//
// One guest mounts every server's export (/mnt/<name>) and runs
// test/lab/guest/scenarios/share-ci.py on each in turn, so all servers meet
// the same guest, the same page cache state and the same machine load. Each
// server exports its own fresh, empty folder; the scenario bind-mounts its
// work folder at /tmp/ci so every server builds at the same path.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun, type MountSpec } from './guest.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { labRoot, makeWorkDir, removeWorkDir, tail } from './lab.js';
import { qemu9p, virtiofsd, type LabServer } from './servers.js';
import type { Section } from './console.js';
import { mkdirSync } from 'node:fs';

/** duofs started with --log-level warn, so that every line it prints is a warning or an error. */
function duofsWarn(name: string, protocol: 'virtiofs' | '9p', onDaemon: (d: HostDaemon) => void): LabServer {
  return {
    name,
    protocol,
    async prepare({ workDir, tree }) {
      mkdirSync(join(workDir, 'sock'), { recursive: true });
      const sock = join(workDir, 'sock', `${name}.sock`);
      const args =
        protocol === 'virtiofs'
          ? ['serve', '--shared-dir', tree, '--virtiofs-socket', sock, '--tag', name, '--xattr', '--log-level', 'warn']
          : ['serve', '--shared-dir', tree, '--9p-vhost-socket', sock, '--9p-tag', name, '--log-level', 'warn'];
      const d = await startDuofs(args, [sock]);
      onDaemon(d);
      const mount: MountSpec =
        protocol === 'virtiofs'
          ? { kind: 'vhost-user-fs', name, socket: sock, tag: name }
          : { kind: 'vhost-user-9p', name, socket: sock, tag: name, msize: 512000 };
      return { mount, stop: () => d.stop(), logs: () => d.output() };
    },
  };
}

export const SERVER_NAMES = ['duofs-vfs', 'virtiofsd', 'duofs-9pv', 'qemu-9p'] as const;
export type ServerName = (typeof SERVER_NAMES)[number];

export interface ShareCiOptions {
  /** Generated files committed to the repository. */
  files: number;
  /** Which servers, in the order the guest runs them. */
  servers: readonly ServerName[];
  /** Build GNU hello too (tar x, make -j2). */
  build: boolean;
  /** Run ./configure in the guest (the upstream tarball) instead of building the tree lab setup configured. */
  configure?: boolean;
  /** Per-server limit inside the guest (seconds). */
  perServerLimitS: number;
  onConsole?: (s: string) => void;
  keepWorkDir?: boolean;
}

export interface ShareCiResult {
  server: ServerName;
  section: Section;
  /** step -> guest seconds */
  times: Map<string, number>;
  /** what duofs printed (at --log-level warn, every line is a warning or an error); undefined for the references */
  duofsLog?: string;
}

export interface ShareCiRun {
  results: ShareCiResult[];
  run: GuestRun;
  tarball: string;
}

/**
 * GNU hello as lab setup left it, as the guest sees it: the upstream tarball
 * (apt-get source hello), or (configured) that tree after ./configure at
 * /tmp/ci, the guest's build path.
 */
export function helloTarball(configured: boolean): string {
  const dir = join(labRoot, 'duofs-lab', 'src');
  let files: string[] = [];
  try {
    files = readdirSync(dir);
  } catch {
    /* below */
  }
  const t = files.filter((f) => (configured ? f === 'hello-configured.tar.gz' : /^hello_.*\.orig\.tar\.[a-z0-9]+$/.test(f))).sort();
  if (!t.length) throw new Error(`no hello_*.orig.tar.* in ${dir}: run \`npm run lab:setup\` (it fetches the Debian source package)`);
  return `/duofs-lab/src/${t[t.length - 1]}`;
}

export async function runShareCi(o: ShareCiOptions): Promise<ShareCiRun> {
  const tarball = o.build ? helloTarball(!o.configure) : '-';
  const work = makeWorkDir('share-ci');
  const daemons = new Map<string, HostDaemon>();
  const make = (n: ServerName): LabServer => {
    switch (n) {
      case 'duofs-vfs':
        return duofsWarn(n, 'virtiofs', (d) => daemons.set(n, d));
      case 'duofs-9pv':
        return duofsWarn(n, '9p', (d) => daemons.set(n, d));
      case 'virtiofsd':
        return virtiofsd(n);
      case 'qemu-9p':
        return qemu9p(n, { securityModel: 'passthrough', msize: 512000 });
    }
  };
  const stops: (() => Promise<void>)[] = [];
  try {
    const mounts: MountSpec[] = [];
    for (const n of o.servers) {
      const p = await make(n).prepare({ workDir: work, tree: freshTree(work, n) });
      if (p.stop) stops.push(p.stop);
      mounts.push(p.mount);
    }
    let run: GuestRun;
    try {
      run = await runGuest({
        label: 'share-ci',
        workDir: work,
        mounts,
        cpus: 2,
        memoryMiB: 2048,
        scenario: 'share-ci.py',
        scenarioArgs: [String(o.files), tarball, ...(o.configure ? ['configure'] : [])],
        scenarioTimeoutSec: o.perServerLimitS,
        timeoutMs: (o.perServerLimitS * o.servers.length + 90) * 1000,
        onConsole: o.onConsole,
        keepWorkDir: o.keepWorkDir,
      });
    } catch (e) {
      if (e instanceof Error) {
        for (const [n, d] of daemons) e.message += `\n--- ${n} (duofs) output (tail) ---\n${tail(d.output(), 30)}`;
      }
      throw e;
    }
    const results: ShareCiResult[] = o.servers.map((n) => {
      const section = run.sections.find((s) => s.mount === n) ?? {
        mount: n,
        rc: -1,
        guestSeconds: NaN,
        checks: new Map(),
        duplicates: [],
        output: '(no output: the scenario did not run on this mount)',
      };
      const times = new Map<string, number>();
      for (const m of section.output.matchAll(/^TIME (\S+) ([\d.]+)\s*$/gm)) times.set(m[1], Number(m[2]));
      return { server: n, section, times, duofsLog: daemons.get(n)?.output() };
    });
    return { results, run, tarball };
  } finally {
    for (const s of stops) await s();
    if (!o.keepWorkDir) removeWorkDir(work);
  }
}

/** Lines duofs printed (at warn, each is a warning or an error), without blank ones. */
export function duofsComplaints(r: ShareCiResult): string[] {
  return (r.duofsLog ?? '').split('\n').filter((l) => l.trim());
}

/** CHECKs whose result is not the same on every server: "name: a=x b=y". */
export function differences(results: ShareCiResult[]): string[] {
  const names = new Set(results.flatMap((r) => [...r.section.checks.keys()]));
  const out: string[] = [];
  for (const n of names) {
    const vals = results.map((r) => r.section.checks.get(n) ?? '(missing)');
    if (new Set(vals).size > 1) out.push(`${n}: ${results.map((r, i) => `${r.server}=${vals[i]}`).join(' ')}`);
  }
  return out;
}

/** A markdown table: one row per step, one column per server (guest seconds). */
export function timeTable(results: ShareCiResult[]): string {
  const steps: string[] = [];
  for (const r of results) for (const s of r.times.keys()) if (!steps.includes(s)) steps.push(s);
  const fmt = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(1));
  const rows = [
    `| step (guest s) | ${results.map((r) => r.server).join(' | ')} |`,
    `|---|${results.map(() => '---:').join('|')}|`,
    ...steps.map((s) => `| ${s} | ${results.map((r) => fmt(r.times.get(s))).join(' | ')} |`),
    `| **total** | ${results.map((r) => `**${fmt(r.section.guestSeconds)}**`).join(' | ')} |`,
  ];
  return rows.join('\n');
}
