// 64 front-ends on one daemon: 32 9P unix listeners and 32 virtio-fs
// vhost-user sockets from one config file, each with a client doing a small
// workload at the same time. Checks that every device served its own
// client its own bytes; the throughput and the memory per front-end are
// printed (and written to $DUOFS_MANY_REPORT if set), never asserted.
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { P9Client } from '../p9/client.js';
import { O } from '../p9/proto.js';
import { VhostUserFrontend } from '../../src/doubles/vhost-user-frontend.js';
import { FuseClient, ROOT } from '../../src/doubles/fuse-client.js';
import { startConfigDaemon, type ConfigDaemonProc } from './harness.js';

jest.setTimeout(300_000);

const MIB = 1 << 20;
const N9P = 32;
const NVFS = 32;
const FILE = 1 * MIB;
const CHUNK = 64 * 1024;
const READS = 4;
let base: string;
let homes: string;
let configFile: string;
let ctl: string;
let d: ConfigDaemonProc;

const names9p = Array.from({ length: N9P }, (_, i) => `p${i}`);
const namesVfs = Array.from({ length: NVFS }, (_, i) => `v${i}`);

function writeConfig(all: boolean): void {
  const parts = [`control-socket = "${ctl}"`, `[exports.homes]\npath = "${homes}"`];
  for (const n of all ? names9p : names9p.slice(0, 1))
    parts.push(
      `[devices.${n}]\ntype = "9p-unix"\nsocket = "${base}/${n}.sock"\nexport = "homes"\ndir = "${n}"\ncreate = { uid = 0, gid = 0, mode = 0o700 }`,
    );
  if (all)
    for (const n of namesVfs)
      parts.push(
        `[devices.${n}]\ntype = "virtiofs"\nsocket = "${base}/${n}.sock"\nexport = "homes"\ndir = "${n}"\ncreate = { uid = 0, gid = 0, mode = 0o700 }`,
      );
  fs.writeFileSync(configFile, `${parts.join('\n\n')}\n`);
}

const pattern = (seed: number): Buffer => {
  const b = Buffer.alloc(FILE);
  for (let i = 0; i < FILE; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
};

async function work9p(n: string, seed: number): Promise<number> {
  const { c, root } = await P9Client.session(`${base}/${n}.sock`, { uid: 0, msize: 256 * 1024 });
  const data = pattern(seed);
  const f = c.newFid();
  await c.walk(root, f, []);
  await c.lcreate(f, 'data', O.RDWR | O.CREAT, 0o600, 0);
  for (let off = 0; off < FILE; off += CHUNK) await c.write(f, off, data.subarray(off, off + CHUNK));
  await c.fsync(f);
  for (let r = 0; r < READS; r++) {
    const parts: Buffer[] = [];
    for (let off = 0; off < FILE; off += CHUNK) parts.push(await c.read(f, off, CHUNK));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  }
  await c.clunk(f);
  await c.close();
  return FILE * (1 + READS);
}

async function workVfs(n: string, seed: number): Promise<number> {
  const fe = await VhostUserFrontend.connect({ socketPath: `${base}/${n}.sock`, queueSize: 64, regions: [{ gpa: 0x100000, size: 2 * MIB }] });
  try {
    const c = new FuseClient(fe, 1);
    await c.doInit();
    const data = pattern(seed);
    const { open } = await c.create(ROOT, 'data', fs.constants.O_RDWR, 0o600);
    for (let off = 0; off < FILE; off += CHUNK) await c.write(open.fh, BigInt(off), data.subarray(off, off + CHUNK));
    await c.fsync(open.fh);
    for (let r = 0; r < READS; r++) {
      const parts: Buffer[] = [];
      for (let off = 0; off < FILE; off += CHUNK) parts.push(await c.read(open.fh, BigInt(off), CHUNK));
      expect(Buffer.concat(parts).equals(data)).toBe(true);
    }
    await c.release(open.fh);
  } finally {
    fe.close();
  }
  return FILE * (1 + READS);
}

/** user + system time of a process, from /proc (clock ticks of 1/100 s on Linux). */
function cpuSeconds(pid: number): number {
  const f = fs
    .readFileSync(`/proc/${pid}/stat`, 'utf8')
    .slice(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').lastIndexOf(')') + 2)
    .split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

beforeAll(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-many-'));
  homes = path.join(base, 'homes');
  fs.mkdirSync(homes);
  configFile = path.join(base, 'many.toml');
  ctl = path.join(base, 'many.ctl');
  writeConfig(false);
  d = await startConfigDaemon(configFile, ctl, ['--log-level', 'warn']);
});

afterAll(async () => {
  await d?.close();
  fs.rmSync(base, { recursive: true, force: true });
});

test('64 front-ends (32 9P listeners, 32 virtio-fs sockets) on one daemon each serve their own client', async () => {
  const one = await d.status();
  writeConfig(true);
  d.proc.kill('SIGHUP');
  let set = one;
  for (const until = Date.now() + 60_000; set.devices.length < N9P + NVFS && Date.now() < until; ) {
    await new Promise((r) => setTimeout(r, 100));
    set = await d.status();
  }
  expect(set.devices).toHaveLength(N9P + NVFS);
  const cpu0 = cpuSeconds(d.proc.pid!);
  const t0 = process.hrtime.bigint();
  const moved = await Promise.all([...names9p.map((n, i) => work9p(n, i)), ...namesVfs.map((n, i) => workVfs(n, 1000 + i))]);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const daemonCpu = cpuSeconds(d.proc.pid!) - cpu0;
  const after = await d.status();
  // each device saw exactly its own client's workload, on its own file
  for (const n of [...names9p, ...namesVfs]) {
    const s = after.devices.find((x) => x.name === n)!;
    expect(s.clients).toEqual([]);
    expect(s.openFiles).toBe(0);
    expect(s.ops.write).toBe(FILE / CHUNK);
    expect(s.ops.read).toBe((FILE / CHUNK) * READS);
    expect(fs.statSync(path.join(homes, n, 'data')).size).toBe(FILE);
  }
  const total = moved.reduce((a, b) => a + b, 0);
  const report = {
    frontEnds: N9P + NVFS,
    bytesMoved: total,
    seconds: Number(seconds.toFixed(2)),
    aggregateMiBps: Number((total / MIB / seconds).toFixed(1)),
    daemonCpuSeconds: Number(daemonCpu.toFixed(2)),
    mibPerDaemonCpuSecond: Number((total / MIB / daemonCpu).toFixed(1)),
    rssOneDeviceMiB: Number((one.rssBytes / MIB).toFixed(1)),
    rss64IdleMiB: Number((set.rssBytes / MIB).toFixed(1)),
    rss64AfterMiB: Number((after.rssBytes / MIB).toFixed(1)),
    rssPerFrontEndKiB: Math.round((set.rssBytes - one.rssBytes) / 1024 / (N9P + NVFS - 1)),
    rssPerFrontEndAfterWorkKiB: Math.round((after.rssBytes - one.rssBytes) / 1024 / (N9P + NVFS - 1)),
    openFds: after.openFds,
  };
  console.log(`64 front-ends: ${JSON.stringify(report)}`);
  if (process.env.DUOFS_MANY_REPORT) fs.writeFileSync(process.env.DUOFS_MANY_REPORT, `${JSON.stringify(report, null, 2)}\n`);
});
