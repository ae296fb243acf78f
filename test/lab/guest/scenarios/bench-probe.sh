#!/bin/sh
# Temporary probe (bench development).
d=$1
grep " $d " /proc/self/mountinfo
ls -la /sys/fs/fuse/connections/
mount -t fusectl fusectl /sys/fs/fuse/connections && echo mounted-fusectl
ls -la /sys/fs/fuse/connections/
stat -c '%d %D %t:%T' "$d"
grep fuse /proc/filesystems
