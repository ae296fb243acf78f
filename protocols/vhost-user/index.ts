// The vhost-user backend core: a device plugs in through VhostUserDevice and
// is served with listenVhostUser({ device, logger, socketPath | listenFd }).
export { type VhostUserDevice, type DescriptorChain, VIRTIO_ID_9P, VIRTIO_ID_FS } from './device.js';
export { VhostUserServer, listenVhostUser, type VhostUserServerOptions, type ConnectionInfo } from './server.js';
export type { CloseReason } from './message-socket.js';
export { gather, scatter, hostAddressOf } from '../virtqueue/index.js';
