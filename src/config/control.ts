// The control socket of `duofs serve --config`: a unix socket, mode 0600
// (only its owner, root for a system daemon, may connect), on which
// `duofs status` asks for the running set. One request line ("status"),
// one JSON reply line, then the server closes the connection.
import { createConnection, type Server, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import { listenUnix } from '../listeners.js';
import type { Logger } from '../log.js';
import type { DaemonStatus } from './daemon.js';

/** a request line is a word: anything longer is not a client of ours */
const MAX_REQUEST = 64;
const TIMEOUT_MS = 5000;

export interface Control {
  readonly path: string;
  close(): void;
}

export async function startControl(path: string, status: () => DaemonStatus, log: Logger): Promise<Control> {
  const onConnection = (sock: Socket): void => {
    let got = '';
    sock.setTimeout(TIMEOUT_MS, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const nl = got.indexOf('\n');
      if (nl < 0) {
        if (got.length > MAX_REQUEST) sock.end(`${JSON.stringify({ error: 'request line too long' })}\n`);
        return;
      }
      const cmd = got.slice(0, nl).trim();
      sock.removeAllListeners('data');
      if (cmd === 'status') sock.end(`${JSON.stringify(status())}\n`);
      else sock.end(`${JSON.stringify({ error: `unknown request ${JSON.stringify(cmd.slice(0, MAX_REQUEST))} (known: status)` })}\n`);
    });
  };
  const server: Server = await listenUnix(path, onConnection, log);
  log.info({ controlSocket: path }, 'control socket listening (duofs status)');
  return {
    path,
    close: () => {
      server.close();
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}

export class ControlError extends Error {
  override name = 'ControlError';
}

/** Asks the daemon behind `path` for its status. */
export function queryStatus(path: string): Promise<DaemonStatus> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    let got = '';
    s.setTimeout(TIMEOUT_MS, () => {
      s.destroy();
      reject(new ControlError(`${path}: no answer in ${TIMEOUT_MS / 1000} s`));
    });
    s.once('connect', () => s.write('status\n'));
    s.on('data', (d: Buffer) => {
      got += d.toString('utf8');
    });
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new ControlError(
          `cannot reach the control socket ${path} (${e.code ?? e.message})${e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? ': is duofs serve --config running?' : e.code === 'EACCES' ? ': it is root only' : ''}`,
        ),
      ),
    );
    s.once('end', () => {
      let v: unknown;
      try {
        v = JSON.parse(got);
      } catch {
        reject(new ControlError(`${path}: the answer is not JSON`));
        return;
      }
      const err = (v as { error?: unknown }).error;
      if (typeof err === 'string') reject(new ControlError(`${path}: ${err}`));
      else resolve(v as DaemonStatus);
    });
  });
}

const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

/** The status for people: one block per device. */
export function formatStatus(s: DaemonStatus): string {
  const out: string[] = [];
  out.push(
    `duofs pid ${s.pid}, config ${s.config}, up ${s.uptimeSeconds} s, RSS ${mib(s.rssBytes)}, ${s.openFds} open fds, ${s.devices.length} devices`,
  );
  if (s.lastReload) {
    const r = s.lastReload;
    const failed = Object.keys(r.failed);
    out.push(
      `last reload ${r.at}: added ${r.added.join(', ') || '-'}; removed ${r.removed.join(', ') || '-'}; kept ${r.kept.length}${failed.length ? `; FAILED ${failed.join(', ')}` : ''}`,
    );
  }
  for (const d of s.devices) {
    out.push('');
    out.push(`${d.name}  ${d.type}  ${d.address}${d.tag ? `  tag ${d.tag}` : ''}${d.readonly ? '  read-only' : ''}`);
    out.push(`  root       ${d.root} (export ${d.export}, dir ${d.dir})`);
    if (d.queues !== undefined) out.push(`  queues     ${d.queues}`);
    out.push(`  clients    ${d.clients.length ? d.clients.map((c) => c.peer + (c.pending ? ` (${c.pending} running)` : '')).join(', ') : 'none'}`);
    out.push(`  in flight  ${d.requestsInFlight}`);
    out.push(`  open files ${d.openFiles}`);
    const ops = Object.entries(d.ops).sort((a, b) => b[1] - a[1]);
    out.push(`  operations ${ops.length ? ops.map(([k, n]) => `${k} ${n}`).join(', ') : 'none'}`);
  }
  return `${out.join('\n')}\n`;
}
