// The FUSE session's migration state (virtio-fs SET_DEVICE_STATE_FD): a
// versioned binary blob, documented in docs/live-migration.md. Everything
// is little-endian; the blob ends in a SHA-256 of all bytes before it.
//
// A loaded blob is hostile input: every count and length is bounded before
// anything is allocated, every field is range-checked, duplicates and
// dangling references are refused, and any failure is a StateError naming
// the field, so the destination refuses the state (CHECK_DEVICE_STATE fails)
// rather than serving a wrong file.
import { createHash } from 'node:crypto';

export const STATE_MAGIC = Buffer.from('DUOFSFS\0', 'latin1');
export const STATE_VERSION = 1;
/** A state above this size is refused (about a million nodes with long paths). */
export const MAX_STATE_BYTES = 64 * 1024 * 1024;
export const MAX_NODES = 1 << 20;
export const MAX_HANDLES = 1 << 20;
/** PATH_MAX: a longer path could not be opened on the destination anyway. */
export const MAX_PATH_BYTES = 4096;
const NAME_MAX = 255;
const DIGEST = 32;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export const NODE_FOUND = 0;
/** The source could not find a path (--migration-on-error=guest-error): the node answers EIO on the destination. */
export const NODE_LOST = 1;

export interface NodeState {
  nodeid: bigint;
  lookups: bigint;
  status: typeof NODE_FOUND | typeof NODE_LOST;
  dev: bigint;
  ino: bigint;
  /** S_IFMT bits */
  kind: number;
  /** path components from the export root; empty for the root (and for lost nodes) */
  path: Buffer[];
}

export const HANDLE_FILE = 1;
export const HANDLE_DIR = 2;
/** A handle an earlier migration already lost: EIO on the destination too. */
export const HANDLE_LOST = 3;

export interface HandleState {
  fh: bigint;
  nodeid: bigint;
  type: typeof HANDLE_FILE | typeof HANDLE_DIR | typeof HANDLE_LOST;
  /** open(2) flags the file was opened with (O_TRUNC, O_CREAT, O_EXCL are dropped on reopen) */
  flags: number;
}

export interface SessionState {
  /** negotiated FUSE minor version */
  minor: number;
  /** negotiated INIT flags (flags | flags2 << 32) */
  initFlags: bigint;
  /** next file handle the session hands out */
  nextFh: bigint;
  nodes: NodeState[];
  handles: HandleState[];
}

export class StateError extends Error {
  override name = 'StateError';
}

class Writer {
  private readonly parts: Buffer[] = [];
  u8(v: number): void {
    this.parts.push(Buffer.from([v]));
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.parts.push(b);
  }
  u64(v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    this.parts.push(b);
  }
  bytes(b: Buffer): void {
    this.parts.push(b);
  }
  done(): Buffer {
    const body = Buffer.concat(this.parts);
    return Buffer.concat([body, createHash('sha256').update(body).digest()]);
  }
}

class Reader {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  private need(n: number, field: string): void {
    if (this.at + n > this.b.length)
      throw new StateError(`migration state truncated: ${field} needs ${n} bytes at offset ${this.at}, ${this.b.length - this.at} left`);
  }
  u8(field: string): number {
    this.need(1, field);
    return this.b[this.at++]!;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.b.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }
  u64(field: string): bigint {
    this.need(8, field);
    const v = this.b.readBigUInt64LE(this.at);
    this.at += 8;
    return v;
  }
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = Buffer.from(this.b.subarray(this.at, this.at + n));
    this.at += n;
    return v;
  }
  get remaining(): number {
    return this.b.length - this.at;
  }
}

const SLASH = Buffer.from('/');

export function encodeState(s: SessionState): Buffer {
  const w = new Writer();
  w.bytes(STATE_MAGIC);
  w.u32(STATE_VERSION);
  w.u32(s.minor);
  w.u64(s.initFlags);
  w.u64(s.nextFh);
  w.u32(s.nodes.length);
  for (const n of s.nodes) {
    w.u64(n.nodeid);
    w.u64(n.lookups);
    w.u8(n.status);
    w.u64(n.dev);
    w.u64(n.ino);
    w.u32(n.kind);
    const p = Buffer.concat(n.path.flatMap((c, i) => (i ? [SLASH, c] : [c])));
    w.u32(p.length);
    w.bytes(p);
  }
  w.u32(s.handles.length);
  for (const h of s.handles) {
    w.u64(h.fh);
    w.u64(h.nodeid);
    w.u8(h.type);
    w.u32(h.flags);
  }
  return w.done();
}

/** Decodes and validates a state blob; throws StateError saying what is wrong. */
export function decodeState(blob: Buffer, rootId: bigint): SessionState {
  if (blob.length > MAX_STATE_BYTES) throw new StateError(`migration state of ${blob.length} bytes is larger than ${MAX_STATE_BYTES}`);
  if (blob.length < STATE_MAGIC.length + 4 + DIGEST) throw new StateError(`migration state of ${blob.length} bytes is truncated`);
  if (!blob.subarray(0, STATE_MAGIC.length).equals(STATE_MAGIC)) throw new StateError('not a duofs virtio-fs migration state (bad magic)');
  const version = blob.readUInt32LE(STATE_MAGIC.length);
  if (version !== STATE_VERSION)
    throw new StateError(`migration state version ${version} is not supported (this duofs reads version ${STATE_VERSION})`);
  const body = blob.subarray(0, blob.length - DIGEST);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(blob.subarray(blob.length - DIGEST))
  )
    throw new StateError('migration state is corrupted (checksum mismatch) or truncated');
  const r = new Reader(body);
  r.bytes(STATE_MAGIC.length + 4, 'header');
  const minor = r.u32('minor');
  if (minor > 0xffff) throw new StateError(`FUSE minor version ${minor} is out of range`);
  const initFlags = r.u64('init flags');
  const nextFh = r.u64('next fh');
  if (nextFh < 1n || nextFh > SAFE) throw new StateError(`next fh ${nextFh} is out of range`);
  const nodeCount = r.u32('node count');
  // Each node takes at least 41 bytes: a count the rest of the blob cannot hold is refused before any allocation.
  if (nodeCount > MAX_NODES || nodeCount * 41 > r.remaining) throw new StateError(`node count ${nodeCount} is beyond the limit or the blob`);
  const nodes: NodeState[] = [];
  const seen = new Set<bigint>();
  for (let i = 0; i < nodeCount; i++) {
    const f = `node ${i}`;
    const nodeid = r.u64(`${f} id`);
    if (nodeid < 1n || nodeid > SAFE) throw new StateError(`${f}: node id ${nodeid} is out of range`);
    if (seen.has(nodeid)) throw new StateError(`${f}: node id ${nodeid} appears twice`);
    seen.add(nodeid);
    const lookups = r.u64(`${f} lookups`);
    if (lookups > SAFE) throw new StateError(`${f}: lookup count ${lookups} is out of range`);
    const status = r.u8(`${f} status`);
    if (status !== NODE_FOUND && status !== NODE_LOST) throw new StateError(`${f}: status ${status} is unknown`);
    const dev = r.u64(`${f} dev`);
    const ino = r.u64(`${f} ino`);
    const kind = r.u32(`${f} type`);
    if (kind & ~0o170000) throw new StateError(`${f}: file type 0${kind.toString(8)} is not an S_IFMT value`);
    const plen = r.u32(`${f} path length`);
    if (plen > MAX_PATH_BYTES) throw new StateError(`${f}: path of ${plen} bytes is longer than ${MAX_PATH_BYTES}`);
    const raw = r.bytes(plen, `${f} path`);
    const path = plen === 0 ? [] : splitChecked(raw, f);
    if ((path.length === 0) !== (nodeid === rootId) && status === NODE_FOUND)
      throw new StateError(`${f}: node ${nodeid} ${nodeid === rootId ? 'is the root but has a path' : 'has an empty path but is not the root'}`);
    nodes.push({ nodeid, lookups, status, dev, ino, kind, path });
  }
  const handleCount = r.u32('handle count');
  if (handleCount > MAX_HANDLES || handleCount * 21 > r.remaining)
    throw new StateError(`handle count ${handleCount} is beyond the limit or the blob`);
  const handles: HandleState[] = [];
  const fhs = new Set<bigint>();
  for (let i = 0; i < handleCount; i++) {
    const f = `handle ${i}`;
    const fh = r.u64(`${f} fh`);
    if (fh < 1n || fh >= nextFh) throw new StateError(`${f}: fh ${fh} is not below the next fh ${nextFh}`);
    if (fhs.has(fh)) throw new StateError(`${f}: fh ${fh} appears twice`);
    fhs.add(fh);
    const nodeid = r.u64(`${f} node`);
    if (nodeid !== rootId && !seen.has(nodeid)) throw new StateError(`${f}: node ${nodeid} is not in the state`);
    const type = r.u8(`${f} type`);
    if (type !== HANDLE_FILE && type !== HANDLE_DIR && type !== HANDLE_LOST) throw new StateError(`${f}: handle type ${type} is unknown`);
    const flags = r.u32(`${f} flags`);
    handles.push({ fh, nodeid, type, flags });
  }
  if (r.remaining !== 0) throw new StateError(`migration state has ${r.remaining} bytes after its end`);
  return { minor, initFlags, nextFh, nodes, handles };
}

function splitChecked(raw: Buffer, field: string): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= raw.length; i++) {
    if (i < raw.length && raw[i] !== 0x2f) continue;
    const c = raw.subarray(start, i);
    const bad =
      c.length === 0
        ? 'an empty component'
        : c.length > NAME_MAX
          ? 'a component longer than 255 bytes'
          : c.includes(0)
            ? 'a NUL byte'
            : isDots(c)
              ? "a '.' or '..' component"
              : '';
    if (bad) throw new StateError(`${field}: path has ${bad}`);
    out.push(Buffer.from(c));
    start = i + 1;
  }
  return out;
}

const isDots = (c: Buffer): boolean => (c.length === 1 && c[0] === 0x2e) || (c.length === 2 && c[0] === 0x2e && c[1] === 0x2e);
