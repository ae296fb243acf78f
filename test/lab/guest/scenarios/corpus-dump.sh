#!/bin/sh
# The guest's view of a corpus tree, as the tools an operator would use print
# it: stat (fixed format), ls -ln, getfattr -d, getfacl, readlink, and an md5
# of every regular file. Paths are relative to the mount (cd first) and every
# list is in byte order (LC_ALL=C sort), so two mounts of the same tree give
# the same text when the servers agree. Each section starts with "== NAME";
# a tool's stderr follows its output as "== NAME stderr".
# The tree is walked once (find); the per-type lists come from stat's output,
# since every walk costs about a second on a 9p mount under TCG.
# Usage: corpus-dump.sh MOUNT   (output on stdout)
export LC_ALL=C
cd "$1" || exit 1
t=/tmp/corpus-dump.$$
find . | sort > $t.all

section() { # NAME command...
  n=$1; shift
  echo "== $n"
  "$@" 2> $t.err
  if [ -s $t.err ]; then echo "== $n stderr"; cat $t.err; fi
}
# %n name, %f raw mode (hex, with the type), %a %A mode, %F type, %u %g owner,
# %t %T device major/minor (hex), %s size, %h links, %i inode, %.9Y mtime.
xargs -r -d '\n' stat -c '%n|%f|%a|%A|%F|%u|%g|%t|%T|%s|%h|%i|%.9Y' < $t.all > $t.stat 2> $t.staterr
echo "== stat"
cat $t.stat
if [ -s $t.staterr ]; then echo "== stat stderr"; cat $t.staterr; fi
awk -F'|' '$5 == "symbolic link" { print $1 }' $t.stat > $t.links
awk -F'|' '$5 != "symbolic link" { print $1 }' $t.stat > $t.nolinks
awk -F'|' '$5 ~ /^regular/ { print $1 }' $t.stat > $t.files

section ls ls -lnRA --time-style=full-iso .
section getfattr xargs -r -d '\n' getfattr -h -d -m - -e hex < $t.all
section getfacl xargs -r -d '\n' getfacl -n < $t.nolinks
echo "== readlink"
xargs -r -d '\n' readlink < $t.links > $t.targets 2> $t.err
paste -d '|' $t.links $t.targets
if [ -s $t.err ]; then echo "== readlink stderr"; cat $t.err; fi
section md5 xargs -r -d '\n' md5sum < $t.files
rm -f $t.*
echo "== end"
