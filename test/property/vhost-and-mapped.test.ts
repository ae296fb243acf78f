// Property tests for the vhost-user message codec and stream reader
// (protocols/vhost-user/protocol.ts, message-socket.ts) and for the mapped
// security models' on-disk formats (security/formats/mapped-file.ts,
// mapped-xattr.ts).
import { expect } from '@jest/globals';
import { fc, test } from '@fast-check/jest';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { HEADER_SIZE, MAX_PAYLOAD, decodeHeader, encodeMessage, type Message } from '../../protocols/vhost-user/protocol.js';
import { MessageSocket, type CloseReason } from '../../protocols/vhost-user/message-socket.js';
import { acceptConnection, connectUnixSocket, listenUnixSocket } from '../../src/sys/sockets.js';
import { closeFd } from '../../src/sys/fd.js';
import { formatMetadata, parseMetadata, type GuestMeta } from '../../security/formats/mapped-file.js';
import { decodeRdev, decodeU32, encodeRdev, encodeU32 } from '../../security/formats/mapped-xattr.js';

const u32 = fc.nat({ max: 0xffffffff });
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

test.prop([u32, u32, bytes(MAX_PAYLOAD)])('vhost-user: header and payload decode to what was encoded', (request, flags, payload) => {
  const m = encodeMessage(request, flags, payload);
  expect(decodeHeader(m)).toEqual({ request, flags, size: payload.length });
  expect(m.subarray(HEADER_SIZE)).toEqual(payload);
});

/** A connected pair: the reading MessageSocket and a raw writing fd. */
async function pair(
  onMessage: (m: Message) => void,
  onClose: (r: CloseReason) => void,
): Promise<{ ms: MessageSocket; writer: number; done(): void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-propvu-'));
  const lfd = listenUnixSocket(path.join(dir, 's'));
  const writer = connectUnixSocket(path.join(dir, 's'));
  let rfd = -1;
  for (let i = 0; i < 100 && rfd < 0; i++) {
    try {
      rfd = acceptConnection(lfd);
    } catch {
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  closeFd(lfd);
  fs.rmSync(dir, { recursive: true, force: true });
  const ms = new MessageSocket(rfd, { onMessage, onClose });
  ms.start();
  return {
    ms,
    writer,
    done: () => {
      ms.close({ kind: 'local', message: 'done' });
      closeFd(writer);
    },
  };
}

const messagesArb = fc.array(fc.tuple(u32, u32, bytes(300)), { minLength: 1, maxLength: 12 });
test.prop([messagesArb, fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 10 })], { numRuns: 40 })(
  'vhost-user stream: messages cut anywhere arrive whole and in order',
  async (msgs, chunks) => {
    const got: Message[] = [];
    let closed: CloseReason | undefined;
    const p = await pair(
      (m) => {
        got.push({ ...m, payload: Buffer.from(m.payload) });
      },
      (r) => {
        closed = r;
      },
    );
    try {
      const stream = Buffer.concat(msgs.map(([r, f, pl]) => encodeMessage(r, f, pl)));
      const writer = new MessageSocket(p.writer, { onMessage: () => {}, onClose: () => {} });
      let at = 0;
      for (let i = 0; at < stream.length; i++) {
        const n = chunks[i % chunks.length]!;
        writer.send(stream.subarray(at, at + n));
        at += n;
        if (i % 3 === 0) await new Promise((r) => setImmediate(r));
      }
      for (let i = 0; i < 200 && got.length < msgs.length; i++) await new Promise((r) => setTimeout(r, 1));
      expect(closed).toBeUndefined();
      expect(got.map((m) => [m.request, m.flags, m.payload])).toEqual(msgs.map(([r, f, pl]) => [r, f, pl]));
    } finally {
      p.ms.close({ kind: 'local', message: 'done' });
    }
  },
);

test.prop([u32, fc.integer({ min: MAX_PAYLOAD + 1, max: 0xffffffff })], { numRuns: 20 })(
  'vhost-user stream: a payload over the limit closes the stream, naming the size, before any allocation',
  async (request, size) => {
    let closed: CloseReason | undefined;
    const p = await pair(
      () => {},
      (r) => {
        closed = r;
      },
    );
    try {
      const h = encodeMessage(request, 1);
      h.writeUInt32LE(size, 8);
      new MessageSocket(p.writer, { onMessage: () => {}, onClose: () => {} }).send(h);
      for (let i = 0; i < 200 && !closed; i++) await new Promise((r) => setTimeout(r, 1));
      expect(closed).toEqual({ kind: 'error', message: `message ${request} declares a ${size}-byte payload (limit ${MAX_PAYLOAD})` });
    } finally {
      p.done();
    }
  },
);

const metaArb = fc.record({ uid: u32, gid: u32, mode: u32, rdev: fc.bigInt({ min: 0n, max: 0xffffffffn }) }, { requiredKeys: [] });
test.prop([metaArb])('mapped-file: parse(format(meta)) is meta, as QEMU reads what it wrote', (meta) => {
  const p = parseMetadata(formatMetadata(meta as GuestMeta));
  expect(p.problems).toEqual([]);
  expect(p.meta).toEqual(meta);
});

test.prop([
  fc.oneof(
    bytes(200),
    fc.stringMatching(/^(virtfs\.(uid|gid|mode|rdev)=-?[0-9]{0,12}\n?){0,6}$/).map((s) => Buffer.from(s)),
  ),
])('mapped-file: any stored bytes parse without throwing; what is kept survives format and parse', (b) => {
  const p = parseMetadata(b);
  const again = parseMetadata(formatMetadata(p.meta));
  expect(again.meta).toEqual(p.meta);
  for (const v of [p.meta.uid, p.meta.gid, p.meta.mode]) if (v !== undefined) expect(v >>> 0).toBe(v);
});

test.prop([bytes(10)])('mapped-xattr: only exact-width values decode, and they encode back to the same bytes', (b) => {
  const u = decodeU32(b);
  expect(u === undefined).toBe(b.length !== 4);
  if (u !== undefined) expect(encodeU32(u)).toEqual(b);
  const r = decodeRdev(b);
  expect(r === undefined).toBe(b.length !== 8);
  if (r !== undefined) expect(encodeRdev(r)).toEqual(b);
});

// Found by the property above (seed 475558758): atoi("-0") is 0, and so is ours.
test('mapped-file: "-0" parses as 0 and formats back as 0', () => {
  const { meta } = parseMetadata(Buffer.from('virtfs.mode=-0\nvirtfs.uid=-0\n'));
  expect(Object.is(meta.mode, 0)).toBe(true);
  expect(Object.is(meta.uid, 0)).toBe(true);
  expect(formatMetadata(meta).toString()).toContain('virtfs.mode=0\n');
});
