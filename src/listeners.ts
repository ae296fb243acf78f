// Listening sockets for stream transports: unix sockets (with stale-socket
// detection and owner-only permissions) and TCP (loopback by default).
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { SysError, umask } from './sys/index.js';
import { listenUnixSocket } from './sys/sockets.js';
import type { Logger } from './log.js';

/** A start-up problem an operator can fix; the CLI prints `message` alone. */
export class StartupError extends Error {
  override name = 'StartupError';
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Once listening, a failed accept (EMFILE or ENFILE when the process is out
 * of fds, ENOBUFS, ENOMEM) is an 'error' event on the server, and Node
 * throws one nobody listens for: the daemon would die with every guest's
 * mount. libuv has already closed that one connection (its reserve-fd
 * trick), so say so, at most once a second, and keep listening.
 */
function keepListening(server: Server, where: string, log: Logger | undefined): void {
  let last = 0;
  let suppressed = 0;
  server.on('error', (e: NodeJS.ErrnoException) => {
    const now = Date.now();
    if (now - last < 1000) {
      suppressed++;
      return;
    }
    log?.warn(
      { listener: where, errno: e.code, suppressed },
      `accept on ${where} failed (${e.code ?? e.message}): that client was disconnected; still listening`,
    );
    last = now;
    suppressed = 0;
  });
}

/** Listens until the first callback, turning a start-up error into a StartupError. */
function startListening(server: Server, listen: (ready: () => void) => void, describe: (e: NodeJS.ErrnoException) => string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => reject(new StartupError(describe(e)));
    server.once('error', onError);
    listen(() => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Listens on a unix socket at `path`. A socket file left by a dead server is
 * replaced; a live one, or a file that is not a socket, is an error.
 * The socket is created owner-only (0600): whoever can connect to it can
 * act as any user on the export.
 */
export async function listenUnix(path: string, onConnection: (s: Socket) => void, log?: Logger): Promise<Server> {
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
  await startListening(
    server,
    (ready) => server.listen({ fd }, ready),
    (e) => `cannot listen on ${path}: ${e.code ?? e.message}`,
  );
  keepListening(server, `unix:${path}`, log);
  chmodSync(path, 0o600);
  return server;
}

/**
 * Serves an inherited, already listening stream socket (socket activation):
 * unix or TCP, many clients on the one fd. Its file, if any, is the socket
 * unit's: nothing here unlinks it.
 */
export async function listenInherited(fd: number, where: string, onConnection: (s: Socket) => void, log?: Logger): Promise<Server> {
  const server = createServer({ noDelay: true }, onConnection);
  await startListening(
    server,
    (ready) => server.listen({ fd }, ready),
    (e) => `cannot listen on the inherited ${where}: ${e.code ?? e.message}`,
  );
  keepListening(server, where, log);
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

export async function listenTcp(addr: HostPort, onConnection: (s: Socket) => void, log?: Logger): Promise<{ server: Server; address: HostPort }> {
  const server = createServer({ noDelay: true }, onConnection);
  await startListening(
    server,
    (ready) => server.listen(addr.port, addr.host, ready),
    (e) =>
      e.code === 'EADDRINUSE' ? `${addr.host}:${addr.port}: address in use` : `cannot listen on ${addr.host}:${addr.port}: ${e.code ?? e.message}`,
  );
  keepListening(server, `tcp:${addr.host}:${addr.port}`, log);
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : addr.port;
  return { server, address: { host: addr.host, port } };
}
