// The sys layer: typed Linux syscalls through koffi; every failure is a SysError.
export * from './errno.js';
export * from './constants.js';
export * from './fs.js';
export * from './stat.js';
export * from './dirents.js';
export * from './xattr.js';
export * from './locks.js';
export * from './creds.js';
export * from './handles.js';
export * from './rlimit.js';
export * from './mount.js';
export * from './memory.js';
export * from './vectored.js';
