// Per-suite fixture for the virtio-fs driver tests: a temp export (with an
// "outside" sibling a guest must never reach), duofs serving it in this
// process on a vhost-user-fs socket (and a 9P socket), its log lines
// captured, and FUSE clients on frontends that play the VMM.
import { afterAll, beforeAll } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { startDuofs, type Duofs, type ServeOptions } from '../../src/server.js';
import type { FuseOptions } from '../../protocols/fuse/options.js';
import type { LogLimits } from '../../src/log-limit.js';
import { VhostUserFrontend, type FrontendOptions } from '../vhost/driver.js';
import { P9Client } from '../p9/client.js';
import { FuseClient, type InitOut } from './client.js';

export interface LogLine {
  level: number;
  msg: string;
  peer?: string;
  fault?: string;
  queue?: number;
  [k: string]: unknown;
}

export interface Guest {
  fe: VhostUserFrontend;
  c: FuseClient;
  init: InitOut | undefined;
}

export interface FixtureOptions {
  fuse?: Partial<FuseOptions>;
  numRequestQueues?: number;
  /** also serve 9P on a unix socket */
  ninep?: boolean;
  readonly?: boolean;
  /** fail the suite when the server logged an unexpected exception (default true) */
  checkCrashes?: boolean;
  /** further serve options (id translation, ...) */
  serve?: Partial<ServeOptions>;
  /** the daemon's per-peer log rate limit (false: every line is written) */
  logLimits?: LogLimits | false;
}

export class FuseFixture {
  readonly base: string;
  /** the export */
  readonly dir: string;
  readonly outside: string;
  readonly socketPath: string;
  readonly ninepSocket: string;
  readonly lines: LogLine[] = [];
  duofs!: Duofs;
  private readonly guests: Guest[] = [];
  private readonly p9: P9Client[] = [];

  constructor() {
    // Not tmpfs: user.* xattrs, SEEK_HOLE and whiteouts need a real filesystem (/tmp is ext4 here).
    this.base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-fuse-')));
    this.dir = path.join(this.base, 'export');
    this.outside = path.join(this.base, 'outside');
    fs.mkdirSync(this.dir, { mode: 0o755 });
    fs.chmodSync(this.dir, 0o755);
    fs.chmodSync(this.base, 0o755);
    fs.mkdirSync(this.outside, { mode: 0o755 });
    fs.writeFileSync(path.join(this.outside, 'secret'), 'outside-secret\n', { mode: 0o644 });
    this.socketPath = path.join(this.base, 'vfs.sock');
    this.ninepSocket = path.join(this.base, '9p.sock');
  }

  p(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  async start(o: FixtureOptions = {}): Promise<this> {
    const log = pino(
      { level: 'debug' },
      {
        write: (s: string) => {
          this.lines.push(JSON.parse(s) as LogLine);
        },
      },
    );
    this.duofs = await startDuofs({
      sharedDir: this.dir,
      virtiofsSocket: this.socketPath,
      tag: 'fusetest',
      numRequestQueues: o.numRequestQueues ?? 2,
      fuse: { cache: 'auto', xattr: true, ...o.fuse },
      readonly: o.readonly ?? false,
      ...(o.logLimits !== undefined ? { logLimits: o.logLimits } : {}),
      ...(o.ninep ? { ninepSocket: this.ninepSocket } : {}),
      ...o.serve,
      log,
    });
    return this;
  }

  /** A new frontend (a guest boot); INITs unless told not to. */
  async guest(o: Omit<FrontendOptions, 'socketPath'> & { init?: boolean } = {}): Promise<Guest> {
    const fe = await VhostUserFrontend.connect({ socketPath: this.socketPath, ...o });
    const c = new FuseClient(fe);
    const g: Guest = { fe, c, init: undefined };
    this.guests.push(g);
    if (o.init !== false) g.init = await c.doInit();
    return g;
  }

  /** A 9P session attached to the export (needs `ninep: true`). */
  async ninep(): Promise<{ c: P9Client; root: number }> {
    const s = await P9Client.session({ path: this.ninepSocket }, { aname: this.dir });
    this.p9.push(s.c);
    return { c: s.c, root: s.root };
  }

  warnings(): LogLine[] {
    return this.lines.filter((l) => l.level >= 40);
  }

  /** Error lines that mean the server hit a bug (an exception that is not a typed errno). */
  crashes(): LogLine[] {
    return this.lines.filter((l) => l.level >= 50 && /unexpectedly|device failed|handler failed|reset failed|onQueueStop failed/.test(l.msg));
  }

  /** Live inodes in the backend's table (the root counts). */
  get inodeCount(): number {
    return this.duofs.backend.inodes.size;
  }

  async close(): Promise<void> {
    for (const g of this.guests) g.fe.close();
    for (const c of this.p9) await c.close();
    await this.duofs?.close();
    fs.rmSync(this.base, { recursive: true, force: true });
  }
}

/** beforeAll/afterAll wiring: one fixture (and one initialized guest) per suite. */
export function useFuse(o: FixtureOptions = {}): { fx: FuseFixture; g: Guest; c: FuseClient } {
  const ctx = {} as { fx: FuseFixture; g: Guest; c: FuseClient };
  beforeAll(async () => {
    ctx.fx = await new FuseFixture().start(o);
    ctx.g = await ctx.fx.guest();
    ctx.c = ctx.g.c;
  });
  afterAll(async () => {
    const v = ctx.c?.violations ?? [];
    const crashes = o.checkCrashes === false ? [] : (ctx.fx?.crashes() ?? []);
    await ctx.fx?.close();
    if (v.length) throw new Error(`protocol violations: ${v.join('; ')}`);
    if (crashes.length) throw new Error(`the server failed unexpectedly: ${JSON.stringify(crashes.slice(0, 3))}`);
  });
  return ctx;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Host-side stat without following symlinks. */
export const lstat = (p: string): fs.BigIntStats => fs.lstatSync(p, { bigint: true });
