// vhost-user messages (header + payload, with 0-3 fds) into an in-process
// vhost-user server with the virtio-fs device, on one connection that keeps
// the state earlier inputs built. Byte 0 of an input says which fds travel
// with the message (bits 0-1: how many; bit 2: memfds of 1 MiB instead of
// eventfds); the rest is sent as it is. After each message a GET_FEATURES
// probe must be answered unless the server dropped the connection (its
// clean answer to a protocol error). Findings: an exception the server did
// not expect, a probe left unanswered on a live connection, or a fresh
// connection failing afterwards.
import fs from 'node:fs';
import path from 'node:path';
import { LocalBackend } from '../../../src/backend/backend.js';
import { VirtioFsDevice } from '../../../protocols/fuse/virtio-fs-device.js';
import { defaultFuseOptions } from '../../../protocols/fuse/options.js';
import { VhostUserServer } from '../../../protocols/vhost-user/server.js';
import { MessageSocket } from '../../../protocols/vhost-user/message-socket.js';
import { closeFd } from '../../../src/sys/fd.js';
import { connectUnixSocket } from '../../../src/sys/sockets.js';
import { createEventFd } from '../../../src/sys/eventfd.js';
import { createMemfd } from '../../../src/sys/mem.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  MAX_PAYLOAD,
  Req,
  encodeMessage,
  u64Payload,
  vringStatePayload,
  type Message,
} from '../../../protocols/vhost-user/protocol.js';
import { Finding, withinMs, type FuzzTarget, type TargetInstance } from '../engine.js';
import { bugLog, scratchExport, throwBugs } from './common.js';

const MEMFD_SIZE = 1 << 20;
const msg = (fds: number, request: number, payload?: Buffer, flags = FLAG_VERSION): Buffer =>
  Buffer.concat([Buffer.from([fds]), encodeMessage(request, flags, payload)]);

function memTable(n: number, gpa = 0x100000, userAddr = 0x7f0000000000): Buffer {
  const b = Buffer.alloc(8 + 32 * n);
  b.writeUInt32LE(n, 0);
  for (let i = 0; i < n; i++) {
    b.writeBigUInt64LE(BigInt(gpa + i * MEMFD_SIZE), 8 + 32 * i);
    b.writeBigUInt64LE(BigInt(MEMFD_SIZE), 16 + 32 * i);
    b.writeBigUInt64LE(BigInt(userAddr + i * MEMFD_SIZE), 24 + 32 * i);
    b.writeBigUInt64LE(0n, 32 + 32 * i);
  }
  return b;
}

function vringAddr(q: number, base = 0x7f0000000000): Buffer {
  const p = Buffer.alloc(40);
  p.writeUInt32LE(q, 0);
  p.writeBigUInt64LE(BigInt(base), 8);
  p.writeBigUInt64LE(BigInt(base + 0x2000), 16);
  p.writeBigUInt64LE(BigInt(base + 0x1000), 24);
  return p;
}

export function vhostSeeds(): Buffer[] {
  const ack = FLAG_VERSION | FLAG_NEED_REPLY;
  return [
    msg(0, Req.SET_OWNER),
    msg(0, Req.GET_FEATURES),
    msg(0, Req.SET_FEATURES, u64Payload((1n << 32n) | (1n << 30n) | (1n << 28n) | (1n << 29n))),
    msg(0, Req.GET_PROTOCOL_FEATURES),
    msg(0, Req.SET_PROTOCOL_FEATURES, u64Payload(0x8809n)),
    msg(0, Req.GET_QUEUE_NUM),
    msg(0, Req.GET_MAX_MEM_SLOTS),
    msg(5, Req.SET_MEM_TABLE, memTable(1)),
    msg(6, Req.SET_MEM_TABLE, memTable(2), ack),
    msg(5, Req.ADD_MEM_REG, memTable(1).subarray(0, 40).fill(0, 0, 8)),
    msg(0, Req.REM_MEM_REG, memTable(1).subarray(0, 40).fill(0, 0, 8)),
    msg(0, Req.SET_VRING_NUM, vringStatePayload(0, 256)),
    msg(0, Req.SET_VRING_NUM, vringStatePayload(1, 128), ack),
    msg(0, Req.SET_VRING_BASE, vringStatePayload(0, 0)),
    msg(0, Req.SET_VRING_ADDR, vringAddr(0)),
    msg(1, Req.SET_VRING_KICK, u64Payload(0)),
    msg(1, Req.SET_VRING_CALL, u64Payload(1)),
    msg(1, Req.SET_VRING_ERR, u64Payload(0)),
    msg(0, Req.SET_VRING_KICK, u64Payload(0x100)),
    msg(0, Req.SET_VRING_ENABLE, vringStatePayload(0, 1)),
    msg(0, Req.GET_VRING_BASE, vringStatePayload(0, 0)),
    msg(0, Req.GET_CONFIG, Buffer.concat([Buffer.from([0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(40)])),
    msg(0, Req.SET_CONFIG, Buffer.concat([Buffer.from([0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(4)])),
    msg(0, Req.SET_STATUS, u64Payload(0xf)),
    msg(0, Req.GET_STATUS),
    msg(0, Req.RESET_DEVICE),
    msg(0, Req.RESET_OWNER),
    msg(1, Req.SET_LOG_FD),
    msg(5, Req.SET_LOG_BASE, Buffer.alloc(16)),
    msg(1, Req.SET_BACKEND_REQ_FD),
    msg(0, Req.GET_INFLIGHT_FD, Buffer.alloc(16)),
    msg(0, Req.VRING_KICK, vringStatePayload(0, 0)),
    msg(0, Req.SET_VRING_ENDIAN, vringStatePayload(0, 0)),
    msg(0, 99),
  ];
}

class Conn {
  readonly sock: MessageSocket;
  closed = false;
  private waiters: ((m: Message) => void)[] = [];

  constructor(socketPath: string) {
    this.sock = new MessageSocket(
      connectUnixSocket(socketPath),
      {
        onMessage: (m) => {
          for (const f of m.fds) closeFd(f);
          if (m.request === Req.GET_FEATURES && m.flags & FLAG_REPLY) this.waiters.shift()?.(m);
        },
        onClose: () => {
          this.closed = true;
          for (const w of this.waiters.splice(0)) w({ request: -1, flags: 0, size: 0, payload: Buffer.alloc(0), fds: [] });
        },
      },
      1 << 16,
    );
    this.sock.start();
  }

  /** true: answered; false: the server hung up */
  async probe(what: string): Promise<boolean> {
    if (this.closed) return false;
    const got = new Promise<Message>((res) => this.waiters.push(res));
    if (!this.sock.send(encodeMessage(Req.GET_FEATURES, FLAG_VERSION))) return false;
    const m = await withinMs(got, 5000, `GET_FEATURES probe after ${what}`);
    return m.request === Req.GET_FEATURES;
  }

  close(): void {
    this.sock.close({ kind: 'local', message: 'fuzzer done' });
  }
}

export function vhostUserMessageTarget(): FuzzTarget {
  return {
    name: 'vhost-user-message',
    describe: 'vhost-user messages (with eventfds or memfds) into an in-process vhost-user-fs server',
    maxLen: 600,
    dictionary: [u64Payload(1n << 32n), vringStatePayload(0, 256), Buffer.from([1, 0, 0, 0]), Buffer.from([0x8, 0, 0, 0])],
    seeds: vhostSeeds,
    async start(): Promise<TargetInstance> {
      const scratch = scratchExport('duofs-fuzzvu-');
      const bugs = bugLog();
      const backend = new LocalBackend({ sharedDir: scratch.dir, log: bugs.log });
      const device = new VirtioFsDevice({ backend, log: bugs.log, options: defaultFuseOptions }, { tag: 'fuzz', numRequestQueues: 1 }, 'fuzz');
      const socketPath = path.join(scratch.base, 'vu.sock');
      const server = VhostUserServer.listen({ device, logger: bugs.log, socketPath, drainTimeoutMs: 200 });
      let conn = new Conn(socketPath);
      await new Promise((res) => setTimeout(res, 5));
      return {
        async exec(input: Buffer) {
          if (input.length < 1) return;
          const spec = input[0]!;
          const fds: number[] = [];
          for (let i = 0; i < (spec & 3); i++) fds.push(spec & 4 ? createMemfd('fuzz-ram', MEMFD_SIZE) : createEventFd());
          if (conn.closed) conn = new Conn(socketPath);
          // The stream stays framed: the payload is cut or zero-padded to the size the header declares
          // (up to the limit; a larger one is refused by the server, which hangs up).
          let frame = input.subarray(1);
          if (frame.length < 12) frame = Buffer.concat([frame, Buffer.alloc(12 - frame.length)]);
          const declared = frame.readUInt32LE(8);
          if (declared <= MAX_PAYLOAD)
            frame = Buffer.concat([frame.subarray(0, 12 + declared), Buffer.alloc(Math.max(0, 12 + declared - frame.length))]);
          const what = `request ${frame.readUInt32LE(0)} (${declared} payload bytes, ${fds.length} fds)`;
          conn.sock.send(frame, fds);
          for (const f of fds) closeFd(f);
          if (declared > MAX_PAYLOAD) {
            await conn.probe(what).catch(() => false);
            if (!conn.closed) throw new Finding('property', `${what}: a payload above the limit was not refused`);
          } else {
            await conn.probe(what);
          }
          throwBugs(bugs);
        },
        async check() {
          // One guest at a time per device: hang up, then come back as a new one.
          conn.close();
          conn = new Conn(socketPath);
          if (!(await conn.probe('a new connection'))) throw new Finding('no-answer', 'a new connection was hung up on before GET_FEATURES');
          throwBugs(bugs);
        },
        async stop() {
          conn.close();
          server.close();
          await new Promise((res) => setTimeout(res, 5));
          if (fs.existsSync(scratch.base)) scratch.cleanup();
        },
      };
    },
  };
}
