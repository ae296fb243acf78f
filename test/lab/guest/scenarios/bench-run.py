#!/usr/bin/env python3
# `duofs bench` inside a lab guest (src/bench/guest.ts writes the plan).
#
#   python3 bench-run.py OUT            run the plan OUT/plan.json; OUT is a
#                                       virtiofsd mount of a host folder, so the
#                                       host reads the results as they appear
#   python3 bench-run.py meta DIR N DROP RESULT   the metadata job on DIR (DROP: what to
#                                       write to drop_caches, 0 = nothing), JSON into RESULT
#
# For each repetition, each job, each server (the order of servers rotates so
# that nobody always runs first): drop the guest's caches, run the job with a
# time limit, write OUT/cells/<id>.json (and fio's own JSON output next to it,
# untouched: the host parses it), print a progress line on the console. A
# server whose mount stops answering, or that the host marks dead
# (OUT/dead/<server>), gets its remaining cells marked failed; the others go
# on. Only the standard library; runs as root (PID 1's child).
import json
import os
import shutil
import signal
import subprocess
import sys
import time


def now():
    return time.monotonic()


def say(*a):
    print(*a, flush=True)


def run(argv, timeout, abort=None, **kw):
    """Runs argv; returns (rc, seconds, stderr tail). rc 124 on timeout, 125 when
    abort() said to stop (the host saw the server die); the process is killed."""
    t0 = now()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, **kw)
    rc = None
    err = b''
    while rc is None:
        left = timeout - (now() - t0)
        try:
            _, err = p.communicate(timeout=max(0.1, min(2.0, left)))
            rc = p.returncode
        except subprocess.TimeoutExpired:
            why = 124 if now() - t0 >= timeout else 125 if (abort is not None and abort()) else None
            if why is None:
                continue
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                _, err = p.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                err = b'(process stuck after SIGKILL: the mount does not answer)'
            rc = why
    return rc, now() - t0, (err or b'').decode('utf-8', 'replace')[-1500:]


def give_up_on(path):
    """What can be done from inside the guest about a dead server: nothing to
    its mount. umount -f waits for the server (and holds the superblock lock
    while doing so, which then blocks drop_caches); umount -l tears a 9p
    superblock down at once and blocks the same way in its final clunk; a
    virtiofs connection cannot be aborted (fusectl does not list virtiofs).
    So the mount stays, only the page cache is dropped from now on (evicting
    the dead mount's dentries would wait on it), nothing calls sync, and at
    the end the guest powers off directly instead of through init's sync."""
    DROP['what'] = '1'


DROP = {'what': '3'}


def drop_caches():
    # No sync first: writes are direct or write-through (buffered write jobs
    # end with fsync), and a sync would hang on a dead server's mount. Once a
    # server has died, only the page cache is dropped: evicting the dead
    # mount's dentries and inodes would wait on it (9p clunks, FUSE forgets).
    run(['sh', '-c', 'echo %s > /proc/sys/vm/drop_caches' % DROP['what']], 60)


def alive(path):
    rc, _, _ = run(['stat', '-f', path], 15)
    return rc == 0


def mounted(path):
    with open('/proc/mounts') as f:
        return any(line.split()[1] == path for line in f if len(line.split()) > 1)


# ------------------------------------------------------------------ metadata job

def meta(d, n, drop):
    """create, stat, readdir, unlink of n empty files in a fresh directory d."""
    os.makedirs(d, exist_ok=True)
    names = ['f%06d' % i for i in range(n)]
    res = {}
    t0 = now()
    for nm in names:
        os.close(os.open(os.path.join(d, nm), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    res['create'] = {'ops': n, 'secs': now() - t0}
    if drop:
        drop_caches()
    t0 = now()
    for nm in names:
        os.stat(os.path.join(d, nm))
    res['stat'] = {'ops': n, 'secs': now() - t0}
    if drop:
        drop_caches()
    # readdir: full listings (names and types, as `ls` without -l does) until
    # at least a second has passed and three listings are done
    t0 = now()
    entries = 0
    listings = 0
    while listings < 3 or now() - t0 < 1.0:
        with os.scandir(d) as it:
            for e in it:
                e.is_dir(follow_symlinks=False)
                entries += 1
        listings += 1
    res['readdir'] = {'ops': entries, 'secs': now() - t0, 'listings': listings}
    if entries != listings * n:
        raise SystemExit('readdir saw %d entries in %d listings of %d files' % (entries, listings, n))
    if drop:
        drop_caches()
    t0 = now()
    for nm in names:
        os.unlink(os.path.join(d, nm))
    res['unlink'] = {'ops': n, 'secs': now() - t0}
    os.rmdir(d)
    return res


# ------------------------------------------------------------------ the plan

def main(out):
    with open(os.path.join(out, 'plan.json')) as f:
        plan = json.load(f)
    cells_dir = os.path.join(out, 'cells')
    os.makedirs(cells_dir, exist_ok=True)
    servers = plan['servers']
    jobs = plan['jobs']
    reps = plan['repeat']
    size_mib = plan['sizeMiB']
    drop = plan['dropCaches']
    timeout = plan['cellTimeoutSec']
    dead = {}
    notes = {}
    direct_ok = {}

    def failure(what, rc, tmo, err, name):
        if rc == 124:
            return '%s timed out after %d s' % (what, tmo)
        if rc == 125:
            return 'stopped: %s' % (host_dead(name) or 'the server died')
        return '%s exited with %d: %s' % (what, rc, err.strip()[-400:])

    def write_cell(cell):
        tmp = os.path.join(cells_dir, cell['id'] + '.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(cell, f)
        os.rename(tmp, os.path.join(cells_dir, cell['id'] + '.json'))

    buried = set()

    def bury(s, why):
        dead[s['name']] = why
        if s['name'] not in buried and mounted(s['mount']):
            buried.add(s['name'])
            say('BENCH-DEAD %s %s' % (s['name'], why[:200]))
            give_up_on(s['mount'])

    def host_dead(s):
        p = os.path.join(out, 'dead', s)
        if os.path.exists(p):
            with open(p) as f:
                return f.read().strip() or 'the host saw the server exit'
        return None

    # The tarball for the untar job, into guest memory (not timed).
    if any(j['kind'] == 'untar' for j in jobs):
        shutil.copyfile(os.path.join(out, plan['untarFile']), '/tmp/bench-src.tar')

    # Per server: a working folder on the mount, O_DIRECT probe, the data file.
    for s in servers:
        name = s['name']
        mnt = s['mount']
        wd = os.path.join(mnt, s['workdir'])
        if not mounted(mnt):
            dead[name] = 'not mounted (see the mount error)'
            continue
        say('BENCH-PREPARE %s' % name)
        try:
            os.makedirs(wd, exist_ok=True)
        except OSError as e:
            dead[name] = 'cannot create %s: %s' % (wd, e)
            continue
        want_direct = plan['direct']
        ok = False
        if want_direct:
            probe = os.path.join(wd, 'direct-probe')
            rc1, _, e1 = run(['dd', 'if=/dev/zero', 'of=' + probe, 'bs=4096', 'count=1', 'oflag=direct'], 60)
            rc2, _, e2 = run(['dd', 'if=' + probe, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct'], 60)
            ok = rc1 == 0 and rc2 == 0
            if not ok:
                notes[name] = 'buffered: O_DIRECT refused by this mount (%s)' % (e1 or e2).strip().splitlines()[-1:]
            try:
                os.unlink(probe)
            except OSError:
                pass
        direct_ok[name] = ok
        if any(j['kind'] == 'fio' for j in jobs) and plan.get('hostLaidOut'):
            # slow storage: the host wrote the file under the slow mount (4 KiB 9p writes would take minutes)
            if os.path.getsize(os.path.join(wd, 'data')) != size_mib << 20:
                dead[name] = 'the data file laid out by the host is not %d MiB' % size_mib
                continue
            say('BENCH-LAYOUT %s %d MiB, laid out by the host' % (name, size_mib))
        elif any(j['kind'] == 'fio' for j in jobs):
            rc, secs, err = run(['dd', 'if=/dev/zero', 'of=' + os.path.join(wd, 'data'), 'bs=1M', 'count=%d' % size_mib]
                                + (['oflag=direct'] if ok else ['conv=fsync']), max(120, size_mib))
            if rc != 0:
                dead[name] = 'could not lay out the %d MiB data file: %s' % (size_mib, err.strip()[-300:])
                continue
            say('BENCH-LAYOUT %s %d MiB in %.1f s' % (name, size_mib, secs))

    total = reps * len(jobs) * len(servers)
    i = 0
    for rep in range(reps):
        for ji, job in enumerate(jobs):
            k = (rep + ji) % len(servers)
            order = servers[k:] + servers[:k]
            for s in order:
                i += 1
                name = s['name']
                cid = 'r%d-%s-%s' % (rep, job['name'], name)
                cell = {'id': cid, 'server': name, 'job': job['name'], 'rep': rep, 'rc': None, 'wallSecs': 0,
                        'direct': direct_ok.get(name, False), 'error': None, 'fioFile': None, 'result': None,
                        'notes': [notes[name]] if name in notes else []}
                if DROP['what'] != '3':
                    cell['notes'].append('after a server died, only the page cache was dropped before this cell')
                why = dead.get(name) or host_dead(name)
                if why:
                    bury(s, why)
                    cell['error'] = why
                    write_cell(cell)
                    say('BENCH-CELL %d %d %s %s %d skip' % (i, total, job['name'], name, rep))
                    continue
                wd = os.path.join(s['mount'], s['workdir'])
                tmo = job.get('timeoutSec', timeout)
                # A server the host saw die must be unmounted before anything syncs.
                for other in servers:
                    w = host_dead(other['name'])
                    if w and other['name'] not in buried:
                        bury(other, w)
                if drop:
                    drop_caches()
                say('BENCH-CELL %d %d %s %s %d begin' % (i, total, job['name'], name, rep))
                abort = (lambda n=name: host_dead(n) is not None)
                t0 = now()
                if job['kind'] == 'fio':
                    fio_out = cid + '.fio.json'
                    target = os.path.join(wd, job['file'])
                    if job['file'] == 'seqw':
                        try:
                            os.unlink(target)
                        except FileNotFoundError:
                            pass
                    # per protocol where the job says so (9p: requests in flight from several jobs)
                    args = list(job.get('argsByProtocol', {}).get(s.get('protocol'), job['args']))
                    if not cell['direct']:
                        args = ['--direct=0' if a == '--direct=1' else a for a in args]
                        if '--end_fsync=1' not in args and ('write' in job['name']):
                            args.append('--end_fsync=1')
                    rc, secs, err = run(['fio'] + args + ['--filename=' + target, '--output=' + os.path.join(cells_dir, fio_out)], tmo, abort)
                    cell['fioFile'] = fio_out
                    cell['rc'] = rc
                    if rc != 0:
                        cell['error'] = failure('fio', rc, tmo, err, name)
                elif job['kind'] == 'meta':
                    mdir = os.path.join(wd, 'meta-%d' % rep)
                    res_file = os.path.join(cells_dir, cid + '.meta.json')
                    rc, secs, err = run(['python3', '-u', sys.argv[0], 'meta', mdir, str(plan['files']), DROP['what'] if drop else '0', res_file], tmo, abort)
                    cell['rc'] = rc
                    if rc == 0:
                        with open(res_file) as f:
                            cell['result'] = json.load(f)
                    else:
                        cell['error'] = failure('the metadata job', rc, tmo, err, name)
                        run(['rm', '-rf', mdir], 120)
                else:  # untar
                    udir = os.path.join(wd, 'untar-%d' % rep)
                    os.makedirs(udir, exist_ok=True)
                    rc, secs, err = run(['tar', '-xf', '/tmp/bench-src.tar', '-C', udir, '--no-same-owner'], tmo, abort)
                    cell['rc'] = rc
                    if rc == 0:
                        cell['result'] = {'secs': secs, 'files': plan['untarFiles'], 'bytes': plan['untarBytes']}
                    else:
                        cell['error'] = failure('tar', rc, tmo, err, name)
                    run(['rm', '-rf', udir], max(120, tmo))
                cell['wallSecs'] = now() - t0
                if cell['error']:
                    why = host_dead(name)
                    if why:
                        bury(s, why)
                    elif not alive(s['mount']):
                        bury(s, 'the mount stopped answering (%s)' % cell['error'])
                write_cell(cell)
                say('BENCH-CELL %d %d %s %s %d end rc=%s secs=%.1f' % (i, total, job['name'], name, rep, cell['rc'], cell['wallSecs']))

    # Clean up the working folders (the host removes what is left); make
    # sure no dead server's mount is left for init's final sync to wait on.
    for s in servers:
        why = dead.get(s['name']) or host_dead(s['name'])
        if why:
            bury(s, why)
            continue
        run(['rm', '-rf', os.path.join(s['mount'], s['workdir'])], 300)
    with open(os.path.join(out, 'done'), 'w') as f:
        f.write('done\n')
    say('BENCH-DONE')
    if dead and any(s['name'] in buried for s in servers):
        # init's final sync would wait forever on a dead server's mount: power off now.
        say('BENCH-POWEROFF a server died; powering off without the final sync')
        with open('/proc/sysrq-trigger', 'w') as f:
            f.write('o')
        time.sleep(60)


if __name__ == '__main__':
    if len(sys.argv) >= 2 and sys.argv[1] == 'meta':
        d, n, drop, out = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        DROP['what'] = drop
        r = meta(d, n, drop != '0')
        with open(out, 'w') as f:
            json.dump(r, f)
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit('usage: bench-run.py OUT | bench-run.py meta DIR N DROP RESULT')
