// Listening sockets for stream transports: unix sockets (with stale-socket
// detection and owner-only permissions) and TCP (loopback by default).
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { SysError, umask } from './sys/index.js';
import { listenUnixSocket } from './sys/sockets.js';

/** A start-up problem an operator can fix; the CLI prints `message` alone. */
export class StartupError extends Error {
  override name = 'StartupError';
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/**
 * Listens on a unix socket at `path`. A socket file left by a dead server is
 * replaced; a live one, or a file that is not a socket, is an error.
 * The socket is created owner-only (0600): whoever can connect to it can
 * act as any user on the export.
 */
export async function listenUnix(path: string, onConnection: (s: Socket) => void): Promise<Server> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    st = undefined;
  }
  if (st) {
    if (!st.isSocket()) throw new StartupError(`${path} exists and is not a socket; remove it or choose another path`);
    if (await probe(path)) throw new StartupError(`${path}: address in use (another server is listening there)`);
    unlinkSync(path); // stale socket from a server that died
  }
  const server = createServer({ pauseOnConnect: false }, onConnection);
  // Bound here and handed over as an fd, so that libuv, which knows no path,
  // never unlinks one on close: in the sandbox that name would be a file of
  // the export. Whoever made the socket removes it (src/server.ts, or the
  // sandbox supervisor).
  const old = umask(0o177);
  let fd: number;
  try {
    fd = listenUnixSocket(path, 511);
  } catch (e) {
    throw new StartupError(`cannot listen on ${path}: ${e instanceof SysError ? e.code : String(e)}`);
  } finally {
    umask(old);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new StartupError(`cannot listen on ${path}: ${e.code ?? e.message}`)));
    server.listen({ fd }, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

export interface HostPort {
  host: string;
  port: number;
}

/** "PORT", "HOST:PORT" or "[V6]:PORT"; a bare port means loopback. */
export function parseHostPort(spec: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(spec) ?? /^()()(\d+)$/.exec(spec);
  if (!m) throw new StartupError(`bad TCP address ${JSON.stringify(spec)}: expected HOST:PORT or PORT`);
  const port = Number(m[3]);
  if (port > 65535) throw new StartupError(`bad TCP port in ${JSON.stringify(spec)}`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

export async function listenTcp(addr: HostPort, onConnection: (s: Socket) => void): Promise<{ server: Server; address: HostPort }> {
  const server = createServer({ noDelay: true }, onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new StartupError(e.code === 'EADDRINUSE'
        ? `${addr.host}:${addr.port}: address in use`
        : `cannot listen on ${addr.host}:${addr.port}: ${e.code ?? e.message}`)));
    server.listen(addr.port, addr.host, () => resolve());
  });
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : addr.port;
  return { server, address: { host: addr.host, port } };
}
