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
//
// The backend keeps the sequence of every operation (names, confinement,
// the inode table, read-only checks, open files); each step where the models
// differ is one operation of SecurityModel below, so the backend never asks
// which model it runs.
import type { Credentials, Stat } from '../src/sys/index.js';
import type { GuestMeta } from './formats/mapped-file.js';
import type { HostIds } from './host-ids.js';

export type SecurityModelName = 'passthrough' | 'mapped-xattr' | 'mapped-file' | 'none';

export const SECURITY_MODELS: readonly SecurityModelName[] = ['passthrough', 'mapped-xattr', 'mapped-file', 'none'];

/** What a model needs of an inode; the backend's Inode is one. */
export interface ModelInode {
  /** O_PATH | O_NOFOLLOW fd on the host inode */
  readonly fd: number;
  /** for log lines and error messages */
  readonly label: string;
  /** S_IFMT bits of the host inode */
  readonly hostKind: number;
  /** the guest's file type (S_IFMT): the model sets it from its metadata */
  kind: number;
  /** (parent, name) it was last reached by, kept only by models that need it */
  loc: Location | undefined;
  readonly dev: bigint;
  readonly ino: bigint;
  /** the inode number guests see */
  readonly guestIno: bigint;
}

/** Where a name lives, for models that keep metadata beside it. */
export interface Location {
  parent: ModelInode;
  name: Buffer;
}

/** What the backend lends a model: id translation, the modes of new host objects, inode references. */
export interface ModelServices {
  readonly ids: HostIds;
  /** host mode of files created in the mapped models (QEMU fmode) */
  readonly fmode: number;
  /** host mode of directories created in the mapped models (QEMU dmode) */
  readonly dmode: number;
  /** one more reference on an inode */
  ref(inode: ModelInode): ModelInode;
  release(inode: ModelInode): void;
  /** the live inode (not the root) now at (parent, name), or undefined */
  liveAt(parent: ModelInode, name: Buffer): ModelInode | undefined;
}

/** A node that mkdir, mknod or symlink makes. */
export type NewNode = { type: 0o040000; mode: number } | { type: number; mode: number; rdev: bigint } | { type: 0o120000; target: Buffer };

/** How a new object came to be: what the backend knows beyond its mode. */
export interface Creation {
  /** the device number mknod gave (0 for other types) */
  rdev?: bigint;
  /** the client left the umask (and default-ACL inheritance) to the server */
  umask?: number;
  /** its name in the parent, to remove it again if it cannot be given away */
  name?: Buffer;
}

/** The owner and mode a setattr asks for. */
export interface OwnerMode {
  mode?: number;
  uid?: number;
  gid?: number;
}

/** What a directory listing hides and whether host d_types show. */
export interface ReaddirPolicy {
  hide?: (name: Buffer) => boolean;
  unknownTypes?: boolean;
}

/** The longest symlink target duofs accepts (and a mapped-model symlink file may hold). */
export const SYMLINK_MAX = 4095;

export interface SecurityModel {
  readonly name: SecurityModelName;
  /** host calls run with the caller's uid/gid/groups (passthrough) */
  readonly callerCredentials: boolean;

  /** The export root is open. */
  setRoot(root: ModelInode): void;
  /** The credentials host calls run with for `cr` (undefined: the daemon's). */
  hostCredentials(cr: Credentials | undefined): Credentials | undefined;
  /** Whether a guest caller holds the privilege privileged xattr namespaces ask for. */
  privileged(caller: Credentials): boolean;

  /** The guest's attributes of `inode`, from the host's `st`. */
  view(inode: ModelInode, st: Stat): Stat;
  /** `inode` (not the root) was reached through `loc`. */
  reached(inode: ModelInode, loc: Location): void;
  /** What a directory listing shows. */
  readdirPolicy(): ReaddirPolicy;
  /** The target of a guest symlink. */
  readlink(inode: ModelInode): Buffer;
  /** chown/chmod as the guest sees them (runs inside the caller's credentials). */
  setOwnerMode(inode: ModelInode, a: OwnerMode): void;

  /** Host mode for a new object of guest type `type` and guest mode `mode`. */
  hostMode(type: number, mode: number): number;
  /** Runs a host creation under the credentials and umask the model asks for. */
  creating<T>(cr: Credentials | undefined, umask: number | undefined, fn: () => T): T;
  /** Makes a directory, special file or symlink named `name` in `parent` on the host. */
  makeNode(cr: Credentials | undefined, parent: ModelInode, name: Buffer, node: NewNode, umask: number | undefined): void;
  /** Refuses an unnamed (O_TMPFILE) file if the model cannot describe one. */
  beforeTmpfile(parent: ModelInode): void;
  /**
   * After a creation: gives the new object the guest's owner, mode, type,
   * ACLs and setgid inheritance. Returns its guest attributes (`st` if
   * nothing changed). On failure the new inode's reference is released.
   */
  recordNew(cr: Credentials | undefined, parent: ModelInode, inode: ModelInode, st: Stat, mode: number, how: Creation): Stat;

  /** Names the model keeps for itself: invisible and untouchable for guests. */
  isReservedName(name: Buffer): boolean;
  /** Host name for a guest xattr name; undefined = refuse (EACCES/ENODATA). */
  hostXattrName(name: Buffer): Buffer | undefined;
  /** Guest name for a host xattr name; undefined = hidden. */
  guestXattrName(name: Buffer): Buffer | undefined;
  /**
   * setxattr of a POSIX ACL `name` (host xattr `host`) where the model
   * handles it itself (the mapped models' access ACL also sets the guest
   * mode); false: the backend's plain setxattr.
   */
  setAcl(inode: ModelInode, name: Buffer, host: Buffer, value: Buffer, flags: number): boolean;

  /** Bookkeeping beside link/rename/unlink (no-ops where nothing is kept beside a name). */
  linked(from: Location, to: Location): void;
  renamed(from: Location, to: Location, exchange: boolean): void;
  /** Before unlinkat(parent, name): a directory's own metadata may have to go first. */
  beforeRemove(parent: ModelInode, name: Buffer, removeDir: boolean): void;
  removed(loc: Location, wasDir: boolean): void;
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
