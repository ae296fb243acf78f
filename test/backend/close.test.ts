// A server that stops gives back every fd it held on the export: an
// embedding process (or a test runner) that starts and stops servers must
// not run out of fds, and an export it stopped serving is not kept open.
import { expect, test } from '@jest/globals';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDuofs } from '../../src/server.js';
import { P9Client } from '../p9/client.js';
import { O } from '../p9/proto.js';

/** This process's fds that point into `dir`. */
function fdsInto(dir: string): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (target === dir || target.startsWith(`${dir}/`)) out.push(`${fd} -> ${target}`);
    } catch {
      // closed while listing
    }
  }
  return out;
}

test.each(['passthrough', 'mapped-xattr', 'mapped-file'] as const)(
  '%s: after close() no fd points into the export, however often a server is started',
  async (securityModel) => {
    const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'duofs-close-')));
    const exp = path.join(base, 'export');
    fs.mkdirSync(path.join(exp, 'dir', 'deeper'), { recursive: true });
    fs.writeFileSync(path.join(exp, 'dir', 'file'), 'x');
    try {
      for (let round = 0; round < 3; round++) {
        const sock = path.join(base, `9p-${round}.sock`);
        const d = await startDuofs({ sharedDir: exp, ninepSocket: sock, logLevel: 'silent', securityModel });
        const { c, root } = await P9Client.session({ path: sock }, { aname: exp });
        const f = c.newFid();
        await c.walk(root, f, ['dir', 'file']);
        await c.lopen(f, O.RDWR);
        const n = c.newFid();
        await c.walk(root, n, ['dir']);
        await c.lcreate(n, `new${round}`, O.RDWR | O.CREAT, 0o644, 0);
        const g = c.newFid();
        await c.walk(root, g, ['dir', 'deeper']); // held, never clunked: the server's close must end it
        expect(fdsInto(exp).length).toBeGreaterThan(0);
        await c.close();
        await d.close();
        expect(fdsInto(exp)).toEqual([]);
      }
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  },
);
