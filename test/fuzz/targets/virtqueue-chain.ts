// Descriptor chains: a split virtqueue of 8 entries over two guest memory
// regions (64 KiB at gpa 0x10000 and 64 KiB at 0x30000, a hole between),
// popped by the server's SplitQueue. An input is
//   [options][avail count][8 heads (u16 each)][8 descriptors (16 bytes each)][bytes at gpa 0x11000...]
// options bit 0: INDIRECT_DESC negotiated, bit 1: EVENT_IDX. Each popped
// chain is checked (every view inside guest memory, lengths adding up,
// readable before writable) and completed with a length the input picks;
// the used ring must then say exactly that. Findings: an exception out of
// the queue (faults must go to onFault), a view outside guest memory, a
// used entry that does not match, or more chains than were made available.
import { GuestMemory, hostAddressOf } from '../../../protocols/virtqueue/guest-memory.js';
import { SplitQueue } from '../../../protocols/virtqueue/split-queue.js';
import { createMemfd } from '../../../src/sys/mem.js';
import { Finding, type FuzzTarget, type TargetInstance } from '../engine.js';

const SIZE = 8;
const A = { guestAddr: 0x10000, size: 0x10000, userAddr: 0x7000_0000_0000, mmapOffset: 0 };
const B = { guestAddr: 0x30000, size: 0x10000, userAddr: 0x7000_0001_0000, mmapOffset: 0x10000 };
const RING = { desc: A.userAddr, avail: A.userAddr + 0x100, used: A.userAddr + 0x200 };
const DATA_GPA = 0x11000;
const HEADER = 2 + 2 * SIZE;

const NEXT = 1,
  WRITE = 2,
  INDIRECT = 4;
function desc(addr: number, len: number, flags: number, next = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(addr), 0);
  b.writeUInt32LE(len, 8);
  b.writeUInt16LE(flags, 12);
  b.writeUInt16LE(next, 14);
  return b;
}
function input(opts: number, heads: number[], descs: Buffer[], data = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(HEADER);
  h[0] = opts;
  h[1] = heads.length;
  heads.forEach((x, i) => h.writeUInt16LE(x, 2 + 2 * i));
  const table = Buffer.alloc(16 * SIZE);
  descs.forEach((d, i) => d.copy(table, 16 * i));
  return Buffer.concat([h, table, data]);
}

export function chainSeeds(): Buffer[] {
  return [
    input(0, [0], [desc(0x12000, 40, NEXT, 1), desc(0x13000, 64, WRITE)]),
    input(0, [0, 2], [desc(0x12000, 40, NEXT, 1), desc(0x13000, 64, WRITE), desc(0x1f000, 0x2000, NEXT, 3), desc(0x30000, 16, WRITE)]),
    input(1, [0], [desc(DATA_GPA, 32, INDIRECT)], Buffer.concat([desc(0x12000, 8, NEXT, 1), desc(0x13000, 8, WRITE)])),
    input(3, [0, 0], [desc(0x1fff8, 16, WRITE)]),
    input(0, [0], [desc(0x20000, 16, 0)]),
    input(0, [1], [desc(0x12000, 8, NEXT, 1), desc(0x12000, 8, NEXT, 0)]),
    input(1, [0], [desc(0x2fff0, 32, INDIRECT)]),
    input(0, [0], [desc(0x13000, 8, WRITE | NEXT, 1), desc(0x12000, 8, 0)]),
  ];
}

export function virtqueueChainTarget(): FuzzTarget {
  return {
    name: 'virtqueue-chain',
    describe: 'split-virtqueue descriptor tables and avail rings popped by SplitQueue over two guest memory regions',
    maxLen: HEADER + 16 * SIZE + 512,
    dictionary: [desc(0x12000, 16, NEXT, 1), desc(DATA_GPA, 16, INDIRECT), desc(0x30000, 64, WRITE), Buffer.from([0xf0, 0xff, 0x01, 0x00])],
    seeds: chainSeeds,
    async start(): Promise<TargetInstance> {
      // add() takes (and closes) the fd: one memfd per region, B at an offset in its own.
      const memory = new GuestMemory();
      memory.add(A, createMemfd('duofs-fuzz-ram-a', A.size));
      memory.add(B, createMemfd('duofs-fuzz-ram-b', B.mmapOffset + B.size));
      const ranges = [A, B].map((r) => {
        const v = memory.viewUserRange(r.userAddr, r.size)!;
        return { gpa: r.guestAddr, size: r.size, host: hostAddressOf(v.buf)!, buf: v.buf };
      });
      const ring = (va: number, n: number): Buffer => memory.viewUserRange(va, n)!.buf;
      const descBuf = ring(RING.desc, 16 * SIZE);
      const availBuf = ring(RING.avail, 6 + 2 * SIZE);
      const usedBuf = ring(RING.used, 6 + 8 * SIZE);
      const rings = {
        desc: memory.viewUserRange(RING.desc, 16 * SIZE)!,
        avail: memory.viewUserRange(RING.avail, 6 + 2 * SIZE)!,
        used: memory.viewUserRange(RING.used, 6 + 8 * SIZE)!,
      };

      return {
        exec(raw: Buffer) {
          const inp = Buffer.alloc(HEADER + 16 * SIZE);
          raw.copy(inp, 0, 0, inp.length);
          const data = raw.subarray(inp.length);
          ranges[0]!.buf.fill(0, DATA_GPA - A.guestAddr, DATA_GPA - A.guestAddr + 512);
          data.copy(ranges[0]!.buf, DATA_GPA - A.guestAddr);
          inp.copy(descBuf, 0, HEADER, HEADER + 16 * SIZE);
          const count = inp[1]!;
          availBuf.fill(0);
          usedBuf.fill(0);
          availBuf.writeUInt16LE(count, 2);
          for (let i = 0; i < SIZE; i++) availBuf.writeUInt16LE(inp.readUInt16LE(2 + 2 * i), 4 + 2 * i);
          let fault: string | undefined;
          const q = new SplitQueue(
            {
              index: 0,
              size: SIZE,
              memory,
              eventIdx: (inp[0]! & 2) !== 0,
              indirect: (inp[0]! & 1) !== 0,
              lastAvail: 0,
              notify: () => {},
              onFault: (f) => {
                fault = f;
              },
            },
            rings,
          );
          const completed: { head: number; len: number }[] = [];
          let problem: string | undefined;
          q.drain((chain) => {
            let prevWritable = false;
            for (const [list, writable] of [
              [chain.readable, false],
              [chain.writable, true],
            ] as const) {
              for (const v of list) {
                const at = hostAddressOf(v);
                const inside = at !== undefined && ranges.some((r) => at >= r.host && at + v.length <= r.host + r.size);
                if (!inside) problem ??= `chain ${chain.head}: a ${v.length}-byte ${writable ? 'writable' : 'readable'} view outside guest memory`;
                if (v.length === 0) problem ??= `chain ${chain.head}: an empty view`;
              }
              if (!writable && prevWritable) problem ??= 'readable after writable';
              prevWritable = writable;
            }
            const want = (chain.head * 7 + count) % (chain.writableLength + 1);
            completed.push({ head: chain.head, len: want });
            chain.complete(want);
          });
          q.flush();
          if (problem) throw new Finding('escape', problem);
          const pending = count & 0xffff;
          if (completed.length > pending) throw new Finding('property', `${completed.length} chains from ${pending} available entries`);
          if (fault === undefined && pending <= SIZE && completed.length !== pending)
            throw new Finding('property', `${completed.length} of ${pending} chains popped and no fault`);
          const usedIdx = usedBuf.readUInt16LE(2);
          if (usedIdx !== completed.length) throw new Finding('property', `used idx ${usedIdx} after ${completed.length} completions`);
          completed.forEach((c, i) => {
            const id = usedBuf.readUInt32LE(4 + 8 * i);
            const len = usedBuf.readUInt32LE(8 + 8 * i);
            if (id !== c.head || len !== c.len) throw new Finding('property', `used[${i}] = (${id}, ${len}), completed (${c.head}, ${c.len})`);
          });
          q.retire();
        },
        check() {},
        stop() {
          memory.clear();
        },
      };
    },
  };
}
