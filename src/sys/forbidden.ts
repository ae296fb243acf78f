// System calls the server never makes. Only the sandbox's escape probe
// (src/sandbox/escape-probe.ts, a test hook) calls them, to show that a
// server a guest had taken over could not use them. Each returns 0 or
// -errno; none throws.
import koffi from 'koffi';
import { cstr, errno } from './libc.js';

const lib = koffi.load('libc.so.6');
const ptraceFn = lib.func('long ptrace(int request, int pid, void *addr, void *data)');
const initModuleFn = lib.func('long init_module(void *image, unsigned long len, const char *params)');
const socketFn = lib.func('int socket(int domain, int type, int protocol)');
const closeFn = lib.func('int close(int fd)');
const execveFn = lib.func('int execve(const char *path, const char **argv, const char **envp)');
const mountFn = lib.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)');
const umountFn = lib.func('int umount2(const char *target, int flags)');
const setxattrFn = lib.func('int setxattr(const void *path, const void *name, const void *value, size_t size, int flags)');

const ret = (r: number | bigint): number => (Number(r) < 0 ? -errno() : 0);

const PTRACE_ATTACH = 16;
const PTRACE_DETACH = 17;
export function ptraceAttach(pid: number): number {
  const r = ret(ptraceFn(PTRACE_ATTACH, pid, null, null));
  if (r === 0) ptraceFn(PTRACE_DETACH, pid, null, null);
  return r;
}

/** init_module(NULL, 0): the capability check comes before the image is read, so EPERM says "not allowed". */
export function initModule(): number {
  return ret(initModuleFn(null, 0, ''));
}

const AF_INET = 2;
const SOCK_RAW = 3;
const IPPROTO_ICMP = 1;
export function rawSocket(): number {
  const fd = socketFn(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (fd < 0) return -errno();
  closeFn(fd);
  return 0;
}

/** Replaces the process with `path argv...` on success (so it returns only on failure). */
export function execve(path: string, argv: string[]): number {
  return ret(execveFn(path, [...argv, null] as unknown as string[], [null] as unknown as string[]));
}

export function mountTmpfs(target: string): number {
  const r = ret(mountFn('tmpfs', target, 'tmpfs', 0, ''));
  if (r === 0) umountFn(target, 2 /* MNT_DETACH */);
  return r;
}

/** A file capability blob (VFS_CAP_REVISION_2) granting every capability, set by path. */
export function setFileCapability(path: string): number {
  const blob = Buffer.alloc(20);
  blob.writeUInt32LE(0x02000000 | 1, 0); // revision 2, effective
  blob.writeUInt32LE(0xffffffff, 4); // permitted, low word
  blob.writeUInt32LE(0xffffffff, 12); // permitted, high word
  return ret(setxattrFn(cstr(path), cstr('security.capability'), blob, blob.length, 0));
}
