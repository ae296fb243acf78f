#!/usr/bin/env python3
# Builds the security-model corpus (test/lab/security-models.test.ts,
# test/lab/unprivileged.test.ts) in MOUNT/SUB for each SUB given: files owned
# by several users; modes with setuid, setgid and sticky; char and block
# devices (also major/minor above 255); fifos; a socket node; symlinks
# (relative, absolute, dangling, long, owned); hard links (to files, a fifo,
# a device, a symlink; metadata changed through the second name); user
# xattrs (binary, empty, 4000 bytes); POSIX ACLs with setfacl (access and
# default, and entries inherited from a default ACL); nested directories;
# names with a space and UTF-8; creation under a umask (and under a default
# ACL, which replaces the umask).
#
# Usage: corpus-build.py MOUNT SUB [SUB...]
# (SUB=empty: only make the directory SUB, like the full build's first step)
# Runs as guest root with umask 0 (unless a step sets one), so every mode
# below is the mode the guest asks for. Every step prints `CHECK <sub>.<step> ok` or `CHECK <sub>.<step>
# ERR <errno name> <message>` and the build goes on after a failure, so one
# server bug does not hide the rest (the test asserts there is no ERR).
# Also sets the owner and mode of the mount root (idempotent).
import errno
import os
import stat
import subprocess
import sys

mount = sys.argv[1]
subs = sys.argv[2:]
os.umask(0)
failures = 0


def step(name, fn):
    global failures
    try:
        fn()
        print(f'CHECK {name} ok')
    except OSError as e:
        failures += 1
        print(f'CHECK {name} ERR {errno.errorcode.get(e.errno, e.errno)} {e}')
    except subprocess.CalledProcessError as e:
        failures += 1
        out = (e.output or b'').decode(errors='replace').strip().replace('\n', ' / ')
        print(f'CHECK {name} ERR exit{e.returncode} {out}')


def create(path, mode, data=b''):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def as_user(uid, gid, fn):
    """Runs fn in a child with the given ids (as a non-root guest process would)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(0o022)
            fn()
        except OSError as e:
            print(f'as uid {uid}: {e}', flush=True)
            code = 100 + (e.errno or 0) % 100
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code - 100 if code >= 100 else errno.EIO, f'child as uid {uid} failed')


def with_umask(mask, fn):
    old = os.umask(mask)
    try:
        fn()
    finally:
        os.umask(old)


def run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def build(sub):
    empty = sub.endswith('=empty')
    sub = sub.removesuffix('=empty')
    b = os.path.join(mount, sub)
    p = lambda *n: os.path.join(b, *n)
    s = lambda n, fn: step(f'{sub}.{n}', fn)

    s('mkdir', lambda: os.mkdir(b, 0o755))
    if empty:
        return

    # Owners and modes. chown before chmod: chown clears setuid/setgid.
    s('plain', lambda: create(p('plain'), 0o644, b'plain\n'))
    s('empty', lambda: create(p('empty'), 0o644))
    s('zero_mode', lambda: create(p('zero_mode'), 0o000, b'nobody may read\n'))
    s('owned_1000', lambda: (create(p('owned_1000'), 0o640, b'a' * 1000), os.chown(p('owned_1000'), 1000, 1000)))
    s('owned_1001_100', lambda: (create(p('owned_1001_100'), 0o604, b'b'), os.chown(p('owned_1001_100'), 1001, 100)))
    s('owned_nobody', lambda: (create(p('owned_nobody'), 0o600), os.chown(p('owned_nobody'), 65534, 65534)))
    s('setuid', lambda: (create(p('setuid'), 0o755, b'#!/bin/sh\necho hi\n'), os.chown(p('setuid'), 1000, 1000), os.chmod(p('setuid'), 0o4755)))
    s('setgid', lambda: (create(p('setgid'), 0o755, b'x'), os.chown(p('setgid'), 0, 1000), os.chmod(p('setgid'), 0o2711)))
    s('setuid_setgid', lambda: (create(p('setuid_setgid'), 0o700), os.chown(p('setuid_setgid'), 1001, 1001), os.chmod(p('setuid_setgid'), 0o6750)))
    s('sticky_file', lambda: (create(p('sticky_file'), 0o644), os.chmod(p('sticky_file'), 0o1644)))
    s('all_bits', lambda: (create(p('all_bits'), 0o600), os.chmod(p('all_bits'), 0o7777)))
    s('name_space', lambda: create(p('name with space'), 0o644, b's'))
    s('name_utf8', lambda: create(p('café'), 0o644, b'u'))

    # The umask: applied to what the guest asks for, unless a default ACL replaces it.
    s('umask_file', lambda: with_umask(0o027, lambda: create(p('umask_file'), 0o666, b'm')))
    s('umask_dir', lambda: with_umask(0o027, lambda: os.mkdir(p('umask_dir'), 0o777)))
    s('umask_fifo', lambda: with_umask(0o027, lambda: os.mkfifo(p('umask_fifo'), 0o666)))

    # Directories: sticky, setgid (what the guest creates inside inherits the
    # group and, for directories, the setgid bit), owned, read-only, locked, deep.
    s('dir_sticky', lambda: os.mkdir(p('dir_sticky'), 0o1777))
    s('dir_sticky.by_1000', lambda: as_user(1000, 1000, lambda: create(p('dir_sticky', 'by_1000'), 0o600, b'mine\n')))
    s('dir_sticky.dir_by_1001', lambda: as_user(1001, 100, lambda: os.mkdir(p('dir_sticky', 'dir_by_1001'), 0o750)))
    s('dir_setgid', lambda: (os.mkdir(p('dir_setgid'), 0o755), os.chown(p('dir_setgid'), 0, 1000), os.chmod(p('dir_setgid'), 0o2775)))
    s('dir_setgid.file', lambda: create(p('dir_setgid', 'file'), 0o640, b'g'))
    s('dir_setgid.sub', lambda: os.mkdir(p('dir_setgid', 'sub'), 0o750))
    s('dir_owned', lambda: (os.mkdir(p('dir_owned'), 0o750), os.chown(p('dir_owned'), 1000, 1000)))
    s('dir_owned.file_by_1000', lambda: as_user(1000, 1000, lambda: create(p('dir_owned', 'file_by_1000'), 0o644, b'x')))
    s('nested', lambda: os.makedirs(p('nested', 'a', 'b', 'c', 'd', 'e'), 0o755))
    s('nested.deep', lambda: (create(p('nested', 'a', 'b', 'c', 'd', 'e', 'deep'), 0o644, b'deep\n'), os.chown(p('nested', 'a', 'b', 'c', 'd', 'e', 'deep'), 1000, 1000)))
    s('nested.mode', lambda: os.chmod(p('nested', 'a', 'b'), 0o711))
    s('dir_ro', lambda: (os.mkdir(p('dir_ro'), 0o755), create(p('dir_ro', 'inside'), 0o444, b'r'), os.chmod(p('dir_ro'), 0o555)))
    s('dir_locked', lambda: (os.mkdir(p('dir_locked'), 0o755), create(p('dir_locked', 'hidden'), 0o600, b'h'), os.chmod(p('dir_locked'), 0o000)))

    # Device nodes, fifos, a socket node.
    s('chr_null', lambda: os.mknod(p('chr_null'), stat.S_IFCHR | 0o666, os.makedev(1, 3)))
    s('chr_tty', lambda: (os.mknod(p('chr_tty'), stat.S_IFCHR | 0o620, os.makedev(4, 64)), os.chown(p('chr_tty'), 0, 5)))
    s('chr_big', lambda: os.mknod(p('chr_big'), stat.S_IFCHR | 0o600, os.makedev(300, 70000)))
    s('blk_sda1', lambda: (os.mknod(p('blk_sda1'), stat.S_IFBLK | 0o660, os.makedev(8, 1)), os.chown(p('blk_sda1'), 0, 6)))
    s('blk_big', lambda: os.mknod(p('blk_big'), stat.S_IFBLK | 0o640, os.makedev(259, 1048575)))
    s('fifo', lambda: (os.mkfifo(p('fifo'), 0o644), os.chown(p('fifo'), 1000, 1000)))
    s('fifo_0666', lambda: os.mkfifo(p('fifo_0666'), 0o666))
    s('socket_node', lambda: os.mknod(p('socket_node'), stat.S_IFSOCK | 0o755))
    s('chr_setuid', lambda: (os.mknod(p('chr_setuid'), stat.S_IFCHR | 0o644, os.makedev(10, 200)), os.chmod(p('chr_setuid'), 0o4755)))

    # Symlinks.
    s('link_rel', lambda: os.symlink('plain', p('link_rel')))
    s('link_abs', lambda: os.symlink('/etc/passwd', p('link_abs')))
    s('link_dangling', lambda: os.symlink('does/not/exist', p('link_dangling')))
    s('link_dir', lambda: os.symlink('nested/a', p('link_dir')))
    s('link_long', lambda: os.symlink('/'.join(['segment%02d' % i for i in range(40)]), p('link_long')))
    s('link_space', lambda: os.symlink('name with space', p('link to space')))
    s('link_owned', lambda: (os.symlink('owned_1000', p('link_owned')), os.lchown(p('link_owned'), 1000, 1001)))
    s('link_up', lambda: os.symlink('../../../plain', p('nested', 'a', 'b', 'link_up')))
    s('link_by_1000', lambda: as_user(1000, 1000, lambda: os.symlink('by_1000', p('dir_sticky', 'link_by_1000'))))

    # Hard links; then metadata changed through the other names.
    s('hard_a', lambda: (create(p('hard_a'), 0o644, b'hard\n'), os.chown(p('hard_a'), 1000, 1000)))
    s('hard_b', lambda: os.link(p('hard_a'), p('hard_b')))
    s('hard_c', lambda: os.link(p('hard_a'), p('nested', 'a', 'hard_c')))
    s('hard_b.chmod', lambda: os.chmod(p('hard_b'), 0o664))
    s('hard_c.chown', lambda: os.chown(p('nested', 'a', 'hard_c'), 1001, 1001))
    s('hard_fifo', lambda: os.link(p('fifo'), p('hard_fifo')))
    s('hard_chr', lambda: os.link(p('chr_tty'), p('hard_chr')))
    s('hard_symlink', lambda: os.link(p('link_rel'), p('hard_symlink'), follow_symlinks=False))
    s('hard_dropped', lambda: (create(p('hard_gone'), 0o600, b'g'), os.link(p('hard_gone'), p('hard_kept')), os.unlink(p('hard_gone'))))

    # User xattrs.
    s('xattr_file', lambda: create(p('xattr_file'), 0o644, b'x'))
    s('xattr_file.text', lambda: os.setxattr(p('xattr_file'), 'user.comment', b'hello world'))
    s('xattr_file.binary', lambda: os.setxattr(p('xattr_file'), 'user.binary', b'\x00\x01\xfe\xff\x00'))
    s('xattr_file.big', lambda: os.setxattr(p('xattr_file'), 'user.big', bytes(range(256)) * 15 + b'end'))
    s('xattr_file.utf8', lambda: os.setxattr(p('xattr_file'), 'user.café', 'naïve'.encode()))
    s('xattr_file.removed', lambda: (os.setxattr(p('xattr_file'), 'user.gone', b'1'), os.removexattr(p('xattr_file'), 'user.gone')))
    s('xattr_dir', lambda: (os.mkdir(p('xattr_dir'), 0o755), os.setxattr(p('xattr_dir'), 'user.dirattr', b'd')))
    s('xattr_owned', lambda: os.setxattr(p('owned_1000'), 'user.owner', b'1000'))
    s('xattr_hard', lambda: os.setxattr(p('hard_b'), 'user.via', b'hard_b'))

    # POSIX ACLs through setfacl.
    s('acl_file', lambda: (create(p('acl_file'), 0o640, b'acl'), run('setfacl', '-m', 'u:1000:rw,u:1001:r,g:100:rw,m::rw', p('acl_file'))))
    s('acl_file.xattr', lambda: os.setxattr(p('acl_file'), 'user.also', b'1'))
    s('acl_dir', lambda: (os.mkdir(p('acl_dir'), 0o750), run('setfacl', '-m', 'u:1000:rwx', '-m', 'd:u::rwx,d:g::r-x,d:o::r-x,d:u:1001:rwx,d:m::rwx', p('acl_dir'))))
    s('acl_dir.inherit_file', lambda: create(p('acl_dir', 'inherit_file'), 0o644, b'i'))
    s('acl_dir.inherit_dir', lambda: os.mkdir(p('acl_dir', 'inherit_dir'), 0o755))
    s('acl_dir.umask_ignored', lambda: with_umask(0o077, lambda: create(p('acl_dir', 'umask_ignored'), 0o666, b'u')))
    s('acl_default_only', lambda: (os.mkdir(p('acl_default_only'), 0o755), run('setfacl', '-d', '-m', 'u:1000:r-x', p('acl_default_only'))))
    s('acl_removed', lambda: (create(p('acl_removed'), 0o644), run('setfacl', '-m', 'u:1000:rwx', p('acl_removed')), run('setfacl', '-b', p('acl_removed'))))
    s('acl_setuid', lambda: (create(p('acl_setuid'), 0o755), os.chmod(p('acl_setuid'), 0o4750), run('setfacl', '-m', 'g:1000:rx', p('acl_setuid'))))


def root_meta():
    os.chown(mount, 0, 10)
    os.chmod(mount, 0o751)


step('root.meta', root_meta)
for sub in subs:
    build(sub)
os.sync()
print(f'INFO corpus built in {mount}: {" ".join(subs)}; {failures} failed steps')
