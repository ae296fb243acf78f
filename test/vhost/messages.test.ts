// The vhost-user message set a QEMU frontend sends to a vhost-user-fs (or
// generic vhost-user) device, each observed from the frontend's side.
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { readdirSync } from 'node:fs';
import { FLAG_VERSION, ProtocolFeature, Req, u64Payload, VirtioFeature, vringStatePayload } from '../../protocols/vhost-user/protocol.js';
import { createEventFd, drainEventFd } from '../../src/sys/eventfd.js';
import { closeFd } from '../../src/sys/fd.js';
import { EchoDevice } from './echo-device.js';
import { DEFAULT_FEATURES, NEED_REPLY, rawFrame, type VhostUserFrontend } from './driver.js';
import { Fixture, sleep, within } from './harness.js';

let fx: Fixture;
beforeEach(() => {
  fx = new Fixture();
});
afterEach(() => fx.close());

const echo = async (fe: VhostUserFrontend, q = 1, text = 'ping') => {
  const c = await within(fe.request(q, { out: [Buffer.from(text)], in: [64] }), 2000, `echo on queue ${q}`);
  return c.data.toString();
};

/** True if a request on `q` is still unanswered after `ms` (the ring is not being processed). */
async function staysPending(fe: VhostUserFrontend, q: number, ms = 100): Promise<{ pending: boolean; done: Promise<unknown> }> {
  let finished = false;
  const done = fe.request(q, { out: [Buffer.from('x')], in: [8] }).then((c) => {
    finished = true;
    return c;
  });
  await sleep(ms);
  return { pending: !finished, done };
}

describe('feature negotiation', () => {
  test('GET_FEATURES offers VERSION_1, INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES, LOG_ALL and the device bits', async () => {
    fx.close();
    const dev = new EchoDevice();
    Object.defineProperty(dev, 'deviceFeatures', { value: 1n << 0n });
    fx = new Fixture(dev);
    const fe = await fx.connect({ negotiateOnly: true });
    expect(fe.offeredFeatures).toBe(DEFAULT_FEATURES | VirtioFeature.LOG_ALL | 1n);
  });

  test('GET_PROTOCOL_FEATURES offers MQ, REPLY_ACK, CONFIGURE_MEM_SLOTS, RESET_DEVICE, CONFIG, LOG_SHMFD (BACKEND_REQ on request)', async () => {
    const want =
      ProtocolFeature.MQ |
      ProtocolFeature.REPLY_ACK |
      ProtocolFeature.CONFIGURE_MEM_SLOTS |
      ProtocolFeature.RESET_DEVICE |
      ProtocolFeature.CONFIG |
      ProtocolFeature.LOG_SHMFD;
    const fe = await fx.connect({ negotiateOnly: true });
    expect(fe.offeredProtocolFeatures).toBe(want);
    fe.close();
    fx.close();
    fx = new Fixture(new EchoDevice(), { offerBackendChannel: true });
    const fe2 = await fx.connect({ negotiateOnly: true });
    expect(fe2.offeredProtocolFeatures).toBe(want | ProtocolFeature.BACKEND_REQ);
  });

  test('GET_QUEUE_NUM and GET_MAX_MEM_SLOTS', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    expect(fe.queueNum).toBe(2);
    expect(await fe.getU64(Req.GET_MAX_MEM_SLOTS)).toBe(509n);
  });

  test('SET_FEATURES reaches the device; unoffered bits are refused with a nonzero ack', async () => {
    const fe = await fx.connect();
    expect(fx.device.features).toBe(DEFAULT_FEATURES);
    expect(await fe.send(Req.SET_FEATURES, u64Payload(VirtioFeature.RING_PACKED))).toBe(1n);
    expect(await fe.send(Req.SET_PROTOCOL_FEATURES, u64Payload(ProtocolFeature.PAGEFAULT))).toBe(1n);
    expect(await echo(fe)).toBe('ping'); // refused requests leave the session working
    expect(
      fx.warnings().some((l) => l.peer?.startsWith('#1 pid ') && /SET_FEATURES: features 0x400000000 were not offered/.test(l.fault ?? '')),
    ).toBe(true);
  });

  test('without VHOST_USER_F_PROTOCOL_FEATURES the rings start enabled and no acks are sent', async () => {
    const fe = await fx.connect({ features: VirtioFeature.VERSION_1, queues: 2 });
    expect(fe.protocolFeatures).toBe(0n);
    expect(await echo(fe, 0)).toBe('ping');
    expect(await echo(fe, 1)).toBe('ping');
  });
});

describe('REPLY_ACK', () => {
  test('an ack is sent only when NEED_REPLY is set', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    // Without NEED_REPLY: no ack. Were one sent, it would be taken as GET_FEATURES' reply and fail.
    await fe.send(Req.SET_FEATURES, u64Payload(DEFAULT_FEATURES), [], false);
    expect(await fe.getU64(Req.GET_FEATURES)).toBe(DEFAULT_FEATURES | VirtioFeature.LOG_ALL);
    expect(await fe.send(Req.SET_FEATURES, u64Payload(DEFAULT_FEATURES), [], true)).toBe(0n);
  });

  test('a request with its own reply answers once even with NEED_REPLY set', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    const m = await fe.query(Req.GET_QUEUE_NUM, Buffer.alloc(0), NEED_REPLY);
    expect(m.payload.readBigUInt64LE(0)).toBe(2n);
    expect(await fe.getU64(Req.GET_FEATURES)).toBe(DEFAULT_FEATURES | VirtioFeature.LOG_ALL);
  });
});

describe('config space', () => {
  test('GET_CONFIG returns the device config, whole or a slice', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    const whole = await fe.getConfig(0, 40);
    expect(whole.subarray(0, 4).toString()).toBe('echo');
    expect(whole.readUInt32LE(36)).toBe(1);
    expect((await fe.getConfig(36, 4)).readUInt32LE(0)).toBe(1);
    expect((await fe.getConfig(2, 2)).toString()).toBe('ho');
  });

  test('GET_CONFIG beyond 256 bytes or with a lying size gets the empty (error) reply', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    expect((await fe.getConfig(250, 10)).length).toBe(0);
    const p = Buffer.alloc(12 + 4);
    p.writeUInt32LE(0, 0);
    p.writeUInt32LE(40, 4); // says 40 bytes, carries 4
    const m = (await fe.sendRaw(rawFrame(Req.GET_CONFIG, FLAG_VERSION, p), [], true))!;
    expect(m.size).toBe(0);
    expect((await fe.getConfig(0, 4)).toString()).toBe('echo');
  });

  test('SET_CONFIG is refused (read-only config space)', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    const p = Buffer.alloc(12 + 4);
    p.writeUInt32LE(4, 4);
    expect(await fe.send(Req.SET_CONFIG, p)).toBe(1n);
  });
});

describe('owner, status, backend channel, logging', () => {
  test('SET_OWNER and RESET_OWNER are acknowledged; RESET_OWNER disables the rings', async () => {
    const fe = await fx.connect();
    expect(await fe.send(Req.SET_OWNER)).toBe(0n);
    expect(await fe.send(Req.RESET_OWNER)).toBe(0n);
    const { pending, done } = await staysPending(fe, 1);
    expect(pending).toBe(true);
    await fe.setVringEnable(1, true);
    await within(done, 2000, 'request after re-enabling');
  });

  test('SET_STATUS / GET_STATUS round trip', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    expect(await fe.send(Req.SET_STATUS, u64Payload(0x0f))).toBe(0n);
    expect(await fe.getU64(Req.GET_STATUS)).toBe(0x0fn);
  });

  test('SET_BACKEND_REQ_FD keeps the fd; without one it is refused', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    const efd = createEventFd();
    expect(await fe.send(Req.SET_BACKEND_REQ_FD, Buffer.alloc(0), [efd])).toBe(0n);
    expect(await fe.send(Req.SET_BACKEND_REQ_FD)).toBe(1n);
    closeFd(efd);
  });

  test('SET_LOG_BASE and SET_LOG_FD without LOG_SHMFD are refused cleanly and their fds closed', async () => {
    const fe = await fx.connect({ negotiateOnly: true });
    const efd = createEventFd();
    const before = openFdCount();
    expect(await fe.send(Req.SET_LOG_FD, Buffer.alloc(0), [efd])).toBe(1n);
    const p = Buffer.alloc(16);
    expect(await fe.send(Req.SET_LOG_BASE, p, [efd])).toBe(1n);
    expect(openFdCount()).toBe(before);
    expect(await fe.getU64(Req.GET_FEATURES)).toBe(DEFAULT_FEATURES | VirtioFeature.LOG_ALL);
    closeFd(efd);
  });
});

describe('vrings', () => {
  test('GET_VRING_BASE stops the ring and returns last_avail_idx; the ring restarts where it stopped', async () => {
    const fe = await fx.connect();
    for (let i = 0; i < 5; i++) expect(await echo(fe, 1, `m${i}`)).toBe(`m${i}`);
    expect(await fe.getVringBase(1)).toBe(5);
    const { pending, done } = await staysPending(fe, 1);
    expect(pending).toBe(true); // stopped: the kick fd is gone
    const q = fe.queue(1);
    const kick = createEventFd();
    await fe.setVringBase(1, 5);
    await fe.setVringAddr(1, q.ringUserAddrs);
    await fe.sendOk(Req.SET_VRING_KICK, u64Payload(1n), [kick]);
    await fe.sendOk(Req.SET_VRING_CALL, u64Payload(1n), [q.callFd]);
    // The entry made available while stopped is processed at restart, without a kick.
    const c = (await within(done, 2000, 'request posted while stopped')) as { len: number };
    expect(c.len).toBe(1);
    expect(q.usedIdx).toBe(6);
    expect(fx.device.stops).toEqual([1]);
    closeFd(kick);
  });

  test('GET_VRING_BASE waits for outstanding requests before answering', async () => {
    const fe = await fx.connect();
    fx.device.mode = 'hold';
    const req = fe.request(1, { out: [Buffer.from('slow')], in: [8] });
    await sleep(20);
    let answered = false;
    const base = fe.getVringBase(1).then((b) => {
      answered = true;
      return b;
    });
    await sleep(50);
    expect(answered).toBe(false);
    expect(fx.device.stops).toEqual([1]);
    expect(fx.device.release()).toBe(1);
    expect(await within(base, 2000, 'GET_VRING_BASE')).toBe(1);
    expect((await within(req, 2000, 'held request')).data.toString()).toBe('slow');
  });

  test('GET_VRING_BASE gives up on a stuck request after the drain timeout and says so', async () => {
    const fe = await fx.connect();
    fx.device.mode = 'hold';
    void fe.request(1, { out: [Buffer.from('stuck')], in: [8] });
    await sleep(20);
    expect(await within(fe.getVringBase(1), 3000, 'GET_VRING_BASE')).toBe(1);
    expect(fx.warnings().some((l) => /outstanding/.test(l.msg) && l.abandoned === 1)).toBe(true);
    fx.device.release(); // completing an abandoned chain later is harmless
    await sleep(10);
    expect(fe.queue(1).usedIdx).toBe(0);
  });

  test('SET_VRING_ENABLE 0 pauses a ring; 1 resumes it and processes what waited', async () => {
    const fe = await fx.connect();
    await fe.setVringEnable(1, false);
    const { pending, done } = await staysPending(fe, 1);
    expect(pending).toBe(true);
    await fe.setVringEnable(1, true);
    await within(done, 2000, 'request after enable');
    expect(await fe.send(Req.SET_VRING_ENABLE, vringStatePayload(1, 2))).toBe(1n);
  });

  test('SET_VRING_CALL without an fd (polling) completes silently; SET_VRING_ERR is accepted', async () => {
    const fe = await fx.connect();
    const q = fe.queue(1);
    await fe.setVringFd(Req.SET_VRING_CALL, 1, -1);
    const err = createEventFd();
    await fe.setVringFd(Req.SET_VRING_ERR, 1, err);
    const before = q.interrupts;
    const done = fe.request(1, { out: [Buffer.from('quiet')], in: [8] });
    await sleep(50);
    expect(q.interrupts).toBe(before);
    expect(q.reap()).toBe(1);
    expect((await done).data.toString()).toBe('quiet');
    expect(drainEventFd(err)).toBe(0); // nothing went wrong
    closeFd(err);
  });

  test('RESET_DEVICE resets the device and stops the rings; the frontend can set up again', async () => {
    const fe = await fx.connect();
    expect(await echo(fe)).toBe('ping');
    expect(await fe.send(Req.RESET_DEVICE)).toBe(0n);
    expect(fx.device.resets).toBe(1);
    const { pending } = await staysPending(fe, 1);
    expect(pending).toBe(true);
    await fe.setFeatures(fe.features);
    for (const q of fe.queues) q.close();
    const q1 = await fe.startQueue(1, 128);
    expect((await within(q1.request({ out: [Buffer.from('again')], in: [8] }), 2000, 'after reset')).data.toString()).toBe('again');
  });
});

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}
