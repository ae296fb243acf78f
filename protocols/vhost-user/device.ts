// What a virtio device served over vhost-user implements (the FUSE session
// for virtio-fs, the 9P server for virtio-9p). The backend core owns the
// socket, guest memory and the rings; the device only sees descriptor chains.
import type { DescriptorChain } from '../virtqueue/chain.js';

export type { DescriptorChain };

export const VIRTIO_ID_9P = 9;
export const VIRTIO_ID_FS = 26;

export interface VhostUserDevice {
  /** Virtio device type: 26 virtio-fs, 9 virtio-9p (for logs; the frontend decides the PCI id). */
  readonly virtioId: number;
  /** Total virtqueues (virtio-fs: 1 hiprio + N request queues; 9p: 1). */
  readonly numQueues: number;
  /** Device-specific virtio feature bits offered on top of the transport ones (e.g. 1n << 0n VIRTIO_9P_MOUNT_TAG). */
  readonly deviceFeatures: bigint;
  /** Config space bytes (virtio_fs_config: tag[36] + le32 num_request_queues; 9p: le16 tag_len + tag). */
  config(): Buffer;
  /**
   * A chain popped from queue `queue`. Call chain.complete(bytesWritten)
   * exactly once, now or later; until then the chain's views stay valid.
   * Throwing is a device bug: the chain is completed with 0 bytes.
   */
  onRequest(queue: number, chain: DescriptorChain): void;
  /** The frontend is gone or asked for RESET_DEVICE: drop all per-guest state. */
  reset(): void;
  /**
   * Optional: queue `queue` is stopping (GET_VRING_BASE: VM stopped, guest
   * rebooting, QEMU tearing the device down). Finish or give up its
   * outstanding chains soon (e.g. cancel blocked lock waits); the backend
   * waits a bounded time for them before answering the frontend. A reboot
   * does not reset the device: expect a new FUSE_INIT / Tversion instead.
   */
  onQueueStop?(queue: number): void;
  /** Optional: the features the driver accepted (SET_FEATURES), transport bits included. */
  onFeatures?(features: bigint): void;
  /**
   * Optional, with loadState (offers DEVICE_STATE, live migration): the
   * device's state, taken while every queue is stopped. Throwing fails the
   * migration (the frontend sees a failed CHECK_DEVICE_STATE); the device
   * goes on serving.
   */
  saveState?(): Buffer | Promise<Buffer>;
  /** Optional: loads a state saveState made (before the queues start); rejecting fails the migration. */
  loadState?(state: Buffer): Promise<void>;
  /** Optional: SET_CONFIG (a guest write into config space); false refuses it. Default: refused. */
  setConfig?(offset: number, data: Buffer): boolean;
}
