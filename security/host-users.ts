// The host's user and group database (/etc/passwd, /etc/group), for turning
// a 9P attach (a numeric uid or a user name) into the credentials a request
// runs with: uid, primary gid and supplementary groups, as login would.
import { readFileSync } from 'node:fs';
import type { Credentials } from '../src/sys/index.js';

interface PasswdEntry { name: string; uid: number; gid: number }

function readLines(path: string): string[][] {
  try {
    return readFileSync(path, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
  } catch {
    return [];
  }
}

export class HostUsers {
  private readonly cache = new Map<string, Credentials>();

  constructor(private readonly passwdPath = '/etc/passwd', private readonly groupPath = '/etc/group') {}

  private passwd(): PasswdEntry[] {
    return readLines(this.passwdPath)
      .filter((f) => f.length >= 4)
      .map((f) => ({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) }))
      .filter((e) => Number.isInteger(e.uid) && Number.isInteger(e.gid));
  }

  private groupsOf(name: string, primary: number): number[] {
    const gids = new Set<number>([primary]);
    for (const f of readLines(this.groupPath)) {
      if (f.length < 4) continue;
      const gid = Number(f[2]);
      if (Number.isInteger(gid) && f[3]!.split(',').includes(name)) gids.add(gid);
    }
    return [...gids];
  }

  /**
   * Credentials for a numeric uid. A uid the host does not know keeps its
   * number, with gid = uid (the common guest convention) and no other groups.
   */
  byUid(uid: number): Credentials {
    const key = `u${uid}`;
    let cr = this.cache.get(key);
    if (!cr) {
      const e = this.passwd().find((p) => p.uid === uid);
      cr = e ? { uid, gid: e.gid, groups: this.groupsOf(e.name, e.gid) } : { uid, gid: uid, groups: [uid] };
      this.cache.set(key, cr);
    }
    return cr;
  }

  /** Credentials for a user name, or undefined when the host has no such user. */
  byName(name: string): Credentials | undefined {
    const e = this.passwd().find((p) => p.name === name);
    return e ? this.byUid(e.uid) : undefined;
  }

  /** Attach can happen long after start: forget what was read. */
  reload(): void {
    this.cache.clear();
  }
}
