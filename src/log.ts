// Logging: one line per event, in one of three shapes:
//
// * json (the default when stderr is not a terminal): pino's JSON lines on
//   stderr, for log collectors;
// * text: virtiofsd's env_logger lines, `[2026-12-02T18:18:16Z INFO  virtiofsd] msg`,
//   then the event's fields as ` key=value`, for libvirt's per-domain log
//   (/var/log/libvirt/qemu/DOMAIN-fs0-virtiofsd.log), where operators expect
//   virtiofsd's lines;
// * syslog: RFC 3164 datagrams to /dev/log (journald or rsyslog), facility
//   user, as virtiofsd --syslog does; the fields follow the message as in
//   text. When /dev/log cannot be reached the logger says so once and uses
//   stderr (virtiofsd: "can't enable syslog"); a datagram that cannot be
//   sent (a full or restarting journal) goes to stderr rather than nowhere.
//
// On a terminal, without an explicit format, lines are pretty-printed when
// pino-pretty is installed.
import { writeSync } from 'node:fs';
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { closeDgram, connectUnixDgram, sendDgram } from './sys/syslog.js';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LogOptions {
  /** json or text; undefined = pretty on a terminal, json otherwise */
  format?: LogFormat;
  /** the name in text lines and the syslog tag (default duofs) */
  target?: string;
  /** log to syslog: true = /dev/log, a string = another datagram socket */
  syslog?: boolean | string;
  /** say nothing when syslog cannot be reached (the sandbox supervisor, with the same options, already said it) */
  quietSyslogFallback?: boolean;
}

const NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'ERROR' };
/** pino level -> syslog severity */
const SEVERITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };
const FACILITY_USER = 1;
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg']);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

interface Event {
  level: number;
  time: number;
  msg?: string;
  [k: string]: unknown;
}

function fields(e: Event): string {
  let s = '';
  for (const [k, v] of Object.entries(e)) {
    if (SKIP.has(k) || v === undefined) continue;
    const text = typeof v === 'string' ? v : JSON.stringify(v);
    s += ` ${k}=${/^[^\s"=]+$/.test(text) && (typeof v !== 'object' || v === null) ? text : JSON.stringify(text)}`;
  }
  return s;
}

/** One event as virtiofsd's env_logger prints it. */
export function textLine(json: string, target = 'duofs'): string {
  const e = JSON.parse(json) as Event;
  const t = new Date(e.time).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return `[${t} ${(NAMES[e.level] ?? 'INFO').padEnd(5)} ${target}] ${e.msg ?? ''}${fields(e)}\n`;
}

/**
 * A line written without the logger, by code that cannot format one at the
 * time (a signal handler writes bytes prepared in advance): in text format
 * as textLine shows it, minus the time it cannot know; JSON otherwise.
 */
export function preparedLine(format: LogFormat | undefined, target: string, level: number, msg: string, extra: Record<string, unknown>): string {
  const e: Event = { level, time: 0, pid: process.pid, ...extra, msg };
  if (format !== 'text') return JSON.stringify({ level, pid: process.pid, ...extra, msg }) + '\n';
  return `[${(NAMES[level] ?? 'INFO').padEnd(5)} ${target}] ${msg}${fields(e)}\n`;
}

/** One event as an RFC 3164 syslog datagram (local socket: no host name). */
export function syslogLine(json: string, tag = 'duofs', pid = process.pid): string {
  const e = JSON.parse(json) as Event;
  const d = new Date(e.time);
  const ts = `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${d.toTimeString().slice(0, 8)}`;
  return `<${FACILITY_USER * 8 + (SEVERITY[e.level] ?? 6)}>${ts} ${tag}[${pid}]: ${e.msg ?? ''}${fields(e)}`;
}

const stderrLine = (s: string): void => {
  writeSync(2, s);
};

export function createLogger(level: LevelWithSilent = 'info', o: LogOptions = {}): Logger {
  const target = o.target ?? 'duofs';
  if (o.syslog && level !== 'silent') {
    const path = typeof o.syslog === 'string' ? o.syslog : '/dev/log';
    let fd: number | undefined;
    let why = '';
    try {
      fd = connectUnixDgram(path);
    } catch (e) {
      why = (e as Error).message;
    }
    if (fd !== undefined) {
      const sock = fd;
      const asText = (s: string): void => stderrLine(o.format === 'json' ? s : textLine(s, target));
      const log = pino(
        { level, base: { pid: process.pid } },
        {
          write: (s: string) => {
            if (sendDgram(sock, Buffer.from(syslogLine(s, target))) !== 0) asText(s);
          },
        },
      );
      process.once('exit', () => closeDgram(sock));
      return log;
    }
    const log = createLogger(level, { ...o, syslog: false, format: o.format ?? 'text' });
    if (!o.quietSyslogFallback) log.warn({ socket: path }, `can't enable syslog: ${why}; logging to stderr`);
    return log;
  }
  if (o.format === 'text') {
    return pino({ level, base: { pid: process.pid } }, { write: (s: string) => stderrLine(textLine(s, target)) });
  }
  if (o.format === undefined && process.stderr.isTTY && level !== 'silent') {
    try {
      return pino({ level, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true } } });
    } catch {
      // fall through to JSON
    }
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

export const silentLogger = (): Logger => pino({ level: 'silent' });
