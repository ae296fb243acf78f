#!/bin/sh
# One boot of several against the same running duofs (test/lab/virtiofs.test.ts,
# test/lab/virtio9p.test.ts):  reconnect-rw.sh /mnt/NAME
# Environment: LAB_BOOT (1, 2, ...), LAB_TOKEN (a value the host chose for this run).
# Every boot reads what the boots before it wrote (names and contents) and then
# writes its own: boot-N.txt (the token and N), boot-N.bin (4 MiB, the same
# bytes every time: sha256 checked on the host and by later boots), a folder and
# a symlink, all fsynced. The guest is powered off right after (init.sh: sync,
# then sysrq o), without unmounting: the server sees the frontend vanish.
d=$1
n=${LAB_BOOT:?}
set -u
w=$d/reconnect
mnt=$(awk -v m="$d" '$2 == m { print $3 " " $4 }' /proc/mounts)
echo "CHECK mount.fstype ${mnt%% *}"
# 9p: the negotiated msize and the transport, as the kernel shows them
case "$mnt" in
  9p*) opts=${mnt#* }
       echo "CHECK mount.trans $(echo "$opts" | tr , '\n' | sed -n 's/^trans=//p')"
       echo "CHECK mount.msize $(echo "$opts" | tr , '\n' | sed -n 's/^msize=//p')";;
esac
mkdir -p "$w"
i=1
seen=
while [ $i -lt "$n" ]; do
  echo "CHECK boot$n.reads_boot$i.txt $(cat "$w/boot-$i.txt" 2>&1 | tr ' \n' '_,')"
  echo "CHECK boot$n.reads_boot$i.bin $(sha256sum < "$w/boot-$i.bin" 2>&1 | cut -c1-16)"
  echo "CHECK boot$n.reads_boot$i.link $(readlink "$w/link-$i" 2>&1)"
  echo "CHECK boot$n.reads_boot$i.dir $(stat -c %F "$w/dir-$i" 2>&1 | tr ' ' _)"
  i=$((i+1))
done
echo "CHECK boot$n.listing $(ls "$w" | tr '\n' ',')"
printf '%s boot %s\n' "$LAB_TOKEN" "$n" > "$w/boot-$n.txt"
# 4 MiB of deterministic bytes (the same on every boot), written and fsynced
yes 'duofs reconnect test data 0123456789abcdef' | head -c 4194304 | dd of="$w/boot-$n.bin" bs=1M conv=fsync status=none
echo "CHECK boot$n.wrote_bin $(sha256sum < "$w/boot-$n.bin" | cut -c1-16)"
mkdir "$w/dir-$n"
ln -s "boot-$n.txt" "$w/link-$n"
sync -f "$w/boot-$n.txt"
echo "CHECK boot$n.wrote ok"
