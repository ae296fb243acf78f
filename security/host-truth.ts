// passthrough and none: the host inode is the guest's view; no metadata.
import {
  AT_REMOVEDIR,
  Errno,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  fail,
  fchmodPathFd,
  fchownFd,
  fstat,
  mkdirat,
  mknodat,
  readlinkFd,
  symlinkat,
  umask as umaskSet,
  unlinkat,
  withCredentials,
  type Credentials,
  type Stat,
} from '../src/sys/index.js';
import type { Creation, Location, ModelInode, ModelServices, NewNode, OwnerMode, ReaddirPolicy, SecurityModel, SecurityModelName } from './model.js';

abstract class HostTruthModel implements SecurityModel {
  abstract readonly name: Extract<SecurityModelName, 'passthrough' | 'none'>;
  abstract readonly callerCredentials: boolean;

  constructor(protected readonly svc: ModelServices) {}

  abstract hostCredentials(cr: Credentials | undefined): Credentials | undefined;
  abstract recordNew(cr: Credentials | undefined, parent: ModelInode, inode: ModelInode, st: Stat, mode: number, how: Creation): Stat;

  setRoot(): void {}

  privileged(caller: Credentials): boolean {
    try {
      return this.svc.ids.hostUid(caller.uid) === 0;
    } catch {
      return false; // a forbidden id is nobody's root
    }
  }

  view(_inode: ModelInode, st: Stat): Stat {
    return this.svc.ids.guestStat(st);
  }

  reached(): void {}

  readdirPolicy(): ReaddirPolicy {
    return {};
  }

  readlink(inode: ModelInode): Buffer {
    return readlinkFd(inode.fd, inode.label);
  }

  setOwnerMode(inode: ModelInode, a: OwnerMode): void {
    const { ids } = this.svc;
    if (a.uid !== undefined || a.gid !== undefined) {
      fchownFd(inode.fd, a.uid === undefined ? -1 : ids.hostUid(a.uid), a.gid === undefined ? -1 : ids.hostGid(a.gid), inode.label);
    }
    if (a.mode !== undefined) {
      if (inode.kind === S_IFLNK) fail(Errno.EOPNOTSUPP, 'chmod', inode.label);
      fchmodPathFd(inode.fd, a.mode & 0o7777, inode.label);
    }
  }

  hostMode(_type: number, mode: number): number {
    return mode & 0o7777;
  }

  /**
   * Runs a host creation with the client's umask in force when it left the
   * umask to the server (the host kernel then applies a default ACL
   * instead, as it would locally).
   */
  creating<T>(cr: Credentials | undefined, umask: number | undefined, fn: () => T): T {
    if (umask === undefined) return withCredentials(this.hostCredentials(cr), fn);
    const old = umaskSet(umask & 0o777);
    try {
      return withCredentials(this.hostCredentials(cr), fn);
    } finally {
      umaskSet(old);
    }
  }

  makeNode(cr: Credentials | undefined, parent: ModelInode, name: Buffer, node: NewNode, umask: number | undefined): void {
    if ('target' in node) withCredentials(this.hostCredentials(cr), () => symlinkat(node.target, parent.fd, name));
    else if (node.type === S_IFDIR) this.creating(cr, umask, () => mkdirat(parent.fd, name, node.mode & 0o7777));
    else this.creating(cr, umask, () => mknodat(parent.fd, name, node.type | (node.mode & 0o7777), 'rdev' in node ? node.rdev : 0n));
  }

  beforeTmpfile(): void {}

  isReservedName(): boolean {
    return false;
  }

  hostXattrName(name: Buffer): Buffer {
    return name;
  }

  guestXattrName(name: Buffer): Buffer {
    return name;
  }

  setAcl(): boolean {
    return false;
  }

  linked(_from: Location, _to: Location): void {}
  renamed(_from: Location, _to: Location, _exchange: boolean): void {}
  beforeRemove(): void {}
  removed(): void {}
}

/** Requests run with the caller's ids (after --translate-uid/--translate-gid). */
export class PassthroughModel extends HostTruthModel {
  readonly name = 'passthrough' as const;
  readonly callerCredentials = true;

  /**
   * The caller's credentials, and the daemon's for a caller whose own kernel
   * has checked permissions (clientChecked; forbidden ids are still refused).
   */
  hostCredentials(cr: Credentials | undefined): Credentials | undefined {
    if (cr?.clientChecked) {
      this.svc.ids.hostUid(cr.uid);
      this.svc.ids.hostGid(cr.gid);
      return undefined;
    }
    return this.svc.ids.hostCredentials(cr);
  }

  /** A clientChecked caller: the daemon created it, now it becomes the caller's (QEMU's 9p). */
  recordNew(cr: Credentials | undefined, parent: ModelInode, inode: ModelInode, st: Stat, mode: number, how: Creation): Stat {
    if (!cr?.clientChecked) return st;
    return this.giveToCaller(parent, inode, cr, mode, how.name);
  }

  /**
   * What QEMU's passthrough does after creating as root: chown the new
   * object to the ids the request names, then set the mode it names (chown
   * clears setuid/setgid, mkdir(2) drops setgid; symlinks have no mode of
   * their own). Calls that would change nothing are skipped. If that fails,
   * the object is removed again and the error is the request's.
   */
  private giveToCaller(parent: ModelInode, inode: ModelInode, cr: Credentials, mode: number, name: Buffer | undefined): Stat {
    try {
      const uid = this.svc.ids.hostUid(cr.uid);
      const gid = this.svc.ids.hostGid(cr.gid);
      let st = fstat(inode.fd, inode.label);
      if (st.uid !== uid || st.gid !== gid) {
        fchownFd(inode.fd, uid, gid, inode.label);
        st = fstat(inode.fd, inode.label);
      }
      if ((mode & S_IFMT) !== S_IFLNK && (st.mode & 0o7777) !== (mode & 0o7777)) fchmodPathFd(inode.fd, mode & 0o7777, inode.label);
    } catch (err) {
      if (name) {
        try {
          unlinkat(parent.fd, name, (mode & S_IFMT) === S_IFDIR ? AT_REMOVEDIR : 0);
        } catch {
          // gone already, or replaced: leave it
        }
      }
      this.svc.release(inode);
      throw err;
    }
    return this.view(inode, fstat(inode.fd, inode.label));
  }
}

/** The daemon's ids; new objects get the caller's where the host allows it. */
export class NoneModel extends HostTruthModel {
  readonly name = 'none' as const;
  readonly callerCredentials = false;

  hostCredentials(): undefined {
    return undefined;
  }

  /** QEMU's none model: give the object the caller's ids where the host allows it, and ignore a refusal. */
  recordNew(cr: Credentials | undefined, _parent: ModelInode, inode: ModelInode, st: Stat): Stat {
    if (!cr) return st;
    try {
      fchownFd(inode.fd, this.svc.ids.hostUid(cr.uid), this.svc.ids.hostGid(cr.gid), inode.label);
      return this.view(inode, fstat(inode.fd, inode.label));
    } catch {
      return st; // not permitted: the daemon keeps owning it
    }
  }
}
