#!/usr/bin/env python3
# What a Kata Containers guest does with a virtiofs share served by
# duofs-virtiofsd started with Kata's argv plus --xattrmap and
# -o no_posix_lock (test/lab/kata-virtiofsd.test.ts): checks the mount,
# sets and lists xattrs through the map, tries a POSIX ACL (virtiofsd's
# default --posix-acl=never), and takes a POSIX lock that must stay inside
# the guest while flock() still reaches the host.
#
# Usage: corpus-kata.py MOUNT
# Prints `CHECK <name> <result>`.
#
# Handshake: the guest holds a POSIX lock on guest-posix and a flock on
# guest-flock, prints "KATA-GUEST-HOLDS-LOCKS", then polls flock(LOCK_NB) on
# host-ack until the host holds it (flock still reaches the host), at most 90 s.
import errno
import fcntl
import os
import sys
import time

mnt = sys.argv[1]
p = lambda n: os.path.join(mnt, n)


def check(name, result):
    print(f'CHECK {name} {result}', flush=True)


def err(e):
    return errno.errorcode.get(e.errno, str(e.errno))


mounts = [l.split() for l in open('/proc/mounts')]
m = [x for x in mounts if x[1] == mnt]
check('mount', f'{m[0][0]}:{m[0][2]}' if m else 'missing')

with open(p('f.txt'), 'w') as f:
    f.write('kata\n')
check('write_read', open(p('f.txt')).read().strip())

# --xattrmap=:map::user.virtiofs.: : the guest's names live under user.virtiofs.
try:
    os.setxattr(p('f.txt'), 'user.kata', b'v1')
    check('xattr_get', os.getxattr(p('f.txt'), 'user.kata').decode())
except OSError as e:
    check('xattr_get', err(e))
check('xattr_list_tagged', ','.join(sorted(os.listxattr(p('tagged.txt')))) or 'none')
try:
    os.getxattr(p('tagged.txt'), 'user.hostonly')
    check('xattr_hostonly', 'visible')
except OSError as e:
    check('xattr_hostonly', err(e))

# --posix-acl=never (virtiofsd's default): no ACLs in the guest.
acl = bytes.fromhex('02000000' '01000600ffffffff' '02000400d2040000' '04000400ffffffff' '10000400ffffffff' '20000400ffffffff')
try:
    os.setxattr(p('f.txt'), 'system.posix_acl_access', acl)
    check('acl_set', 'ok')
except OSError as e:
    check('acl_set', err(e))

# -o no_posix_lock: POSIX locks are the guest kernel's own; two guest
# processes still exclude each other.
fd = os.open(p('guest-posix'), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    cfd = os.open(p('guest-posix'), os.O_RDWR)
    try:
        fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(w, b'acquired')
    except OSError as e:
        os.write(w, err(e).encode())
    os._exit(0)
os.waitpid(pid, 0)
check('posix_conflict_in_guest', os.read(r, 64).decode())
ff = os.open(p('guest-flock'), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(ff, fcntl.LOCK_EX | fcntl.LOCK_NB)
print('KATA-GUEST-HOLDS-LOCKS', flush=True)
ack = os.open(p('host-ack'), os.O_RDWR)
deadline = time.time() + 90
result = 'timeout'
while time.time() < deadline:
    try:
        fcntl.flock(ack, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(ack, fcntl.LOCK_UN)
        time.sleep(0.2)
    except OSError as e:
        result = 'ok' if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else err(e)
        break
check('host_acknowledged', result)
os.close(ack)
os.close(ff)
os.close(fd)
