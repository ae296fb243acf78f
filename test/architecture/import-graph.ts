// Reads every product source file's relative import specifiers and judges
// them against the layer rule of docs/architecture.md: a file imports only
// from its own layer or the layers it may use, and no import cycle exists.
// koffi is the one package import judged too: only sys may bind syscalls.
import fs from 'node:fs';
import path from 'node:path';

export type Layer = 'sys' | 'log' | 'io' | 'security' | 'backend' | 'transport' | 'protocol' | 'binding' | 'doubles' | 'tools' | 'app';

/** What each layer may import (its own layer is always allowed). */
export const MAY_USE: Record<Layer, readonly Layer[]> = {
  sys: [],
  log: ['sys'],
  io: ['sys', 'log'],
  security: ['sys', 'log'],
  backend: ['sys', 'log', 'io', 'security'],
  transport: ['sys', 'log'],
  protocol: ['sys', 'log', 'backend'],
  binding: ['sys', 'log', 'backend', 'protocol', 'transport'],
  doubles: ['sys', 'log', 'transport', 'protocol'],
  tools: ['sys', 'log', 'io', 'security', 'backend', 'transport', 'protocol', 'binding', 'doubles'],
  app: ['sys', 'log', 'io', 'security', 'backend', 'transport', 'protocol', 'binding', 'doubles', 'tools'],
};

/** Files that bind a protocol to a transport (the only protocol files that may import transports). */
const BINDINGS = new Set([
  'protocols/9p/virtio-9p-device.ts',
  'protocols/9p/stream.ts',
  'protocols/fuse/virtio-fs-device.ts',
  'protocols/fuse/dev-fuse.ts',
]);

/** The one backend file protocols and bindings may import: the interface, not its implementation. */
export const BACKEND_API = 'src/backend/api.ts';

/** The layer of a repository-relative path, or undefined for files outside the product (tests, scripts). */
export function layerOf(rel: string): Layer | undefined {
  if (rel.startsWith('test/') || rel.startsWith('scripts/') || rel.startsWith('node_modules/')) return undefined;
  if (rel.startsWith('src/sys/')) return 'sys';
  if (rel === 'src/log.ts' || rel === 'src/log-limit.ts') return 'log';
  if (rel.startsWith('src/io/')) return 'io';
  if (rel.startsWith('security/')) return 'security';
  if (rel.startsWith('src/backend/')) return 'backend';
  if (rel.startsWith('protocols/virtqueue/') || rel.startsWith('protocols/vhost-user/') || rel === 'src/listeners.ts') return 'transport';
  if (BINDINGS.has(rel)) return 'binding';
  if (rel.startsWith('protocols/')) return 'protocol';
  if (rel.startsWith('src/doubles/')) return 'doubles';
  if (rel.startsWith('src/convert/') || rel.startsWith('src/bench/')) return 'tools';
  if (rel.startsWith('src/') || rel.startsWith('compat/')) return 'app';
  return undefined;
}

export interface ImportEdge {
  from: string;
  to: string;
  /** true for `import type` (erased at run time, still a dependency of the design) */
  typeOnly: boolean;
}

const IMPORT_RE = /(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The koffi package as an import target: only src/sys/ may use it. */
export const KOFFI = 'koffi';

/** The relative imports (and koffi) of one source text, resolved to repository paths (.js specifiers name .ts files). */
export function importsOf(rel: string, text: string): ImportEdge[] {
  const out: ImportEdge[] = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[3] ?? m[4];
    if (spec === KOFFI) out.push({ from: rel, to: KOFFI, typeOnly: Boolean(m[2]) });
    if (!spec?.startsWith('.')) continue;
    const to = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec)).replace(/\.js$/, '.ts');
    out.push({ from: rel, to, typeOnly: Boolean(m[2]) });
  }
  return out;
}

/** Every .ts source under `root` outside tests, scripts and build output, with or without a layer. */
export function sourceFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (['node_modules', 'dist', '.git', '.lab', '.cache', 'test', 'scripts', 'coverage'].includes(e.name) && !dir) continue;
        walk(rel);
      } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
    }
  };
  walk('');
  return out.sort();
}

/** Every product .ts file under `root` (repository-relative): the sources that belong to a layer. */
export function productFiles(root: string): string[] {
  return sourceFiles(root).filter((f) => layerOf(f));
}

/** Imports that break the layer rule: `from` may not use the layer of `to` (or `to` is a test file). */
export function violations(edges: readonly ImportEdge[]): string[] {
  const out: string[] = [];
  for (const e of edges) {
    const a = layerOf(e.from);
    if (!a) continue;
    if (e.to === KOFFI) {
      if (a !== 'sys') out.push(`${e.from} -> koffi (koffi binding outside src/sys)`);
      continue;
    }
    if (e.to.startsWith('test/')) {
      out.push(`${e.from} -> ${e.to} (product imports test/)`);
      continue;
    }
    const b = layerOf(e.to);
    if (!b || a === b) continue;
    if (!MAY_USE[a].includes(b)) out.push(`${e.from} -> ${e.to} (${a} may not use ${b})`);
    else if (b === 'backend' && (a === 'protocol' || a === 'binding') && e.to !== BACKEND_API) {
      out.push(`${e.from} -> ${e.to} (${a} reaches the backend only through ${BACKEND_API})`);
    }
  }
  return [...new Set(out)].sort();
}

/** Import cycles between files, each as its files sorted (Tarjan's strongly connected components). */
export function cycles(edges: readonly ImportEdge[]): string[][] {
  const next = new Map<string, string[]>();
  for (const e of edges) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let n = 0;
  const visit = (v: string): void => {
    index.set(v, n);
    low.set(v, n++);
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of next.keys()) if (!index.has(v)) visit(v);
  return out;
}
