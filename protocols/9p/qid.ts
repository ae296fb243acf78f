// qids from host stat: type from the file type, path from the remapped
// inode number, version as QEMU computes it (mtime ^ size << 8), which
// v9fs uses to notice that a cached file changed.
import { S_IFDIR, S_IFLNK, S_IFMT, type Stat } from '../../src/sys/index.js';
import type { Inode } from '../../src/backend/api.js';
import { QTDIR, QTFILE, QTSYMLINK } from './constants.js';
import type { Qid } from './wire.js';

export function qidType(mode: number): number {
  const t = mode & S_IFMT;
  return t === S_IFDIR ? QTDIR : t === S_IFLNK ? QTSYMLINK : QTFILE;
}

export function qidOf(inode: Inode, st: Stat): Qid {
  return {
    type: qidType(st.mode),
    version: Number((BigInt(st.mtime.sec) ^ (BigInt(st.size) << 8n)) & 0xffffffffn),
    path: inode.guestIno,
  };
}
