#!/usr/bin/env python3
# POSIX conformance scenario, run inside a lab guest against one mount:
#   python3 -u conformance.py /mnt/<name> [--only PREFIX[,PREFIX...]] [--big N]
# Prints one line per check:  CHECK <name> <result>
# where <result> is short and deterministic (ok, an errno name such as EEXIST,
# or a value), so the results of two servers can be diffed line by line
# (test/lab/conformance.test.ts). Lines starting with INFO carry timings and
# are not compared. Runs as root; permission checks fork a child that drops to
# uid/gid 1000 with setresuid. Everything happens in <mount>/conformance.
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import socket
import stat
import struct
import sys
import time

ROOT = sys.argv[1]
ARGS = sys.argv[2:]
ONLY = []
BIG = 20000
for i, a in enumerate(ARGS):
    if a == '--only':
        ONLY = ARGS[i + 1].split(',')
    if a == '--big':
        BIG = int(ARGS[i + 1])

BASE = os.path.join(ROOT, 'conformance')
USER, GROUP = 1000, 1000
libc = ctypes.CDLL(None, use_errno=True)

AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
O_TMPFILE = getattr(os, 'O_TMPFILE', 0o20200000)
F_OFD_SETLK = 37


def ename(e):
    return errno.errorcode.get(e.errno, 'E%d' % e.errno) if e.errno else 'EUNKNOWN'


def clean(v):
    if isinstance(v, (tuple, list)):
        v = ','.join(str(x) for x in v)
    s = str(v)
    return s.replace(' ', '_').replace('\n', '\\n')[:120] or "''"


def emit(name, value):
    print('CHECK %s %s' % (name, clean(value)), flush=True)


def res(fn):
    """Runs fn: its value ('ok' for None), an errno name, or EXC:<type>."""
    try:
        v = fn()
        return 'ok' if v is None else v
    except OSError as e:
        return ename(e)
    except Exception as e:  # noqa: BLE001 - reported, never fatal
        return 'EXC:%s' % type(e).__name__


def r(name, fn):
    emit(name, res(fn))


def cerr():
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e))


def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), ctypes.c_uint(flags)) != 0:
        cerr()


class Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


def utimensat(path, atime, mtime, follow=True):
    ts = (Timespec * 2)(Timespec(*atime), Timespec(*mtime))
    if libc.utimensat(AT_FDCWD, path.encode(), ts, 0 if follow else 0x100) != 0:
        cerr()


def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(length)) != 0:
        cerr()


def statfs_type(path):
    buf = ctypes.create_string_buffer(120)
    if libc.statfs(path.encode(), buf) != 0:
        cerr()
    return hex(struct.unpack_from('q', buf, 0)[0])


def mode_of(p, follow=False):
    st = os.stat(p) if follow else os.lstat(p)
    return oct(stat.S_IMODE(st.st_mode))[2:]


def ftype(m):
    for t, n in ((stat.S_ISREG, 'reg'), (stat.S_ISDIR, 'dir'), (stat.S_ISLNK, 'lnk'), (stat.S_ISFIFO, 'fifo'),
                 (stat.S_ISCHR, 'chr'), (stat.S_ISBLK, 'blk'), (stat.S_ISSOCK, 'sock')):
        if t(m):
            return n
    return '?'


def owner(p, follow=False):
    st = os.stat(p) if follow else os.lstat(p)
    return '%d:%d' % (st.st_uid, st.st_gid)


def write_file(p, data=b'', mode=0o644):
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_file(p):
    with open(p, 'rb') as f:
        return f.read()


def in_child(fn, uid=None, gid=None, groups=None):
    """Runs fn in a forked child (optionally as uid/gid), returns its res() string."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            if uid is not None:
                os.setgroups(groups or [])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            v = res(fn)
        except BaseException as e:  # noqa: BLE001
            v = 'EXC:%s' % type(e).__name__
        os.write(wr, str(v).encode())
        os._exit(0)
    os.close(wr)
    chunks = []
    while True:
        b = os.read(rd, 4096)
        if not b:
            break
        chunks.append(b)
    os.close(rd)
    os.waitpid(pid, 0)
    return b''.join(chunks).decode()


def as_user(fn, groups=None):
    return in_child(fn, USER, GROUP, groups)


def ru(name, fn, groups=None):
    emit(name, as_user(fn, groups))


GROUPS = []


def group(fn):
    GROUPS.append(fn)
    return fn


def fresh(name):
    d = os.path.join(BASE, name)
    os.mkdir(d)
    os.chmod(d, 0o777)
    return d


# --------------------------------------------------------------------- open

@group
def open_flags():
    d = fresh('open')
    p = os.path.join(d, 'f')
    r('open.creat_excl_new', lambda: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)))
    r('open.creat_excl_exists', lambda: os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    os.symlink('dangling-target', os.path.join(d, 'dangling'))
    r('open.creat_excl_dangling_symlink', lambda: os.open(os.path.join(d, 'dangling'), os.O_CREAT | os.O_EXCL | os.O_WRONLY))

    def creat_through_dangling():
        os.close(os.open(os.path.join(d, 'dangling'), os.O_CREAT | os.O_WRONLY, 0o600))
        return 'created' if os.path.exists(os.path.join(d, 'dangling-target')) else 'missing'
    r('open.creat_through_dangling_symlink', creat_through_dangling)
    os.mkdir(os.path.join(d, 'dir'))
    r('open.creat_excl_on_dir', lambda: os.open(os.path.join(d, 'dir'), os.O_CREAT | os.O_EXCL | os.O_WRONLY))

    def trunc():
        write_file(p, b'hello')
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    r('open.trunc', trunc)

    def trunc_rdonly():
        write_file(p, b'hello')
        os.close(os.open(p, os.O_RDONLY | os.O_TRUNC))
        return os.stat(p).st_size
    r('open.trunc_rdonly', trunc_rdonly)

    def append():
        write_file(p, b'abc')
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b'def')
        os.pwrite(fd, b'ghi', 0)  # Linux: pwrite on O_APPEND appends
        os.close(fd)
        return read_file(p).decode()
    r('open.append', append)
    r('open.directory_on_file', lambda: os.open(p, os.O_RDONLY | os.O_DIRECTORY))
    r('open.directory_on_dir', lambda: os.close(os.open(os.path.join(d, 'dir'), os.O_RDONLY | os.O_DIRECTORY)))
    os.symlink('dir', os.path.join(d, 'ldir'))
    os.symlink('f', os.path.join(d, 'lf'))
    r('open.directory_via_symlink', lambda: os.close(os.open(os.path.join(d, 'ldir'), os.O_RDONLY | os.O_DIRECTORY)))
    r('open.nofollow_symlink', lambda: os.open(os.path.join(d, 'lf'), os.O_RDONLY | os.O_NOFOLLOW))
    r('open.nofollow_dir_symlink', lambda: os.open(os.path.join(d, 'ldir'), os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY))
    r('open.nofollow_regular', lambda: os.close(os.open(p, os.O_RDONLY | os.O_NOFOLLOW)))

    def path_nofollow():
        fd = os.open(os.path.join(d, 'lf'), os.O_PATH | os.O_NOFOLLOW)
        try:
            return ftype(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    r('open.opath_nofollow_fstat', path_nofollow)
    r('open.wronly_dir', lambda: os.open(os.path.join(d, 'dir'), os.O_WRONLY))
    r('open.creat_dir', lambda: os.open(os.path.join(d, 'dir'), os.O_CREAT | os.O_WRONLY))
    r('open.noent', lambda: os.open(os.path.join(d, 'nope'), os.O_RDONLY))
    r('open.enotdir_component', lambda: os.open(os.path.join(p, 'x'), os.O_RDONLY))

    def tmpfile():
        fd = os.open(d, O_TMPFILE | os.O_RDWR, 0o600)
        try:
            os.write(fd, b'tmp')
            return 'nlink=%d,size=%d' % (os.fstat(fd).st_nlink, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    r('open.tmpfile', tmpfile)
    r('open.name_255', lambda: os.close(os.open(os.path.join(d, 'n' * 255), os.O_CREAT | os.O_WRONLY, 0o644)))
    r('open.name_256', lambda: os.open(os.path.join(d, 'n' * 256), os.O_CREAT | os.O_WRONLY, 0o644))

    def nonutf8():
        name = b'\xff\xfe-latin1-\xe9'
        os.close(os.open(os.path.join(d.encode(), name), os.O_CREAT | os.O_WRONLY, 0o644))
        return 'listed' if name in os.listdir(d.encode()) else 'missing'
    r('open.non_utf8_name', nonutf8)

    def mode_umask():
        old = os.umask(0o027)
        try:
            os.close(os.open(os.path.join(d, 'um'), os.O_CREAT | os.O_WRONLY, 0o777))
        finally:
            os.umask(old)
        return mode_of(os.path.join(d, 'um'))
    r('open.create_mode_umask027', mode_umask)


# ----------------------------------------------------------- read / write

@group
def read_write():
    d = fresh('rw')
    p = os.path.join(d, 'f')

    def pwrite_pread():
        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.pwrite(fd, b'hello', 1000)
            head = os.pread(fd, 1000, 0)
            return 'size=%d,hole_zero=%s,data=%s' % (os.fstat(fd).st_size, head == b'\0' * 1000, os.pread(fd, 5, 1000).decode())
        finally:
            os.close(fd)
    r('rw.pwrite_pread', pwrite_pread)

    def read_eof():
        fd = os.open(p, os.O_RDONLY)
        try:
            return 'len=%d' % len(os.pread(fd, 100, 5000))
        finally:
            os.close(fd)
    r('rw.read_past_eof', read_eof)

    def big4():
        data = b''.join(hashlib.sha256(b'%d' % i).digest() for i in range(4 * 1024 * 1024 // 32))
        fd = os.open(os.path.join(d, 'big'), os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        try:
            n = os.write(fd, data)
            back = b''
            off = 0
            while off < len(data):
                chunk = os.pread(fd, 1 << 20, off)
                if not chunk:
                    break
                back += chunk
                off += len(chunk)
            return 'written=%d,same=%s' % (n, back == data)
        finally:
            os.close(fd)
    r('rw.write_4mib_one_call', big4)

    def unaligned():
        fd = os.open(os.path.join(d, 'ua'), os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        try:
            for off in (4095, 8191, 12289, 65535, 1048575):
                os.pwrite(fd, b'XY', off)
            ok = all(os.pread(fd, 2, off) == b'XY' for off in (4095, 8191, 12289, 65535, 1048575))
            return 'size=%d,ok=%s' % (os.fstat(fd).st_size, ok)
        finally:
            os.close(fd)
    r('rw.unaligned_page_crossing', unaligned)

    def vectored():
        fd = os.open(os.path.join(d, 'vec'), os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        try:
            os.writev(fd, [b'ab', b'cd', b'ef'])
            a, b = bytearray(3), bytearray(3)
            os.preadv(fd, [a, b], 0)
            return (bytes(a) + bytes(b)).decode()
        finally:
            os.close(fd)
    r('rw.writev_preadv', vectored)

    def mtime_on_write():
        os.utime(p, ns=(10**18, 10**18))
        fd = os.open(p, os.O_WRONLY)
        os.write(fd, b'x')
        os.close(fd)
        st = os.stat(p)
        return 'mtime_changed=%s,atime_kept=%s' % (st.st_mtime_ns != 10**18, st.st_atime_ns == 10**18)
    r('rw.write_updates_mtime', mtime_on_write)

    def read_only_fd_write():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.write(fd, b'x')
        finally:
            os.close(fd)
    r('rw.write_on_rdonly_fd', read_only_fd_write)

    def copy_range():
        src = os.open(os.path.join(d, 'big'), os.O_RDONLY)
        dst = os.open(os.path.join(d, 'copy'), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            n = os.copy_file_range(src, dst, 1 << 20, 4096)
            return 'copied=%d,same=%s' % (n, read_file(os.path.join(d, 'copy')) == read_file(os.path.join(d, 'big'))[4096:4096 + n])
        finally:
            os.close(src)
            os.close(dst)
    r('rw.copy_file_range', copy_range)

    def shared_mmap():
        q = os.path.join(d, 'mm')
        write_file(q, b'\0' * 8192)
        fd = os.open(q, os.O_RDWR)
        try:
            m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            m[100:105] = b'MMAPW'
            m.flush()
            m.close()
            return 'visible=%s' % (os.pread(fd, 5, 100) == b'MMAPW')
        finally:
            os.close(fd)
    r('rw.mmap_shared_write', shared_mmap)

    def private_mmap():
        q = os.path.join(d, 'mm')
        fd = os.open(q, os.O_RDWR)
        os.pwrite(fd, b'PRIVR', 200)
        try:
            m = mmap.mmap(fd, 8192, mmap.MAP_PRIVATE, mmap.PROT_READ)
            v = bytes(m[200:205])
            m.close()
            return v.decode('latin1').replace('\0', '0')
        finally:
            os.close(fd)
    r('rw.mmap_private_read', private_mmap)

    def fallocate_default():
        q = os.path.join(d, 'fa')
        fd = os.open(q, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, 1 << 20)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    r('rw.fallocate', fallocate_default)

    def fallocate_keep():
        q = os.path.join(d, 'fa')
        fd = os.open(q, os.O_RDWR)
        try:
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 << 20)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    r('rw.fallocate_keep_size', fallocate_keep)

    def punch():
        q = os.path.join(d, 'punch')
        write_file(q, b'A' * 16384)
        fd = os.open(q, os.O_RDWR)
        try:
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096)
            return 'size=%d,zeroed=%s' % (os.fstat(fd).st_size, os.pread(fd, 4096, 4096) == b'\0' * 4096)
        finally:
            os.close(fd)
    r('rw.fallocate_punch_hole', punch)


# ------------------------------------------------------------------ sparse

@group
def sparse():
    d = fresh('sparse')
    p = os.path.join(d, 'sparse')
    five = 5 << 30
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        r('sparse.pwrite_past_4gib', lambda: os.pwrite(fd, b'x', five))
        r('sparse.size', lambda: os.fstat(fd).st_size)
        r('sparse.stat_size', lambda: os.stat(p).st_size)
        r('sparse.read_back', lambda: os.pread(fd, 2, five).decode())
        r('sparse.read_hole', lambda: 'zero' if os.pread(fd, 4096, 4 << 30) == b'\0' * 4096 else 'nonzero')
        r('sparse.allocated_below_1mib', lambda: os.fstat(fd).st_blocks * 512 < (1 << 20))
        r('sparse.seek_data', lambda: os.lseek(fd, 0, os.SEEK_DATA))
        r('sparse.seek_hole', lambda: os.lseek(fd, 0, os.SEEK_HOLE))
        r('sparse.ftruncate_6gib', lambda: (os.ftruncate(fd, 6 << 30), os.fstat(fd).st_size)[1])
        r('sparse.pwrite_at_4gib_boundary', lambda: (os.pwrite(fd, b'ab', (4 << 30) - 1), os.pread(fd, 2, (4 << 30) - 1).decode())[1])
    finally:
        os.close(fd)
        os.unlink(p)


# ---------------------------------------------------------------- truncate

@group
def truncate():
    d = fresh('truncate')
    p = os.path.join(d, 'f')
    write_file(p, bytes(range(100)))
    fd = os.open(p, os.O_RDWR)
    try:
        r('truncate.shrink', lambda: (os.ftruncate(fd, 10), os.fstat(fd).st_size, os.pread(fd, 20, 0) == bytes(range(10)))[1:])
        r('truncate.grow_zero_filled', lambda: (os.ftruncate(fd, 50), os.pread(fd, 50, 0) == bytes(range(10)) + b'\0' * 40)[1])
    finally:
        os.close(fd)
    r('truncate.path', lambda: (os.truncate(p, 3), os.stat(p).st_size)[1])
    r('truncate.dir', lambda: os.truncate(d, 0))

    def rdonly():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
    r('truncate.rdonly_fd', rdonly)

    def mtime():
        os.utime(p, ns=(10**18, 10**18))
        os.truncate(p, 1)
        return os.stat(p).st_mtime_ns != 10**18
    r('truncate.updates_mtime', mtime)

    def same_size_mtime():
        os.utime(p, ns=(10**18, 10**18))
        os.truncate(p, 1)
        return os.stat(p).st_mtime_ns != 10**18
    r('truncate.same_size_updates_mtime', same_size_mtime)


# ------------------------------------------------------------------ rename

@group
def rename():
    d = fresh('rename')
    j = lambda *a: os.path.join(d, *a)  # noqa: E731

    def over_file():
        write_file(j('a'), b'A')
        write_file(j('b'), b'B')
        os.rename(j('a'), j('b'))
        return '%s,%s' % (read_file(j('b')).decode(), os.path.exists(j('a')))
    r('rename.file_over_file', over_file)
    os.mkdir(j('empty'))
    r('rename.file_over_empty_dir', lambda: os.rename(j('b'), j('empty')))
    os.mkdir(j('dir1'))
    r('rename.dir_over_file', lambda: os.rename(j('dir1'), j('b')))

    def dir_over_empty():
        os.rename(j('dir1'), j('empty'))
        return '%s,%s' % (os.path.isdir(j('empty')), os.path.exists(j('dir1')))
    r('rename.dir_over_empty_dir', dir_over_empty)
    os.makedirs(j('full', 'sub'))
    os.mkdir(j('dir2'))
    r('rename.dir_over_nonempty_dir', lambda: os.rename(j('dir2'), j('full')))
    r('rename.dir_into_own_subdir', lambda: os.rename(j('full'), j('full', 'sub', 'x')))
    r('rename.noent', lambda: os.rename(j('nope'), j('nope2')))

    def same_inode():
        write_file(j('h1'), b'H')
        os.link(j('h1'), j('h2'))
        os.rename(j('h1'), j('h2'))
        return '%s,%s' % (os.path.exists(j('h1')), os.path.exists(j('h2')))
    r('rename.hardlinks_same_inode', same_inode)

    def noreplace_exists():
        write_file(j('n1'), b'1')
        write_file(j('n2'), b'2')
        renameat2(j('n1'), j('n2'), RENAME_NOREPLACE)
    r('rename.noreplace_target_exists', noreplace_exists)

    def noreplace_absent():
        renameat2(j('n1'), j('n3'), RENAME_NOREPLACE)
        return read_file(j('n3')).decode()
    r('rename.noreplace_target_absent', noreplace_absent)

    def exchange():
        write_file(j('x1'), b'1')
        os.mkdir(j('x2'))
        renameat2(j('x1'), j('x2'), RENAME_EXCHANGE)
        return 'x1=%s,x2=%s' % (ftype(os.lstat(j('x1')).st_mode), ftype(os.lstat(j('x2')).st_mode))
    r('rename.exchange', exchange)

    def open_fd():
        write_file(j('o1'), b'old')
        fd = os.open(j('o1'), os.O_RDWR)
        try:
            os.rename(j('o1'), j('o2'))
            os.pwrite(fd, b'NEW', 0)
            return read_file(j('o2')).decode()
        finally:
            os.close(fd)
    r('rename.open_fd_follows', open_fd)

    def cross_dir_nlink():
        os.makedirs(j('pa', 'child'))
        os.mkdir(j('pb'))
        os.rename(j('pa', 'child'), j('pb', 'child'))
        return 'pa=%d,pb=%d' % (os.stat(j('pa')).st_nlink, os.stat(j('pb')).st_nlink)
    r('rename.dir_cross_parent_nlink', cross_dir_nlink)

    def replaced_open():
        write_file(j('r1'), b'first')
        write_file(j('r2'), b'second')
        fd = os.open(j('r1'), os.O_RDONLY)
        try:
            os.rename(j('r2'), j('r1'))
            return '%s,%s' % (os.pread(fd, 10, 0).decode(), read_file(j('r1')).decode())
        finally:
            os.close(fd)
    r('rename.over_open_file', replaced_open)

    def ctime():
        write_file(j('ct'), b'c')
        os.utime(j('ct'), ns=(10**18, 10**18))
        before = os.stat(j('ct')).st_ctime_ns
        time.sleep(0.02)
        os.rename(j('ct'), j('ct2'))
        st = os.stat(j('ct2'))
        return 'mtime_kept=%s,ctime_changed=%s' % (st.st_mtime_ns == 10**18, st.st_ctime_ns != before)
    r('rename.times', ctime)


# ------------------------------------------------------------------- links

@group
def links():
    d = fresh('link')
    a, b = os.path.join(d, 'a'), os.path.join(d, 'b')
    write_file(a, b'shared')
    r('link.create', lambda: os.link(a, b))
    r('link.nlink_both', lambda: '%d,%d' % (os.stat(a).st_nlink, os.stat(b).st_nlink))
    r('link.same_ino', lambda: os.stat(a).st_ino == os.stat(b).st_ino)

    def shared_content():
        with open(b, 'r+b') as f:
            f.write(b'SHARED')
        return read_file(a).decode()
    r('link.shared_content', shared_content)
    r('link.nlink_after_unlink', lambda: (os.unlink(a), os.stat(b).st_nlink)[1])
    r('link.dir', lambda: os.link(d, os.path.join(d, 'dirlink')))
    write_file(a, b'')
    r('link.target_exists', lambda: os.link(a, b))
    r('link.source_missing', lambda: os.link(os.path.join(d, 'none'), os.path.join(d, 'c')))
    os.symlink('a', os.path.join(d, 'sl'))

    def link_symlink():
        os.link(os.path.join(d, 'sl'), os.path.join(d, 'sl2'), follow_symlinks=False)
        return ftype(os.lstat(os.path.join(d, 'sl2')).st_mode)
    r('link.of_symlink_nofollow', link_symlink)

    def ctime():
        os.utime(a, ns=(10**18, 10**18))
        before = os.stat(a).st_ctime_ns
        time.sleep(0.02)
        os.link(a, os.path.join(d, 'a3'))
        return os.stat(a).st_ctime_ns != before
    r('link.updates_ctime', ctime)


# ---------------------------------------------------------------- symlinks

@group
def symlinks():
    d = fresh('symlink')
    j = lambda *a: os.path.join(d, *a)  # noqa: E731
    write_file(j('target'), b'T' * 7)
    r('symlink.create', lambda: os.symlink('target', j('l')))
    r('symlink.readlink', lambda: os.readlink(j('l')))
    r('symlink.lstat', lambda: '%s,size=%d' % (ftype(os.lstat(j('l')).st_mode), os.lstat(j('l')).st_size))
    r('symlink.stat_follows', lambda: '%s,size=%d' % (ftype(os.stat(j('l')).st_mode), os.stat(j('l')).st_size))
    r('symlink.mode', lambda: mode_of(j('l')))
    os.symlink('no/such/thing', j('dangling'))
    r('symlink.dangling_stat', lambda: os.stat(j('dangling')))
    r('symlink.dangling_readlink', lambda: os.readlink(j('dangling')))
    r('symlink.readlink_on_file', lambda: os.readlink(j('target')))
    r('symlink.exists', lambda: os.symlink('x', j('l')))
    long_target = '/'.join(['d' * 200] * 20)[:4000]
    r('symlink.long_target_4000', lambda: (os.symlink(long_target, j('long')), os.readlink(j('long')) == long_target)[1])
    r('symlink.too_long_target_4096', lambda: os.symlink('x' * 4096, j('toolong')))
    os.symlink('loop2', j('loop1'))
    os.symlink('loop1', j('loop2'))
    r('symlink.loop', lambda: os.stat(j('loop1')))
    r('symlink.absolute_target', lambda: (os.symlink('/etc/hostname', j('abs')), os.readlink(j('abs')))[1])
    r('symlink.unlink_keeps_target', lambda: (os.unlink(j('l')), os.path.exists(j('target')))[1])
    ru('symlink.owner_nonroot', lambda: (os.symlink('target', j('ul')), owner(j('ul')))[1])
    r('symlink.trailing_slash_to_dir', lambda: (os.mkdir(j('sd')), os.symlink('sd', j('lsd')), os.path.isdir(j('lsd') + '/'))[2])


# ------------------------------------------------------------- directories

@group
def directories():
    d = fresh('dir')
    j = lambda *a: os.path.join(d, *a)  # noqa: E731

    def mkdir_modes():
        old = os.umask(0)
        try:
            os.mkdir(j('m777'), 0o777)
            os.mkdir(j('m1750'), 0o1750)
        finally:
            os.umask(old)
        os.mkdir(j('m755'), 0o777)
        return 'umask0=%s,sticky=%s,umask022=%s' % (mode_of(j('m777')), mode_of(j('m1750')), mode_of(j('m755')))
    r('dir.mkdir_modes', mkdir_modes)
    r('dir.mkdir_exists', lambda: os.mkdir(j('m777')))
    r('dir.mkdir_over_file', lambda: (write_file(j('file')), os.mkdir(j('file')))[1])
    os.makedirs(j('ne', 'x'))
    r('dir.rmdir_nonempty', lambda: os.rmdir(j('ne')))
    r('dir.rmdir_file', lambda: os.rmdir(j('file')))
    r('dir.unlink_dir', lambda: os.unlink(j('ne')))
    r('dir.rmdir_dot', lambda: os.rmdir(j('ne', '.')))
    r('dir.rmdir_noent', lambda: os.rmdir(j('nope')))

    def nlink():
        os.mkdir(j('nl'))
        a = os.stat(j('nl')).st_nlink
        for i in range(3):
            os.mkdir(j('nl', 's%d' % i))
        write_file(j('nl', 'f'))
        return '%d,%d' % (a, os.stat(j('nl')).st_nlink)
    r('dir.nlink_counts_subdirs', nlink)

    def types():
        t = j('types')
        os.mkdir(t)
        write_file(os.path.join(t, 'f'))
        os.mkdir(os.path.join(t, 'd'))
        os.symlink('f', os.path.join(t, 'l'))
        os.mkfifo(os.path.join(t, 'p'))
        out = []
        for e in sorted(os.scandir(t), key=lambda e: e.name):
            k = 'lnk' if e.is_symlink() else 'dir' if e.is_dir(follow_symlinks=False) else 'reg' if e.is_file(follow_symlinks=False) else 'other'
            out.append('%s=%s' % (e.name, k))
        return ','.join(out)
    r('dir.readdir_types', types)

    def dots():
        fd = os.open(j('types'), os.O_RDONLY | os.O_DIRECTORY)
        try:
            names = set()
            buf = ctypes.create_string_buffer(65536)
            while True:
                n = libc.syscall(217, fd, buf, 65536)  # getdents64
                if n < 0:
                    cerr()
                if n == 0:
                    break
                off = 0
                while off < n:
                    reclen = struct.unpack_from('H', buf, off + 16)[0]
                    name = buf.raw[off + 19:off + reclen].split(b'\0', 1)[0]
                    names.add(name.decode())
                    off += reclen
            return ','.join(sorted(names))
        finally:
            os.close(fd)
    r('dir.getdents_includes_dots', dots)

    def seekdir():
        t = j('seek')
        os.mkdir(t)
        for i in range(300):
            write_file(os.path.join(t, 'e%03d' % i))
        libc.opendir.restype = ctypes.c_void_p
        libc.readdir.restype = ctypes.c_void_p
        libc.readdir.argtypes = [ctypes.c_void_p]
        libc.telldir.restype = ctypes.c_long
        libc.telldir.argtypes = [ctypes.c_void_p]
        libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
        libc.closedir.argtypes = [ctypes.c_void_p]
        dp = libc.opendir(t.encode())
        if not dp:
            cerr()

        def nxt():
            ent = libc.readdir(dp)
            return ctypes.string_at(ent + 19).decode() if ent else None
        try:
            for _ in range(120):
                nxt()
            pos = libc.telldir(dp)
            first = [nxt() for _ in range(50)]
            for _ in range(60):
                nxt()
            libc.seekdir(dp, pos)
            again = [nxt() for _ in range(50)]
            return 'same=%s' % (first == again and None not in first)
        finally:
            libc.closedir(dp)
    r('dir.telldir_seekdir', seekdir)

    def unlink_during_readdir():
        t = j('churn')
        os.mkdir(t)
        for i in range(200):
            write_file(os.path.join(t, 'c%03d' % i))
        seen = set()
        with os.scandir(t) as it:
            for k, e in enumerate(it):
                seen.add(e.name)
                if k == 10:
                    for i in range(100, 200):
                        os.unlink(os.path.join(t, 'c%03d' % i))
        left = set(os.listdir(t))
        return 'first100_seen=%s,left=%d' % (all('c%03d' % i in seen for i in range(100)), len(left))
    r('dir.unlink_while_reading', unlink_during_readdir)

    def big():
        # Entries are made and removed relative to the directory's fd (as
        # tar/rm do); mknod is the cheapest create over both protocols.
        t = j('big')
        os.mkdir(t)
        names = ['e%05d-%s' % (i, 'x' * (i % 37)) for i in range(BIG)]
        bfd = os.open(t, os.O_RDONLY | os.O_DIRECTORY)
        try:
            t0 = time.monotonic()
            for n in names:
                os.mknod(n, stat.S_IFREG | 0o644, dir_fd=bfd)
            t1 = time.monotonic()
            listed = os.listdir(t)
            t2 = time.monotonic()
            emit('dir.big_count', len(listed))
            emit('dir.big_no_duplicates', len(listed) == len(set(listed)))
            emit('dir.big_same_names', set(listed) == set(names))
            emit('dir.big_stat_one', ftype(os.stat(os.path.join(t, names[BIG // 2])).st_mode))
            for n in names:
                os.unlink(n, dir_fd=bfd)
            t3 = time.monotonic()
            emit('dir.big_empty_after_unlink', len(os.listdir(t)))
        finally:
            os.close(bfd)
        os.rmdir(t)
        print('INFO dir.big n=%d create=%.1fs readdir=%.1fs unlink=%.1fs' % (BIG, t1 - t0, t2 - t1, t3 - t2), flush=True)
    r('dir.big', big)


# ---------------------------------------------------------- modes, owners

@group
def modes():
    d = fresh('chmod')
    p = os.path.join(d, 'f')
    write_file(p, b'#!/bin/sh\n', 0o644)

    def seq():
        out = []
        for m in (0o644, 0o4755, 0o2755, 0o1755, 0o7777, 0o0, 0o6711):
            os.chmod(p, m)
            out.append(mode_of(p))
        return ','.join(out)
    r('chmod.file_modes', seq)
    r('chmod.dir_sticky', lambda: (os.mkdir(os.path.join(d, 'sticky')), os.chmod(os.path.join(d, 'sticky'), 0o1777), mode_of(os.path.join(d, 'sticky')))[2])

    def ctime():
        os.chmod(p, 0o644)
        before = os.stat(p).st_ctime_ns
        time.sleep(0.02)
        os.chmod(p, 0o600)
        return os.stat(p).st_ctime_ns != before
    r('chmod.updates_ctime', ctime)

    def setgid_dir():
        sg = os.path.join(d, 'sgid')
        os.mkdir(sg)
        os.chown(sg, 0, 1234)
        os.chmod(sg, 0o2777)
        write_file(os.path.join(sg, 'f'))
        os.mkdir(os.path.join(sg, 'sub'))
        return 'file=%s,sub=%s,sub_mode=%s' % (owner(os.path.join(sg, 'f')), owner(os.path.join(sg, 'sub')), mode_of(os.path.join(sg, 'sub')))
    r('chmod.setgid_dir_inherits_group', setgid_dir)
    ru('chmod.setgid_dir_inherits_group_nonroot',
       lambda: (write_file(os.path.join(d, 'sgid', 'u')), owner(os.path.join(d, 'sgid', 'u')))[1])
    os.chmod(p, 0o644)
    ru('chmod.by_non_owner', lambda: os.chmod(p, 0o777))
    up = os.path.join(d, 'userfile')
    write_file(up, b'x', 0o644)
    os.chown(up, USER, GROUP)
    ru('chmod.by_owner', lambda: (os.chmod(up, 0o640), mode_of(up))[1])
    os.chown(up, USER, 1234)
    ru('chmod.setgid_non_member_cleared', lambda: (os.chmod(up, 0o2755), mode_of(up))[1])

    def suid_write_user():
        os.chown(up, USER, GROUP)
        os.chmod(up, 0o6755)
        return as_user(lambda: (write_file(up, b'y', 0o644), mode_of(up))[1])
    r('chmod.suid_cleared_on_write_by_owner', suid_write_user)

    def suid_write_root():
        os.chmod(up, 0o6755)
        fd = os.open(up, os.O_WRONLY)
        os.write(fd, b'z')
        os.close(fd)
        return mode_of(up)
    r('chmod.suid_kept_on_write_by_root', suid_write_root)

    def suid_truncate_user():
        os.chmod(up, 0o4755)
        return as_user(lambda: (os.truncate(up, 0), mode_of(up))[1])
    r('chmod.suid_cleared_on_truncate_by_owner', suid_truncate_user)

    # chown
    q = os.path.join(d, 'own')
    write_file(q, b'o', 0o644)
    r('chown.root_to_user', lambda: (os.chown(q, USER, GROUP), owner(q))[1])
    r('chown.keep_uid_minus1', lambda: (os.chown(q, -1, 2000), owner(q))[1])
    r('chown.clears_suid_sgid', lambda: (os.chmod(q, 0o6755), os.chown(q, 0, 0), mode_of(q))[2])
    r('chown.keeps_sgid_without_group_exec', lambda: (os.chmod(q, 0o2744), os.chown(q, 0, 0), mode_of(q))[2])
    ru('chown.nonroot_give_away', lambda: os.chown(up, 2000, -1))
    ru('chown.nonroot_to_member_group', lambda: (os.chown(up, -1, 2000), owner(up))[1], groups=[2000])
    ru('chown.nonroot_to_other_group', lambda: os.chown(up, -1, 3000), groups=[2000])

    def lchown():
        os.symlink('own', os.path.join(d, 'ol'))
        os.lchown(os.path.join(d, 'ol'), 3000, 3000)
        return 'link=%s,target=%s' % (owner(os.path.join(d, 'ol')), owner(q))
    r('chown.lchown_symlink', lchown)
    r('chown.dir', lambda: (os.mkdir(os.path.join(d, 'od')), os.chown(os.path.join(d, 'od'), 4000, 4000), owner(os.path.join(d, 'od')))[2])
    ru('chown.created_by_user', lambda: (os.mkdir(os.path.join(d, 'ud')), write_file(os.path.join(d, 'ud', 'f')),
                                         owner(os.path.join(d, 'ud')) + '/' + owner(os.path.join(d, 'ud', 'f')))[2])


# ------------------------------------------------------------------- times

@group
def times():
    d = fresh('utimes')
    p = os.path.join(d, 'f')
    write_file(p, b't')

    def ns():
        os.utime(p, ns=(1234567890123456789, 1123456789987654321))
        st = os.stat(p)
        return '%d,%d' % (st.st_atime_ns, st.st_mtime_ns)
    r('utimes.nanoseconds', ns)

    def omit():
        os.utime(p, ns=(10**18, 10**18))
        utimensat(p, (0, UTIME_OMIT), (2 * 10**9, 5))
        st = os.stat(p)
        return '%d,%d' % (st.st_atime_ns, st.st_mtime_ns)
    r('utimes.omit_atime', omit)

    def now():
        os.utime(p, ns=(10**18, 10**18))
        utimensat(p, (0, UTIME_NOW), (0, UTIME_NOW))
        st = os.stat(p)
        return 'recent=%s' % (abs(st.st_mtime - time.time()) < 120 and abs(st.st_atime - time.time()) < 120)
    r('utimes.now', now)
    r('utimes.pre_epoch', lambda: (os.utime(p, ns=(-10**18, -1)), os.stat(p).st_mtime_ns)[1])
    r('utimes.far_future', lambda: (os.utime(p, ns=(2**34 * 10**9, 2**34 * 10**9 + 7)), os.stat(p).st_mtime_ns)[1])

    def symlink_nofollow():
        os.symlink('f', os.path.join(d, 'l'))
        os.utime(p, ns=(10**18, 10**18))
        os.utime(os.path.join(d, 'l'), ns=(5 * 10**17, 5 * 10**17 + 1), follow_symlinks=False)
        return 'link=%d,target=%d' % (os.lstat(os.path.join(d, 'l')).st_mtime_ns, os.stat(p).st_mtime_ns)
    r('utimes.symlink_nofollow', symlink_nofollow)
    os.chmod(p, 0o666)
    ru('utimes.nonowner_explicit', lambda: os.utime(p, ns=(1, 1)))
    ru('utimes.nonowner_now_writable', lambda: utimensat(p, (0, UTIME_NOW), (0, UTIME_NOW)))
    os.chmod(p, 0o644)
    ru('utimes.nonowner_now_readonly', lambda: utimensat(p, (0, UTIME_NOW), (0, UTIME_NOW)))

    def dir_times():
        sd = os.path.join(d, 'sd')
        os.mkdir(sd)
        os.utime(sd, ns=(10**18, 10**18))
        write_file(os.path.join(sd, 'x'))
        return os.stat(sd).st_mtime_ns != 10**18
    r('utimes.dir_mtime_on_create', dir_times)


# ------------------------------------------------------------------ xattrs

@group
def xattrs():
    d = fresh('xattr')
    p = os.path.join(d, 'f')
    write_file(p, b'x')
    r('xattr.set_get', lambda: (os.setxattr(p, 'user.test', b'value'), os.getxattr(p, 'user.test').decode())[1])
    r('xattr.list', lambda: (os.setxattr(p, 'user.second', b'2'), ','.join(sorted(n for n in os.listxattr(p) if n.startswith('user.'))))[1])
    r('xattr.create_exists', lambda: os.setxattr(p, 'user.test', b'v2', os.XATTR_CREATE))
    r('xattr.create_new', lambda: (os.setxattr(p, 'user.new', b'n', os.XATTR_CREATE), os.getxattr(p, 'user.new').decode())[1])
    r('xattr.replace_missing', lambda: os.setxattr(p, 'user.missing', b'v', os.XATTR_REPLACE))
    r('xattr.replace_exists', lambda: (os.setxattr(p, 'user.test', b'replaced', os.XATTR_REPLACE), os.getxattr(p, 'user.test').decode())[1])
    r('xattr.get_missing', lambda: os.getxattr(p, 'user.missing'))
    r('xattr.remove', lambda: (os.removexattr(p, 'user.second'), ','.join(sorted(n for n in os.listxattr(p) if n.startswith('user.'))))[1])
    r('xattr.remove_missing', lambda: os.removexattr(p, 'user.second'))
    r('xattr.empty_value', lambda: (os.setxattr(p, 'user.empty', b''), len(os.getxattr(p, 'user.empty')))[1])
    r('xattr.binary_value', lambda: (os.setxattr(p, 'user.bin', b'\0\1\2\xff\0'), os.getxattr(p, 'user.bin') == b'\0\1\2\xff\0')[1])
    r('xattr.value_2000', lambda: (os.setxattr(p, 'user.big', b'v' * 2000), len(os.getxattr(p, 'user.big')))[1])
    r('xattr.value_65536', lambda: os.setxattr(p, 'user.huge', b'h' * 65536))
    r('xattr.name_256', lambda: os.setxattr(p, 'user.' + 'n' * 251, b'x'))
    r('xattr.on_dir', lambda: (os.setxattr(d, 'user.d', b'dir'), os.getxattr(d, 'user.d').decode())[1])
    os.symlink('f', os.path.join(d, 'l'))
    r('xattr.user_on_symlink', lambda: os.setxattr(os.path.join(d, 'l'), 'user.l', b'x', follow_symlinks=False))
    r('xattr.follow_symlink', lambda: os.getxattr(os.path.join(d, 'l'), 'user.test').decode())
    r('xattr.unknown_namespace', lambda: os.setxattr(p, 'bogus.x', b'x'))
    r('xattr.trusted_as_root', lambda: (os.setxattr(p, 'trusted.t', b'x'), os.getxattr(p, 'trusted.t').decode())[1])
    ru('xattr.user_read_other_file', lambda: os.getxattr(p, 'user.test').decode())
    ru('xattr.user_set_other_file', lambda: os.setxattr(p, 'user.u', b'x'))
    ru('xattr.trusted_as_user', lambda: os.getxattr(p, 'trusted.t'))

    def posix_acl():
        # a minimal ACL: user::rw- group::r-- other::r-- plus user:1000:rwx mask::rwx
        ent = lambda tag, perm, id_=0xFFFFFFFF: struct.pack('<HHI', tag, perm, id_)  # noqa: E731
        acl = struct.pack('<I', 2) + ent(1, 6) + ent(2, 7, 1000) + ent(4, 4) + ent(0x10, 7) + ent(0x20, 4)
        os.setxattr(p, 'system.posix_acl_access', acl)
        back = os.getxattr(p, 'system.posix_acl_access')
        return 'same=%s,mode=%s' % (back == acl, mode_of(p))
    r('xattr.posix_acl_access', posix_acl)
    ru('xattr.posix_acl_grants_user', lambda: (open(p, 'ab').close(), 'writable')[1])


# ------------------------------------------------------------------- locks

def child_try(fn, hold_secs=0):
    """Forks a child that runs fn while the parent keeps its locks; returns the child's result."""
    return in_child(fn)


@group
def locks():
    d = fresh('locks')
    p = os.path.join(d, 'f')
    write_file(p, b'\0' * 1000)
    fd = os.open(p, os.O_RDWR)
    try:
        r('lock.posix_set', lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0))

        def child_conflict():
            cfd = os.open(p, os.O_RDWR)
            fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
        r('lock.posix_conflict_other_process', lambda: child_try(child_conflict))

        def child_getlk():
            cfd = os.open(p, os.O_RDWR)
            req = struct.pack('hhqqi', fcntl.F_WRLCK, 0, 50, 10, 0)
            got = fcntl.fcntl(cfd, fcntl.F_GETLK, req)
            typ, _, start, length, pid = struct.unpack('hhqqi', got)
            return 'type=%s,start=%d,len=%d,pid_is_parent=%s' % (
                {fcntl.F_WRLCK: 'wr', fcntl.F_RDLCK: 'rd', fcntl.F_UNLCK: 'un'}[typ], start, length, pid == os.getppid())
        r('lock.posix_getlk_other_process', lambda: child_try(child_getlk))

        def child_nonoverlap():
            cfd = os.open(p, os.O_RDWR)
            fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 200)
        r('lock.posix_nonoverlapping', lambda: child_try(child_nonoverlap))

        def child_shared_vs_ex():
            cfd = os.open(p, os.O_RDONLY)
            fcntl.lockf(cfd, fcntl.LOCK_SH | fcntl.LOCK_NB, 10, 0)
        r('lock.posix_shared_vs_exclusive', lambda: child_try(child_shared_vs_ex))

        def wait():
            rd, wr = os.pipe()
            pid = os.fork()
            if pid == 0:
                cfd = os.open(p, os.O_RDWR)
                os.write(wr, b'1')
                t0 = time.monotonic()
                fcntl.lockf(cfd, fcntl.LOCK_EX, 10, 0)
                os.write(wr, b'W' if time.monotonic() - t0 > 0.3 else b'F')
                os._exit(0)
            os.read(rd, 1)
            time.sleep(0.6)
            fcntl.lockf(fd, fcntl.LOCK_UN, 100, 0)
            v = os.read(rd, 1)
            os.waitpid(pid, 0)
            return 'waited' if v == b'W' else 'did_not_wait'
        r('lock.posix_setlkw_waits', wait)

        def release_on_close():
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
            other = os.open(p, os.O_RDONLY)
            os.close(other)  # POSIX: closing any fd of the file drops the process's locks

            def child():
                cfd = os.open(p, os.O_RDWR)
                fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
            return child_try(child)
        r('lock.posix_released_by_any_close', release_on_close)
    finally:
        os.close(fd)

    fd = os.open(p, os.O_RDWR)
    try:
        r('lock.flock_ex', lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))

        def flock_child():
            cfd = os.open(p, os.O_RDONLY)
            fcntl.flock(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r('lock.flock_conflict_other_process', lambda: child_try(flock_child))

        def flock_same_process_other_fd():
            cfd = os.open(p, os.O_RDONLY)
            try:
                fcntl.flock(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(cfd)
        r('lock.flock_conflict_other_fd', flock_same_process_other_fd)
        r('lock.flock_shared', lambda: (fcntl.flock(fd, fcntl.LOCK_SH), child_try(lambda: fcntl.flock(os.open(p, os.O_RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB)))[1])
        r('lock.flock_unlock', lambda: (fcntl.flock(fd, fcntl.LOCK_UN), child_try(lambda: fcntl.flock(os.open(p, os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)))[1])
    finally:
        os.close(fd)

    def ofd():
        a = os.open(p, os.O_RDWR)
        b = os.open(p, os.O_RDWR)
        try:
            fcntl.fcntl(a, F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 10, 0))
            fcntl.fcntl(b, F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 10, 0))
        finally:
            os.close(a)
            os.close(b)
    r('lock.ofd_conflict_same_process', ofd)


# -------------------------------------------------- sync, statfs, special files

@group
def sync_statfs_special():
    d = fresh('misc')
    p = os.path.join(d, 'f')
    write_file(p, b'sync')
    fd = os.open(p, os.O_RDWR)
    try:
        r('sync.fsync', lambda: os.fsync(fd))
        r('sync.fdatasync', lambda: os.fdatasync(fd))
    finally:
        os.close(fd)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        r('sync.fsync_dir', lambda: os.fsync(dfd))
        r('sync.syncfs', lambda: libc.syncfs(dfd) == 0 or cerr())
    finally:
        os.close(dfd)
    rofd = os.open(p, os.O_RDONLY)
    try:
        r('sync.fsync_rdonly_fd', lambda: os.fsync(rofd))
    finally:
        os.close(rofd)

    st = os.statvfs(ROOT)
    r('statfs.namemax', lambda: st.f_namemax)
    r('statfs.sane', lambda: 'bsize>0=%s,blocks>0=%s,bfree<=blocks=%s,bavail<=bfree=%s,files>0=%s' % (
        st.f_bsize > 0, st.f_blocks > 0, st.f_bfree <= st.f_blocks, st.f_bavail <= st.f_bfree, st.f_files > 0))
    r('statfs.type', lambda: statfs_type(ROOT))
    r('statfs.frsize_eq_bsize', lambda: st.f_frsize == st.f_bsize)
    r('stat.blksize', lambda: os.stat(p).st_blksize)
    r('stat.dev_same_in_tree', lambda: os.stat(p).st_dev == os.stat(d).st_dev == os.stat(ROOT).st_dev)
    r('stat.ino_stable', lambda: os.stat(p).st_ino == os.stat(p).st_ino == os.lstat(p).st_ino)

    r('mknod.fifo', lambda: (os.mkfifo(os.path.join(d, 'fifo'), 0o644), ftype(os.lstat(os.path.join(d, 'fifo')).st_mode), mode_of(os.path.join(d, 'fifo')))[1:])

    def fifo_io():
        q = os.path.join(d, 'fifo')
        rfd = os.open(q, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(q, os.O_WRONLY)
        try:
            os.write(wfd, b'ping')
            return os.read(rfd, 10).decode()
        finally:
            os.close(rfd)
            os.close(wfd)
    r('mknod.fifo_io', fifo_io)

    def dev(kind, major, minor, name):
        q = os.path.join(d, name)
        os.mknod(q, kind | 0o600, os.makedev(major, minor))
        st = os.lstat(q)
        return '%s,%d:%d' % (ftype(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev))
    r('mknod.char', lambda: dev(stat.S_IFCHR, 1, 3, 'null'))
    r('mknod.block', lambda: dev(stat.S_IFBLK, 7, 200, 'blk'))
    r('mknod.char_opens_guest_device', lambda: (os.write(os.open(os.path.join(d, 'null'), os.O_WRONLY), b'discard'), 'ok')[1])
    r('mknod.socket', lambda: (os.mknod(os.path.join(d, 'sock'), stat.S_IFSOCK | 0o600), ftype(os.lstat(os.path.join(d, 'sock')).st_mode))[1])
    r('mknod.regular', lambda: (os.mknod(os.path.join(d, 'reg'), stat.S_IFREG | 0o600), ftype(os.lstat(os.path.join(d, 'reg')).st_mode))[1])
    ru('mknod.char_as_user', lambda: os.mknod(os.path.join(d, 'unull'), stat.S_IFCHR | 0o600, os.makedev(1, 3)))
    ru('mknod.fifo_as_user', lambda: (os.mkfifo(os.path.join(d, 'ufifo')), owner(os.path.join(d, 'ufifo')))[1])

    def unix_socket():
        q = os.path.join(d, 'usock')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(q)
            s.listen(1)
            c.connect(q)
            a, _ = s.accept()
            c.send(b'hi')
            v = a.recv(2).decode()
            a.close()
            return '%s,%s' % (ftype(os.lstat(q).st_mode), v)
        finally:
            s.close()
            c.close()
    r('mknod.unix_socket_bind_connect', unix_socket)


# ----------------------------------------------------- unlinked while open

@group
def unlinked():
    d = fresh('unlinked')
    p = os.path.join(d, 'f')
    write_file(p, b'abc', 0o644)
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        r('unlinked.gone_from_dir', lambda: os.path.exists(p))
        r('unlinked.fstat', lambda: 'nlink=%d,size=%d' % (os.fstat(fd).st_nlink, os.fstat(fd).st_size))
        r('unlinked.read', lambda: os.pread(fd, 10, 0).decode())
        r('unlinked.write', lambda: (os.pwrite(fd, b'def', 3), os.pread(fd, 10, 0).decode())[1])
        r('unlinked.ftruncate', lambda: (os.ftruncate(fd, 2), os.fstat(fd).st_size)[1])
        r('unlinked.fchmod', lambda: (os.fchmod(fd, 0o600), oct(stat.S_IMODE(os.fstat(fd).st_mode))[2:])[1])
        r('unlinked.fchown', lambda: (os.fchown(fd, 1000, 1000), '%d:%d' % (os.fstat(fd).st_uid, os.fstat(fd).st_gid))[1])
        r('unlinked.futimens', lambda: (os.utime(fd, ns=(10**18, 10**18 + 5)), os.fstat(fd).st_mtime_ns)[1])
        r('unlinked.fsetxattr', lambda: (os.setxattr(fd, 'user.u', b'v'), os.getxattr(fd, 'user.u').decode())[1])
        r('unlinked.fsync', lambda: os.fsync(fd))
        r('unlinked.fallocate', lambda: (os.posix_fallocate(fd, 0, 8192), os.fstat(fd).st_size)[1])
    finally:
        os.close(fd)

    def rmdir_open():
        q = os.path.join(d, 'dir')
        os.mkdir(q)
        dfd = os.open(q, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rmdir(q)
            st = os.fstat(dfd)
            return 'nlink=%d,list=%s' % (st.st_nlink, os.listdir(dfd))
        finally:
            os.close(dfd)
    r('unlinked.rmdir_open_dir', rmdir_open)

    def create_in_removed():
        q = os.path.join(d, 'dir2')
        os.mkdir(q)
        dfd = os.open(q, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rmdir(q)
            os.open('x', os.O_CREAT | os.O_WRONLY, dir_fd=dfd)
        finally:
            os.close(dfd)
    r('unlinked.create_in_removed_dir', create_in_removed)

    def last_link_closed():
        q = os.path.join(d, 'g')
        write_file(q, b'g' * 100000)
        before = os.statvfs(ROOT).f_bfree
        fd2 = os.open(q, os.O_RDONLY)
        os.unlink(q)
        os.close(fd2)
        return 'ok' if os.statvfs(ROOT).f_bfree >= before - 8 else 'space_not_freed'
    r('unlinked.closed_last_reference', last_link_closed)


# -------------------------------------------------------------- permissions

@group
def permissions():
    d = fresh('perm')
    j = lambda *a: os.path.join(d, *a)  # noqa: E731
    write_file(j('root600'), b'secret', 0o600)
    write_file(j('root644'), b'public', 0o644)
    os.mkdir(j('root755'), 0o755)
    os.chmod(j('root755'), 0o755)
    os.mkdir(j('root700'), 0o700)
    write_file(j('root700', 'inside'), b'x')
    os.mkdir(j('open777'))
    os.chmod(j('open777'), 0o777)
    os.mkdir(j('sticky'))
    os.chmod(j('sticky'), 0o1777)
    write_file(j('sticky', 'rootfile'), b'r', 0o666)

    ru('perm.read_root_0600', lambda: read_file(j('root600')))
    ru('perm.read_root_0644', lambda: read_file(j('root644')).decode())
    ru('perm.write_root_0644', lambda: os.open(j('root644'), os.O_WRONLY))
    ru('perm.truncate_root_0644', lambda: os.truncate(j('root644'), 0))
    ru('perm.create_in_root_0755_dir', lambda: write_file(j('root755', 'new')))
    ru('perm.mkdir_in_root_0755_dir', lambda: os.mkdir(j('root755', 'newd')))
    write_file(j('root755', 'victim'), b'v', 0o666)
    ru('perm.unlink_in_root_0755_dir', lambda: os.unlink(j('root755', 'victim')))
    ru('perm.search_root_0700_dir', lambda: os.stat(j('root700', 'inside')))
    ru('perm.list_root_0700_dir', lambda: os.listdir(j('root700')))
    ru('perm.create_in_0777_dir', lambda: (write_file(j('open777', 'mine'), b'm', 0o640), owner(j('open777', 'mine')), mode_of(j('open777', 'mine')))[1:])
    ru('perm.unlink_in_sticky_others', lambda: os.unlink(j('sticky', 'rootfile')))
    ru('perm.rename_in_sticky_others', lambda: os.rename(j('sticky', 'rootfile'), j('sticky', 'moved')))
    ru('perm.unlink_in_sticky_own', lambda: (write_file(j('sticky', 'userfile')), os.unlink(j('sticky', 'userfile')))[1])
    ru('perm.write_via_sticky_others_0666', lambda: (write_file(j('sticky', 'rootfile'), b'w'), 'written')[1])

    write_file(j('own0444'), b'ro', 0o444)
    os.chown(j('own0444'), USER, GROUP)
    ru('perm.owner_write_0444', lambda: os.open(j('own0444'), os.O_WRONLY))
    ru('perm.access_w_ok_0444', lambda: os.access(j('own0444'), os.W_OK))
    r('perm.root_write_0444', lambda: (write_file(j('own0444'), b'root'), 'written')[1])
    r('perm.root_read_0000', lambda: (write_file(j('zero'), b'z', 0o000), os.chmod(j('zero'), 0), read_file(j('zero')).decode())[2])
    r('perm.root_exec_0644', lambda: os.access(j('root644'), os.X_OK))

    write_file(j('group0640'), b'g', 0o640)
    os.chown(j('group0640'), 0, 2000)
    os.chmod(j('group0640'), 0o640)
    ru('perm.read_via_supplementary_group', lambda: read_file(j('group0640')).decode(), groups=[2000])
    ru('perm.read_without_group', lambda: read_file(j('group0640')).decode())
    write_file(j('group0660'), b'g', 0o660)
    os.chown(j('group0660'), 0, 2000)
    os.chmod(j('group0660'), 0o660)
    ru('perm.write_via_supplementary_group', lambda: (write_file(j('group0660'), b'G'), 'written')[1], groups=[2000])
    os.mkdir(j('gdir'))
    os.chown(j('gdir'), 0, 2000)
    os.chmod(j('gdir'), 0o770)
    ru('perm.create_via_supplementary_group_dir', lambda: (write_file(j('gdir', 'f')), owner(j('gdir', 'f')))[1], groups=[2000])
    ru('perm.setuid_file_owner_is_user', lambda: (write_file(j('open777', 'suid')), os.chmod(j('open777', 'suid'), 0o4755), mode_of(j('open777', 'suid')))[2])
    ru('perm.link_to_others_file', lambda: os.link(j('root600'), j('open777', 'hl')))


def main():
    os.umask(0o022)
    if os.path.lexists(BASE):
        print('INFO removing stale %s' % BASE, flush=True)
        import shutil
        shutil.rmtree(BASE)
    os.mkdir(BASE)
    os.chmod(BASE, 0o777)
    t_all = time.monotonic()
    for fn in GROUPS:
        if ONLY and not any(fn.__name__.startswith(o) for o in ONLY):
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a broken group is reported, the rest still runs
            emit('%s.group_aborted' % fn.__name__, res(lambda: (_ for _ in ()).throw(e)))
        print('INFO group %s %.1fs' % (fn.__name__, time.monotonic() - t0), flush=True)
    print('INFO total %.1fs' % (time.monotonic() - t_all), flush=True)


main()
