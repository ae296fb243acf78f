// The one rule for stored guest metadata: it must agree with the host object
// it describes. The mapped models store symlinks, devices, FIFOs and sockets
// as regular host files and keep directories as directories, so a stored
// mode may give a host regular file any type but directory, a host directory
// only its own, and a host object of another type (one made outside the
// model) only that type. Metadata that breaks the rule is not used: the
// server shows the host's values (and says why), the converter leaves the
// object alone (and says why).
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from '../src/sys/index.js';

/** The file types a guest mode may name. */
export const KIND_NAMES: Readonly<Record<number, string>> = {
  [S_IFDIR]: 'directory',
  [S_IFREG]: 'regular',
  [S_IFLNK]: 'symlink',
  [S_IFCHR]: 'char-device',
  [S_IFBLK]: 'block-device',
  [S_IFIFO]: 'fifo',
  [S_IFSOCK]: 'socket',
};

/** Why a stored `mode` cannot describe a host object of type `hostKind` (S_IFMT bits), or undefined if it can. */
export function metadataMisfit(hostKind: number, mode: number): string | undefined {
  const t = mode & S_IFMT;
  if (t === 0 || !(t in KIND_NAMES)) return `metadata mode 0${mode.toString(8)} has no valid file type`;
  if (hostKind === S_IFDIR) return t === S_IFDIR ? undefined : `metadata says ${KIND_NAMES[t]} but the host file is a directory`;
  if (hostKind === S_IFREG) return t === S_IFDIR ? 'metadata says directory but the host file is a regular file' : undefined;
  return t === hostKind ? undefined : `metadata says ${KIND_NAMES[t]} but the host file is a ${KIND_NAMES[hostKind] ?? 'special file'}`;
}
