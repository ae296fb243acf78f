#!/usr/bin/env python3
# What a guest of a libvirt session-mode domain does with ownership on its
# virtiofs mount (test/lab/libvirt-session.test.ts): as guest root it
# creates, chowns, chmods (setuid included), makes a fifo and a char device
# node, chowns those; then as uid/gid 1000 it creates in a directory it
# owns. Each step prints what the guest sees afterwards (stat), or the errno.
#
# Usage: libvirt-session.py MOUNT
# Prints `CHECK <name> <result>`; exits 0 unless something unexpected raised.
import errno
import os
import stat
import sys

mnt = sys.argv[1]
p = lambda n: os.path.join(mnt, n)
os.umask(0o022)


def check(name, result):
    print(f'CHECK {name} {result}', flush=True)


def seen(path):
    st = os.lstat(path)
    kind = {stat.S_IFREG: 'reg', stat.S_IFDIR: 'dir', stat.S_IFIFO: 'fifo', stat.S_IFCHR: 'chr'}.get(stat.S_IFMT(st.st_mode), '?')
    dev = f',{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}' if kind == 'chr' else ''
    return f'{kind},{st.st_uid}:{st.st_gid},{stat.S_IMODE(st.st_mode):o}{dev}'


def step(name, fn, path):
    try:
        fn()
        check(name, seen(path))
    except OSError as e:
        check(name, errno.errorcode.get(e.errno, str(e.errno)))


with open('/proc/mounts') as f:
    check('mount', next((l.split()[2] for l in f if l.split()[1] == mnt), 'none'))

step('create_as_root', lambda: open(p('by-root'), 'w').close(), p('by-root'))
open(p('owned'), 'w').close()
step('chown_1000', lambda: os.chown(p('owned'), 1000, 1000), p('owned'))
step('chmod_4751', lambda: os.chmod(p('owned'), 0o4751), p('owned'))
step('chown_nobody', lambda: (open(p('nobody'), 'w').close(), os.chown(p('nobody'), 65534, 65534)), p('nobody'))
step('mkfifo', lambda: os.mkfifo(p('fifo'), 0o640), p('fifo'))
step('chown_fifo', lambda: os.chown(p('fifo'), 1001, 1002), p('fifo'))
step('mknod_chr', lambda: os.mknod(p('null'), stat.S_IFCHR | 0o666, os.makedev(1, 3)), p('null'))
if os.path.lexists(p('null')):
    step('chown_chr', lambda: os.chown(p('null'), 0, 5), p('null'))
os.mkdir(p('home'), 0o755)
step('chown_home', lambda: os.chown(p('home'), 1000, 1000), p('home'))

pid = os.fork()
if pid == 0:
    try:
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)
        step('create_as_1000', lambda: open(p('home/mine'), 'w').close(), p('home/mine'))
        step('mkfifo_as_1000', lambda: os.mkfifo(p('home/fifo'), 0o600), p('home/fifo'))
    finally:
        os._exit(0)
os.waitpid(pid, 0)
check('done', 'ok')
