// Linux errno numbers (x86_64/generic) and the one error type every layer
// below the protocols throws. Front-ends map `errno` straight onto Rlerror
// or a negative FUSE error, so it must always be a real Linux errno.

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  EBADFD: 77,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  ENOBUFS: 105,
  EADDRINUSE: 98,
  ECONNREFUSED: 111,
  ESTALE: 116,
  EDQUOT: 122,
  ECANCELED: 125,
} as const;

export type ErrnoName = keyof typeof Errno;

const names = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}

/**
 * A failed operation: which operation, on which object, and the errno.
 * `object` is for humans (a decoded name or a description); never parse it.
 */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly op: string;
  readonly object: string | undefined;

  constructor(errno: number, op: string, object?: string) {
    const code = errnoName(errno);
    super(object === undefined ? `${op}: ${code}` : `${op} ${object}: ${code}`);
    this.name = 'SysError';
    this.errno = errno;
    this.code = code;
    this.op = op;
    this.object = object;
  }
}

export function isSysError(e: unknown, errno?: number): e is SysError {
  return e instanceof SysError && (errno === undefined || e.errno === errno);
}

/** Throws a SysError with `errno` (shorthand for protocol-level checks). */
export function fail(errno: number, op: string, object?: string): never {
  throw new SysError(errno, op, object);
}
