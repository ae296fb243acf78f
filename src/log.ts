// Logging: pino JSON lines on stderr; human-readable only when stderr is a
// terminal (and pino-pretty is installed). One line per event.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export function createLogger(level: LevelWithSilent = 'info'): Logger {
  if (process.stderr.isTTY && level !== 'silent') {
    try {
      return pino({ level, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true } } });
    } catch {
      // fall through to JSON
    }
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

export const silentLogger = (): Logger => pino({ level: 'silent' });
