#!/usr/bin/env python3
# Two guests run Debian's dovecot on one mail store (test/lab/mailstore.test.ts).
#   python3 -u mailstore.py MOUNT --role a|b --sync DIR --format FMT:LOCK [--format ...]
#           [--count N] [--victim] [--peer-may-die]
# FMT is maildir or mdbox, LOCK dovecot's lock_method (fcntl, flock). Per
# format, in MOUNT/<FMT>-<LOCK>/ (one mail user, "vmail", uid 5000):
#   1. a creates the store and the mailbox "Lists"; both wait for each other
#      (marker files in DIR, a folder outside the file system under test);
#   2. both deliver N messages at the same time, alternately into INBOX and
#      Lists, alternately with dovecot-lda and `doveadm save`, Message-ID
#      <FMT-ROLE-I@lab>, a body naming its own Message-ID;
#   3. both wait for each other, then read every message back over IMAP
#      (Debian's imap binary on a pipe, preauthenticated, through imaplib);
#   4. a runs `doveadm force-resync '*'`, then reads everything again.
# Every dovecot process runs under `timeout`: one that hangs (on a lock) is
# reported, not waited for. CHECK lines:
#   <fmt>.<role>.delivered      N delivery commands that exited 0 (else: their errors)
#   <fmt>.<role>.dovecot_log    what dovecot logged beyond Info lines ("clean" if nothing)
#   <fmt>.<role>.imap           total=T,unique=U,expected=E,missing=M,duplicates=D,bad_body=B
#   <fmt>.a.force_resync        "clean", or what it printed beyond a forced mdbox rebuild
#   <fmt>.a.after_resync        the IMAP summary again
# --victim (role b): the host kills this guest's QEMU once it printed
# `MAILSTORE-KILL-ME` halfway through its deliveries; --peer-may-die (role a):
# do not wait for b after the deliveries, but for the file DIR/<FMT>-peer-gone
# that the host writes after the kill, then check a's messages and b's.
import hashlib
import imaplib
import os
import re
import subprocess
import sys
import time

ROOT = sys.argv[1]
ARGS = sys.argv[2:]
ROLE = None
SYNC = None
FORMATS = []
COUNT = 50
VICTIM = False
PEER_MAY_DIE = False
i = 0
while i < len(ARGS):
    a = ARGS[i]
    if a == '--role':
        ROLE = ARGS[i + 1]
    elif a == '--sync':
        SYNC = ARGS[i + 1]
    elif a == '--format':
        FORMATS.append(tuple(ARGS[i + 1].split(':')))
    elif a == '--count':
        COUNT = int(ARGS[i + 1])
    elif a == '--victim':
        VICTIM = True
        i -= 1
    elif a == '--peer-may-die':
        PEER_MAY_DIE = True
        i -= 1
    i += 2
assert ROLE in ('a', 'b') and SYNC and FORMATS, 'usage: see the header'
OTHER = 'b' if ROLE == 'a' else 'a'
UID = 5000
WAIT_S = 240     # for the other guest (it may still be booting, or delivering on a slow machine)
CMD_LIMIT_S = 60  # one dovecot command; a command still running then hangs (on a lock)


def emit(name, value):
    print('CHECK %s %s' % (name, str(value).replace(' ', '_').replace('\n', '|')), flush=True)


def info(msg):
    print('INFO %s %s' % (ROLE, msg), flush=True)


# Dotlocks (maildir's dovecot-uidlist.lock) hold "pid:hostname"; a lock whose
# host is this one and whose pid is gone counts as stale. Both guests boot as
# "lab-guest": give each its own name, as two real mail servers have.
with open('/proc/sys/kernel/hostname', 'w') as f:
    f.write('mail-%s' % ROLE)


def mark(name):
    with open(os.path.join(SYNC, '%s.%s' % (name, ROLE)), 'w') as f:
        f.write('%d\n' % os.getpid())


def wait_file(path, limit=WAIT_S):
    t0 = time.time()
    while not os.path.exists(path):
        if time.time() - t0 > limit:
            return False
        time.sleep(0.2)
    return True


def barrier(name):
    mark(name)
    if not wait_file(os.path.join(SYNC, '%s.%s' % (name, OTHER))):
        emit('%s.%s.barrier' % (name, ROLE), 'timeout')
        return False
    return True


def conf_path(fmt, lock):
    return '/tmp/mailstore/%s-%s.conf' % (fmt, lock)


def write_conf(fmt, lock, store):
    os.makedirs('/tmp/mailstore/run-%s-%s' % (fmt, lock), exist_ok=True)
    os.chown('/tmp/mailstore/run-%s-%s' % (fmt, lock), UID, UID)
    leaf = 'Maildir' if fmt == 'maildir' else 'mdbox'
    text = '\n'.join([
        'dovecot_config_version = 2.4.5',
        'dovecot_storage_version = 2.4.5',
        'base_dir = /tmp/mailstore/run-%s-%s' % (fmt, lock),
        'state_dir = /tmp/mailstore/run-%s-%s' % (fmt, lock),
        'log_path = /dev/stderr',
        'info_log_path = /dev/stderr',
        'protocols =',
        'ssl = no',
        'mail_driver = %s' % fmt,
        'mail_home = %s/%%{user}' % store,
        'mail_path = %s/%%{user}/%s' % (store, leaf),
        'lock_method = %s' % lock,
        # as for any file system two hosts share (dovecot's NFS advice)
        'mmap_disable = yes',
        'mail_fsync = always',
        'lda_mailbox_autocreate = yes',
        '',
    ])
    with open(conf_path(fmt, lock), 'w') as f:
        f.write(text)


def as_vmail(argv):
    return ['timeout', '-k', '5', str(CMD_LIMIT_S), 'setpriv', '--reuid=%d' % UID, '--regid=%d' % UID, '--clear-groups',
            'env', '-i', 'USER=vmail', 'HOME=/nonexistent', 'PATH=/usr/bin:/bin'] + argv


def dovecot(fmt, lock, argv, stdin=None):
    p = subprocess.run(as_vmail(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


NOISE = re.compile(r': Info: ')


def unexpected_log(text):
    return [ln for ln in text.splitlines() if ln.strip() and not NOISE.search(ln)]


def message(fmt, role, n):
    mid = '<%s-%s-%d@lab>' % (fmt, role, n)
    body = 'body of %s sha256=%s\n' % (mid, hashlib.sha256(mid.encode()).hexdigest())
    return mid, ('From: %s@lab\nTo: vmail@lab\nSubject: message %d from guest %s\nMessage-ID: %s\n\n%s' % (role, n, role, mid, body)).encode()


def deliver(fmt, lock, n):
    mid, raw = message(fmt, ROLE, n)
    box = 'INBOX' if n % 2 == 0 else 'Lists'
    if (n // 2) % 2 == 0:
        argv = ['/usr/lib/dovecot/dovecot-lda', '-c', conf_path(fmt, lock), '-f', '%s@lab' % ROLE, '-m', box]
    else:
        argv = ['doveadm', '-c', conf_path(fmt, lock), 'save', '--no-userdb-lookup', '-m', box]
    return dovecot(fmt, lock, argv, stdin=raw)


def imap_read(fmt, lock, tag):
    """Every message of INBOX and Lists over IMAP: {mailbox: [(message-id, body-ok)]}."""
    log = '/tmp/mailstore/imap-%s-%s-%s.log' % (fmt, lock, tag)
    cmd = ' '.join(as_vmail(['/usr/lib/dovecot/imap', '-c', conf_path(fmt, lock)])) + ' 2>>' + log
    out = {}
    m = imaplib.IMAP4_stream(cmd)
    try:
        for box in ('INBOX', 'Lists'):
            typ, data = m.select(box, readonly=True)
            if typ != 'OK':
                raise RuntimeError('SELECT %s: %s %s' % (box, typ, data))
            typ, data = m.fetch('1:*', '(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] BODY.PEEK[TEXT])') if int(data[0]) else ('OK', [])
            if typ != 'OK':
                raise RuntimeError('FETCH %s: %s %s' % (box, typ, data))
            items = []
            parts = [d for d in data if isinstance(d, tuple)]
            # imaplib gives each literal as (prefix, bytes): header then text, per message
            for j in range(0, len(parts), 2):
                hdr = parts[j][1].decode('utf-8', 'replace')
                text = parts[j + 1][1].decode('utf-8', 'replace') if j + 1 < len(parts) else ''
                mm = re.search(r'Message-ID:\s*(\S+)', hdr, re.I)
                mid = mm.group(1) if mm else '?'
                ok = text == 'body of %s sha256=%s\r\n' % (mid, hashlib.sha256(mid.encode()).hexdigest())
                items.append((mid, ok))
            out[box] = items
        m.logout()
    finally:
        try:
            m.shutdown()
        except Exception:
            pass
    with open(log) as f:
        extra = unexpected_log(f.read())
    return out, extra


def summary(boxes, expected):
    ids = [mid for items in boxes.values() for (mid, _) in items]
    bad = sum(1 for items in boxes.values() for (_, ok) in items if not ok)
    # each message must be in the mailbox it was delivered to
    wrong_box = 0
    for box, items in boxes.items():
        for mid, _ in items:
            m = re.match(r'<\S+-[ab]-(\d+)@lab>', mid)
            if m and (('INBOX' if int(m.group(1)) % 2 == 0 else 'Lists') != box):
                wrong_box += 1
    uniq = set(ids)
    return {
        'total': len(ids),
        'unique': len(uniq),
        'missing': len(expected - uniq),
        'duplicates': len(ids) - len(uniq),
        'unknown': len(uniq - expected),
        'bad_body': bad,
        'wrong_box': wrong_box,
    }


def fmt_summary(s, keys=('total', 'unique', 'missing', 'duplicates', 'unknown', 'bad_body', 'wrong_box')):
    return ','.join('%s=%d' % (k, s[k]) for k in keys)


def ids_of(fmt, role, n):
    return {message(fmt, role, k)[0] for k in range(n)}


def run_format(fmt, lock):
    name = '%s-%s' % (fmt, lock)
    store = os.path.join(ROOT, name)
    write_conf(fmt, lock, store)
    if ROLE == 'a':
        os.makedirs(store, exist_ok=True)
        os.chown(store, UID, UID)
        rc, _, err = dovecot(fmt, lock, ['doveadm', '-c', conf_path(fmt, lock), 'mailbox', 'create', '--no-userdb-lookup', 'Lists'])
        if rc != 0:
            emit('%s.a.setup' % name, 'rc=%d:%s' % (rc, ';'.join(unexpected_log(err))[:300]))
    if not barrier('%s-ready' % name):
        return
    t0 = time.time()
    ok, errors, logs = 0, [], []
    for n in range(COUNT):
        if VICTIM and n == COUNT // 2:
            emit('%s.b.delivered_before_kill' % name, ok)
            print('MAILSTORE-KILL-ME', flush=True)
        rc, _, err = deliver(fmt, lock, n)
        if rc == 0:
            ok += 1
        else:
            errors.append('%d:rc=%d' % (n, rc))
        logs += unexpected_log(err)
    if VICTIM:
        # not killed: say so, and hang around so the host sees it
        emit('%s.b.not_killed' % name, ok)
        time.sleep(60)
        return
    dt = time.time() - t0
    emit('%s.%s.delivered' % (name, ROLE), ok if not errors else '%d,failed=%s' % (ok, ';'.join(errors[:10])))
    emit('%s.%s.dovecot_log' % (name, ROLE), 'clean' if not logs else ';'.join(logs[:5])[:600])
    info('%s: %d deliveries in %.1f s' % (name, COUNT, dt))
    print('FIGURE %s.%s.deliver_s %.1f' % (name, ROLE, dt), flush=True)
    if PEER_MAY_DIE:
        if not wait_file(os.path.join(SYNC, '%s-peer-gone' % name)):
            emit('%s.a.peer_gone' % name, 'timeout')
            return
        t1 = time.time()
        rc, out, err = dovecot(fmt, lock, ['doveadm', '-c', conf_path(fmt, lock), 'force-resync', '--no-userdb-lookup', '*'])
        emit('%s.a.force_resync' % name, resync_verdict(fmt, rc, err))
        print('FIGURE %s.a.force_resync_s %.1f' % (name, time.time() - t1), flush=True)
        boxes, extra = imap_read(fmt, lock, 'after-kill')
        mine = ids_of(fmt, 'a', COUNT)
        ids = [mid for items in boxes.values() for (mid, _) in items]
        own = [x for x in ids if x in mine]
        theirs = [x for x in ids if x.startswith('<%s-b-' % fmt)]
        emit('%s.a.own_after_kill' % name, 'total=%d,unique=%d,missing=%d' % (len(own), len(set(own)), len(mine - set(own))))
        s = summary(boxes, mine | ids_of(fmt, 'b', COUNT))
        emit('%s.a.victim_messages' % name, 'unique=%d,duplicates=%d' % (len(set(theirs)), len(theirs) - len(set(theirs))))
        emit('%s.a.after_kill' % name, fmt_summary(s, ('unknown', 'bad_body', 'wrong_box')))
        emit('%s.a.imap_log' % name, 'clean' if not extra else ';'.join(extra[:5])[:600])
        # one more delivery after the kill: the store takes new mail
        rc, _, err = deliver(fmt, lock, COUNT)
        emit('%s.a.deliver_after_kill' % name, 'rc=%d%s' % (rc, '' if not unexpected_log(err) else ':' + ';'.join(unexpected_log(err))[:300]))
        return
    if not barrier('%s-delivered' % name):
        return
    expected = ids_of(fmt, 'a', COUNT) | ids_of(fmt, 'b', COUNT)
    t1 = time.time()
    boxes, extra = imap_read(fmt, lock, 'read')
    print('FIGURE %s.%s.imap_read_s %.1f' % (name, ROLE, time.time() - t1), flush=True)
    emit('%s.%s.imap' % (name, ROLE), fmt_summary(summary(boxes, expected)))
    emit('%s.%s.imap_log' % (name, ROLE), 'clean' if not extra else ';'.join(extra[:5])[:600])
    if not barrier('%s-read' % name):
        return
    if ROLE == 'a':
        t1 = time.time()
        rc, out, err = dovecot(fmt, lock, ['doveadm', '-c', conf_path(fmt, lock), 'force-resync', '--no-userdb-lookup', '*'])
        emit('%s.a.force_resync' % name, resync_verdict(fmt, rc, err))
        print('FIGURE %s.a.force_resync_s %.1f' % (name, time.time() - t1), flush=True)
        boxes, extra = imap_read(fmt, lock, 'after-resync')
        emit('%s.a.after_resync' % name, fmt_summary(summary(boxes, expected)))
    barrier('%s-done' % name)


# What a forced mdbox rebuild always says; anything else is a repair.
FORCED = re.compile(r'Warning: mdbox\(\S+\): (rebuilding indexes: Rebuild forced|fscking index file \S+/dovecot\.map\.index)$')


def resync_verdict(fmt, rc, err):
    lines = [ln for ln in unexpected_log(err) if not FORCED.search(ln)]
    if rc == 0 and not lines:
        return 'clean'
    return ('rc=%d:' % rc) + ';'.join(lines[:5])[:600]


os.makedirs('/tmp/mailstore', exist_ok=True)
for fmt, lock in FORMATS:
    run_format(fmt, lock)
