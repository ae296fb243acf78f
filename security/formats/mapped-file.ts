// QEMU's mapped-file on-disk format: the guest's view of <dir>/<name> lives
// in the text file <dir>/.virtfs_metadata/<name> (the export root's in
// <root>/.virtfs_metadata_root), lines "virtfs.uid=%d" etc. QEMU reads them
// with atoi() and writes every field it knows on each update, so a parse
// keeps what is valid and reports the rest.

export const METADATA_DIR = Buffer.from('.virtfs_metadata');
export const METADATA_ROOT = Buffer.from('.virtfs_metadata_root');
/** QEMU creates the metadata directory 0700 and each file 0600. */
export const METADATA_DIR_MODE = 0o700;
export const METADATA_FILE_MODE = 0o600;
/** Larger files are not metadata QEMU wrote; refuse to read them whole. */
export const METADATA_MAX_BYTES = 4096;

export interface GuestMeta {
  uid?: number;
  gid?: number;
  /** full st_mode including S_IFMT */
  mode?: number;
  /** glibc makedev() encoding; QEMU's %d keeps only the low 32 bits */
  rdev?: bigint;
}

export interface ParsedMeta {
  meta: GuestMeta;
  /** lines that could not be used, for one log line */
  problems: string[];
}

const KEYS = ['uid', 'gid', 'mode', 'rdev'] as const;

export function isMetadataName(name: Buffer): boolean {
  return name.equals(METADATA_DIR) || name.equals(METADATA_ROOT);
}

export function parseMetadata(text: Buffer): ParsedMeta {
  const meta: GuestMeta = {};
  const problems: string[] = [];
  if (text.length > METADATA_MAX_BYTES) return { meta, problems: [`${text.length} bytes is too large`] };
  for (const line of text.toString('latin1').split('\n')) {
    if (line === '') continue;
    const m = /^virtfs\.(uid|gid|mode|rdev)=(-?\d{1,11})$/.exec(line);
    if (!m) {
      problems.push(`unreadable line ${JSON.stringify(line.slice(0, 60))}`);
      continue;
    }
    const n = Number(m[2]);
    if (n < -2147483648 || n > 4294967295) {
      problems.push(`${m[1]} ${m[2]} out of range`);
      continue;
    }
    const u = n < 0 ? n + 0x100000000 : n + 0; // %d of an unsigned value; + 0 turns "-0" into 0
    const key = m[1] as (typeof KEYS)[number];
    if (key === 'rdev') meta.rdev = BigInt(u);
    else meta[key] = u;
  }
  return { meta, problems };
}

/** The file QEMU would write: only the fields that are set, in its order. */
export function formatMetadata(meta: GuestMeta): Buffer {
  let s = '';
  const i32 = (v: number): number => (v > 0x7fffffff ? v - 0x100000000 : v);
  if (meta.uid !== undefined) s += `virtfs.uid=${i32(meta.uid)}\n`;
  if (meta.gid !== undefined) s += `virtfs.gid=${i32(meta.gid)}\n`;
  if (meta.mode !== undefined) s += `virtfs.mode=${i32(meta.mode)}\n`;
  if (meta.rdev !== undefined) s += `virtfs.rdev=${i32(Number(meta.rdev & 0xffffffffn))}\n`;
  return Buffer.from(s, 'latin1');
}
