#!/bin/sh
# The classroom (test/lab/classroom.test.ts): one guest of the class, run on
# its private mount.   classroom.sh /mnt/home /mnt/shared UID WAIT
# Reads the shared area (host mode 1777: only read-only keeps it unwritten) and cannot write it; writes its own directory as the
# student uid; sees nothing of the other students. With WAIT=1 it holds a
# file open in its home across the host's SIGHUP (the host creates
# shared/reloaded once the ninth guest's devices were added) and writes
# through it afterwards.
home=$1 shared=$2 uid=$3 wait=$4
echo "CHECK shared_read $(cat "$shared/syllabus.txt" 2>&1)"
if sh -c "echo graffiti > '$shared/graffiti'" 2>/tmp/err; then echo "CHECK shared_write allowed"; else echo "CHECK shared_write $(sed 's/.*: //' /tmp/err)"; fi
if setpriv --reuid="$uid" --regid="$uid" --clear-groups sh -c "echo graffiti > '$shared/graffiti2'" 2>/tmp/err; then
  echo "CHECK shared_write_student allowed"
else
  echo "CHECK shared_write_student $(sed 's/.*: //' /tmp/err)"
fi
echo "CHECK home_owner $(stat -c %u:%g:%a "$home")"
echo "CHECK home_before [$(ls -A "$home" | tr '\n' ',')]"
if setpriv --reuid="$uid" --regid="$uid" --clear-groups sh -c "echo student $uid > '$home/mine'" 2>/tmp/err; then
  echo "CHECK student_write ok"
else
  echo "CHECK student_write $(cat /tmp/err)"
fi
echo "CHECK mine_owner $(stat -c %u "$home/mine" 2>&1)"
# the device's root is the top: .. of the mount is the guest's own /mnt
echo "CHECK dotdot [$(ls -A "$home/.." | tr '\n' ',')]"
if [ "$wait" = 1 ]; then
  exec 3>"$home/open.txt"
  echo before >&3
  : > "$home/ready"
  n=0
  while [ ! -e "$shared/reloaded" ] && [ $n -lt 900 ]; do sleep 1; n=$((n + 1)); done
  echo "CHECK saw_reload $([ -e "$shared/reloaded" ] && echo yes || echo no)"
  if echo after >&3; then echo "CHECK write_after_reload ok"; else echo "CHECK write_after_reload failed"; fi
  exec 3>&-
  echo "CHECK open_file [$(tr '\n' ',' < "$home/open.txt")]"
  echo "CHECK shared_after $(cat "$shared/syllabus.txt" 2>&1)"
  echo "CHECK home_after [$(ls -A "$home" | tr '\n' ',')]"
fi
