// A real libvirt launching duofs-virtiofsd: libvirtd from the lab root
// (Debian's libvirt-daemon + libvirt-daemon-driver-qemu, system mode,
// qemu:///system) runs in the lab's namespaces, `virsh define`s a TCG domain
// whose
//
//   <filesystem type='mount' accessmode='passthrough'>
//     <driver type='virtiofs' queue='1024'/>
//     <binary path='/duofs-lab/host/repo/bin/duofs-virtiofsd.js' xattr='on'/>
//     <source dir='/duofs-lab/host/ctl/trees/x'/>
//     <target dir='duofs'/>
//   </filesystem>
//
// names the repo's duofs-virtiofsd as its binary, and `virsh start`s it:
// libvirt itself makes the vhost-user socket, runs the binary (its argv is
// libvirt's, not a copy), starts QEMU with the device, and the guest mounts
// tag `duofs`, reads a host file and writes one the host then sees. Then
// `virsh destroy`, after which duofs-virtiofsd is gone.
//
// How libvirt fits the lab (no systemd, no dbus, a chroot):
// * The guest boots as every lab guest does (direct kernel boot, root over
//   virtiofs from the harness's read-only virtiofsd, init.sh, plan.sh); the
//   domain names that root socket with <source socket=.../> (a virtiofsd
//   libvirt does not launch). guest.ts's `vmm` option runs this file's shell
//   text instead of QEMU, and `vmm-virtiofs` mounts a device it attaches.
// * libvirtd runs in the foreground in the chroot, configured by files this
//   test writes (bound over /etc/libvirt in the private mount namespace; the
//   lab root is not modified): unix socket auth none (no polkit), qemu.conf
//   user/group root, security_driver none, no cgroups, no namespaces,
//   stdio_handler file (no virtlogd). /run, /var/lib/libvirt and
//   /var/cache/libvirt are tmpfs; /var/log/libvirt is a host folder, so the
//   per-domain logs (QEMU's and duofs-virtiofsd's) are read afterwards.
// * duofs-virtiofsd is exec'd by libvirtd inside the chroot, so it runs on
//   the chroot's libraries: this machine's node binary is bound at
//   /usr/local/bin/node (a tmpfs there; the script's `#!/usr/bin/env node`
//   finds it on PATH) and the repository at /duofs-lab/host/repo, read-only.
//   Node's own dependencies (libstdc++, libc) come from the newer Debian of
//   the lab root, which runs it.
// The guest holds after its scenario (LAB_HOLD_SECS) until `virsh destroy`.
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshTree, runGuest, type GuestRun } from './guest.js';
import { labAvailable, labRoot, labStamp, makeWorkDir, removeWorkDir, repoRoot, sq, tail } from './lab.js';
import { ensureDuofsBuilt } from './daemons.js';

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

const C = '/duofs-lab/host/ctl'; // the control folder inside the chroot
const DOMAIN = 'duofs-lab';
const BINARY = '/duofs-lab/host/repo/bin/duofs-virtiofsd.js';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

function domainXml(kernel: string, cmdline: string, memMiB: number, rootSock: string): string {
  return `<domain type='qemu'>
  <name>${DOMAIN}</name>
  <memory unit='MiB'>${memMiB}</memory>
  <vcpu>1</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${esc(kernel)}</kernel>
    <cmdline>${esc(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='maximum'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <filesystem type='mount'>
      <driver type='virtiofs' queue='1024'/>
      <source socket='${esc(rootSock)}'/>
      <target dir='rootfs'/>
    </filesystem>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs' queue='1024'/>
      <binary path='${BINARY}' xattr='on'/>
      <source dir='${C}/trees/x'/>
      <target dir='duofs'/>
    </filesystem>
    <serial type='file'>
      <source path='${C}/console.log'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

const QEMU_CONF = `# written by test/lab/libvirt-real.test.ts
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
`;
const LIBVIRTD_CONF = `# written by test/lab/libvirt-real.test.ts
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_rw_perms = "0700"
log_outputs = "3:stderr"
`;

/**
 * The launcher's VMM step: libvirtd, define, start, the console file to
 * stdout, wait for the guest's DONE, facts to ctl/facts, destroy, wait for
 * duofs-virtiofsd to be gone.
 */
function vmmScript(): string {
  return `
C=${sq(C)}
F="$R$C/facts"
# (pids are this PID namespace's: read them in the chroot's /proc, mounted in it)
fact() { printf '%s %s\\n' "$1" "$2" >> "$F"; }
t0=$(date +%s.%N)
at() { fact "t_$1" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"; }
# The chroot's / a mount point of its own (with everything already bound
# below it), as a real root is: duofs-virtiofsd's default sandbox (namespace,
# like virtiofsd's) makes / private and pivots, which EINVALs on a plain
# directory ("unshare: cannot change root filesystem propagation").
mount --rbind "$R" "$R"
mount -t sysfs sysfs "$R/sys"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=0755 tmpfs "$R/var/lib/libvirt"
mount -t tmpfs -o mode=0755 tmpfs "$R/var/cache/libvirt"
mount --bind "$R$C/log" "$R/var/log/libvirt"
mount --bind "$R$C/etc-libvirt" "$R/etc/libvirt"
mount -t tmpfs -o mode=0755 tmpfs "$R/usr/local/bin"
touch "$R/usr/local/bin/node"
mount --bind ${sq(process.execPath)} "$R/usr/local/bin/node"
mkdir -p "$R$H/repo"
mount --bind ${sq(repoRoot)} "$R$H/repo"
mount -o remount,bind,ro "$R$H/repo"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
chroot "$R" /usr/sbin/libvirtd >"$R$C/log/libvirtd.out" 2>&1 </dev/null &
lvd=$!
i=0
until [ -S "$R/run/libvirt/libvirt-sock" ]; do
  if ! kill -0 $lvd 2>/dev/null; then say "libvirtd exited:"; tail -n 30 "$R$C/log/libvirtd.out" >&2; exit 96; fi
  i=$((i+1)); if [ $i -gt 1200 ]; then say "libvirtd made no socket in 60 s"; tail -n 30 "$R$C/log/libvirtd.out" >&2; exit 96; fi
  sleep 0.05
done
at libvirtd_listening
V() { chroot "$R" virsh -q -c qemu:///system "$@"; }
# This shell is PID 1 of the namespace and so reaps what libvirt daemonizes
# (its capability-probe QEMUs, the domain's QEMU, duofs-virtiofsd), but only
# while it waits for a foreground command: virsh inside $(...) would leave
# it blocked on the pipe, the killed probes unreaped, and libvirt waiting
# 40 s on each ("Failed to terminate process N with SIGKILL: Device or
# resource busy"). So virsh runs in the foreground, into files.
Vs() { V "$@" > "$R$C/virsh.out" 2>&1; s=$(tr '\\n' ' ' < "$R$C/virsh.out" | sed 's/ *$//'); }
Vs version --daemon
fact libvirt_version "$s"
V define "$C/domain.xml" >&2 || { fact define failed; exit 95; }
: > "$R$C/console.log"
if ! V start ${DOMAIN} >&2; then
  fact start failed
  for f in "$R$C/log/qemu/"*.log; do say "--- $f"; tail -n 30 "$f" >&2; done
  tail -n 30 "$R$C/log/libvirtd.out" >&2
  kill $lvd; wait $lvd
  exit 94
fi
at started
tail -n +1 -F "$R$C/console.log" 2>/dev/null &
tl=$!
# The guest prints DONE, then holds (LAB_HOLD_SECS) until it is destroyed.
until grep -q '@@DUOFS-LAB DONE@@' "$R$C/console.log"; do
  Vs domstate ${DOMAIN}
  [ "$s" = running ] || break
  sleep 0.2
done
at done_seen
Vs domstate ${DOMAIN}
fact state_before "$s"
vf=$(cat $(find "$R/run/libvirt" "$R/var/lib/libvirt" -name '*-fs[0-9]*-fs.pid') 2>/dev/null | head -n 1)
fact virtiofsd_pid "$vf"
if [ -n "$vf" ]; then
  fact virtiofsd_argv "$(tr '\\0' ' ' < "$R/proc/$vf/cmdline")"
  fact virtiofsd_ppid "$(awk '/^PPid:/ { print $2 }' "$R/proc/$vf/status")"
fi
qp=$(cat "$R/run/libvirt/qemu/${DOMAIN}.pid" 2>/dev/null)
[ -n "$qp" ] && fact qemu_argv "$(tr '\\0' ' ' < "$R/proc/$qp/cmdline")"
fact libvirtd_pid "$lvd"
V destroy ${DOMAIN} >&2 && fact destroy ok
Vs domstate ${DOMAIN}
fact state_after "$s"
gone=no
i=0
while [ -n "$vf" ] && [ $i -lt 200 ]; do
  if [ ! -e "$R/proc/$vf" ] || grep -q '^State:.*Z' "$R/proc/$vf/status" 2>/dev/null; then gone=yes; break; fi
  i=$((i+1)); sleep 0.05
done
at gone
fact virtiofsd_gone_after_destroy $gone
kill $tl 2>/dev/null
kill $lvd
wait $lvd
fact libvirtd_exit $?
exit 0
`;
}

d('a real libvirt (libvirtd, virsh define + start) runs duofs-virtiofsd as a <filesystem> binary', () => {
  let work = '';
  let ctl = '';
  let tree = '';
  let run: GuestRun | undefined;
  const facts: Record<string, string> = {};
  let fsLog = '';

  beforeAll(async () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    if (!existsSync(join(labRoot, 'usr/sbin/libvirtd')))
      throw new Error('no libvirtd in the lab root: run `npm run lab:setup` (PACKAGES has libvirt)');
    ensureDuofsBuilt();
    work = makeWorkDir('libvirt-real');
    ctl = join(work, 'ctl');
    mkdirSync(join(ctl, 'log'), { recursive: true });
    cpSync(join(labRoot, 'etc/libvirt'), join(ctl, 'etc-libvirt'), { recursive: true });
    writeFileSync(join(ctl, 'etc-libvirt/qemu.conf'), QEMU_CONF);
    writeFileSync(join(ctl, 'etc-libvirt/libvirtd.conf'), LIBVIRTD_CONF);
    tree = freshTree(ctl, 'x');
    writeFileSync(join(tree, 'from-host.txt'), 'hello-from-the-host\n');
    const mem = 1024;
    const stamp = labStamp();
    // The same kernel command line the harness gives its own QEMU (guest.ts).
    const cmdline = `console=ttyS0 rootfstype=virtiofs root=rootfs ro init=/duofs-lab/scripts/init.sh panic=-1 loglevel=4 mitigations=off`;
    writeFileSync(join(ctl, 'domain.xml'), domainXml(stamp.kernel, cmdline, mem, '/duofs-lab/host/sock/root.sock'));
    const t0 = Date.now();
    try {
      run = await runGuest({
        label: 'libvirt-real',
        workDir: work,
        timeoutMs: 240_000,
        memoryMiB: mem,
        controlDir: ctl,
        mounts: [{ kind: 'vmm-virtiofs', name: 'x', tag: 'duofs' }],
        scenario: 'libvirt-real.sh',
        scenarioTimeoutSec: 60,
        env: { LAB_HOLD_SECS: '120' },
        vmm: vmmScript(),
      });
      process.stderr.write(
        `lab: libvirt-real: wall ${((Date.now() - t0) / 1000).toFixed(1)} s, boot ${((run.bootMs ?? NaN) / 1000).toFixed(1)} s, ` +
          `scenario ${run.sections[0]?.guestSeconds} s\n`,
      );
    } finally {
      try {
        for (const l of readFileSync(join(ctl, 'facts'), 'utf8').split('\n')) {
          const i = l.indexOf(' ');
          if (i > 0) facts[l.slice(0, i)] = l.slice(i + 1);
        }
      } catch {
        /* the launcher never got that far */
      }
      const qlog = join(ctl, 'log', 'qemu');
      for (const f of existsSync(qlog) ? readdirSync(qlog) : []) if (f.endsWith('-virtiofsd.log')) fsLog += readFileSync(join(qlog, f), 'utf8');
    }
  }, 300_000);

  afterAll(() => {
    if (work) removeWorkDir(work);
  });

  const check = (name: string) => run?.sections[0]?.checks.get(name);
  const why = () =>
    `facts: ${JSON.stringify(facts, null, 1)}\n--- duofs-virtiofsd log (tail) ---\n${tail(fsLog, 20)}\n--- launcher stderr ---\n${tail(run?.stderr ?? '', 20)}`;

  test('libvirtd started duofs-virtiofsd itself: --fd=N and -o source=… (its argv), and QEMU with a vhost-user-fs device', () => {
    expect([facts['libvirt_version'], why()]).toEqual([expect.stringMatching(/Running against daemon: \d+\.\d+/), why()]);
    expect(facts['virtiofsd_argv']).toMatch(new RegExp(`${BINARY.replaceAll('.', '\\.')} --fd=\\d+ -o source=${C}/trees/x,xattr`));
    // The socket is libvirt's, in its per-domain folder; QEMU connects to it.
    expect(facts['qemu_argv']).toMatch(/-chardev socket,id=chr-vu-fs1,path=\/var\/lib\/libvirt\/qemu\/domain-\d+-duofs-lab\/fs1-fs\.sock /);
    expect(facts['qemu_argv']).toMatch(/-device \{"driver":"vhost-user-fs-pci","id":"fs1","chardev":"chr-vu-fs1",[^}]*"tag":"duofs"/);
  });

  test('the guest mounts tag duofs, reads a host file and writes one the host sees', () => {
    expect(run?.mounted).toEqual(['x']);
    expect(check('mount')).toBe('duofs:virtiofs');
    expect(check('read_host_file')).toBe('hello-from-the-host');
    expect(check('write_read')).toBe('written by a guest that libvirt started');
    expect(check('done')).toBe('ok');
    expect(run?.sections[0]?.rc).toBe(0);
    expect(readFileSync(join(tree, 'from-guest.txt'), 'utf8')).toBe('written by a guest that libvirt started\n');
    expect(existsSync(join(tree, 'made-by-guest'))).toBe(true);
  });

  test('virsh destroy stops the domain and duofs-virtiofsd is gone', () => {
    expect([facts['state_before'], facts['destroy'], facts['state_after']]).toEqual(['running', 'ok', 'shut off']);
    expect(facts['virtiofsd_gone_after_destroy']).toBe('yes');
    expect(fsLog).toMatch(/duofs-virtiofsd started/);
  });
});
