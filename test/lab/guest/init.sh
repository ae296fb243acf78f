#!/bin/sh
# PID 1 of a lab guest (kernel command line: init=/duofs-lab/scripts/init.sh).
# The root is the lab root, read-only over virtiofs; this folder is
# test/lab/guest bound at /duofs-lab/scripts; /duofs-lab/run/plan.sh is
# written by test/lab/guest.ts for this boot. Prints marker lines that
# test/lab/console.ts parses, then powers the guest off. Never exits (PID 1
# exiting panics the kernel).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=linux

mark() { echo "@@DUOFS-LAB $*@@"; }
poweroff_now() {
  sync
  echo o > /proc/sysrq-trigger
  sleep 60
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /mnt
mkdir -p /run/lab
hostname lab-guest 2>/dev/null
mark "BOOTED uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"

modprobe 9pnet_virtio || echo "lab-guest: modprobe 9pnet_virtio failed"
modprobe 9p || echo "lab-guest: modprobe 9p failed"

# lab_relay PORTNAME SOCKET: relays one unix-socket connection to the
# virtio-serial port named PORTNAME (9P over a byte stream). One stream is one
# 9P session, so no fork: the relay serves the one connection the kernel's
# mount makes.
lab_relay() {
  dev=
  for d in /sys/class/virtio-ports/*; do
    [ "$(cat "$d/name" 2>/dev/null)" = "$1" ] && dev=/dev/${d##*/}
  done
  if [ -z "$dev" ]; then echo "lab-guest: no virtio-serial port named $1"; return 1; fi
  # (stdio detached: the caller runs this inside $(...), which would wait for it)
  socat -lf /run/lab/socat-$1.log UNIX-LISTEN:"$2" OPEN:"$dev" </dev/null >/dev/null 2>&1 &
  # The socket file exists between bind() and listen(): wait until it is
  # listening (flag 00010000 in /proc/net/unix), or the mount gets ECONNREFUSED.
  i=0
  until grep -q " 00010000 .* $2\$" /proc/net/unix; do
    i=$((i+1)); [ $i -gt 200 ] && { echo "lab-guest: socat did not listen on $2"; cat /run/lab/socat-$1.log; return 1; }
    sleep 0.05
  done
}

if ! sh -n /duofs-lab/run/plan.sh; then
  echo "lab-guest: /duofs-lab/run/plan.sh is broken (see above)"
  poweroff_now
fi
. /duofs-lab/run/plan.sh

for n in $LAB_MOUNTS; do
  mkdir -p /mnt/$n
  if out=$(lab_mount $n /mnt/$n 2>&1); then
    mark "MOUNTED $n"
  else
    [ -n "$out" ] && echo "$out"
    dmesg | tail -n 5
    mark "MOUNT-FAILED $n"
  fi
done

if [ "$LAB_SHELL" = 1 ]; then
  echo "lab-guest: mounts are under /mnt ($LAB_MOUNTS); scenarios in /duofs-lab/scripts/scenarios."
  echo "lab-guest: leave the shell to power off (or Ctrl-A X to kill QEMU)."
  setsid -c /bin/bash -l </dev/ttyS0 >/dev/ttyS0 2>&1
  poweroff_now
fi

for n in $LAB_RUN_ON; do
  grep -q " /mnt/$n " /proc/mounts || continue
  mark "BEGIN $n"
  t0=$(cut -d' ' -f1 /proc/uptime)
  if [ "$LAB_SCENARIO_TIMEOUT" -gt 0 ] 2>/dev/null; then
    (cd /tmp && LAB_MOUNT_NAME=$n timeout -k 5 "$LAB_SCENARIO_TIMEOUT" sh -c '. /duofs-lab/run/plan.sh; lab_scenario "$1"' sh /mnt/$n) 2>&1
  else
    (cd /tmp && LAB_MOUNT_NAME=$n lab_scenario /mnt/$n) 2>&1
  fi
  rc=$?
  t1=$(cut -d' ' -f1 /proc/uptime)
  mark "END $n rc=$rc secs=$(awk "BEGIN{printf \"%.1f\", $t1-$t0}")"
done
mark DONE
# A VMM that stops the guest itself (libvirt's `virsh destroy`) asks it to wait.
if [ "${LAB_HOLD_SECS:-0}" -gt 0 ] 2>/dev/null; then
  mark "HOLDING secs=$LAB_HOLD_SECS"
  sleep "$LAB_HOLD_SECS"
fi
poweroff_now
