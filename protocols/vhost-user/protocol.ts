// vhost-user wire constants (QEMU docs/interop/vhost-user.rst) and the
// message header. Numbers are host byte order (little-endian here).

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;

const reqNames = new Map<number, string>(Object.entries(Req).map(([k, v]) => [v, k]));
export const requestName = (r: number): string => reqNames.get(r) ?? `request ${r}`;

export const HEADER_SIZE = 12;
export const FLAG_VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** Larger payloads are a protocol error: the biggest legitimate one is a 264-byte memory table. */
export const MAX_PAYLOAD = 4096;

/** Virtio feature bits (transport and vhost-user). */
export const VirtioFeature = {
  NOTIFY_ON_EMPTY: 1n << 24n,
  LOG_ALL: 1n << 26n,
  INDIRECT_DESC: 1n << 28n,
  EVENT_IDX: 1n << 29n,
  PROTOCOL_FEATURES: 1n << 30n, // VHOST_USER_F_PROTOCOL_FEATURES
  VERSION_1: 1n << 32n,
  ACCESS_PLATFORM: 1n << 33n,
  RING_PACKED: 1n << 34n,
} as const;

export const ProtocolFeature = {
  MQ: 1n << 0n,
  LOG_SHMFD: 1n << 1n,
  RARP: 1n << 2n,
  REPLY_ACK: 1n << 3n,
  MTU: 1n << 4n,
  BACKEND_REQ: 1n << 5n,
  CROSS_ENDIAN: 1n << 6n,
  CRYPTO_SESSION: 1n << 7n,
  PAGEFAULT: 1n << 8n,
  CONFIG: 1n << 9n,
  BACKEND_SEND_FD: 1n << 10n,
  HOST_NOTIFIER: 1n << 11n,
  INFLIGHT_SHMFD: 1n << 12n,
  RESET_DEVICE: 1n << 13n,
  INBAND_NOTIFICATIONS: 1n << 14n,
  CONFIGURE_MEM_SLOTS: 1n << 15n,
  STATUS: 1n << 16n,
  DEVICE_STATE: 1n << 19n,
} as const;

/** SET_DEVICE_STATE_FD: u32 direction (0 save, 1 load), u32 phase (0 stopped). */
export const TransferDirection = { SAVE: 0, LOAD: 1 } as const;
export const TRANSFER_PHASE_STOPPED = 0;
/** SET_DEVICE_STATE_FD reply: bits 0-7 are 0 on success, bit 8 says no back-end fd follows. */
export const DEVICE_STATE_NO_FD = 0x100n;
export const DEVICE_STATE_FAILED = 0x1n;

/** SET_VRING_KICK/CALL/ERR payload: bits 0-7 the queue, bit 8 "no fd". */
export const VRING_INDEX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;
/** SET_VRING_ADDR flags bit 0: log used-ring writes (needs LOG_ALL). */
export const VRING_F_LOG = 1;

export const MEMORY_REGION_SIZE = 32; // guest addr, size, user addr, mmap offset (u64 each)
/** SET_MEM_TABLE carries at most this many regions (one fd each). */
export const MAX_TABLE_REGIONS = 8;
/** GET_CONFIG/SET_CONFIG: offset, size, flags (u32 each), then the bytes. */
export const CONFIG_HEADER_SIZE = 12;
export const MAX_CONFIG_SIZE = 256;

export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

export function encodeHeader(h: MessageHeader, into: Buffer = Buffer.alloc(HEADER_SIZE)): Buffer {
  into.writeUInt32LE(h.request, 0);
  into.writeUInt32LE(h.flags, 4);
  into.writeUInt32LE(h.size, 8);
  return into;
}

export function decodeHeader(b: Buffer): MessageHeader {
  return { request: b.readUInt32LE(0), flags: b.readUInt32LE(4), size: b.readUInt32LE(8) };
}

/** A whole message: header, payload and the fds that came with it. */
export interface Message extends MessageHeader {
  payload: Buffer;
  fds: number[];
}

/** Encodes a message (header + payload). */
export function encodeMessage(request: number, flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  encodeHeader({ request, flags, size: payload.length }, b);
  payload.copy(b, HEADER_SIZE);
  return b;
}

export const u64Payload = (v: bigint | number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};

export const vringStatePayload = (index: number, num: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index >>> 0, 0);
  b.writeUInt32LE(num >>> 0, 4);
  return b;
};
