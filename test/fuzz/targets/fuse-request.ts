// FUSE requests (in-header + arguments, as a guest kernel puts them on a
// virtio-fs queue) into an in-process FUSE session on a scratch export, after
// an INIT. The unique id is filled in; everything else — len, opcode, node
// id, caller, arguments, extensions — is the fuzzer's. A request longer than
// 48 bytes arrives in two segments (as over several descriptors), split at a
// point the input decides. Findings: an exception the session did not
// expect, a request answered twice or never, an errno outside 1..4095, a
// READ reply beyond max_write, a change outside the export, or a good
// LOOKUP/GETATTR failing afterwards.
import { LocalBackend } from '../../../src/backend/backend.js';
import { SysError } from '../../../src/sys/index.js';
import { FuseSession } from '../../../protocols/fuse/session.js';
import { RequestBody, type ReplyTo } from '../../../protocols/fuse/request.js';
import { defaultFuseOptions } from '../../../protocols/fuse/options.js';
import { OP, cstr, inHeader, initIn, lkIn, setattrIn } from '../../fuse/client.js';
import { Finding, withinMs, type FuzzTarget, type TargetInstance } from '../engine.js';
import { bugLog, checkOutside, lateFifoUnblocker, scratchExport, throwBugs } from './common.js';

const u32 = (...v: number[]): Buffer => {
  const b = Buffer.alloc(4 * v.length);
  v.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i));
  return b;
};
const u64 = (...v: bigint[]): Buffer => {
  const b = Buffer.alloc(8 * v.length);
  v.forEach((x, i) => b.writeBigUInt64LE(x, 8 * i));
  return b;
};
const req = (opcode: number, nodeid: bigint, ...args: Buffer[]): Buffer => {
  const a = Buffer.concat(args);
  return Buffer.concat([inHeader(40 + a.length, opcode, 0n, nodeid), a]);
};

/** One request of each kind (node 1 is the root; fh 1.. are what start() and earlier seeds opened). */
export function fuseSeeds(): Buffer[] {
  return [
    req(OP.LOOKUP, 1n, cstr('hello')),
    req(OP.LOOKUP, 1n, cstr('sub')),
    req(OP.LOOKUP, 1n, cstr('..')),
    req(OP.GETATTR, 1n, u32(0, 0), u64(0n)),
    req(OP.SETATTR, 2n, setattrIn({ valid: 0x8, size: 100n })),
    req(OP.SETATTR, 2n, setattrIn({ valid: 0x1, mode: 0o100600 })),
    req(OP.READLINK, 1n),
    req(OP.SYMLINK, 1n, cstr('ln'), cstr('../outside/secret')),
    req(OP.MKNOD, 1n, u32(0o010644, 0, 0o022, 0), cstr('fifo')),
    req(OP.MKNOD, 1n, u32(0o100644, 0, 0o022, 0), cstr('node')),
    req(OP.MKDIR, 1n, u32(0o755, 0o022), cstr('d')),
    req(OP.UNLINK, 1n, cstr('node')),
    req(OP.RMDIR, 1n, cstr('d')),
    req(OP.RENAME, 1n, u64(1n), cstr('hello'), cstr('hello2')),
    req(OP.RENAME2, 1n, u64(1n), u32(2, 0), cstr('hello2'), cstr('hello')),
    req(OP.LINK, 1n, u64(2n), cstr('hard')),
    req(OP.OPEN, 2n, u32(2, 0)),
    req(OP.OPEN, 2n, u32(0o1, 0)),
    req(OP.CREATE, 1n, u32(0o102, 0o644, 0o022, 0), cstr('new')),
    req(OP.CREATE, 1n, u32(0o1, 0o644, 0o022, 0), cstr('fifo')),
    req(OP.TMPFILE, 1n, u32(0o20000002, 0o600, 0o022, 0), cstr('')),
    req(OP.READ, 2n, u64(1n, 0n), u32(100, 0), u64(0n), u32(0, 0)),
    req(OP.WRITE, 2n, u64(1n, 5n), u32(4, 0), u64(0n), u32(0, 0), Buffer.from('data')),
    req(OP.STATFS, 1n),
    req(OP.RELEASE, 2n, u64(1n), u32(0, 0), u64(0n)),
    req(OP.FLUSH, 2n, u64(1n), u32(0, 0), u64(0n)),
    req(OP.FSYNC, 2n, u64(1n), u32(1, 0)),
    req(OP.OPENDIR, 1n, u32(0, 0)),
    req(OP.READDIR, 1n, u64(2n, 0n), u32(4096, 0), u64(0n), u32(0, 0)),
    req(OP.READDIRPLUS, 1n, u64(2n, 0n), u32(4096, 0), u64(0n), u32(0, 0)),
    req(OP.RELEASEDIR, 1n, u64(2n), u32(0, 0), u64(0n)),
    req(OP.FSYNCDIR, 1n, u64(2n), u32(0, 0)),
    req(OP.SETXATTR, 2n, u32(3, 0, 0, 0), cstr('user.a'), Buffer.from('val')),
    req(OP.GETXATTR, 2n, u32(100, 0), cstr('user.a')),
    req(OP.LISTXATTR, 2n, u32(100, 0)),
    req(OP.REMOVEXATTR, 2n, cstr('user.a')),
    req(OP.ACCESS, 2n, u32(4, 0)),
    req(OP.FALLOCATE, 2n, u64(1n, 0n, 4096n), u32(0, 0)),
    req(OP.LSEEK, 2n, u64(1n, 0n), u32(3, 0)),
    req(OP.COPY_FILE_RANGE, 2n, u64(1n, 0n, 2n, 1n, 100n, 10n, 0n)),
    req(OP.SYNCFS, 1n, u64(0n)),
    req(OP.STATX, 1n, u32(0, 0), u64(0n), u32(0, 0x7ff)),
    req(OP.GETLK, 2n, lkIn(1n, 7n, { type: 1 })),
    req(OP.SETLK, 2n, lkIn(1n, 7n, { type: 1 })),
    req(OP.SETLK, 2n, lkIn(1n, 7n, { type: 1 }, 1)),
    req(OP.SETLKW, 2n, lkIn(1n, 8n, { type: 0 })),
    req(OP.INTERRUPT, 0n, u64(5n)),
    req(OP.FORGET, 2n, u64(1n)),
    req(OP.BATCH_FORGET, 0n, u32(1, 0), u64(2n, 1n)),
    req(OP.DESTROY, 0n),
    req(OP.INIT, 0n, initIn()),
    req(OP.IOCTL, 2n, u64(1n), u32(0, 0), u64(0n), u32(0, 0)),
  ];
}

interface Outcome {
  calls: number;
  error?: number;
  kind?: string;
}

export function fuseRequestTarget(): FuzzTarget {
  return {
    name: 'fuse-request',
    describe: 'FUSE requests (in-header + arguments) into an in-process FUSE session after INIT',
    maxLen: 8192,
    dictionary: [cstr('..'), cstr('hello'), cstr('user.a'), cstr('trusted.x'), cstr('system.posix_acl_access'), u32(26), u32(0xffffffff), u64(1n)],
    seeds: fuseSeeds,
    async start(): Promise<TargetInstance> {
      const scratch = scratchExport('duofs-fuzzfuse-');
      const bugs = bugLog();
      const backend = new LocalBackend({ sharedDir: scratch.dir, log: bugs.log });
      // An open of a FIFO that blocks the event loop is a finding (the 1 s check below), not a wedged fuzzer.
      const unblocker = lateFifoUnblocker(scratch.dir);
      const options = { ...defaultFuseOptions, xattr: true };
      let session!: FuseSession;
      let unique = 1n;
      let sinceSetup = 0;
      const readBuf = Buffer.alloc(options.maxWrite);

      const send = async (request: Buffer, what: string): Promise<Outcome> => {
        const r = Buffer.from(request);
        if (r.length >= 16) r.writeBigUInt64LE(unique++, 8);
        const opcode = r.length >= 8 ? r.readUInt32LE(4) : -1;
        const cut = r.length > 48 ? 40 + (r.length % (r.length - 40)) : r.length;
        const body = new RequestBody(cut < r.length ? [r.subarray(0, cut), r.subarray(cut)] : [r]);
        const out: Outcome = { calls: 0 };
        // Not thrown from the callbacks: the session would take it for a failed handler.
        let violation: string | undefined;
        let answered!: () => void;
        const done = new Promise<void>((res) => {
          answered = res;
        });
        const once = (kind: string): void => {
          out.calls++;
          out.kind = kind;
          if (out.calls > 1) violation ??= `${what}: answered ${out.calls} times (${kind} after an earlier reply)`;
          answered();
        };
        const to: ReplyTo = {
          send: (error, parts) => {
            once('send');
            if (!Number.isInteger(error) || error < 0 || error > 4095) violation ??= `${what}: errno ${error}`;
            if (error && parts.length) violation ??= `${what}: an error reply with a body`;
            out.error = error;
            return true;
          },
          sendRead: (size, fill) => {
            if (size > options.maxWrite) {
              once('sendRead');
              violation ??= `${what}: READ of ${size} bytes, above max_write`;
              return;
            }
            // As /dev/fuse does: fill one buffer; a SysError becomes the error reply.
            const filled = (n: number): void => {
              if (!(n >= 0 && n <= size)) violation ??= `${what}: READ filled ${n} of at most ${size} bytes`;
              out.error = 0;
              once('sendRead');
            };
            const failed = (e: unknown): void => {
              if (!(e instanceof SysError)) violation ??= `${what}: READ fill threw ${(e as Error).message}`;
              out.error = e instanceof SysError ? e.errno : 5;
              once('sendRead');
            };
            try {
              const n = fill([readBuf.subarray(0, size)], 0, size);
              if (typeof n === 'number') filled(n);
              else n.then(filled, failed);
            } catch (e) {
              failed(e);
            }
          },
          none: () => {
            once('none');
          },
        };
        const t0 = Date.now();
        session.handle(body, to);
        const blocked = Date.now() - t0;
        if (unblocker.blocked())
          throw new Finding('hang', `${what}: a FIFO open blocked the event loop (${blocked} ms; the host had to open the FIFO's other end)`);
        if (blocked >= 5000) throw new Finding('hang', `${what}: the event loop was blocked for ${blocked} ms in one request`);
        try {
          await withinMs(done, opcode === OP.SETLKW ? 300 : 10_000, what);
        } catch (e) {
          // A SETLKW may wait for a lock an earlier input took: cancel it as a stopping queue would.
          if (opcode !== OP.SETLKW) throw e;
          session.cancelWaits();
          await withinMs(done, 5000, `${what} after cancelWaits`);
        }
        // A second reply would come on a later turn: give it one.
        await new Promise((res) => setImmediate(res));
        if (violation) throw new Finding('bad-reply', violation);
        return out;
      };

      const ok = async (request: Buffer, what: string): Promise<void> => {
        const o = await send(request, what);
        if (o.error) throw new Finding('no-answer', `${what} failed with errno ${o.error}`);
      };

      const setup = async (): Promise<void> => {
        session?.close();
        session = new FuseSession({ backend, log: bugs.log, options }, 'fuzz');
        sinceSetup = 0;
        await ok(req(OP.INIT, 0n, initIn()), 'INIT');
        // node 2 = hello, fh 1 = hello opened read-write (what the seeds name).
        await send(req(OP.LOOKUP, 1n, cstr('hello')), 'LOOKUP hello');
        await send(req(OP.OPEN, 2n, u32(2, 0)), 'OPEN hello');
      };
      await setup();

      return {
        async exec(input: Buffer) {
          if (sinceSetup++ > 200) await setup();
          await send(input, `opcode ${input.length >= 8 ? input.readUInt32LE(4) : '?'} (${input.length} bytes)`);
          throwBugs(bugs);
        },
        async check() {
          await setup();
          await ok(req(OP.GETATTR, 1n, u32(0, 0), u64(0n)), 'check: GETATTR root');
          await ok(req(OP.STATFS, 1n), 'check: STATFS');
          await ok(req(OP.OPENDIR, 1n, u32(0, 0)), 'check: OPENDIR root');
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
