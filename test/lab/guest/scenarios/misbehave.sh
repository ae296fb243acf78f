#!/bin/sh
# Guests that go wrong, for the harness's own tests.  misbehave.sh /mnt/NAME MODE
case "$2" in
  hang) echo "CHECK about_to_hang yes"; sleep 100000 ;;
  panic) echo "CHECK about_to_panic yes"; echo c > /proc/sysrq-trigger; sleep 100 ;;
  garbage)
    head -c 200000 /dev/urandom
    printf '\nCHECK after_garbage yes\n'
    printf 'CHECK after_garbage again\n' ;;
  fail) echo "CHECK about_to_fail yes"; exit 3 ;;
esac
