#!/usr/bin/env python3
# "CI on a share" (issue 16; test/lab/share-ci.test.ts): what a CI job does
# on a shared folder, with git and a C toolchain no one here wrote:
#   python3 -u share-ci.py MOUNT FILES SOURCE_TARBALL|- [configure]
# On MOUNT/ci (bound at /tmp/ci, so that every server builds at the same path and
# the binaries can be compared byte for byte):
#   gen     FILES generated files (deterministic: names, sizes, contents, modes)
#   commit  git init; three commits (add all, change 1 in 10, rename/delete
#           some) with fixed dates, so the commit ids are the same everywhere
#   gc      git gc --aggressive
#   fsck    git fsck --strict
#   clone   git clone of that repository, its status and its own fsck
#   build   the C project of SOURCE_TARBALL (GNU hello): tar x, make -j2, run
#           the binary; a second make must rebuild nothing. The tarball lab
#           setup configured for /tmp/ci (hello-configured.tar.gz) is built
#           as it is; with `configure` (an upstream tarball), ./configure runs
#           here first (~400 s under TCG: emulated fork+exec, not the share)
# Prints `CHECK <name> <result>` (the same on every server) and
# `TIME <step> <seconds>` (guest wall time of each step). Every command's
# failure is a CHECK with its status and the tail of its output.
import hashlib
import os
import shutil
import subprocess
import sys
import time

MNT = sys.argv[1]
FILES = int(sys.argv[2])
TARBALL = sys.argv[3]
CONFIGURE = sys.argv[4:5] == ['configure']
CI = '/tmp/ci'
HOME = '/tmp/share-ci-home'

ENV = {
    'PATH': '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
    'HOME': HOME,
    'LANG': 'C',
    'LC_ALL': 'C',
    'TZ': 'UTC',
    'GIT_CONFIG_NOSYSTEM': '1',
    'GIT_AUTHOR_NAME': 'Lab CI',
    'GIT_AUTHOR_EMAIL': 'ci@lab.invalid',
    'GIT_COMMITTER_NAME': 'Lab CI',
    'GIT_COMMITTER_EMAIL': 'ci@lab.invalid',
}


def emit(name, value):
    print('CHECK %s %s' % (name, str(value).strip().replace(' ', '_').replace('\n', '\\n')[:200]), flush=True)


def timed(step, t0):
    print('TIME %s %.2f' % (step, time.monotonic() - t0), flush=True)


class Failed(Exception):
    pass


def sh(args, cwd, env=None, check=True, name=None):
    """Runs a command; returns its stdout (str). A failure prints the output tail and raises Failed."""
    e = dict(ENV)
    if env:
        e.update(env)
    p = subprocess.run(args, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.decode('utf-8', 'replace')
    err = p.stderr.decode('utf-8', 'replace')
    if p.returncode != 0 and check:
        label = name or ' '.join(args[:3])
        print('FAIL %s (in %s): exit %d' % (' '.join(args), cwd, p.returncode), flush=True)
        for line in (out + err).strip().split('\n')[-30:]:
            print('  | ' + line, flush=True)
        emit('fail.' + label.replace(' ', '_'), 'rc=%d' % p.returncode)
        raise Failed(label)
    if err.strip():
        # anything a tool complains about is shown (e.g. git's warnings)
        for line in err.strip().split('\n')[-10:]:
            print('  stderr(%s): %s' % (' '.join(args[:2]), line), flush=True)
    return out


# ---------------------------------------------------------------- the tree

WORDS = ('alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau '
         'upsilon phi chi psi omega static int void return struct const char unsigned long if else for while').split()


def content(i, rev=0):
    """Deterministic text: lines of words picked by a hash chain; 1 in 10 files changes in rev 1."""
    h = hashlib.sha256(b'file-%d' % i).digest()
    size = 200 + int.from_bytes(h[:2], 'big') % 6000
    lines = []
    n = 0
    k = 0
    while n < size:
        d = hashlib.sha256(h + k.to_bytes(4, 'big')).digest()
        line = '%05d %s' % (k, ' '.join(WORDS[b % len(WORDS)] for b in d[: 4 + d[0] % 8]))
        if rev and k % 7 == i % 7:
            line += ' /* revised %d */' % rev
        lines.append(line)
        n += len(line) + 1
        k += 1
    return ('\n'.join(lines) + '\n').encode()


def path_of(i):
    return 'src/m%02d/s%02d/f%05d.%s' % (i % 37, (i // 37) % 11, i, ('c', 'h', 'txt', 'sh')[i % 4])


def generate(repo):
    for i in range(FILES):
        p = os.path.join(repo, path_of(i))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'wb') as f:
            f.write(content(i))
        os.chmod(p, 0o755 if i % 4 == 3 else 0o644)
    # a few symlinks and an empty file, as real trees have
    os.symlink('m00/s00/f00000.c', os.path.join(repo, 'src/first.c'))
    os.symlink('../src', os.path.join(repo, 'src/m01/up'))
    open(os.path.join(repo, 'EMPTY'), 'wb').close()


def commit(repo, n, msg):
    date = '%d +0000' % (1_700_000_000 + n * 3600)
    sh(['git', 'add', '-A'], repo)
    sh(['git', 'commit', '-q', '-m', msg], repo, env={'GIT_AUTHOR_DATE': date, 'GIT_COMMITTER_DATE': date})
    return sh(['git', 'rev-parse', 'HEAD'], repo).strip()


def main():
    os.makedirs(HOME, exist_ok=True)
    base = os.path.join(MNT, 'ci')
    if os.path.exists(base):
        shutil.rmtree(base)
    os.mkdir(base)
    os.makedirs(CI, exist_ok=True)
    subprocess.run(['mount', '--bind', base, CI], check=True)
    try:
        run_all()
    except Failed as e:
        print('scenario stopped at: %s' % e, flush=True)
        return 1
    finally:
        subprocess.run(['umount', CI])
    return 0


def run_all():
    repo = os.path.join(CI, 'repo')
    os.mkdir(repo)
    os.umask(0o022)

    t = time.monotonic()
    sh(['git', 'init', '-q', '-b', 'main', '.'], repo)
    generate(repo)
    timed('gen', t)

    t = time.monotonic()
    emit('git.commit1', commit(repo, 1, 'add %d files' % FILES))
    for i in range(0, FILES, 10):
        with open(os.path.join(repo, path_of(i)), 'wb') as f:
            f.write(content(i, 1))
    emit('git.commit2', commit(repo, 2, 'revise one file in ten'))
    for i in range(5, FILES, 50):
        os.rename(os.path.join(repo, path_of(i)), os.path.join(repo, path_of(i) + '.moved'))
    for i in range(7, FILES, 50):
        os.unlink(os.path.join(repo, path_of(i)))
    emit('git.commit3', commit(repo, 3, 'rename and delete some'))
    emit('git.tree', sh(['git', 'rev-parse', 'HEAD^{tree}'], repo))
    emit('git.status', sh(['git', 'status', '--porcelain'], repo) or 'clean')
    timed('commit', t)

    t = time.monotonic()
    # one thread: the pack (and so its name) then depends on the objects alone
    sh(['git', '-c', 'pack.threads=1', 'gc', '--aggressive', '--quiet'], repo)
    timed('gc', t)
    counts = dict(l.split(': ', 1) for l in sh(['git', 'count-objects', '-v'], repo).strip().split('\n'))
    emit('gc.loose_objects', counts.get('count'))
    emit('gc.packs', counts.get('packs'))
    emit('gc.in_pack', counts.get('in-pack'))
    packs = sorted(f for f in os.listdir(os.path.join(repo, '.git/objects/pack')) if f.endswith('.pack'))
    emit('gc.pack_name', ','.join(packs))

    t = time.monotonic()
    out = sh(['git', 'fsck', '--strict', '--no-progress', '--no-dangling'], repo)
    emit('fsck.repo', out or 'clean')
    timed('fsck', t)

    t = time.monotonic()
    sh(['git', 'clone', '-q', repo, os.path.join(CI, 'clone')], CI)
    timed('clone', t)
    clone = os.path.join(CI, 'clone')
    emit('clone.head', sh(['git', 'rev-parse', 'HEAD'], clone))
    emit('clone.tree', sh(['git', 'rev-parse', 'HEAD^{tree}'], clone))
    emit('clone.status', sh(['git', 'status', '--porcelain'], clone) or 'clean')
    emit('clone.index', hashlib.sha256(sh(['git', 'ls-files', '-s'], clone).encode()).hexdigest())
    emit('clone.fsck', sh(['git', 'fsck', '--strict', '--no-progress', '--no-dangling'], clone) or 'clean')
    # what was checked out is what was generated (content and the executable bit)
    bad = 0
    for i in range(0, FILES, 97):
        p = os.path.join(clone, path_of(i))
        if not os.path.exists(p):
            continue
        with open(p, 'rb') as f:
            want = content(i, 1 if i % 10 == 0 else 0)
            if f.read() != want or bool(os.stat(p).st_mode & 0o100) != (i % 4 == 3):
                bad += 1
    emit('clone.sampled_files_differ', bad)
    emit('clone.symlink', os.readlink(os.path.join(clone, 'src/first.c')))

    if TARBALL == '-':
        return
    t = time.monotonic()
    sh(['tar', 'xf', TARBALL], CI)
    src = [d for d in os.listdir(CI) if d not in ('repo', 'clone')]
    emit('build.source', ','.join(sorted(src)))
    src = os.path.join(CI, src[0])
    timed('untar', t)
    if CONFIGURE:
        t = time.monotonic()
        sh(['./configure', '--quiet', '--disable-nls'], src)
        timed('configure', t)
    else:
        emit('build.configured_for', open(os.path.join(src, 'config.status')).read().count(src) > 0)
    t = time.monotonic()
    sh(['make', '-j2', '-s'], src)
    timed('make', t)
    emit('build.hello', sh(['./hello'], src))
    emit('build.hello_traditional', sh(['./hello', '-t'], src))
    emit('build.hello_version', sh(['./hello', '--version'], src).split('\n')[0])
    with open(os.path.join(src, 'hello'), 'rb') as f:
        emit('build.hello_sha256', hashlib.sha256(f.read()).hexdigest())
    # make again: timestamps on the share must say everything is up to date
    before = os.stat(os.path.join(src, 'hello')).st_mtime_ns
    again = sh(['make', '-j2'], src)
    rebuilt = [l for l in again.split('\n') if 'gcc' in l or ' CC ' in l or 'CCLD' in l]
    emit('build.second_make_compiles', len(rebuilt))
    emit('build.second_make_kept_binary', os.stat(os.path.join(src, 'hello')).st_mtime_ns == before)


if __name__ == '__main__':
    sys.exit(main())
