// Just enough FUSE wire format to talk to virtiofsd from the test frontend.
export const FUSE_OPCODE = { GETATTR: 3, INIT: 26 } as const;

/** A FUSE_INIT request (in header + fuse_init_in, protocol 7.38). */
export function fuseInit(unique: bigint): Buffer {
  const b = Buffer.alloc(40 + 64);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(FUSE_OPCODE.INIT, 4);
  b.writeBigUInt64LE(unique, 8);
  b.writeUInt32LE(7, 40); // major
  b.writeUInt32LE(38, 44); // minor
  b.writeUInt32LE(128 * 1024, 48); // max_readahead
  return b;
}

export function parseFuseInitReply(b: Buffer): { len: number; error: number; unique: bigint; major: number; minor: number } {
  return { len: b.readUInt32LE(0), error: b.readInt32LE(4), unique: b.readBigUInt64LE(8), major: b.readUInt32LE(16), minor: b.readUInt32LE(20) };
}
