// The test frontend against the reference backend: virtiofsd 1.14 from the
// lab root (run through the root's own dynamic loader, no chroot needed).
// Proves the driver speaks vhost-user and lays out vrings the way a real
// backend expects; skipped when the lab root has not been built.
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { VhostUserFrontend } from './driver.js';
import { sleep, within } from './harness.js';
import { fuseInit, parseFuseInitReply, FUSE_OPCODE } from './fuse-wire.js';

const labRoot = resolve('.lab/root');
const loader = join(labRoot, 'lib64/ld-linux-x86-64.so.2');
const binary = join(labRoot, 'usr/libexec/virtiofsd');
const available = existsSync(loader) && existsSync(binary) && process.getuid?.() === 0;

jest.setTimeout(30_000); // virtiofsd starts slowly when the machine is busy

(available ? describe : describe.skip)('the test frontend drives virtiofsd 1.14', () => {
  let dir: string;
  let proc: ChildProcess;
  let stderr = '';
  let fe: VhostUserFrontend;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'duofs-virtiofsd-'));
    mkdirSync(join(dir, 'shared'));
    writeFileSync(join(dir, 'shared', 'hello.txt'), 'hi\n');
    const sock = join(dir, 'vfsd.sock');
    proc = spawn(
      loader,
      [
        '--library-path',
        join(labRoot, 'usr/lib/x86_64-linux-gnu'),
        binary,
        `--socket-path=${sock}`,
        `--shared-dir=${join(dir, 'shared')}`,
        '--sandbox=none',
        '--log-level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    for (let i = 0; i < 500 && !existsSync(sock) && proc.exitCode === null; i++) await sleep(20);
    if (!existsSync(sock)) throw new Error(`virtiofsd did not create its socket (exit ${proc.exitCode}): ${stderr}`);
    fe = await within(VhostUserFrontend.connect({ socketPath: sock, queueSize: 256 }), 10_000, 'virtiofsd handshake').catch((e: Error) => {
      throw new Error(`${e.message}; virtiofsd stderr: ${stderr}`);
    });
  });

  afterAll(() => {
    fe?.close();
    proc?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('negotiates VERSION_1, INDIRECT_DESC, EVENT_IDX and two queues', () => {
    expect(fe.queueNum).toBeGreaterThanOrEqual(2);
    expect(fe.features & (1n << 32n)).toBe(1n << 32n);
  });

  test('FUSE_INIT on the request queue gets a 7.x reply', async () => {
    const c = await within(fe.request(1, { out: [fuseInit(1n)], in: [16, 64] }), 5000, 'FUSE_INIT reply');
    const r = parseFuseInitReply(c.data);
    expect(r.error).toBe(0);
    expect(r.unique).toBe(1n);
    expect(r.major).toBe(7);
  });

  test('an indirect chain gets the same reply (GETATTR of the root)', async () => {
    const hdr = Buffer.alloc(40 + 16);
    hdr.writeUInt32LE(hdr.length, 0);
    hdr.writeUInt32LE(FUSE_OPCODE.GETATTR, 4);
    hdr.writeBigUInt64LE(2n, 8);
    hdr.writeBigUInt64LE(1n, 16); // FUSE_ROOT_ID
    const c = await within(fe.request(1, { out: [hdr.subarray(0, 40), hdr.subarray(40)], in: [16, 104], indirect: true }), 5000, 'GETATTR reply');
    expect(c.data.readInt32LE(4)).toBe(0);
    expect(c.len).toBe(16 + 104);
  });
});
