// Split virtqueues over shared guest memory (device side).
export { GuestMemory, GuestMemoryError, MappedRegion, hostAddressOf, type RegionSpec } from './guest-memory.js';
export { DescriptorChain, gather, scatter } from './chain.js';
export {
  SplitQueue,
  MAX_QUEUE_SIZE,
  RING_ALIGN,
  ringBytes,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
  type QueueRings,
  type SplitQueueOptions,
} from './split-queue.js';
