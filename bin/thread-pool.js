// Sizes libuv's thread pool, where the threads I/O engine runs the calls that
// may block, from --thread-pool-size N. libuv reads UV_THREADPOOL_SIZE once,
// when the pool first starts, and an ES module entry point is itself read on
// the pool: so the commands' entry points are CommonJS (bin/package.json) and
// call this before they import anything. The CLI validates the flag itself.
'use strict';

/** The pool when neither the flag nor UV_THREADPOOL_SIZE says otherwise (libuv's own is 4). */
const DEFAULT_THREAD_POOL_SIZE = 16;
/** libuv's ceiling. */
const MAX_THREAD_POOL_SIZE = 1024;

function requestedPoolSize(argv) {
  let v;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    if (a === '--thread-pool-size') v = argv[i + 1];
    else if (a.startsWith('--thread-pool-size=')) v = a.slice('--thread-pool-size='.length);
  }
  const n = Number(v);
  return v !== undefined && /^\d+$/.test(v) && n >= 1 ? Math.min(n, MAX_THREAD_POOL_SIZE) : undefined;
}

function sizeThreadPool(argv) {
  const n = requestedPoolSize(argv);
  if (n !== undefined) process.env.UV_THREADPOOL_SIZE = String(n);
  else if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = String(DEFAULT_THREAD_POOL_SIZE);
}

module.exports = { sizeThreadPool, requestedPoolSize, DEFAULT_THREAD_POOL_SIZE, MAX_THREAD_POOL_SIZE };
