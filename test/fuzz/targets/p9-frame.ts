// 9P2000.L frames into one in-process 9P session on a scratch export: byte 0
// of an input is the message type, the rest its body (size and tag are
// filled in, so the fuzzer explores bodies rather than framing, which the
// stream fuzz test in test/fuzz/9p-fuzz.test.ts covers). The session is
// attached as root on fid 0 and as nobody on fid 1, with fid 2 walked to
// sub/. Findings: an exception the session did not expect (logged "failed
// unexpectedly"), a request never answered, a reply that is not a frame for
// that tag, the event loop blocked for a second or more, a change outside
// the export, or a good client failing afterwards.
import { LocalBackend } from '../../../src/backend/backend.js';
import { HostUsers } from '../../../security/host-users.js';
import { Session } from '../../../protocols/9p/session.js';
import { NOFID, T, Writer, frame } from '../../p9/proto.js';
import { Finding, withinMs, type FuzzTarget, type TargetInstance } from '../engine.js';
import { bugLog, checkOutside, lateFifoUnblocker, scratchExport, throwBugs } from './common.js';

const RLERROR = 7;
const NOBODY = 65534;

const body = (f: (w: Writer) => Writer): Buffer => f(new Writer()).done();
const seed = (type: number, f: (w: Writer) => Writer): Buffer => Buffer.concat([Buffer.from([type]), body(f)]);

/** One valid frame of each kind the session handles (fids as start() leaves them). */
export function p9Seeds(): Buffer[] {
  return [
    seed(T.walk, (w) => w.u32(0).u32(5).u16(1).str('hello')),
    seed(T.walk, (w) => w.u32(0).u32(6).u16(2).str('sub').str('f')),
    seed(T.walk, (w) => w.u32(1).u32(7).u16(1).str('escape')),
    seed(T.walk, (w) => w.u32(2).u32(8).u16(1).str('..')),
    seed(T.lopen, (w) => w.u32(5).u32(2)),
    seed(T.lopen, (w) => w.u32(2).u32(0o200000)),
    seed(T.lcreate, (w) => w.u32(2).str('new').u32(0o102).u32(0o644).u32(0)),
    seed(T.getattr, (w) => w.u32(0).u64(0x3fffn)),
    seed(T.setattr, (w) => w.u32(5).u32(0x8).u32(0).u32(0).u32(0).u64(100n).u64(0n).u64(0n).u64(0n).u64(0n)),
    seed(T.setattr, (w) =>
      w
        .u32(2)
        .u32(0x1 | 0x30)
        .u32(0o755)
        .u32(0)
        .u32(0)
        .u64(0n)
        .u64(0n)
        .u64(0n)
        .u64(0n)
        .u64(0n),
    ),
    seed(T.readdir, (w) => w.u32(2).u64(0n).u32(4096)),
    seed(T.read, (w) => w.u32(5).u64(0n).u32(100)),
    seed(T.write, (w) => w.u32(5).u64(3n).u32(5).bytes(Buffer.from('abcde'))),
    seed(T.clunk, (w) => w.u32(5)),
    seed(T.remove, (w) => w.u32(6)),
    seed(T.statfs, (w) => w.u32(0)),
    seed(T.fsync, (w) => w.u32(5).u32(1)),
    seed(T.lock, (w) => w.u32(5).u8(1).u32(0).u64(0n).u64(10n).u32(42).str('fuzz')),
    seed(T.getlock, (w) => w.u32(5).u8(1).u64(0n).u64(0n).u32(42).str('fuzz')),
    seed(T.xattrwalk, (w) => w.u32(0).u32(9).str('')),
    seed(T.xattrwalk, (w) => w.u32(5).u32(9).str('user.a')),
    seed(T.xattrcreate, (w) => w.u32(5).str('user.a').u64(3n).u32(0)),
    seed(T.readlink, (w) => w.u32(7)),
    seed(T.symlink, (w) => w.u32(2).str('ln').str('../hello').u32(0)),
    seed(T.mknod, (w) => w.u32(2).str('node').u32(0o100644).u32(0).u32(0).u32(0)),
    seed(T.mknod, (w) => w.u32(2).str('fifo').u32(0o010644).u32(0).u32(0).u32(0)),
    seed(T.mkdir, (w) => w.u32(2).str('d').u32(0o755).u32(0)),
    seed(T.link, (w) => w.u32(2).u32(5).str('hard')),
    seed(T.rename, (w) => w.u32(5).u32(2).str('moved')),
    seed(T.renameat, (w) => w.u32(2).str('f').u32(0).str('g')),
    seed(T.unlinkat, (w) => w.u32(2).str('d').u32(0x200)),
    seed(T.flush, (w) => w.u16(1)),
    seed(T.version, (w) => w.u32(8192).str('9P2000.L')),
    seed(T.attach, (w) => w.u32(10).u32(NOFID).str('').str('').u32(NOBODY)),
    seed(T.auth, (w) => w.u32(10).str('').str('').u32(0)),
    // Last, as it turns fid 2 into an open file: create-without-EXCL of the FIFO made above (issue 17 defect 1).
    seed(T.lcreate, (w) => w.u32(2).str('fifo').u32(1).u32(0o644).u32(0)),
  ];
}

export function p9FrameTarget(): FuzzTarget {
  return {
    name: '9p-frame',
    describe: '9P2000.L request bodies into an in-process 9P session (type byte + body)',
    maxLen: 4096,
    dictionary: [
      Buffer.from('..'),
      Buffer.from('/'),
      Buffer.from('hello'),
      Buffer.from('user.'),
      Buffer.from('trusted.'),
      Buffer.from([0xff, 0xff, 0xff, 0xff]),
    ],
    seeds: p9Seeds,
    async start(): Promise<TargetInstance> {
      const scratch = scratchExport('duofs-fuzz9p-');
      const bugs = bugLog();
      const backend = new LocalBackend({ sharedDir: scratch.dir, log: bugs.log });
      const unblocker = lateFifoUnblocker(scratch.dir);
      const ctx = { backend, users: new HostUsers(), log: bugs.log, maxMsize: 1 << 20, exportPath: scratch.dir, maxFids: 256 };
      const waiting = new Map<number, (f: Buffer) => void>();
      let fault: string | undefined;
      let session!: Session;
      let nextTag = 1;
      let sinceSetup = 0;

      const onReply = (f: Buffer): void => {
        if (f.length < 7 || f.readUInt32LE(0) !== f.length) {
          fault ??= `reply frame size ${f.length >= 4 ? f.readUInt32LE(0) : '?'} for ${f.length} bytes`;
          return;
        }
        const tag = f.readUInt16LE(5);
        const w = waiting.get(tag);
        if (!w) {
          fault ??= `reply for tag ${tag}, which has no request outstanding`;
          return;
        }
        waiting.delete(tag);
        w(f);
      };

      const request = async (type: number, b: Buffer, what: string): Promise<Buffer> => {
        const tag = nextTag;
        nextTag = nextTag >= 0xfff0 ? 1 : nextTag + 1;
        const got = new Promise<Buffer>((res) => waiting.set(tag, res));
        const t0 = Date.now();
        session.handle(frame(type, tag, b));
        const blocked = Date.now() - t0;
        if (unblocker.blocked())
          throw new Finding('hang', `${what}: a FIFO open blocked the event loop (${blocked} ms; the host had to open the FIFO's other end)`);
        if (blocked >= 5000) throw new Finding('hang', `${what}: the event loop was blocked for ${blocked} ms in one request`);
        const reply = await withinMs(got, 10_000, what).finally(() => waiting.delete(tag));
        if (fault) throw new Finding('bad-reply', fault);
        const rtype = reply[4]!;
        if (rtype === RLERROR) {
          const errno = reply.length === 11 ? reply.readUInt32LE(7) : -1;
          if (errno < 1 || errno > 133) throw new Finding('bad-reply', `${what}: Rlerror with errno ${errno} (${reply.length} bytes)`);
        } else if (rtype !== type + 1) {
          throw new Finding('bad-reply', `${what}: answered with type ${rtype}`);
        }
        return reply;
      };

      const ok = async (type: number, b: Buffer, what: string): Promise<Buffer> => {
        const r = await request(type, b, what);
        if (r[4] === RLERROR) throw new Finding('no-answer', `${what} failed: errno ${r.readUInt32LE(7)}`);
        return r;
      };

      const setup = async (): Promise<void> => {
        session?.close();
        waiting.clear();
        session = new Session(ctx, 'fuzz', onReply);
        sinceSetup = 0;
        await ok(
          T.version,
          body((w) => w.u32(65536).str('9P2000.L')),
          'Tversion',
        );
        await ok(
          T.attach,
          body((w) => w.u32(0).u32(NOFID).str('').str(scratch.dir).u32(0)),
          'Tattach root',
        );
        await ok(
          T.attach,
          body((w) => w.u32(1).u32(NOFID).str('').str(scratch.dir).u32(NOBODY)),
          'Tattach nobody',
        );
        // sub/ may have been renamed or removed by an earlier input: fid 2 is then unbound.
        await request(
          T.walk,
          body((w) => w.u32(0).u32(2).u16(1).str('sub')),
          'Twalk sub',
        );
      };
      await setup();

      return {
        async exec(input: Buffer) {
          if (input.length === 0) return;
          if (sinceSetup++ > 200) await setup();
          const type = input[0]!;
          await request(type, input.subarray(1), `type ${type} with ${input.length - 1} body bytes`);
          throwBugs(bugs);
          if (type === T.version) await setup();
        },
        async check() {
          await setup();
          await ok(
            T.walk,
            body((w) => w.u32(0).u32(20).u16(0)),
            'check: Twalk (clone of the root)',
          );
          await ok(
            T.getattr,
            body((w) => w.u32(20).u64(0x7ffn)),
            'check: Tgetattr of the root',
          );
          await ok(
            T.statfs,
            body((w) => w.u32(20)),
            'check: Tstatfs',
          );
          await ok(
            T.clunk,
            body((w) => w.u32(20)),
            'check: Tclunk',
          );
          checkOutside(scratch);
          throwBugs(bugs);
        },
        stop() {
          session?.close();
          unblocker.stop();
          scratch.cleanup();
        },
      };
    },
  };
}
