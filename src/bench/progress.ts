// Progress while a bench runs: on a terminal one status line rewritten in
// place (plus permanent lines for finished cells); elsewhere (a log, CI) only
// plain lines, never carriage returns or escape codes.

export interface ProgressSink {
  /** a permanent line */
  line(text: string): void;
  /** the transient status (terminal only) */
  status(text: string): void;
  done(): void;
}

export class Progress implements ProgressSink {
  private shown = '';
  private readonly tty: boolean;
  private readonly t0 = Date.now();

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number } = process.stderr,
    tty?: boolean,
    private readonly quiet = false,
  ) {
    this.tty = tty ?? out.isTTY === true;
  }

  elapsed(): string {
    return fmtDuration((Date.now() - this.t0) / 1000);
  }

  line(text: string): void {
    if (this.quiet) return;
    if (this.tty && this.shown) this.out.write('\r\x1b[K');
    this.out.write(`${text}\n`);
    if (this.tty && this.shown) this.out.write(this.shown);
  }

  status(text: string): void {
    if (this.quiet || !this.tty) return;
    const cols = Math.max(20, (this.out.columns ?? 100) - 1);
    const t = [...text].length > cols ? [...text].slice(0, cols - 1).join('') + '…' : text;
    this.shown = t;
    this.out.write(`\r\x1b[K${t}`);
  }

  done(): void {
    if (this.tty && this.shown) this.out.write('\r\x1b[K');
    this.shown = '';
  }
}

export function fmtDuration(secs: number): string {
  if (!Number.isFinite(secs) || secs < 0) return '?';
  const s = Math.round(secs);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** Splits a stream of text chunks into whole lines. */
export class LineSplitter {
  private rest = '';
  constructor(private readonly onLine: (line: string) => void) {}
  push(chunk: string): void {
    const parts = (this.rest + chunk).split('\n');
    this.rest = parts.pop() ?? '';
    if (this.rest.length > 65536) this.rest = this.rest.slice(-65536);
    for (const p of parts) this.onLine(p.replace(/\r/g, ''));
  }
}
