// Boots a lab guest by hand, with a shell or a scenario, on any mix of servers.
//   node --import ./test/lab/ts-hooks.mjs test/lab/vm.ts --help
// (docs/lab.md has worked examples.)
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { freshTree, runGuest, type MountSpec, type SecurityModel } from './guest.js';
import { startDuofs, type HostDaemon } from './daemons.js';
import { keepWorkDir, makeWorkDir, removeWorkDir } from './lab.js';

const HELP = `usage: node --import ./test/lab/ts-hooks.mjs test/lab/vm.ts [mounts] [options]

mounts (each mounted at /mnt/NAME in the guest; DIR defaults to a fresh empty folder):
  --qemu-9p NAME[=DIR][,security_model=M][,msize=N]   QEMU -fsdev local + virtio-9p-pci
  --virtiofsd NAME[=DIR]                              virtiofsd from the lab root
  --diod NAME[=DIR]                                   diod, over the 9P stream relay
  --9p-stream NAME=SOCKET[,msize=N]                   a 9P server listening on SOCKET (host)
  --vhost-user-fs NAME=SOCKET[,tag=T]                 a vhost-user-fs backend listening on SOCKET
  --vhost-user-9p NAME=SOCKET[,tag=T]                 a vhost-user virtio-9p backend (vhost-user-test-device-pci)
  --duofs-9p NAME[=DIR]                               duofs serve --9p-socket, over the 9P stream relay
  --duofs-9p-vhost NAME[=DIR]                         duofs serve --9p-vhost-socket (virtio-9p over vhost-user)
  --duofs-virtiofs NAME[=DIR]                         duofs serve --virtiofs-socket (vhost-user-fs)
  (each --duofs-* starts its own duofs; the project is compiled first)
options:
  --scenario FILE [--on NAME,...] [-- ARGS...]        run test/lab/guest/scenarios/FILE on each mount
  --shell                                             interactive shell (default without --scenario)
  --timeout SEC (scenario mode, default 900)  --mem MIB (1024)  --cpus N (1)  --keep (keep work folder)
In the shell: leave with 'exit' (powers off) or Ctrl-A X (kills QEMU).`;

function parseSpec(v: string): { name: string; value?: string; opts: Record<string, string> } {
  const [head, ...rest] = v.split(',');
  const eq = head.indexOf('=');
  const opts: Record<string, string> = {};
  for (const r of rest) {
    const i = r.indexOf('=');
    opts[i < 0 ? r : r.slice(0, i)] = i < 0 ? '' : r.slice(i + 1);
  }
  return eq < 0 ? { name: head, opts } : { name: head.slice(0, eq), value: head.slice(eq + 1), opts };
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(HELP);
    return 0;
  }
  const dd = argv.indexOf('--');
  const scenarioArgs = dd >= 0 ? argv.slice(dd + 1) : [];
  const args = dd >= 0 ? argv.slice(0, dd) : argv;
  const keep = args.includes('--keep');
  const workDir = makeWorkDir('vm');
  const daemons: HostDaemon[] = [];
  const mounts: MountSpec[] = [];
  let scenario: string | undefined;
  let on: string[] | undefined;
  let timeout = 900;
  let mem = 1024;
  let cpus = 1;
  let shell = false;
  const tree = (name: string, dir?: string) => (dir ? resolve(dir) : freshTree(workDir, name));
  try {
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      const next = () => {
        const v = args[++i];
        if (v === undefined) throw new Error(`${a} needs a value`);
        return v;
      };
      switch (a) {
        case '--qemu-9p': {
          const s = parseSpec(next());
          mounts.push({
            kind: 'qemu-9p',
            name: s.name,
            dir: tree(s.name, s.value),
            securityModel: (s.opts.security_model ?? 'passthrough') as SecurityModel,
            msize: s.opts.msize ? Number(s.opts.msize) : undefined,
          });
          break;
        }
        case '--virtiofsd': {
          const s = parseSpec(next());
          mounts.push({ kind: 'virtiofsd', name: s.name, dir: tree(s.name, s.value) });
          break;
        }
        case '--diod': {
          const s = parseSpec(next());
          mounts.push({ kind: 'diod', name: s.name, dir: tree(s.name, s.value) });
          break;
        }
        case '--9p-stream': {
          const s = parseSpec(next());
          if (!s.value) throw new Error('--9p-stream NAME=SOCKET');
          mounts.push({ kind: '9p-stream', name: s.name, socket: resolve(s.value), msize: s.opts.msize ? Number(s.opts.msize) : undefined });
          break;
        }
        case '--vhost-user-fs': {
          const s = parseSpec(next());
          if (!s.value) throw new Error('--vhost-user-fs NAME=SOCKET');
          mounts.push({ kind: 'vhost-user-fs', name: s.name, socket: resolve(s.value), tag: s.opts.tag });
          break;
        }
        case '--vhost-user-9p': {
          const s = parseSpec(next());
          if (!s.value) throw new Error('--vhost-user-9p NAME=SOCKET');
          mounts.push({ kind: 'vhost-user-9p', name: s.name, socket: resolve(s.value), tag: s.opts.tag });
          break;
        }
        case '--duofs-9p':
        case '--duofs-9p-vhost':
        case '--duofs-virtiofs': {
          const s = parseSpec(next());
          mkdirSync(`${workDir}/sock`, { recursive: true });
          const sock = `${workDir}/sock/${s.name}.sock`;
          const flag = {
            '--duofs-9p': ['--9p-socket', sock],
            '--duofs-9p-vhost': ['--9p-vhost-socket', sock, '--9p-tag', s.name],
            '--duofs-virtiofs': ['--virtiofs-socket', sock, '--tag', s.name],
          }[a]!;
          const d = await startDuofs(['serve', '--shared-dir', tree(s.name, s.value), ...flag, '--log-level', 'info'], [sock]);
          daemons.push(d);
          if (a === '--duofs-9p') mounts.push({ kind: '9p-stream', name: s.name, socket: sock });
          else if (a === '--duofs-9p-vhost') mounts.push({ kind: 'vhost-user-9p', name: s.name, socket: sock, tag: s.name });
          else mounts.push({ kind: 'vhost-user-fs', name: s.name, socket: sock, tag: s.name });
          break;
        }
        case '--scenario':
          scenario = next();
          break;
        case '--on':
          on = next().split(',');
          break;
        case '--timeout':
          timeout = Number(next());
          break;
        case '--mem':
          mem = Number(next());
          break;
        case '--cpus':
          cpus = Number(next());
          break;
        case '--shell':
          shell = true;
          break;
        case '--keep':
          break;
        default:
          throw new Error(`unknown argument ${a}\n\n${HELP}`);
      }
    }
    if (!scenario) shell = true;
    const t0 = Date.now();
    const run = await runGuest({
      label: 'vm',
      mounts,
      scenario,
      scenarioArgs,
      scenarioOn: on,
      shell,
      workDir,
      keepWorkDir: keep,
      timeoutMs: shell ? 24 * 3600_000 : timeout * 1000,
      memoryMiB: mem,
      cpus,
      allowMountFailure: shell,
      onConsole: shell ? undefined : (t) => process.stdout.write(t),
    });
    if (!shell) {
      console.error(`\nvm: wall ${((Date.now() - t0) / 1000).toFixed(1)} s, guest booted after ${((run.bootMs ?? NaN) / 1000).toFixed(1)} s`);
      for (const s of run.sections) console.error(`vm: ${s.mount}: rc=${s.rc}, ${s.checks.size} checks, ${s.guestSeconds} s guest time`);
      return run.sections.every((s) => s.rc === 0) ? 0 : 1;
    }
    return 0;
  } finally {
    for (const d of daemons) {
      await d.stop();
      if (d.output().trim()) console.error(`--- ${d.name} output ---\n${d.output().slice(-4000)}`);
    }
    if (keep) {
      keepWorkDir(workDir);
      console.error(`vm: work folder kept: ${workDir}`);
    } else removeWorkDir(workDir);
    if (shell && process.stdin.isTTY) spawnSync('stty', ['sane'], { stdio: 'inherit' });
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
