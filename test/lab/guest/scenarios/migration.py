#!/usr/bin/env python3
# The guest side of the live-migration lab test (test/lab/migration.test.ts):
#   migration.py /mnt/NAME
# The host prepared NAME/mig/dir (LAB_MIG_ENTRIES files) and NAME/mig/ctl.
# This script, in phases separated by live migrations of the whole VM:
# * a writer process, its cwd in the mount, appends numbered lines to
#   mig/w/log.txt through one fd opened before the first migration, fsyncs
#   each line and only then counts it as acknowledged;
# * a directory stream on mig/dir (os.scandir) is read a part per phase;
# * this process also keeps its cwd in the mount (mig/cwd).
# At the end of each phase but the last it prints `MIG-WAIT <n>` and waits
# until the host (having migrated the VM) creates mig/ctl/go<n>. Then it
# checks that nothing went stale. The last phase stops the writer, which
# reads its file back (every line 1..N exactly once), and prints CHECK lines.
import errno
import os
import signal
import sys
import time

mnt = sys.argv[1]
entries = int(os.environ.get('LAB_MIG_ENTRIES', '3000'))
phases = int(os.environ.get('LAB_MIG_PHASES', '3'))
base = os.path.join(mnt, 'mig')


def check(name, value):
    print(f'CHECK {name} {value}', flush=True)


def err_name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__


os.makedirs(os.path.join(base, 'w'), exist_ok=True)
os.makedirs(os.path.join(base, 'cwd'), exist_ok=True)
acked_file = '/tmp/mig-acked'

# ------------------------------------------------------------------ writer
stop = False


def writer():
    global stop

    def on_usr1(_s, _f):
        global stop
        stop = True

    signal.signal(signal.SIGUSR1, on_usr1)
    os.chdir(os.path.join(base, 'w'))
    error = 'none'
    n = 0
    try:
        fd = os.open('log.txt', os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        while not stop:
            os.write(fd, b'%08d\n' % (n + 1))
            os.fsync(fd)
            n += 1
            if n % 10 == 0:
                with open(acked_file + '.tmp', 'w') as f:
                    f.write(str(n))
                os.replace(acked_file + '.tmp', acked_file)
            time.sleep(0.005)
        os.fstat(fd)
        os.close(fd)
    except Exception as e:  # noqa: BLE001 - reported to the host
        error = f'{err_name(e)}:{e}'
    check('writer.error', error.replace(' ', '_'))
    check('writer.acked', n)
    # read back through the cwd that lived through the migrations
    try:
        with open('log.txt', 'rb') as f:
            data = f.read()
        lines = data.split(b'\n')
        if lines and lines[-1] == b'':
            lines.pop()
        want = [b'%08d' % i for i in range(1, n + 1)]
        if lines == want:
            check('writer.readback', 'ok')
        else:
            bad = next((i for i, (a, b) in enumerate(zip(lines, want)) if a != b), min(len(lines), len(want)))
            check('writer.readback', f'mismatch_lines={len(lines)}_want={n}_first_bad={bad}')
        check('writer.cwd', os.path.relpath(os.getcwd(), mnt))
    except Exception as e:  # noqa: BLE001
        check('writer.readback', err_name(e))
    sys.stdout.flush()
    os._exit(0)


pid = os.fork()
if pid == 0:
    writer()

os.chdir(os.path.join(base, 'cwd'))
with open('here.txt', 'w') as f:
    f.write('cwd\n')


def acked():
    try:
        with open(acked_file) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


# LAB_MIG_UNLINKED=1: also hold an fd on a file unlinked before the first
# migration; its path cannot be found, so the source's save fails
# (--migration-on-error abort) or the fd answers EIO after it (guest-error).
unlinked = None
if os.environ.get('LAB_MIG_UNLINKED') == '1':
    unlinked = os.open('unlinked.txt', os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(unlinked, b'unlinked\n')
    os.fsync(unlinked)
    os.unlink('unlinked.txt')


def unlinked_state():
    try:
        return 'ok' if os.pread(unlinked, 9, 0) == b'unlinked\n' else 'wrong_data'
    except OSError as e:
        return err_name(e)


# ------------------------------------------------------------------ reader
it = os.scandir(os.path.join(base, 'dir'))
names = []
per_phase = entries // phases + 1
errors = []

# the writer has written something before the first migration
t0 = time.time()
while acked() < 20 and time.time() - t0 < 30:
    time.sleep(0.1)

for phase in range(1, phases + 1):
    try:
        for _ in range(per_phase):
            e = next(it, None)
            if e is None:
                break
            names.append(e.name)
    except Exception as e:  # noqa: BLE001
        errors.append(f'readdir{phase}:{err_name(e)}')
    a = acked()
    check(f'phase{phase}.acked_grows', 'yes' if a > 0 else 'no')
    if phase == phases:
        break
    print(f'MIG-WAIT {phase} acked={a} names={len(names)}', flush=True)
    go = os.path.join(base, 'ctl', f'go{phase}')
    t0 = time.time()
    while not os.path.exists(go):
        if time.time() - t0 > 300:
            errors.append(f'no_go{phase}')
            break
        time.sleep(0.3)
    # back from a migration: nothing may have gone stale
    try:
        check(f'phase{phase}.cwd', os.path.relpath(os.getcwd(), mnt))
        with open('here.txt') as f:
            check(f'phase{phase}.cwd_file', f.read().strip())
        with open(f'after{phase}.txt', 'w') as f:
            f.write(f'{phase}\n')
        check(f'phase{phase}.cwd_list', ','.join(sorted(os.listdir('.'))))
    except Exception as e:  # noqa: BLE001
        errors.append(f'cwd{phase}:{err_name(e)}')
    if unlinked is not None:
        check(f'phase{phase}.unlinked_fd', unlinked_state())
    # the writer goes on after the migration
    a0 = acked()
    t0 = time.time()
    while acked() < a0 + 20 and time.time() - t0 < 30:
        time.sleep(0.1)
    check(f'phase{phase}.writer_goes_on', 'yes' if acked() >= a0 + 20 else f'no_{a0}_{acked()}')

try:
    rest = [e.name for e in it]
    names.extend(rest)
    it.close()
except Exception as e:  # noqa: BLE001
    errors.append(f'readdir_end:{err_name(e)}')

want = [f'entry-with-a-longish-name-{i:06d}' for i in range(entries)]
check('reader.count', len(names))
check('reader.unique', len(set(names)))
check('reader.names', 'ok' if sorted(names) == want else 'mismatch')

os.kill(pid, signal.SIGUSR1)
_, status = os.waitpid(pid, 0)
check('writer.status', status)
check('errors', ','.join(errors) or 'none')
