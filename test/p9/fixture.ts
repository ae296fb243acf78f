// Per-suite fixture: a temp export populated with a standard tree, a duofs
// serving it on TCP loopback, and an attached client. DUOFS_P9_TARGET=diod
// runs a suite against diod instead (to debug the tests themselves; diod
// differs from duofs in places, so some tests are expected to fail there).
import { afterAll, afterEach, beforeAll } from '@jest/globals';
import { P9Client } from './client.js';
import type { Qid } from './proto.js';
import { attach, type Served, startInProcess } from './harness.js';
import { startDiod } from '../support/diod.js';
import { makeTree, populate, type TempTree } from '../support/tree.js';

export interface Ctx {
  tree: TempTree;
  srv: Served;
  /** The suite's main client (msize 65536, uid 0) and its root fid. */
  c: P9Client;
  root: number;
  rootQid: Qid;
  /** Opens another attached session; closed automatically after the suite. */
  session(o?: { uid?: number; msize?: number }): Promise<{ c: P9Client; root: number; qid: Qid }>;
  /** A raw connection (no version, no attach); closed automatically after the suite. */
  connect(): Promise<P9Client>;
}

export const target = process.env.DUOFS_P9_TARGET === 'diod' ? 'diod' : 'duofs';

export async function startTarget(dir: string, o: { socketPath?: string } = {}): Promise<Served> {
  if (target === 'diod') {
    const d = await startDiod(dir, o.socketPath ? { socketPath: o.socketPath } : {});
    const s: Served = { address: d.address, host: d.host ?? '', port: d.port ?? 0, close: () => d.stop() };
    if (d.socketPath) s.socketPath = d.socketPath;
    return s;
  }
  return startInProcess(dir, o);
}

export function useServer(o: { populate?: boolean; checkViolations?: boolean } = {}): Ctx {
  const extra: P9Client[] = [];
  const ctx = {} as Ctx;
  beforeAll(async () => {
    ctx.tree = makeTree();
    if (o.populate !== false) populate(ctx.tree.dir);
    ctx.srv = await startTarget(ctx.tree.dir);
    ctx.session = async (so = {}) => {
      const s = await attach(ctx.srv, ctx.tree.dir, so);
      extra.push(s.c);
      return s;
    };
    ctx.connect = async () => {
      const c = await P9Client.connect(ctx.srv.address);
      extra.push(c);
      return c;
    };
    const s = await attach(ctx.srv, ctx.tree.dir);
    ctx.c = s.c;
    ctx.root = s.root;
    ctx.rootQid = s.qid;
  });
  if (o.checkViolations !== false) {
    afterEach(() => {
      // The well-behaved main client must never see a malformed reply.
      const v = ctx.c?.violations.splice(0) ?? [];
      if (v.length) throw new Error(`protocol violations: ${v.join('; ')}`);
    });
  }
  afterAll(async () => {
    for (const c of extra) await c.close();
    await ctx.c?.close();
    await ctx.srv?.close();
    ctx.tree?.cleanup();
  });
  return ctx;
}

/** Walks path from fid into a fresh fid and returns it. */
export async function walkTo(c: P9Client, from: number, p: string): Promise<number> {
  const f = c.newFid();
  await c.walkPath(from, f, p);
  return f;
}

/** Walks to path and Tlopens it with flags. */
export async function openAt(c: P9Client, from: number, p: string, flags: number): Promise<number> {
  const f = await walkTo(c, from, p);
  await c.lopen(f, flags);
  return f;
}

export function uniq(prefix: string): string {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
