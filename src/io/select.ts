// Choosing the engine: --io-engine auto|io_uring|threads|sync. `auto` is
// io_uring where the kernel lets this process set a ring up, else threads.
// A refusal (an old kernel, kernel.io_uring_disabled, a seccomp filter)
// falls back with one log line saying why.
import type { Logger } from '../log.js';
import { SysError, errnoName } from '../sys/index.js';
import type { EngineKind, IoEngine } from './engine.js';
import { SyncEngine } from './sync.js';
import { ThreadsEngine } from './threads.js';
import { createUringEngine } from './uring.js';

export type EngineChoice = EngineKind | 'auto';
export const ENGINE_CHOICES: readonly EngineChoice[] = ['auto', 'io_uring', 'threads', 'sync'];

export interface EngineOptions {
  choice: EngineChoice;
  /** threads in libuv's pool (UV_THREADPOOL_SIZE, set by the CLI before the pool starts) */
  threadPoolSize: number;
  /** io_uring submission queue entries */
  ringEntries?: number;
  log?: Logger;
}

/**
 * The engine when --io-engine is not given: DUOFS_IO_ENGINE, else auto. (The
 * test suites run once per engine through it; operators may set it too.)
 */
export function defaultEngineChoice(): EngineChoice {
  const v = process.env['DUOFS_IO_ENGINE'];
  if (v === undefined || v === '') return 'auto';
  if (!ENGINE_CHOICES.includes(v as EngineChoice)) {
    throw new SysError(22 /* EINVAL */, 'DUOFS_IO_ENGINE', `${v} is not an engine (${ENGINE_CHOICES.join(', ')})`);
  }
  return v as EngineChoice;
}

/** libuv's pool as this process has it (bin/thread-pool.js sizes it from --thread-pool-size before it starts). */
export function threadPoolSize(): number {
  const n = Number(process.env['UV_THREADPOOL_SIZE']);
  return Number.isInteger(n) && n >= 1 ? Math.min(n, 1024) : 4;
}

export async function createEngine(o: EngineOptions): Promise<IoEngine> {
  if (o.choice === 'sync') return new SyncEngine();
  const threads = new ThreadsEngine(o.threadPoolSize);
  if (o.choice === 'threads') return threads;
  let why: string;
  try {
    return createUringEngine({ entries: o.ringEntries, fallback: threads });
  } catch (e) {
    why = e instanceof SysError ? `${e.op} failed: ${errnoName(e.errno)}` : `io_uring engine failed: ${(e as Error).message}`;
  }
  if (o.choice === 'io_uring') throw new SysError(95 /* EOPNOTSUPP */, '--io-engine io_uring', why);
  o.log?.info({ engine: 'threads', reason: why }, `io_uring unavailable (${why}); using the thread pool`);
  return threads;
}
