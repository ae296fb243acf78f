// Table, Markdown and SVG rendering of a recorded guest run (fixtures/).
import { describe, expect, test } from '@jest/globals';
import { buildTable, renderMarkdown, renderText } from '../../src/bench/render-table.js';
import { renderSvg, xmlEscape } from '../../src/bench/render-svg.js';
import { reportMarkdown } from '../../src/bench/main.js';
import { cellFromGuest, mountMessage } from '../../src/bench/cells.js';
import { GUEST_JOBS } from '../../src/bench/jobs.js';
import { fixtureCells, fixtureResult } from './fixtures.js';

describe('cells from the guest', () => {
  test('fio cells carry MB/s, IOPS and latency; metadata and untar become rates', () => {
    const cells = fixtureCells();
    const get = (job: string, server: string) => cells.find((c) => c.job === job && c.server === server)!;
    expect(get('seq-read', 'virtiofsd').ok).toBe(true);
    expect(get('seq-read', 'virtiofsd').metrics.mbps).toBeCloseTo(954.775348, 5);
    expect(get('rand-read-aio', 'duofs-virtiofs').metrics.iops).toBeCloseTo(6802.098951, 5);
    const meta = get('meta', 'virtiofsd').metrics;
    expect(meta.create).toBeCloseTo(100 / 0.25132159400001797, 6);
    expect(meta.readdir).toBeCloseTo(18000 / 1.0020004110000116, 6);
    const untar = get('untar', 'duofs-virtiofs').metrics;
    expect(untar.files).toBeCloseTo(781 / 4.425068003000007, 6);
    expect(untar.mbps).toBeCloseTo(5065377 / 4.425068003000007 / 1e6, 6);
    const diod = get('seq-read', 'diod');
    expect(diod.ok).toBe(false);
    expect(diod.error).toMatch(/not mounted/);
  });

  test("a fio cell without its output file, or with fio's error code, fails with the reason", () => {
    const job = GUEST_JOBS.find((j) => j.name === 'seq-read');
    const g = {
      id: 'x',
      server: 's',
      job: 'seq-read',
      rep: 0,
      rc: 0,
      wallSecs: 1,
      direct: true,
      error: null,
      fioFile: 'x.fio.json',
      result: null,
      notes: [],
    };
    expect(cellFromGuest(g, job, () => undefined)).toMatchObject({ ok: false, error: 'fio wrote no output file' });
    expect(cellFromGuest(g, job, () => '{\n"jobs": [{"error": 5, "read": {}, "write": {}}]\n}').error).toMatch(/read/);
    const buffered = cellFromGuest({ ...g, direct: false }, job, (n) => (n === 'x.fio.json' ? fixtureText() : undefined));
    expect(buffered.ok).toBe(true);
    expect(buffered.notes).toEqual(['buffered I/O (no O_DIRECT)']);
  });

  test('mount errors lose the kernel log lines', () => {
    expect(
      mountMessage(
        'mount: /mnt/diod: permission denied.\n       dmesg(1) may have more information after failed mount system call.\n[    3.915138] HOME=/\n[    5.41] 9pnet: x',
      ),
    ).toBe('mount: /mnt/diod: permission denied.');
    expect(mountMessage('')).toBe('no message');
  });
});

function fixtureText(): string {
  return JSON.stringify(
    {
      'fio version': 'fio-3.41',
      jobs: [
        {
          jobname: 'seq-read',
          error: 0,
          read: { io_bytes: 1e6, bw_bytes: 5e5, iops: 1, runtime: 2000 },
          write: { io_bytes: 0, bw_bytes: 0, iops: 0, runtime: 0 },
        },
      ],
    },
    null,
    1,
  );
}

describe('the table', () => {
  const r = fixtureResult();

  test('one row per shown metric, one column per server, ratios within the protocol', () => {
    const t = buildTable(r);
    expect(t.header).toEqual(['job', 'unit', 'duofs-virtiofs', 'virtiofsd', 'qemu-9p', 'diod']);
    expect(t.subheader).toEqual(['', '', 'vs virtiofsd', 'reference', 'reference', 'vs qemu-9p']);
    const seq = t.rows.find((row) => row[0] === 'seq read 1M')!;
    expect(seq[1]).toBe('MB/s');
    expect(seq[2]).toBe('609 0.64×'); // 608.88 / 954.78
    expect(seq[3]).toBe('955 (ref)');
    expect(seq[5]).toMatch(/^failed \[\d\]$/);
    const create = t.rows.find((row) => row[0] === 'metadata: create')!;
    expect(create[1]).toBe('ops/s');
    expect(create[3]).toBe('398 (ref)');
    // jobs with no figures for a server say "not run", and every row has every column
    expect(t.rows.every((row) => row.length === t.header.length)).toBe(true);
    expect(t.rows.find((row) => row[0] === 'seq write 1M')![2]).toBe('not run');
    expect(t.footnotes.some((f) => f.startsWith('diod: not mounted'))).toBe(true);
  });

  test('aligned text: fixed columns, footnotes below', () => {
    const text = renderText(r);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^job\s+unit\s+duofs-virtiofs\s+virtiofsd\s+qemu-9p\s+diod$/);
    expect(lines[2]).toMatch(/^-+( +-+)+$/);
    expect(text).toContain('[1] diod: not mounted');
    expect(text).not.toContain('\r');
    // every data row ends its server columns at the same place as the header
    const end = lines[0]!.length;
    for (const l of lines.slice(3, 3 + buildTable(r).rows.length)) expect(l.length).toBe(end);
  });

  test('Markdown: a well-formed pipe table', () => {
    const md = renderMarkdown(r);
    const rows = md.split('\n').filter((l) => l.startsWith('|'));
    const cols = rows[0]!.split(' | ').length;
    expect(rows[1]).toBe('|---|---|---:|---:|---:|---:|');
    for (const row of rows.slice(2)) expect(row.split(' | ').length).toBe(cols);
    expect(rows[0]).toContain('duofs-virtiofs (vs virtiofsd)');
    expect(md).toMatch(/\n1\. diod: not mounted/);
  });

  test('the report says what ran, on what machine, and how loaded it was', () => {
    const md = reportMarkdown(r, 'profile text');
    expect(md).toContain('`duofs bench --servers duofs-virtiofs,virtiofsd,qemu-9p,diod');
    expect(md).toContain('other QEMU guests running: 2 at the start, 0 at the end, 2 at most');
    expect(md).toContain('**diod**');
    expect(md).toContain('```\nprofile text\n```');
  });
});

/** A minimal XML well-formedness check: balanced tags, quoted attributes, no stray & or <. */
function checkXml(s: string): void {
  const body = s.replace(/^<\?xml[^>]*\?>\s*/, '');
  const stack: string[] = [];
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/gy;
  let m: RegExpExecArray | null;
  let at = 0;
  while (at < body.length && (m = re.exec(body))) {
    at = re.lastIndex;
    if (m[5] !== undefined) {
      if (/&(?!(amp|lt|gt|quot|#\d+);)/.test(m[5])) throw new Error(`unescaped & in ${m[5].slice(0, 40)}`);
      if (stack.length === 0 && m[5].trim()) throw new Error('text outside the root element');
      continue;
    }
    if (m[1]) {
      const open = stack.pop();
      if (open !== m[2]) throw new Error(`</${m[2]}> closes <${open}>`);
    } else if (!m[4]) {
      stack.push(m[2]!);
    }
  }
  if (at !== body.length) throw new Error(`not XML at ${at}: ${body.slice(at, at + 40)}`);
  if (stack.length) throw new Error(`unclosed ${stack.join(', ')}`);
}

describe('the SVG chart', () => {
  const r = fixtureResult();

  test('is well-formed, self-contained SVG with a bar per figure and a label per row', () => {
    const svg = renderSvg(r);
    checkXml(svg);
    expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).not.toMatch(/href=|<script|<image/);
    // bars: one per server that produced the row's figure (diod: a failure marker instead)
    const bars = (svg.match(/<rect x="240" [^>]*fill="#[0-9a-f]{6}"><title>/g) ?? []).length;
    const figures = r.cells
      .filter((c) => c.ok)
      .reduce((n, c) => n + GUEST_JOBS.find((j) => j.name === c.job)!.metrics.filter((m) => m.shown).length, 0);
    expect(bars).toBe(figures);
    expect(svg).toContain('>seq read 1M</text>');
    expect(svg).toContain('0.64× virtiofsd');
    expect(svg).toContain('diod\u00a0\u00a0failed: not mounted');
    const h = Number(/height="([\d.]+)"/.exec(svg)![1]);
    expect(h).toBeGreaterThan(200);
  });

  test('escapes what it prints', () => {
    expect(xmlEscape('a<b & "c">')).toBe('a&lt;b &amp; &quot;c&quot;&gt;');
    const r2 = fixtureResult();
    r2.cells = r2.cells.map((c) => (c.server === 'diod' ? { ...c, error: 'x < y & "z"' } : c));
    checkXml(renderSvg(r2));
  });

  test('the same result renders to the same bytes', () => {
    expect(renderSvg(fixtureResult())).toBe(renderSvg(fixtureResult()));
    expect(renderText(fixtureResult())).toBe(renderText(fixtureResult()));
  });
});
