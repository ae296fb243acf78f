// Security models: how guest owners, modes and device numbers map onto the
// host, exactly as QEMU's `-fsdev local,security_model=...` does it, so one
// export can be served by QEMU's 9p and by duofs (9p and virtio-fs) in turn.
//
//  passthrough   host inode is the truth; requests run with the caller's ids
//  none          host inode is the truth; the daemon's ids; chown-at-create
//                failures are ignored
//  mapped-xattr  the daemon owns host files; the guest view is in
//                user.virtfs.* xattrs (security/formats/mapped-xattr.ts)
//  mapped-file   the same view in .virtfs_metadata/ files (formats/mapped-file.ts)
import type { Credentials, Stat } from '../src/sys/index.js';
import type { Inode } from '../src/backend/inode-table.js';
import type { GuestMeta } from './formats/mapped-file.js';

export type SecurityModelName = 'passthrough' | 'mapped-xattr' | 'mapped-file' | 'none';

export const SECURITY_MODELS: readonly SecurityModelName[] = ['passthrough', 'mapped-xattr', 'mapped-file', 'none'];

/** Where a name lives, for models that keep metadata beside it. */
export interface Location {
  parent: Inode;
  name: Buffer;
}

/** What a guest asked a new object to be. */
export interface NewObject {
  uid: number;
  gid: number;
  /** full st_mode, S_IFMT included */
  mode: number;
  rdev?: bigint;
}

export interface SecurityModel {
  readonly name: SecurityModelName;
  /** passthrough: host calls run with the caller's uid/gid/groups */
  readonly callerCredentials: boolean;
  /** the model needs each inode's (parent, name) (mapped-file) */
  readonly tracksLocation: boolean;
  /** the model stores special files and symlinks as regular host files */
  readonly mapsFileTypes: boolean;

  /** The guest's metadata for an inode, or {} where the host's values show. */
  readMeta(inode: Inode, loc: Location | undefined): GuestMeta;
  /** Merges `meta` into the stored metadata. */
  writeMeta(inode: Inode, loc: Location | undefined, meta: GuestMeta): void;

  /** Names the model keeps for itself: invisible and untouchable for guests. */
  isReservedName(name: Buffer): boolean;
  /** Host name for a guest xattr name; undefined = refuse (EACCES/ENODATA). */
  hostXattrName(name: Buffer): Buffer | undefined;
  /** Guest name for a host xattr name; undefined = hidden. */
  guestXattrName(name: Buffer): Buffer | undefined;

  /** mapped-file bookkeeping beside link/rename/unlink (no-ops elsewhere). */
  linked(from: Location, to: Location): void;
  renamed(from: Location, to: Location, exchange: boolean): void;
  removed(loc: Location, wasDir: boolean, dirInode: Inode | undefined): void;
}

/** Applies stored metadata to a host stat: the guest's view. */
export function applyMeta(st: Stat, meta: GuestMeta): Stat {
  if (meta.uid === undefined && meta.gid === undefined && meta.mode === undefined && meta.rdev === undefined) return st;
  return {
    ...st,
    uid: meta.uid ?? st.uid,
    gid: meta.gid ?? st.gid,
    mode: meta.mode ?? st.mode,
    rdev: meta.rdev ?? st.rdev,
  };
}

export const sameCredentials = (cr: Credentials | undefined): Credentials | undefined => cr;
