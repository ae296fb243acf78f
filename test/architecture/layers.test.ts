// The import rule (docs/architecture.md), enforced: every product file
// imports only from layers below it, nothing outside test/ imports test/,
// and no import cycle exists. The violations the tree still has are frozen
// in known-violations.json: a new one fails this test, and so does an entry
// that no longer occurs (remove it when you fix it — the list only shrinks).
import { describe, expect, test } from '@jest/globals';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cycles, importsOf, layerOf, productFiles, sourceFiles, violations, type ImportEdge } from './import-graph.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const known = JSON.parse(fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'known-violations.json'), 'utf8')) as {
  imports: string[];
  cycles: string[][];
};

const files = productFiles(root);
const edges: ImportEdge[] = files.flatMap((f) => importsOf(f, fs.readFileSync(path.join(root, f), 'utf8')));

describe('the import rule on this tree', () => {
  test('every product file belongs to a layer, and the layers are all present', () => {
    expect(files.length).toBeGreaterThan(50);
    const layers = new Set(files.map((f) => layerOf(f)));
    for (const l of ['sys', 'log', 'security', 'backend', 'transport', 'protocol', 'binding', 'tools', 'app']) expect(layers).toContain(l);
  });

  test('no source outside test/ and scripts/ sits beside the layers (a second bench/ at the top level, say)', () => {
    expect(sourceFiles(root).filter((f) => !layerOf(f))).toEqual([]);
  });

  test('no upward import beyond the frozen list, and every frozen entry still occurs', () => {
    const found = violations(edges);
    expect(found.filter((v) => !known.imports.includes(v))).toEqual([]);
    expect(known.imports.filter((v) => !found.includes(v))).toEqual([]);
  });

  test('no import cycle beyond the frozen list, and every frozen cycle still occurs', () => {
    const key = (c: string[]) => c.join(' ');
    const found = cycles(edges).map(key);
    const frozen = known.cycles.map(key);
    expect(found.filter((c) => !frozen.includes(c))).toEqual([]);
    expect(frozen.filter((c) => !found.includes(c))).toEqual([]);
  });
});

describe('the checker itself', () => {
  test('an upward import, an import of test/ and a cycle are each reported', () => {
    const e = (from: string, to: string): ImportEdge => ({ from, to, typeOnly: false });
    expect(violations([e('src/sys/fs.ts', 'src/backend/backend.ts')])).toEqual(['src/sys/fs.ts -> src/backend/backend.ts (sys may not use backend)']);
    expect(violations([e('protocols/fuse/session.ts', 'protocols/vhost-user/session.ts')])[0]).toMatch(/protocol may not use transport/);
    expect(violations([e('protocols/fuse/virtio-fs-device.ts', 'protocols/vhost-user/session.ts')])).toEqual([]);
    expect(violations([e('src/bench/host.ts', 'test/p9/client.ts')])[0]).toMatch(/product imports test/);
    expect(violations([e('src/backend/backend.ts', 'src/sys/fs.ts'), e('protocols/9p/session.ts', 'src/backend/api.ts')])).toEqual([]);
    expect(violations([e('protocols/9p/session.ts', 'src/backend/inode-table.ts')])[0]).toMatch(
      /reaches the backend only through src\/backend\/api.ts/,
    );
    expect(violations([e('protocols/vhost-user/session.ts', 'koffi')])).toEqual([
      'protocols/vhost-user/session.ts -> koffi (koffi binding outside src/sys)',
    ]);
    expect(violations([e('src/sys/poll.ts', 'koffi')])).toEqual([]);
    expect(cycles([e('a.ts', 'b.ts'), e('b.ts', 'c.ts'), e('c.ts', 'a.ts'), e('c.ts', 'd.ts')])).toEqual([['a.ts', 'b.ts', 'c.ts']]);
  });

  test('import forms: named, type-only, re-exports, side effects and dynamic import() are all read', () => {
    const text = [
      "import { a } from '../sys/index.js';",
      "import type { B } from './b.js';",
      "export { c } from '../backend/c.js';",
      "import './side.js';",
      "const m = await import('../../test/x.js');",
      "import fs from 'node:fs';",
      "import koffi from 'koffi';",
    ].join('\n');
    expect(importsOf('src/backend/backend.ts', text).map((x) => [x.to, x.typeOnly])).toEqual([
      ['src/sys/index.ts', false],
      ['src/backend/b.ts', true],
      ['src/backend/c.ts', false],
      ['src/backend/side.ts', false],
      ['test/x.ts', false],
      ['koffi', false],
    ]);
  });
});
