// Property tests for FUSE request parsing (protocols/fuse/request.ts) and
// the session's handling of truncated requests.
import { expect } from '@jest/globals';
import { fc, test } from '@fast-check/jest';
import { RequestBody, parseExtensions, parseInHeader, type ReplyTo } from '../../protocols/fuse/request.js';
import { ArgReader } from '../../protocols/fuse/wire.js';
import { SysError } from '../../src/sys/index.js';
import { FuseSession } from '../../protocols/fuse/session.js';
import { defaultFuseOptions } from '../../protocols/fuse/options.js';
import { LocalBackend } from '../../src/backend/backend.js';
import { OP, inHeader, initIn } from '../fuse/client.js';
import { fuseSeeds } from '../fuzz/targets/fuse-request.js';
import { bugLog, scratchExport } from '../fuzz/targets/common.js';

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
/** A buffer and a way to cut it into segments (as guest descriptors would). */
const segmented = fc.tuple(bytes(300), fc.array(fc.nat({ max: 300 }), { maxLength: 6 })).map(([b, cuts]) => {
  const at = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const segs: Buffer[] = [];
  let prev = 0;
  for (const c of at) {
    segs.push(b.subarray(prev, c));
    prev = c;
  }
  segs.push(b.subarray(prev));
  return { b, segs };
});

test.prop([
  fc.record({
    len: fc.nat({ max: 0xffffffff }),
    opcode: fc.nat({ max: 0xffffffff }),
    unique: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    nodeid: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    uid: fc.nat({ max: 0xffffffff }),
    gid: fc.nat({ max: 0xffffffff }),
    pid: fc.nat({ max: 0xffffffff }),
  }),
])('the in-header decodes to the fields that were encoded', (h) => {
  const got = parseInHeader(inHeader(h.len, h.opcode, h.unique, h.nodeid, h));
  expect({ len: got.len, opcode: got.opcode, unique: got.unique, nodeid: got.nodeid, uid: got.uid, gid: got.gid, pid: got.pid }).toEqual(h);
});

test.prop([bytes(39)])('a header shorter than 40 bytes is refused with EINVAL naming the header', (b) => {
  expect(() => parseInHeader(b)).toThrow(SysError);
  expect(() => parseInHeader(b)).toThrow(/fuse header/);
});

test.prop([segmented, fc.nat({ max: 320 }), fc.nat({ max: 320 })])(
  'slices, copy and head see the bytes of the concatenation, or refuse with EINVAL',
  ({ b, segs }, from, len) => {
    const body = new RequestBody(segs);
    expect(body.length).toBe(b.length);
    if (from + len <= b.length) {
      expect(body.copy(from, len)).toEqual(b.subarray(from, from + len));
      expect(Buffer.concat(body.slices(from, len))).toEqual(b.subarray(from, from + len));
    } else {
      expect(() => body.slices(from, len)).toThrow(/fuse request data \d+\+\d+ beyond/);
    }
    if (len <= b.length) expect(body.head(len)).toEqual(b.subarray(0, len));
    else expect(() => body.head(len)).toThrow(/needs \d+ argument bytes/);
  },
);

test.prop([
  fc.array(
    bytes(20).map((n) => Buffer.from(n.filter((c) => c !== 0))),
    { minLength: 1, maxLength: 4 },
  ),
  fc.nat({ max: 4 }),
])('ArgReader.name gives back NUL-terminated names, and refuses a missing NUL', (names, extra) => {
  const enc = Buffer.concat(names.flatMap((n) => [n, Buffer.from([0])]));
  const names_ = (b: Buffer, n: number): Buffer[] => {
    const r = new ArgReader(b, 'RENAME');
    return Array.from({ length: n }, (_, i) => r.name(`name${i}`));
  };
  expect(names_(enc, names.length)).toEqual(names);
  expect(() => names_(enc.subarray(0, enc.length - 1), names.length)).toThrow(/FUSE RENAME name\d is not NUL-terminated/);
  if (extra) expect(() => names_(enc, names.length + extra)).toThrow(/not NUL-terminated/);
});

test.prop([fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })])('ArgReader.offset: exact below 2^53, bigint to 2^63-1, EINVAL beyond', (v) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  const a = new ArgReader(b, 'READ');
  if (v > 0x7fffffffffffffffn) expect(() => a.offset('offset')).toThrow(/beyond off_t/);
  else expect(BigInt(a.offset('offset'))).toBe(v);
});

test.prop([fc.array(fc.nat({ max: 0xffffffff }), { maxLength: 8 }), bytes(64), fc.nat({ max: 20 })])(
  'extensions: the groups record is read back; garbage never throws',
  (groups, junk, extlen) => {
    const rec = Buffer.alloc(12 + 4 * groups.length);
    rec.writeUInt32LE(rec.length, 0);
    rec.writeUInt32LE(32, 4);
    rec.writeUInt32LE(groups.length, 8);
    groups.forEach((g, i) => rec.writeUInt32LE(g, 12 + 4 * i));
    const padded = Buffer.concat([rec, Buffer.alloc((8 - (rec.length % 8)) % 8)]);
    const h = parseInHeader(inHeader(0, 1, 0n, 1n));
    h.totalExtlen = padded.length / 8;
    parseExtensions(h, RequestBody.of(Buffer.concat([Buffer.from('name\0'), padded])));
    expect(h.suppGroups).toEqual(groups);
    const g = parseInHeader(inHeader(0, 1, 0n, 1n));
    g.totalExtlen = extlen;
    expect(() => parseExtensions(g, RequestBody.of(junk))).not.toThrow();
  },
);

test("every truncation of a valid request is refused (EINVAL, or the whole request's errno), never accepted", async () => {
  const scratch = scratchExport('duofs-propfuse-');
  const bugs = bugLog();
  try {
    const backend = new LocalBackend({ sharedDir: scratch.dir, log: bugs.log });
    const options = { ...defaultFuseOptions, xattr: true };
    const run = (s: FuseSession, r: Buffer): Promise<string> =>
      new Promise((resolve) => {
        const out: ReplyTo = {
          send: (e) => {
            resolve(e ? `errno ${e}` : 'ok');
            return true;
          },
          sendRead: () => resolve('ok'),
          none: () => resolve('none'),
        };
        s.handle(RequestBody.of(r), out);
        setTimeout(() => resolve('no reply'), 500);
      });
    const fresh = async (): Promise<FuseSession> => {
      const s = new FuseSession({ backend, log: bugs.log, options }, 'prop');
      const init = initIn();
      await run(s, Buffer.concat([inHeader(40 + init.length, OP.INIT, 1n, 0n), init]));
      await run(s, Buffer.concat([inHeader(46, OP.LOOKUP, 2n, 1n), Buffer.from('hello\0')]));
      await run(s, Buffer.concat([inHeader(48, OP.OPEN, 3n, 2n), Buffer.from([2, 0, 0, 0, 0, 0, 0, 0])]));
      return s;
    };
    const bad: string[] = [];
    let checked = 0;
    // Found by this test and left as it is (docs/hardening.md): TMPFILE does not read the name
    // after fuse_create_in (the kernel sends one; duofs's own client and older guests may not),
    // so a request cut inside that name is served. Every fixed struct is read whole.
    const lax = new Set<number>([OP.TMPFILE]);
    // No reply by design (FORGET, BATCH_FORGET, INTERRUPT) or no arguments to cut (DESTROY).
    const skip = new Set<number>([OP.FORGET, OP.BATCH_FORGET, OP.INTERRUPT, OP.DESTROY, OP.INIT]);
    for (const seed of fuseSeeds()) {
      const opcode = seed.readUInt32LE(4);
      if (skip.has(opcode) || seed.length === 40) continue;
      const cuts: string[] = [];
      for (let n = 40; n < seed.length; n++) {
        const r = Buffer.from(seed.subarray(0, n));
        r.writeUInt32LE(n, 0);
        const s = await fresh();
        cuts.push(await run(s, r));
        s.close();
      }
      const s = await fresh();
      const whole = await run(s, seed);
      s.close();
      cuts.forEach((got, i) => {
        checked++;
        if (got !== 'errno 22' && got !== whole) bad.push(`opcode ${opcode} cut to ${40 + i} of ${seed.length} bytes: ${got} (whole: ${whole})`);
        if (got === 'ok' && whole === 'ok' && !lax.has(opcode)) bad.push(`opcode ${opcode} cut to ${40 + i} of ${seed.length} bytes was accepted`);
      });
    }
    expect(checked).toBeGreaterThan(500);
    expect(bad).toEqual([]);
    expect(bugs.take()).toEqual([]);
  } finally {
    scratch.cleanup();
  }
});
