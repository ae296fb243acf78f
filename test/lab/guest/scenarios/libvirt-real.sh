#!/bin/sh
# Guest side of test/lab/libvirt-real.test.ts: the virtiofs mount a real
# libvirt gave this guest (its <filesystem> runs duofs-virtiofsd). $1 is the
# mount point.
d=$1
echo "CHECK mount $(awk -v d="$d" '$2 == d { print $1 ":" $3 }' /proc/mounts)"
echo "CHECK read_host_file $(cat "$d/from-host.txt" 2>&1)"
printf 'written by a guest that libvirt started\n' > "$d/from-guest.txt" && sync
echo "CHECK write_read $(cat "$d/from-guest.txt" 2>&1)"
mkdir "$d/made-by-guest" && echo "CHECK mkdir ok"
echo "CHECK done ok"
