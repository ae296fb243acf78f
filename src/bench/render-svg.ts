// The result as an SVG chart, written by hand (no browser, no library): one
// group of horizontal bars per job and metric, one bar per server. A bar's
// length is its median relative to the best median of the row, the whisker
// spans min–max over the repetitions, and the label gives the figure and the
// ratio to the reference server of the same protocol. Self-contained: an
// operator can paste the file into a report or open it in any viewer.
import type { BenchResult } from './model.js';
import { fmtRatio, fmtValue, summarize } from './stats.js';

const PALETTE: Record<string, string> = {
  'duofs-virtiofs': '#1f5fa8',
  virtiofsd: '#8fb8e6',
  'duofs-9p': '#b8342b',
  'qemu-9p': '#f0a29a',
  'duofs-9p-stream': '#e07b1f',
  diod: '#9b86c2',
};
const SPARE = ['#3a8f4b', '#8c6d31', '#6b6ecf', '#7f7f7f'];

export function serverColor(name: string, index: number): string {
  return PALETTE[name] ?? SPARE[index % SPARE.length]!;
}

export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const n2 = (v: number): string => (Math.round(v * 10) / 10).toString();

export function renderSvg(r: BenchResult, o: { title?: string } = {}): string {
  const rows = summarize(r);
  const servers = r.servers.map((s) => s.name);
  const W = 980;
  const labelW = 230;
  const barX = labelW + 10;
  const barMax = 470;
  const barH = 12;
  const gap = 3;
  const groupGap = 14;
  const top = 76;
  const parts: string[] = [];
  let y = top;
  for (const row of rows) {
    const present = row.cells.filter((c) => c.spread || c.failed);
    if (present.length === 0) continue;
    // The scale: the longest whisker of the row fills the bar area.
    const best = Math.max(...present.map((c) => c.spread?.max ?? 0), 1e-12);
    const groupH = present.length * (barH + gap) - gap;
    const label =
      row.metric.label === row.metric.unit || row.metric.label === 'IOPS' || row.metric.label === 'MB/s'
        ? row.title
        : `${row.title}: ${row.metric.label}`;
    parts.push(`<text x="${labelW}" y="${n2(y + groupH / 2 - 2)}" text-anchor="end" class="lbl">${xmlEscape(label)}</text>`);
    parts.push(
      `<text x="${labelW}" y="${n2(y + groupH / 2 + 11)}" text-anchor="end" class="unit">${xmlEscape(row.metric.unit)}${row.metric.higherIsBetter ? ', higher is better' : ', lower is better'}</text>`,
    );
    for (const c of present) {
      const color = serverColor(c.server, servers.indexOf(c.server));
      if (c.spread) {
        const s = c.spread;
        const w = Math.max(1, (s.median / best) * barMax);
        parts.push(
          `<rect x="${barX}" y="${n2(y)}" width="${n2(w)}" height="${barH}" fill="${color}"><title>${xmlEscape(`${c.server}: ${fmtValue(s.median)} ${row.metric.unit} (min ${fmtValue(s.min)}, max ${fmtValue(s.max)}, n=${s.n})`)}</title></rect>`,
        );
        if (s.n > 1 && s.max > s.min) {
          const x1 = barX + (s.min / best) * barMax;
          const x2 = barX + (s.max / best) * barMax;
          const cy = y + barH / 2;
          parts.push(
            `<path d="M${n2(x1)} ${n2(cy)}H${n2(x2)}M${n2(x1)} ${n2(cy - 4)}V${n2(cy + 4)}M${n2(x2)} ${n2(cy - 4)}V${n2(cy + 4)}" class="whisker"/>`,
          );
        }
        const ratio = c.reference === '' ? (c.ratio === 1 ? 'reference' : '') : `${fmtRatio(c.ratio)} ${c.reference}`;
        const failed = c.failed ? `, ${c.failed} failed` : '';
        const xText = barX + (s.max / best) * barMax + 6;
        // U+00A0: renderers drop ordinary spaces at the edge of a tspan.
        parts.push(
          `<text x="${n2(xText)}" y="${n2(y + barH - 2)}" class="val">${xmlEscape(`${c.server}\u00a0\u00a0${fmtValue(s.median)}`)}<tspan class="ratio">${xmlEscape(ratio ? `\u00a0\u00b7\u00a0${ratio}` : '')}${xmlEscape(failed)}</tspan></text>`,
        );
      } else {
        parts.push(`<rect x="${barX}" y="${n2(y)}" width="3" height="${barH}" fill="${color}"/>`);
        parts.push(
          `<text x="${barX + 9}" y="${n2(y + barH - 2)}" class="fail">${xmlEscape(`${c.server}\u00a0\u00a0failed${c.error ? `: ${c.error.slice(0, 90)}` : ''}`)}</text>`,
        );
      }
      y += barH + gap;
    }
    y += groupGap - gap;
    parts.push(`<line x1="20" x2="${W - 20}" y1="${n2(y - groupGap / 2)}" y2="${n2(y - groupGap / 2)}" class="sep"/>`);
  }
  // Legend
  const legend: string[] = [];
  let lx = 20;
  for (const [i, s] of r.servers.entries()) {
    legend.push(`<rect x="${lx}" y="46" width="12" height="12" fill="${serverColor(s.name, i)}"/>`);
    legend.push(`<text x="${lx + 16}" y="56" class="lbl">${xmlEscape(s.name)}</text>`);
    lx += 26 + s.name.length * 6.6;
  }
  const settings = Object.entries(r.settings)
    .filter(([k]) => ['size', 'runtime', 'repeat', 'direct', 'iodepth', 'files', 'concurrency', 'seconds'].includes(k))
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  const title =
    o.title ?? `duofs bench (${r.kind === 'guest' ? 'in a QEMU/TCG guest' : 'host-side, no guest'}) — ${r.startedAt.slice(0, 16).replace('T', ' ')}`;
  const sub = `${settings}; load ${r.machine.loadStart.toFixed(1)}→${r.machine.loadEnd.toFixed(1)} on ${r.machine.cpus} cores; bars: median, whiskers: min–max, ratio: vs the reference of the same protocol`;
  const H = y + 28;
  const foot = `${r.machine.cpuModel}; ${Object.entries(r.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join('; ')}`.slice(0, 190);
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${n2(H)}" viewBox="0 0 ${W} ${n2(H)}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<style>
.title{font-size:15px;font-weight:bold;fill:#222}.sub{font-size:10.5px;fill:#555}.lbl{font-size:11px;fill:#222}
.unit{font-size:9.5px;fill:#777}.val{font-size:10.5px;fill:#222}.ratio{fill:#555}.fail{font-size:10.5px;fill:#b00020}
.whisker{stroke:#333;stroke-width:1;fill:none}.sep{stroke:#e4e4e4;stroke-width:1}
</style>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="20" y="22" class="title">${xmlEscape(title)}</text>
<text x="20" y="38" class="sub">${xmlEscape(sub)}</text>
${legend.join('\n')}
${parts.join('\n')}
<text x="20" y="${n2(H - 10)}" class="sub">${xmlEscape(foot)}</text>
</svg>
`;
}
