// The takeover handover format (protocols/vhost-user/handover.ts): frames
// round-trip, and a hostile peer's frame or state is refused with a message
// that names the field, before anything is built from it.
import { describe, expect, test } from '@jest/globals';
import {
  decodeFrameHeader,
  encodeFrame,
  FRAME_HEADER_SIZE,
  FrameKind,
  HandoverError,
  MAX_BLOB,
  MAX_JSON,
  parseState,
} from '../../protocols/vhost-user/handover.js';

const queue = (over: Record<string, unknown> = {}) => ({
  size: 1024,
  base: 77,
  addr: { desc: 0x1000, used: 0x3000, avail: 0x2000 },
  usedLogGpa: null,
  kick: 3,
  call: 4,
  err: null,
  enabled: true,
  started: true,
  ...over,
});

const state = (over: Record<string, unknown> = {}, conn: Record<string, unknown> = {}) => ({
  pid: 1234,
  version: '0.1.0',
  fdCount: 6,
  devices: [
    {
      socketPath: '/run/fs.sock',
      virtioId: 26,
      listen: 0,
      connection: {
        conn: 1,
        peer: '#1 pid 5 uid 0',
        features: '140000000',
        protocol: '8f',
        status: 15,
        backendChannel: null,
        regions: [{ guestAddr: 0, size: 1 << 29, userAddr: 0x7f0000000000, mmapOffset: 0, fd: 2 }],
        queues: [queue(), queue({ kick: 5, call: null, base: 0 })],
        stateLength: 10,
        ...conn,
      },
    },
  ],
  ...over,
});

const refused = (f: () => unknown, what: RegExp) => {
  expect(f).toThrow(HandoverError);
  expect(f).toThrow(what);
};

describe('frames', () => {
  test('round trip: header, JSON and blob', () => {
    const f = encodeFrame(FrameKind.STATE, { a: 1 }, Buffer.from('blob'));
    const h = decodeFrameHeader(f.subarray(0, FRAME_HEADER_SIZE));
    expect(h).toEqual({ kind: FrameKind.STATE, jsonLength: 7, blobLength: 4 });
    expect(JSON.parse(f.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + 7).toString())).toEqual({ a: 1 });
  });

  test('hostile headers are refused, naming the field', () => {
    const good = encodeFrame(FrameKind.HELLO).subarray(0, FRAME_HEADER_SIZE);
    const bad = (at: number, v: number, size = 4) => {
      const b = Buffer.from(good);
      if (size === 4) b.writeUInt32LE(v, at);
      else b[at] = v;
      return b;
    };
    refused(() => decodeFrameHeader(bad(0, 0x41, 1)), /magic/);
    refused(() => decodeFrameHeader(bad(8, 2)), /version 2/);
    refused(() => decodeFrameHeader(bad(12, 9)), /kind 9/);
    refused(() => decodeFrameHeader(bad(12, 0)), /kind 0/);
    refused(() => decodeFrameHeader(bad(16, MAX_JSON + 1)), /JSON length/);
    refused(() => decodeFrameHeader(bad(20, MAX_BLOB + 1)), /blob length/);
    refused(() => decodeFrameHeader(bad(20, 1)), /HELLO with a blob/);
    refused(() => decodeFrameHeader(good.subarray(0, 10)), /header of 10 bytes/);
  });
});

describe('state', () => {
  test('a well-formed state parses', () => {
    const s = parseState(state(), 10);
    expect(s.devices[0]!.connection!.queues[1]!.kick).toBe(5);
    expect(s.fdCount).toBe(6);
  });

  test('fd indices: out of range, used twice, or not all named', () => {
    refused(() => parseState(state({}, { conn: 6 }), 10), /conn: 6 is not an integer in \[0, 5\]/);
    refused(() => parseState(state({}, { conn: 0 }), 10), /conn: fd index 0 used twice/);
    refused(() => parseState(state({ fdCount: 7 }), 10), /7 fds sent, 6 named/);
    refused(() => parseState(state({ fdCount: 1e9 }), 10), /fdCount/);
  });

  test('numbers, sizes and types out of range', () => {
    refused(() => parseState(state({}, { queues: [queue({ size: 1000 })] }), 10), /size: 1000 is not a power of 2/);
    refused(() => parseState(state({}, { queues: [queue({ size: 65536 })] }), 10), /size/);
    refused(() => parseState(state({}, { queues: [queue({ base: 70000 })] }), 10), /base/);
    refused(() => parseState(state({}, { queues: [queue({ kick: null })] }), 10), /started without a kick fd/);
    refused(() => parseState(state({}, { features: '-1' }), 10), /features: not a 64-bit hex number/);
    refused(() => parseState(state({}, { features: '1'.repeat(17) }), 10), /features/);
    refused(() => parseState(state({}, { regions: [{ guestAddr: 2 ** 60, size: 1, userAddr: 0, mmapOffset: 0, fd: 2 }] }), 10), /guestAddr/);
    refused(() => parseState(state({}, { regions: new Array(600).fill(0) }), 10), /regions: not an array of at most 509/);
    refused(() => parseState(state({}, { peer: 'x'.repeat(1000) }), 10), /peer/);
    refused(() => parseState(state({}, { queues: [queue({ started: 'yes' })] }), 10), /started: not a boolean/);
    refused(() => parseState({ ...state(), devices: 'x' }, 10), /devices/);
    refused(() => parseState(null, 10), /state: not an object/);
  });

  test('the device states must add up to the blob', () => {
    refused(() => parseState(state(), 11), /add up to 10 bytes, the blob has 11/);
  });
});
