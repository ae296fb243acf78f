// V8 flags for a serving duofs process, which only take effect when the
// process starts (the heap is configured before any JavaScript runs).
//
// Every request that carries data over a socket brings fresh ArrayBuffers
// (Node allocates one per socket read). V8 counts them against its
// old-generation limit until the next mark-compact, and from the small
// limit a process starts with, 8 clients writing 1 MiB over 9P made the
// server run a full GC every few requests: 2.5 times the CPU per request
// (measured with --trace-gc: ~100 mark-compacts in 3 s, against none). A
// 64 MiB initial old space keeps the limit above that churn, for +3 MB of
// peak RSS in the same run (docs/architecture.md, "Large frames").
//
// The sandbox supervisor starts the server with them, the bench and the
// lab start their duofs with them, and the bins' #! lines carry them for a
// duofs started by path (npm's bins, systemd, libvirt).
export const SERVER_V8_FLAGS: readonly string[] = ['--initial-old-space-size=64'];

/** `execArgv` with the server flags added unless it sets them already. */
export function withServerV8Flags(execArgv: readonly string[]): string[] {
  const out = [...execArgv];
  for (const f of SERVER_V8_FLAGS) {
    const name = f.split('=')[0]!;
    if (!out.some((a) => a === name || a.startsWith(`${name}=`))) out.unshift(f);
  }
  return out;
}
