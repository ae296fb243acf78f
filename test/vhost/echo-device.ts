// A tiny device for the backend-core tests: it copies each request's
// readable bytes into its writable buffers and completes with the count.
// Modes let a test complete later (async) or hold chains until told.
import type { VhostUserDevice } from '../../protocols/vhost-user/device.js';
import { gather, scatter, type DescriptorChain } from '../../protocols/virtqueue/chain.js';

export class EchoDevice implements VhostUserDevice {
  readonly virtioId = 26;
  readonly deviceFeatures = 0n;
  /** 'sync' completes inside onRequest, 'async' on the next macrotask, 'hold' never (see release()). */
  mode: 'sync' | 'async' | 'hold' = 'sync';
  /** Throw from onRequest (a device bug) when set. */
  explode = false;
  readonly seen: { queue: number; readable: number; writable: number; segments: [number, number] }[] = [];
  readonly held: DescriptorChain[] = [];
  resets = 0;
  stops: number[] = [];
  features = 0n;

  constructor(
    readonly numQueues = 2,
    private readonly tag = 'echo',
  ) {}

  config(): Buffer {
    const b = Buffer.alloc(40);
    b.write(this.tag, 0, 36);
    b.writeUInt32LE(this.numQueues - 1, 36);
    return b;
  }

  onRequest(queue: number, chain: DescriptorChain): void {
    if (this.explode) throw new Error('echo device exploded on purpose');
    this.seen.push({
      queue,
      readable: chain.readableLength,
      writable: chain.writableLength,
      segments: [chain.readable.length, chain.writable.length],
    });
    if (this.mode === 'hold') this.held.push(chain);
    else if (this.mode === 'async') setImmediate(() => EchoDevice.echo(chain));
    else EchoDevice.echo(chain);
  }

  static echo(chain: DescriptorChain): void {
    chain.complete(scatter(chain.writable, gather(chain.readable)));
  }

  /** Completes every held chain (echoing). */
  release(): number {
    const n = this.held.length;
    for (const c of this.held.splice(0)) EchoDevice.echo(c);
    return n;
  }

  reset(): void {
    this.resets++;
    this.held.length = 0;
  }

  onQueueStop(queue: number): void {
    this.stops.push(queue);
  }

  onFeatures(f: bigint): void {
    this.features = f;
  }
}
