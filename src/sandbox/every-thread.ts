// Running a sequence of calls once on every thread of libuv's pool.
//
// Capabilities, no_new_privs and (before Landlock ABI 8) Landlock domains
// belong to a thread, not to the process: capset() on the main thread leaves
// the pool threads that run duofs's blocking I/O (koffi's async calls, see
// src/io/threads.ts) as privileged as before. No API runs code on a chosen
// pool thread, and each koffi async call is one job that runs one native call
// on whichever pool thread is free. So the pool is cornered:
//
//   1. park every thread: one job per thread, a blocking write() of twice a
//      pipe's capacity, which fills the pipe and then waits for room. A
//      parked job is seen from here by FIONREAD on its pipe, so we know when
//      all N are held (each by a different thread: a parked thread takes no
//      other job). One more park shows whether the pool has more threads
//      than N (then it is parked too, and another is tried).
//   2. release one original park (closing its read end ends the write with
//      EPIPE). Its thread X is now the only free thread of the pool, so the
//      next jobs all run on X, one after the other: gettid (to know X), the
//      steps, then a new park that holds X again.
//   3. repeat with the next original park: its thread is not X (X's original
//      job has ended), and not any thread served before. Each thread thus
//      runs the steps exactly once.
//   4. release everything.
//
// Foreign jobs queued meanwhile (there should be none: the sandbox is set up
// before any guest connects) run on the free thread before ours and delay,
// but do not misroute, the steps. V8's platform threads and any thread not in
// libuv's pool are out of reach: the caller checks /proc afterwards.
import { close } from '../sys/fs.js';
import { gettidOnPool, pendingBytes, pipe, setPipeSize, writeOnPool } from '../sys/tasks.js';

/** One native call queued on the pool (a koffi `.async`); `done` gets its result (< 0: -errno). */
export interface PoolStep {
  what: string;
  run(done: (r: number) => void): void;
}

export interface PoolRun {
  /** the pool threads that ran every step, by thread id */
  tids: number[];
  /** steps that failed, with the thread and the errno */
  failures: { tid: number; what: string; errno: number }[];
  /** every pool thread was reached (and no more threads than found exist) */
  complete: boolean;
  /** why `complete` is false */
  reason?: string;
}

export interface PoolOptions {
  /** threads in libuv's pool (src/io/select.ts threadPoolSize()) */
  poolSize: number;
  /** how long to wait for the pool's threads to take our jobs */
  timeoutMs?: number;
  /** how long a probe job may take to start before the pool is deemed full */
  probeMs?: number;
}

interface Park {
  r: number;
  w: number;
  buf: Buffer;
  done: boolean;
  finished: Promise<void>;
}

function park(): Park {
  const [r, w] = pipe();
  let cap: number;
  try {
    cap = setPipeSize(w, 4096);
  } catch (e) {
    close(r);
    close(w);
    throw e;
  }
  let resolve!: () => void;
  const p: Park = { r, w, buf: Buffer.alloc(cap * 2), done: false, finished: new Promise<void>((res) => (resolve = res)) };
  writeOnPool(w, p.buf, () => {
    p.done = true;
    resolve();
  });
  return p;
}

const started = (p: Park): boolean => p.done || (p.r >= 0 && pendingBytes(p.r) > 0);

/** Lets the park's job end (now if it is blocked, at once when it starts if it is still queued). */
function unblock(p: Park): void {
  if (p.r >= 0) close(p.r); // the write ends with EPIPE (Node ignores SIGPIPE) or the count it wrote
  p.r = -1;
}

async function release(p: Park): Promise<void> {
  unblock(p);
  await p.finished;
  if (p.w >= 0) close(p.w);
  p.w = -1;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(1);
  }
  return true;
}

const onPool = (run: (done: (r: number) => void) => void): Promise<number> => new Promise((res) => run(res));

/** Runs `steps`, in order, once on each thread of libuv's pool (see the top of this file). */
export async function onEveryPoolThread(steps: readonly PoolStep[], o: PoolOptions): Promise<PoolRun> {
  const timeoutMs = o.timeoutMs ?? 2000;
  const probeMs = o.probeMs ?? 25;
  const held: Park[] = [];
  const parks: Park[] = [];
  const out: PoolRun = { tids: [], failures: [], complete: true };
  const fail = (reason: string): void => {
    out.complete = false;
    out.reason ??= reason;
  };
  const newPark = (): Park => {
    const p = park();
    parks.push(p);
    return p;
  };
  try {
    for (let i = 0; i < o.poolSize; i++) held.push(newPark());
    if (!(await until(() => held.every(started), timeoutMs))) {
      const n = held.filter(started).length;
      fail(`only ${n} of ${o.poolSize} pool threads took a job within ${timeoutMs} ms (a smaller pool, or threads busy)`);
      // Serve the threads we hold; the others' parks end at once when they start.
      for (const p of held.filter((x) => !started(x))) unblock(p);
      held.splice(0, held.length, ...held.filter(started));
    } else {
      for (;;) {
        const probe = newPark();
        await sleep(probeMs);
        if (!started(probe)) {
          unblock(probe);
          break;
        }
        held.push(probe); // a thread beyond poolSize
      }
      if (held.length > o.poolSize) fail(`the pool has ${held.length} threads, not ${o.poolSize}`);
    }

    const served = new Set<number>();
    for (const p of held) {
      await release(p);
      const tid = await onPool(gettidOnPool);
      if (served.has(tid)) fail(`pool thread ${tid} came round twice`);
      for (const s of steps) {
        const r = await onPool((d) => s.run(d));
        if (r < 0) out.failures.push({ tid, what: s.what, errno: -r });
      }
      served.add(tid);
      out.tids.push(tid);
      const again = newPark();
      if (!(await until(() => started(again), timeoutMs))) fail(`pool thread ${tid} did not take its park again`);
    }
  } finally {
    for (const p of parks) unblock(p);
    await Promise.all(parks.map((p) => release(p)));
  }
  return out;
}
