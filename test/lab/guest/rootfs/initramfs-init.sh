#!/bin/busybox sh
# /init of the lab's 9p-root initramfs (built by test/lab/initramfs.ts).
# Loads the 9p modules the Debian kernel has as modules, mounts the root the
# kernel command line names, as initramfs-tools would:
#   root=TAG rootfstype=9p rootflags=trans=virtio,version=9p2000.L [rw|ro] [init=/path]
# then switch_root into it. Any failure is printed and powers the guest off
# (PID 1 must not exit: that panics the kernel).
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin
die() {
  echo "lab-initramfs: $*"
  echo o > /proc/sysrq-trigger
  sleep 60
}
mount -t proc proc /proc || die "mount /proc failed"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do
  insmod "/lib/modules/$m" || die "insmod $m failed"
done
root= fstype= flags= mode=ro init=/sbin/init
for a in $(cat /proc/cmdline); do
  case "$a" in
    root=*) root=${a#root=} ;;
    rootfstype=*) fstype=${a#rootfstype=} ;;
    rootflags=*) flags=${a#rootflags=} ;;
    init=*) init=${a#init=} ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
  esac
done
[ -n "$root" ] && [ -n "$fstype" ] || die "no root=/rootfstype= on the kernel command line"
echo "lab-initramfs: mount -t $fstype -o $mode${flags:+,$flags} $root /newroot"
mount -t "$fstype" -o "$mode${flags:+,$flags}" "$root" /newroot || die "mounting the root failed"
[ -x "/newroot$init" ] || die "no executable $init on the root"
umount /sys
umount /dev
umount /proc
exec switch_root /newroot "$init"
