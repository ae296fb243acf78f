#!/usr/bin/env python3
# Two guests lock the same file of one export (test/lab/virtiofs.test.ts).
#   python3 -u locks-two-guests.py MOUNT --role holder|contender --sync DIR --round NAME:KIND:DIR [--round ...]
# KIND is posix (fcntl F_SETLK/F_SETLKW/F_GETLK on the whole file) or flock.
# Each guest names, per round, the mount it locks through (e.g. the holder
# always through its virtio-fs mount, the contender once through 9p and once
# through virtio-fs); both use the file locks/<NAME> of the same export.
#
# The two guests take turns through marker files in DIR, a folder both see
# through their own virtiofsd with --cache=never (no guest caching, so a
# marker written by one guest is seen by the other at once). The markers are
# not on the file system under test on purpose: the turns must not depend on
# what is being tested.
#
# Per round (A = holder, B = contender):
#   A  locks (non-blocking)                      -> CHECK <r>.holder_lock ok
#   B  tries non-blocking                        -> CHECK <r>.contender_trylock EAGAIN
#   B  (posix) F_GETLK                            -> CHECK <r>.contender_getlk wr
#   B  announces it blocks, then blocks (F_SETLKW / LOCK_EX)
#   A  waits 2 s, announces the release, releases
#   B  is granted                                 -> CHECK <r>.contender_wait granted_after_release,waited
#   A  tries non-blocking while B holds           -> CHECK <r>.holder_trylock_while_held EAGAIN
#   B  releases;  A tries again                   -> CHECK <r>.holder_trylock_after_release ok
# Prints CHECK lines; rc 0 unless a step could not run at all.
import errno
import fcntl
import os
import signal
import struct
import sys
import time

ROOT = sys.argv[1]
ARGS = sys.argv[2:]
ROLE = None
SYNC = None
ROUNDS = []
i = 0
while i < len(ARGS):
    a = ARGS[i]
    if a == '--role':
        ROLE = ARGS[i + 1]
    elif a == '--sync':
        SYNC = ARGS[i + 1]
    elif a == '--round':
        name, kind, mnt = ARGS[i + 1].split(':', 2)
        ROUNDS.append((name, kind, mnt))
    i += 2
assert ROLE in ('holder', 'contender') and SYNC and ROUNDS, 'usage: see the header'
WAIT_S = 150       # for the other guest (it may still be booting)
BLOCK_LIMIT_S = 40  # a blocking lock not granted by then is reported as such


def emit(name, value):
    print('CHECK %s %s' % (name, str(value).replace(' ', '_')), flush=True)


def info(msg):
    print('INFO %s %s' % (ROLE, msg), flush=True)


def mark(name):
    fd = os.open(os.path.join(SYNC, name), os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)


def marked(name):
    return os.path.exists(os.path.join(SYNC, name))


class GaveUp(Exception):
    pass


def wait(name, limit=WAIT_S):
    other = 'contender' if ROLE == 'holder' else 'holder'
    t0 = time.monotonic()
    while not marked(name):
        if marked('%s.gave_up' % other):
            raise GaveUp('the %s gave up (see its output)' % other)
        if time.monotonic() - t0 > limit:
            raise GaveUp('no marker %s after %d s' % (name, limit))
        time.sleep(0.05)


def ename(e):
    return errno.errorcode.get(e.errno, 'E%d' % e.errno)


def try_lock(fd, kind):
    """Non-blocking exclusive lock on the whole file: 'ok' or an errno name (EWOULDBLOCK is EAGAIN)."""
    try:
        if kind == 'posix':
            fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return 'ok'
    except OSError as e:
        return ename(e)


def unlock(fd, kind):
    if kind == 'posix':
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi', fcntl.F_UNLCK, 0, 0, 0, 0))
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def getlk(fd):
    got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
    typ = struct.unpack('hhqqi', got)[0]
    return {fcntl.F_WRLCK: 'wr', fcntl.F_RDLCK: 'rd', fcntl.F_UNLCK: 'un'}.get(typ, str(typ))


class Alarm(Exception):
    pass


def on_alarm(*_):
    raise Alarm()


signal.signal(signal.SIGALRM, on_alarm)


def blocking_lock(fd, kind):
    """Blocks for the lock (at most BLOCK_LIMIT_S): 'granted' or why not."""
    signal.alarm(BLOCK_LIMIT_S)
    try:
        if kind == 'posix':
            fcntl.fcntl(fd, fcntl.F_SETLKW, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
        return 'granted'
    except Alarm:
        return 'not_granted_within_%ds' % BLOCK_LIMIT_S
    except OSError as e:
        return ename(e)
    finally:
        signal.alarm(0)


def path(mnt, name):
    return os.path.join(mnt, 'locks', name)


def holder():
    os.makedirs(os.path.join(ROUNDS[0][2], 'locks'), exist_ok=True)
    for name, _, mnt in ROUNDS:
        fd = os.open(path(mnt, name), os.O_CREAT | os.O_RDWR, 0o666)
        os.write(fd, b'lock me\n')
        os.fsync(fd)
        os.close(fd)
    mark('setup')
    for name, kind, mnt in ROUNDS:
        info('round %s (%s through %s)' % (name, kind, mnt))
        fd = os.open(path(mnt, name), os.O_RDWR)
        emit('%s.holder_lock' % name, try_lock(fd, kind))
        mark('%s.a_locked' % name)
        wait('%s.b_blocking' % name)
        time.sleep(2)  # B is in its blocking call by now
        mark('%s.a_releasing' % name)
        unlock(fd, kind)
        wait('%s.b_locked' % name)
        emit('%s.holder_trylock_while_held' % name, try_lock(fd, kind))
        mark('%s.a_tried' % name)
        wait('%s.b_released' % name)
        emit('%s.holder_trylock_after_release' % name, try_lock(fd, kind))
        unlock(fd, kind)
        os.close(fd)
        mark('%s.a_done' % name)


def contender():
    wait('setup')
    for name, kind, mnt in ROUNDS:
        info('round %s (%s through %s)' % (name, kind, mnt))
        wait('%s.a_locked' % name)
        fd = os.open(path(mnt, name), os.O_RDWR)
        emit('%s.contender_trylock' % name, try_lock(fd, kind))
        if kind == 'posix':
            try:
                emit('%s.contender_getlk' % name, getlk(fd))
            except OSError as e:
                emit('%s.contender_getlk' % name, ename(e))
        mark('%s.b_blocking' % name)
        t0 = time.monotonic()
        got = blocking_lock(fd, kind)
        waited = time.monotonic() - t0
        if got == 'granted':
            # Granted only once A had announced its release (it marks before unlocking).
            got = 'granted_after_release' if marked('%s.a_releasing' % name) else 'granted_while_held'
        info('%s: blocking lock %s after %.1f s' % (name, got, waited))
        emit('%s.contender_wait' % name, '%s,%s' % (got, 'waited' if waited >= 1.5 else 'did_not_wait'))
        mark('%s.b_locked' % name)
        wait('%s.a_tried' % name)
        unlock(fd, kind)
        os.close(fd)
        mark('%s.b_released' % name)
        wait('%s.a_done' % name)


try:
    holder() if ROLE == 'holder' else contender()
except BaseException as e:  # noqa: BLE001  (the other guest must not wait for us in vain)
    print('INFO %s gave up: %s: %s' % (ROLE, type(e).__name__, e), flush=True)
    mark('%s.gave_up' % ROLE)
    sys.exit(3)
