#!/bin/busybox sh
# PID 1 of a guest whose root filesystem is served by duofs (rootfs.test.ts),
# over 9p (through the initramfs) or virtio-fs (kernel root=TAG). The root is a
# small busybox tree, writable, served with mapped-xattr by an unprivileged
# duofs. As root in the guest: write files, chown, chmod, mknod, symlinks, read
# them back (again after dropping the guest's caches), and read what an
# earlier boot over the other protocol made. Prints the lab's marker lines
# (test/lab/console.ts) and powers off.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
$B mount -t tmpfs -o mode=1777 tmpfs /tmp
proto=$($B sed -n 's/.*lab\.proto=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
mark() { echo "@@DUOFS-LAB $*@@"; }
mark "BOOTED uptime=$($B cut -d' ' -f1 /proc/uptime) kernel=$($B uname -r)"
# The applets as symlinks on the root itself (made through the server; an
# existing link is left as it is).
$B --install -s /bin 2>/tmp/install.err
export PATH=/bin
mark "BEGIN root-$proto"
t0=$(cut -d' ' -f1 /proc/uptime)
rc=0
check() { echo "CHECK $1 $2"; }
# step NAME CMD...: runs CMD, prints CHECK step.NAME ok or its error
step() {
  n=$1
  shift
  if out=$("$@" 2>&1); then check "step.$n" ok; else rc=1; check "step.$n" "failed: $(echo $out | head -c 200)"; fi
}
check root.mount "$(awk '$2 == "/" { t = $3; o = $4 } END { split(o, f, ","); print t, f[1] }' /proc/mounts)"
check root.links "$(ls /bin | wc -l | awk '{ print ($1 > 100) ? "many" : $1 }')"
check id "$(id -u):$(id -g)"
d=/guest-$proto
step mkdir mkdir $d
step write sh -c "echo 'written by the guest over $proto' > $d/file"
step chown chown 1234:5678 $d/file
step chmod chmod 2751 $d/file
step mknod mknod $d/zero c 1 5
step chown_dev chown 0:6 $d/zero
step chmod_dev chmod 0640 $d/zero
step mkfifo mkfifo -m 0604 $d/fifo
step symlink ln -s file $d/link
step chown_link chown -h 1234:5678 $d/link
step mkdir_owned sh -c "mkdir -m 0750 $d/dir && chown 1234:5678 $d/dir"
step append sh -c "echo appended >> $d/file"
sync
readback() { # PREFIX DIR
  check "$1.file" "$(stat -c '%u:%g %a %F %s' $2/file)"
  check "$1.content" "$(cat $2/file | tr '\n' '|')"
  check "$1.zero" "$(stat -c '%u:%g %a %F %t:%T' $2/zero)"
  check "$1.zero.read" "$(head -c 4 $2/zero | od -An -tx1 | tr -d ' ')"
  check "$1.fifo" "$(stat -c '%a %F' $2/fifo)"
  check "$1.link" "$(stat -c '%u:%g %F' $2/link) -> $(readlink $2/link)"
  check "$1.dir" "$(stat -c '%u:%g %a %F' $2/dir)"
}
readback rb $d
echo 3 > /proc/sys/vm/drop_caches
readback dropped $d
for o in /guest-*; do
  [ "$o" = "$d" ] && continue
  readback "seen.${o#/guest-}" "$o"
done
t1=$(cut -d' ' -f1 /proc/uptime)
mark "END root-$proto rc=$rc secs=$(awk "BEGIN{printf \"%.1f\", $t1-$t0}")"
mark DONE
sync
echo o > /proc/sysrq-trigger
sleep 60
