#!/usr/bin/env python3
# Cross-protocol coherence of one export served by one duofs process over
# virtio-fs and virtio-9p at once, both mounted in this guest
# (test/lab/cross-protocol.test.ts):
#   python3 -u xproto-coherence.py VIRTIOFS_MOUNT NINEP_MOUNT
# Prints `CHECK <name> <result>`; the test names the expected result of each.
#
# The guest's caches, and what each check relies on:
# * The 9p mount uses the 9p client's default cache=none: every read, write,
#   stat and lookup goes to the server, so what another mount wrote and
#   fsynced is seen at once.
# * The virtio-fs mount uses duofs's default --cache auto (as virtiofsd):
#   entries and attributes are cached for 1 s, the page cache is dropped at
#   each open (no FOPEN_KEEP_CACHE: close-to-open consistency), and with
#   FUSE_AUTO_INVAL_DATA a refreshed attribute with a new mtime/size drops the
#   cached pages of an open file. So through virtio-fs a fresh open sees data
#   written elsewhere at once (for an unchanged size; a new size, a new link
#   count, a vanished or new name need the 1 s attribute/entry timeout), and
#   an fd opened before the change sees it once its attributes have been
#   refreshed after the timeout. Checks that depend on the timeout wait
#   ATTR_WAIT first; none of them drops the guest's caches, which would hide
#   exactly what the test is for.
# * 9p's SETLKW has no wake-up in 9P2000.L: a blocked lock is retried by the
#   guest client every `locktimeout` seconds (default 30); the test mounts the
#   9p side with locktimeout=1.
import errno
import fcntl
import hashlib
import os
import select
import struct
import sys
import time

F = sys.argv[1]  # virtio-fs
P = sys.argv[2]  # 9p
W = 'xproto'
ATTR_WAIT = 1.3  # > duofs's 1 s entry/attribute timeout in --cache auto


def emit(name, value):
    print('CHECK %s %s' % (name, str(value).replace(' ', '_').replace('\n', '\\n')[:160]), flush=True)


def ename(e):
    return errno.errorcode.get(e.errno, 'E%d' % e.errno)


def res(fn):
    try:
        v = fn()
        return 'ok' if v is None else v
    except OSError as e:
        return ename(e)
    except Exception as e:  # noqa: BLE001
        return 'EXC:%s:%s' % (type(e).__name__, e)


def r(name, fn):
    emit(name, res(fn))


def f(*names):
    return os.path.join(F, W, *names)


def p(*names):
    return os.path.join(P, W, *names)


def pattern(tag, size):
    seed = hashlib.sha256(tag.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def write_sync(path, data, flags=os.O_CREAT | os.O_WRONLY | os.O_TRUNC):
    fd = os.open(path, flags, 0o644)
    try:
        n = 0
        while n < len(data):
            n += os.write(fd, data[n:])
        os.fsync(fd)
    finally:
        os.close(fd)


def read_all(path):
    with open(path, 'rb') as fh:
        return fh.read()


def pread_all(fd, size):
    out = b''
    while len(out) < size:
        b = os.pread(fd, size - len(out), len(out))
        if not b:
            break
        out += b
    return out


def same(a, b):
    return 'same' if a == b else 'DIFFERENT(len=%d/%d)' % (len(a), len(b))


# ------------------------------------------------------------------ data

def data():
    big = 3 * 1024 * 1024 + 123  # more than one msize / max_write, not page aligned
    a = pattern('a', big)
    write_sync(f('d1'), a)
    r('data.vfs_write_9p_read', lambda: same(read_all(p('d1')), a))

    b = pattern('b', big)
    write_sync(p('d2'), b)
    r('data.9p_write_vfs_read', lambda: same(read_all(f('d2')), b))

    # An fd open through 9p while virtio-fs overwrites (cache=none: reads go to the server)
    fd = os.open(p('d1'), os.O_RDONLY)
    try:
        a2 = pattern('a2', big)
        write_sync(f('d1'), a2, os.O_WRONLY)
        r('data.vfs_overwrite_9p_open_fd', lambda: same(pread_all(fd, big), a2))
    finally:
        os.close(fd)

    # virtio-fs reader with its page cache warm, 9p overwrites (same size)
    fd = os.open(f('d2'), os.O_RDONLY)
    try:
        pread_all(fd, big)  # cache it
        b2 = pattern('b2', big)
        write_sync(p('d2'), b2, os.O_WRONLY)
        r('data.9p_overwrite_vfs_reopen', lambda: same(read_all(f('d2')), b2))
        time.sleep(ATTR_WAIT)
        os.fstat(fd)  # attributes refreshed: new mtime -> cached pages dropped
        r('data.9p_overwrite_vfs_open_fd_after_attr_timeout', lambda: same(pread_all(fd, big), b2))
    finally:
        os.close(fd)

    # 9p appends; the size through virtio-fs after the attribute timeout
    fd = os.open(p('d2'), os.O_WRONLY | os.O_APPEND)
    os.write(fd, b'tail')
    os.fsync(fd)
    os.close(fd)
    time.sleep(ATTR_WAIT)
    r('data.9p_append_vfs_size', lambda: os.stat(f('d2')).st_size - big)
    r('data.9p_append_vfs_tail', lambda: read_all(f('d2'))[-4:].decode())

    # truncate through virtio-fs, 9p sees the size at once
    os.truncate(f('d1'), 1000)
    r('data.vfs_truncate_9p_size', lambda: os.stat(p('d1')).st_size)

    # mmap'd write through virtio-fs + msync, read through 9p
    import mmap
    write_sync(f('m1'), b'\0' * 8192)
    fd = os.open(f('m1'), os.O_RDWR)
    try:
        m = mmap.mmap(fd, 8192)
        m[4096:4100] = b'MMAP'
        m.flush()
        m.close()
        r('data.vfs_mmap_9p_read', lambda: read_all(p('m1'))[4096:4100].decode())
    finally:
        os.close(fd)


# ------------------------------------------------------------------ locks

def lockop(fd, cmd, typ, start=0, length=0):
    fcntl.fcntl(fd, cmd, struct.pack('hhqqi', typ, 0, start, length, 0))


def getlk(fd, typ=fcntl.F_WRLCK):
    got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqi', typ, 0, 0, 0, 0))
    t, _, start, length, _ = struct.unpack('hhqqi', got)
    return '%s,start=%d,len=%d' % ({fcntl.F_WRLCK: 'wr', fcntl.F_RDLCK: 'rd', fcntl.F_UNLCK: 'un'}.get(t, t), start, length)


def holder_child(path, start, length, kind='posix'):
    """Forks a process that write-locks [start, start+length) through `path` (kind 'flock':
    flock(LOCK_EX) instead), says 'L' (or 'E<errno>') on its pipe, and keeps the lock until
    the parent sends a byte on `go`; it then holds it HOLD_S more seconds, says 'R' and
    unlocks. Returns (pid, rd, go)."""
    rd, wr = os.pipe()
    go_rd, go = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            os.close(go)
            fd = os.open(path, os.O_RDWR)
            try:
                if kind == 'flock':
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    lockop(fd, fcntl.F_SETLK, fcntl.F_WRLCK, start, length)
                os.write(wr, b'L')
            except OSError as e:
                os.write(wr, ('E' + ename(e)).encode())
                os._exit(1)
            os.read(go_rd, 1)
            time.sleep(HOLD_S)
            os.write(wr, b'R')  # releasing now
            if kind == 'flock':
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                lockop(fd, fcntl.F_SETLK, fcntl.F_UNLCK, start, length)
            os.close(fd)
        finally:
            os._exit(0)
    os.close(wr)
    os.close(go_rd)
    return pid, rd, go


HOLD_S = 1.5


def contend(name, holder_path, contender_path):
    """A process holds a write lock on the whole file through one mount; another tries through the other."""
    pid, rd, go = holder_child(holder_path, 0, 0)
    got = os.read(rd, 1)
    if got != b'L':
        emit(name + '.holder', 'could_not_lock:' + (got + os.read(rd, 64)).decode())
        os.waitpid(pid, 0)
        return
    fd = os.open(contender_path, os.O_RDWR)
    try:
        r(name + '.trylock', lambda: lockop(fd, fcntl.F_SETLK, fcntl.F_WRLCK))
        r(name + '.getlk', lambda: getlk(fd))
        r(name + '.read_lock', lambda: lockop(fd, fcntl.F_SETLK, fcntl.F_RDLCK))
        os.write(go, b'g')  # the holder lets go HOLD_S seconds from now
        t0 = time.monotonic()
        v = res(lambda: lockop(fd, fcntl.F_SETLKW, fcntl.F_WRLCK))
        waited = time.monotonic() - t0
        # The holder writes R just before it unlocks: once the lock is granted, the pipe has it.
        released = v == 'ok' and bool(select.select([rd], [], [], 0)[0]) and os.read(rd, 1) == b'R'
        emit(name + '.setlkw', '%s,%s' % ('granted_after_release' if v == 'ok' and released else v,
                                          'waited' if waited >= 1.0 else 'did_not_wait'))
        lockop(fd, fcntl.F_SETLK, fcntl.F_UNLCK)
    finally:
        os.close(fd)
        os.close(go)
        os.waitpid(pid, 0)
        os.close(rd)


def flock_contend(name, holder_path, contender_path):
    """A process holds flock(LOCK_EX) through one mount; another tries flock() through the other.
    The 9p client sends flock() as a whole-file POSIX lock, virtio-fs as a FUSE flock: the
    server must make them meet."""
    pid, rd, go = holder_child(holder_path, 0, 0, 'flock')
    got = os.read(rd, 1)
    if got != b'L':
        emit(name + '.holder', 'could_not_lock:' + (got + os.read(rd, 64)).decode())
        os.waitpid(pid, 0)
        return
    fd = os.open(contender_path, os.O_RDWR)
    try:
        r(name + '.trylock', lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
        r(name + '.shared', lambda: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB))
        os.write(go, b'g')  # the holder lets go HOLD_S seconds from now
        t0 = time.monotonic()
        v = res(lambda: fcntl.flock(fd, fcntl.LOCK_EX))
        waited = time.monotonic() - t0
        released = v == 'ok' and bool(select.select([rd], [], [], 0)[0]) and os.read(rd, 1) == b'R'
        emit(name + '.blocking', '%s,%s' % ('granted_after_release' if v == 'ok' and released else v,
                                            'waited' if waited >= 1.0 else 'did_not_wait'))
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        os.close(go)
        os.waitpid(pid, 0)
        os.close(rd)


def locks():
    write_sync(f('lk'), b'x' * 4096)
    for name, path in (('vfs', f('lk')), ('9p', p('lk'))):
        fd = os.open(path, os.O_RDWR)
        r('lock.%s_getlk_no_lock' % name, lambda: getlk(fd))
        os.close(fd)
    contend('lock.9p_holds_vfs', p('lk'), f('lk'))
    contend('lock.vfs_holds_9p', f('lk'), p('lk'))
    flock_contend('flock.9p_holds_vfs', p('lk'), f('lk'))
    flock_contend('flock.vfs_holds_9p', f('lk'), p('lk'))

    # byte ranges mean the same on both sides
    pid, rd, go = holder_child(p('lk'), 0, 100)
    if os.read(rd, 1) == b'L':
        fd = os.open(f('lk'), os.O_RDWR)
        try:
            r('lock.range_9p_0_100_vfs_100_200', lambda: lockop(fd, fcntl.F_SETLK, fcntl.F_WRLCK, 100, 100))
            r('lock.range_9p_0_100_vfs_99_1', lambda: lockop(fd, fcntl.F_SETLK, fcntl.F_WRLCK, 99, 1))
            lockop(fd, fcntl.F_SETLK, fcntl.F_UNLCK, 0, 0)
        finally:
            os.close(fd)
    else:
        emit('lock.range_9p_0_100_vfs_100_200', 'holder_failed')
    os.close(go)
    os.waitpid(pid, 0)
    os.close(rd)


# ------------------------------------------------------------------ rename / unlink with open handles

def handles():
    # open through virtio-fs, renamed through 9p
    write_sync(f('r1'), b'before')
    fd = os.open(f('r1'), os.O_RDWR)
    try:
        ino = os.fstat(fd).st_ino
        os.rename(p('r1'), p('r1-renamed'))
        r('rename.9p_renames_vfs_fd_read', lambda: os.pread(fd, 100, 0).decode())
        r('rename.9p_renames_vfs_fd_write', lambda: (os.pwrite(fd, b'after!', 0), os.fsync(fd), 'ok')[2])
        r('rename.9p_renames_vfs_new_name_reads', lambda: read_all(p('r1-renamed')).decode())
        time.sleep(ATTR_WAIT)
        r('rename.9p_renames_vfs_old_name', lambda: os.stat(f('r1')))
        r('rename.9p_renames_vfs_new_name_same_inode', lambda: os.stat(f('r1-renamed')).st_ino == ino)
    finally:
        os.close(fd)

    # open through 9p, renamed through virtio-fs (into another directory)
    os.mkdir(f('sub'))
    write_sync(p('r2'), b'before')
    fd = os.open(p('r2'), os.O_RDWR)
    try:
        os.rename(f('r2'), f('sub', 'r2-renamed'))
        r('rename.vfs_renames_9p_fd_read', lambda: os.pread(fd, 100, 0).decode())
        r('rename.vfs_renames_9p_fd_write', lambda: (os.pwrite(fd, b'after!', 0), os.fsync(fd), 'ok')[2])
        r('rename.vfs_renames_9p_new_name_reads', lambda: read_all(f('sub', 'r2-renamed')).decode())
        # (not stat(): the guest's 9p client keeps the dentry of an open file and answers from it)
        r('rename.vfs_renames_9p_listing', lambda: ','.join(sorted(n for n in os.listdir(p()) if n.startswith('r2'))) or 'none')
        r('rename.vfs_renames_9p_fstat_size', lambda: os.fstat(fd).st_size)
    finally:
        os.close(fd)

    # open through virtio-fs, replaced by a rename through 9p: the fd keeps the old file
    write_sync(f('r3'), b'old file')
    write_sync(p('r3-new'), b'new file')
    fd = os.open(f('r3'), os.O_RDONLY)
    try:
        os.rename(p('r3-new'), p('r3'))
        r('rename.9p_replaces_vfs_fd_reads_old', lambda: os.pread(fd, 100, 0).decode())
        r('rename.9p_replaces_vfs_reopen_reads_new', lambda: (time.sleep(ATTR_WAIT), read_all(f('r3')).decode())[1])
    finally:
        os.close(fd)

    # open through virtio-fs, unlinked through 9p
    write_sync(f('u1'), b'unlinked data')
    fd = os.open(f('u1'), os.O_RDWR)
    try:
        os.unlink(p('u1'))
        r('unlink.9p_unlinks_9p_name', lambda: os.stat(p('u1')))
        r('unlink.9p_unlinks_vfs_fd_read', lambda: os.pread(fd, 100, 0).decode())
        r('unlink.9p_unlinks_vfs_fd_write', lambda: (os.pwrite(fd, b'UNLINKED', 0), os.pread(fd, 100, 0).decode())[1])
        r('unlink.9p_unlinks_vfs_fd_ftruncate', lambda: (os.ftruncate(fd, 4), os.fstat(fd).st_size)[1])
        time.sleep(ATTR_WAIT)
        r('unlink.9p_unlinks_vfs_fstat_nlink', lambda: os.fstat(fd).st_nlink)
        r('unlink.9p_unlinks_vfs_name', lambda: os.stat(f('u1')))
    finally:
        os.close(fd)

    # open through 9p, unlinked through virtio-fs
    write_sync(p('u2'), b'unlinked data')
    fd = os.open(p('u2'), os.O_RDWR)
    try:
        os.unlink(f('u2'))
        r('unlink.vfs_unlinks_vfs_name', lambda: os.stat(f('u2')))
        r('unlink.vfs_unlinks_9p_listing', lambda: ','.join(n for n in os.listdir(p()) if n.startswith('u2')) or 'none')
        r('unlink.vfs_unlinks_9p_fd_read', lambda: os.pread(fd, 100, 0).decode())
        r('unlink.vfs_unlinks_9p_fd_write', lambda: (os.pwrite(fd, b'UNLINKED', 0), os.pread(fd, 100, 0).decode())[1])
        r('unlink.vfs_unlinks_9p_fstat_nlink', lambda: os.fstat(fd).st_nlink)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ inode numbers and metadata

def inodes():
    write_sync(f('i-file'), b'i')
    os.mkdir(p('i-dir'))
    os.symlink('i-file', f('i-link'))
    os.mkfifo(p('i-fifo'))
    # The guest's 9p client shows qid.path + 2 as st_ino (fs/9p: v9fs_qid2ino adds 2 to
    # keep clear of inode numbers 0 and 1); virtio-fs shows the FUSE attr.ino as it is.
    # duofs sends the same number as qid.path and attr.ino, so 9p st_ino = virtio-fs st_ino + 2.
    def agree(a, b):
        return 'qid+2' if b == a + 2 else 'vfs=%d,9p=%d' % (a, b)
    for n in ('i-file', 'i-dir', 'i-link', 'i-fifo'):
        emit('ino.%s' % n, agree(os.lstat(f(n)).st_ino, os.lstat(p(n)).st_ino))
    emit('ino.mount_root', agree(os.stat(F).st_ino, os.stat(P).st_ino))
    emit('ino.i-file.vfs', os.lstat(f('i-file')).st_ino)
    emit('ino.i-file.9p', os.lstat(p('i-file')).st_ino)
    fd = os.open(p('i-file'), os.O_RDONLY)
    r('ino.fstat_open_9p_vs_vfs', lambda: agree(os.stat(f('i-file')).st_ino, os.fstat(fd).st_ino))
    os.close(fd)
    # and after a rename through one mount
    os.rename(f('i-file'), f('i-file2'))
    r('ino.after_rename', lambda: agree(os.lstat(f('i-file2')).st_ino, os.lstat(p('i-file2')).st_ino))
    os.rename(p('i-file2'), p('i-file'))
    time.sleep(ATTR_WAIT)
    os.link(p('i-file'), p('i-hard'))
    time.sleep(ATTR_WAIT)
    r('ino.hardlink_through_9p_seen_by_vfs', lambda: '%s,nlink=%d' % (
        'same' if os.stat(f('i-hard')).st_ino == os.stat(f('i-file')).st_ino else 'different', os.stat(f('i-file')).st_nlink))
    # readdir both ways
    r('meta.readdir_vfs_lists_9p_names', lambda: ','.join(sorted(n for n in os.listdir(f()) if n.startswith('i-'))))
    r('meta.readdir_9p_lists_vfs_names', lambda: ','.join(sorted(n for n in os.listdir(p()) if n.startswith('i-'))))
    # ownership and mode through one, seen through the other
    os.chmod(p('i-file'), 0o640)
    os.chown(p('i-file'), 1234, 5678)
    time.sleep(ATTR_WAIT)
    r('meta.9p_chmod_chown_vfs_sees', lambda: '%o,%d:%d' % (os.stat(f('i-file')).st_mode & 0o7777, os.stat(f('i-file')).st_uid, os.stat(f('i-file')).st_gid))
    os.chmod(f('i-dir'), 0o1750)
    r('meta.vfs_chmod_9p_sees', lambda: '%o' % (os.stat(p('i-dir')).st_mode & 0o7777))
    os.utime(f('i-file'), ns=(1000000000 * 1000, 1000000000 * 2000))
    r('meta.vfs_utime_9p_sees', lambda: '%d,%d' % (os.stat(p('i-file')).st_atime_ns, os.stat(p('i-file')).st_mtime_ns))
    # xattrs
    os.setxattr(p('i-file'), 'user.from9p', b'nine')
    r('meta.9p_setxattr_vfs_gets', lambda: os.getxattr(f('i-file'), 'user.from9p').decode())
    os.setxattr(f('i-file'), 'user.fromvfs', b'fuse')
    r('meta.vfs_setxattr_9p_gets', lambda: os.getxattr(p('i-file'), 'user.fromvfs').decode())


def main():
    os.mkdir(os.path.join(F, W))
    r('setup.9p_sees_vfs_mkdir', lambda: os.path.isdir(os.path.join(P, W)))
    for fn in (data, locks, handles, inodes):
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            emit('%s.group_aborted' % fn.__name__, '%s:%s' % (type(e).__name__, e))
        print('INFO group %s %.1fs' % (fn.__name__, time.monotonic() - t0), flush=True)


main()
