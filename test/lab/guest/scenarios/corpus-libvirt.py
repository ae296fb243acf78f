#!/usr/bin/env python3
# What a libvirt guest does with its virtiofs <filesystem> served by
# duofs-virtiofsd (test/lab/libvirt-virtiofsd.test.ts): checks the mount,
# writes and reads a file, sets an xattr (xattr='on'), and takes POSIX locks
# and flock()s (<lock posix='on' flock='on'/>): between two guest processes,
# against locks the host test process holds, and held by the guest while the
# host looks (handshake below).
#
# Usage: corpus-libvirt.py MOUNT
# Prints `CHECK <name> <result>`; exits 0 unless something unexpected raised.
#
# Handshake with the host, through locks only (with cache=always the guest
# would not see a file the host creates): the guest locks guest-held-posix
# (POSIX, whole file) and guest-held-flock (flock), prints
# "LIBVIRT-GUEST-HOLDS-LOCKS", and polls F_GETLK on host-ack until the host
# holds a write lock there (the host's sign that it has looked), at most 90 s.
import errno
import fcntl
import hashlib
import os
import struct
import sys
import time

mnt = sys.argv[1]
p = lambda n: os.path.join(mnt, n)


def check(name, result):
    print(f'CHECK {name} {result}', flush=True)


def err(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def getlk(fd, typ=fcntl.F_WRLCK):
    """F_GETLK on the whole file: (type, pid) of a conflicting lock, type F_UNLCK if none."""
    raw = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqi', typ, os.SEEK_SET, 0, 0, 0))
    t, _, _, _, pid = struct.unpack('hhqqi', raw)
    return t, pid


def in_child(fn):
    """Runs fn() in a forked process; returns what it printed as one word."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = fn()
        except OSError as e:
            out = err(e)
        os.write(w, str(out).encode())
        os._exit(0)
    os.close(w)
    data = b''
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return data.decode()


# The mount is virtiofs with the tag libvirt's <target dir='mailstore'/> gives.
mounts = [l.split() for l in open('/proc/mounts')]
m = [x for x in mounts if x[1] == mnt]
check('mount', f'{m[0][0]}:{m[0][2]}' if m else 'missing')

# Write, fsync, read back.
data = hashlib.sha256(b'seed').digest() * 40000  # 1.28 MB
with open(p('mail.bin'), 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
with open(p('hello.txt'), 'w') as f:
    f.write('hello from the libvirt guest\n')
with open(p('mail.bin'), 'rb') as f:
    back = f.read()
check('write_read', 'ok' if back == data else f'mismatch {len(back)} bytes')
check('read_host_file', open(p('from-host.txt')).read().strip())

# xattr='on'
try:
    os.setxattr(p('hello.txt'), 'user.mail', b'inbox')
    check('xattr', os.getxattr(p('hello.txt'), 'user.mail').decode())
except OSError as e:
    check('xattr', err(e))

# POSIX locks between two guest processes.
fd = os.open(p('lockfile'), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
check('posix_lock', 'ok')


def child_try_posix():
    cfd = os.open(p('lockfile'), os.O_RDWR)
    t, pid = getlk(cfd)
    try:
        fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return 'acquired'
    except OSError as e:
        return f'{err(e)},getlk={"wrlck" if t == fcntl.F_WRLCK else t},holder={"parent" if pid == os.getppid() else pid}'


check('posix_lock_conflict_in_guest', in_child(child_try_posix))
fcntl.lockf(fd, fcntl.LOCK_UN)
check('posix_lock_after_unlock', in_child(child_try_posix))
os.close(fd)

# flock() between two open file descriptions.
fa = os.open(p('flockfile'), os.O_RDWR | os.O_CREAT, 0o644)
fb = os.open(p('flockfile'), os.O_RDWR)
fcntl.flock(fa, fcntl.LOCK_EX | fcntl.LOCK_NB)
try:
    fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    check('flock_conflict_in_guest', 'acquired')
except OSError as e:
    check('flock_conflict_in_guest', err(e))
fcntl.flock(fa, fcntl.LOCK_UN)
try:
    fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    check('flock_after_unlock', 'ok')
except OSError as e:
    check('flock_after_unlock', err(e))
os.close(fa)
os.close(fb)

# Locks the host test process holds (an OFD write lock, a flock) are seen.
hp = os.open(p('host-held-posix'), os.O_RDWR)
try:
    fcntl.lockf(hp, fcntl.LOCK_EX | fcntl.LOCK_NB)
    check('host_posix_lock_seen', 'acquired')
except OSError as e:
    check('host_posix_lock_seen', err(e))
check('host_posix_lock_getlk', 'wrlck' if getlk(hp)[0] == fcntl.F_WRLCK else 'unlck')
os.close(hp)
hf = os.open(p('host-held-flock'), os.O_RDWR)
try:
    fcntl.flock(hf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    check('host_flock_seen', 'acquired')
except OSError as e:
    check('host_flock_seen', err(e))
os.close(hf)

# Locks the guest holds are seen by the host (handshake through host-ack).
gp = os.open(p('guest-held-posix'), os.O_RDWR | os.O_CREAT, 0o644)
gf = os.open(p('guest-held-flock'), os.O_RDWR | os.O_CREAT, 0o644)
ack = os.open(p('host-ack'), os.O_RDWR)
fcntl.lockf(gp, fcntl.LOCK_EX | fcntl.LOCK_NB)
fcntl.flock(gf, fcntl.LOCK_EX | fcntl.LOCK_NB)
print('LIBVIRT-GUEST-HOLDS-LOCKS', flush=True)
deadline = time.monotonic() + 90
acked = False
while time.monotonic() < deadline:
    if getlk(ack)[0] == fcntl.F_WRLCK:
        acked = True
        break
    time.sleep(0.2)
check('host_acknowledged', 'ok' if acked else 'timeout')
fcntl.lockf(gp, fcntl.LOCK_UN)
fcntl.flock(gf, fcntl.LOCK_UN)
for x in (gp, gf, ack):
    os.close(x)
os.sync()
