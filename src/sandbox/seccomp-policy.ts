// What a *serving* duofs process may call once it is confined: the seccomp
// allow-list. Measured, not guessed (docs in src/sandbox/seccomp.ts; the
// tool is scripts/seccomp-measure.mjs): strace -f over the protocol, FUSE,
// vhost, io and fault suites and over `duofs serve` processes driven by 9P,
// virtio-fs and /dev/fuse workloads on each I/O engine, counting a serving
// process's calls only after its start-up; then `--seccomp log` runs of
// the same, which must leave no kernel record. Start-up calls (execve,
// arch_prctl, loading modules and the native addon, binding the
// listeners, mount(2) for --fuse-mount) are not here: the filter goes in
// after all of that. Calls a client makes (connect, memfd_create for guest
// RAM) or the test harness makes (fork/exec, wait4, kill) are not here.
//
// "not measured": allowed although no run above made the call: the code
// has it on a path the suites did not reach, or glibc/the kernel fall back
// to it (clocks without a vDSO, restarted calls); each says which.
//
// Names are x86_64's; numbers come from the generated
// seccomp-syscalls.ts. aarch64 has no legacy calls (open, stat, poll,
// epoll_wait...): AARCH64_EQUIVALENTS says what its glibc calls instead.

/** Allowed whatever the arguments: name -> why, for the ones that are not obvious. */
export const ALLOW: Readonly<Record<string, string>> = {
  // -- memory (V8's heap and JIT, malloc, guest RAM mapped from vhost-user memfds)
  brk: '',
  mmap: 'also maps guest RAM from the memfds vhost-user passes (SET_MEM_TABLE, ADD_MEM_REG)',
  munmap: '',
  mprotect: 'V8 flips JIT pages between writable and executable',
  mremap: 'not measured: glibc realloc of large blocks',
  madvise: 'V8 and glibc give pages back (MADV_DONTNEED); libuv MADV_DONTFORK',
  pkey_mprotect: 'not measured: V8 uses memory protection keys for JIT pages where the CPU has them (pkey_alloc failed in the VM measured)',
  pkey_free: 'see pkey_mprotect',
  // -- threads and synchronisation (V8 platform threads, libuv pool, koffi async)
  futex: '',
  set_robust_list: 'every new thread (glibc pthread_create)',
  rseq: 'every new thread (glibc 2.35+ registers restartable sequences)',
  set_tid_address: '',
  gettid: '',
  getpid: '',
  exit: 'a thread ends',
  exit_group: '',
  sched_getaffinity: 'libuv counts CPUs (uv_available_parallelism)',
  sched_yield: 'not measured: V8 and glibc spin-then-yield locks',
  membarrier: "not measured: V8 may flush other cores' instruction caches after patching code",
  restart_syscall: 'not measured: the kernel restarts an interrupted nanosleep/futex/poll through it',
  // -- signals
  rt_sigaction: '',
  rt_sigprocmask: '',
  rt_sigreturn: '',
  sigaltstack: 'not measured: new threads (V8 and Node install stack-overflow handlers)',
  // -- time (normally in the vDSO; a real syscall where the clocksource has no vDSO mapping)
  clock_gettime: 'not measured: vDSO fallback; CLOCK_THREAD_CPUTIME_ID is always a syscall',
  clock_getres: 'not measured: see clock_gettime',
  gettimeofday: 'not measured: see clock_gettime',
  time: 'not measured: see clock_gettime',
  clock_nanosleep: 'not measured: sleeps',
  nanosleep: 'not measured: sleeps',
  // -- the event loop (libuv epoll, eventfds for async handles and io_uring completions)
  epoll_create1: 'libuv creates an epoll set per loop (worker threads, koffi)',
  epoll_ctl: '',
  epoll_wait: 'not measured: libuv before epoll_pwait',
  epoll_pwait: '',
  epoll_pwait2: 'not measured: newer libuv',
  poll: 'not measured: libuv waits on a blocking fd (uv__io_poll falls back; stdio writes on EAGAIN)',
  ppoll: 'not measured: see poll',
  eventfd2: 'libuv async handles; the io_uring completion eventfd',
  pipe2: 'libuv makes a pipe per signal watcher and per new loop',
  // -- files: the backend's data and metadata calls (src/sys/*)
  read: '',
  write: '',
  readv: 'not measured: sys/vectored.ts',
  writev: '',
  pread64: '',
  pwrite64: '',
  preadv: 'not measured: sys/vectored.ts',
  pwritev: 'not measured: sys/vectored.ts',
  preadv2: 'the threads engine tries RWF_NOWAIT inline first',
  pwritev2: '',
  lseek: '',
  close: '',
  dup: '',
  openat: 'every path operation is openat(parent fd, one name, O_NOFOLLOW)',
  openat2: 'not measured: RESOLVE_BENEATH opens (sys/fs.ts)',
  open_by_handle_at: 'reopening inodes from file handles (root)',
  name_to_handle_at: '',
  newfstatat: '',
  fstat: '',
  statx: '',
  fstatfs: '',
  statfs: '',
  getdents64: '',
  mkdirat: '',
  mknodat: '',
  symlinkat: '',
  readlinkat: '',
  linkat: '',
  unlinkat: '',
  renameat: '',
  renameat2: '',
  fchownat: '',
  fchmodat: '',
  utimensat: '',
  ftruncate: '',
  truncate: 'truncating an O_PATH inode through /proc/self/fd/N',
  fallocate: '',
  fsync: '',
  fdatasync: 'not measured: FUSE fsync with the datasync flag, 9P Tfsync datasync',
  syncfs: '',
  copy_file_range: '',
  flock: 'the export lock (released at exit)',
  faccessat: 'not measured: FUSE access (sys/fs.ts)',
  faccessat2: 'glibc faccessat',
  umask: 'the mapped models and mknod set and restore the umask around creations',
  // path forms on /proc/self/fd/N for O_PATH inodes; f* on open files (sys/xattr.ts)
  getxattr: '',
  fgetxattr: 'not measured: xattrs on open files (sys/xattr.ts)',
  setxattr: '',
  fsetxattr: 'not measured: see fgetxattr',
  listxattr: '',
  removexattr: '',
  // legacy path forms Node's fs uses: no more power than their *at forms above
  unlink: 'fs.unlinkSync of the socket files at shutdown',
  chmod: '',
  readlink: 'vhost-user checks kick/call fds through /proc/self/fd/N',
  access: '',
  open: '',
  stat: '',
  lstat: '',
  mkdir: '',
  rmdir: '',
  rename: '',
  link: '',
  symlink: '',
  chown: '',
  getcwd: 'process.cwd()',
  // -- credentials: per-thread fs ids around each passthrough request (sys/creds.ts)
  setfsuid: '',
  setfsgid: '',
  setgroups: 'raw syscall, this thread only',
  getuid: '',
  geteuid: '',
  getgid: '',
  getegid: '',
  getgroups: '',
  capget: 'Node checks capabilities before trusting some environment variables',
  getppid: '',
  // -- sockets that exist already: accepting, fd passing, peer credentials
  accept4: '9P listeners (libuv) and vhost-user listeners',
  recvmsg: 'vhost-user messages with SCM_RIGHTS',
  sendmsg: '',
  sendto: 'not measured: --syslog datagrams (send(2) is sendto); sd_notify from a server systemd started itself (--sandbox none, chroot)',
  shutdown: '',
  getsockname: '',
  getpeername: '',
  getsockopt: 'SO_PEERCRED, SO_TYPE, SO_ERROR',
  setsockopt: 'TCP_NODELAY on accepted 9P connections',
  // -- io_uring: the ring exists before the filter; submissions and completions after
  io_uring_enter: 'the io_uring engine submits and reaps',
  // -- process information
  uname: '',
  sysinfo: 'os.totalmem / libuv constrained memory',
  getrandom: 'crypto and V8 hash seeds',
  getrusage: 'not measured: V8 and process.cpuUsage()',
};

/** An argument check: the low 32 bits of argument `arg` (every argument filtered here is an int). */
export type ArgRule = { arg: number; oneOf: readonly number[] } | { arg: number; allOf: number; noneOf: number } | { arg: number; self: 'pid' };

/** Allowed only when every check holds; otherwise the mode's action (kill, log or trap). */
export const ALLOW_IF: Readonly<Record<string, { rules: readonly ArgRule[]; why: string }>> = {
  // A thread (pthread_create: CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|
  // CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|
  // CLONE_CHILD_CLEARTID), never a process and never a namespace: no
  // fork, no posix_spawn, no vfork-and-exec.
  clone: {
    rules: [{ arg: 0, allOf: 0x00010000 /* CLONE_THREAD */, noneOf: 0x7e020000 /* CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET */ }],
    why: 'threads only (clone3 answers ENOSYS so glibc falls back to clone, whose flags BPF can read)',
  },
  socket: { rules: [{ arg: 0, oneOf: [1 /* AF_UNIX */] }], why: 'unix sockets only: no inet, packet or raw socket' },
  fcntl: {
    rules: [{ arg: 1, oneOf: [0, 1, 2, 3, 4, 5, 6, 7, 36, 37, 38, 1030, 1034] }],
    why: 'F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK/SETLK/SETLKW, F_DUPFD_CLOEXEC, F_GET_SEALS; not F_SETOWN/F_SETSIG (signals to others), F_SETLEASE, F_NOTIFY',
  },
  ioctl: {
    rules: [
      {
        arg: 1,
        oneOf: [
          0x5401 /* TCGETS */, 0x5413 /* TIOCGWINSZ */, 0x5421 /* FIONBIO */, 0x5451 /* FIOCLEX */, 0x5450 /* FIONCLEX */, 0x541b /* FIONREAD */,
        ],
      },
    ],
    why: "what libuv and Node ask of fds and terminals; never TIOCSTI (typing into the operator's terminal)",
  },
  prctl: {
    rules: [
      {
        arg: 0,
        oneOf: [15 /* PR_SET_NAME */, 16 /* PR_GET_NAME */, 0x53564d41 /* PR_SET_VMA */, 39 /* PR_GET_NO_NEW_PRIVS */, 21 /* PR_GET_SECCOMP */],
      },
    ],
    why: 'thread names (libuv), anonymous-memory names (mimalloc in native addons)',
  },
  prlimit64: { rules: [{ arg: 0, oneOf: [0] }], why: 'this process only (glibc/libuv read RLIMIT_STACK for each new thread)' },
  tgkill: { rules: [{ arg: 0, self: 'pid' }], why: "not measured: only this process's own threads (abort(), raise(), the SIGSYS handler)" },
  // The ring's eventfd goes at close. Nothing else: no new files or buffers
  // registered, no io-wq tuning, no personalities.
  io_uring_register: {
    rules: [{ arg: 1, oneOf: [4 /* IORING_REGISTER_EVENTFD */, 5 /* IORING_UNREGISTER_EVENTFD */] }],
    why: 'the completion eventfd only',
  },
};

/** Refused with an errno instead of the mode's action: name -> [errno, why]. */
export const ERRNO_CALLS: Readonly<Record<string, { errno: number; why: string }>> = {
  // clone3's flags are in memory BPF cannot read: ENOSYS makes glibc (2.34+)
  // retry pthread_create with clone(2), which ALLOW_IF checks.
  clone3: { errno: 38 /* ENOSYS */, why: 'glibc falls back to clone' },
  // DevFuseMount.close() unmounts (MNT_DETACH) at shutdown: refused quietly
  // so SIGTERM stays a clean exit ("unmount failed" in the log); whoever
  // set the sandbox up unmounts from outside. umount2 can never succeed.
  umount2: { errno: 1 /* EPERM */, why: 'the FUSE unmount at shutdown fails softly' },
};

/**
 * Not allowed on purpose (the tests try several): a serving process never
 * needs them and an attacker would. Listed so nobody adds one to ALLOW.
 */
export const FORBIDDEN: Readonly<Record<string, string>> = {
  execve: 'running a program',
  execveat: 'running a program',
  fork: 'a process',
  vfork: 'a process',
  ptrace: 'other processes',
  process_vm_readv: 'other processes',
  process_vm_writev: 'other processes',
  kill: 'signals to other processes',
  mount: 'the mount table',
  pivot_root: 'the mount table',
  chroot: 'the root',
  move_mount: 'the mount table',
  open_tree: 'the mount table',
  fsopen: 'the mount table',
  fsmount: 'the mount table',
  fsconfig: 'the mount table',
  init_module: 'the kernel',
  finit_module: 'the kernel',
  delete_module: 'the kernel',
  kexec_load: 'the kernel',
  kexec_file_load: 'the kernel',
  bpf: 'the kernel',
  perf_event_open: 'the kernel (Node does not need it)',
  reboot: 'the machine',
  swapon: 'the machine',
  swapoff: 'the machine',
  setns: 'namespaces',
  unshare: 'namespaces',
  connect: 'reaching other sockets (nothing the server does connects)',
  bind: 'new listeners (all are made before)',
  listen: 'new listeners',
  memfd_create: 'executable anonymous files',
  setuid: 'process credentials',
  setgid: 'process credentials',
  setresuid: 'process credentials',
  setresgid: 'process credentials',
  capset: 'capabilities',
  io_uring_setup: 'a new ring would bypass the filter (io_uring operations are not syscalls)',
  keyctl: 'the keyring',
  add_key: 'the keyring',
  request_key: 'the keyring',
  userfaultfd: 'a classic exploit primitive',
  personality: 'exec domains',
  quotactl: 'quotas',
  acct: 'accounting',
  settimeofday: 'the clock',
  clock_settime: 'the clock',
  sethostname: 'the host name',
  setdomainname: 'the domain name',
  iopl: 'hardware',
  ioperm: 'hardware',
};

/**
 * aarch64 has only the generic table: where glibc/libuv call an x86_64
 * legacy syscall, aarch64's call the generic one (not measured on aarch64).
 */
export const AARCH64_EQUIVALENTS: Readonly<Record<string, string>> = {
  open: 'openat',
  stat: 'newfstatat',
  lstat: 'newfstatat',
  poll: 'ppoll',
  epoll_wait: 'epoll_pwait',
  epoll_create: 'epoll_create1',
  pipe: 'pipe2',
  dup2: 'dup3',
  access: 'faccessat',
  readlink: 'readlinkat',
  unlink: 'unlinkat',
  chmod: 'fchmodat',
  rename: 'renameat',
  mkdir: 'mkdirat',
  rmdir: 'unlinkat',
  getdents: 'getdents64',
  time: 'clock_gettime',
  select: 'pselect6',
  fstat: 'fstat',
  getrlimit: 'prlimit64',
};

/** Every name the policy lets through (allowed, or allowed on conditions). */
export function allowedNames(): string[] {
  return [...Object.keys(ALLOW), ...Object.keys(ALLOW_IF)].sort();
}
