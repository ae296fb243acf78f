// The host's user and group database (/etc/passwd, /etc/group), for turning
// a 9P attach (a numeric uid or a user name) into the credentials a request
// runs with: uid, primary gid and supplementary groups, as login would.
import { readFileSync } from 'node:fs';
import type { Credentials } from '../src/sys/index.js';

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

function readLines(path: string): string[][] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split(':'));
  } catch {
    return [];
  }
}

export class HostUsers {
  private readonly cache = new Map<string, Credentials>();
  /** the files as read when the process entered its sandbox (after that, "/etc" is the export's) */
  private frozen: { passwd: string[][]; group: string[][] } | undefined;

  constructor(
    private readonly passwdPath = '/etc/passwd',
    private readonly groupPath = '/etc/group',
  ) {}

  /**
   * Reads both files now and never again: called before the root changes to
   * the export, where /etc/passwd would be a file a guest writes.
   */
  freeze(): void {
    this.frozen = { passwd: readLines(this.passwdPath), group: readLines(this.groupPath) };
  }

  private passwd(): PasswdEntry[] {
    return (this.frozen?.passwd ?? readLines(this.passwdPath))
      .filter((f) => f.length >= 4)
      .map((f) => ({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) }))
      .filter((e) => Number.isInteger(e.uid) && Number.isInteger(e.gid));
  }

  private groupsOf(name: string, primary: number): number[] {
    const gids = new Set<number>([primary]);
    for (const f of this.frozen?.group ?? readLines(this.groupPath)) {
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
    if (this.frozen) return; // no fresher copy can be had
    this.cache.clear();
  }
}
