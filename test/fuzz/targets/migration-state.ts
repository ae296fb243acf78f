// The virtio-fs migration state (protocols/fuse/migration-state.ts): what a
// migration source sends the destination through QEMU's stream, hostile
// input like any guest byte. Byte 0 of an input: even = the rest is a blob
// body to which the target appends its valid SHA-256 (so mutations reach
// the fields behind the checksum), odd = the rest as it is. Properties:
// decodeState refuses with a StateError, nothing else, and never allocates
// past the limits; what it accepts encodes back to the same blob and
// decodes to the same state.
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import {
  HANDLE_DIR,
  HANDLE_FILE,
  NODE_FOUND,
  NODE_LOST,
  STATE_MAGIC,
  StateError,
  decodeState,
  encodeState,
  type SessionState,
} from '../../../protocols/fuse/migration-state.js';
import { Finding, type FuzzTarget } from '../engine.js';

const ROOT = 1n;
const DIGEST = 32;

/** A state's blob without its checksum, behind the selector byte 0 (append one). */
function body(s: SessionState): Buffer {
  const blob = encodeState(s);
  return Buffer.concat([Buffer.from([0]), blob.subarray(0, blob.length - DIGEST)]);
}

const seed: SessionState = {
  minor: 41,
  initFlags: 0x1234_5678_9abcn,
  nextFh: 4n,
  nodes: [
    { nodeid: 1n, lookups: 3n, status: NODE_FOUND, dev: 2049n, ino: 2n, kind: 0o040000, path: [] },
    { nodeid: 7n, lookups: 1n, status: NODE_FOUND, dev: 2049n, ino: 77n, kind: 0o040000, path: [Buffer.from('dir')] },
    { nodeid: 9n, lookups: 2n, status: NODE_FOUND, dev: 2049n, ino: 99n, kind: 0o100000, path: [Buffer.from('dir'), Buffer.from('file')] },
    { nodeid: 12n, lookups: 1n, status: NODE_LOST, dev: 0n, ino: 0n, kind: 0, path: [] },
  ],
  handles: [
    { fh: 1n, nodeid: 9n, type: HANDLE_FILE, flags: 0o2 },
    { fh: 3n, nodeid: 7n, type: HANDLE_DIR, flags: 0 },
  ],
};

export const migrationStateTarget: FuzzTarget = {
  name: 'migration-state',
  describe: 'virtio-fs migration state blobs (decodeState/encodeState), checksum appended or not',
  maxLen: 4096,
  dictionary: [STATE_MAGIC, Buffer.from([1, 0, 0, 0]), Buffer.from('/'), Buffer.from('..'), Buffer.from([0xff, 0xff, 0xff, 0xff])],
  seeds: () => [
    body(seed),
    body({ ...seed, nodes: seed.nodes.slice(0, 1), handles: [] }),
    body({ ...seed, nodes: [], handles: [] }),
    Buffer.concat([Buffer.from([1]), encodeState(seed)]),
  ],
  async start() {
    return {
      exec(input: Buffer) {
        const rest = input.subarray(1);
        const blob = (input[0] ?? 0) % 2 === 0 ? Buffer.concat([rest, createHash('sha256').update(rest).digest()]) : rest;
        let state: SessionState;
        try {
          state = decodeState(blob, ROOT);
        } catch (e) {
          if (e instanceof StateError) return;
          throw new Finding('crash', `decodeState threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
        }
        const again = encodeState(state);
        if (!again.equals(blob)) throw new Finding('property', 'encodeState(decodeState(b)) is not b');
        if (!isDeepStrictEqual(decodeState(again, ROOT), state)) throw new Finding('property', 'decodeState(encodeState(s)) is not s');
      },
      check() {},
      stop() {},
    };
  },
};
