#!/usr/bin/env node
// Measures which system calls duofs's processes make, from `strace -f` logs,
// to build and check the seccomp allow-list (src/sandbox/seccomp-policy.ts).
//
//   strace -f -qq -s 48 -o /tmp/st/x.txt node bin/duofs.js serve ...   # or jest, the bench...
//   node scripts/seccomp-measure.mjs /tmp/st/x.txt [--json out.json] [--after-marker]
//
// It rebuilds the process tree from the clone/clone3/fork/vfork results
// (CLONE_THREAD: same process) and the execve calls, names each process by
// what it runs (a `duofs serve` CLI, a jest worker, jest, another program),
// and prints per kind: every syscall with its count, and the arguments the
// policy filters on (socket domains, clone flags, ioctl requests, prctl
// options, kill/tgkill targets). Then it compares the node processes' calls
// with the policy and lists what the policy lacks.
//
// --after-marker: count a process's calls only after it wrote the marker
// "SECCOMP-MEASURE-START" (any write to any fd, e.g. a log line), to see a
// serving process after start-up only.
import { readFileSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const files = args.filter((a) => !a.startsWith('--') && !args[args.indexOf(a) - 1]?.startsWith('--json'));
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const afterMarker = args.includes('--after-marker');
const MARKER = 'SECCOMP-MEASURE-START';

const tgidOf = new Map(); // tid -> tgid
const image = new Map(); // tgid -> { argv, kind, id }
const started = new Set(); // image ids past the marker
const images = []; // { id, tgid, argv, kind, calls: Map<name, count>, details: Map<name, Map<detail, count>> }
const pending = new Map(); // tid -> the first half of an unfinished call

function kindOf(argv) {
  const s = argv.join(' ');
  const node = /(^|\/)node$/.test(argv[0] ?? '');
  if (!node) return 'other:' + (argv[0] ?? '?').split('/').pop();
  if (/bin\/duofs(-virtiofsd)?\.js\b/.test(s) && /\bserve\b|duofs-virtiofsd/.test(s)) return 'duofs-serve';
  if (/bin\/duofs\.js\b/.test(s)) return 'duofs-cli-other';
  if (/jest-worker|processChild/.test(s)) return 'jest-worker';
  if (/jest\.js|jest\/bin/.test(s)) return 'jest-main';
  if (/seccomp-serve|fixtures\//.test(s)) return 'fixture';
  return 'node-other';
}

function newImage(tgid, argv, kind = kindOf(argv)) {
  const im = { id: images.length, tgid, argv, kind, calls: new Map(), details: new Map() };
  images.push(im);
  image.set(tgid, im);
  return im;
}

const bump = (m, k, n = 1) => m.set(k, (m.get(k) ?? 0) + n);

function detailOf(name, a, ret) {
  switch (name) {
    case 'socket':
      return a.split(',')[0] + ' ' + (a.split(',')[1] ?? '').trim().replace(/\|SOCK_(CLOEXEC|NONBLOCK)/g, '');
    case 'socketpair':
      return a.split(',')[0];
    case 'clone': {
      const f = /flags=([A-Z_|0-9x]+)/.exec(a)?.[1] ?? '?';
      return f.includes('CLONE_THREAD') ? 'thread' : `process ${f}`;
    }
    case 'clone3': {
      const f = /flags=([A-Z_|0-9x]+)/.exec(a)?.[1] ?? '?';
      return (f.includes('CLONE_THREAD') ? 'thread' : `process ${f}`) + ` = ${ret.split(' ')[0]}`;
    }
    case 'ioctl':
      return a.split(',')[1]?.trim() ?? '?';
    case 'prctl':
      return a.split(',')[0];
    case 'kill':
    case 'tgkill':
    case 'tkill':
      return a;
    case 'mmap':
    case 'mprotect':
      return /PROT_EXEC/.test(a) ? 'exec' : 'noexec';
    case 'fcntl':
      return a.split(',')[1]?.trim() ?? '?';
    case 'setsockopt':
    case 'getsockopt':
      return a.split(',').slice(1, 3).join(',').trim();
    case 'io_uring_register':
      return a.split(',')[1]?.trim() ?? '?';
    case 'madvise':
      return a.split(',')[2]?.trim() ?? '?';
    case 'rt_sigaction':
      return a.split(',')[0];
    case 'futex':
      return a.split(',')[1]?.trim() ?? '?';
    case 'openat':
      return /O_PATH/.test(a) ? 'O_PATH' : /O_WRONLY|O_RDWR/.test(a) ? 'write' : 'read';
    case 'epoll_ctl':
      return a.split(',')[1]?.trim() ?? '?';
    default:
      return undefined;
  }
}

function onCall(tid, name, a, ret) {
  const tgid = tgidOf.get(tid) ?? tid;
  if (!tgidOf.has(tid)) tgidOf.set(tid, tid);
  let im = image.get(tgid) ?? newImage(tgid, ['?']);
  if ((name === 'execve' || name === 'execveat') && /^0\b/.test(ret)) {
    const argv = [...(/\[(.*?)\]/.exec(a)?.[1] ?? '').matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]);
    im = newImage(tgid, argv.length ? argv : [/"([^"]*)"/.exec(a)?.[1] ?? '?']);
    if (!afterMarker) bump(im.calls, name);
    return;
  }
  if ((name === 'clone' || name === 'clone3' || name === 'fork' || name === 'vfork') && /^\d+/.test(ret)) {
    const child = Number(/^\d+/.exec(ret)[0]);
    const thread = /CLONE_THREAD/.test(a);
    tgidOf.set(child, thread ? tgid : child);
    if (!thread) {
      // A child that has not exec'd yet (spawn's fork-then-exec) is not its parent's kind.
      const ci = newImage(child, im.argv, `${im.kind.startsWith('other:') ? im.kind : 'pre-exec'}`);
      if (started.has(im.id)) started.add(ci.id);
    }
  }
  if (afterMarker && !started.has(im.id)) {
    if ((name === 'write' || name === 'writev' || name === 'sendto' || name === 'sendmsg') && a.includes(MARKER)) started.add(im.id);
    return;
  }
  bump(im.calls, name);
  const d = detailOf(name, a, ret);
  if (d !== undefined) {
    let m = im.details.get(name);
    if (!m) im.details.set(name, (m = new Map()));
    bump(m, d);
  }
}

const LINE = /^(\d+) +(?:(\w+)\((.*)\) += (.*)|(\w+)\((.*) <unfinished \.\.\.>|<\.\.\. (\w+) resumed>(.*)\) += (.*)|\+\+\+ .*|--- .*)$/;
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const tid = Number(m[1]);
    if (m[2]) onCall(tid, m[2], m[3], m[4]);
    else if (m[5]) pending.set(tid, { name: m[5], a: m[6] });
    else if (m[7]) {
      const p = pending.get(tid);
      pending.delete(tid);
      onCall(tid, m[7], (p?.a ?? '') + m[8], m[9]);
    }
  }
  for (const [tid, p] of pending) onCall(tid, p.name, p.a, '?'); // calls the process never came back from (exit)
  pending.clear();
}

// Union per kind.
const kinds = new Map();
for (const im of images) {
  let k = kinds.get(im.kind);
  if (!k) kinds.set(im.kind, (k = { processes: 0, calls: new Map(), details: new Map() }));
  if (im.calls.size) k.processes++;
  for (const [n, c] of im.calls) bump(k.calls, n, c);
  for (const [n, dm] of im.details) {
    let m = k.details.get(n);
    if (!m) k.details.set(n, (m = new Map()));
    for (const [d, c] of dm) bump(m, d, c);
  }
}

const result = {};
for (const [kind, k] of [...kinds].sort()) {
  if (!k.processes) continue;
  result[kind] = {
    processes: k.processes,
    calls: Object.fromEntries([...k.calls].sort((a, b) => a[0].localeCompare(b[0]))),
    details: Object.fromEntries([...k.details].map(([n, m]) => [n, Object.fromEntries([...m].sort((a, b) => b[1] - a[1]))])),
  };
  if (kind.startsWith('other:')) continue;
  console.log(`\n== ${kind}: ${k.processes} process(es), ${k.calls.size} distinct syscalls`);
  console.log(
    [...k.calls]
      .sort((a, b) => a[0].localeCompare(b[0]))
      .map(([n, c]) => `${n}:${c}`)
      .join(' '),
  );
  for (const [n, m] of k.details)
    console.log(
      `  ${n}: ${[...m]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 30)
        .map(([d, c]) => `${d} x${c}`)
        .join('; ')}`,
    );
}
console.log(
  '\nother programs: ' +
    [...kinds.keys()]
      .filter((k) => k.startsWith('other:'))
      .map((k) => k.slice(6))
      .join(' '),
);

// What the node processes call that the policy does not allow.
try {
  const { execFileSync } = await import('node:child_process');
  const policy = JSON.parse(
    execFileSync(
      process.execPath,
      [
        '--import',
        new URL('../test/lab/ts-hooks.mjs', import.meta.url).pathname,
        '-e',
        "import('./src/sandbox/seccomp-policy.ts').then((m) => console.log(JSON.stringify({ allowed: m.allowedNames(), errno: Object.keys(m.ERRNO_CALLS) })))",
      ],
      { cwd: new URL('..', import.meta.url).pathname, encoding: 'utf8' },
    ),
  );
  const known = new Set([...policy.allowed, ...policy.errno]);
  for (const [kind, r] of Object.entries(result)) {
    if (kind.startsWith('other:')) continue;
    const missing = Object.keys(r.calls).filter((n) => !known.has(n));
    console.log(`\nnot in the policy (${kind}): ${missing.map((n) => `${n}:${r.calls[n]}`).join(' ') || 'none'}`);
  }
} catch (e) {
  console.log(`\n(policy not compared: ${e.message.split('\n')[0]})`);
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(result, null, 1));
