// What `duofs bench` measures: the guest jobs (fio, metadata, untar), the
// host-side loads, the servers, and how each job's fio command line is built.
// Pure data and functions; the runners (guest.ts, host.ts) and the renderers
// share it, so a result file names its jobs and metrics exactly as here.

export type Unit = 'MB/s' | 'IOPS' | 'ops/s' | 'files/s' | 'entries/s' | 'µs' | 'µs/op' | 's' | '×';

export interface MetricDef {
  /** key in a cell's `metrics` */
  key: string;
  /** short label for a table row (the job's title comes first) */
  label: string;
  unit: Unit;
  /** false for latencies and costs */
  higherIsBetter: boolean;
  /** shown in the table and the chart (the rest is kept in the JSON) */
  shown: boolean;
}

export type GuestJobKind = 'fio' | 'meta' | 'untar';

export interface JobDef {
  name: string;
  title: string;
  metrics: MetricDef[];
}

export interface GuestJobDef extends JobDef {
  kind: GuestJobKind;
  /** fio: the I/O pattern */
  fio?: {
    rw: 'read' | 'write' | 'randread' | 'randwrite';
    bs: string;
    engine: 'psync' | 'libaio';
    file: 'data' | 'seqw';
    /**
     * requests in flight, the way each protocol can have them: libaio at this
     * iodepth on virtio-fs, psync with this many jobs on 9p (as issue 12
     * measured 9p; v9fs's libaio depth was not checked); `engine` is then
     * what virtio-fs uses
     */
    qd?: number;
  };
}

const mbps = (shown: boolean): MetricDef => ({ key: 'mbps', label: 'MB/s', unit: 'MB/s', higherIsBetter: true, shown });
const iops = (shown: boolean): MetricDef => ({ key: 'iops', label: 'IOPS', unit: 'IOPS', higherIsBetter: true, shown });
const lat: MetricDef = { key: 'latUs', label: 'mean latency', unit: 'µs', higherIsBetter: false, shown: false };

function fioJob(name: string, title: string, fio: NonNullable<GuestJobDef['fio']>): GuestJobDef {
  const seq = fio.rw === 'read' || fio.rw === 'write';
  return { name, title, kind: 'fio', fio, metrics: seq ? [mbps(true), iops(false), lat] : [iops(true), mbps(false), lat] };
}

/** The guest jobs, in the order they run. */
export const GUEST_JOBS: readonly GuestJobDef[] = [
  fioJob('seq-read', 'seq read 1M', { rw: 'read', bs: '1M', engine: 'psync', file: 'data' }),
  fioJob('seq-write', 'seq write 1M', { rw: 'write', bs: '1M', engine: 'psync', file: 'seqw' }),
  fioJob('rand-read', 'rand read 4K psync', { rw: 'randread', bs: '4k', engine: 'psync', file: 'data' }),
  fioJob('rand-write', 'rand write 4K psync', { rw: 'randwrite', bs: '4k', engine: 'psync', file: 'data' }),
  fioJob('rand-read-aio', 'rand read 4K libaio', { rw: 'randread', bs: '4k', engine: 'libaio', file: 'data' }),
  fioJob('rand-write-aio', 'rand write 4K libaio', { rw: 'randwrite', bs: '4k', engine: 'libaio', file: 'data' }),
  {
    name: 'meta',
    title: 'metadata',
    kind: 'meta',
    metrics: [
      { key: 'create', label: 'create', unit: 'ops/s', higherIsBetter: true, shown: true },
      { key: 'stat', label: 'stat', unit: 'ops/s', higherIsBetter: true, shown: true },
      { key: 'readdir', label: 'readdir', unit: 'entries/s', higherIsBetter: true, shown: true },
      { key: 'unlink', label: 'unlink', unit: 'ops/s', higherIsBetter: true, shown: true },
    ],
  },
  {
    name: 'untar',
    title: 'untar',
    kind: 'untar',
    metrics: [
      { key: 'files', label: 'files/s', unit: 'files/s', higherIsBetter: true, shown: true },
      { key: 'mbps', label: 'MB/s', unit: 'MB/s', higherIsBetter: true, shown: false },
      { key: 'secs', label: 'seconds', unit: 's', higherIsBetter: false, shown: false },
    ],
  },
];

/**
 * The slow-storage jobs (`--slow-storage MS`): 4 KiB random I/O at 1 and 16
 * requests in flight on a tree where every read and write takes MS. Short
 * runs on a small file: each request costs MS whatever the server.
 */
export const SLOW_GUEST_JOBS: readonly GuestJobDef[] = (
  [
    ['read', 'randread'],
    ['write', 'randwrite'],
  ] as const
).flatMap(([what, rw]) =>
  [1, 16].map((qd) => fioJob(`slow-${what}-qd${qd}`, `slow rand ${what} 4K QD${qd}`, { rw, bs: '4k', engine: 'libaio', file: 'data', qd })),
);

/** The host-side loads (requests pushed straight at the servers, no guest). */
export const HOST_LOADS: readonly JobDef[] = [
  ...['getattr', 'lookup'].map((name) => ({
    name,
    title: name === 'lookup' ? 'lookup (9P: walk+clunk)' : 'getattr',
    metrics: [{ key: 'ops', label: 'ops/s', unit: 'ops/s' as Unit, higherIsBetter: true, shown: true }, cpu()],
  })),
  ...[
    ['read-4k', 'read 4K'],
    ['write-4k', 'write 4K'],
    ['read-1m', 'read 1M'],
    ['write-1m', 'write 1M'],
  ].map(([name, title]) => ({
    name: name!,
    title: title!,
    metrics: [
      { key: 'ops', label: 'ops/s', unit: 'ops/s' as Unit, higherIsBetter: true, shown: !name!.endsWith('1m') },
      { key: 'mbps', label: 'MB/s', unit: 'MB/s' as Unit, higherIsBetter: true, shown: name!.endsWith('1m') },
      cpu(),
    ],
  })),
  {
    name: 'create-unlink',
    title: 'create+unlink',
    metrics: [{ key: 'ops', label: 'ops/s', unit: 'ops/s', higherIsBetter: true, shown: true }, cpu()],
  },
];

/**
 * Head-of-line loads (`--host --slow-storage MS`): one client keeps 16 slow
 * 4 KiB reads in flight while a second one times getattrs (9P: walk +
 * getattr + clunk; FUSE: GETATTR), against the same getattrs unloaded.
 * `hol-same`: both clients speak the server's protocol; `hol-cross`: the
 * reads come through duofs's other front-end on the same process.
 */
export const HOL_LOADS: readonly JobDef[] = [
  ['hol-same', 'head-of-line, reads on the same protocol'],
  ['hol-cross', 'head-of-line, reads on the other protocol'],
].map(([name, title]) => ({
  name: name!,
  title: title!,
  metrics: [
    { key: 'p50Idle', label: 'getattr p50 unloaded', unit: 'µs' as Unit, higherIsBetter: false, shown: true },
    { key: 'p99Idle', label: 'getattr p99 unloaded', unit: 'µs' as Unit, higherIsBetter: false, shown: true },
    { key: 'p50Loaded', label: 'getattr p50 loaded', unit: 'µs' as Unit, higherIsBetter: false, shown: true },
    { key: 'p99Loaded', label: 'getattr p99 loaded', unit: 'µs' as Unit, higherIsBetter: false, shown: true },
    { key: 'p50Ratio', label: 'p50 loaded/unloaded', unit: '×' as Unit, higherIsBetter: false, shown: true },
    { key: 'p99Ratio', label: 'p99 loaded/unloaded', unit: '×' as Unit, higherIsBetter: false, shown: true },
    { key: 'loadIops', label: 'slow reads/s meanwhile', unit: 'IOPS' as Unit, higherIsBetter: true, shown: true },
    { key: 'probesLoaded', label: 'getattrs timed loaded', unit: 'ops/s' as Unit, higherIsBetter: true, shown: false },
  ],
}));

function cpu(): MetricDef {
  return { key: 'cpuUsPerOp', label: 'server CPU', unit: 'µs/op', higherIsBetter: false, shown: false };
}

export type Protocol = '9p' | 'virtiofs';

export interface ServerDef {
  name: string;
  protocol: Protocol;
  /** the server of the same protocol the ratios are taken against (itself for a reference) */
  reference: string;
  description: string;
}

export const GUEST_SERVERS: readonly ServerDef[] = [
  { name: 'duofs-virtiofs', protocol: 'virtiofs', reference: 'virtiofsd', description: 'duofs serve --virtiofs-socket (vhost-user-fs-pci)' },
  { name: 'virtiofsd', protocol: 'virtiofs', reference: 'virtiofsd', description: 'virtiofsd (Rust) from the lab root, --sandbox=chroot' },
  { name: 'duofs-9p', protocol: '9p', reference: 'qemu-9p', description: 'duofs serve --9p-vhost-socket (vhost-user-test-device-pci, trans=virtio)' },
  {
    name: 'qemu-9p',
    protocol: '9p',
    reference: 'qemu-9p',
    description: "QEMU's built-in 9p (-fsdev local, security_model=passthrough, trans=virtio)",
  },
  {
    name: 'duofs-9p-stream',
    protocol: '9p',
    reference: 'qemu-9p',
    description: 'duofs serve --9p-socket over a virtio-serial port and the in-guest socat relay (trans=unix)',
  },
  {
    name: 'diod',
    protocol: '9p',
    reference: 'qemu-9p',
    description: "diod from the lab root over the stream relay (the kernel's attach is refused: see docs/lab.md)",
  },
  {
    name: 'virtiofsd-t16',
    protocol: 'virtiofs',
    reference: 'virtiofsd',
    description: 'virtiofsd (Rust) from the lab root, --sandbox=chroot --thread-pool-size=16',
  },
];

/** diod is known to refuse the guest kernel's attach, and the thread-pool variant matters only on slow storage: run when asked for. */
export const DEFAULT_GUEST_SERVERS = GUEST_SERVERS.filter((s) => s.name !== 'diod' && s.name !== 'virtiofsd-t16').map((s) => s.name);

/** `--slow-storage`: the servers the question is about (virtiofsd with its default pool, none, and with 16 threads). */
export const SLOW_GUEST_SERVERS = ['duofs-virtiofs', 'virtiofsd-t16', 'virtiofsd', 'duofs-9p', 'qemu-9p'];

/**
 * On slow storage virtio-fs is compared with virtiofsd --thread-pool-size=16
 * (what one runs when reads can block), when it is in the run.
 */
export function slowReferences<T extends ServerDef>(servers: T[]): T[] {
  if (!servers.some((s) => s.name === 'virtiofsd-t16')) return servers;
  return servers.map((s) => (s.protocol === 'virtiofs' ? { ...s, reference: 'virtiofsd-t16' } : s));
}

export const HOST_SERVERS: readonly ServerDef[] = [
  {
    name: 'duofs-virtiofs',
    protocol: 'virtiofs',
    reference: 'virtiofsd',
    description: 'duofs serve --virtiofs-socket, driven by the test vhost-user frontend',
  },
  { name: 'virtiofsd', protocol: 'virtiofs', reference: 'virtiofsd', description: 'virtiofsd 1.14 from the lab root, --sandbox=none, same frontend' },
  {
    name: 'virtiofsd-t16',
    protocol: 'virtiofs',
    reference: 'virtiofsd',
    description: 'virtiofsd 1.14 from the lab root, --sandbox=none --thread-pool-size=16, same frontend',
  },
  { name: 'duofs-9p', protocol: '9p', reference: 'diod', description: 'duofs serve --9p-socket, the test 9P client over a unix socket' },
  { name: 'diod', protocol: '9p', reference: 'diod', description: 'diod -n -N on a unix socket, same client' },
];

export interface FioSettings {
  sizeMiB: number;
  runtimeSec: number;
  iodepth: number;
  direct: boolean;
}

/**
 * fio's arguments for a job (without --filename and --output, which the guest
 * script adds per cell). Every job is time based: a slow server does less
 * work in the same time instead of stretching the run, and a fast one wraps
 * around its file.
 */
export function fioArgs(job: GuestJobDef, s: FioSettings, protocol: Protocol = 'virtiofs'): string[] {
  if (!job.fio) throw new Error(`${job.name} is not a fio job`);
  const f = job.fio;
  const write = f.rw === 'write' || f.rw === 'randwrite';
  const engine = f.qd !== undefined && protocol === '9p' ? 'psync' : f.engine;
  const depth = engine !== 'libaio' ? 1 : (f.qd ?? s.iodepth);
  const jobs = f.qd !== undefined && protocol === '9p' && f.qd > 1 ? [`--numjobs=${f.qd}`] : [];
  return [
    `--name=${job.name}`,
    `--rw=${f.rw}`,
    `--bs=${f.bs}`,
    `--ioengine=${engine}`,
    `--iodepth=${depth}`,
    ...jobs,
    `--direct=${s.direct ? 1 : 0}`,
    `--size=${s.sizeMiB}M`,
    '--time_based=1',
    `--runtime=${s.runtimeSec}`,
    '--fallocate=none',
    '--norandommap=1',
    '--randrepeat=0',
    '--clocksource=clock_gettime',
    '--output-format=json',
    // Buffered writes must reach the server inside the measured time.
    ...(write && !s.direct ? ['--end_fsync=1'] : []),
  ];
}

export function findGuestJob(name: string): GuestJobDef | undefined {
  return GUEST_JOBS.find((j) => j.name === name) ?? SLOW_GUEST_JOBS.find((j) => j.name === name);
}

/** Parses sizes such as 64M, 1G, 512k, 100 (MiB) into MiB. */
export function parseSizeMiB(v: string | number): number {
  if (typeof v === 'number') return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgG])?i?[bB]?\s*$/.exec(v);
  if (!m) throw new Error(`--size ${v}: expected a size such as 64M or 1G`);
  const n = Number(m[1]);
  const unit = (m[2] ?? 'm').toLowerCase();
  const mib = unit === 'k' ? n / 1024 : unit === 'g' ? n * 1024 : n;
  if (!(mib >= 1)) throw new Error(`--size ${v}: at least 1M`);
  return Math.round(mib);
}
