// The inode table: one entry per live host inode, keyed by (st_dev, st_ino),
// holding an O_PATH fd and a reference count. 9P fids and FUSE node ids both
// point here; an entry (and its fd) goes away when the last reference does.
import { close, fstat, type Stat, S_IFMT } from '../sys/index.js';
import type { InoMap } from './ino-map.js';

export class Inode {
  /** references held by fids, FUSE lookups and internal users */
  refs = 0;
  /**
   * The guest's file type (S_IFMT). Equal to hostKind except in the mapped
   * models, where symlinks, devices, FIFOs and sockets are regular host files.
   */
  kind: number;
  /** (parent, name) it was last reached by, kept only when the model needs it */
  loc: { parent: Inode; name: Buffer } | undefined;

  constructor(
    /** stable small id; the export root is 1 (FUSE_ROOT_ID) */
    readonly id: number,
    /** O_PATH | O_NOFOLLOW fd on the host inode */
    readonly fd: number,
    readonly dev: bigint,
    readonly ino: bigint,
    /** S_IFMT bits of the host inode */
    readonly hostKind: number,
    /** the inode number guests see (qid path, st_ino) */
    readonly guestIno: bigint,
  ) {
    this.kind = hostKind;
  }

  get isDir(): boolean {
    return this.kind === 0o040000;
  }

  get isSymlink(): boolean {
    return this.kind === 0o120000;
  }

  /** For log lines and error messages. */
  get label(): string {
    return `inode ${this.guestIno}`;
  }
}

export class InodeTable {
  private readonly byKey = new Map<string, Inode>();
  private readonly byId = new Map<number, Inode>();
  private nextId = 1;

  constructor(private readonly inoMap: InoMap) {}

  get size(): number {
    return this.byKey.size;
  }

  /**
   * Takes ownership of `fd` (an O_PATH fd whose stat is `st`) and returns the
   * table's inode for it with one more reference. If the inode is already
   * known, `fd` is closed and the existing entry is used.
   */
  intern(fd: number, st: Stat): Inode {
    const key = `${st.dev}:${st.ino}`;
    let inode = this.byKey.get(key);
    if (inode) {
      close(fd);
      inode.refs++;
      return inode;
    }
    inode = new Inode(this.nextId++, fd, st.dev, st.ino, st.mode & S_IFMT, this.inoMap.guestIno(st.dev, st.ino));
    this.byKey.set(key, inode);
    this.byId.set(inode.id, inode);
    inode.refs++;
    return inode;
  }

  /** Interns an fd whose stat is not yet known. */
  internFd(fd: number, what: string): { inode: Inode; stat: Stat } {
    let st: Stat;
    try {
      st = fstat(fd, what);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { inode: this.intern(fd, st), stat: st };
  }

  /** The live entry for a host (dev, ino), if any. */
  find(dev: bigint, ino: bigint): Inode | undefined {
    return this.byKey.get(`${dev}:${ino}`);
  }

  get(id: number): Inode | undefined {
    return this.byId.get(id);
  }

  ref(inode: Inode, n = 1): void {
    inode.refs += n;
  }

  /** Drops `n` references; at zero the entry is removed and its fd closed. */
  unref(inode: Inode, n = 1): void {
    inode.refs -= n;
    if (inode.refs > 0) return;
    inode.refs = 0;
    if (this.byId.get(inode.id) !== inode) return;
    this.byId.delete(inode.id);
    this.byKey.delete(`${inode.dev}:${inode.ino}`);
    close(inode.fd);
    const parent = inode.loc?.parent;
    inode.loc = undefined;
    if (parent) this.unref(parent);
  }
}
