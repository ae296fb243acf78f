#!/bin/sh
# Scenario driver of the security-model corpus tests
# (test/lab/security-models.test.ts, test/lab/unprivileged.test.ts).
# Runs on each mount in turn (init.sh passes /mnt/<name>); what it does there
# comes from CORPUS_PLAN, entries separated by spaces:
#   NAME=build:SUB+SUB     build the corpus (corpus-build.py) in /mnt/NAME/SUB...
#                          (SUB=empty: only make the directory)
#   NAME=dump              write the guest's view of /mnt/NAME (corpus-dump.sh)
#                          to $CORPUS_OUT/NAME.txt
#   NAME=dump:OTHER        the same for /mnt/OTHER, at NAME's turn (to dump a
#                          mount after later mounts have built on the export)
#   NAME=build:SUB,dump    several actions, in that order
# A mount the plan does not name is left alone. CORPUS_OUT is a folder on a
# mount that the host reads afterwards.
mnt=$1
name=${LAB_MOUNT_NAME:-$(basename "$mnt")}
here=$(dirname "$0")
rc=0
for entry in $CORPUS_PLAN; do
  [ "${entry%%=*}" = "$name" ] || continue
  actions=${entry#*=}
  old_ifs=$IFS; IFS=,; set -- $actions; IFS=$old_ifs
  for a in "$@"; do
    case "$a" in
      build:*)
        subs=$(echo "${a#build:}" | tr + ' ')
        # shellcheck disable=SC2086
        python3 -u "$here/corpus-build.py" "$mnt" $subs || rc=1
        ;;
      dump|dump:*)
        what=$name
        [ "$a" = dump ] || what=${a#dump:}
        t0=$(cut -d' ' -f1 /proc/uptime)
        sh "$here/corpus-dump.sh" "/mnt/$what" > "$CORPUS_OUT/$what.txt" 2>&1 || rc=1
        t1=$(cut -d' ' -f1 /proc/uptime)
        echo "CHECK dump.$what $(wc -l < "$CORPUS_OUT/$what.txt") lines"
        echo "INFO dump of $what took $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") s"
        ;;
      *) echo "corpus-run: unknown action $a"; rc=1;;
    esac
  done
done
exit $rc
