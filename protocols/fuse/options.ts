// FUSE session options as operators give them (virtiofsd's names).

export type CacheMode = 'auto' | 'always' | 'metadata' | 'never';

export interface FuseOptions {
  cache: CacheMode;
  /** let the guest kernel cache writes (FUSE_WRITEBACK_CACHE) */
  writeback: boolean;
  /** pass extended attributes through; off = ENOSYS like virtiofsd without --xattr */
  xattr: boolean;
  /** a distinct st_dev per host filesystem inside the export (FUSE_SUBMOUNTS) */
  announceSubmounts: boolean;
  /** largest WRITE/READ payload */
  maxWrite: number;
}

export const defaultFuseOptions: FuseOptions = {
  cache: 'auto',
  writeback: false,
  xattr: false,
  announceSubmounts: false,
  maxWrite: 1024 * 1024,
};

/** Entry/attribute timeouts in seconds for a cache mode, as virtiofsd sets them. */
export function timeouts(mode: CacheMode): { entry: number; attr: number } {
  switch (mode) {
    case 'never': return { entry: 0, attr: 0 };
    case 'auto': return { entry: 1, attr: 1 };
    case 'metadata':
    case 'always': return { entry: 86400, attr: 86400 };
  }
}
