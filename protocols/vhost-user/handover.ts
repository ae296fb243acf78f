// The takeover handover format (docs/live-migration.md, "Restart"): what a
// running duofs hands a new process over its control socket so the new one
// serves the same vhost-user connections without the frontend noticing.
//
// Frames: magic `DUOFSTO\0`, version u32, kind u32, JSON length u32 (at most
// 1 MiB), blob length u32 (at most 64 MiB), then the JSON, then the blob.
// A STATE frame is followed by its fds in batches: one byte (the batch's fd
// count, 1..MAX_FDS) carrying that many fds with SCM_RIGHTS. Every field of
// a received frame is checked here before anything is built from it; the
// peer on either side is hostile.
import type { RegionSpec } from '../virtqueue/guest-memory.js';

export const HANDOVER_MAGIC = Buffer.from('DUOFSTO\0', 'latin1');
export const HANDOVER_VERSION = 1;
export const FRAME_HEADER_SIZE = 24;
export const MAX_JSON = 1024 * 1024;
export const MAX_BLOB = 64 * 1024 * 1024;
/** fds of one STATE frame: listeners, connections, regions, ring eventfds. */
export const MAX_HANDOVER_FDS = 4096;
const MAX_DEVICES = 64;
const MAX_REGIONS = 509;
const MAX_QUEUES = 1024;
const MAX_QUEUE_SIZE = 32768;

export enum FrameKind {
  /** newcomer -> running: "hand me your state" */
  HELLO = 1,
  /** running -> newcomer: the state (JSON + device state blobs), then its fds */
  STATE = 2,
  /** newcomer -> running: every fd and blob adopted; ready to serve */
  READY = 3,
  /** running -> newcomer: it stopped for good; serve */
  COMMIT = 4,
  /** either way: the handover is off (the JSON says why); the running process serves on */
  ABORT = 5,
}

export class HandoverError extends Error {
  override name = 'HandoverError';
}

export interface FrameHeader {
  kind: FrameKind;
  jsonLength: number;
  blobLength: number;
}

export function encodeFrame(kind: FrameKind, json: unknown = {}, blob: Buffer = Buffer.alloc(0)): Buffer {
  const j = Buffer.from(JSON.stringify(json), 'utf8');
  if (j.length > MAX_JSON) throw new HandoverError(`handover JSON of ${j.length} bytes (limit ${MAX_JSON})`);
  if (blob.length > MAX_BLOB) throw new HandoverError(`handover blob of ${blob.length} bytes (limit ${MAX_BLOB})`);
  const h = Buffer.alloc(FRAME_HEADER_SIZE);
  HANDOVER_MAGIC.copy(h, 0);
  h.writeUInt32LE(HANDOVER_VERSION, 8);
  h.writeUInt32LE(kind, 12);
  h.writeUInt32LE(j.length, 16);
  h.writeUInt32LE(blob.length, 20);
  return Buffer.concat([h, j, blob]);
}

export function decodeFrameHeader(h: Buffer): FrameHeader {
  if (h.length !== FRAME_HEADER_SIZE) throw new HandoverError(`frame header of ${h.length} bytes`);
  if (!h.subarray(0, 8).equals(HANDOVER_MAGIC)) throw new HandoverError('bad magic (not a duofs takeover peer)');
  const version = h.readUInt32LE(8);
  if (version !== HANDOVER_VERSION) throw new HandoverError(`handover version ${version} (this duofs speaks ${HANDOVER_VERSION})`);
  const kind = h.readUInt32LE(12);
  if (!(kind in FrameKind) || kind < FrameKind.HELLO || kind > FrameKind.ABORT) throw new HandoverError(`unknown frame kind ${kind}`);
  const jsonLength = h.readUInt32LE(16);
  const blobLength = h.readUInt32LE(20);
  if (jsonLength > MAX_JSON) throw new HandoverError(`JSON length ${jsonLength} (limit ${MAX_JSON})`);
  if (blobLength > MAX_BLOB) throw new HandoverError(`blob length ${blobLength} (limit ${MAX_BLOB})`);
  if (kind !== FrameKind.STATE && blobLength !== 0) throw new HandoverError(`frame kind ${FrameKind[kind]} with a blob`);
  return { kind, jsonLength, blobLength };
}

// ------------------------------------------------------------------ state

export interface QueueHandover {
  size: number;
  /** next avail index to take (every taken chain is completed: = used index) */
  base: number;
  addr: { desc: number; used: number; avail: number } | null;
  usedLogGpa: number | null;
  /** fd indices into the STATE frame's fds, or null */
  kick: number | null;
  call: number | null;
  err: number | null;
  enabled: boolean;
  started: boolean;
}

export interface ConnectionHandover {
  /** fd index of the connected vhost-user socket */
  conn: number;
  peer: string;
  /** hex */
  features: string;
  protocol: string;
  status: number;
  backendChannel: number | null;
  regions: (RegionSpec & { fd: number })[];
  queues: QueueHandover[];
  /** bytes of the blob that are this device's state (device saveState) */
  stateLength: number;
}

export interface DeviceHandover {
  /** the socket path the listener was created at, or null (inherited fd) */
  socketPath: string | null;
  virtioId: number;
  listen: number;
  connection: ConnectionHandover | null;
}

export interface StateHandover {
  pid: number;
  version: string;
  fdCount: number;
  devices: DeviceHandover[];
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HandoverError(`${what}: not an object`);
  return v as Record<string, unknown>;
}

function int(v: unknown, what: string, max: number, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
    throw new HandoverError(`${what}: ${JSON.stringify(v)} is not an integer in [${min}, ${max}]`);
  return v;
}

function bool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') throw new HandoverError(`${what}: not a boolean`);
  return v;
}

function str(v: unknown, what: string, max: number): string {
  if (typeof v !== 'string' || v.length > max || v.includes('\0')) throw new HandoverError(`${what}: not a string of at most ${max} characters`);
  return v;
}

function hex64(v: unknown, what: string): string {
  if (typeof v !== 'string' || !/^[0-9a-f]{1,16}$/.test(v)) throw new HandoverError(`${what}: not a 64-bit hex number`);
  return v;
}

function arr(v: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(v) || v.length > max) throw new HandoverError(`${what}: not an array of at most ${max} entries`);
  return v;
}

const ADDR_MAX = Number.MAX_SAFE_INTEGER;

/**
 * Checks a STATE frame's JSON against `fdCount` fds and `blobLength` bytes:
 * every number in range, every fd index used once, the device states adding
 * up to the blob. Returns the typed state.
 */
export function parseState(json: unknown, blobLength: number): StateHandover {
  const o = obj(json, 'state');
  const fdCount = int(o.fdCount, 'fdCount', MAX_HANDOVER_FDS);
  const used = new Set<number>();
  const fdIndex = (v: unknown, what: string, nullable: boolean): number | null => {
    if (v === null && nullable) return null;
    const i = int(v, what, fdCount - 1);
    if (used.has(i)) throw new HandoverError(`${what}: fd index ${i} used twice`);
    used.add(i);
    return i;
  };
  let stateBytes = 0;
  const devices = arr(o.devices, 'devices', MAX_DEVICES).map((dv, di): DeviceHandover => {
    const d = obj(dv, `device ${di}`);
    const w = `device ${di}`;
    const socketPath = d.socketPath === null ? null : str(d.socketPath, `${w} socketPath`, 4096);
    const virtioId = int(d.virtioId, `${w} virtioId`, 0xffff);
    const listen = fdIndex(d.listen, `${w} listen`, false)!;
    let connection: ConnectionHandover | null = null;
    if (d.connection !== null) {
      const c = obj(d.connection, `${w} connection`);
      const regions = arr(c.regions, `${w} regions`, MAX_REGIONS).map((rv, ri) => {
        const r = obj(rv, `${w} region ${ri}`);
        return {
          guestAddr: int(r.guestAddr, `${w} region ${ri} guestAddr`, ADDR_MAX),
          size: int(r.size, `${w} region ${ri} size`, ADDR_MAX, 1),
          userAddr: int(r.userAddr, `${w} region ${ri} userAddr`, ADDR_MAX),
          mmapOffset: int(r.mmapOffset, `${w} region ${ri} mmapOffset`, ADDR_MAX),
          fd: fdIndex(r.fd, `${w} region ${ri} fd`, false)!,
        };
      });
      const queues = arr(c.queues, `${w} queues`, MAX_QUEUES).map((qv, qi): QueueHandover => {
        const q = obj(qv, `${w} queue ${qi}`);
        const wq = `${w} queue ${qi}`;
        const size = int(q.size, `${wq} size`, MAX_QUEUE_SIZE);
        if (size & (size - 1)) throw new HandoverError(`${wq} size: ${size} is not a power of 2`);
        let addr: QueueHandover['addr'] = null;
        if (q.addr !== null) {
          const a = obj(q.addr, `${wq} addr`);
          addr = {
            desc: int(a.desc, `${wq} desc`, ADDR_MAX),
            used: int(a.used, `${wq} used`, ADDR_MAX),
            avail: int(a.avail, `${wq} avail`, ADDR_MAX),
          };
        }
        const started = bool(q.started, `${wq} started`);
        const kick = fdIndex(q.kick, `${wq} kick`, true);
        if (started && (kick === null || addr === null || size === 0)) throw new HandoverError(`${wq}: started without a kick fd, addresses or size`);
        return {
          size,
          base: int(q.base, `${wq} base`, 0xffff),
          addr,
          usedLogGpa: q.usedLogGpa === null ? null : int(q.usedLogGpa, `${wq} usedLogGpa`, ADDR_MAX),
          kick,
          call: fdIndex(q.call, `${wq} call`, true),
          err: fdIndex(q.err, `${wq} err`, true),
          enabled: bool(q.enabled, `${wq} enabled`),
          started,
        };
      });
      const stateLength = int(c.stateLength, `${w} stateLength`, MAX_BLOB);
      stateBytes += stateLength;
      connection = {
        conn: fdIndex(c.conn, `${w} conn`, false)!,
        peer: str(c.peer, `${w} peer`, 200),
        features: hex64(c.features, `${w} features`),
        protocol: hex64(c.protocol, `${w} protocol`),
        status: int(c.status, `${w} status`, 0xff),
        backendChannel: fdIndex(c.backendChannel, `${w} backendChannel`, true),
        regions,
        queues,
        stateLength,
      };
    }
    return { socketPath, virtioId, listen, connection };
  });
  if (stateBytes !== blobLength) throw new HandoverError(`device states add up to ${stateBytes} bytes, the blob has ${blobLength}`);
  if (used.size !== fdCount) throw new HandoverError(`${fdCount} fds sent, ${used.size} named`);
  return {
    pid: int(o.pid, 'pid', 2 ** 22, 1),
    version: str(o.version, 'version', 100),
    fdCount,
    devices,
  };
}
