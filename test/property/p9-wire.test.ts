// Property tests for the 9P wire codec (protocols/9p/wire.ts) and the
// session's decoding of every request type.
//  * encode∘decode is identity, field by field, for every 9P2000.L message
//    layout (T and R), with the server's Writer and with the test client's
//    independent one (test/p9/proto.ts);
//  * every truncation of a valid frame is refused by the Reader with a
//    ProtocolError naming what ran out (never a RangeError);
//  * every truncation of a valid request frame, handed to a live session,
//    is answered Rlerror(EPROTO) — or the errno the whole frame gets, when
//    the request fails for a reason the truncation does not touch — never
//    accepted, never an unexpected exception.
import { expect } from '@jest/globals';
import { fc, test } from '@fast-check/jest';
import { ProtocolError, Reader, Writer } from '../../protocols/9p/wire.js';
import { Writer as ClientWriter, frame as clientFrame } from '../p9/proto.js';
import { LocalBackend } from '../../src/backend/backend.js';
import { HostUsers } from '../../security/host-users.js';
import { Session } from '../../protocols/9p/session.js';
import { p9Seeds } from '../fuzz/targets/p9-frame.js';
import { bugLog, scratchExport } from '../fuzz/targets/common.js';

type Field = 'u8' | 'u16' | 'u32' | 'u64' | 'str' | 'qid' | 'data' | 'nstr' | 'nqid';
type Value =
  | number
  | bigint
  | Buffer
  | { type: number; version: number; path: bigint }
  | Buffer[]
  | { type: number; version: number; path: bigint }[];

/** Message layouts after size[4] type[1] tag[2] (Linux net/9p/protocol.c, 9P2000.L). */
const LAYOUTS: Record<string, Field[]> = {
  Tversion: ['u32', 'str'],
  Rversion: ['u32', 'str'],
  Tauth: ['u32', 'str', 'str', 'u32'],
  Rauth: ['qid'],
  Tattach: ['u32', 'u32', 'str', 'str', 'u32'],
  Rattach: ['qid'],
  Rlerror: ['u32'],
  Tflush: ['u16'],
  Rflush: [],
  Twalk: ['u32', 'u32', 'nstr'],
  Rwalk: ['nqid'],
  Tlopen: ['u32', 'u32'],
  Rlopen: ['qid', 'u32'],
  Tlcreate: ['u32', 'str', 'u32', 'u32', 'u32'],
  Rlcreate: ['qid', 'u32'],
  Tgetattr: ['u32', 'u64'],
  Rgetattr: [
    'u64',
    'qid',
    'u32',
    'u32',
    'u32',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
    'u64',
  ],
  Tsetattr: ['u32', 'u32', 'u32', 'u32', 'u32', 'u64', 'u64', 'u64', 'u64', 'u64'],
  Rsetattr: [],
  Treaddir: ['u32', 'u64', 'u32'],
  Rreaddir: ['data'],
  Tread: ['u32', 'u64', 'u32'],
  Rread: ['data'],
  Twrite: ['u32', 'u64', 'data'],
  Rwrite: ['u32'],
  Tclunk: ['u32'],
  Tremove: ['u32'],
  Tstatfs: ['u32'],
  Rstatfs: ['u32', 'u32', 'u64', 'u64', 'u64', 'u64', 'u64', 'u64', 'u32'],
  Tfsync: ['u32', 'u32'],
  Tlock: ['u32', 'u8', 'u32', 'u64', 'u64', 'u32', 'str'],
  Rlock: ['u8'],
  Tgetlock: ['u32', 'u8', 'u64', 'u64', 'u32', 'str'],
  Rgetlock: ['u8', 'u64', 'u64', 'u32', 'str'],
  Txattrwalk: ['u32', 'u32', 'str'],
  Rxattrwalk: ['u64'],
  Txattrcreate: ['u32', 'str', 'u64', 'u32'],
  Treadlink: ['u32'],
  Rreadlink: ['str'],
  Tsymlink: ['u32', 'str', 'str', 'u32'],
  Rsymlink: ['qid'],
  Tmknod: ['u32', 'str', 'u32', 'u32', 'u32', 'u32'],
  Rmknod: ['qid'],
  Tmkdir: ['u32', 'str', 'u32', 'u32'],
  Rmkdir: ['qid'],
  Tlink: ['u32', 'u32', 'str'],
  Trename: ['u32', 'u32', 'str'],
  Trenameat: ['u32', 'str', 'u32', 'str'],
  Tunlinkat: ['u32', 'str', 'u32'],
};

const qidArb = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  version: fc.nat({ max: 0xffffffff }),
  path: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
});
const bytesArb = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const arbOf = (f: Field): fc.Arbitrary<Value> => {
  switch (f) {
    case 'u8':
      return fc.integer({ min: 0, max: 255 });
    case 'u16':
      return fc.integer({ min: 0, max: 0xffff });
    case 'u32':
      return fc.nat({ max: 0xffffffff });
    case 'u64':
      return fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    case 'str':
      return bytesArb(300);
    case 'data':
      return bytesArb(2000);
    case 'qid':
      return qidArb;
    case 'nstr':
      return fc.array(bytesArb(40), { maxLength: 16 });
    case 'nqid':
      return fc.array(qidArb, { maxLength: 16 });
  }
};

type AnyWriter = {
  u8(v: number): unknown;
  u16(v: number): unknown;
  u32(v: number): unknown;
  u64(v: bigint): unknown;
  str(s: Buffer): unknown;
  bytes(b: Buffer): unknown;
  qid(q: { type: number; version: number; path: bigint }): unknown;
};
function encode(w: AnyWriter, fields: Field[], values: Value[]): void {
  fields.forEach((f, i) => {
    const v = values[i]!;
    switch (f) {
      case 'u8':
        w.u8(v as number);
        break;
      case 'u16':
        w.u16(v as number);
        break;
      case 'u32':
        w.u32(v as number);
        break;
      case 'u64':
        w.u64(v as bigint);
        break;
      case 'str':
        w.str(v as Buffer);
        break;
      case 'data':
        w.u32((v as Buffer).length);
        w.bytes(v as Buffer);
        break;
      case 'qid':
        w.qid(v as { type: number; version: number; path: bigint });
        break;
      case 'nstr':
        w.u16((v as Buffer[]).length);
        for (const s of v as Buffer[]) w.str(s);
        break;
      case 'nqid':
        w.u16((v as unknown[]).length);
        for (const q of v as { type: number; version: number; path: bigint }[]) w.qid(q);
        break;
    }
  });
}
function decode(r: Reader, fields: Field[]): Value[] {
  const qid = () => ({ type: r.u8(), version: r.u32(), path: r.u64() });
  return fields.map((f): Value => {
    switch (f) {
      case 'u8':
        return r.u8();
      case 'u16':
        return r.u16();
      case 'u32':
        return r.u32();
      case 'u64':
        return r.u64();
      case 'str':
        return Buffer.from(r.str());
      case 'data':
        return Buffer.from(r.bytes(r.u32()));
      case 'qid':
        return qid();
      case 'nstr': {
        const n = r.u16();
        return Array.from({ length: n }, () => Buffer.from(r.str()));
      }
      case 'nqid': {
        const n = r.u16();
        return Array.from({ length: n }, qid);
      }
    }
  });
}

const messages = fc
  .constantFrom(...Object.keys(LAYOUTS))
  .chain((name) => fc.tuple(fc.constant(name), fc.tuple(...LAYOUTS[name]!.map(arbOf)), fc.integer({ min: 0, max: 0xffff })));

test.prop([messages], { numRuns: 400 })('encode then decode gives back every field (server Writer)', ([name, values, tag]) => {
  const w = new Writer(16);
  encode(w, LAYOUTS[name]!, values);
  const f = w.finish(100, tag);
  expect(f.readUInt32LE(0)).toBe(f.length);
  expect(f.readUInt16LE(5)).toBe(tag);
  const r = new Reader(f);
  expect(decode(r, LAYOUTS[name]!)).toEqual(values);
  expect(r.remaining).toBe(0);
});

test.prop([messages], { numRuns: 400 })('frames from the independent client codec decode to the same fields', ([name, values, tag]) => {
  const w = new ClientWriter();
  encode(w, LAYOUTS[name]!, values);
  const r = new Reader(clientFrame(100, tag, w.done()));
  expect(decode(r, LAYOUTS[name]!)).toEqual(values);
  expect(r.remaining).toBe(0);
});

test.prop([messages.filter(([n]) => LAYOUTS[n]!.length > 0), fc.double({ min: 0, max: 1, noNaN: true })], { numRuns: 600 })(
  'every truncation is refused with a ProtocolError naming what ran out',
  ([name, values, tag], where) => {
    const w = new Writer(16);
    encode(w, LAYOUTS[name]!, values);
    const full = w.finish(100, tag);
    const cut = 7 + Math.floor(where * (full.length - 7)); // 7..length-1: the header stays
    if (cut >= full.length) return;
    const r = new Reader(full.subarray(0, cut));
    let err: unknown;
    try {
      decode(r, LAYOUTS[name]!);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toMatch(/^decode (u8|u16|u32|u64|string|data) runs past the end of the frame: EPROTO$/);
  },
);

test("every truncation of a valid request is answered Rlerror(EPROTO) by a session (or the whole frame's errno)", async () => {
  const scratch = scratchExport('duofs-prop9p-');
  const bugs = bugLog();
  try {
    const backend = new LocalBackend({ sharedDir: scratch.dir, log: bugs.log });
    const ctx = { backend, users: new HostUsers(), log: bugs.log, maxMsize: 1 << 20, exportPath: scratch.dir, maxFids: 64 };
    const frameOf = (type: number, body: Buffer) => clientFrame(type, 1, body);
    // A session as the fuzz seeds expect it: fid 0 root, 1 nobody, 2 sub/, 5 hello opened, 6 sub/f, 7 escape.
    const fresh = (): { s: Session; last: () => Buffer | undefined } => {
      let last: Buffer | undefined;
      const s = new Session(ctx, 'prop', (f) => {
        last = Buffer.from(f);
      });
      const seeds = p9Seeds();
      const setup = [
        frameOf(100, new ClientWriter().u32(65536).str('9P2000.L').done()),
        frameOf(104, new ClientWriter().u32(0).u32(0xffffffff).str('').str(scratch.dir).u32(0).done()),
        frameOf(104, new ClientWriter().u32(1).u32(0xffffffff).str('').str(scratch.dir).u32(65534).done()),
        frameOf(110, new ClientWriter().u32(0).u32(2).u16(1).str('sub').done()),
        ...seeds.slice(0, 3).map((x) => frameOf(x[0]!, x.subarray(1))),
        frameOf(12, new ClientWriter().u32(5).u32(2).done()),
      ];
      for (const f of setup) s.handle(f);
      return { s, last: () => last };
    };
    const outcome = async (f: Buffer): Promise<string> => {
      const { s, last } = fresh();
      s.handle(f);
      for (let i = 0; i < 50 && last()?.readUInt16LE(5) !== 1; i++) await new Promise((r) => setTimeout(r, 2));
      const reply = last();
      s.close();
      if (!reply) return 'no reply';
      return reply[4] === 7 ? `errno ${reply.readUInt32LE(7)}` : `R${reply[4]}`;
    };
    const bad: string[] = [];
    let checked = 0;
    for (const seed of p9Seeds()) {
      const type = seed[0]!;
      if (type === 100 || type === 108) continue; // Tversion's string and Tflush's tag are checked above by the codec
      const body = seed.subarray(1);
      // Truncations first: the whole frame may rename or remove what the setup walks to.
      const cuts: string[] = [];
      for (let n = 0; n < body.length; n++) cuts.push(await outcome(frameOf(type, body.subarray(0, n))));
      const whole = await outcome(frameOf(type, body));
      cuts.forEach((got, n) => {
        checked++;
        if (got !== 'errno 71' && got !== whole) bad.push(`type ${type} cut to ${n} of ${body.length} body bytes: ${got} (whole frame: ${whole})`);
      });
    }
    expect(checked).toBeGreaterThan(300);
    expect(bad).toEqual([]);
    expect(bugs.take()).toEqual([]);
  } finally {
    scratch.cleanup();
  }
});
