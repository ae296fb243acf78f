// Round-trip cost of one request through the backend core: the test
// frontend kicks, the core pops the chain and hands it to the echo device,
// the used entry and the interrupt come back. Frontend and backend share
// this process's event loop, so each round trip is two loop wakeups (kick
// eventfd, call eventfd) plus the ring work on both sides.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { Fixture, within } from './harness.js';
import type { VhostUserFrontend } from './driver.js';

let fx: Fixture;
let fe: VhostUserFrontend;
beforeAll(async () => {
  fx = new Fixture();
  fe = await fx.connect({ queueSize: 256 });
});
afterAll(() => fx.close());

function summary(samples: number[]): { mean: number; p50: number; p99: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: s[Math.floor(s.length / 2)]!, p99: s[Math.floor(s.length * 0.99)]! };
}

const us = (ns: number) => Math.round(ns / 100) / 10;

test('sequential round trips (one request in flight)', async () => {
  const out = [Buffer.alloc(64, 1)];
  for (let i = 0; i < 500; i++) await fe.request(1, { out, in: [64] }); // warm up
  const samples: number[] = [];
  for (let i = 0; i < 5000; i++) {
    const t = process.hrtime.bigint();
    await fe.request(1, { out, in: [64] });
    samples.push(Number(process.hrtime.bigint() - t));
  }
  const r = summary(samples);
  console.log(`vhost-user echo round trip: mean ${us(r.mean)} µs, p50 ${us(r.p50)} µs, p99 ${us(r.p99)} µs (5000 requests, 64 B each way)`);
  expect(r.mean).toBeLessThan(1_000_000); // 1 ms: only catches something badly wrong
});

test('pipelined throughput (32 requests in flight)', async () => {
  const out = [Buffer.alloc(64, 2)];
  const total = 20000;
  let sent = 0;
  const t = process.hrtime.bigint();
  const worker = async () => {
    while (sent < total) {
      sent++;
      await fe.request(1, { out, in: [64] });
    }
  };
  await within(Promise.all(Array.from({ length: 32 }, worker)), 20000, 'pipelined run');
  const secs = Number(process.hrtime.bigint() - t) / 1e9;
  const q = fe.queue(1);
  console.log(
    `vhost-user echo pipelined: ${Math.round(total / secs)} requests/s, ${us((secs * 1e9) / total)} µs per request (depth 32), ${q.interrupts} interrupts, ${q.kicks} kicks`,
  );
  expect(total / secs).toBeGreaterThan(1000);
});
