import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Structured logging for library code. Level comes from the resolved config (never from
 * process.env here); tests pass `silent`.
 */
export function createLogger(name: string, level: LoggerOptions['level'] = 'info'): Logger {
  return pino({ name, level, base: { component: name } });
}

export const silentLogger: Logger = pino({ level: 'silent' });
