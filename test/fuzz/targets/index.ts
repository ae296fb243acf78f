// Every fuzz target, by name (npm run fuzz -- --target NAME).
import type { FuzzTarget } from '../engine.js';
import { mappedFileTarget } from './mapped-file.js';
import { migrationStateTarget } from './migration-state.js';
import { p9FrameTarget } from './p9-frame.js';
import { fuseRequestTarget } from './fuse-request.js';
import { vhostUserMessageTarget } from './vhost-user-message.js';
import { virtqueueChainTarget } from './virtqueue-chain.js';

export function allTargets(): FuzzTarget[] {
  return [p9FrameTarget(), fuseRequestTarget(), vhostUserMessageTarget(), virtqueueChainTarget(), mappedFileTarget, migrationStateTarget];
}
