// Malformed vhost-user messages: refused with a nonzero REPLY_ACK when the
// frontend asked for one, otherwise the connection is dropped. Either way
// the fault is logged with the peer, no fd leaks, and the daemon goes on
// serving (a fresh, well-formed connection works).
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { readdirSync } from 'node:fs';
import { FLAG_VERSION, FLAG_REPLY, Req, u64Payload, vringStatePayload } from '../../protocols/vhost-user/protocol.js';
import { closeFd } from '../../src/sys/fd.js';
import { createEventFd } from '../../src/sys/eventfd.js';
import { createMemfd } from '../../src/sys/mem.js';
import { NEED_REPLY, rawFrame, vringAddrPayload, type VhostUserFrontend } from './driver.js';
import { Fixture, within } from './harness.js';

let fx: Fixture;
beforeEach(() => {
  fx = new Fixture();
});
afterEach(() => fx.close());

const openFds = () => readdirSync('/proc/self/fd').length;

async function servesFreshConnection(): Promise<void> {
  const fe = await fx.connect();
  expect((await within(fe.request(1, { out: [Buffer.from('still here')], in: [16] }), 2000, 'fresh request')).data.toString()).toBe('still here');
  fe.close();
  await fx.nextDisconnect();
}

function faultLogged(re: RegExp): boolean {
  return fx.warnings().some((l) => /^#\d+ pid \d+ uid \d+$/.test(l.peer ?? '') && re.test(String(l.fault)));
}

/** A frontend that negotiated (REPLY_ACK on) but set up nothing else. */
const bare = () => fx.connect({ negotiateOnly: true });

describe('refused with a nonzero ack (NEED_REPLY set)', () => {
  const cases: { name: string; fault: RegExp; regions?: number; run(fe: VhostUserFrontend): Promise<bigint | undefined> }[] = [
    {
      name: 'SET_FEATURES with a 4-byte payload',
      fault: /SET_FEATURES: payload of 4 bytes, expected 8/,
      run: (fe) => fe.send(Req.SET_FEATURES, Buffer.alloc(4)),
    },
    {
      name: 'SET_MEM_TABLE with two regions and one fd',
      fault: /SET_MEM_TABLE: 1 fds, expected 2/,
      run: (fe) => {
        const p = Buffer.alloc(8 + 64);
        p.writeUInt32LE(2, 0);
        fe.regionDescriptor(0).copy(p, 8);
        fe.regionDescriptor(0).copy(p, 40);
        return fe.send(Req.SET_MEM_TABLE, p, [fe.ram.fd]);
      },
    },
    {
      name: 'SET_MEM_TABLE with nine regions',
      fault: /9 regions, at most 8/,
      run: (fe) => {
        const p = Buffer.alloc(8 + 9 * 32);
        p.writeUInt32LE(9, 0);
        return fe.send(Req.SET_MEM_TABLE, p);
      },
    },
    {
      name: 'SET_MEM_TABLE whose size disagrees with its region count',
      fault: /payload of 40 bytes, expected 72/,
      run: (fe) => {
        const p = Buffer.alloc(40);
        p.writeUInt32LE(2, 0);
        return fe.send(Req.SET_MEM_TABLE, p);
      },
    },
    {
      name: 'ADD_MEM_REG without an fd',
      fault: /ADD_MEM_REG: 0 fds, expected 1/,
      run: (fe) => fe.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), fe.regionDescriptor(0)])),
    },
    {
      name: 'ADD_MEM_REG larger than its fd',
      fault: /needs \d+ bytes of its fd, which has \d+/,
      run: (fe) => {
        const d = fe.regionDescriptor(0);
        d.writeBigUInt64LE(BigInt(fe.ram.regions[0]!.size + 4096), 8);
        return fe.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), d]), [fe.ram.fd]);
      },
    },
    {
      name: 'ADD_MEM_REG with a size beyond 2^53',
      fault: /region size 0x1000000000000000 is beyond 2\^53/,
      run: (fe) => {
        const d = fe.regionDescriptor(0);
        d.writeBigUInt64LE(1n << 60n, 8);
        return fe.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), d]), [fe.ram.fd]);
      },
    },
    {
      name: 'ADD_MEM_REG of an eventfd',
      fault: /region fd is not a file or device/,
      run: async (fe) => {
        const e = createEventFd();
        try {
          return await fe.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), fe.regionDescriptor(0)]), [e]);
        } finally {
          closeFd(e);
        }
      },
    },
    {
      name: 'ADD_MEM_REG overlapping a mapped region',
      regions: 1,
      fault: /overlaps the one at/,
      run: async (fe) => {
        await fe.addMemReg(0);
        return fe.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), fe.regionDescriptor(0)]), [fe.ram.fd]);
      },
    },
    {
      name: 'REM_MEM_REG of a region never added',
      fault: /no region at gpa 0x100000/,
      run: (fe) => fe.send(Req.REM_MEM_REG, Buffer.concat([Buffer.alloc(8), fe.regionDescriptor(0)])),
    },
    { name: 'SET_VRING_NUM of 0', fault: /queue size 0 is not a power of 2/, run: (fe) => fe.send(Req.SET_VRING_NUM, vringStatePayload(0, 0)) },
    { name: 'SET_VRING_NUM of 100 (not a power of 2)', fault: /queue size 100/, run: (fe) => fe.send(Req.SET_VRING_NUM, vringStatePayload(0, 100)) },
    { name: 'SET_VRING_NUM of 65536', fault: /queue size 65536/, run: (fe) => fe.send(Req.SET_VRING_NUM, vringStatePayload(0, 65536)) },
    {
      name: 'SET_VRING_NUM for a queue that does not exist',
      fault: /queue 7 does not exist/,
      run: (fe) => fe.send(Req.SET_VRING_NUM, vringStatePayload(7, 64)),
    },
    { name: 'SET_VRING_BASE beyond 16 bits', fault: /base 70000/, run: (fe) => fe.send(Req.SET_VRING_BASE, vringStatePayload(0, 70000)) },
    {
      name: 'SET_VRING_ADDR not in any region',
      regions: 1,
      fault: /are not inside guest memory/,
      run: async (fe) => {
        await fe.addMemReg(0);
        await fe.setVringNum(0, 64);
        return fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, { desc: 0x1000, avail: 0x2000, used: 0x3000 }));
      },
    },
    {
      name: 'SET_VRING_ADDR misaligned',
      regions: 1,
      fault: /are not inside guest memory/,
      run: async (fe) => {
        await fe.addMemReg(0);
        await fe.setVringNum(0, 64);
        const base = fe.ram.regions[0]!.userAddr;
        return fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, { desc: base + 8, avail: base + 0x2000, used: base + 0x3000 }));
      },
    },
    {
      name: 'SET_VRING_ADDR before SET_VRING_NUM',
      fault: /has no size yet/,
      run: (fe) => fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, { desc: 0, avail: 0, used: 0 })),
    },
    {
      name: 'SET_VRING_ADDR with unknown flag bits',
      fault: /flags 0x2 have unknown bits/,
      run: async (fe) => {
        await fe.setVringNum(0, 64);
        return fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, { desc: 0, avail: 0, used: 0 }, 2));
      },
    },
    {
      name: 'SET_VRING_ADDR logging the used ring at an address beyond 2^53',
      fault: /used-ring log address 0xffffffffffffffff is beyond 2\^53/,
      run: async (fe) => {
        await fe.setVringNum(0, 64);
        return fe.send(Req.SET_VRING_ADDR, vringAddrPayload(0, { desc: 0, avail: 0, used: 0 }, 1, 2n ** 64n - 1n));
      },
    },
    {
      name: 'SET_VRING_KICK without an fd (and without the no-fd flag)',
      fault: /SET_VRING_KICK: 0 fds, expected 1/,
      run: (fe) => fe.send(Req.SET_VRING_KICK, u64Payload(0)),
    },
    { name: 'SET_VRING_KICK in polling mode (no-fd flag)', fault: /polling mode/, run: (fe) => fe.send(Req.SET_VRING_KICK, u64Payload(0x100)) },
    {
      name: 'SET_VRING_CALL with a memfd instead of an eventfd',
      fault: /fd is not an eventfd \(\/memfd:/,
      run: async (fe) => {
        const m = createMemfd('not-an-eventfd', 4096, false);
        try {
          return await fe.send(Req.SET_VRING_CALL, u64Payload(0), [m]);
        } finally {
          closeFd(m);
        }
      },
    },
    { name: 'SET_VRING_KICK with unknown payload bits', fault: /has unknown bits/, run: (fe) => fe.send(Req.SET_VRING_KICK, u64Payload(0x1000)) },
    {
      name: 'a kick before the ring addresses',
      fault: /kicked before its size and addresses were set/,
      run: async (fe) => {
        await fe.setVringNum(0, 64);
        const k = createEventFd();
        try {
          return await fe.send(Req.SET_VRING_KICK, u64Payload(0), [k]);
        } finally {
          closeFd(k);
        }
      },
    },
    { name: 'SET_VRING_ENABLE of 2', fault: /enable value 2/, run: (fe) => fe.send(Req.SET_VRING_ENABLE, vringStatePayload(0, 2)) },
    { name: 'an unknown request (999)', fault: /unknown request 999/, run: (fe) => fe.send(999) },
    { name: 'SEND_RARP (not a net device)', fault: /SEND_RARP is not supported/, run: (fe) => fe.send(Req.SEND_RARP, u64Payload(0)) },
  ];

  test.each(cases)('$name', async (c) => {
    const fe = await bare();
    const fds = openFds();
    expect(await within(c.run(fe), 2000, c.name)).toBe(1n);
    expect(faultLogged(c.fault)).toBe(true);
    // The same connection still answers, and nothing the message carried leaked.
    expect(await fe.getU64(Req.GET_QUEUE_NUM)).toBe(2n);
    // (a region the case mapped keeps its fd: a takeover hands it on)
    expect(openFds()).toBeLessThanOrEqual(fds + (c.regions ?? 0));
    expect(fe.isClosed).toBe(false);
    fe.close();
    await fx.nextDisconnect();
    await servesFreshConnection();
  });
});

describe('connection dropped (no way to answer an error)', () => {
  const cases: { name: string; fault: RegExp; frame(fe: VhostUserFrontend): Buffer; fds?: () => number[] }[] = [
    {
      name: 'SET_FEATURES with a short payload and no NEED_REPLY',
      fault: /payload of 4 bytes, expected 8/,
      frame: () => rawFrame(Req.SET_FEATURES, FLAG_VERSION, Buffer.alloc(4)),
    },
    {
      name: 'a declared payload of 1 MiB',
      fault: /declares a 1048576-byte payload/,
      frame: () => rawFrame(Req.SET_FEATURES, FLAG_VERSION, Buffer.alloc(8), 1 << 20),
    },
    { name: 'protocol version 2', fault: /bad flags 0x2/, frame: () => rawFrame(Req.GET_FEATURES, 0x2) },
    { name: 'the REPLY bit on a request', fault: /bad flags 0x5/, frame: () => rawFrame(Req.GET_FEATURES, FLAG_VERSION | FLAG_REPLY) },
    { name: 'an unknown request without NEED_REPLY', fault: /unknown request 4242/, frame: () => rawFrame(4242, FLAG_VERSION) },
    {
      name: 'GET_VRING_BASE of a queue that does not exist',
      fault: /queue 9 does not exist/,
      frame: () => rawFrame(Req.GET_VRING_BASE, NEED_REPLY, vringStatePayload(9, 0)),
    },
    {
      name: 'GET_FEATURES with a payload',
      fault: /GET_FEATURES: payload of 8 bytes, expected 0/,
      frame: () => rawFrame(Req.GET_FEATURES, FLAG_VERSION, Buffer.alloc(8)),
    },
  ];

  test.each(cases)('$name', async (c) => {
    const fe = await bare();
    const gone = fx.nextDisconnect();
    void fe.sendRaw(c.frame(fe));
    const reason = await within(gone, 2000, 'the backend hanging up');
    expect(reason.kind).toBe('error');
    expect(faultLogged(c.fault)).toBe(true);
    expect((await within(fe.closed, 2000, 'frontend sees the hang-up')).kind).not.toBe('local');
    await servesFreshConnection();
  });

  test('a frontend that dies in the middle of a message', async () => {
    const fe = await bare();
    const gone = fx.nextDisconnect();
    void fe.sendRaw(rawFrame(Req.SET_MEM_TABLE, FLAG_VERSION, Buffer.alloc(20), 72));
    await new Promise((r) => setTimeout(r, 20));
    fe.close();
    expect(await within(gone, 2000, 'teardown')).toEqual({ kind: 'error', message: 'connection closed inside the payload of message 5' });
    await servesFreshConnection();
  });

  test('stray fds on a message that takes none are closed', async () => {
    const fe = await bare();
    const e = createEventFd();
    const fds = openFds();
    const m = (await fe.sendRaw(rawFrame(Req.GET_QUEUE_NUM, FLAG_VERSION), [e, e, e], true))!;
    expect(m.payload.readBigUInt64LE(0)).toBe(2n);
    expect(openFds()).toBe(fds);
    closeFd(e);
  });
});
