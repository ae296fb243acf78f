#!/bin/sh
# Smoke scenario: basic I/O both ways through one mount.  smoke.sh /mnt/NAME
# The host put from-host.txt in the export; the test checks from-guest.txt.
d=$1
echo "CHECK fstype $(awk -v m="$d" '$2 == m { print $3 }' /proc/mounts)"
echo "CHECK read_host_file $(cat "$d/from-host.txt" 2>&1)"
echo "guest wrote to $LAB_MOUNT_NAME" > "$d/from-guest.txt" && echo "CHECK write ok"
mkdir "$d/dir" && chown 1234:1234 "$d/dir" && echo "CHECK chown_seen $(stat -c %u:%g "$d/dir")"
echo "CHECK listing $(ls "$d" | tr '\n' ',')"
