// The structs of linux/fuse.h (protocol 7.39) as the header writes them, and
// a small C layout engine over them: offsets and sizes by the C rules for
// x86-64/aarch64 (every field aligned to its own size, a struct to its
// largest field), and expected bytes built field by field at those offsets.
// The codec tests compare the encoders' output and the size constants with
// this, so a layout is stated twice — once in the codec, once here in the
// header's own words — and the two must agree.

/** Copied from linux/fuse.h (7.38 as installed in /usr/include, plus 7.39's statx structs). */
const FUSE_H = `
struct fuse_attr {
	uint64_t	ino;
	uint64_t	size;
	uint64_t	blocks;
	uint64_t	atime;
	uint64_t	mtime;
	uint64_t	ctime;
	uint32_t	atimensec;
	uint32_t	mtimensec;
	uint32_t	ctimensec;
	uint32_t	mode;
	uint32_t	nlink;
	uint32_t	uid;
	uint32_t	gid;
	uint32_t	rdev;
	uint32_t	blksize;
	uint32_t	flags;
};

struct fuse_sx_time {
	int64_t		tv_sec;
	uint32_t	tv_nsec;
	int32_t		__reserved;
};

struct fuse_statx {
	uint32_t	mask;
	uint32_t	blksize;
	uint64_t	attributes;
	uint32_t	nlink;
	uint32_t	uid;
	uint32_t	gid;
	uint16_t	mode;
	uint16_t	__spare0[1];
	uint64_t	ino;
	uint64_t	size;
	uint64_t	blocks;
	uint64_t	attributes_mask;
	struct fuse_sx_time	atime;
	struct fuse_sx_time	btime;
	struct fuse_sx_time	ctime;
	struct fuse_sx_time	mtime;
	uint32_t	rdev_major;
	uint32_t	rdev_minor;
	uint32_t	dev_major;
	uint32_t	dev_minor;
	uint64_t	__spare2[14];
};

struct fuse_kstatfs {
	uint64_t	blocks;
	uint64_t	bfree;
	uint64_t	bavail;
	uint64_t	files;
	uint64_t	ffree;
	uint32_t	bsize;
	uint32_t	namelen;
	uint32_t	frsize;
	uint32_t	padding;
	uint32_t	spare[6];
};

struct fuse_file_lock {
	uint64_t	start;
	uint64_t	end;
	uint32_t	type;
	uint32_t	pid; /* tgid */
};

struct fuse_entry_out {
	uint64_t	nodeid;		/* Inode ID */
	uint64_t	generation;	/* Inode generation: nodeid:gen must
					   be unique for the fs's lifetime */
	uint64_t	entry_valid;	/* Cache timeout for the name */
	uint64_t	attr_valid;	/* Cache timeout for the attributes */
	uint32_t	entry_valid_nsec;
	uint32_t	attr_valid_nsec;
	struct fuse_attr attr;
};

struct fuse_forget_in {
	uint64_t	nlookup;
};

struct fuse_forget_one {
	uint64_t	nodeid;
	uint64_t	nlookup;
};

struct fuse_batch_forget_in {
	uint32_t	count;
	uint32_t	dummy;
};

struct fuse_getattr_in {
	uint32_t	getattr_flags;
	uint32_t	dummy;
	uint64_t	fh;
};

struct fuse_attr_out {
	uint64_t	attr_valid;	/* Cache timeout for the attributes */
	uint32_t	attr_valid_nsec;
	uint32_t	dummy;
	struct fuse_attr attr;
};

struct fuse_statx_in {
	uint32_t	getattr_flags;
	uint32_t	reserved;
	uint64_t	fh;
	uint32_t	sx_flags;
	uint32_t	sx_mask;
};

struct fuse_statx_out {
	uint64_t	attr_valid;	/* Cache timeout for the attributes */
	uint32_t	attr_valid_nsec;
	uint32_t	flags;
	uint64_t	spare[2];
	struct fuse_statx stat;
};

struct fuse_mknod_in {
	uint32_t	mode;
	uint32_t	rdev;
	uint32_t	umask;
	uint32_t	padding;
};

struct fuse_mkdir_in {
	uint32_t	mode;
	uint32_t	umask;
};

struct fuse_rename_in {
	uint64_t	newdir;
};

struct fuse_rename2_in {
	uint64_t	newdir;
	uint32_t	flags;
	uint32_t	padding;
};

struct fuse_link_in {
	uint64_t	oldnodeid;
};

struct fuse_setattr_in {
	uint32_t	valid;
	uint32_t	padding;
	uint64_t	fh;
	uint64_t	size;
	uint64_t	lock_owner;
	uint64_t	atime;
	uint64_t	mtime;
	uint64_t	ctime;
	uint32_t	atimensec;
	uint32_t	mtimensec;
	uint32_t	ctimensec;
	uint32_t	mode;
	uint32_t	unused4;
	uint32_t	uid;
	uint32_t	gid;
	uint32_t	unused5;
};

struct fuse_open_in {
	uint32_t	flags;
	uint32_t	open_flags;	/* FUSE_OPEN_... */
};

struct fuse_create_in {
	uint32_t	flags;
	uint32_t	mode;
	uint32_t	umask;
	uint32_t	open_flags;	/* FUSE_OPEN_... */
};

struct fuse_open_out {
	uint64_t	fh;
	uint32_t	open_flags;
	uint32_t	padding;
};

struct fuse_release_in {
	uint64_t	fh;
	uint32_t	flags;
	uint32_t	release_flags;
	uint64_t	lock_owner;
};

struct fuse_flush_in {
	uint64_t	fh;
	uint32_t	unused;
	uint32_t	padding;
	uint64_t	lock_owner;
};

struct fuse_read_in {
	uint64_t	fh;
	uint64_t	offset;
	uint32_t	size;
	uint32_t	read_flags;
	uint64_t	lock_owner;
	uint32_t	flags;
	uint32_t	padding;
};

struct fuse_write_in {
	uint64_t	fh;
	uint64_t	offset;
	uint32_t	size;
	uint32_t	write_flags;
	uint64_t	lock_owner;
	uint32_t	flags;
	uint32_t	padding;
};

struct fuse_write_out {
	uint32_t	size;
	uint32_t	padding;
};

struct fuse_statfs_out {
	struct fuse_kstatfs st;
};

struct fuse_fsync_in {
	uint64_t	fh;
	uint32_t	fsync_flags;
	uint32_t	padding;
};

struct fuse_setxattr_in {
	uint32_t	size;
	uint32_t	flags;
	uint32_t	setxattr_flags;
	uint32_t	padding;
};

struct fuse_getxattr_in {
	uint32_t	size;
	uint32_t	padding;
};

struct fuse_getxattr_out {
	uint32_t	size;
	uint32_t	padding;
};

struct fuse_lk_in {
	uint64_t	fh;
	uint64_t	owner;
	struct fuse_file_lock lk;
	uint32_t	lk_flags;
	uint32_t	padding;
};

struct fuse_lk_out {
	struct fuse_file_lock lk;
};

struct fuse_access_in {
	uint32_t	mask;
	uint32_t	padding;
};

struct fuse_init_in {
	uint32_t	major;
	uint32_t	minor;
	uint32_t	max_readahead;
	uint32_t	flags;
	uint32_t	flags2;
	uint32_t	unused[11];
};

struct fuse_init_out {
	uint32_t	major;
	uint32_t	minor;
	uint32_t	max_readahead;
	uint32_t	flags;
	uint16_t	max_background;
	uint16_t	congestion_threshold;
	uint32_t	max_write;
	uint32_t	time_gran;
	uint16_t	max_pages;
	uint16_t	map_alignment;
	uint32_t	flags2;
	uint32_t	unused[7];
};

struct fuse_interrupt_in {
	uint64_t	unique;
};

struct fuse_in_header {
	uint32_t	len;
	uint32_t	opcode;
	uint64_t	unique;
	uint64_t	nodeid;
	uint32_t	uid;
	uint32_t	gid;
	uint32_t	pid;
	uint16_t	total_extlen; /* length of extensions in 8byte units */
	uint16_t	padding;
};

struct fuse_out_header {
	uint32_t	len;
	int32_t		error;
	uint64_t	unique;
};

struct fuse_dirent {
	uint64_t	ino;
	uint64_t	off;
	uint32_t	namelen;
	uint32_t	type;
	char name[];
};

struct fuse_direntplus {
	struct fuse_entry_out entry_out;
	struct fuse_dirent dirent;
};

struct fuse_fallocate_in {
	uint64_t	fh;
	uint64_t	offset;
	uint64_t	length;
	uint32_t	mode;
	uint32_t	padding;
};

struct fuse_lseek_in {
	uint64_t	fh;
	uint64_t	offset;
	uint32_t	whence;
	uint32_t	padding;
};

struct fuse_lseek_out {
	uint64_t	offset;
};

struct fuse_copy_file_range_in {
	uint64_t	fh_in;
	uint64_t	off_in;
	uint64_t	nodeid_out;
	uint64_t	fh_out;
	uint64_t	off_out;
	uint64_t	len;
	uint64_t	flags;
};

struct fuse_syncfs_in {
	uint64_t	padding;
};

struct fuse_ext_header {
	uint32_t	size;
	uint32_t	type;
};

struct fuse_supp_groups {
	uint32_t	nr_groups;
	uint32_t	groups[];
};
`;

type Scalar = 'u8' | 'u16' | 'u32' | 'i32' | 'u64' | 'i64';
const scalarOf: Record<string, Scalar> = {
  char: 'u8',
  uint16_t: 'u16',
  uint32_t: 'u32',
  int32_t: 'i32',
  uint64_t: 'u64',
  int64_t: 'i64',
};
const scalarSize: Record<Scalar, number> = { u8: 1, u16: 2, u32: 4, i32: 4, u64: 8, i64: 8 };

/** A scalar field of a struct, nested structs flattened: `stat.atime.tv_sec`, arrays as `spare[1]`. */
export interface Field {
  name: string;
  type: Scalar;
  offset: number;
}

interface Layout {
  size: number;
  align: number;
  fields: Field[];
}

const bodies = new Map<string, string>();
for (const m of FUSE_H.replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/struct (\w+) \{([^}]*)\};/g)) bodies.set(m[1]!, m[2]!);

const layouts = new Map<string, Layout>();

export function layout(struct: string): Layout {
  const known = layouts.get(struct);
  if (known) return known;
  const body = bodies.get(struct);
  if (body === undefined) throw new Error(`struct ${struct} is not in the copy of fuse.h`);
  const fields: Field[] = [];
  let off = 0;
  let align = 1;
  for (const line of body
    .split(';')
    .map((l) => l.trim())
    .filter(Boolean)) {
    const m = /^(struct\s+\w+|\w+)\s+(\w+)(?:\[(\d*)\])?$/.exec(line.replace(/\s+/g, ' '));
    if (!m) throw new Error(`struct ${struct}: cannot read "${line}"`);
    const [, type, name, count] = m as unknown as [string, string, string, string | undefined];
    const n = count === undefined ? 1 : count === '' ? 0 : Number(count);
    const inner = type.startsWith('struct ') ? layout(type.slice(7)) : undefined;
    const scalar = inner ? undefined : scalarOf[type];
    if (!inner && !scalar) throw new Error(`struct ${struct}: unknown type ${type}`);
    const size = inner ? inner.size : scalarSize[scalar!];
    const a = inner ? inner.align : size;
    off = Math.ceil(off / a) * a;
    align = Math.max(align, a);
    for (let i = 0; i < n; i++) {
      const at = off + i * size;
      const label = count === undefined ? name : `${name}[${i}]`;
      if (inner) for (const f of inner.fields) fields.push({ name: `${label}.${f.name}`, type: f.type, offset: at + f.offset });
      else fields.push({ name: label, type: scalar!, offset: at });
    }
    off += n * size;
  }
  const l = { size: Math.ceil(off / align) * align, align, fields };
  layouts.set(struct, l);
  return l;
}

/** sizeof(struct `struct`) */
export const sizeOf = (struct: string): number => layout(struct).size;

/** offsetof(struct `struct`, `field`) (a flattened name, e.g. `attr.mode`) */
export function offsetOf(struct: string, field: string): number {
  const f = layout(struct).fields.find((x) => x.name === field || x.name === `${field}[0]`);
  if (!f) throw new Error(`struct ${struct} has no field ${field}`);
  return f.offset;
}

/**
 * The bytes of `struct` with the given fields set (little-endian, the rest
 * zero). Every name must be a field of the struct; `tail` follows the
 * fixed part (a dirent's name and padding).
 */
export function build(struct: string, values: Record<string, number | bigint>, tail: Buffer = Buffer.alloc(0)): Buffer {
  const l = layout(struct);
  const b = Buffer.alloc(l.size);
  for (const [name, v] of Object.entries(values)) {
    const f = l.fields.find((x) => x.name === name);
    if (!f) throw new Error(`struct ${struct} has no field ${name}`);
    switch (f.type) {
      case 'u8':
        b.writeUInt8(Number(v), f.offset);
        break;
      case 'u16':
        b.writeUInt16LE(Number(v), f.offset);
        break;
      case 'u32':
        b.writeUInt32LE(Number(v), f.offset);
        break;
      case 'i32':
        b.writeInt32LE(Number(v), f.offset);
        break;
      case 'u64':
        b.writeBigUInt64LE(BigInt(v), f.offset);
        break;
      case 'i64':
        b.writeBigInt64LE(BigInt(v), f.offset);
        break;
    }
  }
  return Buffer.concat([b, tail]);
}

/** Every scalar field of `struct`, in order (what a decoder must read, and what runs short first). */
export const fieldsOf = (struct: string): Field[] => layout(struct).fields;
