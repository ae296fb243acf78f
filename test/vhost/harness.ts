// Shared fixture: a vhost-user server with an echo device on a fresh socket,
// its log lines captured so tests can check that faults are reported.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { VhostUserServer, type VhostUserServerOptions } from '../../protocols/vhost-user/server.js';
import type { CloseReason } from '../../protocols/vhost-user/message-socket.js';
import { EchoDevice } from './echo-device.js';
import { VhostUserFrontend, type FrontendOptions } from './driver.js';

export interface LogLine {
  level: number;
  msg: string;
  peer?: string;
  fault?: string;
  [k: string]: unknown;
}

export class Fixture {
  readonly dir = mkdtempSync(join(tmpdir(), 'duofs-vhost-'));
  readonly socketPath = join(this.dir, 'vhost.sock');
  readonly lines: LogLine[] = [];
  readonly device: EchoDevice;
  readonly server: VhostUserServer;
  private readonly frontends: VhostUserFrontend[] = [];

  constructor(device = new EchoDevice(), opts: Partial<VhostUserServerOptions> = {}) {
    this.device = device;
    const logger = pino(
      { level: 'debug' },
      {
        write: (s: string) => {
          this.lines.push(JSON.parse(s) as LogLine);
        },
      },
    );
    this.server = VhostUserServer.listen({ device, logger, socketPath: this.socketPath, drainTimeoutMs: 500, ...opts });
  }

  async connect(o: Omit<FrontendOptions, 'socketPath'> = {}): Promise<VhostUserFrontend> {
    const fe = await VhostUserFrontend.connect({ socketPath: this.socketPath, ...o });
    this.frontends.push(fe);
    return fe;
  }

  /** Resolves at the server's next 'disconnect' event. */
  nextDisconnect(): Promise<CloseReason> {
    return new Promise((r) => this.server.once('disconnect', (_info, reason) => r(reason)));
  }

  warnings(): LogLine[] {
    return this.lines.filter((l) => l.level >= 40);
  }

  close(): void {
    for (const f of this.frontends) f.close();
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Races a promise against a timeout (a hang is a failure, not a stuck suite). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}
