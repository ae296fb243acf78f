// virtiofsd-style id translation between guest and host ids
// (--translate-uid/--translate-gid), for the host-truth models.
import { Errno, fail, type Credentials, type Stat } from '../src/sys/index.js';
import { ForbiddenIdError, type IdMap } from './id-map.js';

export class HostIds {
  constructor(
    private readonly uidMap: IdMap | undefined,
    private readonly gidMap: IdMap | undefined,
  ) {}

  /** A guest uid as the host's (EPERM if forbidden). */
  hostUid(id: number): number {
    return translate(this.uidMap, id, 'uid');
  }

  hostGid(id: number): number {
    return translate(this.gidMap, id, 'gid');
  }

  /** A caller's credentials as the host's. */
  hostCredentials(cr: Credentials | undefined): Credentials | undefined {
    if (!cr || (!this.uidMap && !this.gidMap)) return cr;
    return { uid: this.hostUid(cr.uid), gid: this.hostGid(cr.gid), groups: cr.groups.map((g) => this.hostGid(g)) };
  }

  /** A host stat's owner as the guest's. */
  guestStat(st: Stat): Stat {
    if (!this.uidMap && !this.gidMap) return st;
    return { ...st, uid: this.uidMap?.toGuest(st.uid) ?? st.uid, gid: this.gidMap?.toGuest(st.gid) ?? st.gid };
  }
}

function translate(map: IdMap | undefined, id: number, what: string): number {
  if (!map || id === 0xffffffff) return id;
  try {
    return map.toHost(id);
  } catch (e) {
    if (e instanceof ForbiddenIdError) fail(Errno.EPERM, 'id translation', `guest ${what} ${id} is forbidden`);
    throw e;
  }
}
