#!/bin/sh
# Changes from the host, as a container platform makes them (KubeVirt's
# ConfigMaps and Secrets; host-changes.test.ts): the host replaces a file
# while the guest has it cached, and this measures how long until the guest
# reads the new content through this mount.
#
# Run on each mount under test (/mnt/NAME, $LAB_MOUNT_NAME); works in
# NAME/ on the export, which the host prepared before the boot:
#   NAME/config            "v0"
#   NAME/proj/..data -> ..v0, NAME/proj/key -> ..data/key, NAME/proj/..v0/key "v0"
# For each kind of change (rename: a temp file renamed over config; data: the
# Kubernetes projected-volume swap of the ..data symlink) the guest warms its
# caches, prints `HOSTCHG REQ NAME KIND N` on the console, waits for the
# host's acknowledgement /mnt/ctl/done-NAME-KIND-N (a virtiofsd mount with
# cache=never), then reads by path: the first read, then every few ms until
# the new content or HC_LIMIT_MS (per mount: HC_LIMITS="NAME=MS ...",
# default 3000) has passed; if still stale, once more after dropping the
# guest's dentry and inode caches.
#   CHECK KINDN.before v(N-1)     CHECK KINDN.first vN|v(N-1)
#   CHECK KINDN.seen_ms MS|none   CHECK KINDN.after_drop vN|...
m=$1
n=$LAB_MOUNT_NAME
limit=3000
for kv in $HC_LIMITS; do [ "${kv%%=*}" = "$n" ] && limit=${kv#*=}; done
now_ms() { echo $(($(date +%s%N) / 1000000)); }
rd() { cat "$1" 2>&1 | tr -d '\n'; }

change() { # KIND FILE N
  kind=$1$3 f=$2 i=$3
  old=v$((i - 1)) new=v$i
  # warm: lookups, attributes, data
  for _ in 1 2 3; do rd "$f" >/dev/null; stat "$f" >/dev/null; done
  echo "CHECK $kind.before $(rd "$f")"
  ino0=$(stat -L -c %i "$f")
  ack=/mnt/ctl/done-$n-$1-$i
  echo "HOSTCHG REQ $n $1 $i"
  t=$(now_ms)
  until [ -e "$ack" ]; do
    [ $(($(now_ms) - t)) -gt 30000 ] && { echo "CHECK $kind.first no-ack"; return 1; }
    sleep 0.01
  done
  t0=$(now_ms)
  got=$(rd "$f")
  echo "CHECK $kind.first $got"
  # the inode number the first read after the change went through: a new one
  # means the guest looked the name up again
  [ "$(stat -L -c %i "$f")" = "$ino0" ] && echo "CHECK $kind.first_inode same" || echo "CHECK $kind.first_inode new"
  seen=none
  if [ "$got" = "$new" ]; then
    seen=0
  else
    while [ $(($(now_ms) - t0)) -le "$limit" ]; do
      got=$(rd "$f")
      if [ "$got" = "$new" ]; then seen=$(($(now_ms) - t0)); break; fi
      sleep 0.01
    done
  fi
  echo "CHECK $kind.seen_ms $seen"
  if [ "$seen" = none ]; then
    echo 2 > /proc/sys/vm/drop_caches
    echo "CHECK $kind.after_drop $(rd "$f")"
  fi
}

change rename "$m/$n/config" 1
change data "$m/$n/proj/key" 1
change rename "$m/$n/config" 2
