// A minimal QMP client for lab guests: QEMU started with
// `-qmp unix:PATH,server=on,wait=off`. Connects (waiting for the socket),
// negotiates capabilities, sends commands one at a time and keeps the
// asynchronous events it saw (e.g. MIGRATION, RESUME, STOP) for messages.
import { createConnection, type Socket } from 'node:net';
import { existsSync } from 'node:fs';

export class QmpError extends Error {}

type Json = Record<string, unknown>;

export class Qmp {
  private buf = '';
  private waiting: { resolve: (v: Json) => void; reject: (e: Error) => void }[] = [];
  readonly events: Json[] = [];
  private closed = false;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => {
      this.buf += s;
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        let msg: Json;
        try {
          msg = JSON.parse(line) as Json;
        } catch {
          continue;
        }
        if ('event' in msg) this.events.push(msg);
        else if ('QMP' in msg) continue;
        else this.waiting.shift()?.resolve(msg);
      }
    });
    const fail = () => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w.reject(new QmpError('QMP connection closed'));
    };
    sock.on('close', fail);
    sock.on('error', fail);
  }

  /** Connects to a QMP socket (waiting up to timeoutMs for it to appear) and sends qmp_capabilities. */
  static async connect(path: string, timeoutMs = 30_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (existsSync(path)) {
        try {
          const sock = await new Promise<Socket>((res, rej) => {
            const s = createConnection(path);
            s.once('connect', () => res(s));
            s.once('error', rej);
          });
          const q = new Qmp(sock);
          await q.command('qmp_capabilities');
          return q;
        } catch (e) {
          if (Date.now() > deadline) throw new QmpError(`cannot connect to QMP at ${path}: ${(e as Error).message}`);
        }
      } else if (Date.now() > deadline) throw new QmpError(`no QMP socket at ${path} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Sends a command and returns its `return` value; throws QmpError with QEMU's error description. */
  async command(execute: string, args?: Json): Promise<unknown> {
    if (this.closed) throw new QmpError(`QMP closed before ${execute}`);
    const reply = await new Promise<Json>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    });
    if ('error' in reply) {
      const e = reply.error as { class?: string; desc?: string };
      throw new QmpError(`${execute}: ${e.class ?? 'Error'}: ${e.desc ?? JSON.stringify(e)}`);
    }
    return reply.return;
  }

  /** `quit`, tolerating the connection closing under it. */
  async quit(): Promise<void> {
    try {
      await this.command('quit');
    } catch (e) {
      if (!(e instanceof QmpError)) throw e;
    }
    this.close();
  }

  close(): void {
    this.sock.destroy();
  }
}

export interface MigrationResult {
  status: string;
  /** query-migrate's error-desc when the migration failed. */
  errorDesc?: string;
  totalTimeMs?: number;
  downtimeMs?: number;
  /** Everything query-migrate said last. */
  info: Json;
}

/**
 * Migrates the VM behind `src` to `dst` (started with `-incoming defer`) over
 * the unix socket `uri` (`unix:PATH`, a path both QEMUs see): migrate-incoming
 * on the destination, migrate on the source, then polls query-migrate on the
 * source until it completes or fails.
 */
export async function migrate(src: Qmp, dst: Qmp, uri: string, timeoutMs = 120_000): Promise<MigrationResult> {
  await dst.command('migrate-incoming', { uri });
  await src.command('migrate', { uri });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = (await src.command('query-migrate')) as Json;
    const status = String(info.status ?? '');
    if (status === 'completed' || status === 'failed' || status === 'cancelled') {
      return {
        status,
        errorDesc: info['error-desc'] as string | undefined,
        totalTimeMs: info['total-time'] as number | undefined,
        downtimeMs: info.downtime as number | undefined,
        info,
      };
    }
    if (Date.now() > deadline) {
      await src.command('migrate_cancel').catch(() => undefined);
      return { status: `timeout (${status})`, info };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Polls query-status until the VM is `running` (a destination after a completed migration). */
export async function waitRunning(q: Qmp, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let st = '';
  while (Date.now() < deadline) {
    st = String(((await q.command('query-status')) as Json).status);
    if (st === 'running') return st;
    await new Promise((r) => setTimeout(r, 100));
  }
  return st;
}
